"""A decryption whose round messages exceed a frame, across real guardian nodes, on the standard parameters.

Three `guardian run` processes (n=3, k=2) with `[network] max_frame_bytes` at 16 KiB, one key ceremony with
every guardian's key custody on a small manifest (two contests of two options: every record file fits in a
frame), and a record of two cast ballots and sixteen challenged ones: twenty statements. With g3 down, g1 and g2
decrypt in the compensated form, each sending its own part and g3's for every statement: about 22 KB of shares
and 41 KB of commitments each, sent as chunks. The result must verify (`guardian verify`).

Cost: the ceremony and custody of three nodes, then one session in which two nodes verify the record; about a
minute on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from decryption_harness import cli, completes_on, custody_steps, decrypted, no_traceback, set_decryption, verify
from node.testing.processes import all_connected, guardian
from test_ceremony_nodes import accept, ask, completes, make_cluster, propose, sigkill, start_cluster

pytestmark = pytest.mark.slow

FRAME_BYTES = 16 * 2**10
NAMES = ["g1", "g2", "g3"]
MANIFEST = {"label": "Chunked decryption test",
            "contests": [{"label": "Mayor", "selection_limit": 1, "options": [{"label": "Alice"}, {"label": "Bob"}]},
                         {"label": "Measure", "selection_limit": 1, "options": [{"label": "Yes"}, {"label": "No"}]}],
            "ballot_styles": [{"label": "all", "contests": [1, 2]}]}
CAST = [("cast-1", {"Mayor": ["Alice"], "Measure": ["No"]}), ("cast-2", {"Mayor": ["Alice"], "Measure": ["Yes"]})]
CHALLENGED = [(f"c-{i:02}-challenged", {"Mayor": ["Bob"]} if i % 2 else {"Measure": ["Yes"]}) for i in range(16)]
GATHER_TIMEOUT = 6


@pytest.fixture(scope="module")
def chunked():
    """Three nodes on small frames, their certified ceremony (k=2) and a tallied record, never decrypted."""
    cluster, nodes = make_cluster(NAMES)
    with cluster:
        for node in nodes:
            set_decryption(node, timeout_seconds=10, verify_workers=1)
            node.set_config(network__max_frame_bytes=FRAME_BYTES)
        start_cluster(cluster, nodes)
        export = trio.run(_ceremony, nodes, cluster.base)
        record = _record(cluster.base, export)
        yield cluster, nodes, record
        print(cluster.diagnostics())


async def _ceremony(nodes, base: Path) -> Path:
    manifest = base / "small-manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    election = base / "election-chunks.toml"
    election.write_text(f'election = "Chunked decryption test"\nmanifest = "{manifest}"\nquorum = 2\n'
                        f"phase_timeout_seconds = 30\n")
    session = await propose(nodes[0], election)
    await accept(nodes, session)
    await completes(nodes, session)
    await custody_steps(nodes, session)
    entry = next(e for e in await ask(nodes[0], "ceremony-status") if e["session"] == session)
    return Path(entry["outcome"]["export"])


def _record(base: Path, export: Path) -> Path:
    rec = base / "record"
    r = guardian("record", "init", "--ceremony", export.name, "--out", rec, "--config",
                 export.parent.parent / "node.toml")
    assert r.returncode == 0, r.stderr
    plain, encrypted = base / "plain.jsonl", base / "encrypted"
    plain.write_text("".join(json.dumps({"id": i, "ballot_style": "all", "contests": picks}) + "\n"
                             for i, picks in CAST + CHALLENGED))
    r = guardian("encrypt", "--election", rec, "--ballots", plain, "--device", "booth-1", "--out", encrypted,
                 timeout=300)
    assert r.returncode == 0, r.stderr
    r = guardian("ballots", "submit", "--record", rec, "--cast", *(encrypted / f"{i}.json" for i, _ in CAST),
                 "--challenge", *(encrypted / f"{i}.json" for i, _ in CHALLENGED), timeout=300)
    assert r.returncode == 0, r.stderr
    r = guardian("tally", "--record", rec, timeout=300)
    assert r.returncode == 0, r.stderr
    for path in rec.rglob("*.json"):         # the record copy travels file by file, each in one frame
        assert path.stat().st_size < FRAME_BYTES - 1024, path
    return rec


async def test_compensated_decryption_in_chunks_with_a_guardian_missing_verifies(chunked):
    cluster, (g1, g2, g3), record = chunked
    await all_connected([g1, g2, g3])
    sigkill(g3)
    r = await cli("decrypt", "--record", record, "--config", g1.config, "--timeout", GATHER_TIMEOUT,
                  "--compensated")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "decrypted (compensated form) by g1, g2; missing: g3; 1 round(s)" in r.stdout, r.stdout
    session = next(e["session"] for e in await ask(g1, "decrypt-status") if e["status"] == "complete")
    entries = await completes_on([g1, g2], session)
    for e in entries.values():
        assert (e["outcome"]["present"], e["outcome"]["missing"], e["outcome"]["form"]) == \
            (["g1", "g2"], ["g3"], "compensated"), e["outcome"]
        assert len(e["outcome"]["challenged"]) == len(CHALLENGED)

    # Every step went out in chunks, none over the frame, and no peer's quota refused one.
    for node, peer in ((g1, "g2"), (g2, "g1")):
        steps = {}
        for env in await ask(node, "inbox"):
            if env["session"] == session and env["from"] == peer and env["type"].startswith("decrypt-"):
                steps.setdefault(env["type"], []).append(env["body"])
        shares, commitments = steps["decrypt-shares"], steps["decrypt-commitments"]
        assert len(shares) >= 2 and len(commitments) >= 3, {t: len(b) for t, b in steps.items()}
        assert sorted(b["chunk"] for b in commitments) == list(range(1, commitments[0]["chunks"] + 1))
        status = await ask(node, "status")
        refusals = {p["name"]: p["refusals"] for p in status["peers"]}
        assert "quota" not in refusals[peer] and "oversized" not in refusals[peer], refusals

    tally = decrypted(record)
    assert (tally["decryption_form"], tally["guardians_present"], tally["guardians_missing"]) == \
        ("compensated", [1, 2], [3])
    values = {(c["contest_ix"], o["option_ix"]): o["tally"] for c in tally["contests"] for o in c["options"]}
    assert values == {(1, 1): 2, (1, 2): 0, (2, 1): 1, (2, 2): 1}
    assert len(list((record / "challenged").glob("*.json"))) == len(CHALLENGED)
    steps = await trio.to_thread.run_sync(verify, record)
    assert steps["tally decryption"]["result"] == "pass" and steps["challenged ballot decryption"]["result"] == "pass"
    assert steps["challenged ballot decryption"]["items"] == len(CHALLENGED)
    for node in (g1, g2):
        no_traceback(node)
