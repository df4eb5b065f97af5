"""n guardian nodes on loopback, made and run as guardians would (node.testing.processes), each link through a relay.

Every link between two nodes goes through its own relay (simulate/relay.py), so faults on the
network are injected between the nodes, never inside them: node i's roster gives, as the address
of node j, the port of the relay of the link (i, j), which forwards to node j's real port. The
rosters agree on every guardian's number, name and key, as the ceremony requires; only the
addresses differ. Process faults are signals: SIGKILL, SIGTERM, SIGSTOP / SIGCONT.

Each node's directory (identity, database, node.log, output.txt) stays in the run directory for
inspection.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import trio

from node.testing.processes import PASS_ENV, Cluster, NodeProc, cli, unknown_public_key

# Re-dial within a second, heartbeats every 2 s (a link silent 6 s is dropped: two scenarios' nodes verifying
# records at once on two cores can starve a node for a few seconds), one verifier process per node.
TUNING = {"heartbeat_seconds": 2.0, "redial_initial_seconds": 0.1, "redial_max_seconds": 1.0, "verify_workers": 1}


async def guardian(*args):
    """A `guardian` command, as a guardian would type it (in a worker thread)."""
    return await cli(*args, timeout=900)


class SimNode(NodeProc):
    """One guardian's node: `guardian run`, or the misbehaving guardian's program when `adversary` is set."""

    request_timeout = 30.0

    def __init__(self, name: str, directory: Path, port: int) -> None:
        super().__init__(name, directory, port)
        self.adversary: tuple[str, int | None] | None = None     # (behaviour, victim)

    def command(self) -> list[str]:
        if self.adversary is None:
            return super().command()
        behaviour, victim = self.adversary
        return [sys.executable, "-m", "node.testing.adversary_node", "--config", str(self.config),
                "--passphrase-env", PASS_ENV, "--behaviour", behaviour,
                *(["--victim", str(victim)] if victim is not None else [])]

    def start(self) -> None:
        if not self.alive:
            super().start()


class SimCluster:
    def __init__(self, base: Path, n: int) -> None:
        self.base, self.n = base.resolve(), n        # the `guardian` commands run elsewhere
        self.cluster = Cluster(self.base, SimNode)
        self.entries: list[str] = []

    @property
    def nodes(self) -> list[SimNode]:
        return self.cluster.nodes

    async def create(self) -> None:
        """`guardian init` and `guardian roster entry` for every node (two at a time)."""
        def make() -> None:
            nodes = self.cluster.init_nodes([f"g{i}" for i in range(1, self.n + 1)], **TUNING)
            for node in nodes:
                node.serve_metrics()          # scraped at the end of the run, for the report
            self.entries = self.cluster.roster_entries(nodes)
        await trio.to_thread.run_sync(make)

    def write_rosters(self, addresses: dict[int, dict[int, str]], wrong_roster: int | None = None) -> None:
        """Node i's roster: every guardian's entry, with node i's way to reach each (its relay)."""
        for node in self.nodes:
            blocks = []
            for j, block in enumerate(self.entries, 1):
                address = addresses.get(node.sequence, {}).get(j)
                if address is not None:
                    block = re.sub(r'(?m)^address = ".*"$', f'address = "{address}"', block)
                if wrong_roster == node.sequence and j == wrong_roster % self.n + 1:
                    # this guardian's roster has another key for guardian j: a mistake, or a substitution
                    block = re.sub(r'(?m)^public_key = ".*"$', f'public_key = "{unknown_public_key()}"', block)
                    block = re.sub(r'(?m)^fingerprint = ".*"\n?', "", block)
                blocks.append(block)
            (node.dir / "roster.toml").write_text("\n".join(blocks))

    def node(self, sequence: int) -> SimNode:
        return self.nodes[sequence - 1]

    def stop_all(self) -> None:
        self.cluster.stop()
