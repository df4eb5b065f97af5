"""Ballot encryption (spec 3.3), confirmation codes and ballot chaining (spec 3.4).

A plaintext ballot names its ballot style and, per contest, the value given to
each option by label. Contests of the style that the voter left out encrypt as
all zeros (an undervote). Write-ins are ordinary options (seed 002). An
overvote, an unknown contest or option, or a contest not on the style is
refused with the ballot id and the reason: the tool that marks ballots decides
what an overvote means, not the encryptor.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Mapping

from gmpy2 import mpz

from node.crypto.election import ElectionContext
from node.crypto.elgamal import Ciphertext, aggregate, encrypt
from node.crypto.encoding import length_prefixed, small
from node.crypto.errors import BallotError, InputError, ProofError
from node.crypto.group import check_element, check_elements, check_scalar
from node.crypto.hashing import H, H_q, elements, kdf_counter_mode, xor_bytes
from node.crypto.manifest import Contest
from node.crypto.range_proof import RangeProof, contest_prefix, prove_range, selection_prefix, verify_range

NO_CHAINING = b"\x00\x00\x00\x00"      # chaining mode identifier (spec 3.4.4)
SIMPLE_CHAINING = b"\x00\x00\x00\x01"
_NONCE_LABEL = b"ballot_nonce"            # b("ballot_nonce", 12)
_NONCE_CONTEXT = b"ballot_nonce_encrypt"  # b("ballot_nonce_encrypt", 20)


@dataclass(frozen=True)
class PlaintextBallot:
    ballot_id: str
    style: str                                   # ballot style label
    choices: Mapping[str, Mapping[str, int]]     # contest label -> option label -> value


@dataclass(frozen=True)
class EncryptedSelection:
    option_index: int
    ciphertext: Ciphertext
    proof: RangeProof


@dataclass(frozen=True)
class EncryptedContest:
    contest_index: int
    selections: tuple[EncryptedSelection, ...]
    proof: RangeProof        # the contest selection limit proof (3.3.8)
    contest_hash: bytes      # chi_l (eq 70)


@dataclass(frozen=True)
class EncryptedNonce:
    """C_xiB = (C0, C1, (c_B, v_B)): the ballot nonce encrypted under K-hat (spec 3.3.4)."""

    c0: mpz
    c1: bytes
    challenge: mpz
    response: mpz


@dataclass(frozen=True)
class EncryptedBallot:
    ballot_id: str
    style_index: int
    device: str
    selection_identifier: mpz        # id_B (spec 3.3.2)
    contests: tuple[EncryptedContest, ...]
    encrypted_nonce: EncryptedNonce
    chaining_field: bytes            # B_C, 36 bytes (spec 3.4.2)
    confirmation_code: bytes         # H_C (eq 71)

    def contest(self, index: int) -> EncryptedContest:
        for c in self.contests:
            if c.contest_index == index:
                return c
        raise BallotError(f"ballot {self.ballot_id}: no contest {index}")


# --- hashes of spec 3.3 and 3.4 -----------------------------------------------------------------

def identifier_hash(h_e: bytes, selection_identifier: int) -> bytes:
    """H_I = H(H_E; 0x20, id_B) (eq 32)."""
    return H(h_e, b"\x20" + int(selection_identifier).to_bytes(32, "big"))


def selection_nonce(ctx: ElectionContext, h_i: bytes, contest_index: int, option_index: int,
                    ballot_nonce: int) -> mpz:
    """xi_i,j = H_q(H_I; 0x21, i, j, xi_B) (eq 33)."""
    data = b"\x21" + small(contest_index) + small(option_index) + int(ballot_nonce).to_bytes(32, "big")
    return H_q(ctx.group, h_i, data)


def contest_hash(ctx: ElectionContext, h_i: bytes, contest_index: int, ciphertexts: list[Ciphertext]) -> bytes:
    """chi_l = H(H_I; 0x28, l, alpha_1, beta_1, ..., alpha_m, beta_m) (eq 70), no contest data."""
    values = [v for ct in ciphertexts for v in (ct.alpha, ct.beta)]
    return H(h_i, b"\x28" + small(contest_index) + elements(ctx.group, values))


def confirmation_code(h_i: bytes, contest_hashes: list[bytes], chaining_field: bytes) -> bytes:
    """H_C = H(H_I; 0x29, chi_1, ..., chi_mB, B_C) (eq 71)."""
    if len(chaining_field) != 36:
        raise InputError("the chaining field B_C must be 36 bytes")
    return H(h_i, b"\x29" + b"".join(contest_hashes) + chaining_field)


def device_hash(h_e: bytes, device: str) -> bytes:
    """H_DI = H(H_E; 0x2A, S_device) with the UTF-8 string length-prefixed (eq 72)."""
    return H(h_e, b"\x2a" + length_prefixed(device.encode("utf-8")))


def unchained_field(h_e: bytes, device: str) -> bytes:
    """B_C = 0x00000000 || H_DI for the no-chaining mode (eq 73)."""
    return NO_CHAINING + device_hash(h_e, device)


@dataclass
class BallotChain:
    """Simple chaining on one device (spec 3.4.4, eqs 74-78). Pure: the caller persists `last`."""

    h_e: bytes
    device: str
    last: bytes | None = None        # H_(j-1); None before the first ballot

    @property
    def initial_field(self) -> bytes:
        """B_C,0 = 0x00000001 || H_DI (eq 75)."""
        return SIMPLE_CHAINING + device_hash(self.h_e, self.device)

    @property
    def initial_code(self) -> bytes:
        """H_0 = H(H_E; 0x29, B_C,0) (eq 74)."""
        return H(self.h_e, b"\x29" + self.initial_field)

    def next_field(self) -> bytes:
        """B_C,j = 0x00000001 || H_(j-1) (eq 76)."""
        return SIMPLE_CHAINING + (self.last if self.last is not None else self.initial_code)

    def advance(self, code: bytes) -> None:
        self.last = code

    def closing_hash(self) -> bytes:
        """H = H(H_E; 0x29, 0x00000001 || H(H_E; 0x2B, H_l, B_C,0)) (eqs 77, 78)."""
        last = self.last if self.last is not None else self.initial_code
        inner = H(self.h_e, b"\x2b" + last + self.initial_field)
        return H(self.h_e, b"\x29" + SIMPLE_CHAINING + inner)


# --- plaintext validation -----------------------------------------------------------------------

def ballot_values(ctx: ElectionContext, ballot: PlaintextBallot) -> tuple[int, dict[int, list[int]]]:
    """Check a plaintext ballot against the manifest; return (style index, contest index -> values).

    BallotError names the ballot and the reason.
    """
    manifest = ctx.manifest
    who = f"ballot {ballot.ballot_id!r}"
    try:
        style = manifest.ballot_style_by_label(ballot.style)
    except InputError:
        raise BallotError(f"{who}: unknown ballot style {ballot.style!r}") from None
    if not isinstance(ballot.choices, Mapping):
        raise BallotError(f"{who}: choices must map contest labels to option values")
    by_label = {}
    for contest_label, options in ballot.choices.items():
        try:
            contest = manifest.contest_by_label(contest_label)
        except InputError:
            raise BallotError(f"{who}: unknown contest {contest_label!r}") from None
        if contest.index not in style.contests:
            raise BallotError(f"{who}: contest {contest_label!r} is not on ballot style {style.label!r}")
        by_label[contest.index] = _contest_values(who, contest, options)
    values = {}
    for index in sorted(style.contests):
        values[index] = by_label.get(index) or [0] * len(manifest.contest(index).options)
    return style.index, values


def _contest_values(who: str, contest: Contest, options: object) -> list[int]:
    if not isinstance(options, Mapping):
        raise BallotError(f"{who}: contest {contest.label!r} must map option labels to values")
    values = [0] * len(contest.options)
    for option_label, value in options.items():
        try:
            option = contest.option_by_label(option_label)
        except InputError:
            raise BallotError(f"{who}: contest {contest.label!r} has no option {option_label!r}") from None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise BallotError(f"{who}: option {option_label!r} of {contest.label!r} needs a non-negative integer")
        if value > option.selection_limit:
            raise BallotError(f"{who}: option {option_label!r} of {contest.label!r} is over its limit "
                              f"({value} > {option.selection_limit})")
        values[option.index - 1] = value
    if sum(values) > contest.selection_limit:
        raise BallotError(f"{who}: contest {contest.label!r} is overvoted "
                          f"({sum(values)} > limit {contest.selection_limit})")
    return values


# --- encryption ---------------------------------------------------------------------------------

def _nonce_key(h_i: bytes, ctx: ElectionContext, alpha, beta) -> bytes:
    # h = H(H_I; 0x22, alpha_B, beta_B) (eq 35); k_1 = HMAC(h, 0x01 || Label || 0x00 || Context || 0x0100) (eq 36)
    h = H(h_i, b"\x22" + elements(ctx.group, (alpha, beta)))
    return kdf_counter_mode(h, b"\x01", _NONCE_LABEL, _NONCE_CONTEXT, b"\x01\x00")


def _nonce_challenge(ctx: ElectionContext, h_i: bytes, a, c0, c1: bytes) -> mpz:
    # c_B = H_q(H_I; 0x23, a_B, C0, C1) (eq 38)
    return H_q(ctx.group, h_i, b"\x23" + elements(ctx.group, (a, c0)) + c1)


def encrypt_ballot_nonce(ctx: ElectionContext, h_i: bytes, ballot_nonce: int, rng) -> EncryptedNonce:
    """C_xiB: the ballot nonce encrypted to K-hat with a proof of the encryption nonce (eqs 34-38)."""
    q = ctx.group.q
    xi_hat = mpz(rng.randrange(int(q)))
    alpha, beta = ctx.g_table.pow(xi_hat), ctx.k_hat_table.pow(xi_hat)     # eq 34
    c1 = xor_bytes(int(ballot_nonce).to_bytes(32, "big"), _nonce_key(h_i, ctx, alpha, beta))  # eq 37
    u = mpz(rng.randrange(int(q)))
    a = ctx.g_table.pow(u)
    c = _nonce_challenge(ctx, h_i, a, alpha, c1)
    return EncryptedNonce(alpha, c1, c, (u - c * xi_hat) % q)


def verify_encrypted_nonce(ctx: ElectionContext, h_i: bytes, enc: EncryptedNonce, what: str) -> None:
    """The Schnorr proof of C_xiB,2 (spec 3.6.7, first paragraph). ProofError names `what`."""
    c0 = check_element(ctx.group, enc.c0, f"{what} C0")
    c = check_scalar(ctx.group, enc.challenge, f"{what} challenge")
    v = check_scalar(ctx.group, enc.response, f"{what} response")
    if len(enc.c1) != 32:
        raise ProofError(f"{what}: C1 must be 32 bytes")
    a = ctx.g_table.pow(v) * pow(c0, c, ctx.group.p) % ctx.group.p   # a_B = g^v_B C0^c_B
    if _nonce_challenge(ctx, h_i, a, c0, enc.c1) != c:
        raise ProofError(f"{what}: the proof of the ballot nonce encryption does not verify (eq 38)")


def decrypt_ballot_nonce(ctx: ElectionContext, h_i: bytes, enc: EncryptedNonce, beta: int) -> int:
    """xi_B = C1 xor k_1, given beta_B = C0^s-hat from the guardians (spec 3.6.7)."""
    return int.from_bytes(xor_bytes(enc.c1, _nonce_key(h_i, ctx, enc.c0, beta)), "big")


def encrypt_ballot(
    ctx: ElectionContext, ballot: PlaintextBallot, device: str, chaining_field: bytes | None = None,
    rng=None,
) -> EncryptedBallot:
    """Encrypt a plaintext ballot with all proofs and its confirmation code (spec 3.3, 3.4).

    chaining_field defaults to the no-chaining field of `device` (eq 73); pass
    BallotChain.next_field() for simple chaining.
    """
    rng = rng or secrets.SystemRandom()
    style_index, values = ballot_values(ctx, ballot)
    group, q = ctx.group, ctx.group.q
    selection_identifier = mpz(rng.getrandbits(256))                   # id_B (spec 3.3.2)
    h_i = identifier_hash(ctx.h_e, selection_identifier)
    ballot_nonce = rng.getrandbits(256)                                 # xi_B (spec 3.3.3)
    contests = []
    for contest_index, contest_values in values.items():
        contest = ctx.manifest.contest(contest_index)
        selections, nonces = [], []
        for option, value in zip(contest.options, contest_values):
            xi = selection_nonce(ctx, h_i, contest_index, option.index, ballot_nonce)
            ct = encrypt(ctx.g_table, ctx.k_table, value, xi)           # eq 31
            proof = prove_range(group, ctx.g_table, ctx.k_table, h_i, selection_prefix(contest_index, option.index),
                                ct, xi, value, option.selection_limit, rng)
            selections.append(EncryptedSelection(option.index, ct, proof))
            nonces.append(xi)
        total_ct = aggregate(group, (s.ciphertext for s in selections))  # (alpha-bar, beta-bar) (3.3.8)
        total_proof = prove_range(group, ctx.g_table, ctx.k_table, h_i, contest_prefix(contest_index), total_ct,
                                  sum(nonces) % q, sum(contest_values), contest.selection_limit, rng)
        chi = contest_hash(ctx, h_i, contest_index, [s.ciphertext for s in selections])
        contests.append(EncryptedContest(contest_index, tuple(selections), total_proof, chi))
    encrypted_nonce = encrypt_ballot_nonce(ctx, h_i, ballot_nonce, rng)
    if chaining_field is None:
        chaining_field = unchained_field(ctx.h_e, device)
    code = confirmation_code(h_i, [c.contest_hash for c in contests], chaining_field)
    return EncryptedBallot(ballot.ballot_id, style_index, device, selection_identifier, tuple(contests),
                           encrypted_nonce, chaining_field, code)


# --- verification -------------------------------------------------------------------------------

def verify_ballot(ctx: ElectionContext, ballot: EncryptedBallot) -> None:
    """Verifications 5.B, 6, 7, 8.A, 8.B, 8.C/8.D for one ballot, and the ballot nonce proof.

    Raises BallotError, ProofError or GroupMembershipError naming the ballot and
    the contest or option at fault.
    """
    who = f"ballot {ballot.ballot_id!r}"
    manifest, group = ctx.manifest, ctx.group
    if not 0 <= ballot.selection_identifier < 2**256:
        raise BallotError(f"{who}: selection identifier is not a 256-bit value")
    h_i = identifier_hash(ctx.h_e, ballot.selection_identifier)           # (5.B)
    if not isinstance(ballot.chaining_field, bytes) or len(ballot.chaining_field) != 36:
        raise BallotError(f"{who}: the chaining field B_C must be 36 bytes")
    if not isinstance(ballot.confirmation_code, bytes) or len(ballot.confirmation_code) != 32:
        raise BallotError(f"{who}: the confirmation code must be 32 bytes")
    try:
        style = manifest.ballot_style(ballot.style_index)
    except InputError:
        raise BallotError(f"{who}: unknown ballot style index {ballot.style_index}") from None
    expected = sorted(style.contests)
    if [c.contest_index for c in ballot.contests] != expected:
        raise BallotError(f"{who}: contests {[c.contest_index for c in ballot.contests]} "
                          f"do not match ballot style {style.label!r} ({expected})")
    items = []
    for ec in ballot.contests:
        contest = manifest.contest(ec.contest_index)
        if [s.option_index for s in ec.selections] != [o.index for o in contest.options]:
            raise BallotError(f"{who}: contest {contest.index} ({contest.label!r}) has the wrong options")
        for s in ec.selections:
            where = f"{who} contest {contest.index} option {s.option_index}"
            items += [(s.ciphertext.alpha, f"{where} alpha"), (s.ciphertext.beta, f"{where} beta")]
    check_elements(group, items)                                           # (6.A), (7.A)
    hashes = []
    for ec in ballot.contests:
        contest = manifest.contest(ec.contest_index)
        for s, option in zip(ec.selections, contest.options):
            verify_range(group, ctx.g_table, ctx.k_table, h_i, selection_prefix(contest.index, option.index),
                         s.ciphertext, s.proof, option.selection_limit,
                         f"{who} contest {contest.index} option {option.index} (Verification 6)")
        total = aggregate(group, (s.ciphertext for s in ec.selections))   # (7.1), (7.2)
        verify_range(group, ctx.g_table, ctx.k_table, h_i, contest_prefix(contest.index), total, ec.proof,
                     contest.selection_limit, f"{who} contest {contest.index} selection limit (Verification 7)")
        chi = contest_hash(ctx, h_i, contest.index, [s.ciphertext for s in ec.selections])
        if chi != ec.contest_hash:                                         # (8.A)
            raise BallotError(f"{who}: contest hash of contest {contest.index} is wrong (Verification 8.A)")
        hashes.append(chi)
    if confirmation_code(h_i, hashes, ballot.chaining_field) != ballot.confirmation_code:  # (8.B)
        raise BallotError(f"{who}: confirmation code is wrong (Verification 8.B)")
    mode = ballot.chaining_field[:4]
    if mode == NO_CHAINING:
        if ballot.chaining_field != unchained_field(ctx.h_e, ballot.device):  # (8.C), (8.D)
            raise BallotError(f"{who}: chaining field does not match device {ballot.device!r} (Verification 8.D)")
    elif mode != SIMPLE_CHAINING:
        raise BallotError(f"{who}: unknown chaining mode {mode.hex()}")
    verify_encrypted_nonce(ctx, h_i, ballot.encrypted_nonce, f"{who} ballot nonce")


def verify_chain(ctx: ElectionContext, device: str, ballots: list[EncryptedBallot]) -> bytes:
    """Verification 8.E-8.G for the ballots of one device in order; returns the closing hash."""
    chain = BallotChain(ctx.h_e, device)
    for ballot in ballots:
        if ballot.device != device:
            raise BallotError(f"ballot {ballot.ballot_id!r} is from device {ballot.device!r}, not {device!r}")
        if ballot.chaining_field != chain.next_field():                   # (8.E), (8.F)
            raise BallotError(f"ballot {ballot.ballot_id!r}: chaining field does not follow the previous "
                              f"ballot on device {device!r} (Verification 8.E)")
        chain.advance(ballot.confirmation_code)
    return chain.closing_hash()                                            # (8.G)


def nonce_for_selection(ctx: ElectionContext, ballot: EncryptedBallot, ballot_nonce: int,
                        contest_index: int, option_index: int) -> mpz:
    """The encryption nonce of one selection, from a decrypted ballot nonce (spec 3.6.7)."""
    return selection_nonce(ctx, identifier_hash(ctx.h_e, ballot.selection_identifier),
                           contest_index, option_index, ballot_nonce)


# --- the seed 003 signature of an encrypted ballot -----------------------------------------------

SIGNATURE_CONTENT_VERSION = 1


def signature_content(ctx: ElectionContext, ballot: EncryptedBallot, issue_date: str):
    """The Borsh "core ballot content" that seed 003 signs, for an encrypted ballot.

    contests are the contest hashes chi_l (each binds every ciphertext of its
    contest), config is the confirmation code (binds the contest hashes and the
    chaining field), ballot_style_hash is SHA-256 of the style's canonical JSON.
    The election id is H_E in hex: it binds the parameters, manifest and keys.
    """
    import hashlib

    from node.crypto.ballot_signature import BallotContent
    from node.crypto.manifest import canonical_json

    style = ctx.manifest.ballot_style(ballot.style_index)
    return BallotContent(
        version=SIGNATURE_CONTENT_VERSION,
        issue_date=issue_date,
        contests=tuple(c.contest_hash.hex().upper() for c in ballot.contests),
        config=ballot.confirmation_code.hex().upper(),
        ballot_style_hash=hashlib.sha256(canonical_json(style.to_json_dict())).hexdigest().upper(),
    )


def election_id(ctx: ElectionContext) -> str:
    """The election id of seed 003 payloads: H_E in uppercase hex."""
    return ctx.h_e.hex().upper()
