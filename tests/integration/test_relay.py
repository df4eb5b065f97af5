"""The fault-injecting relay of the simulator: real sockets on loopback, then two real nodes behind one.

Most tests put a trio echo server behind a Relay and inject faults only on the
way in ("a->b"), so what comes back shows exactly what the relay did. The last
test runs two `guardian run` processes whose only link goes through a Relay,
cuts it and heals it.
"""

from __future__ import annotations

import random
from functools import partial

import pytest
import trio
import trio_websocket

from node.config import roster_entry_toml
from node.identity import encode_public_key
from node.testing.processes import NodeProc, all_connected, eventually, free_port
from simulate.relay import (
    A_TO_B,
    B_TO_A,
    BOTH,
    Event,
    FaultPlan,
    Faults,
    Relay,
    RelayMesh,
    flip_bit,
    plan_rng,
)

CLOSED = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


# --- helpers ----------------------------------------------------------------------------------------


def echo_handler(tag: bytes = b""):
    """An echo server's handler: sends `tag` first (to tell servers apart), then back every chunk."""
    async def handle(stream: trio.SocketStream) -> None:
        try:
            if tag:
                await stream.send_all(tag)
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except CLOSED:
            pass
    return handle


async def start_echo(nursery, tag: bytes = b"") -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, echo_handler(tag), 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def start_relay(nursery, target: int, **kw) -> Relay:
    return await nursery.start(Relay(target, **kw).serve)


async def connect(relay: Relay) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", relay.port)


async def receive(stream: trio.SocketStream, n: int, timeout: float = 5) -> bytes:
    """Exactly n bytes (fails on timeout or end of stream)."""
    out = b""
    with trio.fail_after(timeout):
        while len(out) < n:
            chunk = await stream.receive_some(n - len(out))
            assert chunk, f"stream ended after {len(out)} of {n} bytes"
            out += chunk
    return out


async def nothing_within(stream: trio.SocketStream, seconds: float) -> None:
    with trio.move_on_after(seconds):
        data = await stream.receive_some(65536)
        raise AssertionError(f"expected silence, got {data!r}")


