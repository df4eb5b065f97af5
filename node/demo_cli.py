"""`guardian demo`: argument parsing for node.demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_args import guardian_list, positive_int
from .crypto.errors import GuardianError


def register(sub) -> dict:
    demo = sub.add_parser(
        "demo", help="run a whole election locally on the standard parameters",
        description="Key ceremony (n guardians, quorum k), encrypted and signed ballots, challenged "
                    "ballots, tally, decryption with guardians missing, and verification of every proof.")
    demo.add_argument("--guardians", "-n", type=positive_int, default=5, help="number of guardians (default 5)")
    demo.add_argument("--quorum", "-k", type=positive_int, default=3, help="guardians needed to decrypt (default 3)")
    demo.add_argument("--ballots", type=positive_int, default=20, help="ballots to encrypt (default 20)")
    demo.add_argument("--challenged", type=positive_int, default=2, help="ballots to challenge (default 2)")
    demo.add_argument("--missing", type=guardian_list, default=None,
                      help="guardians absent at decryption, e.g. 2,5 (default: n-k chosen at random)")
    demo.add_argument("--compensated", action="store_true",
                      help="present guardians reconstruct each missing guardian's share (seed 002 form)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the made-up voters' choices")
    demo.add_argument("--manifest", type=Path, default=None,
                      help="an ElectionGuard 2.1 manifest (JSON); default: the embedded 8-contest demo")
    demo.add_argument("--record", type=Path, default=None, metavar="DIR",
                      help="also write the complete election record to DIR (a new directory), for `guardian verify`")
    return {"demo": run}


def run(args: argparse.Namespace) -> int:
    from .crypto.manifest import parse_manifest
    from .demo import DemoOptions, run_demo

    manifest = None
    if args.manifest is not None:
        try:
            manifest = parse_manifest(args.manifest.read_bytes())
        except OSError as e:
            raise GuardianError(f"cannot read manifest {args.manifest}: {e.strerror}") from None
    if args.quorum > args.guardians:
        raise GuardianError(f"quorum {args.quorum} is larger than the number of guardians {args.guardians}")
    if args.missing is not None:
        bad = [j for j in args.missing if not 1 <= j <= args.guardians]
        if bad:
            raise GuardianError(f"--missing names guardians outside 1..{args.guardians}: {bad}")
    if args.record is not None and args.record.exists() and any(args.record.iterdir()):
        raise GuardianError(f"--record {args.record}: exists and is not empty; a record is never overwritten")
    return run_demo(DemoOptions(n=args.guardians, k=args.quorum, ballots=args.ballots, challenged=args.challenged,
                                missing=args.missing, compensated=args.compensated, seed=args.seed,
                                manifest=manifest, record=args.record))
