"""Guardian nodes as real processes on loopback, made and run as guardians would: the tests', the
simulator's and the benchmarks' clusters.

A Cluster makes nodes with `guardian init`, writes roster files from their `guardian roster
entry` output (and the entries of members played in-process, node/testing/inprocess.py, or by a
HarnessPeer, node/testing/peer.py), starts `guardian run` processes and always kills them at the
end. Everything waits by polling the nodes' control sockets against deadlines (`eventually`).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from node.crypto.errors import GuardianError
from node.daemon.control import control_request
from node.identity import Identity, encode_public_key, fingerprint, load_public_key

PASS_ENV = "GUARDIAN_TEST_PASSPHRASE"
PASSPHRASE = "loopback test passphrase"
PROJECT = Path(__file__).resolve().parents[2]

# Fast but not twitchy: a peer is dropped after 3 silent heartbeats (3 s); re-dials within a second.
FAST_NETWORK = {"heartbeat_seconds": 1.0, "redial_initial_seconds": 0.1, "redial_max_seconds": 1.0}
MAKE_AT_ONCE = 2        # `guardian init` and `roster entry` side by side: each is mostly one key derivation


def free_port() -> int:
    """A port to listen on, below the kernel's ephemeral range (32768 and up on Linux): the ports that
    connections and relays get from the kernel can never have taken it by the time a node starts."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port between 20000 and 32000")


def node_env(**extra: str) -> dict:
    env = dict(os.environ, **extra)
    env[PASS_ENV] = PASSPHRASE
    env["PYTHONPATH"] = str(PROJECT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def guardian(*args, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A `guardian` command, as a guardian would type it."""
    return subprocess.run([sys.executable, "-m", "node", *map(str, args)], capture_output=True, text=True,
                          env=env or node_env(), timeout=timeout, cwd=PROJECT)


async def cli(*args, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """`guardian(...)` from async code: in a worker thread, so the caller's other tasks go on."""
    return await trio.to_thread.run_sync(lambda: guardian(*args, env=env, timeout=timeout))


def unknown_public_key() -> str:
    """A public key (as a roster writes it) that no node has."""
    return encode_public_key(Identity.generate().public_key)


def set_config(path: Path, **values) -> None:
    """Set keys of a node.toml: `key` must occur once in the file; `section__key` (tls__cert, say) names
    the key of one [section]."""
    parts = re.split(r"(?m)^(?=\[)", path.read_text())       # the text before any table, then one per table
    for name, value in values.items():
        section, _, key = name.rpartition("__")
        count = 0
        for i, part in enumerate(parts):
            if not section or part.startswith(f"[{section}]"):
                parts[i], n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", part)
                count += n
        assert count == 1, f"{name}: {count} matches in {path}"
    path.write_text("".join(parts))


def roster_block(output: str) -> str:
    """The [[guardian]] block of `guardian roster entry`, without comments and the fingerprint line."""
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith("#") and not line.startswith("Fingerprint")]
    return "\n".join(lines) + "\n"


class NodeNotRunning(ConnectionError):
    """A control request to a node whose process has ended (its output's tail says why)."""


class TimedOut(AssertionError):
    """`eventually`: the condition did not hold before the deadline."""


class NodeProc:
    """One node's directory and its process (`guardian run`)."""

    request_timeout = 5.0

    def __init__(self, name: str, directory: Path, port: int) -> None:
        self.name, self.dir, self.port = name, directory, port
        self.proc: subprocess.Popen | None = None
        self.sequence: int | None = None
        self.paused = False

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

    def set_config(self, **values) -> None:
        set_config(self.config, **values)

    def serve_metrics(self) -> None:
        """Turn on /metrics at a free loopback port (the node says which in status, under serving)."""
        self.set_config(metrics__listen='"127.0.0.1:0"')

    # --- the process ------------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [sys.executable, "-m", "node", "run", "--config", str(self.config), "--passphrase-env", PASS_ENV]

    def start(self, *extra: str, env: dict | None = None) -> None:
        """`env`: variables added to the node's environment (a crash point, say)."""
        assert not self.alive, f"{self.name} is already running"
        with open(self.dir / "output.txt", "ab") as out:
            self.proc = subprocess.Popen([*self.command(), *extra], stdout=out, stderr=subprocess.STDOUT,
                                         env=node_env(**(env or {})), cwd=self.dir)
        self.paused = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            self.proc.send_signal(signum)

    def kill(self) -> int | None:
        """SIGKILL, and wait for the end; the exit status (None if it never ran)."""
        self._end(signal.SIGKILL)
        return self.proc.returncode if self.proc is not None else None

    def stop(self) -> None:
        """SIGTERM: the node shuts down cleanly (as an operator's Ctrl-C would); SIGKILL if it takes too long."""
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        if self.alive:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)     # a stopped process would not handle SIGTERM
            self.proc.send_signal(signum)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.paused = False

    def pause(self) -> None:
        if self.alive and not self.paused:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.alive and self.paused:
            self.proc.send_signal(signal.SIGCONT)
            self.paused = False

    def output(self) -> str:
        path = self.dir / "output.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self) -> str:
        path = self.dir / "node.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- the control socket ----------------------------------------------------------------------------

    async def control(self, request: dict, timeout: float | None = None) -> object:
        """One request on the control socket, as `guardian status` makes it."""
        if not self.alive:
            raise NodeNotRunning(f"node {self.name} is not running (exit {self.proc.returncode if self.proc else None})"
                                 f":\n{self.output()[-3000:]}")
        return await control_request(self.socket, request, timeout=timeout or self.request_timeout)

    async def request(self, cmd: str, *, timeout: float | None = None, **fields) -> object:
        return await self.control({"cmd": cmd, **fields}, timeout)

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
        return await eventually(self.status, timeout, f"{self.name} answers status")

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        """GET /metrics (see serve_metrics), parsed by metric_samples."""
        port = (await self.status())["serving"]["metrics"]

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                return response.read().decode()
        return metric_samples(await trio.to_thread.run_sync(get))


