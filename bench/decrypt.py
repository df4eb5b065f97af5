"""The decryption benchmark: n `guardian run` processes, some missing, decrypt a tally and challenged ballots.

`python bench/run.py decrypt --nodes 5 --quorum 3 --missing 2 --ballots 20 --json` prints one JSON
object on its last line.

Set-up (not timed): `guardian init` n nodes, one roster, `guardian run` each; the key ceremony on
--manifest, else the 8-contest, 68-option manifest of ../shared/bench, else the embedded copy of it; a record
made from node 1's ceremony export with `guardian encrypt` (random full ballots), `guardian ballots
submit` (the last --challenged of them challenged) and `guardian tally`, as a rehearsal (no key custody
steps: `--rehearsal`, and every node allows rehearsals). Then the `--missing`
highest-numbered nodes are stopped, and node 1 is asked to decrypt (`decrypt-request` on its
control socket, what `guardian decrypt` sends). Every process is killed at the end.

Measured (seconds):
  total_seconds        request -> node 1 reports the session complete (record written)
  ready_seconds        request -> node 1 has fetched and verified the record (its own policy check)
  decryption_seconds   the last round: opened -> every share, proof and result combined and checked
                       on node 1 (all statements: 68 options plus each challenged ballot)
  verify_seconds       `guardian verify` of the finished record
All n processes share this machine's cores.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.cli.node import load_election_file  # noqa: E402
from node.protocol.election_config import default_phase_timeout  # noqa: E402
from node.testing.processes import all_connected, eventually, guardian  # noqa: E402

from bench.ceremony import _ask, make_cluster, write_election  # noqa: E402
from bench.manifest import bench_manifest  # noqa: E402


def _plaintexts(manifest: dict, count: int, rng: random.Random) -> str:
    """Random ballots of the first style, every contest voted up to its limit."""
    style = manifest["ballot_styles"][0]
    lines = []
    for b in range(count):
        contests = {}
        for index in style["contests"]:
            contest = manifest["contests"][index - 1]
            limit = contest.get("selection_limit", 1)
            picks = rng.sample(contest["options"], min(limit, len(contest["options"])))
            contests[contest["label"]] = [o["label"] for o in picks]
        lines.append(json.dumps({"id": f"b-{b + 1}", "ballot_style": style["label"], "contests": contests}))
    return "\n".join(lines) + "\n"


def _run_guardian(*args) -> str:
    result = guardian(*args, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"guardian {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout


async def _ceremony(nodes, base: Path, k: int, manifest: Path) -> str:
    election = load_election_file(write_election(base, k, default_phase_timeout(len(nodes)), manifest))
    session = (await _ask(nodes[0], "ceremony-propose", election=election))["session"]

    async def proposed():
        for node in nodes:
            assert any(e["session"] == session for e in await _ask(node, "ceremony-status")), node.name
    await eventually(proposed, 30, "every node has the proposal")
    for node in nodes:
        await _ask(node, "ceremony-accept", session=session)

    async def complete():
        entry = next(e for e in await _ask(nodes[0], "ceremony-status") if e["session"] == session)
        assert entry["status"] == "complete", entry["status"]
        return entry["outcome"]["export"]
    return await eventually(complete, 600, "the ceremony completes", interval=0.2)


async def _run(n: int, k: int, missing: int, ballots: int, challenged: int, timeout: float,
               manifest_path: Path) -> dict:
    cluster = await trio.to_thread.run_sync(make_cluster, n)
    try:
        nodes = cluster.nodes
        for node in nodes:          # a benchmark of the decryption: a rehearsal, without the key custody steps
            node.set_config(allow_rehearsal="true")
        await cluster.start(*nodes)
        await all_connected(nodes, 60 + 3 * n)
        export = await _ceremony(nodes, cluster.base, k, manifest_path)

        record, enc = cluster.base / "record", cluster.base / "encrypted"
        shutil.copytree(export, record)
        plain = cluster.base / "plain.jsonl"
        plain.write_text(_plaintexts(json.loads(manifest_path.read_text()), ballots, random.Random(1)))
        setup = time.perf_counter()
        await trio.to_thread.run_sync(_run_guardian, "encrypt", "--election", record, "--ballots", plain,
                                      "--device", "bench-1", "--out", enc, "--rehearsal")
        files = [enc / f"b-{i + 1}.json" for i in range(ballots)]
        cast, spoiled = files[:ballots - challenged], files[ballots - challenged:]
        await trio.to_thread.run_sync(_run_guardian, "ballots", "submit", "--record", record, "--cast", *cast,
                                      *(["--challenge", *spoiled] if spoiled else []), "--rehearsal")
        await trio.to_thread.run_sync(_run_guardian, "tally", "--record", record, "--rehearsal")
        record_seconds = time.perf_counter() - setup

        for node in nodes[n - missing:]:
            node.signal(signal.SIGTERM)
            node.kill()

        async def down():
            statuses = {p["name"]: p["state"] for p in (await _ask(nodes[0], "status"))["peers"]}
            assert all(statuses[node.name] != "connected" for node in nodes[n - missing:]), statuses
        await eventually(down, 30, "node 1 sees the missing nodes gone")

        start = time.perf_counter()
        session = (await _ask(nodes[0], "decrypt-request", record=str(record), timeout=timeout,
                              rehearsal=True))["session"]
        ready_at = None
        while True:
            entry = next(e for e in await _ask(nodes[0], "decrypt-status") if e["session"] == session)
            if ready_at is None and entry["status"] == "ready":
                ready_at = time.perf_counter() - start
            if entry["status"] in ("complete", "failed", "refused"):
                break
            if entry.get("stalled"):
                raise RuntimeError(f"the decryption stalled: {entry}")
            await trio.sleep(0.05)
        total = time.perf_counter() - start
        if entry["status"] != "complete":
            raise RuntimeError(f"the decryption {entry['status']}: {entry['outcome']}")
        outcome = entry["outcome"]

        verify = time.perf_counter()
        report = json.loads(await trio.to_thread.run_sync(_run_guardian, "verify", record, "--json"))
        verify = time.perf_counter() - verify
        if not report["ok"]:
            raise RuntimeError(f"the decrypted record does not verify: {report}")
    finally:
        cluster.stop()
    seconds = outcome["seconds"]
    return {
        "benchmark": "decrypt", "nodes": n, "quorum": k, "missing": missing, "ballots": ballots,
        "challenged": challenged, "manifest": manifest_path.name,
        "statements": sum(len(c) for c in (outcome["tally"] or {}).values()) + len(outcome["challenged"]),
        "total_seconds": round(total, 2),
        "ready_seconds": round(seconds.get("checked", ready_at or 0), 2),
        "decryption_seconds": round(seconds["last_round"], 2),
        "rounds": outcome["rounds"],
        "present": outcome["present"], "absent": outcome["missing"],
        "verify_seconds": round(verify, 2),
        "record_setup_seconds": round(record_seconds, 1),
        "note": f"{n - missing} guardian run processes on loopback sharing this machine's cores; "
                f"standard 4096-bit group; the verifier ran on the finished record",
    }


def bench_decrypt(nodes: int, quorum: int, missing: int, ballots: int, challenged: int = 1,
                  timeout: float = 30.0, manifest: Path | None = None) -> dict:
    if not 1 <= quorum <= nodes - missing:
        raise ValueError("need 1 <= quorum <= nodes - missing")
    if not 0 <= challenged < ballots:
        raise ValueError("need 0 <= challenged < ballots")
    return trio.run(_run, nodes, quorum, missing, ballots, challenged, timeout, bench_manifest(manifest))
