"""The checks of one ballot: Verifications 5.B, 6, 7, 8.A-8.D and its signature.

check_ballot is a task for the process pool (node.compute): it needs only the
election context and the ballot, never raises for a bad ballot, and returns
what each check found. The steps over every ballot (node.verifier.ballots) add
these findings up. A ballot's group elements are checked for membership in one
batch (node.crypto.batch.not_members).
"""

from __future__ import annotations

import time

from node.crypto.ballot import (
    NO_CHAINING, SIMPLE_CHAINING, confirmation_code, contest_hash, election_id, identifier_hash, signature_content,
    unchained_field, verify_encrypted_nonce,
)
from node.crypto.ballot_signature import verify_ballot_signature
from node.crypto.batch import not_members
from node.crypto.election import ElectionContext
from node.crypto.elgamal import aggregate
from node.crypto.errors import GuardianError
from node.crypto.range_proof import contest_prefix, selection_prefix, verify_range
from node.record import codec
from node.record.election import Findings

Found = tuple[int, list[str], float]        # one check on one ballot: items, failures, seconds


def identifier(ctx: ElectionContext, rec: codec.BallotRecord, h_i: bytes, found: Findings) -> None:
    """(5.B): the published H_I is H(H_E; 0x20, id_B)."""
    found.items += 1
    if h_i != rec.identifier_hash:
        found.fail(f"ballot {rec.ballot.ballot_id!r}: selection_encryption_identifier_hash is not "
                   f"H(H_E; 0x20, id_B) (5.B)")


def _shaped(ctx: ElectionContext, b, found: Findings) -> bool:
    """The ballot's contests are those of its style, each with one selection per option."""
    who = f"ballot {b.ballot_id!r}"
    try:
        style = ctx.manifest.ballot_style(b.style_index)
    except GuardianError:
        found.fail(f"{who}: unknown ballot style {b.style_index}")
        return False
    expected = sorted(style.contests)
    if [c.contest_index for c in b.contests] != expected:
        found.fail(f"{who}: contests {[c.contest_index for c in b.contests]} do not match ballot style "
                   f"{style.label!r} ({expected})")
        return False
    ok = True
    for ec in b.contests:
        contest = ctx.manifest.contest(ec.contest_index)
        if len(ec.selections) != len(contest.options):
            found.fail(f"{who} contest {contest.index}: {len(ec.selections)} selections, the manifest has "
                       f"{len(contest.options)} options")
            ok = False
    return ok


def well_formedness(ctx: ElectionContext, rec: codec.BallotRecord, h_i: bytes, found: Findings) -> bool:
    """Verification 6 and the proof of the encrypted ballot nonce; False when the ballot is not shaped as its
    style says, and the checks after this one would misread it."""
    b, group = rec.ballot, ctx.group
    if not _shaped(ctx, b, found):
        return False
    who = f"ballot {b.ballot_id!r}"
    nonce_what = f"{who} encrypted ballot nonce"
    items = [(b.encrypted_nonce.c0, f"{nonce_what} C0")]
    for ec in b.contests:
        for s in ec.selections:
            where = f"{who} contest {ec.contest_index} option {s.option_index}"
            items += [(s.ciphertext.alpha, f"{where} alpha"), (s.ciphertext.beta, f"{where} beta")]
    bad: set[str] = set()
    for what, why in not_members(group, items):                                # (6.A), (7.A) batched
        found.fail(f"{why} (6.A)")
        bad.add(what.rsplit(" ", 1)[0])
    for ec in b.contests:
        contest = ctx.manifest.contest(ec.contest_index)
        for s, option in zip(ec.selections, contest.options):
            found.items += 1
            where = f"{who} contest {contest.index} option {option.index}"
            if where in bad:
                continue
            try:                                                               # (6.1)-(6.3), (6.B)-(6.D)
                verify_range(group, ctx.g_table, ctx.k_table, h_i, selection_prefix(contest.index, option.index),
                             s.ciphertext, s.proof, option.selection_limit, f"{where} proof")
            except GuardianError as e:
                found.fail(f"{e} (Verification 6)")
    if nonce_what not in bad:
        try:                                                                   # spec 3.3.4, eq 38
            verify_encrypted_nonce(ctx, h_i, b.encrypted_nonce, nonce_what)
        except GuardianError as e:
            found.fail(str(e))
    return True


