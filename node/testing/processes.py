"""Helpers for the multi-process node tests: real `guardian` processes on loopback, and a harness peer.

A Cluster makes nodes with `guardian init`, writes one roster.toml from their
`guardian roster entry` output (plus any harness peers), starts `guardian run`
processes and always kills them at the end. A HarnessPeer is a roster member
played by the test itself: it has its own identity, dials a node with
trio-websocket, runs the real Handshake and then sends whatever frames a test
wants over the sealed link.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import msgpack
import trio
import trio_websocket

from node.config import roster_entry_toml
from node.crypto.errors import GuardianError
from node.daemon.node import control_request
from node.identity import Identity, encode_public_key, fingerprint, load_public_key
from node.protocol.envelope import NODE_SESSION, seal_envelope
from node.protocol.handshake import DIALER, Handshake, SecureLink

PASS_ENV = "GUARDIAN_TEST_PASSPHRASE"
PASSPHRASE = "loopback test passphrase"
PROJECT = Path(__file__).resolve().parents[2]

# Fast but not twitchy: a peer is dropped after 3 silent heartbeats (3 s); re-dials within a second.
FAST_NETWORK = {"heartbeat_seconds": 1.0, "redial_initial_seconds": 0.1, "redial_max_seconds": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    env[PASS_ENV] = PASSPHRASE
    env["PYTHONPATH"] = str(PROJECT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def guardian(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *map(str, args)], capture_output=True, text=True,
                          env=env or node_env(), timeout=timeout, cwd=PROJECT)


def roster_block(output: str) -> str:
    """The [[guardian]] block of `guardian roster entry`, without comments and the fingerprint line."""
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith("#") and not line.startswith("Fingerprint")]
    return "\n".join(lines) + "\n"


class NodeProc:
    def __init__(self, name: str, directory: Path, port: int) -> None:
        self.name, self.dir, self.port = name, directory, port
        self.proc: subprocess.Popen | None = None
        self.sequence: int | None = None
        self._out = None

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> bytes:
        return load_public_key(self.dir)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def set_network(self, **values) -> None:
        text = self.config.read_text()
        for key, value in values.items():
            text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
            assert count == 1, key
        self.config.write_text(text)

    def start(self, *extra: str) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self._out = open(self.dir / "output.txt", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--config", str(self.config), "--passphrase-env", PASS_ENV,
             *extra], stdout=self._out, stderr=subprocess.STDOUT, env=node_env(), cwd=self.dir)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        assert self.alive
        self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.alive:
            self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if self._out is not None:
            self._out.close()
            self._out = None

    def output(self) -> str:
        path = self.dir / "output.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        path = self.dir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def request(self, cmd: str, **fields) -> object:
        if not self.alive:
            raise AssertionError(f"node {self.name} is not running (exit {self.proc.returncode if self.proc else None})"
                                 f":\n{self.output()[-3000:]}")
        return await control_request(self.socket, {"cmd": cmd, **fields}, timeout=5)

    async def status(self) -> dict:
        return await self.request("status")

    async def inbox(self) -> list[dict]:
        return await self.request("inbox")

    async def send_note(self, to: str, body) -> int:
        return (await self.request("send", to=to, type="note", body=body))["seq"]

    async def peer(self, name: str) -> dict:
        for p in (await self.status())["peers"]:
            if p["name"] == name:
                return p
        raise AssertionError(f"{self.name} has no peer {name}")

    async def wait_ready(self, timeout: float = 30) -> dict:
        async def ready():
            return await self.status()
        return await eventually(ready, timeout, f"{self.name} answers status")


class HarnessPeer:
    """A roster member played by the test: its own identity, and a real handshake over a real websocket."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.identity = Identity.generate()
        self.port = port or free_port()
        self.sequence: int | None = None
        self.seq = 0

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def roster_entry(self, sequence: int) -> str:
        return roster_entry_toml(sequence, self.name, encode_public_key(self.public_key), self.address,
                                 self.identity.fingerprint)

    def envelope(self, body, *, seq: int | None = None, type_: str = "note", session: bytes = NODE_SESSION):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return seal_envelope(self.identity.signing_key, type_, session, seq, body)


