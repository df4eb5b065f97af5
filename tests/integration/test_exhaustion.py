"""A node under connection floods from loopback: silent TCP connections, a silent control client, and
an open-file limit below the flood. Real `guardian run` processes; every connection the test opens
goes to 127.0.0.1, is bounded in number and is closed at the end.
"""

from __future__ import annotations

import os
import resource
import socket

import trio

from node.daemon.control import CONTROL_READ_TIMEOUT
from node.daemon.node import MAX_UNAUTHENTICATED_PER_ADDRESS
from node.testing.processes import NodeProc, all_connected, cli, eventually


def open_files(node: NodeProc) -> int:
    return len(os.listdir(f"/proc/{node.proc.pid}/fd"))


def limit_open_files(node: NodeProc, limit: int) -> None:
    resource.prlimit(node.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """`count` TCP connections to the node that never send a byte."""
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        sockets.append(s)
    return sockets


def close_all(sockets: list[socket.socket]) -> None:
    for s in sockets:
        s.close()


async def _two_nodes(cluster) -> tuple[NodeProc, NodeProc]:
    alice, bob = cluster.init_node("alice"), cluster.init_node("bob")
    cluster.write_roster([alice, bob])             # alice dials bob
    await cluster.start(alice, bob)
    await all_connected([alice, bob])
    return alice, bob


async def test_more_silent_connections_than_open_files_leave_the_node_serving(cluster):
    alice, bob = await _two_nodes(cluster)
    limit = 256
    limit_open_files(bob, limit)
    flood = silent_connections(bob.port, limit + 100)
    try:
        # The node holds only a few of them (the per-address limit) and closes the rest at once:
        # it answers at once, its link holds, and the excess is counted against the address.
        async def counted():
            status = await bob.status()
            refused = status["other_refusals"].get("127.0.0.1", {}).get("connection limit", 0)
            assert refused >= limit + 100 - MAX_UNAUTHENTICATED_PER_ADDRESS, status["other_refusals"]
            return status
        status = await eventually(counted, 30, "the excess connections refused and counted")
        assert status["peers"][0]["state"] == "connected"
        assert open_files(bob) < limit
        text = await cli("status", "--config", bob.config)
        assert text.returncode == 0, text.stderr
        assert len(text.stdout.splitlines()) < 20, text.stdout

        # the dialler re-dials through the flood: restart alice, the link comes back
        alice.stop()
        alice.start()
        await alice.wait_ready()
        await all_connected([alice, bob])
    finally:
        close_all(flood)
    assert bob.alive and "Traceback" not in bob.output()


async def test_running_out_of_file_descriptors_does_not_kill_the_node(cluster):
    alice, bob = await _two_nodes(cluster)
    # Fewer descriptors to spare than the per-address limit: accept itself fails with EMFILE.
    limit = open_files(bob) + MAX_UNAUTHENTICATED_PER_ADDRESS // 2
    limit_open_files(bob, limit)
    flood = silent_connections(bob.port, MAX_UNAUTHENTICATED_PER_ADDRESS)
    try:
        await trio.sleep(1)
        assert open_files(bob) >= limit - 1, "the flood should have taken every descriptor"
        # `guardian status` meets EMFILE at the control socket: it may go unanswered, never kill the node
        await cli("status", "--config", bob.config, timeout=30)
        await trio.sleep(1)
        assert bob.alive, bob.output()[-3000:]
    finally:
        close_all(flood)
    # The silent connections are dropped after the handshake timeout; then everything answers again.
    status = await eventually(bob.status, 60, "bob answers once the flood is gone")
    assert bob.alive
    assert status["peers"][0]["state"] == "connected" or await eventually(
        lambda: _connected(bob), 30, "bob linked to alice")
    alice.stop()
    alice.start()
    await alice.wait_ready()
    await all_connected([alice, bob], 40)
    assert "EMFILE" in bob.output() or "Too many open files" in bob.output() + bob.log()


async def _connected(node: NodeProc) -> bool:
    assert (await node.status())["peers"][0]["state"] == "connected"
    return True


async def test_a_silent_control_client_is_dropped(cluster):
    alice, bob = await _two_nodes(cluster)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(alice.socket))
        silent.settimeout(CONTROL_READ_TIMEOUT + 10)
        started = trio.current_time()
        assert silent.recv(1) == b""                  # the node hung up
        assert trio.current_time() - started < CONTROL_READ_TIMEOUT + 10
        # meanwhile, and after, others are answered
        assert (await alice.status())["name"] == "alice"
    assert alice.alive
