"""What every node shows of the same facts is the same: after a real 3-node key ceremony each node's
export is byte for byte the others', and a peer's state in `guardian status` follows its live link,
whoever dialled it.
"""

from __future__ import annotations

from pathlib import Path

import trio

from node.cli.node import load_election_file
from node.testing.processes import PROJECT, all_connected, eventually

DEMO_MANIFEST = PROJECT / "node" / "data" / "demo-manifest.json"


async def ask(node, cmd: str, **fields):
    return await node.control({"cmd": cmd, **fields}, timeout=60)


async def entries(node, session: str) -> dict:
    (entry,) = [e for e in await ask(node, "ceremony-status") if e["session"] == session]
    return entry


async def test_every_node_exports_the_same_bytes_after_a_ceremony(cluster, tmp_path):
    nodes = cluster.init_nodes(["alice", "bob", "carol"])
    cluster.write_roster(nodes)
    await cluster.start(*nodes)
    await all_connected(nodes)
    election = tmp_path / "election.toml"
    election.write_text(f'election = "Export test"\nmanifest = "{DEMO_MANIFEST}"\nquorum = 2\n'
                        f"phase_timeout_seconds = 30\n")
    session = (await ask(nodes[0], "ceremony-propose", election=load_election_file(election)))["session"]

    async def proposed():
        for node in nodes:
            assert (await entries(node, session))["status"] == "proposed"
    await eventually(proposed, 30, "the proposal reaches every node")
    for node in nodes:
        await ask(node, "ceremony-accept", session=session)

    async def complete():
        found = {}
        for node in nodes:
            entry = await entries(node, session)
            assert entry["status"] == "complete", (node.name, entry["status"])
            found[node.name] = Path(entry["outcome"]["export"])
        return found
    exports = await eventually(complete, 120, "the ceremony completes everywhere", interval=0.3)

    def files(directory: Path) -> dict[str, bytes]:
        return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
    first, *others = [files(exports[n.name]) for n in nodes]
    assert "ceremony_results.json" in first and "index.json" in first
    for node, other in zip(nodes[1:], others):
        assert sorted(other) == sorted(first), node.name
        differ = [name for name in first if first[name] != other[name]]
        assert differ == [], (node.name, differ)


async def test_a_peer_is_shown_connected_while_its_link_is_up_whoever_dialled(cluster):
    alice, bob, carol = cluster.init_nodes(["alice", "bob", "carol"])
    cluster.write_roster([alice, bob, carol])
    await cluster.start(alice, bob, carol)
    await all_connected([alice, bob, carol])
    # bob restarts: alice (who dials it) is prompted and re-dials; carol's link to bob is bob's to dial
    bob.stop()
    bob.start()
    await bob.wait_ready()
    await all_connected([alice, bob, carol], 30)
    # From here every link is up: sampled for a few seconds, no node shows a peer otherwise, and each
    # peer shown connected is heard from.
    for _ in range(30):
        for node in (alice, bob, carol):
            for peer in (await node.status())["peers"]:
                assert peer["state"] == "connected", (node.name, peer)
                assert peer["last_seen_seconds_ago"] is not None and peer["last_seen_seconds_ago"] < 3.5, \
                    (node.name, peer)
        await trio.sleep(0.1)
