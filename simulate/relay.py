"""A fault-injecting TCP relay for one link between two guardian nodes, and a mesh of them.

A Relay listens on loopback and forwards every accepted TCP connection to one
target (host, port), both ways, byte for byte: side "a" is whoever dials the
relay, side "b" is the target. Direction "a->b" is what a sends to b, "b->a"
the answer, "both" both. Between the two sides the relay can inject faults,
set at runtime from trio code in the same process:

  delay, jitter   seconds added to every chunk (jitter: +- uniform); order is always kept
  drop            probability a chunk is discarded
  duplicate       probability a chunk is sent twice
  reorder         probability a chunk is held back and sent after the next one
  corrupt         probability one random bit of a chunk is flipped
  slow            bandwidth cap, bytes per second
  garbage(n)      n random bytes written now into every open connection
  cut             close every connection and stop listening (dials are refused at once)
  blackhole       a silent partition: connections stay open, carry nothing (the bytes are
                  kept and go on at heal), dials are refused; found out by heartbeats only
  heal            end a cut or a blackhole
  partition(s)    cut (or blackhole, silent=True) now, heal by itself s seconds later

A "chunk" is whatever one read from the socket returned (at most 64 KiB). The
relay knows nothing of websockets or of the sealed link above them: a dropped,
duplicated, reordered or corrupted chunk breaks the framing or the
authentication of the link, which is what these faults are for; the node closes
the link and re-dials. A dropped chunk is lost for good (TCP itself never loses
bytes): drop is stream damage, not packet loss; for an outage use blackhole.

The decisions are sans-I/O: a FaultPlan turns each chunk into the writes it
becomes and the time each is due, from a random.Random seeded per relay,
connection and direction, so a run with the same seed and the same chunks makes
the same decisions. Every fault that fires is counted and logged as an Event.

Notes on the websocket client of the nodes (trio-websocket 0.12), which shape
what the relay does and what a fault costs:
- given a TCP close before the answer to its upgrade request, it waits out its
  whole connect timeout (10 s in a node) instead of failing. So a connection the
  relay cannot forward (the target does not answer, or a cut came just as it was
  accepted) is answered with an HTTP 503, and a cut closes the listening port, so
  that the node fails at once, as it would on a real refused connection;
- given no answer at all on an open connection, it waits forever (its connect
  timeout does not end the wait): a dial whose upgrade request is dropped (drop,
  or any fault that swallows it) hangs that node's dial loop to that peer until
  the connection closes. close_all() after such an episode frees it. That is
  also why blackhole refuses new dials rather than holding them.

A RelayMesh puts one Relay on every link of n guardians: guardian i dials
guardian j (i < j) through the relay (i, j), which forwards to j's real port.
"""

from __future__ import annotations

import logging
import math
import random
import socket
from collections import Counter, deque
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Sequence

import trio

log = logging.getLogger("simulate.relay")

A_TO_B = "a->b"
B_TO_A = "b->a"
BOTH = "both"
DIRECTIONS = (A_TO_B, B_TO_A)

CHUNK_BYTES = 65536          # the most one read takes from a socket
QUEUE_BYTES = 1 << 20        # bytes waiting in one direction before the relay stops reading that side
SLICE_SECONDS = 0.05         # under a bandwidth cap a chunk is written in slices of at most this much time
MAX_EVENTS = 100_000         # past this the events are still counted, but no longer kept

CLOSED = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def directions(direction: str) -> tuple[str, ...]:
    """"a->b", "b->a" or "both", as the tuple of single directions it names."""
    if direction == BOTH:
        return DIRECTIONS
    if direction in DIRECTIONS:
        return (direction,)
    raise ValueError(f"direction must be {A_TO_B!r}, {B_TO_A!r} or {BOTH!r}, got {direction!r}")


# --- the decisions (no I/O) -----------------------------------------------------------------------


