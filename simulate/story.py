"""`guardian demo`: a short simulator run told as a story, from the key ceremony to the verified tally.

Real `guardian run` processes on loopback, one per guardian, every link through a relay; the
election goes through the commands a guardian would type; some guardians are away when the tally
is decrypted. The run directory (nodes, logs, record) is kept, and printed.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

import trio

from simulate.runner import run_scenario
from simulate.scenario import Expect, Scenario


def demo_scenario(n: int, k: int, ballots: int, challenged: int, missing: tuple[int, ...] | None,
                  compensated: bool, seed: int | None) -> Scenario:
    rng = random.Random(seed)
    if missing is None:
        missing = tuple(sorted(rng.sample(range(1, n + 1), n - k)))
    return Scenario("demo", f"A local election with {n} guardians, any {k} of whom decrypt", n, k, ballots,
                    challenged, phase_timeout=30.0 + 3 * n, timeout=20.0, custody=True, compensated=compensated,
                    missing_at_decryption=tuple(sorted(missing)), expect=Expect(missing=tuple(sorted(missing))),
                    seed=seed if seed is not None else rng.randrange(2**31))


def run_demo(scenario: Scenario, directory: Path | None = None) -> int:
    base = directory or Path(tempfile.mkdtemp(prefix="guardian-demo-"))
    print(f"A local election on real guardian nodes: {scenario.guardians} guardians, any {scenario.quorum} "
          f"decrypt; {scenario.ballots} ballots, {scenario.challenged} challenged; "
          f"{', '.join(f'g{i}' for i in scenario.missing_at_decryption) or 'nobody'} away at the decryption.")
    print(f"Everything (each node's data and log, the election record) goes to {base}\n")
    result = trio.run(run_scenario, scenario, base, lambda text: print(f"  {text}", flush=True))
    o = result.outcome
    if o.tally:
        print("\nThe verified result:")
        for contest, options in o.tally.items():
            print(f"  {contest}")
            for option, value in options.items():
                print(f"    {option:<40}{value:>6}")
    print()
    if result.ok:
        print(f"Done in {result.seconds:.0f} s: the record at {result.directory / 'record'} verifies; anyone can check "
              f"it again with: guardian verify {result.directory / 'record'}")
        return 0
    print("The demo did not go as expected: " + "; ".join(result.mismatches))
    for line in result.events[-20:]:
        print(f"  {line}")
    print(f"Node logs: {result.directory}/g*/output.txt")
    return 1
