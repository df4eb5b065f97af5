"""Guardian key generation (spec 3.2): polynomials, commitments, key proofs, shares.

Guardian G_i samples two polynomials P_i and P-hat_i of degree k-1 and a
communication key zeta_i. It publishes commitments to every coefficient and a
compact Schnorr proof for each polynomial (eqs 10-13), and sends every other
guardian G_l its shares P_i(l), P-hat_i(l) encrypted to kappa_l (eqs 15-22).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Sequence

from gmpy2 import mpz

from node.crypto.encoding import small
from node.crypto.errors import InputError, ProofError, ShareError
from node.crypto.fixed_base import FixedBase, multi_exp
from node.crypto.group import check_element, check_elements, check_scalar
from node.crypto.hashing import H, H_q, elements, kdf_counter_mode, xor_bytes
from node.crypto.params import Group, encode_p, encode_q

_VOTE = b"pk_vote"   # 0x706B5F766F7465 in the table of spec 5.5.2
_DATA = b"pk_data"   # 0x706B5F64617461


@dataclass(frozen=True)
class KeyProof:
    """The compact Schnorr proof (c, v_0, ..., v_k) of eq 11 / eq 13."""

    challenge: mpz
    responses: tuple[mpz, ...]


@dataclass(frozen=True)
class GuardianPublicKey:
    """What guardian G_i publishes in the key ceremony (spec 3.2.2, 3.7)."""

    index: int
    name: str
    commitments: tuple[mpz, ...]        # K_i,j = g^a_i,j (eq 8)
    data_commitments: tuple[mpz, ...]   # K-hat_i,j
    communication_key: mpz              # kappa_i = g^zeta_i (eq 9)
    proof: KeyProof                     # eq 11
    data_proof: KeyProof                # eq 13

    @property
    def key(self) -> mpz:
        """K_i = K_i,0."""
        return self.commitments[0]

    @property
    def data_key(self) -> mpz:
        return self.data_commitments[0]


@dataclass(frozen=True)
class GuardianSecretKey:
    """G_i's secrets. Never logged, never sent in the clear."""

    index: int
    coefficients: tuple[mpz, ...]       # a_i,j, 0 <= j < k (eq 7)
    data_coefficients: tuple[mpz, ...]  # a-hat_i,j
    communication_secret: mpz           # zeta_i

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"GuardianSecretKey(index={self.index}, <secret>)"


def _random_scalar(group: Group, rng) -> mpz:
    return mpz(rng.randrange(int(group.q)))


def evaluate_polynomial(group: Group, coefficients: Sequence[int], x: int) -> mpz:
    """P(x) = sum a_j x^j mod q (eq 7), by Horner's rule."""
    result = mpz(0)
    for a in reversed(coefficients):
        result = (result * x + a) % group.q
    return result


def _key_proof_challenge(group, h_p, label, i, commitments, kappa, h_values) -> mpz:
    # c_i = H_q(H_P; 0x10, "pk_vote", i, K_i,0..K_i,k-1, kappa_i, h_i,0..h_i,k) (eq 11, eq 13 with "pk_data")
    data = b"\x10" + label + small(i) + elements(group, commitments) + encode_p(group, kappa)
    return H_q(group, h_p, data + elements(group, h_values))


def _prove_polynomial(group, g_table, h_p, label, i, coefficients, commitments, zeta, kappa, rng) -> KeyProof:
    secrets_ = list(coefficients) + [zeta]
    us = [_random_scalar(group, rng) for _ in secrets_]
    h_values = [g_table.pow(u) for u in us]  # h_i,j = g^u_i,j (eq 10, eq 12)
    c = _key_proof_challenge(group, h_p, label, i, commitments, kappa, h_values)
    responses = tuple((u - c * s) % group.q for u, s in zip(us, secrets_))  # v_i,j = u_i,j - c_i a_i,j
    return KeyProof(c, responses)