@dataclass(frozen=True)
class Faults:
    """The faults applied to one direction of a link. The defaults pass every byte through untouched."""

    delay: float = 0.0            # seconds added to every chunk
    jitter: float = 0.0           # +- uniform seconds on top of the delay (never reorders)
    drop: float = 0.0             # probability that a chunk is discarded
    duplicate: float = 0.0        # probability that a chunk is written twice
    reorder: float = 0.0          # probability that a chunk is swapped with the next one
    corrupt: float = 0.0          # probability that one random bit of a chunk is flipped
    slow: float | None = None     # bandwidth cap in bytes per second; None: no cap
    reorder_hold: float = 0.1     # the longest a held-back chunk waits for a next one to swap with

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability, got {value!r}")
        if self.delay < 0 or self.jitter < 0 or self.reorder_hold <= 0:
            raise ValueError("delay and jitter must be >= 0 and reorder_hold > 0")
        if self.slow is not None and self.slow <= 0:
            raise ValueError(f"slow is a rate in bytes per second, got {self.slow!r}")

    @property
    def clean(self) -> bool:
        return self == Faults(reorder_hold=self.reorder_hold)

    def describe(self) -> str:
        """The settings that differ from the defaults, e.g. "delay=0.2 drop=0.01"; "clean" if none."""
        default = Faults()
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                 if getattr(self, f.name) != getattr(default, f.name)]
        return " ".join(parts) or "clean"


FAULT_FIELDS = frozenset(f.name for f in fields(Faults))


@dataclass(frozen=True)
class Send:
    """One write the relay owes the receiving side: `data` at trio time `at`."""

    at: float
    data: bytes


class FaultPlan:
    """What happens to the chunks of one direction of one connection: pure decisions, no I/O.

    `faults` may be replaced between calls (the relay puts its live settings there
    before each chunk). Every method takes the current time and returns the
    writes due, in order and with non-decreasing times, so the stream order is
    only ever changed by the faults that are meant to change it (reorder).
    """

    def __init__(self, rng: random.Random, faults: Faults | None = None) -> None:
        self.rng = rng
        self.faults = faults or Faults()
        self.held: bytes | None = None       # a chunk waiting to be swapped with the next one
        self.last_due = -math.inf            # when the last write is due: nothing may be due earlier
        self._link_free = -math.inf          # under a bandwidth cap: when the previous write has gone out

    @property
    def holding(self) -> bool:
        return self.held is not None

    def feed(self, data: bytes, now: float) -> tuple[list[Send], list[str]]:
        """One chunk read from the sending side: the writes it becomes, and the names of the faults that fired."""
        f, rng, fired = self.faults, self.rng, []
        if f.drop and rng.random() < f.drop:
            return [], ["drop"]
        if f.corrupt and rng.random() < f.corrupt:
            data = flip_bit(data, rng.randrange(len(data) * 8))
            fired.append("corrupt")
        if f.duplicate and rng.random() < f.duplicate:
            data = data + data
            fired.append("duplicate")
        if self.held is not None:
            data, self.held = data + self.held, None       # the swap: this chunk goes out first
        elif f.reorder and rng.random() < f.reorder:
            self.held = data
            fired.append("reorder")
            return [], fired
        return self._schedule(data, now, delayed=True), fired

    def flush(self, now: float) -> list[Send]:
        """No next chunk came in time (or the stream ends): the held chunk goes out as it is."""
        if self.held is None:
            return []
        data, self.held = self.held, None
        return self._schedule(data, now, delayed=True)

    def garbage(self, count: int, now: float) -> list[Send]:
        """`count` random bytes, written as soon as what is already queued has been written."""
        return self._schedule(self.rng.randbytes(count), now, delayed=False) if count > 0 else []

    def _schedule(self, data: bytes, now: float, delayed: bool) -> list[Send]:
        f = self.faults
        due = now
        if delayed:
            due += f.delay + (self.rng.uniform(-f.jitter, f.jitter) if f.jitter else 0.0)
        due = max(due, now, self.last_due)
        if f.slow is None:
            sends = [Send(due, data)]
        else:
            size, sends = max(1, int(f.slow * SLICE_SECONDS)), []
            for start in range(0, len(data), size):
                piece = data[start:start + size]
                self._link_free = max(due, self._link_free) + len(piece) / f.slow
                sends.append(Send(self._link_free, piece))
            due = self._link_free
        self.last_due = due
        return sends


def plan_rng(seed: int | str, connection: int, direction: str) -> random.Random:
    """The random source of one direction of one connection of a relay (connections count from 1).

    With it, FaultPlan replays exactly the decisions a relay made, given the chunks it read.
    """
    return random.Random(f"{seed}:{connection}:{direction}")


