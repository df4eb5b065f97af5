"""Disjunctive Chaum-Pedersen range proofs: (alpha, beta) encrypts some l in 0..R (spec 3.3.7, 3.3.8).

The same proof serves a selection (option limit R, hash prefix with contest and
option index, eq 59) and a contest total (contest limit L, prefix with the
contest index only, eq 62). The caller passes that prefix, so this module
knows nothing of ballots.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gmpy2 import mpz

from node.crypto.elgamal import Ciphertext
from node.crypto.encoding import small
from node.crypto.errors import InputError, ProofError
from node.crypto.fixed_base import FixedBase
from node.crypto.group import check_scalar
from node.crypto.hashing import H_q, elements
from node.crypto.params import Group

# A proof has R + 1 commitment pairs; beyond this a ballot would be impractically large.
MAX_RANGE = 1000


@dataclass(frozen=True)
class RangeProof:
    """Challenges c_0..c_R and responses v_0..v_R (spec 3.3.7, the proof's published form)."""

    challenges: tuple[mpz, ...]
    responses: tuple[mpz, ...]


def selection_prefix(contest_index: int, option_index: int) -> bytes:
    """0x24 || b(ind_c, 4) || b(ind_o, 4): the head of B1 in eq 59."""
    return b"\x24" + small(contest_index) + small(option_index)


def contest_prefix(contest_index: int) -> bytes:
    """0x24 || b(ind_c, 4): the head of B1 in eq 62."""
    return b"\x24" + small(contest_index)


def _challenge(group: Group, h_i: bytes, prefix: bytes, ct: Ciphertext, commitments: list[mpz]) -> mpz:
    # c = H_q(H_I; prefix, alpha, beta, a_0, b_0, ..., a_R, b_R) (eqs 59, 62)
    return H_q(group, h_i, prefix + elements(group, (ct.alpha, ct.beta)) + elements(group, commitments))


def prove_range(
    group: Group, g_table: FixedBase, k_table: FixedBase, h_i: bytes, prefix: bytes,
    ct: Ciphertext, nonce: int, value: int, limit: int, rng=None,
) -> RangeProof:
    """Prove ct = Enc(value, nonce) with 0 <= value <= limit (eqs 57-61)."""
    if not 0 <= value <= limit:
        raise InputError(f"value {value} outside the range 0..{limit}")
    if limit > MAX_RANGE:
        raise InputError(f"range limit {limit} exceeds the supported maximum {MAX_RANGE}")
    rng = rng or secrets.SystemRandom()
    q = group.q
    us = [mpz(rng.randrange(int(q))) for _ in range(limit + 1)]
    cs: list[mpz | None] = [None] * (limit + 1)
    commitments: list[mpz] = []
    for j in range(limit + 1):
        if j == value:
            t = us[j]                                           # (a_l, b_l) = (g^u_l, K^u_l) (eq 57)
        else:
            cs[j] = mpz(rng.randrange(int(q)))
            t = (us[j] + (value - j) * cs[j]) % q               # t_j = u_j + (l - j) c_j (eq 58)
        commitments += [g_table.pow(us[j]), k_table.pow(t)]
    c = _challenge(group, h_i, prefix, ct, commitments)
    cs[value] = (c - sum(x for x in cs if x is not None)) % q   # eq 60
    responses = tuple((u - cj * nonce) % q for u, cj in zip(us, cs))  # v_j = u_j - c_j xi (eq 61)
    return RangeProof(tuple(cs), responses)


def verify_range(
    group: Group, g_table: FixedBase, k_table: FixedBase, h_i: bytes, prefix: bytes,
    ct: Ciphertext, proof: RangeProof, limit: int, what: str,
) -> None:
    """Verification 6 (selections) / 7 (contest totals); ct must already be known to be in Z_p^r.

    Raises ProofError naming `what`.
    """
    if len(proof.challenges) != limit + 1 or len(proof.responses) != limit + 1:
        raise ProofError(f"{what}: expected {limit + 1} challenges and responses")
    q, p = group.q, group.p
    commitments: list[mpz] = []
    total = mpz(0)
    for j, (c_j, v_j) in enumerate(zip(proof.challenges, proof.responses)):
        c_j = check_scalar(group, c_j, f"{what} challenge {j}")     # (6.B)
        v_j = check_scalar(group, v_j, f"{what} response {j}")      # (6.C)
        w_j = (v_j - j * c_j) % q
        a_j = g_table.pow(v_j) * pow(ct.alpha, c_j, p) % p           # (6.1) a_j = g^v_j alpha^c_j
        b_j = k_table.pow(w_j) * pow(ct.beta, c_j, p) % p            # (6.2) b_j = K^w_j beta^c_j
        commitments += [a_j, b_j]
        total += c_j
    if _challenge(group, h_i, prefix, ct, commitments) != total % q:  # (6.3), (6.D)
        raise ProofError(f"{what}: range proof 0..{limit} does not verify")