def generate_guardian_key(
    group: Group, g_table: FixedBase, h_p: bytes, index: int, k: int, name: str = "", rng=None
) -> tuple[GuardianSecretKey, GuardianPublicKey]:
    """A new guardian G_index for quorum k: secret coefficients and the public key with proofs."""
    if not 1 <= index < 2**31 or not 1 <= k < 2**31:
        raise InputError("guardian index and k must be in 1..2^31-1")
    rng = rng or secrets.SystemRandom()
    coefficients = tuple(_random_scalar(group, rng) for _ in range(k))
    data_coefficients = tuple(_random_scalar(group, rng) for _ in range(k))
    zeta = _random_scalar(group, rng)
    commitments = tuple(g_table.pow(a) for a in coefficients)           # eq 8
    data_commitments = tuple(g_table.pow(a) for a in data_coefficients)
    kappa = g_table.pow(zeta)                                             # eq 9
    proof = _prove_polynomial(group, g_table, h_p, _VOTE, index, coefficients, commitments, zeta, kappa, rng)
    data_proof = _prove_polynomial(
        group, g_table, h_p, _DATA, index, data_coefficients, data_commitments, zeta, kappa, rng
    )
    secret = GuardianSecretKey(index, coefficients, data_coefficients, zeta)
    public = GuardianPublicKey(
        index, name or f"Guardian {index}", commitments, data_commitments, kappa, proof, data_proof
    )
    return secret, public


def _verify_polynomial_proof(group, g_table, h_p, label, i, commitments, kappa, proof: KeyProof, what) -> None:
    c = check_scalar(group, proof.challenge, f"{what} challenge")
    if len(proof.responses) != len(commitments) + 1:
        raise ProofError(f"{what}: expected {len(commitments) + 1} responses")
    vs = [check_scalar(group, v, f"{what} response {j}") for j, v in enumerate(proof.responses)]
    bases = list(commitments) + [kappa]
    # h_i,j = g^v_i,j * K_i,j^c_i and h_i,k = g^v_i,k * kappa_i^c_i (Verification 2.1, 2.2)
    h_values = [g_table.pow(v) * multi_exp(group, [base], [c]) % group.p for v, base in zip(vs, bases)]
    if _key_proof_challenge(group, h_p, label, i, commitments, kappa, h_values) != c:  # (2.C)
        raise ProofError(f"{what}: the Schnorr proof does not verify (Verification 2.C)")


def verify_guardian_public_key(
    group: Group, g_table: FixedBase, h_p: bytes, public: GuardianPublicKey, k: int
) -> None:
    """Verification 2 for one guardian; raises ProofError or GroupMembershipError naming the guardian."""
    who = f"guardian {public.index} ({public.name})"
    if len(public.commitments) != k or len(public.data_commitments) != k:
        raise ProofError(f"{who}: expected {k} commitments of each kind")
    # (2.A) every K_i,j, K-hat_i,j and kappa_i is in Z_p^r
    items = [(x, f"{who} K_{public.index},{j}") for j, x in enumerate(public.commitments)]
    items += [(x, f"{who} K-hat_{public.index},{j}") for j, x in enumerate(public.data_commitments)]
    items.append((public.communication_key, f"{who} kappa"))
    check_elements(group, items)
    _verify_polynomial_proof(group, g_table, h_p, _VOTE, public.index, public.commitments,
                             public.communication_key, public.proof, f"{who} vote key proof")
    _verify_polynomial_proof(group, g_table, h_p, _DATA, public.index, public.data_commitments,
                             public.communication_key, public.data_proof, f"{who} data key proof")


def commitment_at(group: Group, commitments: Sequence[int], x: int) -> mpz:
    """g^P_i(x) = prod_j K_i,j^(x^j) mod p, from public commitments alone (eq 14)."""
    exps = [pow(x, j, int(group.q)) for j in range(len(commitments))]
    return multi_exp(group, commitments, exps)


