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

from simulate.report import details, table
from simulate.runner import run_scenario
from simulate.scenario import load_scenario, random_scenario

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
    parser.add_argument("--jobs", type=int, default=1, metavar="J",
                        help="run J scenarios at a time (they wait on timeouts a lot; default 1)")
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


async def _run_all(scenarios, base: Path, jobs: int, quiet: bool) -> list:
    """Every scenario, `jobs` at a time; the results in the scenarios' order."""
    limiter = trio.CapacityLimiter(jobs)
    results: dict[int, object] = {}

    async def one(i: int, scenario) -> None:
        async with limiter:
            tag = f"[{scenario.name}] " if jobs > 1 else ""
            if not quiet:
                title = scenario.description.splitlines()[0] if scenario.description else ""
                print(f"\n== {scenario.name}: {title}", flush=True)
            say = (lambda text: None) if quiet else (lambda text: print(f"   {tag}{text}", flush=True))
            r = await run_scenario(scenario, base, say)
            results[i] = r
            if not quiet:
                print(f"   {tag}-> {'as expected' if r.ok else 'MISMATCH: ' + '; '.join(r.mismatches)} "
                      f"({r.seconds:.1f} s)", flush=True)

    async with trio.open_nursery() as nursery:
        for i, scenario in enumerate(scenarios):
            nursery.start_soon(one, i, scenario)
    return [results[i] for i in range(len(scenarios))]


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
    if args.jobs < 1:
        print(f"{prog}: error: --jobs must be at least 1", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = trio.run(_run_all, scenarios, base, args.jobs, args.quiet)
    print()
    print(table(results))
    for r in results:
        if not r.ok:
            print(details(r))
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)} of {len(results)} scenarios as expected in {time.monotonic() - started:.0f} s"
          + (f"; reproduce the random ones with --random {args.random} --seed {seed}" if args.random else ""))
    return 1 if bad else 0