def metric_samples(text: str) -> dict[tuple[str, tuple], float]:
    """The Prometheus text format as (sample name, sorted (label, value) pairs) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class Cluster:
    """Nodes made with `guardian init` under one base directory, their rosters, their processes."""

    def __init__(self, base: Path | None = None, node_class: type[NodeProc] = NodeProc) -> None:
        # Short: the control socket path must stay under the Unix socket limit.
        self.base = base or Path(tempfile.mkdtemp(prefix="gnt-", dir="/tmp"))
        self.own_base = base is None
        self.node_class = node_class
        self.nodes: list[NodeProc] = []

    def init_node(self, name: str, **config) -> NodeProc:
        """`guardian init` of a node listening on a free port; node.toml tuned (FAST_NETWORK, then `config`)."""
        node = self._make(name, config)
        self.nodes.append(node)
        return node

    def init_nodes(self, names: list[str], **config) -> list[NodeProc]:
        """init_node for each name, two at a time; the nodes in the order of `names`."""
        with ThreadPoolExecutor(MAKE_AT_ONCE) as pool:
            nodes = list(pool.map(lambda name: self._make(name, config), names))
        self.nodes.extend(nodes)
        return nodes

    def _make(self, name: str, config: dict) -> NodeProc:
        port = free_port()
        directory = self.base / name
        result = guardian("init", directory, "--name", name, "--listen", f"127.0.0.1:{port}",
                          "--passphrase-env", PASS_ENV)
        assert result.returncode == 0, result.stderr
        node = self.node_class(name, directory, port)
        node.set_config(**{**FAST_NETWORK, **config})
        return node

    def roster_entries(self, members: list) -> list[str]:
        """The roster block of each member, numbered 1..n in this order (which sets their `sequence`):
        `guardian roster entry` for a node made here, `member.roster_entry(sequence)` for any other."""
        def entry(sequence: int, member) -> str:
            member.sequence = sequence
            if not isinstance(member, NodeProc):
                return member.roster_entry(sequence)
            result = guardian("roster", "entry", "--config", member.config, "--sequence", sequence)
            assert result.returncode == 0, result.stderr
            assert f"Fingerprint: {member.fingerprint}" in result.stdout
            return roster_block(result.stdout)
        with ThreadPoolExecutor(MAKE_AT_ONCE) as pool:
            return list(pool.map(entry, range(1, len(members) + 1), members))

    def write_roster(self, members: list, directories: list[Path] | None = None) -> str:
        """One roster.toml of `members` (in sequence order), into each directory (default: every member's)."""
        text = "\n".join(self.roster_entries(members))
        if directories is None:
            directories = [m.dir for m in members if hasattr(m, "dir")]     # a HarnessPeer has none
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
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
        if self.own_base and not os.environ.get("GN_KEEP_CLUSTERS"):
            shutil.rmtree(self.base, ignore_errors=True)

    def diagnostics(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.output()[-2500:]}" for n in self.nodes)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        """Every node killed; when the body failed, the tail of each node's output first (pytest shows it)."""
        if kind is not None:
            print(self.diagnostics())
        self.stop()


async def eventually(check, timeout: float = 20, what: str = "condition", interval: float = 0.1):
    """Run `check` (async, asserting) until it passes or the deadline is reached; return its result."""
    deadline = trio.current_time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, GuardianError, OSError, ValueError, KeyError) as e:
            if trio.current_time() > deadline:
                raise TimedOut(f"timed out after {timeout} s waiting for {what}: {e}") from e
        await trio.sleep(interval)


async def all_connected(nodes: list, timeout: float = 30, among: list | None = None) -> None:
    """Every node of `nodes` has a live link to every other member of `among` (default: of `nodes`)."""
    among = nodes if among is None else among

    async def check():
        for node in nodes:
            states = {p["name"]: p["state"] for p in (await node.request("status"))["peers"]}
            wanted = {m.name for m in among if m is not node}
            assert all(states.get(name) == "connected" for name in wanted), (node.name, states)
    await eventually(check, timeout, "every node connected to every other")


async def start_dead(nodes: list[NodeProc]) -> None:
    """Start every node of `nodes` that is not running, and wait until each answers."""
    dead = [node for node in nodes if not node.alive]
    for node in dead:
        node.start()
    for node in dead:
        await node.wait_ready()
