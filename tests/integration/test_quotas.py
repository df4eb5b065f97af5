"""An authenticated peer that floods a node: large envelopes, garbage ceremony proposals, messages of
sessions that never open, decryption requests naming nothing real, and requests whose record never comes.
Real `guardian run` processes on loopback; the flooder is a HarnessPeer in the roster (guardian 1), or an
in-process guardian for the one attack that needs a completed ceremony. Each attack is scaled down, and
each shows the node held: what it stores is bounded by its quotas, refusals are named by peer in
`guardian status`, and the honest peer is served throughout.
"""

from __future__ import annotations

import os
import sqlite3

import trio
import trio_websocket

from node.protocol.decryption import DecryptionRequest, parse_request
from node.testing.inprocess import InProcessNode
from node.testing.peer import HarnessLink, HarnessPeer
from node.testing.processes import NodeProc, all_connected, cli, eventually
from test_ceremony_nodes import accept, ask, completes, entry_of, propose, write_election

FRAME = 262144                  # alice's max_frame_bytes in the byte flood
BURST, RATE = 1048576, 65536.0   # alice's peer_burst_bytes and peer_bytes_per_second there
NOTE = 200_000                  # bytes of each flooding note's body
FLOOD = 150                     # of them: 30 MB offered


def db_bytes(node: NodeProc) -> int:
    return sum(os.path.getsize(p) for p in node.dir.glob("node.sqlite3*"))


