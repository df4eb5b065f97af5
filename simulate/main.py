"""The simulator's command line: run scenarios (or random elections) on real nodes and report.

Exit status 0 when every outcome is the expected one, 1 when any differs, 2 on bad input.
The run directory (every node's data directory and log, the record) is kept for inspection.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import trio

from node.crypto.errors import GuardianError

from .report import details, table
from .runner import run_scenario
from .scenario import load_scenario, random_scenario

SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def build_parser(prog: str = "python -m simulate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Rehearse elections on n real guardian nodes on this machine: the key ceremony, "
                               "custody, ballots, decryption with guardians missing and verification, with "
                               "faults injected between the nodes (a relay on every link) and by signals.")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"scenario files or names from {SCENARIOS} (e.g. all-present)")
    parser.add_argument("--all", action="store_true", help="every scenario in the scenario directory")
    parser.add_argument("--random", type=int, default=0, metavar="N", help="N random elections (n in 2..12)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random elections (printed; reproduces)")
    parser.add_argument("--dir", type=Path, default=None, help="run directory (default: a new one under /tmp)")
    parser.add_argument("--quiet", action="store_true", help="only the report")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return parser


def resolve(name: str) -> Path:
    path = Path(name)
    if path.exists():
        return path
    candidate = SCENARIOS / f"{name.removesuffix('.toml')}.toml"
    if candidate.exists():
        return candidate
    raise GuardianError(f"no scenario {name!r}: give a file or one of "
                        + ", ".join(p.stem for p in sorted(SCENARIOS.glob("*.toml"))))


def main(argv: list[str] | None = None, prog: str = "python -m simulate") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        if args.list:
            for path in sorted(SCENARIOS.glob("*.toml")):
                s = load_scenario(path)
                print(f"{path.stem:<28} n={s.guardians} k={s.quorum}  {s.description.splitlines()[0] if s.description else ''}")
            return 0
        paths = sorted(SCENARIOS.glob("*.toml")) if args.all else [resolve(name) for name in args.scenarios]
        scenarios = [load_scenario(p) for p in paths]
        seed = args.seed if args.seed is not None else random.randrange(2**31)
        if args.random:
            rng = random.Random(seed)
            scenarios += [random_scenario(rng, i, seed) for i in range(args.random)]
        if not scenarios:
            print(f"{prog}: nothing to run: name scenarios, or --all, or --random N", file=sys.stderr)
            return 2
    except GuardianError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    base = args.dir or Path(tempfile.mkdtemp(prefix="guardian-sim-"))
    base.mkdir(parents=True, exist_ok=True)
    if args.random:
        print(f"random elections: --random {args.random} --seed {seed}")
    print(f"run directory: {base} (node logs and records are kept)")
    results = []
    started = time.monotonic()
    for scenario in scenarios:
        if not args.quiet:
            print(f"\n== {scenario.name}: {scenario.description.splitlines()[0] if scenario.description else ''}")
        say = (lambda text: None) if args.quiet else (lambda text: print(f"   {text}", flush=True))
        results.append(trio.run(run_scenario, scenario, base, say))
        if not args.quiet:
            r = results[-1]
            print(f"   -> {'as expected' if r.ok else 'MISMATCH: ' + '; '.join(r.mismatches)} ({r.seconds:.1f} s)")
    print()
    print(table(results))
    for r in results:
        if not r.ok:
            print(details(r))
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)} of {len(results)} scenarios as expected in {time.monotonic() - started:.0f} s"
          + (f"; reproduce the random ones with --random {args.random} --seed {seed}" if args.random else ""))
    return 1 if bad else 0
