"""n guardian nodes on loopback, made and run as guardians would: `guardian init`, roster entries, `guardian run`.

Every link between two nodes goes through its own relay (simulate/relay.py), so faults on the
network are injected between the nodes, never inside them: node i's roster gives, as the address
of node j, the port of the relay of the link (i, j), which forwards to node j's real port. The
rosters agree on every guardian's number, name and key, as the ceremony requires; only the
addresses differ. Process faults are signals: SIGKILL, SIGTERM, SIGSTOP / SIGCONT.

Each node's directory (identity, database, node.log, output.txt) stays in the run directory for
inspection.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import nacl.signing
import trio

from node.daemon.node import control_request
from node.identity import encode_public_key

PASS_ENV = "GUARDIAN_SIMULATOR_PASSPHRASE"
PASSPHRASE = "simulated guardian passphrase"
NETWORK = {"heartbeat_seconds": "2.0", "redial_initial_seconds": "0.1", "redial_max_seconds": "1.0"}


def node_env() -> dict:
    env = dict(os.environ)
    env[PASS_ENV] = PASSPHRASE
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def guardian_command(*args) -> subprocess.CompletedProcess:
    """A `guardian` command, as a guardian would type it (run in a worker thread by the async callers)."""
    return subprocess.run([sys.executable, "-m", "node", *map(str, args)], capture_output=True, text=True,
                          env=node_env(), timeout=900)


async def guardian(*args) -> subprocess.CompletedProcess:
    return await trio.to_thread.run_sync(guardian_command, *args)


def free_port() -> int:
    """A port for a node to listen on, below the kernel's ephemeral range (32768 and up on Linux), so that the
    relays' and the connections' own ports (taken from that range) can never have taken it by the time the
    node starts."""
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for a node between 20000 and 32000")


class SimNode:
    """One guardian's node: its directory and its process (`guardian run`, or the adversary program)."""

    def __init__(self, sequence: int, directory: Path, port: int) -> None:
        self.sequence, self.dir, self.port = sequence, directory, port
        self.name = f"g{sequence}"
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.adversary: tuple[str, int | None] | None = None     # (behaviour, victim)

    @property
    def config(self) -> Path:
        return self.dir / "node.toml"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        if self.adversary is None:
            command = [sys.executable, "-m", "node", "run", "--config", str(self.config), "--passphrase-env", PASS_ENV]
        else:
            behaviour, victim = self.adversary
            command = [sys.executable, "-m", "simulate.adversary", "--config", str(self.config),
                       "--passphrase-env", PASS_ENV, "--behaviour", behaviour]
            if victim is not None:
                command += ["--victim", str(victim)]
        with open(self.dir / "output.txt", "ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=node_env(), cwd=self.dir)
        self.paused = False

    def signal(self, signum: int) -> None:
        if self.alive:
            self.proc.send_signal(signum)

    def kill(self) -> None:
        if self.alive:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.wait()

    def stop(self) -> None:
        """SIGTERM: the node shuts down cleanly (as an operator's Ctrl-C would)."""
        if self.alive:
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        self.wait()

    def wait(self) -> None:
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

    async def request(self, cmd: str, timeout: float = 30.0, **fields):
        return await control_request(self.socket, {"cmd": cmd, **fields}, timeout=timeout)


class SimCluster:
    def __init__(self, base: Path, n: int) -> None:
        self.base, self.n = base, n
        self.nodes: list[SimNode] = []
        self.entries: dict[int, str] = {}

    async def create(self) -> None:
        """`guardian init` and `guardian roster entry` for every node, two at a time."""
        self.nodes = [SimNode(i, self.base / f"g{i}", free_port()) for i in range(1, self.n + 1)]
        limiter = trio.CapacityLimiter(2)

        async def make(node: SimNode) -> None:
            async with limiter:
                result = await guardian("init", node.dir, "--name", node.name, "--listen", f"127.0.0.1:{node.port}",
                                        "--passphrase-env", PASS_ENV)
                if result.returncode != 0:
                    raise RuntimeError(f"guardian init {node.name}: {result.stderr.strip()}")
                _tune(node.config)
                entry = await guardian("roster", "entry", "--config", node.config, "--sequence", node.sequence)
                if entry.returncode != 0:
                    raise RuntimeError(f"guardian roster entry {node.name}: {entry.stderr.strip()}")
                self.entries[node.sequence] = _roster_block(entry.stdout)

        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(make, node)

    def write_rosters(self, addresses: dict[int, dict[int, str]], wrong_roster: int | None = None) -> None:
        """Node i's roster: every guardian's entry, with node i's way to reach each (its relay)."""
        for node in self.nodes:
            blocks = []
            for j in range(1, self.n + 1):
                block = self.entries[j]
                address = addresses.get(node.sequence, {}).get(j)
                if address is not None:
                    block = re.sub(r'(?m)^address = ".*"$', f'address = "{address}"', block)
                if wrong_roster == node.sequence and j == wrong_roster % self.n + 1:
                    # this guardian's roster has another key for guardian j: a mistake, or a substitution
                    other = encode_public_key(bytes(nacl.signing.SigningKey.generate().verify_key))
                    block = re.sub(r'(?m)^public_key = ".*"$', f'public_key = "{other}"', block)
                    block = re.sub(r'(?m)^fingerprint = ".*"\n?', "", block)
                blocks.append(block)
            (node.dir / "roster.toml").write_text("\n".join(blocks))

    def node(self, sequence: int) -> SimNode:
        return self.nodes[sequence - 1]

    def stop_all(self) -> None:
        for node in self.nodes:
            node.kill()


def _tune(config: Path) -> None:
    """Re-dial within a second, heartbeats every 2 s (a link silent 6 s is dropped: two scenarios' nodes verifying
    records at once on two cores can starve a node for a few seconds), one verifier process per node."""
    text = config.read_text()
    for key, value in NETWORK.items():
        text = re.sub(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
    text = re.sub(r"(?m)^verify_workers = .*$", "verify_workers = 1", text)
    config.write_text(text)


def _roster_block(output: str) -> str:
    lines = [line for line in output.splitlines()
             if line.strip() and not line.startswith("#") and not line.startswith("Fingerprint")]
    return "\n".join(lines) + "\n"
