"""Verifications 9-12: the aggregation of the cast ballots, the tally's decryption and its contents."""

from __future__ import annotations

import gmpy2
from gmpy2 import mpz

from node.crypto.decryption import PublicShares, TallyStatement
from node.crypto.elgamal import Ciphertext
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.verifier.ballots import every_ballot
from node.verifier.decryptions import Decryption, check_decryptions, quorum_failures
from node.verifier.registry import (
    Accumulator, Run, every_key_verified, keys_known, parameters_known, step,
)


@step("9", "aggregation", needs=keys_known, unmet="cannot check the aggregation without the election (steps 1-4)")
def aggregation(run: Run, acc: Accumulator) -> None:
    """(A, B) of every option is the product of the cast ballots' encryptions (eq 79)."""
    data, ctx = run.data, run.election.context
    if data.encrypted_tally is None:
        acc.fail(data.error(layout.ENCRYPTED_TALLY))
        return
    tally = data.encrypted_tally[1]
    checked = every_ballot(run)
    expected = {(c.index, o.index) for c in ctx.manifest.contests for o in c.options}
    totals = checked.tally.totals if checked.tally is not None else {}
    if tally.ballot_count != checked.cast:
        acc.fail(f"encrypted tally: counts {tally.ballot_count} cast ballots, the record has {checked.cast}")
    for key in sorted(set(tally.totals) - expected):
        acc.fail(f"encrypted tally: contest {key[0]} option {key[1]} is not in the manifest")
    for key in sorted(expected):
        acc.items += 1
        have = tally.totals.get(key)
        if have is None:
            acc.fail(f"encrypted tally: contest {key[0]} option {key[1]} is missing")
        elif totals.get(key, Ciphertext(mpz(1), mpz(1))) != have:                     # (9.A), (9.B)
            acc.fail(f"encrypted tally contest {key[0]} option {key[1]}: (A, B) is not the product of the "
                     f"cast ballots' encryptions (9.A, 9.B)")


@step("10", "tally decryption", needs=every_key_verified,
      unmet="cannot check decryptions without every guardian's verified key (steps 1-3)", of_decryptions=True)
def tally_decryption(run: Run, acc: Accumulator) -> None:
    """Verification 10 for every option, with the guardians' shares (eqs 86, 93-95), batched."""
    data, el = run.data, run.election
    ctx = el.context
    if data.encrypted_tally is None or data.decrypted_tally is None:
        acc.fail(data.error(layout.DECRYPTED_TALLY if data.decrypted_tally is None else layout.ENCRYPTED_TALLY))
        return
    tally, dec = data.encrypted_tally[1], data.decrypted_tally
    bad_quorum = quorum_failures(dec.quorum, ctx.parameters.n, ctx.parameters.k, "decrypted tally")
    for f in bad_quorum:
        acc.fail(f)
    if bad_quorum:
        return
    publics = PublicShares(STANDARD, {i: pk.commitments for i, pk in el.keys.items()})
    decryptions, elements = [], []
    for (ci, oi), ct in sorted(tally.totals.items()):
        acc.items += 1
        what = f"tally contest {ci} option {oi}"
        opt = dec.option(ci, oi)
        if opt is None:
            acc.fail(f"{what}: has no decryption")
            continue
        elements += [(opt.decrypted_value, f"{what} T"), (ct.alpha, f"{what} A"), (ct.beta, f"{what} B")]
        if ctx.k_table.pow(opt.tally) != opt.decrypted_value:                        # (10.C)
            acc.fail(f"{what}: T is not K^t for the stated tally {opt.tally} (10.C)")
            continue
        if gmpy2.gcd(opt.decrypted_value, STANDARD.p) != 1:
            acc.fail(f"{what}: T is not invertible mod p")
            continue
        m = ct.beta * gmpy2.invert(opt.decrypted_value, STANDARD.p) % STANDARD.p      # (10.1) M = B T^-1
        decryptions.append(Decryption(what, TallyStatement(ctx.h_e, ci, oi, ct.alpha, ct.beta), ct.alpha, "K",
                                      m, opt.challenge, opt.response, opt.shares))
    check_decryptions(ctx, publics, dec.quorum, decryptions, elements, acc)


@step("11", "tally contents", needs=parameters_known,
      unmet="cannot check the tally's contents without the manifest (step 1)", of_decryptions=True)
def tally_contents(run: Run, acc: Accumulator) -> None:
    """The tally's contests and options are the manifest's, labels included."""
    data = run.data
    if data.decrypted_tally is None:
        acc.fail(data.error(layout.DECRYPTED_TALLY))
        return
    manifest, dec = run.election.parameters.manifest, data.decrypted_tally
    cast = [s for s in every_ballot(run).summaries.values() if s.state == codec.CAST]
    cast_per_contest: dict[int, int] = {}
    for s in cast:
        for contest_index in s.contests:
            cast_per_contest[contest_index] = cast_per_contest.get(contest_index, 0) + 1
    seen = set()
    for c in dec.contests:
        acc.items += 1
        where = f"decrypted tally contest {c.contest_index}"
        if c.contest_index in seen:
            acc.fail(f"{where}: appears twice")
            continue
        seen.add(c.contest_index)
        if not 1 <= c.contest_index <= len(manifest.contests):                         # (11.A)
            acc.fail(f"{where}: not a contest of the manifest (11.A)")
            continue
        contest = manifest.contest(c.contest_index)
        if c.label != contest.label:
            acc.fail(f"{where}: label {c.label!r} is not the manifest's {contest.label!r} (11.A)")
        options = [o.option_index for o in c.options]
        if sorted(options) != [o.index for o in contest.options] or len(set(options)) != len(options):
            acc.fail(f"{where}: options {options} are not the manifest's 1..{len(contest.options)} (11.B, 11.C)")
        for o in c.options:
            acc.items += 1
            if 1 <= o.option_index <= len(contest.options):
                option = contest.option(o.option_index)
                if o.label != option.label:                                              # (11.B)
                    acc.fail(f"{where} option {o.option_index}: label {o.label!r} is not the manifest's "
                             f"{option.label!r} (11.B)")
                cap = option.selection_limit * cast_per_contest.get(c.contest_index, 0)
                if o.tally > cap:
                    acc.fail(f"{where} option {o.option_index}: tally {o.tally} exceeds what the cast ballots "
                             f"allow ({cap})")
    for contest in manifest.contests:                                                    # (11.C), (11.D)
        if contest.index not in seen:
            acc.fail(f"decrypted tally: contest {contest.index} ({contest.label!r}) is missing (11.D)")
    if dec.ballot_count != len(cast):
        acc.fail(f"decrypted tally: counts {dec.ballot_count} cast ballots, the record has {len(cast)}")


@step("12", "contest data")
def contest_data(run: Run, acc: Accumulator) -> None:
    """Verification 12 does not apply: ballots carry no contest data (spec 3.3.10)."""
    acc.not_applicable = True
    acc.note = "no contest data is produced by this system"