def verify_share(group: Group, g_table: FixedBase, commitments: Sequence[int], x: int, share: int) -> bool:
    """g^P_i(l) == prod_j K_i,j^(l^j) (eq 28, eq 29 with the hatted values)."""
    return g_table.pow(share) == commitment_at(group, commitments, x)


def joint_key(group: Group, keys: Sequence[int]) -> mpz:
    """K = prod K_i mod p (eq 25); K-hat likewise (eq 26)."""
    result = mpz(1)
    for key in keys:
        result = result * key % group.p
    return result


def lagrange_coefficient(group: Group, i: int, present: Sequence[int]) -> mpz:
    """w_i = prod_{l in U, l != i} l / (l - i) mod q (eq 85)."""
    if i not in present or len(set(present)) != len(present):
        raise InputError("Lagrange coefficient: i must be in U and U must have no duplicates")
    q = group.q
    num, den = mpz(1), mpz(1)
    for l in present:
        if l != i:
            num = num * l % q
            den = den * (l - i) % q
    return num * pow(int(den), -1, int(q)) % q


# --- share encryption (eqs 15-23) ------------------------------------------------------------

@dataclass(frozen=True)
class EncryptedShare:
    """E_l(P_i(l), P-hat_i(l)) = (C_i,l,0, C_i,l,1, C_i,l,2) (eq 19)."""

    sender: int
    recipient: int
    c0: mpz             # alpha_i,l = g^xi_i,l (eq 20)
    c1: bytes           # 64 bytes (eq 21)
    challenge: mpz      # c-bar_i,l (eq 22)
    response: mpz       # v-bar_i,l


_SHARE_LABEL = b"share_enc_keys"   # b("share_enc_keys", 14)
_SHARE_CONTEXT = b"share_encrypt"  # b("share_encrypt", 13)


def _share_keys(h_p: bytes, group: Group, i: int, l: int, kappa_l, alpha, beta) -> bytes:
    # k_i,l = H(H_P; 0x11, i, l, kappa_l, alpha_i,l, beta_i,l) (eq 16)
    k = H(h_p, b"\x11" + small(i) + small(l) + elements(group, (kappa_l, alpha, beta)))
    context = _SHARE_CONTEXT + small(i) + small(l)
    k1 = kdf_counter_mode(k, b"\x01", _SHARE_LABEL, context, b"\x02\x00")  # eq 17
    k2 = kdf_counter_mode(k, b"\x02", _SHARE_LABEL, context, b"\x02\x00")  # eq 18
    return k1 + k2


def _share_challenge(h_p, group, i, l, gamma, c0, c1) -> mpz:
    # c-bar_i,l = H_q(H_P; 0x12, i, l, gamma_i,l, C_i,l,0, C_i,l,1) (eq 22)
    return H_q(group, h_p, b"\x12" + small(i) + small(l) + elements(group, (gamma, c0)) + c1)


def encrypt_share(
    group: Group, g_table: FixedBase, h_p: bytes, sender: int, recipient: int,
    recipient_kappa: int, share: int, data_share: int, rng=None, nonce: int | None = None,
) -> EncryptedShare:
    """Encrypt P_i(l) and P-hat_i(l) to guardian l's communication key (eqs 15-22).

    `nonce` (xi_i,l) may be given by a sender that keeps it, to reveal the share in public if accused.
    """
    rng = rng or secrets.SystemRandom()
    xi = mpz(nonce) if nonce is not None else _random_scalar(group, rng)
    alpha = g_table.pow(xi)                                                  # eq 15
    beta = multi_exp(group, [recipient_kappa], [xi])
    keys = _share_keys(h_p, group, sender, recipient, recipient_kappa, alpha, beta)
    c1 = xor_bytes(encode_q(group, share) + encode_q(group, data_share), keys[: 2 * group.q_bytes])  # eq 21
    u = _random_scalar(group, rng)
    gamma = g_table.pow(u)
    c = _share_challenge(h_p, group, sender, recipient, gamma, alpha, c1)
    return EncryptedShare(sender, recipient, alpha, c1, c, (u - c * xi) % group.q)


