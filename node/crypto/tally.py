"""The encrypted tally (spec 3.5) and its verifiable decryption (spec 3.6, Verifications 9-11)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from gmpy2 import mpz

from node.crypto.ballot import EncryptedBallot
from node.crypto.decryption import (
    DecryptionSession, PartShare, PublicShares, TallyStatement, ThresholdKey, plan_parts,
    t_power_from_m, tally_from_power, verify_tally_decryption,
)
from node.crypto.election import ElectionContext
from node.crypto.elgamal import Ciphertext
from node.crypto.errors import DecryptionError, ProofError
from node.crypto.params import Group

OptionKey = tuple[int, int]   # (contest index, option index)


@dataclass(frozen=True)
class EncryptedTally:
    """(A, B) for every option of every contest of the manifest (eq 79)."""

    totals: Mapping[OptionKey, Ciphertext]
    ballot_count: int


def partial_tally(group: Group, ballots: Iterable[EncryptedBallot]) -> EncryptedTally:
    """The product of the ballots' encryptions, option by option, for the options they hold (eq 79): the
    tally of a batch, to be combined with the others'."""
    p = group.p
    totals: dict[OptionKey, list] = {}
    count = 0
    for ballot in ballots:
        count += 1
        for contest in ballot.contests:
            for s in contest.selections:
                key = (contest.contest_index, s.option_index)
                t = totals.get(key)
                if t is None:
                    totals[key] = [s.ciphertext.alpha, s.ciphertext.beta]
                else:
                    t[0], t[1] = t[0] * s.ciphertext.alpha % p, t[1] * s.ciphertext.beta % p
    return EncryptedTally({k: Ciphertext(a, b) for k, (a, b) in totals.items()}, count)


def tally_ballots(ctx: ElectionContext, cast: Iterable[EncryptedBallot]) -> EncryptedTally:
    """Aggregate the cast ballots option by option (eq 79), for every option of the manifest: one not on any
    ballot is the encryption (1, 1) of nothing."""
    part = partial_tally(ctx.group, cast)
    nothing = Ciphertext(mpz(1), mpz(1))
    return EncryptedTally({(c.index, o.index): part.totals.get((c.index, o.index), nothing)
                           for c in ctx.manifest.contests for o in c.options}, part.ballot_count)


def combine_tallies(ctx: ElectionContext, a: EncryptedTally, b: EncryptedTally) -> EncryptedTally:
    """The tally of two disjoint sets of cast ballots from theirs: option by option, (A_a A_b, B_a B_b) (eq 79).

    Associative and commutative, so partial tallies of batches combine in any tree and
    give the tally of all of them."""
    p = ctx.group.p
    totals = dict(a.totals)
    for key, ct in b.totals.items():
        mine = totals.get(key)
        totals[key] = ct if mine is None else Ciphertext(mine.alpha * ct.alpha % p, mine.beta * ct.beta % p)
    return EncryptedTally(totals, a.ballot_count + b.ballot_count)


@dataclass(frozen=True)
class DecryptedOption:
    value: int            # t
    t_power: object       # T = K^t (eq 82)
    challenge: object     # c (eq 90)
    response: object      # v (eq 93)
    shares: tuple[PartShare, ...]


@dataclass(frozen=True)
class DecryptedTally:
    options: Mapping[OptionKey, DecryptedOption]
    present: tuple[int, ...]
    missing: tuple[int, ...]
    compensated: bool


def decrypt_tally(ctx: ElectionContext, publics: PublicShares, keys: Mapping[int, ThresholdKey],
                  tally: EncryptedTally, compensated: bool = False, rng=None) -> DecryptedTally:
    """Decrypt every option total with the guardians in `keys` (at least k of the n)."""
    n, k = ctx.parameters.n, ctx.parameters.k
    present = sorted(keys)
    if len(present) < k:
        raise DecryptionError(f"only {len(present)} guardians present, {k} needed")
    parts = plan_parts(ctx.group, n, present, compensated)
    bound = max(1, tally.ballot_count * max((o.selection_limit for c in ctx.manifest.contests
                                             for o in c.options), default=1))
    results = {}
    for (ci, oi), ct in tally.totals.items():
        statement = TallyStatement(ctx.h_e, ci, oi, ct.alpha, ct.beta)
        session = DecryptionSession(ctx.group, ctx.g_table, ctx.k_table, publics, statement, parts, compensated)
        joint, shares = session.run(keys, rng)
        t_power = t_power_from_m(ctx.group, ct.beta, joint.m)
        value = tally_from_power(ctx.group, ctx.joint_key, t_power, bound)
        results[(ci, oi)] = DecryptedOption(value, t_power, joint.challenge, joint.response, tuple(shares))
    missing = tuple(j for j in range(1, n + 1) if j not in present)
    return DecryptedTally(results, tuple(present), missing, compensated)


def verify_tally(ctx: ElectionContext, cast: Sequence[EncryptedBallot], tally: EncryptedTally,
                 decrypted: DecryptedTally) -> None:
    """Verifications 9, 10 and 11 against the cast ballots. Raises ProofError naming the option."""
    recomputed = tally_ballots(ctx, cast)
    expected_keys = {(c.index, o.index) for c in ctx.manifest.contests for o in c.options}
    if set(tally.totals) != expected_keys or set(decrypted.options) != expected_keys:   # (11.A-11.C)
        raise ProofError("the tally's contests and options do not match the manifest (Verification 11)")
    for key, ct in tally.totals.items():
        if recomputed.totals[key] != ct:                                                  # (9.A), (9.B)
            raise ProofError(f"contest {key[0]} option {key[1]}: the encrypted tally is not the "
                             f"product of the cast ballots (Verification 9)")
        d = decrypted.options[key]
        limit = ctx.manifest.contest(key[0]).option(key[1]).selection_limit
        if isinstance(d.value, bool) or not isinstance(d.value, int) or not 0 <= d.value <= len(cast) * limit:
            # T = K^t only fixes t mod q: the value must also be a possible count
            raise ProofError(f"tally contest {key[0]} option {key[1]}: value {d.value!r} is not between 0 and "
                             f"{len(cast)} ballots x limit {limit} (Verification 10.C)")
        verify_tally_decryption(ctx.group, ctx.g_table, ctx.k_table,
                                TallyStatement(ctx.h_e, key[0], key[1], ct.alpha, ct.beta),
                                d.value, d.t_power, d.challenge, d.response,
                                f"tally contest {key[0]} option {key[1]}")
