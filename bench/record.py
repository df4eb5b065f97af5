"""The record benchmark: encrypt, submit and verify N full ballots of the 8-contest, 68-option manifest.

`python bench/run.py record --ballots N --json` prints one JSON object on its last line.
Every ballot votes every contest up to its limit (the most proofs a ballot of this
manifest carries); one ballot is challenged, the others are cast; 5 guardians,
quorum 3, guardians 2 and 4 missing at decryption. Figures are wall-clock time on
every core of this machine.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.crypto.ballot import PlaintextBallot  # noqa: E402
from node.crypto.election import ElectionContext  # noqa: E402
from node.crypto.manifest import Manifest, parse_manifest  # noqa: E402
from node.compute import worker_count  # noqa: E402
from node.record import codec  # noqa: E402
from node.record.ballot_box import BallotBox, Submission  # noqa: E402
from node.record.encrypt import encrypt_records  # noqa: E402
from node.record.local import create_local_election, decrypt_into_record  # noqa: E402
from node.verifier import passed, verify_record  # noqa: E402

from bench.manifest import bench_manifest  # noqa: E402


def full_ballots(manifest: Manifest, count: int, rng: random.Random) -> list[PlaintextBallot]:
    """Every contest of the first style voted up to its limit."""
    style = manifest.ballot_styles[0]
    out = []
    for i in range(1, count + 1):
        choices = {}
        for index in style.contests:
            contest = manifest.contest(index)
            picks = rng.sample(contest.options, min(contest.selection_limit, len(contest.options)))
            choices[contest.label] = {o.label: 1 for o in picks}
        out.append(PlaintextBallot(f"bench-{i:05d}", style.label, choices))
    return out


def bench_record(ballots: int, manifest: Path | None = None) -> dict:
    if ballots < 2:
        raise SystemExit("bench record: need at least 2 ballots (one is challenged)")
    manifest_path = bench_manifest(manifest)
    manifest = parse_manifest(manifest_path.read_bytes())
    workers = worker_count()
    with tempfile.TemporaryDirectory(prefix="bench-record-") as tmp:
        base = Path(tmp)
        root = base / "record"
        t = time.perf_counter()
        ceremony = create_local_election(root, base / "secrets", manifest, 5, 3, manifest.label)
        ceremony_s = time.perf_counter() - t

        ctx = ceremony.context
        if ballots / workers >= 64:        # large runs: 12-bit fixed-base tables pay for themselves
            ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
        plaintexts = full_ballots(manifest, ballots, random.Random(1))
        t = time.perf_counter()
        encrypted = []
        for _, rec in encrypt_records(ctx, plaintexts, "bench-device", workers=workers):
            if isinstance(rec, str):
                raise RuntimeError(rec)
            encrypted.append(codec.canonical_bytes(codec.ballot_to_json(ctx.group, rec)))
        encrypt_s = time.perf_counter() - t

        submissions = [Submission(f"bench-{i + 1:05d}", data, codec.CHALLENGED if i == 0 else codec.CAST)
                       for i, data in enumerate(encrypted)]
        t = time.perf_counter()
        with BallotBox.open(root) as box:
            outcomes = box.submit(submissions, workers)
            refused = [o for o in outcomes if not o.accepted]
            if refused:
                raise RuntimeError(f"{refused[0].ballot_id}: {refused[0].reason}")
            submit_s = time.perf_counter() - t
            t = time.perf_counter()
            box.tally()
            tally_s = time.perf_counter() - t
            t = time.perf_counter()
            present = (1, 3, 5)
            keys = ceremony.guardian_keys
            decrypt_into_record(box, {i: keys[i].vote for i in present}, {i: keys[i].data for i in present}, False)
            decrypt_s = time.perf_counter() - t

        t = time.perf_counter()
        results = verify_record(root, workers)
        verify_s = time.perf_counter() - t
        ok = passed(results)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    steps = {r.step: round(r.seconds, 2) for r in results}
    return {
        "benchmark": "record",
        "parameters": "standard 4096-bit",
        "manifest": manifest_path.name,
        "contests": len(manifest.contests),
        "options": sum(len(c.options) for c in manifest.contests),
        "ballots": ballots,
        "cast": ballots - 1,
        "challenged": 1,
        "guardians": "5, quorum 3, guardians 2 and 4 missing",
        "cores_used": workers,
        "ceremony_s": round(ceremony_s, 2),
        "encrypt_s": round(encrypt_s, 2),
        "encrypt_ballots_per_s": round(ballots / encrypt_s, 2),
        "submit_s": round(submit_s, 2),
        "submit_ballots_per_s": round(ballots / submit_s, 2),
        "tally_s": round(tally_s, 2),
        "decrypt_local_s": round(decrypt_s, 2),
        "verify_s": round(verify_s, 2),
        "verify_ballots_per_s": round(ballots / verify_s, 2),
        "verify_passed": ok,
        "verify_step_seconds": steps,
        "record_bytes": size,
    }