class HarnessLink:
    """An authenticated link from a HarnessPeer to a node: send sealed frames, read and open the node's."""

    def __init__(self, ws, link: SecureLink) -> None:
        self.ws, self.link = ws, link
        self.received: list[tuple[str, object]] = []
        self.closed = trio.Event()
        self.open_errors = 0
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, ws, peer: HarnessPeer, roster_keys) -> "HarnessLink":
        handshake = Handshake(peer.identity.signing_key, DIALER, lambda key: key in roster_keys)
        with trio.fail_after(10):
            await ws.send_message(handshake.hello())
            while not handshake.done:
                for frame in handshake.receive(await ws.get_message()):
                    await ws.send_message(frame)
        return cls(ws, handshake.link)

    async def send_raw(self, data) -> None:
        """Straight onto the websocket, outside the sealed link."""
        async with self._lock:
            await self.ws.send_message(data)

    async def send_sealed(self, frame: bytes) -> None:
        async with self._lock:
            await self.ws.send_message(self.link.seal(frame))

    async def send(self, kind: str, payload) -> None:
        await self.send_sealed(msgpack.packb([kind, payload], use_bin_type=True))

    async def pump(self, heartbeat: float = 0.3) -> None:
        """Read the node's frames and send heartbeats until the link closes."""
        closed = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)

        async def beat():
            try:
                while True:
                    await self.send("hb", None)
                    await trio.sleep(heartbeat)
            except closed:
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(beat)
                try:
                    while True:
                        sealed = await self.ws.get_message()
                        try:
                            kind, payload = msgpack.unpackb(self.link.open(sealed), raw=False)
                        except GuardianError:
                            self.open_errors += 1
                            continue
                        self.received.append((kind, payload))
                except closed:
                    nursery.cancel_scope.cancel()
        finally:
            self.closed.set()


class Cluster:
    def __init__(self) -> None:
        # Short: the control socket path must stay under the Unix socket limit.
        self.base = Path(tempfile.mkdtemp(prefix="gnt-", dir="/tmp"))
        self.nodes: list[NodeProc] = []

    def init_node(self, name: str, **network) -> NodeProc:
        port = free_port()
        directory = self.base / name
        result = guardian("init", directory, "--name", name, "--listen", f"127.0.0.1:{port}",
                          "--passphrase-env", PASS_ENV)
        assert result.returncode == 0, result.stderr
        node = NodeProc(name, directory, port)
        node.set_network(**{**FAST_NETWORK, **network})
        self.nodes.append(node)
        return node

    def write_roster(self, members: list, directories: list[Path] | None = None) -> str:
        """members in sequence order (1..n): NodeProc or HarnessPeer. Copies roster.toml into each node dir."""
        blocks = []
        for sequence, member in enumerate(members, 1):
            member.sequence = sequence
            if isinstance(member, NodeProc):
                result = guardian("roster", "entry", "--config", member.config, "--sequence", sequence)
                assert result.returncode == 0, result.stderr
                assert f"Fingerprint: {member.fingerprint}" in result.stdout
                blocks.append(roster_block(result.stdout))
            else:
                blocks.append(member.roster_entry(sequence))
        text = "\n".join(blocks)
        targets = directories if directories is not None else [m.dir for m in members if isinstance(m, NodeProc)]
        for directory in targets:
            (directory / "roster.toml").write_text(text)
        return text

    async def start(self, *nodes: NodeProc) -> None:
        for node in nodes:
            node.start()
        for node in nodes:
            await node.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        if not os.environ.get("GN_KEEP_CLUSTERS"):
            shutil.rmtree(self.base, ignore_errors=True)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.output()[-2500:]}" for n in self.nodes)


async def eventually(check, timeout: float = 20, what: str = "condition", interval: float = 0.1):
    """Run `check` (async, asserting) until it passes or the deadline is reached; return its result."""
    deadline = trio.current_time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, GuardianError, OSError, ValueError, KeyError) as e:
            if trio.current_time() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}: {e}") from e
        await trio.sleep(interval)


async def all_connected(nodes: list[NodeProc], timeout: float = 30) -> None:
    async def check():
        for node in nodes:
            states = {p["name"]: p["state"] for p in (await node.status())["peers"]}
            wanted = {n.name for n in nodes if n is not node}
            assert all(states.get(name) == "connected" for name in wanted), (node.name, states)
    await eventually(check, timeout, "every node connected to every other")
