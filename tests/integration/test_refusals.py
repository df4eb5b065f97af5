"""A burst of bad hellos from loopback against a real node: malformed ones, and ones presenting an
honest guardian's key with a signature that does not verify. The honest guardian is never blamed, and
the database, the log and `guardian status` grow by a bounded amount. Bounded count, 127.0.0.1 only.
"""

from __future__ import annotations

import os
import sqlite3

import msgpack
import trio
import trio_websocket

from node.protocol.handshake import HANDSHAKE_VERSION, MAGIC_AUTH, MAGIC_HELLO
from node.testing.processes import all_connected, cli, eventually

BURST = 1000            # of each kind
AT_ONCE = 8             # below the per-address limit of unauthenticated connections


def db_bytes(directory) -> int:
    return sum(os.path.getsize(p) for p in directory.glob("node.sqlite3*"))


async def bad_hello(address: str, key: bytes | None) -> None:
    """One connection: a malformed hello (key None), or a hello with `key` and a forged auth."""
    try:
        async with trio_websocket.open_websocket_url(address) as ws:
            if key is None:
                await ws.send_message(msgpack.packb([MAGIC_HELLO, HANDSHAKE_VERSION, "dialer", b"short"]))
            else:
                await ws.send_message(msgpack.packb([MAGIC_HELLO, HANDSHAKE_VERSION, "dialer", key,
                                                     os.urandom(32), os.urandom(32)]))
                await ws.send_message(msgpack.packb([MAGIC_AUTH, os.urandom(64)]))
            with trio.move_on_after(5):
                while True:
                    await ws.get_message()
    except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
        pass


async def burst(address: str, key: bytes) -> None:
    work = [None] * BURST + [key] * BURST
    limiter = trio.CapacityLimiter(AT_ONCE)

    async def one(k):
        async with limiter:
            await bad_hello(address, k)
    async with trio.open_nursery() as nursery:
        for k in work:
            nursery.start_soon(one, k)


async def test_a_flood_of_bad_hellos_blames_no_guardian_and_stays_bounded(cluster):
    alice, bob = cluster.init_node("alice"), cluster.init_node("bob")
    cluster.write_roster([alice, bob])
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    await alice.status()
    db_before, log_before = db_bytes(alice.dir), len(alice.log())

    with trio.fail_after(240):
        await burst(alice.address, bob.public_key)

    async def counted():
        status = await alice.status()
        assert status["other_refusals"] == {"127.0.0.1": {"malformed": BURST, "bad signature": BURST}}, \
            status["other_refusals"]
        return status
    status = await eventually(counted, 30, "every bad hello counted against the address")
    (peer,) = status["peers"]
    assert peer["name"] == "bob" and peer["refusals"] == {} and peer["state"] == "connected"

    text = await cli("status", "--config", alice.config)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    print(f"status: {len(lines)} lines; db +{db_bytes(alice.dir) - db_before} bytes; "
          f"log +{len(alice.log()) - log_before} bytes")
    assert len(lines) < 20, text.stdout
    assert db_bytes(alice.dir) - db_before < 300_000          # the WAL's pages, not a row per refusal
    assert len(alice.log()) - log_before < 10_000
    db = sqlite3.connect(f"file:{alice.dir / 'node.sqlite3'}?mode=ro", uri=True)
    try:
        audited = db.execute("SELECT COUNT(*) FROM audit WHERE event = 'refused'").fetchone()[0]
        rows = db.execute("SELECT COUNT(*) FROM refusals").fetchone()[0]
    finally:
        db.close()
    assert audited <= 4 and rows == 2, (audited, rows)
    assert "bob" not in [line.split(":")[0].strip() for line in lines if "bad signature" in line]

    # the honest link carried on
    seq = await bob.send_note("alice", {"text": "after the flood"})

    async def arrived():
        assert ("bob", seq) in [(m["from"], m["seq"]) for m in await alice.inbox()]
    await eventually(arrived, 20, "bob's note reaches alice")
    assert alice.alive and bob.alive
