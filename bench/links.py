"""`python bench/run.py links`: two nodes on loopback, real websockets, the full wire.

Both nodes run in this process under one trio loop (so both ends share one core),
each with its own data directory and SQLite file. Measured:
  handshake_ms        dial + websocket upgrade + mutual authentication, median
  round_trip_ms       a signed note to the peer and its signed answer back, median
  messages_per_second signed notes committed to the sender's outbox, sent, checked and
                      committed to the receiver's inbox, sustained
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import trio
import trio_websocket

from node.config import NODE_TOML, load_node_config, load_roster, roster_entry_toml
from node.daemon.node import Node
from node.identity import Identity, encode_public_key, fingerprint
from node.protocol.handshake import DIALER, Handshake
from node.storage.db import NodeDatabase


class EchoNode(Node):
    """Answers every "ping" note with a "pong" to its sender, and wakes waiters on each accepted note."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received = 0
        self.arrival = trio.Event()

    def receive_envelope(self, frame: bytes, via: str) -> None:
        before = self.db.counts()["inbox"]
        super().receive_envelope(frame, via)
        if self.db.counts()["inbox"] == before:
            return
        self.received += 1
        peer = self.roster.by_name(via)
        body = self._last_body()
        if isinstance(body, str) and body.startswith("ping") and peer is not None:
            self.send("note", "pong", to=peer.public_key)
        event, self.arrival = self.arrival, trio.Event()
        event.set()

    def _last_body(self):
        row = self.db._db.execute("SELECT envelope FROM inbox ORDER BY rowid DESC LIMIT 1").fetchone()
        from node.protocol.envelope import decode_envelope
        return decode_envelope(bytes(row[0]), self.config.max_frame_bytes).body


async def _run(messages: int, rounds: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="gn-bench-", dir="/tmp"))
    a_id, b_id = Identity.generate(), Identity.generate()
    # Node b listens on a port chosen by the OS; node a (sequence 1) dials it.
    port_probe = trio.socket.socket()
    await port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    roster = "".join(roster_entry_toml(i, f"bench{i}", encode_public_key(ident.public_key),
                                       f"ws://127.0.0.1:{port if i == 2 else 1}", fingerprint(ident.public_key))
                     + "\n" for i, ident in ((1, a_id), (2, b_id)))
    nodes = []
    for i, ident, listen in ((1, a_id, "127.0.0.1:0"), (2, b_id, f"127.0.0.1:{port}")):
        directory = root / f"n{i}"
        directory.mkdir()
        (directory / "roster.toml").write_text(roster)
        (directory / "node.toml").write_text(NODE_TOML.format(name=f"bench{i}", listen=listen,
                                                              advertise=f"ws://{listen}"))
        config = load_node_config(directory / "node.toml")
        nodes.append(EchoNode(config, load_roster(config.roster_file), ident, NodeDatabase(directory)))
    a, b = nodes
    result = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(b.run)
        # handshakes alone, against b's listener, as a roster member would dial
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}") as ws:
                hs = Handshake(a_id.signing_key, DIALER, lambda k: True)
                await ws.send_message(hs.hello())
                while not hs.done:
                    for frame in hs.receive(await ws.get_message()):
                        await ws.send_message(frame)
                times.append(time.perf_counter() - start)
        result["handshake_ms"] = round(statistics.median(times) * 1e3, 2)
        await nursery.start(a.run)
        with trio.fail_after(30):
            while a.peers[b_id.public_key].state != "connected":
                await trio.sleep(0.01)
        times = []
        for i in range(rounds):
            waiting = a.arrival
            start = time.perf_counter()
            a.send("note", f"ping {i}", to=b_id.public_key)
            with trio.fail_after(30):
                await waiting.wait()
            times.append(time.perf_counter() - start)
        result["round_trip_ms"] = round(statistics.median(times) * 1e3, 2)
        target = b.received + messages
        start = time.perf_counter()
        for i in range(messages):
            a.send("note", {"n": i, "text": "x" * 64}, to=b_id.public_key)
            if i % 50 == 0:
                await trio.sleep(0)
        with trio.fail_after(120):
            while b.received < target:
                await b.arrival.wait()
        result["messages_per_second"] = round(messages / (time.perf_counter() - start), 1)
        nursery.cancel_scope.cancel()
    for node in nodes:
        node.db.close()
    result.update({"benchmark": "links", "messages": messages, "rounds": rounds,
                   "note": "both nodes in one process on one core; SQLite synchronous=FULL commits on both sides"})
    return result


def bench_links(messages: int = 500, rounds: int = 50) -> dict:
    return trio.run(_run, messages, rounds)
