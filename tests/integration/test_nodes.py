"""End to end: real `guardian` processes from `guardian init`, real websockets on loopback.

Every node process is killed in the fixture finalizer. Waits poll the control
channel against a deadline; nothing here asserts how long anything took.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import trio
import trio_websocket

from node.protocol.envelope import decode_envelope
from node.testing.peer import HarnessLink, HarnessPeer
from node.testing.processes import PASS_ENV, NodeProc, all_connected, cli, eventually, node_env


def inbox_keys(inbox: list[dict]) -> list[tuple]:
    return sorted((m["from"], m["seq"], m["type"], json.dumps(m["body"], sort_keys=True)) for m in inbox)


async def wait_exit(node: NodeProc, timeout: float = 15) -> int:
    with trio.fail_after(timeout):
        while node.proc.poll() is None:
            await trio.sleep(0.05)
    return node.proc.returncode


# --- (1) three nodes: connect, exchange notes, report -------------------------------------------


async def test_three_nodes_connect_and_exchange_signed_notes(cluster):
    alice, bob, carol = (cluster.init_node(n) for n in ("alice", "bob", "carol"))
    cluster.write_roster([alice, bob, carol])
    await cluster.start(alice, bob, carol)
    await all_connected([alice, bob, carol])

    expected = {n.name: [] for n in (alice, bob, carol)}

    async def send(sender: NodeProc, to: str, body) -> None:
        seq = await sender.send_note(to, body)
        for node in (alice, bob, carol):
            if node is not sender and to in ("all", node.name):
                expected[node.name].append((sender.name, seq, "note", json.dumps(body, sort_keys=True)))

    await send(alice, "all", {"text": "hello from alice"})
    await send(bob, "carol", {"text": "bob to carol", "n": [1, 2, 3]})
    await send(carol, "alice", {"text": "carol to alice", "nested": {"ok": True, "none": None}})
    await send(carol, "all", {"text": "carol to everyone"})
    await send(alice, "bob", "a plain string body")

    async def delivered():
        for node in (alice, bob, carol):
            assert inbox_keys(await node.inbox()) == sorted(expected[node.name]), node.name
    await eventually(delivered, 20, "every note delivered to exactly its recipients")

    for node in (alice, bob, carol):
        status = await node.status()
        assert status["inbox"] == len(expected[node.name])
        assert {p["name"]: p["state"] for p in status["peers"]} == \
            {n.name: "connected" for n in (alice, bob, carol) if n is not node}
        assert all(p["refusals"] == {} for p in status["peers"]) and status["other_refusals"] == {}
        assert status["sessions"] and status["sessions"][0]["kind"] == "node"

    # the operator's view: `guardian status` and `guardian status --json`
    text = await cli("status", "--config", alice.config)
    assert text.returncode == 0, text.stderr
    assert "alice" in text.stdout and alice.fingerprint in text.stdout
    for line_of in ("bob", "carol"):
        (line,) = [line for line in text.stdout.splitlines() if f" {line_of} " in line]
        assert "connected" in line
    machine = await cli("status", "--config", bob.config, "--json")
    assert machine.returncode == 0, machine.stderr
    status = json.loads(machine.stdout)
    assert status["name"] == "bob" and status["fingerprint"] == bob.fingerprint
    assert [(p["name"], p["state"]) for p in status["peers"]] == [("alice", "connected"), ("carol", "connected")]

    # nothing more arrived meanwhile: each inbox holds exactly what was sent to it
    for node in (alice, bob, carol):
        assert inbox_keys(await node.inbox()) == sorted(expected[node.name])


# --- (2) a rogue key is refused -------------------------------------------------------------------


async def test_a_rogue_node_with_an_unknown_key_is_refused(cluster):
    alice, bob = cluster.init_node("alice"), cluster.init_node("bob")
    cluster.write_roster([alice, bob])
    rogue = cluster.init_node("rogue")
    # The rogue's own roster lists itself first (so it dials) and alice's real entry.
    cluster.write_roster([rogue, alice], directories=[rogue.dir])
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    await cluster.start(rogue)

    async def refused():
        status = await alice.status()
        # the rogue's key is only claimed (its signature is never checked): the refusal names its address
        hits = {who: reasons for who, reasons in status["other_refusals"].items() if "127.0.0.1" in who}
        assert hits and sum(r.get("unknown key", 0) for r in hits.values()) >= 1, status["other_refusals"]
        return status
    status = await eventually(refused, 20, "alice refuses the rogue key")
    assert rogue.fingerprint in alice.log()
    assert "unknown key" in alice.log()
    # the rogue never got in, the honest link is untouched, nothing reached the inbox
    assert [p["name"] for p in status["peers"]] == ["bob"] and status["peers"][0]["state"] == "connected"
    assert await alice.inbox() == []
    rogue_view = await rogue.status()
    assert rogue_view["peers"][0]["name"] == "alice" and rogue_view["peers"][0]["state"] != "connected"
    assert rogue_view["peers"][0]["connections"] == 0
    # alice keeps serving her honest peer
    seq = await bob.send_note("alice", {"text": "still here"})

    async def arrived():
        assert [(m["from"], m["seq"]) for m in await alice.inbox()] == [("bob", seq)]
    await eventually(arrived, 20, "bob's note reaches alice")


# --- (3) bad frames from an authenticated peer ----------------------------------------------------

MAX_FRAME = 4096


async def _harness_cluster(cluster):
    harness = HarnessPeer("harness")
    alice = cluster.init_node("alice", max_frame_bytes=MAX_FRAME)
    bob = cluster.init_node("bob")
    cluster.write_roster([harness, alice, bob])          # the harness is guardian 1: it dials
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    return harness, alice, bob, {harness.public_key, alice.public_key, bob.public_key}


async def _note_arrives(node: NodeProc, sender: str, seq: int, timeout: float = 20) -> None:
    async def check():
        got = [(m["from"], m["seq"]) for m in await node.inbox()]
        assert got.count((sender, seq)) == 1, got
    await eventually(check, timeout, f"note {sender}#{seq} reaches {node.name}")


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 1
    return bytes(out)


async def test_bad_frames_are_refused_with_their_reason_while_honest_peers_are_served(cluster):
    harness, alice, bob, keys = await _harness_cluster(cluster)
    async with trio_websocket.open_websocket_url(alice.address) as ws:
        link = await HarnessLink.connect(ws, harness, keys)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.pump)
            await link.send("sync", {"since": 0})

            async def connected():
                assert (await alice.peer("harness"))["state"] == "connected"
            await eventually(connected, 10, "alice sees the harness connected")

            genuine = harness.envelope({"text": "genuine"})                              # seq 1
            await link.send("env", genuine.encode())
            await _note_arrives(alice, "harness", 1)

            # alice streams her outbox to the harness after its sync
            broadcast = await alice.send_note("all", {"text": "to every peer"})

            async def streamed():
                envelopes = [decode_envelope(p, MAX_FRAME) for k, p in link.received if k == "env"]
                assert [(e.sender, e.seq, e.body) for e in envelopes] == \
                    [(alice.public_key, broadcast, {"text": "to every peer"})]
                envelopes[0].verify()
            await eventually(streamed, 10, "alice's broadcast reaches the harness")

            await link.send_sealed(b"\xc1 not a link frame")                               # malformed
            await link.send("env", b"\x00 garbage bytes")                                  # malformed
            await link.send("env", harness.envelope({"text": "cut short"}).encode()[:-7])  # malformed
            oversized = harness.envelope({"blob": b"x" * (MAX_FRAME + 500)}).encode()
            assert MAX_FRAME < len(oversized) < 2 * MAX_FRAME - 64
            await link.send("env", oversized)                                              # oversized
            tampered = harness.envelope({"text": "tampered"}).encode()
            await link.send("env", _flip(tampered, len(tampered) - 1))                     # bad signature
            await link.send("env", genuine.encode())                                       # replay
            await link.send("env", harness.envelope({"text": "elsewhere"}, session=os.urandom(32)).encode())
            await link.send("env", harness.envelope({"text": "equivocation"}, seq=1).encode())
            await link.send("env", harness.envelope({"text": "?"}, type_="launch").encode())  # unknown type

            # meanwhile an honest node talks to alice
            honest = await bob.send_note("alice", {"text": "honest, during the attack"})
            expected = {"malformed": 3, "oversized": 1, "bad signature": 1, "replay": 1, "unknown session": 1,
                        "conflicting sequence number": 1, "unknown type": 1}

            async def counted():
                peer = await alice.peer("harness")
                assert peer["refusals"] == expected
                assert peer["state"] == "connected"
            await eventually(counted, 20, "every bad frame counted with its reason")
            await _note_arrives(alice, "bob", honest)

            # the link survives: the next good envelope is accepted, once
            after = harness.envelope({"text": "after the bad ones"})
            await link.send("env", after.encode())
            await _note_arrives(alice, "harness", after.seq)
            assert [m["seq"] for m in await alice.inbox() if m["from"] == "harness"] == [1, after.seq]

            # a frame that does not open drops this link, and only this one
            await link.send_raw(b"garbage outside the sealed link")
            with trio.fail_after(10):
                await link.closed.wait()
            nursery.cancel_scope.cancel()

    async def dropped():
        peer = await alice.peer("harness")
        assert peer["refusals"] == {**expected, "undecryptable": 1}
        assert peer["state"] == "disconnected"
        assert (await alice.peer("bob"))["state"] == "connected"
    await eventually(dropped, 20, "alice drops the harness link")
    honest = await bob.send_note("alice", {"text": "after the harness left"})
    await _note_arrives(alice, "bob", honest)

    # raw websocket garbage before any handshake
    for garbage in (b"\xff\x00 not a hello", "a text frame"):
        try:
            async with trio_websocket.open_websocket_url(alice.address) as raw:
                await raw.send_message(garbage)
                with trio.move_on_after(5):
                    while True:
                        await raw.get_message()
        except trio_websocket.ConnectionClosed:
            pass

    async def refused_raw():
        status = await alice.status()
        malformed = sum(r.get("malformed", 0) for r in status["other_refusals"].values())
        assert malformed == 2, status["other_refusals"]
        assert {p["name"]: p["state"] for p in status["peers"]}["bob"] == "connected"
    await eventually(refused_raw, 20, "pre-handshake garbage counted as malformed")
    assert alice.alive and bob.alive
    assert (await alice.peer("bob"))["refusals"] == {}


async def test_an_absurd_sync_cursor_does_not_crash_the_node(cluster):
    """A roster peer asks for everything after seq 2**64-1 (valid msgpack, a plain int): the node must not crash."""
    harness, alice, bob, keys = await _harness_cluster(cluster)
    async with trio_websocket.open_websocket_url(alice.address) as ws:
        link = await HarnessLink.connect(ws, harness, keys)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.pump)
            await link.send("sync", {"since": 2**64 - 1})
            honest = await bob.send_note("alice", {"text": "are you still there?"})
            await _note_arrives(alice, "bob", honest)
            assert alice.alive, alice.output()[-2000:]

            # whatever the node does with it (refuse the frame, or drop the link), it is counted with a reason
            async def counted():
                refusals = (await alice.peer("harness"))["refusals"]
                assert sum(refusals.values()) >= 1, refusals
            try:
                await eventually(counted, 10, "the absurd sync counted under the harness's refusals")
            finally:
                nursery.cancel_scope.cancel()


async def test_bad_sync_frames_are_refused_as_malformed(cluster):
    harness, alice, bob, keys = await _harness_cluster(cluster)
    async with trio_websocket.open_websocket_url(alice.address) as ws:
        link = await HarnessLink.connect(ws, harness, keys)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.pump)
            for payload in ({"since": -1}, {"since": True}, {"since": "0"}, {}, None, [0]):
                await link.send("sync", payload)
            await link.send("bogus", None)
            await link.send("env", "not bytes")

            async def counted():
                assert (await alice.peer("harness"))["refusals"] == {"malformed": 8}
            await eventually(counted, 20, "bad sync frames counted")
            nursery.cancel_scope.cancel()
    assert alice.alive


# --- (4) a peer killed and restarted --------------------------------------------------------------


async def test_a_killed_node_reconnects_and_gets_every_missed_note_exactly_once(cluster):
    alice, bob, carol = (cluster.init_node(n) for n in ("alice", "bob", "carol"))
    cluster.write_roster([alice, bob, carol])
    await cluster.start(alice, bob, carol)
    await all_connected([alice, bob, carol])

    for_bob: list[tuple[str, int]] = []
    for_carol: list[tuple[str, int]] = []

    async def send(sender: NodeProc, to: str, text: str) -> None:
        seq = await sender.send_note(to, {"text": text})
        if to in ("bob", "all"):
            for_bob.append((sender.name, seq))
        if to in ("carol", "all") and sender is not carol:
            for_carol.append((sender.name, seq))

    async def bob_has_all():
        got = sorted((m["from"], m["seq"]) for m in await bob.inbox())
        assert got == sorted(for_bob), (got, sorted(for_bob))

    await send(alice, "bob", "before 1")
    await send(carol, "bob", "before 2")
    await eventually(bob_has_all, 20, "bob gets the first notes")

    assert bob.kill() == -signal.SIGKILL

    async def bob_is_gone():
        for node in (alice, carol):
            assert (await node.peer("bob"))["state"] != "connected", node.name
    await eventually(bob_is_gone, 20, "alice and carol notice bob is gone")

    for i in range(3):
        await send(alice, "bob", f"while down a{i}")
        await send(carol, "bob", f"while down c{i}")
    await send(alice, "all", "while down, to all")
    await send(carol, "alice", "not for bob")

    bob.start()
    await bob.wait_ready()
    await send(alice, "bob", "right after the restart")
    await all_connected([alice, bob, carol])
    await eventually(bob_has_all, 30, "bob gets every note he missed")
    await send(carol, "bob", "after reconnecting")
    await eventually(bob_has_all, 20, "bob gets the note after reconnecting")

    inbox = await bob.inbox()
    assert len(inbox) == len(for_bob) == len({(m["from"], m["seq"]) for m in inbox})
    texts = sorted(m["body"]["text"] for m in inbox)
    assert texts == sorted(["before 1", "before 2", "while down a0", "while down a1", "while down a2",
                            "while down c0", "while down c1", "while down c2", "while down, to all",
                            "right after the restart", "after reconnecting"])
    assert (await alice.peer("bob"))["connections"] >= 2

    async def carol_has_hers():
        got = sorted((m["from"], m["seq"]) for m in await carol.inbox())
        assert got == sorted(for_carol)
    await eventually(carol_has_hers, 20, "carol gets alice's broadcast")


# --- (5) clean stop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_node_cleanly(cluster, signum):
    alice, bob = cluster.init_node("alice"), cluster.init_node("bob")
    cluster.write_roster([alice, bob])
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    assert alice.socket.exists()

    alice.signal(signum)
    assert await wait_exit(alice) == 0, alice.output()[-3000:]
    assert not alice.socket.exists()
    assert f"stopping on {signal.Signals(signum).name}" in alice.log()
    assert "Traceback" not in alice.output()

    async def bob_notices():
        assert (await bob.peer("alice"))["state"] != "connected"
    await eventually(bob_notices, 20, "bob notices alice left")
    assert bob.alive

    # and it starts again from the same directory
    await cluster.start(alice)
    await all_connected([alice, bob])


# --- (6) the command line refuses cleanly -------------------------------------------------------


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


async def test_wrong_passphrase_makes_run_exit_1_with_one_line(cluster):
    alice = cluster.init_node("alice")
    cluster.write_roster([alice])
    result = await cli("run", "--config", alice.config, "--passphrase-env", "GN_WRONG_PASSPHRASE",
                                env=node_env(GN_WRONG_PASSPHRASE="this is not it"))
    assert result.returncode == 1
    assert "passphrase" in _one_line(result)
    assert not alice.socket.exists()


async def test_run_refuses_a_roster_without_this_node(cluster):
    alice, bob, carol = (cluster.init_node(n) for n in ("alice", "bob", "carol"))
    cluster.write_roster([bob, carol], directories=[alice.dir])
    result = await cli("run", "--config", alice.config)
    assert result.returncode == 1
    assert alice.fingerprint in _one_line(result)


async def test_init_refuses_to_overwrite_an_existing_node(cluster):
    alice = cluster.init_node("alice")
    before = (alice.dir / "identity.sealed").read_bytes(), alice.config.read_text()
    result = await cli("init", alice.dir, "--name", "mallory", "--listen", "127.0.0.1:1",
                                "--passphrase-env", PASS_ENV)
    assert result.returncode == 1
    assert "overwrite" in _one_line(result)
    assert ((alice.dir / "identity.sealed").read_bytes(), alice.config.read_text()) == before


async def test_init_never_takes_the_passphrase_from_the_environment_unasked(cluster):
    result = await cli("init", cluster.base / "nobody", "--name", "nobody", "--listen", "127.0.0.1:1")
    assert result.returncode == 1                    # no terminal to prompt on, and no --passphrase-* option
    assert "passphrase" in _one_line(result)
    assert not (cluster.base / "nobody" / "identity.sealed").exists()


async def test_status_without_a_running_node_exits_1_with_a_clear_message(cluster):
    alice = cluster.init_node("alice")
    cluster.write_roster([alice])
    for args in (("status", "--config", alice.config), ("status", "--config", alice.config, "--json")):
        result = await cli(*args)
        assert result.returncode == 1
        line = _one_line(result)
        assert "no node answers" in line and "running" in line
        assert result.stdout == ""