def vote_limits(ctx: ElectionContext, rec: codec.BallotRecord, h_i: bytes, found: Findings) -> None:
    """Verification 7: each contest's aggregate proves at most its selection limit."""
    b, group = rec.ballot, ctx.group
    who = f"ballot {b.ballot_id!r}"
    for ec in b.contests:
        contest = ctx.manifest.contest(ec.contest_index)
        found.items += 1
        total = aggregate(group, (s.ciphertext for s in ec.selections))        # (7.1), (7.2)
        try:                                                                   # (7.3)-(7.5), (7.B)-(7.D)
            verify_range(group, ctx.g_table, ctx.k_table, h_i, contest_prefix(contest.index), total, ec.proof,
                         contest.selection_limit, f"{who} contest {contest.index} selection limit proof")
        except GuardianError as e:
            found.fail(f"{e} (Verification 7)")


def confirmation_codes(ctx: ElectionContext, rec: codec.BallotRecord, h_i: bytes, found: Findings) -> None:
    """Verification 8.A-8.D: contest hashes, the confirmation code, and the chaining field's form."""
    b = rec.ballot
    who = f"ballot {b.ballot_id!r}"
    found.items += 1
    hashes = []
    for ec in b.contests:
        chi = contest_hash(ctx, h_i, ec.contest_index, [s.ciphertext for s in ec.selections])   # (8.A) eq 70
        if chi != ec.contest_hash:
            found.fail(f"{who} contest {ec.contest_index}: contest hash is wrong (8.A)")
        hashes.append(chi)
    if confirmation_code(h_i, hashes, b.chaining_field) != b.confirmation_code:                  # (8.B) eq 71
        found.fail(f"{who}: confirmation code is not H(H_I; 0x29, contest hashes, B_C) (8.B)")
    mode = b.chaining_field[:4]
    if mode == NO_CHAINING:
        if b.chaining_field != unchained_field(ctx.h_e, b.device):                                # (8.C), (8.D)
            found.fail(f"{who}: chaining field is not 0x00000000 || H_DI of device {b.device!r} (8.D)")
    elif mode != SIMPLE_CHAINING:
        found.fail(f"{who}: unknown chaining mode {mode.hex().upper()} in the chaining field")


def signature(ctx: ElectionContext, rec: codec.BallotRecord, h_i: bytes, found: Findings) -> None:
    """The ballot's one-time Ed25519 signature (seed 003)."""
    b = rec.ballot
    found.items += 1
    if rec.signature is None:
        found.fail(f"ballot {b.ballot_id!r}: has no voter_signing_pk / voter_ballot_signature")
        return
    try:
        verify_ballot_signature(b.ballot_id, election_id(ctx), signature_content(ctx, b, rec.creation_date),
                                rec.signature)
    except GuardianError as e:
        found.fail(str(e))


CHECKS = (identifier, well_formedness, vote_limits, confirmation_codes, signature)


def check_ballot(ctx: ElectionContext, rec: codec.BallotRecord) -> dict[str, Found]:
    """Every check of CHECKS on one ballot, in order: {check's name: (items, failures, seconds)}."""
    h_i = identifier_hash(ctx.h_e, rec.ballot.selection_identifier)                # eq 32
    out: dict[str, Found] = {check.__name__: (0, [], 0.0) for check in CHECKS}
    for check in CHECKS:
        found = Findings()
        start = time.perf_counter()
        go_on = check(ctx, rec, h_i, found)
        out[check.__name__] = (found.items, found.failures, time.perf_counter() - start)
        if go_on is False:
            break
    return out