def flip_bit(data: bytes, bit: int) -> bytes:
    """`data` with bit number `bit` (0 = lowest bit of the first byte) inverted."""
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- what a relay reports -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One fault injected (or one change of the link), for the simulator's report."""

    time: float                  # trio.current_time()
    link: str                    # the relay's name, e.g. "1->2"
    kind: str                    # drop, corrupt, duplicate, reorder, garbage, set, clear, cut, blackhole,
    #                              heal, heal-failed, partition, refused, reset
    direction: str               # "a->b", "b->a" or "both"
    connection: int | None = None    # the relay's number for the connection it hit, if one
    detail: str = ""

    def __str__(self) -> str:
        where = f" conn {self.connection}" if self.connection is not None else ""
        detail = f" {self.detail}" if self.detail else ""
        return f"{self.time:10.3f}  {self.link:<8} {self.direction:<5} {self.kind}{where}{detail}"


@dataclass
class RelayStats:
    """Traffic through a relay. Every connection of one relay is dialled from side a."""

    bytes_in: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))   # read from the sender
    bytes_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))  # written to the receiver
    chunks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DIRECTIONS, 0))     # reads from the sender
    connections: int = 0         # accepted and forwarded to the target
    refused: int = 0             # accepted just before a cut: answered REJECTION (during a cut the port is closed)
    target_failures: int = 0     # accepted, but the target did not answer: answered REJECTION
    closed_by_fault: int = 0     # closed by cut() or close_all()


# --- the relay ------------------------------------------------------------------------------------


class _Queue:
    """The writes owed to one side, in order; empty data marks the end of the stream."""

    def __init__(self) -> None:
        self.items: deque[Send] = deque()
        self.bytes = 0
        self._changed = trio.Event()

    def put(self, sends: list[Send]) -> None:
        if sends:
            self.items.extend(sends)
            self.bytes += sum(len(s.data) for s in sends if s.data)
            self._wake()

    async def get(self) -> Send:
        while not self.items:
            await self._wait()
        send = self.items.popleft()
        self.bytes -= len(send.data) if send.data else 0
        self._wake()
        return send

    async def wait_for_room(self) -> None:
        while self.bytes > QUEUE_BYTES:
            await self._wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait(self) -> None:
        await self._changed.wait()


class _Connection:
    def __init__(self, number: int, client: trio.SocketStream, upstream: trio.SocketStream, seed) -> None:
        self.number = number
        self.streams = {A_TO_B: (client, upstream), B_TO_A: (upstream, client)}    # (from, to)
        self.plans = {d: FaultPlan(plan_rng(seed, number, d)) for d in DIRECTIONS}
        self.queues = {d: _Queue() for d in DIRECTIONS}
        self.scope = trio.CancelScope()


# Sent to a dialer the relay cannot serve (the target does not answer, or it was accepted just
# before a cut): a websocket client gives up at once, where a bare close costs it its connect
# timeout (see the module notes).
REJECTION = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _reject(client: trio.SocketStream, timeout: float = 1.0) -> None:
    """Read the dialer's request, answer REJECTION and close (after the dialer, so no reset loses the answer)."""
    with trio.move_on_after(timeout):
        try:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 65536:
                data = await client.receive_some(4096)
                if not data:
                    break
                request += data
            await client.send_all(REJECTION)
            await client.send_eof()
            while await client.receive_some(4096):
                pass
        except CLOSED:
            pass
    await trio.aclose_forcefully(client)


