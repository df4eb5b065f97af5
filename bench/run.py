"""Benchmarks. `python bench/run.py crypto --json` prints one JSON object on its last line.

Figures are measured here and reported; tests never assert on time.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

import gmpy2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from node.crypto.ballot import PlaintextBallot, encrypt_ballot, verify_ballot  # noqa: E402
from node.crypto.election import ElectionContext, ElectionParameters  # noqa: E402
from node.crypto.fixed_base import FixedBase  # noqa: E402
from node.crypto.group import check_element, check_elements  # noqa: E402
from node.crypto.local_ceremony import run_local_ceremony  # noqa: E402
from node.crypto.manifest import parse_manifest  # noqa: E402
from node.crypto.params import STANDARD  # noqa: E402
from node.crypto.tally import decrypt_tally, tally_ballots  # noqa: E402

from bench.manifest import bench_manifest  # noqa: E402


def _timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def full_ballot(manifest, rng: random.Random) -> PlaintextBallot:
    """Every contest of the style voted up to its limit: the most proofs a ballot of this manifest can carry."""
    style = manifest.ballot_styles[0]
    choices = {}
    for index in style.contests:
        contest = manifest.contest(index)
        picks = rng.sample(contest.options, min(contest.selection_limit, len(contest.options)))
        choices[contest.label] = {o.label: 1 for o in picks}
    return PlaintextBallot("bench-ballot", style.label, choices)


def bench_crypto(args) -> dict:
    group = STANDARD
    manifest_path = bench_manifest(args.manifest)
    manifest = parse_manifest(manifest_path.read_bytes())
    # --quick: fewer samples of the same measurements (a smoke run; its figures are noisier).
    samples, repeat = (40, 1) if args.quick else (200, 3)
    ballot_count = args.ballots if args.ballots is not None else (1 if args.quick else 6)
    exps = [secrets.randbelow(int(group.q)) for _ in range(samples)]
    base = gmpy2.powmod(group.g, secrets.randbelow(int(group.q)), group.p)

    powmod_s = _timed(lambda: [gmpy2.powmod(base, e, group.p) for e in exps], repeat) / len(exps)
    fb8 = FixedBase(group, base, 8)
    fb12_build = time.perf_counter()
    fb12 = FixedBase(group, base, 12)
    fb12_build = time.perf_counter() - fb12_build
    fixed8_s = _timed(lambda: [fb8.pow(e) for e in exps], repeat) / len(exps)
    fixed12_s = _timed(lambda: [fb12.pow(e) for e in exps], repeat) / len(exps)
    elements = [(fb8.pow(e), f"x{i}") for i, e in enumerate(exps[:136])]   # one ballot's alphas and betas
    single_s = _timed(lambda: [check_element(group, x, w) for x, w in elements], 1) / len(elements)
    batch_s = _timed(lambda: check_elements(group, elements), repeat) / len(elements)

    params = ElectionParameters(group, 5, 3, manifest)
    ceremony_s = time.perf_counter()
    ceremony = run_local_ceremony(params)
    ceremony_s = time.perf_counter() - ceremony_s
    ctx = ElectionContext(params, ceremony.context.joint_key, ceremony.context.joint_data_key, window=12)
    ctx.g_table, ctx.k_table, ctx.k_hat_table   # build the tables outside the timed part
    rng = random.Random(1)
    ballots = [full_ballot(manifest, rng) for _ in range(ballot_count)]
    encrypted = []
    encrypt_s = _timed(lambda: encrypted.append(encrypt_ballot(ctx, ballots[len(encrypted) % len(ballots)], "bench")),
                       ballot_count)
    verify_s = _timed(lambda: verify_ballot(ctx, encrypted[0]), max(1 if args.quick else 2, ballot_count // 2))

    tally = tally_ballots(ctx, encrypted)
    keys = {i: ceremony.guardian_keys[i].vote for i in (1, 3, 5)}
    decrypt_s = _timed(lambda: decrypt_tally(ctx, ceremony.vote_publics(), keys, tally), 1)
    decrypt_comp_s = _timed(lambda: decrypt_tally(ctx, ceremony.vote_publics(), keys, tally, compensated=True), 1)

    return {
        "benchmark": "crypto",
        "parameters": "standard 4096-bit",
        "manifest": manifest_path.name,
        "options": sum(len(c.options) for c in manifest.contests),
        "contests": len(manifest.contests),
        "quick": args.quick,
        "exponents": samples,
        "ballots": ballot_count,
        "powmod_us": round(powmod_s * 1e6, 1),
        "fixed_base_exp_us": round(fixed12_s * 1e6, 1),
        "fixed_base_exp_w8_us": round(fixed8_s * 1e6, 1),
        "fixed_base_w12_build_s": round(fb12_build, 2),
        "membership_check_us": round(single_s * 1e6, 1),
        "membership_check_batched_us": round(batch_s * 1e6, 1),
        "ceremony_5_3_s": round(ceremony_s, 2),
        "encrypt_ms_per_ballot": round(encrypt_s * 1e3, 1),
        "verify_ms_per_ballot": round(verify_s * 1e3, 1),
        "tally_decrypt_5_3_two_missing_s": round(decrypt_s, 2),
        "tally_decrypt_compensated_s": round(decrypt_comp_s, 2),
        "cores_used": 1,
    }


MANIFEST_HELP = "election manifest (default ../shared/bench/manifest-8x68.json if present, else the embedded copy)"


def main() -> int:
    parser = argparse.ArgumentParser(description="guardian-node benchmarks")
    sub = parser.add_subparsers(dest="suite", required=True)
    crypto = sub.add_parser("crypto", help="exponentiation, ballot encryption and verification, tally decryption")
    crypto.add_argument("--ballots", type=int, default=None, help="ballots to encrypt (default 6; 1 with --quick)")
    crypto.add_argument("--quick", action="store_true",
                        help="40 exponents, one repeat, 1 ballot: the same figures from fewer samples")
    crypto.add_argument("--manifest", type=Path, help=MANIFEST_HELP)
    crypto.add_argument("--json", action="store_true", help="only the JSON object")
    links = sub.add_parser("links", help="handshake time, round trip and signed messages per second on loopback")
    links.add_argument("--messages", type=int, default=500, help="signed notes for the throughput (default 500)")
    links.add_argument("--rounds", type=int, default=50,
                       help="handshakes and round trips, each (default 50)")
    links.add_argument("--json", action="store_true", help="only the JSON object")
    flood = sub.add_parser("flood", help="honest round trip between two nodes, idle and while a third guardian floods")
    flood.add_argument("--rounds", type=int, default=50, help="round trips, idle and flooded, each (default 50)")
    flood.add_argument("--json", action="store_true", help="only the JSON object")
    ceremony = sub.add_parser("ceremony", help="the key ceremony across n guardian run processes on loopback")
    ceremony.add_argument("--nodes", type=int, default=5, help="guardians n (default 5)")
    ceremony.add_argument("--quorum", type=int, default=3, help="quorum k (default 3)")
    ceremony.add_argument("--manifest", type=Path, help=MANIFEST_HELP)
    ceremony.add_argument("--json", action="store_true", help="only the JSON object")
    decrypt = sub.add_parser("decrypt", help="threshold decryption across n guardian run processes, some missing")
    decrypt.add_argument("--nodes", type=int, default=5, help="guardians n (default 5)")
    decrypt.add_argument("--quorum", type=int, default=3, help="quorum k (default 3)")
    decrypt.add_argument("--missing", type=int, default=2, help="guardians stopped before the decryption (default 2)")
    decrypt.add_argument("--ballots", type=int, default=10, help="full ballots in the record (default 10)")
    decrypt.add_argument("--challenged", type=int, default=1, help="of them challenged (default 1)")
    decrypt.add_argument("--manifest", type=Path, help=MANIFEST_HELP)
    decrypt.add_argument("--json", action="store_true", help="only the JSON object")
    record = sub.add_parser("record", help="encrypt, submit and verify full ballots; the verifier's wall time")
    record.add_argument("--ballots", type=int, default=20, help="full ballots to run through the record (default 20)")
    record.add_argument("--manifest", type=Path, help=MANIFEST_HELP)
    record.add_argument("--json", action="store_true", help="only the JSON object")
    scale = sub.add_parser("scale", help="a record of N full ballots verified streaming: time, peak memory at N "
                                          "and N/4, the verification cache, a Dask cluster")
    scale.add_argument("--ballots", type=int, default=40, help="full ballots in the record (default 40)")
    scale.add_argument("--record", type=Path, help="build the record here and keep it, or reuse the one here")
    scale.add_argument("--manifest", type=Path, help=MANIFEST_HELP)
    scale.add_argument("--scheduler", help="also verify on this Dask scheduler's workers (tcp://HOST:8786)")
    scale.add_argument("--json", action="store_true", help="only the JSON object")
    args = parser.parse_args()
    if args.suite == "scale":
        from bench.scale import bench_scale
        result = bench_scale(args.ballots, args.record, args.manifest, args.scheduler)
    elif args.suite == "record":
        from bench.record import bench_record
        result = bench_record(args.ballots, args.manifest)
    elif args.suite == "decrypt":
        from bench.decrypt import bench_decrypt
        result = bench_decrypt(args.nodes, args.quorum, args.missing, args.ballots, args.challenged,
                               manifest=args.manifest)
    elif args.suite == "ceremony":
        from bench.ceremony import bench_ceremony
        result = bench_ceremony(args.nodes, args.quorum, manifest=args.manifest)
    elif args.suite == "flood":
        from bench.flood import bench_flood
        result = bench_flood(args.rounds)
    elif args.suite == "links":
        from bench.links import bench_links
        result = bench_links(args.messages, args.rounds)
    else:
        result = bench_crypto(args)
    if not args.json:
        for key, value in result.items():
            print(f"{key:34} {value}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
