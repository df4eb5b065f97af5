"""Verifications 5-8 and the ballot signatures, over every ballot of the record (cast and challenged).

The checks of each ballot (node.verifier.ballot_checks) run once for all these
steps, on every core; each step adds up the findings of its own check, with its
share of the wall time of that pass. Steps 5 and 8 add what only the whole
record shows: duplicate identifiers (5.A), file names, the devices' chains (8.E-8.G).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

from node.compute import map_tasks
from node.crypto.election import ElectionContext
from node.record import codec, layout
import node.verifier.ballot_checks as ballot_checks
from node.verifier.ballot_checks import Found, check_ballot
from node.verifier.chains import check_devices
from node.verifier.registry import Accumulator, Run, keys_known, step

BULK_BALLOTS = 64
UNMET = "cannot check ballots without the election's keys (steps 1-4)"


def check_ballots(ctx: ElectionContext, records: Sequence[codec.BallotRecord], workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[dict[str, Found]]:
    """check_ballot for every ballot, spread over `workers` processes (default: every core)."""
    return list(map_tasks(ctx, check_ballot, records, workers, progress))


@dataclass
class Checked:
    """What the checks of every ballot found, and the wall time the pass over all of them took."""

    results: list[dict[str, Found]]
    wall: float

    @cached_property
    def cpu(self) -> float:
        return sum(seconds for r in self.results for _, _, seconds in r.values())

    def report(self, check: Callable, acc: Accumulator) -> None:
        """Add the findings of `check` on every ballot, in ballot order, and its share of the wall time."""
        share = 0.0
        for r in self.results:
            items, failures, seconds = r[check.__name__]
            acc.items += items
            share += seconds
            for f in failures:
                acc.fail(f)
        acc.seconds += self.wall * share / self.cpu if self.cpu > 0 else share


def _check_every_ballot(run: Run) -> Checked:
    ctx = run.election.context
    records = [rec for _, (_, rec) in sorted(run.data.ballots.items())]
    if len(records) >= BULK_BALLOTS:         # 12-bit tables for g and K: built once, a third cheaper per use
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
    start = time.perf_counter()
    results = check_ballots(ctx, records, run.workers, run.progress)
    return Checked(results, time.perf_counter() - start)


@step("5", "selection identifiers", needs=keys_known, unmet=UNMET)
def selection_identifiers(run: Run, acc: Accumulator) -> None:
    """(5.A) no identifier twice, (5.B) per ballot; each ballot in the file its id names."""
    seen: dict[int, str] = {}
    folded: dict[str, str] = {}
    for bid, (rel, rec) in sorted(run.data.ballots.items()):
        expected_rel = layout.ballot_file(bid) if layout.BALLOT_ID.fullmatch(bid) else None
        if rel != expected_rel:
            acc.fail(f"{rel}: holds ballot {bid!r}" + (f", whose file is {expected_rel}" if expected_rel
                                                        else ", whose id is not allowed as a file name"))
        if bid.lower() in folded:
            acc.fail(f"ballot {bid!r}: its id differs only in case from ballot {folded[bid.lower()]!r}")
        folded[bid.lower()] = bid
        sid = int(rec.ballot.selection_identifier)
        if sid in seen:                                                        # (5.A)
            acc.fail(f"ballot {bid!r}: duplicate selection encryption identifier, the same as ballot "
                     f"{seen[sid]!r} (5.A)")
        else:
            seen[sid] = bid
    run.once(_check_every_ballot).report(ballot_checks.identifier, acc)


@step("6", "selection well-formedness", needs=keys_known, unmet=UNMET)
def selection_well_formedness(run: Run, acc: Accumulator) -> None:
    for err in run.data.errors_in(layout.BALLOTS):
        acc.fail(err)
    run.once(_check_every_ballot).report(ballot_checks.well_formedness, acc)


@step("7", "vote limits", needs=keys_known, unmet=UNMET)
def vote_limits(run: Run, acc: Accumulator) -> None:
    run.once(_check_every_ballot).report(ballot_checks.vote_limits, acc)


@step("8", "confirmation codes", needs=keys_known, unmet=UNMET)
def confirmation_codes(run: Run, acc: Accumulator) -> None:
    run.once(_check_every_ballot).report(ballot_checks.confirmation_codes, acc)
    check_devices(run.data, run.election.context, acc)


@step("", "ballot signatures", needs=keys_known, unmet=UNMET)
def ballot_signatures(run: Run, acc: Accumulator) -> None:
    run.once(_check_every_ballot).report(ballot_checks.signature, acc)