class Relay:
    """Forward TCP from 127.0.0.1:port to one target, with faults settable per direction at runtime.

    Run it with `await nursery.start(relay.serve)` (it returns the relay, whose
    .port is then set). Fault settings are in `relay.faults[direction]` and change
    with set() / clear(); they apply to the next chunk read, on every connection.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", *, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, seed: int | str = 0, name: str | None = None) -> None:
        self.target = (target_host, target_port)
        self.listen_host, self.listen_port = listen_host, listen_port
        self.seed = seed
        self.name = name or f"relay->{target_port}"
        self.port: int | None = None
        self.faults: dict[str, Faults] = dict.fromkeys(DIRECTIONS, Faults())
        self.stats = RelayStats()
        self.events: list[Event] = []
        self.counts: Counter[tuple[str, str]] = Counter()      # (kind, direction) -> events, kept or not
        self.is_cut = False
        self.is_silent = False                                  # a blackhole: see blackhole()
        self._cuts = 0                                          # a partition heals only the cut it made
        self._released: trio.Event | None = None                # set when a blackhole ends
        self._connections: dict[int, _Connection] = {}
        self._accepted = 0
        self._nursery: trio.Nursery | None = None
        self._listener: trio.SocketListener | None = None

    @property
    def address(self) -> str:
        """The ws:// address that reaches the target through this relay (for a roster)."""
        if self.port is None:
            raise RuntimeError(f"relay {self.name} is not serving yet")
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"ws://{host}:{self.port}"

    @property
    def active(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    # --- running ---

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen, and forward every connection until cancelled (or stop())."""
        listener = self._open_listener()
        self.port = listener.socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.is_cut or self.is_silent:
                    listener.socket.close()
                else:
                    self._accept_on(listener)
                log.debug("relay %s: %s:%d -> %s:%d", self.name, self.listen_host, self.port, *self.target)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._close_listener()

    def stop(self) -> None:
        """Stop serving: every connection closes and the port is released."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _open_listener(self) -> trio.SocketListener:
        """Bind (again, after a cut: the same port) and listen. Synchronous, so cut/heal take effect at once."""
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.listen_host, self.port if self.port is not None else self.listen_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock))

    def _accept_on(self, listener: trio.SocketListener) -> None:
        self._listener = listener
        self._nursery.start_soon(self._accept, listener)

    def _close_listener(self) -> None:
        if self._listener is not None:
            self._listener.socket.close()          # a pending accept() wakes with ClosedResourceError
            self._listener = None

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return                              # cut
            except OSError as e:                    # out of descriptors and the like: wait, then go on
                log.warning("relay %s: accept failed: %s", self.name, e)
                await trio.sleep(0.1)
                continue
            self._nursery.start_soon(self._handle, stream)

    async def _handle(self, client: trio.SocketStream) -> None:
        self._accepted += 1
        number = self._accepted
        if self.is_cut or self.is_silent:      # accepted just before a cut
            self.stats.refused += 1
            self._event("refused", BOTH, number)
            await _reject(client)
            return
        try:
            upstream = await trio.open_tcp_stream(*self.target)
        except OSError as e:
            self.stats.target_failures += 1
            log.debug("relay %s: target %s:%d does not answer: %s", self.name, *self.target, e)
            await _reject(client)
            return
        if self.is_cut or self.is_silent:      # cut while we were dialling the target
            self.stats.refused += 1
            self._event("refused", BOTH, number)
            await trio.aclose_forcefully(upstream)
            await _reject(client)
            return
        connection = _Connection(number, client, upstream, self.seed)
        self.stats.connections += 1
        self._connections[number] = connection
        try:
            with connection.scope:
                async with trio.open_nursery() as nursery:
                    for direction in DIRECTIONS:
                        nursery.start_soon(self._guard, connection, self._read, direction)
                        nursery.start_soon(self._guard, connection, self._write, direction)
        finally:
            del self._connections[number]
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)

    async def _guard(self, connection: _Connection, pump, direction: str) -> None:
        """A side that fails closes the whole connection (the other side then sees it close)."""
        try:
            await pump(connection, direction)
        except CLOSED:
            connection.scope.cancel()

    async def _read(self, connection: _Connection, direction: str) -> None:
        source = connection.streams[direction][0]
        plan, queue = connection.plans[direction], connection.queues[direction]
        while True:
            await queue.wait_for_room()
            data = None
            if plan.holding:
                with trio.move_on_after(plan.faults.reorder_hold):
                    data = await source.receive_some(CHUNK_BYTES)
                if data is None:
                    queue.put(plan.flush(trio.current_time()))
                    continue
            else:
                data = await source.receive_some(CHUNK_BYTES)
            now = trio.current_time()
            if not data:                                 # end of stream: what is owed goes first
                queue.put(plan.flush(now))
                queue.put([Send(max(now, plan.last_due), b"")])
                return
            self.stats.bytes_in[direction] += len(data)
            self.stats.chunks[direction] += 1
            plan.faults = self.faults[direction]
            sends, fired = plan.feed(data, now)
            for kind in fired:
                self._event(kind, direction, connection.number, f"{len(data)} bytes", quiet=True)
            queue.put(sends)

    async def _write(self, connection: _Connection, direction: str) -> None:
        destination = connection.streams[direction][1]
        queue = connection.queues[direction]
        while True:
            send = await queue.get()
            await trio.sleep_until(send.at)
            while self.is_silent:                        # held, as TCP would keep retransmitting it
                await self._released.wait()
            if not send.data:
                await destination.send_eof()
                return
            await destination.send_all(send.data)
            self.stats.bytes_out[direction] += len(send.data)

    # --- faults ---

    def set(self, direction: str = BOTH, **changes) -> None:
        """Change some fault settings of one direction or both, keeping the others; e.g. set(delay=0.2, jitter=0.05)."""
        unknown = set(changes) - FAULT_FIELDS
        if unknown:
            raise TypeError(f"unknown faults {sorted(unknown)}; known: {sorted(FAULT_FIELDS)}")
        for d in directions(direction):
            self.faults[d] = replace(self.faults[d], **changes)
        self._event("set", direction, detail=" ".join(f"{k}={v}" for k, v in changes.items()))

    def clear(self, direction: str = BOTH) -> None:
        """Back to no faults (delay, drop, ... all off) in one direction or both. A cut stays until heal()."""
        for d in directions(direction):
            self.faults[d] = Faults()
        self._event("clear", direction)

    def cut(self) -> int:
        """Close every connection now and refuse new ones until heal(). Returns how many were closed.

        The relay stops listening, so a dial gets "connection refused" at once, as from a
        host whose port is closed (the port stays this relay's: heal() binds it again).
        """
        self.is_cut = True
        self._cuts += 1
        self._close_listener()
        closed = self._close_connections()
        self._event("cut", BOTH, detail=f"closed {closed} connections")
        return closed

    def blackhole(self) -> int:
        """A silent partition, until heal(): returns how many open connections it holds.

        Open connections stay open and carry nothing: what is sent is kept, and
        delivered on heal() (as TCP retransmits across a short outage); the nodes find
        out only through their heartbeats. New dials are refused, as with cut() (a
        relay cannot drop a SYN; and a dial accepted but never answered would hang the
        node's websocket client for good, see the module notes).
        """
        if not self.is_silent:
            self._released = trio.Event()
        self.is_silent = True
        self._cuts += 1
        self._close_listener()
        self._event("blackhole", BOTH, detail=f"holding {len(self._connections)} connections")
        return len(self._connections)

    def heal(self) -> bool:
        """End a cut or a blackhole: held bytes go on, new connections are forwarded. False if neither was on."""
        if not (self.is_cut or self.is_silent):
            return False
        if self._nursery is not None and self._listener is None:
            self._accept_on(self._open_listener())
        self.is_cut = False
        if self.is_silent:
            self.is_silent = False
            self._released.set()
        self._event("heal", BOTH)
        return True

    def partition(self, seconds: float, silent: bool = False) -> None:
        """cut() (or with silent, blackhole()) now, and heal() after `seconds`,
        unless something cuts or heals the link again meanwhile."""
        if self._nursery is None:
            raise RuntimeError(f"relay {self.name} is not serving")
        self.blackhole() if silent else self.cut()
        self._event("partition", BOTH, detail=f"{seconds} s{' silent' if silent else ''}")
        self._nursery.start_soon(self._heal_later, seconds, self._cuts)

    async def _heal_later(self, seconds: float, cut_number: int) -> None:
        await trio.sleep(seconds)
        if self._cuts == cut_number:
            try:
                self.heal()
            except OSError as e:                    # someone took the port meanwhile
                self._event("heal-failed", BOTH, detail=str(e))
                log.error("relay %s: cannot listen on port %d again: %s", self.name, self.port, e)

    def garbage(self, count: int, direction: str = A_TO_B) -> int:
        """Write `count` random bytes now into every open connection; returns how many connections got them."""
        if count < 1:
            raise ValueError(f"garbage needs at least one byte, got {count}")
        now = trio.current_time()
        hit = 0
        for connection in list(self._connections.values()):
            hit += 1
            for d in directions(direction):
                plan = connection.plans[d]
                plan.faults = self.faults[d]
                connection.queues[d].put(plan.garbage(count, now))
                self._event("garbage", d, connection.number, f"{count} bytes")
        return hit

    def close_all(self) -> int:
        """Close every open connection now (new ones are still forwarded). Returns how many were closed."""
        closed = self._close_connections()
        self._event("reset", BOTH, detail=f"closed {closed} connections")
        return closed

    def _close_connections(self) -> int:
        for connection in self._connections.values():
            connection.scope.cancel()
        self.stats.closed_by_fault += len(self._connections)
        return len(self._connections)

    # --- the log ---

    def fault_counts(self, kind: str | None = None) -> Counter[tuple[str, str]]:
        """(kind, direction) -> how many events; only those of one kind if given."""
        return Counter({k: v for k, v in self.counts.items() if kind is None or k[0] == kind})

    def count(self, kind: str, direction: str | None = None) -> int:
        """How many events of a kind, in one direction (or any if None)."""
        return sum(v for (k, d), v in self.counts.items() if k == kind and (direction is None or d == direction))

    def _event(self, kind: str, direction: str, connection: int | None = None, detail: str = "",
               quiet: bool = False) -> None:
        self.counts[(kind, direction)] += 1
        event = Event(trio.current_time(), self.name, kind, direction, connection, detail)
        if len(self.events) < MAX_EVENTS:
            self.events.append(event)
        (log.debug if quiet else log.info)("relay %s", event)


