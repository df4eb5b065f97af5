"""`python bench/run.py links`: two nodes on loopback, real websockets, the full wire.

Both nodes run in this process under one trio loop (so both ends share one core),
each with its own data directory and SQLite file. Measured:
  handshake_ms        dial + websocket upgrade + mutual authentication, median
  round_trip_ms       a signed note to the peer and its signed answer back, median
  messages_per_second signed notes committed to the sender's outbox, sent, checked and
                      committed to the receiver's inbox, sustained

Of the daemon, the bench uses only Node(config, roster, identity, db), Node.run, Node.send and
Node.receive_envelope (overridden, to see each envelope the node accepted): everything else it
needs it keeps itself, from the objects it hands the node.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import trio
import trio_websocket

from node.config import NODE_TOML, NodeConfig, Roster, load_node_config, load_roster, roster_entry_toml
from node.daemon.node import Node
from node.identity import Identity, encode_public_key, fingerprint
from node.protocol.envelope import EnvelopeError, decode_envelope
from node.protocol.handshake import DIALER, Handshake
from node.storage.db import NodeDatabase
from node.testing.processes import set_config


class EchoNode(Node):
    """Answers every "ping" note with a "pong" to its sender, and wakes waiters on each accepted note."""

    def __init__(self, config: NodeConfig, roster: Roster, identity: Identity, db: NodeDatabase) -> None:
        super().__init__(config, roster, identity, db)
        # The bench's own handles: the node's attributes are its own business.
        self._store, self._max_frame_bytes = db, config.max_frame_bytes
        self._latest: dict[bytes, int] = {}
        self.received = 0
        self.arrival = trio.Event()

    def receive_envelope(self, frame: bytes, via: str, relayed: bool = False) -> None:
        super().receive_envelope(frame, via, relayed)
        try:
            envelope = decode_envelope(frame, self._max_frame_bytes)
        except EnvelopeError:
            return                  # refused by the node as well
        # Counted once, and only if the node committed it: a peer's link delivers its envelopes in order,
        # so a new one is above the last counted, and an accepted one is at or below the inbox's cursor.
        if envelope.seq <= self._latest.get(envelope.sender, 0):
            return
        if self._store.highest_seq_from(envelope.sender) < envelope.seq:
            return
        self._latest[envelope.sender] = envelope.seq
        self.received += 1
        if envelope.type == "note" and isinstance(envelope.body, str) and envelope.body.startswith("ping"):
            self.send("note", "pong", to=envelope.sender)
        event, self.arrival = self.arrival, trio.Event()
        event.set()


def echo_nodes(root: Path, members: list[tuple[int, str, Identity, str | None]],
               **settings) -> tuple[list[EchoNode], list[NodeDatabase]]:
    """An EchoNode for each member (sequence, name, identity, listen address) that has a listen address,
    each with its own directory under `root` and node.toml (the defaults, but `settings`), and one roster
    of every member. A member without a listen
    address is played by someone else; it, and a node on port 0 (any free port), are in the roster at an
    address that never answers (port `sequence`, below 1024): they dial, they are not dialled."""
    def address(seq: int, listen: str | None) -> str:
        return f"ws://127.0.0.1:{seq}" if listen is None or listen.endswith(":0") else f"ws://{listen}"
    roster = "".join(roster_entry_toml(seq, name, encode_public_key(ident.public_key), address(seq, listen),
                                       fingerprint(ident.public_key)) + "\n"
                     for seq, name, ident, listen in members)
    nodes, stores = [], []
    for seq, name, ident, listen in members:
        if listen is None:
            continue
        directory = root / name
        directory.mkdir()
        (directory / "roster.toml").write_text(roster)
        (directory / "node.toml").write_text(NODE_TOML.format(name=name, listen=listen, advertise=f"ws://{listen}"))
        set_config(directory / "node.toml", **settings)
        config = load_node_config(directory / "node.toml")
        stores.append(NodeDatabase(directory))
        nodes.append(EchoNode(config, load_roster(config.roster_file), ident, stores[-1]))
    return nodes, stores


async def free_port() -> int:
    """A port the OS has just given out, to listen on."""
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


async def _run(messages: int, rounds: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="gn-bench-", dir="/tmp"))
    a_id, b_id = Identity.generate(), Identity.generate()
    # Node b listens on a port chosen by the OS; node a (sequence 1) dials it.
    port = await free_port()
    # The throughput is the wire's: more notes at once than any peer's quota stores of protocol messages.
    nodes, stores = echo_nodes(root, [(1, "bench1", a_id, "127.0.0.1:0"), (2, "bench2", b_id, f"127.0.0.1:{port}")],
                               peer_burst_messages=max(1000, 2 * (messages + rounds)))
    try:
        return await _measure(nodes, port, a_id, b_id, messages, rounds)
    finally:
        for store in stores:
            store.close()
        shutil.rmtree(root, ignore_errors=True)


async def _measure(nodes: list[EchoNode], port: int, a_id: Identity, b_id: Identity, messages: int,
                   rounds: int) -> dict:
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
        # Sent before the link is up, it waits in a's outbox: its pong says the link is up and warm.
        waiting = a.arrival
        a.send("note", "ping warm-up", to=b_id.public_key)
        with trio.fail_after(30):
            await waiting.wait()
        result["round_trip_ms"] = median_ms(await round_trips(a, b_id.public_key, rounds))
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
    result.update({"benchmark": "links", "messages": messages, "rounds": rounds,
                   "note": "both nodes in one process on one core; SQLite synchronous=FULL commits on both sides"})
    return result


async def round_trips(a: EchoNode, to: bytes, rounds: int) -> list[float]:
    """Seconds of each of `rounds` round trips: a signed note "ping" from a to the peer `to`, its "pong" back."""
    times = []
    for i in range(rounds):
        waiting = a.arrival
        start = time.perf_counter()
        a.send("note", f"ping {i}", to=to)
        with trio.fail_after(60):
            await waiting.wait()
        times.append(time.perf_counter() - start)
    return times


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1e3, 2)


def bench_links(messages: int = 500, rounds: int = 50) -> dict:
    return trio.run(_run, messages, rounds)
