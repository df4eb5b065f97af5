"""/metrics of real nodes through a key ceremony: scraped over HTTP before, during and after.

Guardians g1 and g2 are `guardian run` processes with `[metrics] listen` on a free port (port 0: the
node says which in `guardian status`, under serving); h3 runs in this process and holds back its echo,
so the ceremony sits in a known phase while g1 is scraped, then goes on to complete.
"""

from __future__ import annotations

import pytest
import trio

from node.app import Guardians
from node.cli.node import load_election_file
from node.testing import adversary
from node.testing.inprocess import InProcessNode
from node.testing.processes import PROJECT, Cluster, all_connected, eventually

pytestmark = pytest.mark.slow

MANIFEST = PROJECT / "node" / "data" / "demo-manifest.json"
CEREMONY_WAIT = 90


def envelopes_in(samples: dict, type_: str) -> float:
    return samples.get(("guardian_envelopes_total", (("direction", "in"), ("type", type_))), 0)


async def ceremony_status(member, session: str) -> dict:
    entries = [e for e in await member.control({"cmd": "ceremony-status"}, timeout=60) if e["session"] == session]
    assert entries, f"{member.name} has no ceremony {session[:16]}"
    return entries[0]


async def test_metrics_move_through_a_ceremony(tmp_path):
    with Cluster() as cluster:
        harness = InProcessNode.fresh(cluster.base / "h3", "h3")
        nodes = cluster.init_nodes(["g1", "g2"])
        for node in nodes:
            node.serve_metrics()
        cluster.write_roster(nodes + [harness])
        await cluster.start(*nodes)
        g1 = nodes[0]

        sessions: set[str] = set()
        opened = trio.Event()
        held = Guardians(ceremony=adversary.only_in(sessions, adversary.hold_back("echo", opened)))
        async with harness.running(held) as h:
            await all_connected(nodes + [harness], 60)
            before = await g1.metrics()
            assert before[("guardian_peers_connected", ())] == 2
            assert before[("guardian_ceremony_phase", (("phase", "echo"),))] == 0
            assert before[("guardian_ceremonies", (("status", "complete"),))] == 0

            election = tmp_path / "election.toml"
            election.write_text(f'election = "Metrics county"\nmanifest = "{MANIFEST}"\nquorum = 2\n'
                                f"phase_timeout_seconds = 60\n")
            session = (await g1.control({"cmd": "ceremony-propose", "election": load_election_file(election)},
                                        timeout=60))["session"]
            sessions.add(session)
            for member in nodes + [harness]:
                await eventually(lambda: ceremony_status(member, session), 30, f"{member.name} has the proposal")
                await member.control({"cmd": "ceremony-accept", "session": session}, timeout=60)

            async def held_in_echo():
                s = await g1.metrics()
                assert s[("guardian_ceremony_phase", (("phase", "echo"),))] == 1, s
                return s
            during = await eventually(held_in_echo, 60, "g1 waiting in the echo phase", interval=0.2)
            assert during[("guardian_ceremonies", (("status", "running"),))] == 1
            assert during[("guardian_ceremony_phase", (("phase", "keys"),))] == 0
            assert during[("guardian_ceremony_phase_seconds", (("phase", "echo"),))] >= 0
            assert envelopes_in(during, "keys") == 2             # g2's and h3's, one each however relayed

            opened.set()
            h.ceremonies.step(bytes.fromhex(session))

            async def complete():
                for member in nodes + [harness]:
                    assert (await ceremony_status(member, session))["status"] == "complete", member.name
            await eventually(complete, CEREMONY_WAIT, "the ceremony complete everywhere", interval=0.2)
            after = await g1.metrics()

    assert after[("guardian_ceremonies", (("status", "complete"),))] == 1
    assert after[("guardian_ceremonies", (("status", "running"),))] == 0
    assert after[("guardian_ceremony_phase", (("phase", "echo"),))] == 0
    assert after[("guardian_peers_connected", ())] == 2
    for type_ in ("ceremony-accept", "echo", "shares", "result"):
        assert envelopes_in(after, type_) > envelopes_in(before, type_), type_
    frames = ("guardian_link_frames_total", (("direction", "in"), ("kind", "env")))
    assert after[frames] > before.get(frames, 0)
    out = ("guardian_envelopes_total", (("direction", "out"), ("type", "result")))
    assert after[out] == 1