async def is_closed(stream: trio.SocketStream, timeout: float = 5) -> bool:
    """True if the other end closes (end of stream or reset) within the timeout."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(65536):
                pass
        except CLOSED:
            pass
        return True
    return False


async def round_trip(relay: Relay, data: bytes = b"ping", tag: int = 0) -> bytes:
    """Connect, send data, and return what comes back (tag: the length of the server's greeting)."""
    stream = await connect(relay)
    async with stream:
        await stream.send_all(data)
        return await receive(stream, tag + len(data))


def kinds(relay: Relay) -> list[str]:
    return [e.kind for e in relay.events]


# --- plain forwarding -------------------------------------------------------------------------------


async def test_bytes_pass_unchanged_without_faults(nursery):
    relay = await start_relay(nursery, await start_echo(nursery), name="t")
    assert relay.address == f"ws://127.0.0.1:{relay.port}"
    payload = random.Random(1).randbytes(300_000)
    stream = await connect(relay)
    async with stream:
        async with trio.open_nursery() as inner:
            async def send():
                for i in range(0, len(payload), 7000):
                    await stream.send_all(payload[i:i + 7000])
            inner.start_soon(send)
            assert await receive(stream, len(payload)) == payload
        assert relay.active == 1
    await eventually(_async(lambda: relay.active == 0), 5, "the relay notices the close")
    stats = relay.stats
    assert stats.bytes_in == stats.bytes_out == {A_TO_B: len(payload), B_TO_A: len(payload)}
    assert stats.chunks[A_TO_B] >= 1 and stats.connections == 1 and stats.refused == 0
    assert relay.events == [] and relay.counts == {}


def _async(predicate):
    async def check():
        assert predicate()
    return check


async def test_end_of_stream_passes_after_the_data_each_way(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    relay.set(delay=0.2)
    stream = await connect(relay)
    await stream.send_all(b"last words")
    await stream.send_eof()                  # half-close: the echo still answers, then closes its side
    assert await receive(stream, 10) == b"last words"
    assert await stream.receive_some(100) == b""
    await stream.aclose()


# --- faults -----------------------------------------------------------------------------------------


async def test_delay_adds_latency_and_jitter_keeps_order(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    start = trio.current_time()
    await round_trip(relay)
    baseline = trio.current_time() - start

    relay.set(delay=0.15)                                  # both ways: 0.3 s per round trip
    start = trio.current_time()
    assert await round_trip(relay) == b"ping"
    assert trio.current_time() - start >= 0.3

    relay.set(A_TO_B, jitter=0.1)                          # a->b now 0.05..0.25 s per chunk
    relay.set(B_TO_A, delay=0.0)
    messages = [b"<%03d>" % i for i in range(40)]
    stream = await connect(relay)
    async with stream:
        start = trio.current_time()
        for m in messages:
            await stream.send_all(m)
            await trio.sleep(0.003)
        echoed = await receive(stream, sum(map(len, messages)))
        assert echoed == b"".join(messages)               # in order, whatever the jitter drew
        assert trio.current_time() - start >= 0.05 + baseline / 2
    assert relay.faults[A_TO_B] == Faults(delay=0.15, jitter=0.1)
    assert relay.faults[B_TO_A] == Faults()
    assert kinds(relay) == ["set", "set", "set"] and relay.count("set") == 3
    assert relay.events[0].direction == BOTH and relay.events[0].detail == "delay=0.15"


async def test_cut_closes_connections_and_refuses_new_ones_until_heal(nursery):
    relay = await start_relay(nursery, await start_echo(nursery), name="x")
    port = relay.port
    streams = [await connect(relay) for _ in range(2)]
    for s in streams:
        await s.send_all(b"hi")
        assert await receive(s, 2) == b"hi"
    assert relay.active == 2
    assert relay.cut() == 2 and relay.is_cut
    for s in streams:
        assert await is_closed(s)
        await s.aclose()
    for _ in range(2):                                     # the port is closed: refused by the system
        with pytest.raises(OSError):
            await connect(relay)
    assert relay.stats.closed_by_fault == 2
    assert relay.heal() and not relay.is_cut and not relay.heal()
    assert relay.port == port                              # the same port again
    assert await round_trip(relay) == b"ping"
    assert kinds(relay) == ["cut", "heal"]
    assert relay.events[0].detail == "closed 2 connections"
    assert relay.fault_counts() == {("cut", BOTH): 1, ("heal", BOTH): 1}
    assert relay.stats.connections == 3 and relay.stats.refused == 0


async def test_a_target_that_does_not_answer_is_a_prompt_refusal(nursery):
    relay = await start_relay(nursery, free_port())        # nothing listens there
    start = trio.current_time()
    with pytest.raises(trio_websocket.ConnectionRejected) as rejected:
        async with trio_websocket.open_websocket_url(relay.address, connect_timeout=10):
            pass
    assert rejected.value.status_code == 503
    assert trio.current_time() - start < 2                 # not the client's connect timeout
    assert relay.stats.target_failures == 1 and relay.stats.connections == 0 and relay.events == []


async def test_close_all_resets_connections_but_accepts_new_ones(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    stream = await connect(relay)
    await stream.send_all(b"x")
    await receive(stream, 1)
    assert relay.close_all() == 1
    assert await is_closed(stream)
    assert await round_trip(relay) == b"ping"
    assert kinds(relay) == ["reset"]


async def test_partition_heals_by_itself_and_a_later_cut_stays(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    stream = await connect(relay)
    await stream.send_all(b"up")
    await receive(stream, 2)                               # forwarded: the relay holds the connection
    relay.partition(0.4)
    assert await is_closed(stream)
    with pytest.raises(OSError):
        await round_trip(relay)                            # refused meanwhile
    await trio.sleep(0.5)
    assert not relay.is_cut
    assert await round_trip(relay) == b"ping"
    assert kinds(relay) == ["cut", "partition", "heal"]

    relay.partition(0.2)
    relay.cut()                                            # a cut of its own: the partition's timer leaves it
    await trio.sleep(0.4)
    assert relay.is_cut
    relay.heal()
    assert await round_trip(relay) == b"ping"


async def test_blackhole_holds_the_bytes_until_heal_and_refuses_new_dials(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    stream = await connect(relay)
    async with stream:
        await stream.send_all(b"before")
        assert await receive(stream, 6) == b"before"
        assert relay.blackhole() == 1 and relay.is_silent
        await stream.send_all(b"during")
        await nothing_within(stream, 0.3)                  # open, but silent
        with pytest.raises(OSError):
            await connect(relay)
        assert relay.heal() and not relay.is_silent
        assert await receive(stream, 6) == b"during"       # kept, and delivered on heal
    assert await round_trip(relay) == b"ping"
    relay.partition(0.2, silent=True)
    assert relay.is_silent and not relay.is_cut
    await trio.sleep(0.4)
    assert not relay.is_silent
    assert kinds(relay) == ["blackhole", "heal", "blackhole", "partition", "heal"]
    assert relay.events[0].detail == "holding 1 connections" and relay.events[3].detail == "0.2 s silent"


async def test_corrupt_flips_exactly_one_bit_per_chunk(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    relay.set(A_TO_B, corrupt=1.0)
    stream = await connect(relay)
    async with stream:
        for i in range(3):
            sent = bytes(range(256)) * 4
            await stream.send_all(sent)
            got = await receive(stream, len(sent))
            assert got != sent
            assert sum(bin(a ^ b).count("1") for a, b in zip(sent, got)) == 1
    assert relay.count("corrupt", A_TO_B) == 3 and relay.count("corrupt", B_TO_A) == 0
    assert all(e.connection == 1 and e.detail == "1024 bytes" for e in relay.events if e.kind == "corrupt")


async def test_drop_discards_chunks_and_the_connection_stays_open(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    relay.set(A_TO_B, drop=1.0)
    stream = await connect(relay)
    async with stream:
        for _ in range(3):
            await stream.send_all(b"lost")
            await trio.sleep(0.02)
        await nothing_within(stream, 0.3)
        relay.clear(A_TO_B)
        await stream.send_all(b"kept")
        assert await receive(stream, 4) == b"kept"
    assert relay.count("drop", A_TO_B) == 3
    assert relay.stats.bytes_in[A_TO_B] == 16 and relay.stats.bytes_out[A_TO_B] == 4


async def _scripted_stream(relay: Relay, chunks: list[bytes], expected_length: int) -> bytes:
    """Send chunks one read apart, and collect what the echo returns."""
    stream = await connect(relay)
    async with stream:
        for c in chunks:
            await stream.send_all(c)
            await trio.sleep(0.02)
        return await receive(stream, expected_length)


def _replay(seed, faults: Faults, chunks: list[bytes]) -> bytes:
    """What relay connection 1 writes a->b, from the decisions alone."""
    plan = FaultPlan(plan_rng(seed, 1, A_TO_B), faults)
    out = []
    for c in chunks:
        sends, _ = plan.feed(c, 0.0)
        out += sends
    out += plan.flush(0.0)
    return b"".join(s.data for s in out)


async def test_duplicate_and_reorder_are_reproducible_with_a_seed(nursery):
    port = await start_echo(nursery)
    faults = dict(duplicate=0.3, reorder=0.3, reorder_hold=0.4)
    chunks = [b"[%02d]" % i for i in range(20)]
    expected = _replay(7, Faults(**faults), chunks)
    assert expected != b"".join(chunks)                   # changed: some chunks twice, some swapped
    assert set(expected.split(b"]")) == set(b"".join(chunks).split(b"]"))      # and nothing else
    seen = []
    for seed in (7, 7, 8):
        relay = await start_relay(nursery, port, seed=seed)
        relay.set(A_TO_B, **faults)
        want = _replay(seed, Faults(**faults), chunks)
        assert await _scripted_stream(relay, chunks, len(want)) == want
        seen.append(want)
        assert relay.count("duplicate") == (len(want) - 80) // 4
        assert relay.count("reorder") >= 1
    assert seen[0] == seen[1] == expected and seen[2] != expected


def test_the_decisions_alone():
    chunks = [bytes([i]) * 10 for i in range(50)]
    # the same seed: the same decisions; nothing is ever written earlier than the one before
    for faults in (Faults(drop=0.2, duplicate=0.2, reorder=0.2, corrupt=0.2, delay=0.1, jitter=0.1),
                   Faults(slow=1000, delay=0.05)):
        runs = []
        for _ in range(2):
            plan, now, sends, fired = FaultPlan(random.Random(3), faults), 0.0, [], []
            for c in chunks:
                now += 0.01
                s, f = plan.feed(c, now)
                sends += s
                fired += f
            sends += plan.flush(now)
            assert all(a.at <= b.at for a, b in zip(sends, sends[1:]))
            assert all(s.at >= 0.05 for s in sends)
            runs.append((sends, fired))
        assert runs[0] == runs[1]
    # a bandwidth cap of 1000 bytes/s: 500 bytes take half a second, in slices of 50 bytes
    sends = FaultPlan(random.Random(0), Faults(slow=1000)).feed(b"x" * 500, 10.0)[0]
    assert [len(s.data) for s in sends] == [50] * 10 and sends[-1].at == pytest.approx(10.5)
    # a swap: the held chunk goes out right after the next one
    plan = FaultPlan(random.Random(0), Faults(reorder=1.0))
    assert plan.feed(b"one", 0) == ([], ["reorder"]) and plan.holding
    assert [s.data for s in plan.feed(b"two", 0)[0]] == [b"twoone"] and not plan.holding
    assert flip_bit(b"\x00\x00", 9) == b"\x00\x02"
    with pytest.raises(ValueError):
        Faults(drop=1.5)
    assert Faults(delay=0.2, drop=0.01).describe() == "delay=0.2 drop=0.01" and Faults().clean


async def test_garbage_injects_random_bytes_now(nursery):
    relay = await start_relay(nursery, await start_echo(nursery), seed=5)
    assert relay.garbage(8) == 0                           # no connection: nothing to inject into
    stream = await connect(relay)
    async with stream:
        await stream.send_all(b"abc")
        assert await receive(stream, 3) == b"abc"
        assert relay.garbage(8, A_TO_B) == 1
        assert await receive(stream, 8) == plan_rng(5, 1, A_TO_B).randbytes(8)
        assert relay.garbage(3, B_TO_A) == 1
        assert len(await receive(stream, 3)) == 3
    assert [(e.kind, e.direction, e.detail) for e in relay.events] == \
        [("garbage", A_TO_B, "8 bytes"), ("garbage", B_TO_A, "3 bytes")]
    assert relay.stats.bytes_out[A_TO_B] == 11 and relay.stats.bytes_in[A_TO_B] == 3


async def test_slow_caps_the_bandwidth(nursery):
    relay = await start_relay(nursery, await start_echo(nursery))
    relay.set(A_TO_B, slow=20_000)
    start = trio.current_time()
    assert await round_trip(relay, b"z" * 10_000) == b"z" * 10_000
    assert 0.45 <= trio.current_time() - start < 3
    with pytest.raises(TypeError):
        relay.set(bandwidth=5)


async def test_the_event_log_reads_well(nursery):
    relay = await start_relay(nursery, await start_echo(nursery), name="2->3")
    relay.set(A_TO_B, drop=0.5)
    relay.clear()
    relay.cut()
    relay.heal()
    assert kinds(relay) == ["set", "clear", "cut", "heal"]
    assert all(isinstance(e, Event) and e.link == "2->3" for e in relay.events)
    times = [e.time for e in relay.events]
    assert times == sorted(times)
    line = str(relay.events[0])
    assert "2->3" in line and "a->b" in line and "set" in line and "drop=0.5" in line


# --- the mesh ---------------------------------------------------------------------------------------


async def test_mesh_puts_one_relay_on_every_link(nursery):
    n = 4
    ports = {i: await start_echo(nursery, tag=b"%d:" % i) for i in range(1, n + 1)}
    mesh = await nursery.start(RelayMesh(ports, n, seed=9).serve)
    assert len(mesh.relays) == n * (n - 1) // 2 == 6
    assert mesh.link(3, 1) is mesh.link(1, 3) is mesh.relays[(1, 3)]
    assert mesh.link(1, 3).name == "1->3" and mesh.link(1, 3).target == ("127.0.0.1", ports[3])
    maps = mesh.roster_addresses()
    assert sorted(maps[2]) == [1, 3, 4]
    assert maps[2][3] == mesh.link(2, 3).address and maps[2][4] == mesh.link(2, 4).address
    assert maps[2][1] == f"ws://127.0.0.1:{ports[1]}"        # 1 dials 2: never dialled by 2
    assert len({a for m in maps.values() for a in m.values()}) == 6 + n - 1   # every relay; nodes 1..n-1

    for (i, j), relay in mesh.relays.items():              # each relay reaches node j
        assert await round_trip(relay, b"hello", tag=2) == b"%d:hello" % j

    mesh.isolate(2)
    assert {pair for pair, r in mesh.relays.items() if r.is_cut} == {(1, 2), (2, 3), (2, 4)}
    assert await round_trip(mesh.link(1, 3), tag=2) == b"3:ping"
    mesh.heal_all()
    assert not any(r.is_cut for r in mesh.relays.values())
    assert await round_trip(mesh.link(2, 4), tag=2) == b"4:ping"

    mesh.isolate(1, silent=True)
    assert {pair for pair, r in mesh.relays.items() if r.is_silent} == {(1, 2), (1, 3), (1, 4)}
    mesh.heal_all()
    mesh.isolate(4, seconds=0.2)
    assert len([r for r in mesh.relays.values() if r.is_cut]) == 3
    await trio.sleep(0.4)
    assert not any(r.is_cut for r in mesh.relays.values())
    events = mesh.events()
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert mesh.fault_counts()[("2->4", "cut", BOTH)] == 2 and mesh.fault_counts()[("1->4", "heal", BOTH)] == 2
    assert RelayMesh([1000, 1001, 1002]).link(1, 2).target == ("127.0.0.1", 1001)
    with pytest.raises(ValueError):
        RelayMesh({1: 1000, 3: 1001})


# --- two real nodes, one link through a relay -------------------------------------------------------


def write_roster(node: NodeProc, members: list[NodeProc], addresses: dict[str, str]) -> None:
    """node's own roster.toml: every member in sequence order, at its address in `addresses` (else its own)."""
    entries = [roster_entry_toml(sequence, m.name, encode_public_key(m.public_key), addresses.get(m.name, m.address),
                                 m.fingerprint) for sequence, m in enumerate(members, 1)]
    (node.dir / "roster.toml").write_text("\n".join(entries))


async def test_two_nodes_through_a_relay_survive_a_cut(cluster, nursery):
    async with trio.open_nursery() as inits:                # `guardian init` twice, side by side
        for name in ("alice", "bob"):
            inits.start_soon(trio.to_thread.run_sync, cluster.init_node, name)
    alice, bob = sorted(cluster.nodes, key=lambda n: n.name)           # alice (1) dials bob (2)
    relay = await start_relay(nursery, bob.port, name="alice->bob")
    write_roster(alice, [alice, bob], {"bob": relay.address})
    write_roster(bob, [alice, bob], {})
    await cluster.start(alice, bob)
    await all_connected([alice, bob], timeout=20)
    assert relay.stats.connections >= 1
    assert relay.stats.bytes_in[A_TO_B] > 0 and relay.stats.bytes_in[B_TO_A] > 0
    assert (await alice.peer("bob"))["address"] == relay.address

    relay.cut()

    async def both_disconnected():
        assert (await alice.peer("bob"))["state"] != "connected"
        assert (await bob.peer("alice"))["state"] != "connected"
    await eventually(both_disconnected, 10, "both ends see the cut")
    to_bob = await alice.send_note("bob", {"text": "sent during the cut"})
    to_alice = await bob.send_note("alice", {"text": "and back"})
    failures = (await alice.peer("bob"))["dial_failures"]

    async def refused():
        peer = await alice.peer("bob")
        assert peer["dial_failures"] > failures, peer       # alice keeps re-dialling, and is refused
        return peer
    await eventually(refused, 10, "alice re-dials into the cut")
    assert [m for m in await bob.inbox() if m["from"] == "alice"] == []

    relay.heal()
    healed = trio.current_time()
    await all_connected([alice, bob], timeout=15)
    print(f"reconnected {trio.current_time() - healed:.2f} s after heal")

    async def delivered():
        assert [(m["from"], m["seq"], m["body"]) for m in await bob.inbox()] == \
            [("alice", to_bob, {"text": "sent during the cut"})]
        assert [(m["from"], m["seq"]) for m in await alice.inbox()] == [("bob", to_alice)]
    await eventually(delivered, 10, "the notes sent during the cut arrive after heal")
    assert relay.count("cut") == relay.count("heal") == 1
