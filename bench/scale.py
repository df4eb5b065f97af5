"""The scale benchmark: a record of N full ballots, verified streaming, with and without the verification cache.

`python bench/run.py scale --ballots N [--record DIR] [--scheduler ADDRESS] --json` prints one JSON object
on its last line. The record is built (ceremony, encryption, the ballot box in chunks, the streamed tally)
unless DIR already holds one, and kept in DIR when given, so a large one is built once. Each verification
runs in a child process (`guardian verify`'s own code) whose peak RSS is reported; the same verification on
a quarter of the ballot files gives the memory at N/4, and the ratio says whether memory stays flat. From
64 ballots on the verifier builds 12-bit fixed-base tables for g and K (some 90 MB, once), so the ratio
compares like with like from N = 256 on (`tables_alike` says so). With a scheduler, the verification also
runs on that Dask cluster.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.compute import worker_count  # noqa: E402
from node.crypto.election import ElectionContext  # noqa: E402
from node.crypto.manifest import parse_manifest  # noqa: E402
from node.record import codec, layout  # noqa: E402
from node.record.ballot_box import BallotBox, Submission  # noqa: E402
from node.record.encrypt import encrypt_records  # noqa: E402
from node.record.local import create_local_election  # noqa: E402
from node.verifier.ballots import BULK_BALLOTS  # noqa: E402

from bench.manifest import bench_manifest  # noqa: E402
from bench.record import full_ballots  # noqa: E402

CHUNK = 128          # ballots encrypted and submitted at a time: the build's memory stays flat too

# The child: verify_record on a record, then its figures and its own peak RSS (the coordinator's; each worker
# holds one batch).
CHILD = """
import json, resource, sys, time
from node.verifier import passed, verify_record
root, cache, scheduler = sys.argv[1], sys.argv[2] or None, sys.argv[3] or None
start = time.perf_counter()
report = verify_record(root, cache=cache, scheduler=scheduler)
seconds = time.perf_counter() - start
steps = {r.step: r for r in report}
print(json.dumps({"seconds": seconds, "passed": passed(report), "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "note": steps["selection well-formedness"].note,
                  "failed": [r.step for r in report if r.ok is False]}))
"""


def _verify(root: Path, cache: Path | None = None, scheduler: str | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(cache or ""), scheduler or ""],
                          capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the verifier failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(root: Path, ballots: int, manifest_path: Path) -> dict:
    """A record of `ballots` full ballots (the first challenged), tallied; the build's figures."""
    manifest = parse_manifest(manifest_path.read_bytes())
    workers = worker_count()
    t = time.perf_counter()
    ceremony = create_local_election(root, root.parent / f"{root.name}-secrets", manifest, 5, 3, manifest.label)
    figures = {"ceremony_s": time.perf_counter() - t, "encrypt_s": 0.0, "submit_s": 0.0}
    ctx = ceremony.context
    if ballots / workers >= 64:
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
    plaintexts = full_ballots(manifest, ballots, random.Random(1))
    with BallotBox.open(root) as box:
        for first in range(0, ballots, CHUNK):
            part = plaintexts[first:first + CHUNK]
            t = time.perf_counter()
            subs = []
            for _, rec in encrypt_records(ctx, part, "bench-device", workers=workers):
                if isinstance(rec, str):
                    raise RuntimeError(rec)
                state = codec.CHALLENGED if rec.ballot_id == plaintexts[0].ballot_id else codec.CAST
                subs.append(Submission(rec.ballot_id, codec.canonical_bytes(codec.ballot_to_json(ctx.group, rec)),
                                       state))
            figures["encrypt_s"] += time.perf_counter() - t
            t = time.perf_counter()
            refused = [o for o in box.submit(subs, workers) if not o.accepted]
            if refused:
                raise RuntimeError(f"{refused[0].ballot_id}: {refused[0].reason}")
            figures["submit_s"] += time.perf_counter() - t
        t = time.perf_counter()
        box.tally()
        figures["tally_s"] = time.perf_counter() - t
    return figures


def quarter(root: Path, out: Path) -> int:
    """A copy of the record with the first quarter of its ballot files (steps fail on it; the pass is the same)."""
    shutil.copytree(root, out, ignore=shutil.ignore_patterns("ballots"))
    (out / layout.BALLOTS).mkdir()
    rels = layout.Record(root).list_dir(layout.BALLOTS)
    kept = rels[:max(1, len(rels) // 4)]
    for rel in kept:
        shutil.copy(root / rel, out / rel)
    return len(kept)


def bench_scale(ballots: int, record: Path | None = None, manifest: Path | None = None,
                scheduler: str | None = None) -> dict:
    if ballots < 4:
        raise SystemExit("bench scale: need at least 4 ballots (one is challenged; a quarter is measured)")
    manifest_path = bench_manifest(manifest)
    result: dict = {"benchmark": "scale", "parameters": "standard 4096-bit", "manifest": manifest_path.name,
                    "ballots": ballots, "cores_used": worker_count()}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        base = Path(tmp)
        root = record or base / "record"
        if (root / layout.INDEX).exists():
            have = len(layout.Record(root).list_dir(layout.BALLOTS))
            if have != ballots:
                raise SystemExit(f"bench scale: {root} holds {have} ballots, not {ballots}")
            result["built"] = False
        else:
            root.mkdir(parents=True, exist_ok=True)
            result.update({k: round(v, 2) for k, v in build(root, ballots, manifest_path).items()})
            result["encrypt_ballots_per_s"] = round(ballots / result["encrypt_s"], 2)
            result["built"] = True
        result["record_bytes"] = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        result["ballot_file_bytes"] = round(sum(p.stat().st_size for p in (root / layout.BALLOTS).iterdir())
                                            / ballots)

        full = _verify(root)
        result.update({"verify_s": round(full["seconds"], 2), "verify_ballots_per_s": round(ballots / full["seconds"], 2),
                       "verify_passed": full["passed"], "verify_failed_steps": full["failed"],
                       "verify_peak_rss_mb": round(full["rss_kb"] / 1024, 1)})
        part = quarter(root, base / "quarter")
        small = _verify(base / "quarter")
        result.update({"quarter_ballots": part, "verify_quarter_peak_rss_mb": round(small["rss_kb"] / 1024, 1),
                       "rss_ratio_full_to_quarter": round(full["rss_kb"] / small["rss_kb"], 3),
                       "tables_alike": (part >= BULK_BALLOTS) == (ballots >= BULK_BALLOTS)})

        cache = base / "cache.sqlite3"
        first = _verify(root, cache)
        again = _verify(root, cache)
        result.update({"verify_cache_first_s": round(first["seconds"], 2),
                       "verify_cache_again_s": round(again["seconds"], 2),
                       "verify_cache_again_note": again["note"], "verify_cache_again_passed": again["passed"]})
        if scheduler:
            remote = _verify(root, scheduler=scheduler)
            result.update({"verify_cluster_s": round(remote["seconds"], 2), "verify_cluster_passed": remote["passed"]})
    rate = result["verify_ballots_per_s"]
    result["hours_to_verify_1e5_ballots_here"] = round(1e5 / rate / 3600, 1)
    result["hours_to_verify_1e6_ballots_here"] = round(1e6 / rate / 3600, 1)
    return result
