"""`guardian demo`: argument parsing for node.demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.args import guardian_list, positive_int
from node.crypto.errors import GuardianError


def register(sub) -> dict:
    demo = sub.add_parser(
        "demo", help="run a whole election locally on real guardian nodes, on the standard parameters",
        description="Starts one real guardian node per guardian on this machine and runs the election through "
                    "them, telling what happens: key ceremony (n guardians, quorum k), key backups, encrypted "
                    "and signed ballots, challenged ballots, tally, decryption with guardians away, and "
                    "verification of every proof. --in-process runs the same election in one process instead "
                    "(faster; with --manifest and --record).")
    demo.add_argument("--in-process", action="store_true",
                      help="everything in this process, with every guardian's secrets in one place (a rehearsal)")
    demo.add_argument("--dir", type=Path, default=None,
                      help="the run directory of the node demo (default: a new one under /tmp)")
    demo.add_argument("--guardians", "-n", type=positive_int, default=5, help="number of guardians (default 5)")
    demo.add_argument("--quorum", "-k", type=positive_int, default=3, help="guardians needed to decrypt (default 3)")
    demo.add_argument("--ballots", type=positive_int, default=None,
                      help="ballots to encrypt (default 20 in process, 6 on nodes)")
    demo.add_argument("--challenged", type=positive_int, default=None,
                      help="ballots to challenge (default 2 in process, 1 on nodes)")
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
    from node.crypto.manifest import parse_manifest
    from node.cli.demo_in_process import DemoOptions, run_demo

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
    in_process = args.in_process or args.manifest is not None or args.record is not None
    ballots = args.ballots or (20 if in_process else 6)
    challenged = args.challenged or (2 if in_process else 1)
    if not in_process:
        return _on_nodes(args, ballots, challenged)
    if args.record is not None and args.record.exists() and any(args.record.iterdir()):
        raise GuardianError(f"--record {args.record}: exists and is not empty; a record is never overwritten")
    args.ballots, args.challenged = ballots, challenged
    return run_demo(DemoOptions(n=args.guardians, k=args.quorum, ballots=args.ballots, challenged=args.challenged,
                                missing=args.missing, compensated=args.compensated, seed=args.seed,
                                manifest=manifest, record=args.record))


def _on_nodes(args: argparse.Namespace, ballots: int, challenged: int) -> int:
    from simulate.story import demo_scenario, run_demo as run_on_nodes

    n, k = args.guardians, args.quorum
    if n < 2 or n > 12:
        raise GuardianError(f"the node demo runs 2 to 12 guardians, not {n} (--in-process runs more)")
    if k < 1 or (args.missing is not None and n - len(set(args.missing)) < k):
        raise GuardianError(f"only {n - len(set(args.missing or ()))} guardians present, the quorum is {k}")
    if challenged >= ballots:
        raise GuardianError("need at least one challenged and one cast ballot")
    if args.dir is not None and args.dir.exists() and any(args.dir.iterdir()):
        raise GuardianError(f"--dir {args.dir}: exists and is not empty")
    scenario = demo_scenario(n, k, ballots, challenged, tuple(args.missing) if args.missing is not None else None,
                             args.compensated, args.seed)
    return run_on_nodes(scenario, args.dir)
