"""`guardian simulate ...`: the simulator (python -m simulate), from the guardian command."""

from __future__ import annotations

import argparse


def register(sub) -> dict:
    p = sub.add_parser("simulate", help="rehearse elections on n real nodes with faults (python -m simulate)",
                       description="Runs scenarios (or --random N --seed S elections) on real guardian nodes on this "
                                   "machine and reports expected against actual outcomes. "
                                   "`guardian simulate --help` after the word shows every option.",
                       add_help=False)
    p.add_argument("arguments", nargs=argparse.REMAINDER, help="the simulator's arguments (try --list, --all)")
    return {"simulate": run}


def run(args: argparse.Namespace) -> int:
    """Reached only without arguments: node.cli.main hands `guardian simulate ARGS` to simulate() directly."""
    return simulate(args.arguments)


def simulate(argv: list[str]) -> int:
    from simulate.main import main

    return main(argv, prog="guardian simulate")