def verify_share_encryption(group: Group, g_table: FixedBase, h_p: bytes, encrypted: EncryptedShare) -> mpz:
    """The public checks of an encrypted share: C0 in Z_p^r, C1's length, and the nonce proof of eq 22.

    Anyone can run them, not just the recipient. Returns C0; raises ShareError or GroupMembershipError
    naming sender and recipient.
    """
    who = f"share from guardian {encrypted.sender} to guardian {encrypted.recipient}"
    if not isinstance(encrypted.c1, bytes) or len(encrypted.c1) != 2 * group.q_bytes:
        raise ShareError(f"{who}: C1 must be {2 * group.q_bytes} bytes")
    c0 = check_element(group, encrypted.c0, f"{who} C0")
    c = check_scalar(group, encrypted.challenge, f"{who} challenge")
    v = check_scalar(group, encrypted.response, f"{who} response")
    gamma = g_table.pow(v) * multi_exp(group, [c0], [c]) % group.p  # gamma = g^v * C0^c
    if _share_challenge(h_p, group, encrypted.sender, encrypted.recipient, gamma, c0, encrypted.c1) != c:
        raise ShareError(f"{who}: the proof of the encryption nonce does not verify (eq 22)")
    return c0


def decrypt_share(
    group: Group, g_table: FixedBase, h_p: bytes, recipient_secret: GuardianSecretKey,
    recipient_kappa: int, encrypted: EncryptedShare,
) -> tuple[mpz, mpz]:
    """Check the nonce proof, then recover (P_i(l), P-hat_i(l)) (eq 23). ShareError names the sender."""
    who = f"share from guardian {encrypted.sender} to guardian {encrypted.recipient}"
    if encrypted.recipient != recipient_secret.index:
        raise ShareError(f"{who} is addressed to another guardian")
    c0 = verify_share_encryption(group, g_table, h_p, encrypted)
    beta = multi_exp(group, [c0], [recipient_secret.communication_secret])  # beta = alpha^zeta_l
    keys = _share_keys(h_p, group, encrypted.sender, encrypted.recipient, recipient_kappa, c0, beta)
    plain = xor_bytes(encrypted.c1, keys[: 2 * group.q_bytes])
    share = mpz(int.from_bytes(plain[: group.q_bytes], "big"))
    data_share = mpz(int.from_bytes(plain[group.q_bytes:], "big"))
    if share >= group.q or data_share >= group.q:
        raise ShareError(f"{who}: decrypted share is not in Z_q")
    return share, data_share


def check_revealed_share(group: Group, g_table: FixedBase, h_p: bytes, encrypted: EncryptedShare,
                         recipient_kappa: int, share: int, data_share: int, nonce: int) -> str | None:
    """A share revealed in public to answer a complaint: does it match the ciphertext and the commitments?

    Returns None when the reveal holds, else the reason it does not. The commitments are checked by the
    caller with verify_share; this checks that the nonce opens the published ciphertext to these values
    (eqs 15-21 recomputed in public).
    """
    if not (0 <= share < group.q and 0 <= data_share < group.q and 0 <= nonce < group.q):
        return "revealed values out of range"
    if g_table.pow(nonce) != encrypted.c0:
        return "the revealed nonce does not match C0"
    beta = multi_exp(group, [recipient_kappa], [nonce])
    keys = _share_keys(h_p, group, encrypted.sender, encrypted.recipient, recipient_kappa, encrypted.c0, beta)
    expected = xor_bytes(encode_q(group, share) + encode_q(group, data_share), keys[: 2 * group.q_bytes])
    if expected != encrypted.c1:
        return "the revealed share does not match the published ciphertext"
    return None
