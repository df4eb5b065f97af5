"""A kill at any commit point loses nothing: accepted means applied.

One 3-node election on real processes. Guardian bob is killed (SIGKILL, by the node itself at a named
commit point: node/daemon/crash_points.py) at each point for each node-session message type, and at a
ceremony message, restarted each time; the outcome must be the one a run without kills has: the rejected
ceremony rejected, the ceremony complete with one H_E, byte-identical exports, every custody step of
every guardian on every node, and the certificate signed by all.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from node.testing.processes import all_connected, eventually
from test_ceremony_nodes import ask, completes, entry_of, make_cluster, propose, wait_status, write_election
from test_custody_nodes import STEPS, confirm, export, table, verify

pytestmark = pytest.mark.slow


async def killed_at(node, point: str, timeout: float = 60) -> None:
    """The node dies by its own SIGKILL at the crash point it was started with."""
    async def dead():
        assert node.proc.poll() is not None, f"{node.name} still running, waiting for {point}"
    await eventually(dead, timeout, f"{node.name} killed at {point}", interval=0.05)
    assert node.proc.returncode == -signal.SIGKILL, (node.name, node.proc.returncode, node.output()[-2000:])


async def restart(node, peers, crash_at: str | None = None) -> None:
    node.start(env={"GUARDIAN_CRASH_AT": crash_at} if crash_at else None)
    await node.wait_ready(60)
    await all_connected([node, *peers], 60)


async def test_kills_at_every_commit_point_change_no_outcome(tmp_path):
    cluster, nodes = make_cluster(["alice", "bob", "carol"])
    with cluster:
        alice, bob, carol = nodes
        await cluster.start(alice, carol)
        bob.start(env={"GUARDIAN_CRASH_AT": "applied:ceremony-propose"})
        await all_connected(nodes, 60)

        # A proposal, applied then killed; a rejection, applied then killed: the rejection stands.
        rejected = await propose(alice, write_election(tmp_path, 2, name="Rejected election"))
        await killed_at(bob, "applied:ceremony-propose")
        await restart(bob, [alice, carol], "applied:ceremony-reject")
        await wait_status(nodes, rejected, "proposed")
        await ask(carol, "ceremony-reject", session=rejected, why="wrong manifest")
        await killed_at(bob, "applied:ceremony-reject")
        await restart(bob, [alice, carol], "inbox:ceremony-propose")
        await wait_status(nodes, rejected, "rejected")

        # The election's ceremony: its proposal killed at the inbox, then each accept at each point.
        session = await propose(alice, write_election(tmp_path, 2))
        await killed_at(bob, "inbox:ceremony-propose")
        await restart(bob, [alice, carol], "applied:ceremony-accept")
        await wait_status(nodes, session, "proposed")
        await ask(alice, "ceremony-accept", session=session)
        await killed_at(bob, "applied:ceremony-accept")
        await restart(bob, [alice, carol], "inbox:ceremony-accept")
        await ask(carol, "ceremony-accept", session=session)
        await killed_at(bob, "inbox:ceremony-accept")
        await restart(bob, [alice, carol], "inbox:shares")

        async def votes_known():
            votes = (await entry_of(bob, session))["votes"]
            assert {g for g, v in votes.items() if v["vote"] == "accept"} == {"alice", "carol"}, votes
        await eventually(votes_known, 20, "bob holds both accepts it was killed on")
        await ask(bob, "ceremony-accept", session=session)
        # A ceremony message: its session replays it from the inbox at start.
        await killed_at(bob, "inbox:shares", 120)
        await restart(bob, [alice, carol], "applied:custody-step")
        await completes(nodes, session)

        # Custody: a step killed after it was applied, one at the inbox; a certificate signature at the
        # inbox, then again while it is replayed at start (after it was applied).
        backups = {n.name: tmp_path / f"{n.name}.backup" for n in nodes}
        await trio.to_thread.run_sync(export, alice, backups["alice"], session)
        await killed_at(bob, "applied:custody-step")
        await restart(bob, [alice, carol], "inbox:custody-step")
        await trio.to_thread.run_sync(confirm, alice, session)
        await killed_at(bob, "inbox:custody-step")
        await restart(bob, [alice, carol], "inbox:certificate-signature")
        await trio.to_thread.run_sync(verify, alice, backups["alice"], session)
        for node in (carol, bob):
            await trio.to_thread.run_sync(export, node, backups[node.name], session)
            await trio.to_thread.run_sync(confirm, node, session)
            await trio.to_thread.run_sync(verify, node, backups[node.name], session)
        await killed_at(bob, "inbox:certificate-signature", 60)
        bob.start(env={"GUARDIAN_CRASH_AT": "applied:certificate-signature"})
        await killed_at(bob, "applied:certificate-signature (replayed at start)")
        await restart(bob, [alice, carol])

        # The outcome of a run without kills.
        await completes(nodes, session)
        await wait_status(nodes, rejected, "rejected")
        want = table({n.name: STEPS for n in nodes})

        async def custody_done():
            for node in nodes:
                entry = await entry_of(node, session)
                assert entry["custody"] == want, (node.name, entry["custody"])
                assert entry["custody_complete"] is True and entry["certificate"] is True, (node.name, entry)
        await eventually(custody_done, 60, "every custody step and the certificate on every node")

        def files(directory: Path) -> dict[str, bytes]:
            return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
                    if p.is_file()}
        exports = [files(Path((await entry_of(n, session))["outcome"]["export"])) for n in nodes]
        assert exports[0] and all(e == exports[0] for e in exports[1:])
        # bob was killed at each point and restarted from its own database each time: no traceback
        assert "Traceback" not in bob.output() and "Traceback" not in bob.log()
