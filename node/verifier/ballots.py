"""Verifications 5-8 and the ballot signatures, over every ballot of the record (cast and challenged).

The checks of each ballot (node.verifier.ballot_checks) run once for all these
steps, in one streaming pass over the files on every core or on a Dask cluster
(node.verifier.ballot_pass); each step adds up the findings of its own check,
with its share of the wall time of that pass. Steps 5 and 8 add what only the
whole record shows: duplicate identifiers (5.A), file names, the devices'
chains (8.E-8.G).
"""

from __future__ import annotations

from node.crypto.election import ElectionContext
from node.record import layout
import node.verifier.ballot_checks as ballot_checks
from node.verifier.ballot_pass import Pass, run_pass
from node.verifier.chains import check_devices
from node.verifier.registry import Accumulator, Run, keys_known, step

BULK_BALLOTS = 64
UNMET = "cannot check ballots without the election's keys (steps 1-4)"


def every_ballot(run: Run) -> Pass:
    """The pass over every ballot file, made once for all the steps that need it."""
    return run.once(_check_every_ballot)


def _check_every_ballot(run: Run) -> Pass:
    ctx = run.election.context
    record = run.data.record
    if len(record.list_dir(layout.BALLOTS)) >= BULK_BALLOTS:   # 12-bit tables for g and K: a third cheaper per use
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
    with run.executor(ctx) as executor:
        return run_pass(ctx, record, executor, run.cache, run.progress)


@step("5", "selection identifiers", needs=keys_known, unmet=UNMET)
def selection_identifiers(run: Run, acc: Accumulator) -> None:
    """(5.A) no identifier twice, (5.B) per ballot; each ballot in the file its id names."""
    seen: dict[int, str] = {}
    folded: dict[str, str] = {}
    checked = every_ballot(run)
    for s in sorted(checked.summaries.values(), key=lambda s: s.ballot_id):
        bid, rel = s.ballot_id, s.rel
        expected_rel = layout.ballot_file(bid) if layout.BALLOT_ID.fullmatch(bid) else None
        if rel != expected_rel:
            acc.fail(f"{rel}: holds ballot {bid!r}" + (f", whose file is {expected_rel}" if expected_rel
                                                        else ", whose id is not allowed as a file name"))
        if bid.lower() in folded:
            acc.fail(f"ballot {bid!r}: its id differs only in case from ballot {folded[bid.lower()]!r}")
        folded[bid.lower()] = bid
        sid = s.selection_identifier
        if sid in seen:                                                        # (5.A)
            acc.fail(f"ballot {bid!r}: duplicate selection encryption identifier, the same as ballot "
                     f"{seen[sid]!r} (5.A)")
        else:
            seen[sid] = bid
    checked.report(ballot_checks.identifier, acc)


@step("6", "selection well-formedness", needs=keys_known, unmet=UNMET)
def selection_well_formedness(run: Run, acc: Accumulator) -> None:
    checked = every_ballot(run)
    for _, err in sorted(checked.errors.items()):
        acc.fail(err)
    checked.report(ballot_checks.well_formedness, acc)
    acc.note = checked.note()


@step("7", "vote limits", needs=keys_known, unmet=UNMET)
def vote_limits(run: Run, acc: Accumulator) -> None:
    every_ballot(run).report(ballot_checks.vote_limits, acc)


@step("8", "confirmation codes", needs=keys_known, unmet=UNMET)
def confirmation_codes(run: Run, acc: Accumulator) -> None:
    checked = every_ballot(run)
    checked.report(ballot_checks.confirmation_codes, acc)
    check_devices(run.data, checked.summaries, run.election.context, acc)


@step("", "ballot signatures", needs=keys_known, unmet=UNMET)
def ballot_signatures(run: Run, acc: Accumulator) -> None:
    every_ballot(run).report(ballot_checks.signature, acc)
