"""A restarted node is linked to its peers again within moments, not after its peers' re-dial backoff.

Of each pair the lower-numbered guardian dials; a node that starts calls each peer that dials it once, and
that peer dials it at once. The nodes here re-dial after 10-30 s (redial_initial_seconds =
redial_max_seconds = 20, with jitter), so only that call can link them within the few seconds allowed.
Everything is measured by the nodes' own status: peer states and connection counts.
"""

from __future__ import annotations

import trio

from node.testing.processes import NodeProc, eventually

SLOW_REDIAL = {"redial_initial_seconds": 20.0, "redial_max_seconds": 20.0}
LINKED_WITHIN = 6.0          # seconds after a node answers its control socket; a re-dial takes 10 s or more


async def states(node: NodeProc) -> dict[str, tuple[str, int]]:
    return {p["name"]: (p["state"], p["connections"]) for p in (await node.status())["peers"]}


async def linked(nodes: list[NodeProc], timeout: float) -> dict[str, dict[str, tuple[str, int]]]:
    """Every node connected to every other; each node's view of its peers (state, connections)."""
    async def check():
        views = {node.name: await states(node) for node in nodes}
        for name, view in views.items():
            assert all(state == "connected" for state, _ in view.values()), (name, views)
        return views
    return await eventually(check, timeout, "every node connected to every other", interval=0.05)


async def test_a_restarted_node_is_linked_to_its_peers_at_once(cluster):
    nodes = cluster.init_nodes(["g1", "g2", "g3"], **SLOW_REDIAL)
    cluster.write_roster(nodes)
    g1, g2, g3 = nodes
    await cluster.start(*nodes)
    before = await linked(nodes, LINKED_WITHIN)        # whoever started first, the later ones call it
    assert all(count == 1 for view in before.values() for _, count in view.values()), before

    # g3 is only ever dialled; g2 dials g3 and is dialled by g1; g1 dials both
    for victim in (g3, g2, g1):
        others = [n for n in nodes if n is not victim]
        victim.kill()

        async def gone():
            for node in others:
                assert (await states(node))[victim.name][0] != "connected"
        await eventually(gone, 10, f"the peers see {victim.name} gone")
        await trio.sleep(1.0)                           # the peers are now in their 10-30 s re-dial wait
        victim.start()
        await victim.wait_ready()
        views = await linked(nodes, LINKED_WITHIN)
        assert (await victim.status())["uptime_seconds"] < 2 * LINKED_WITHIN
        for node in others:
            assert views[node.name][victim.name] == ("connected", before[node.name][victim.name][1] + 1), views
        assert all(count == 1 for _, count in views[victim.name].values()), views

        # one link per pair: nothing replaces it a moment later
        await trio.sleep(2.0)
        assert {node.name: await states(node) for node in nodes} == views
        before = views