# --- a relay on every link ------------------------------------------------------------------------


class RelayMesh:
    """One Relay per pair of guardians: guardian i dials guardian j (i < j) through relay (i, j).

    `ports` are the nodes' real listening ports: a mapping {guardian: port} with
    guardians 1..n, or a sequence (guardian 1 first). Relay (i, j) forwards to
    j's port; its direction "a->b" is i to j. Run it with
    `await nursery.start(mesh.serve)`, then give node i the addresses(i).
    """

    def __init__(self, ports: Mapping[int, int] | Sequence[int], n: int | None = None, *, seed: int | str = 0,
                 host: str = "127.0.0.1") -> None:
        self.ports = dict(ports) if isinstance(ports, Mapping) else {i: p for i, p in enumerate(ports, 1)}
        if n is None:
            n = len(self.ports)
        if sorted(self.ports) != list(range(1, n + 1)):
            raise ValueError(f"need the ports of guardians 1..{n}, got guardians {sorted(self.ports)}")
        self.n, self.host = n, host
        self.relays: dict[tuple[int, int], Relay] = {
            (i, j): Relay(self.ports[j], host, listen_host=host, seed=f"{seed}:{i}-{j}", name=f"{i}->{j}")
            for i in range(1, n + 1) for j in range(i + 1, n + 1)}
        self._nursery: trio.Nursery | None = None

    async def serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Start every relay; returns (through nursery.start) the mesh once every port is known."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for relay in self.relays.values():
                await nursery.start(relay.serve)
            task_status.started(self)

    def stop(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def link(self, i: int, j: int) -> Relay:
        """The relay between guardians i and j, in either order."""
        if i == j:
            raise ValueError("a guardian has no link to itself")
        return self.relays[(min(i, j), max(i, j))]

    def links(self, i: int) -> list[Relay]:
        """Every relay on a link of guardian i."""
        return [relay for pair, relay in self.relays.items() if i in pair]

    def address(self, i: int, j: int) -> str:
        """The address of guardian j in guardian i's roster.

        For j > i it is the relay's, since i dials j. For j < i it is j's real
        address: j dials i, and a node never dials a peer with a lower sequence
        number, so that address is never used (it only has to be a valid, unique one).
        """
        if j > i:
            return self.link(i, j).address
        return f"ws://{self.host}:{self.ports[j]}"

    def addresses(self, i: int) -> dict[int, str]:
        """{guardian j: address} for every peer j of guardian i, for i's roster (i's own entry: its real address)."""
        return {j: self.address(i, j) for j in self.ports if j != i}

    def roster_addresses(self) -> dict[int, dict[int, str]]:
        """addresses(i) for every guardian i."""
        return {i: self.addresses(i) for i in self.ports}

    def isolate(self, i: int, seconds: float | None = None, silent: bool = False) -> None:
        """Cut every link of guardian i (silent: blackhole them); with `seconds`, it heals by itself."""
        for relay in self.links(i):
            if seconds is not None:
                relay.partition(seconds, silent)
            elif silent:
                relay.blackhole()
            else:
                relay.cut()

    def heal_all(self) -> None:
        """Heal every cut or blackholed link. Other faults (delay, drop, ...) stay as set."""
        for relay in self.relays.values():
            relay.heal()

    def clear_all(self) -> None:
        """Heal every link and clear every fault setting."""
        for relay in self.relays.values():
            relay.heal()
            relay.clear()

    def close_all(self) -> None:
        for relay in self.relays.values():
            relay.close_all()

    def events(self) -> list[Event]:
        """Every relay's events, in time order."""
        return sorted((e for relay in self.relays.values() for e in relay.events), key=lambda e: e.time)

    def fault_counts(self) -> Counter[tuple[str, str, str]]:
        """(link, kind, direction) -> how many events."""
        return Counter({(relay.name, k, d): v for relay in self.relays.values() for (k, d), v in relay.counts.items()})
