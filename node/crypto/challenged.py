"""Decryption of challenged ballots through their ballot nonce (spec 3.6.7, Verifications 13, 14).

The guardians decrypt only the ballot nonce xi_B, with a joint proof; the
nonces xi_i,j of every selection follow from it (eq 33) and are published, and
anyone re-encrypts the claimed selections with them and recomputes the
contest hashes and the confirmation code. xi_B itself is not published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gmpy2 import mpz

from node.crypto.ballot import (
    EncryptedBallot, confirmation_code, contest_hash, decrypt_ballot_nonce, identifier_hash,
    nonce_for_selection, verify_encrypted_nonce,
)
from node.crypto.decryption import (
    DecryptionSession, NonceStatement, PartShare, PublicShares, ThresholdKey, plan_parts,
    verify_nonce_decryption,
)
from node.crypto.dlog import discrete_log
from node.crypto.election import ElectionContext
from node.crypto.elgamal import encrypt, power_of_key_from_nonce
from node.crypto.errors import DecryptionError, ProofError
from node.crypto.params import encode_q


@dataclass(frozen=True)
class DecryptedSelection:
    option_index: int
    value: int        # sigma
    nonce: mpz        # xi_i,j


@dataclass(frozen=True)
class DecryptedChallengedBallot:
    ballot_id: str
    beta: mpz                      # beta_B = C0^s-hat (eq 108)
    challenge: mpz                 # proof of beta_B (3.6.6 form)
    response: mpz
    contests: Mapping[int, tuple[DecryptedSelection, ...]]
    shares: tuple[PartShare, ...]


def nonce_statement(ctx: ElectionContext, ballot: EncryptedBallot) -> NonceStatement:
    enc = ballot.encrypted_nonce
    c2 = encode_q(ctx.group, enc.challenge) + encode_q(ctx.group, enc.response)
    return NonceStatement(identifier_hash(ctx.h_e, ballot.selection_identifier), enc.c0, enc.c1, c2)


def decrypt_challenged_ballot(ctx: ElectionContext, data_publics: PublicShares,
                              keys: Mapping[int, ThresholdKey], ballot: EncryptedBallot,
                              compensated: bool = False, rng=None) -> DecryptedChallengedBallot:
    """The present guardians decrypt xi_B; the selections follow from the derived nonces (eq 109)."""
    n, k = ctx.parameters.n, ctx.parameters.k
    if len(keys) < k:
        raise DecryptionError(f"only {len(keys)} guardians present, {k} needed")
    statement = nonce_statement(ctx, ballot)
    verify_encrypted_nonce(ctx, statement.h_i, ballot.encrypted_nonce, f"ballot {ballot.ballot_id!r} nonce")
    parts = plan_parts(ctx.group, n, sorted(keys), compensated)
    session = DecryptionSession(ctx.group, ctx.g_table, ctx.k_hat_table, data_publics, statement, parts, compensated)
    joint, shares = session.run(keys, rng)
    ballot_nonce = decrypt_ballot_nonce(ctx, statement.h_i, ballot.encrypted_nonce, joint.m)
    contests = {}
    for ec in ballot.contests:
        limit = max(o.selection_limit for o in ctx.manifest.contest(ec.contest_index).options)
        solver = discrete_log(ctx.group, ctx.joint_key, max(limit, 1))
        selections = []
        for s in ec.selections:
            xi = nonce_for_selection(ctx, ballot, ballot_nonce, ec.contest_index, s.option_index)
            try:
                value = solver.solve(power_of_key_from_nonce(ctx.group, ctx.k_table, s.ciphertext, xi))
            except DecryptionError:
                raise DecryptionError(f"ballot {ballot.ballot_id!r} contest {ec.contest_index} option "
                                      f"{s.option_index}: the derived nonce does not open the selection") from None
            selections.append(DecryptedSelection(s.option_index, value, xi))
        contests[ec.contest_index] = tuple(selections)
    return DecryptedChallengedBallot(ballot.ballot_id, joint.m, joint.challenge, joint.response, contests,
                                     tuple(shares))


def verify_challenged_ballot(ctx: ElectionContext, ballot: EncryptedBallot,
                             decrypted: DecryptedChallengedBallot) -> None:
    """Verifications 13 and 14 for one challenged ballot, and the proof of its nonce decryption."""
    who = f"challenged ballot {ballot.ballot_id!r}"
    statement = nonce_statement(ctx, ballot)
    verify_nonce_decryption(ctx.group, ctx.g_table, ctx.k_hat_table, statement, decrypted.beta,
                            decrypted.challenge, decrypted.response, f"{who} nonce")
    try:
        style = ctx.manifest.ballot_style(ballot.style_index)
    except Exception:
        raise ProofError(f"{who}: unknown ballot style index {ballot.style_index}") from None
    expected = sorted(style.contests)
    if sorted(decrypted.contests) != expected or [c.contest_index for c in ballot.contests] != expected:
        raise ProofError(f"{who}: the contests do not match ballot style {style.label!r} "
                         f"(Verification 14.A, 14.B)")                                    # (14.A), (14.B)
    hashes = []
    for ec in ballot.contests:
        contest = ctx.manifest.contest(ec.contest_index)
        selections = decrypted.contests[ec.contest_index]
        if [s.option_index for s in selections] != [o.index for o in contest.options]:  # (14.C), (14.D)
            raise ProofError(f"{who}: contest {contest.index} options do not match the manifest")
        recomputed = []
        for s, option in zip(selections, contest.options):
            if not 0 <= s.value <= option.selection_limit:                                # (14.E)
                raise ProofError(f"{who}: contest {contest.index} option {option.index} value out of range")
            recomputed.append(encrypt(ctx.g_table, ctx.k_table, s.value, s.nonce))        # (13.1), (13.2)
        if sum(s.value for s in selections) > contest.selection_limit:                     # (14.F)
            raise ProofError(f"{who}: contest {contest.index} is over its selection limit")
        if recomputed != [s.ciphertext for s in ec.selections]:
            raise ProofError(f"{who}: contest {contest.index}: the nonces and values do not reproduce "
                             f"the encrypted selections (Verification 13)")
        hashes.append(contest_hash(ctx, statement.h_i, contest.index, recomputed))        # (13.3)
    if confirmation_code(statement.h_i, hashes, ballot.chaining_field) != ballot.confirmation_code:  # (13.B)
        raise ProofError(f"{who}: the confirmation code does not follow from the decryption (Verification 13.B)")