def read_db(node: NodeProc, sql: str, *args):
    db = sqlite3.connect(f"file:{node.dir / 'node.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


async def _flooded(cluster, **limits):
    """The harness (guardian 1), alice with `limits`, bob; alice and bob linked."""
    harness = HarnessPeer("harness")
    alice = cluster.init_node("alice", **limits)
    bob = cluster.init_node("bob")
    cluster.write_roster([harness, alice, bob])
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    return harness, alice, bob, {harness.public_key, alice.public_key, bob.public_key}


async def _linked(alice: NodeProc, harness: HarnessPeer, keys, nursery) -> HarnessLink:
    ws = await trio_websocket.connect_websocket_url(nursery, alice.address, None, max_message_size=4 * FRAME)
    link = await HarnessLink.connect(ws, harness, keys)
    nursery.start_soon(link.pump)
    await link.send("sync", {"since": 0})

    async def connected():
        assert (await alice.peer("harness"))["state"] == "connected"
    await eventually(connected, 10, "alice sees the harness connected")
    return link


async def _note_round_trip(alice: NodeProc, bob: NodeProc, text: str) -> None:
    """A note from bob reaches alice and one from alice reaches bob."""
    there = await bob.send_note("alice", {"text": text})
    back = await alice.send_note("bob", {"text": text})

    async def arrived():
        assert ("bob", there) in [(m["from"], m["seq"]) for m in await alice.inbox()]
        assert ("alice", back) in [(m["from"], m["seq"]) for m in await bob.inbox()]
    await eventually(arrived, 30, f"the notes {text!r} between alice and bob")


async def _status_names(alice: NodeProc, peer: str, *reasons: str) -> None:
    text = await cli("status", "--config", alice.config)
    assert text.returncode == 0, text.stderr
    line = next(line for line in text.stdout.splitlines() if f" {peer} " in line)
    assert all(reason in line for reason in reasons), line


async def test_a_flood_of_large_envelopes_is_cut_to_the_byte_quota(cluster):
    harness, alice, bob, keys = await _flooded(cluster, max_frame_bytes=FRAME, peer_burst_bytes=BURST,
                                               peer_bytes_per_second=RATE)
    before = db_bytes(alice)
    async with trio.open_nursery() as nursery:
        link = await _linked(alice, harness, keys, nursery)
        flood = [harness.envelope({"blob": b"x" * NOTE}) for _ in range(FLOOD)]
        started = trio.current_time()
        async with trio.open_nursery() as during:
            during.start_soon(_note_round_trip, alice, bob, "during the flood")
            for envelope in flood:
                await link.send("env", envelope.encode())

        async def judged():
            stored = read_db(alice, "SELECT seq, length(envelope) FROM inbox WHERE sender = ?", harness.public_key)
            refused = (await alice.peer("harness"))["refusals"].get("quota", 0)
            assert len(stored) + refused == FLOOD, (len(stored), refused)
            return stored, refused
        stored, refused = await eventually(judged, 60, "every flooding envelope stored or refused")
        elapsed = trio.current_time() - started
        allowed = BURST + RATE * elapsed
        kept = sum(size for _, size in stored)
        print(f"flood: {FLOOD * NOTE} bytes offered in {elapsed:.1f} s, {kept} stored ({len(stored)} envelopes), "
              f"{refused} refused; database +{db_bytes(alice) - before} bytes")
        assert kept <= allowed, (kept, allowed)
        assert refused > FLOOD // 2
        # The database grows by what was stored, and its write-ahead log (at most ~4 MB before a checkpoint).
        assert db_bytes(alice) - before < 2 * allowed + 5 * 2**20
        peer = await alice.peer("harness")
        assert set(peer["refusals"]) == {"quota"} and peer["state"] == "connected"
        assert (await alice.peer("bob"))["refusals"] == {}
        await _status_names(alice, "harness", f"quota {refused}")

        # A refused envelope was not taken as seen: sent again once the quota refills, it is stored.
        seen = {seq for seq, _ in stored}
        again = next(e for e in flood if e.seq not in seen)

        async def taken():
            await link.send("env", again.encode())
            await trio.sleep(0.5)
            assert read_db(alice, "SELECT 1 FROM inbox WHERE sender = ? AND seq = ?", harness.public_key, again.seq)
        await eventually(taken, 60, "the refused envelope stored when sent again", interval=1.0)
        nursery.cancel_scope.cancel()
    await _note_round_trip(alice, bob, "after the flood")
    assert alice.alive and "Traceback" not in alice.output()


def bogus_request(coordinator: int, ceremony: bytes | None = None) -> bytes:
    """A well-formed decryption request; of a random ceremony unless one is named, for a record nobody has."""
    return DecryptionRequest(ceremony or os.urandom(32), os.urandom(32), os.urandom(32), os.urandom(32), (), False,
                             coordinator, 10.0, os.urandom(8).hex()).canonical_bytes()


PENDING, OPEN_SESSIONS = 3, 4
PROPOSALS, RANDOM_SESSIONS, REQUESTS = 20, 100, 50


async def test_garbage_proposals_random_sessions_and_bogus_requests_are_bounded(cluster):
    harness, alice, bob, keys = await _flooded(cluster, peer_pending=PENDING, peer_open_sessions=OPEN_SESSIONS)
    async with trio.open_nursery() as nursery:
        link = await _linked(alice, harness, keys, nursery)
        for _ in range(PROPOSALS):            # not an election config: each is invalid
            await link.send("env", harness.envelope({"config": os.urandom(20_000)},
                                                    type_="ceremony-propose").encode())
        for _ in range(RANDOM_SESSIONS):      # kept before their session opens: it never does
            await link.send("env", harness.envelope({}, type_="decrypt-ready", session=os.urandom(32)).encode())
        for _ in range(REQUESTS):             # well formed, naming no ceremony alice took part in
            await link.send("env", harness.envelope({"request": bogus_request(harness.sequence)},
                                                    type_="decrypt-request").encode())
        expected = {"quota": PROPOSALS - PENDING + RANDOM_SESSIONS - OPEN_SESSIONS, "unknown ceremony": REQUESTS}

        async def counted():
            assert (await alice.peer("harness"))["refusals"] == expected
        await eventually(counted, 60, "every flooding message kept within its cap or refused")
        nursery.cancel_scope.cancel()

    kept = [c for c in await ask(alice, "ceremony-status") if c["proposer"] == "harness"]
    assert [c["status"] for c in kept] == ["invalid"] * PENDING
    held = read_db(alice, "SELECT COUNT(*) FROM inbox WHERE type = 'decrypt-ready'")[0][0]
    assert held == OPEN_SESSIONS
    assert await ask(alice, "decrypt-status") == []
    await _status_names(alice, "harness", f"quota {expected['quota']}", f"unknown ceremony {REQUESTS}")

    # The honest peer's proposal is found by its prefix among the garbage and accepted.
    session = await propose(bob, write_election(cluster.base, 2))
    await eventually(lambda: entry_of(alice, session), 20, "bob's proposal reaches alice")
    voted = await cli("ceremony", "accept", session[:12], "--config", alice.config)
    assert voted.returncode == 0, voted.stderr
    assert (await entry_of(alice, session))["votes"]["alice"]["vote"] == "accept"
    await _note_round_trip(alice, bob, "after the flood")

    # Nothing of the requests survives a restart: no session to resume.
    alice.stop()
    alice.start()
    await alice.wait_ready()
    assert await ask(alice, "decrypt-status") == []
    assert alice.alive and "Traceback" not in alice.output()


FETCH_SECONDS = 3.0


async def test_a_request_whose_record_never_comes_fails_at_its_deadline_and_stays_failed(cluster):
    """A request of a ceremony alice completed, for a record no peer has: alice fetches, then fails it at
    [decryption] fetch_timeout_seconds; one that expired while she was stopped fails as she starts."""
    peer = InProcessNode.fresh(cluster.base / "peer", "peer")
    alice = cluster.init_node("alice", fetch_timeout_seconds=FETCH_SECONDS)
    cluster.write_roster([peer, alice])
    await cluster.start(alice)
    async with peer.running() as app:
        await all_connected([alice], among=[alice, peer])
        session = await propose(alice, write_election(cluster.base, 2))
        await accept([alice, peer], session)
        await completes([alice, peer], session)
        ceremony = bytes.fromhex(session)

        async def status_of(request: bytes, *statuses: str) -> dict:
            entries = [d for d in await ask(alice, "decrypt-status") if d["requester"] == "peer"
                       and d["session"] == parse_request(request, 2).session.hex()]
            assert len(entries) == 1 and entries[0]["status"] in statuses, entries
            return entries[0]

        first = bogus_request(peer.sequence, ceremony)
        app.node.send("decrypt-request", {"request": first})
        await eventually(lambda: status_of(first, "fetching", "failed"), 20, "alice takes the request")
        failed = await eventually(lambda: status_of(first, "failed"), 30, "the request failed at its deadline")
        assert "fetch_timeout_seconds" in failed["outcome"]["reason"], failed

        second = bogus_request(peer.sequence, ceremony)
        app.node.send("decrypt-request", {"request": second})
        await eventually(lambda: status_of(second, "fetching"), 20, "alice fetches the second request")
        alice.stop()
        await trio.sleep(FETCH_SECONDS + 1)      # its deadline passes while alice is stopped
        alice.start()
        await alice.wait_ready()
        failed = await eventually(lambda: status_of(second, "failed"), 20, "the expired request failed at start")
        assert "fetch_timeout_seconds" in failed["outcome"]["reason"], failed
        alice.stop()
        alice.start()
        await alice.wait_ready()
        assert [d["status"] for d in await ask(alice, "decrypt-status") if d["requester"] == "peer"] == \
            ["failed", "failed"]
    assert "Traceback" not in alice.output()
