"""Verifiable threshold decryption (spec 3.6), in the standard and the compensated form.

Both forms compute M = A^s for the joint secret s without anyone learning s.
The present guardians U each contribute one or more *parts*: a value Y = A^x for
a secret x whose public counterpart X = g^x anyone can compute from the key
ceremony's commitments, with a weight omega so that sum(omega * x) = s.

  standard (3.6.3-3.6.4): guardian i's part is x = z_i = P(i), omega = w_i (eq 85).
  compensated (seed 002 "Missing Guardians"): guardian i's own part is x = s_i,
      omega = 1, and for each missing guardian j a part x = P_j(i), omega = w_i.

The joint proof of 3.6.5 then runs unchanged over the parts: each part commits
(a, b) = (g^u, A^u) (eq 87), the challenge c is hashed over the products (eqs 89-90),
each part answers its challenge c * omega (eqs 91-92), and the responses add up
(eq 93). The record holds (T, c, v) and Verification 10 checks it the same way
for both forms. Each part can also be checked alone (eqs 94-95), which is how
the combiner names a guardian whose share is wrong.

The challenge and commitment hashes differ between tallies (eqs 88, 90) and
ballot nonces, so callers pass a Statement that knows its own hashes.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Mapping, Sequence

import gmpy2
from gmpy2 import mpz

from node.crypto.dlog import discrete_log
from node.crypto.encoding import small
from node.crypto.errors import DecryptionError, InputError, ProofError
from node.crypto.fixed_base import FixedBase, multi_exp
from node.crypto.group import check_element, check_elements, check_scalar
from node.crypto.hashing import H, H_q, elements
from node.crypto.keys import commitment_at, lagrange_coefficient
from node.crypto.params import Group


# --- keys -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ThresholdKey:
    """Guardian i's secrets for one joint key (the vote key K or the data key K-hat)."""

    index: int
    own_secret: mpz                  # s_i = a_i,0: needed only for the compensated form
    received: Mapping[int, mpz]      # P_j(i) for every guardian j, its own P_i(i) included

    @property
    def share(self) -> mpz:
        """z_i = sum_j P_j(i) mod q (eqs 24, 83). The caller reduces mod q."""
        return sum(self.received.values(), mpz(0))

    def __repr__(self) -> str:
        return f"ThresholdKey(index={self.index}, <secret>)"


@dataclass(frozen=True)
class Part:
    """One contribution to M: guardian `guardian` covering itself (missing=None) or guardian `missing`."""

    guardian: int
    missing: int | None
    weight: mpz


def plan_parts(group: Group, n: int, present: Sequence[int], compensated: bool) -> list[Part]:
    """Which parts the present guardians contribute, and with which weights."""
    present = sorted(present)
    if len(set(present)) != len(present) or any(not 1 <= i <= n for i in present):
        raise InputError(f"present guardians {present} are not distinct indices in 1..{n}")
    parts = []
    if not compensated:
        for i in present:
            parts.append(Part(i, None, lagrange_coefficient(group, i, present)))  # eq 85
        return parts
    missing = [j for j in range(1, n + 1) if j not in present]
    for i in present:
        parts.append(Part(i, None, mpz(1)))
        w_i = lagrange_coefficient(group, i, present)
        parts += [Part(i, j, w_i) for j in missing]
    return parts


def part_secret(group: Group, key: ThresholdKey, part: Part, compensated: bool) -> mpz:
    if part.guardian != key.index:
        raise InputError(f"part of guardian {part.guardian} asked of guardian {key.index}")
    if part.missing is not None:
        return key.received[part.missing] % group.q          # P_j(i)
    return key.own_secret if compensated else key.share % group.q


class PublicShares:
    """X = g^x for every part, from the ceremony's commitments alone (eqs 14, 94); cached."""

    def __init__(self, group: Group, commitments: Mapping[int, Sequence[int]]) -> None:
        self.group = group
        self.commitments = commitments
        self._cache: dict[tuple, mpz] = {}

    def public(self, part: Part, compensated: bool) -> mpz:
        key = (part.guardian, part.missing, compensated)
        x = self._cache.get(key)
        if x is None:
            i = part.guardian
            if part.missing is not None:
                x = commitment_at(self.group, self.commitments[part.missing], i)      # g^P_j(i)
            elif compensated:
                x = mpz(self.commitments[i][0])                                     # K_i = g^s_i
            else:
                bases = [c for j in sorted(self.commitments) for c in self.commitments[j]]
                exps = [pow(i, m, int(self.group.q)) for j in sorted(self.commitments)
                        for m in range(len(self.commitments[j]))]
                x = multi_exp(self.group, bases, exps)                              # g^z_i (eq 94)
            self._cache[key] = x
        return x


# --- statements: what is being decrypted and its hashes --------------------------------------------

@dataclass(frozen=True)
class TallyStatement:
    """Decryption of an aggregate (A, B) for option ind_o of contest ind_c (3.6.5), with hashes on H_E."""

    h_e: bytes
    contest_index: int
    option_index: int
    a: mpz    # A
    b: mpz    # B

    @property
    def base(self) -> mpz:
        return self.a

    def commitment_hash(self, group: Group, guardian: int, a_i, b_i, m_i, present: Sequence[int]) -> bytes:
        # d_i = H(H_E; 0x30, ind_c, ind_o, i, A, B, a_i, b_i, M_i, U) (eq 88), U as #U then its indices
        u = small(len(present)) + b"".join(small(j) for j in sorted(present))
        head = b"\x30" + small(self.contest_index) + small(self.option_index) + small(guardian)
        return H(self.h_e, head + elements(group, (self.a, self.b, a_i, b_i, m_i)) + u)

    def challenge(self, group: Group, a, b, m) -> mpz:
        # c = H_q(H_E; 0x31, ind_c, ind_o, A, B, a, b, M) (eq 90)
        head = b"\x31" + small(self.contest_index) + small(self.option_index)
        return H_q(group, self.h_e, head + elements(group, (self.a, self.b, a, b, m)))


@dataclass(frozen=True)
class NonceStatement:
    """Decryption of a ballot nonce C_xiB under K-hat (3.6.7).

    The nonce ciphertext has the form of contest data (3.3.10), so the proof of
    3.6.6 applies with contest index 0, which no contest has (indices start at 1).
    Eq 99 keys its commitment hash with H_I (the table in 5.5.4 says H_E); we
    follow the equation, as eq 101 does.
    """

    h_i: bytes
    c0: mpz
    c1: bytes
    c2: bytes    # b(c_B, 32) || b(v_B, 32)

    @property
    def base(self) -> mpz:
        return self.c0

    def _ciphertext(self, group: Group) -> bytes:
        return small(0) + elements(group, (self.c0,)) + self.c1 + self.c2

    def commitment_hash(self, group: Group, guardian: int, a_i, b_i, m_i, present: Sequence[int]) -> bytes:
        # d_i = H(H_I; 0x32, ind_c, i, C0, C1, C2, a_i, b_i, m_i, U) (eq 99)
        u = small(len(present)) + b"".join(small(j) for j in sorted(present))
        data = b"\x32" + small(0) + small(guardian) + elements(group, (self.c0,)) + self.c1 + self.c2
        return H(self.h_i, data + elements(group, (a_i, b_i, m_i)) + u)

    def challenge(self, group: Group, a, b, m) -> mpz:
        # c = H_q(H_I; 0x33, ind_c, C0, C1, C2, a, b, beta) (eq 101)
        return H_q(group, self.h_i, b"\x33" + self._ciphertext(group) + elements(group, (a, b, m)))


# --- the guardian's side ------------------------------------------------------------------------

@dataclass(frozen=True)
class PartShare:
    """What a guardian publishes for one part: Y = base^x and its commitment (a, b) = (g^u, base^u) (eq 87)."""

    part: Part
    value: mpz
    commitment_a: mpz
    commitment_b: mpz


@dataclass(frozen=True)
class PartNonce:
    """The guardian's secret u for one part: kept until it answers, never published, never reused."""

    part: Part
    u: mpz

    def __repr__(self) -> str:
        return f"PartNonce({self.part}, <secret>)"


def compute_shares(group: Group, g_table: FixedBase, key: ThresholdKey, base: int, parts: Sequence[Part],
                   compensated: bool, rng=None) -> tuple[list[PartShare], list[PartNonce]]:
    """Guardian side, round 1: M_i = base^x (eq 84) and the commitment (eq 87) for each of its parts."""
    rng = rng or secrets.SystemRandom()
    shares, nonces = [], []
    for part in parts:
        if part.guardian != key.index:
            continue
        x = part_secret(group, key, part, compensated)
        u = mpz(rng.randrange(int(group.q)))
        value = gmpy2.powmod(base, x, group.p)
        shares.append(PartShare(part, value, g_table.pow(u), gmpy2.powmod(base, u, group.p)))
        nonces.append(PartNonce(part, u))
    return shares, nonces


def respond(group: Group, key: ThresholdKey, nonces: Sequence[PartNonce], challenge: int,
            compensated: bool) -> list[mpz]:
    """Guardian side, round 2: v = u - (c * omega) * x mod q for each part (eqs 91, 92)."""
    return [(n.u - challenge * n.part.weight * part_secret(group, key, n.part, compensated)) % group.q
            for n in nonces]


# --- the combiner's side ------------------------------------------------------------------------

@dataclass(frozen=True)
class JointDecryption:
    """M = base^s with the joint proof (c, v) of 3.6.5 / 3.6.6."""

    m: mpz
    challenge: mpz
    response: mpz


def combine_values(group: Group, shares: Sequence[PartShare]) -> mpz:
    """M = prod Y^omega mod p (eq 86, and its compensated form)."""
    return multi_exp(group, [s.value for s in shares], [int(s.part.weight) for s in shares])


def joint_challenge(group: Group, statement, shares: Sequence[PartShare]) -> tuple[mpz, mpz]:
    """(M, c): the combined value and the challenge over a = prod a_i, b = prod b_i (eqs 89, 90)."""
    p = group.p
    a, b = mpz(1), mpz(1)
    for s in shares:
        a = a * s.commitment_a % p
        b = b * s.commitment_b % p
    m = combine_values(group, shares)
    return m, statement.challenge(group, a, b, m)


def check_part(group: Group, g_table: FixedBase, public: mpz, base: int, share: PartShare,
               challenge: int, response: int) -> bool:
    """Eqs 94-95 for one part: g^v X^(c omega) == a and base^v Y^(c omega) == b."""
    c_part = challenge * share.part.weight % group.q
    p = group.p
    a_ok = g_table.pow(response) * gmpy2.powmod(public, c_part, p) % p == share.commitment_a
    b_ok = gmpy2.powmod(base, response, p) * gmpy2.powmod(share.value, c_part, p) % p == share.commitment_b
    return a_ok and b_ok


def check_share_values(group: Group, shares: Sequence[PartShare], who: str) -> None:
    """Every received Y, a, b must be in Z_p^r before it is used (one batched check)."""
    items = []
    for s in shares:
        tag = f"{who} (guardian {s.part.guardian}" + (f" for missing {s.part.missing})" if s.part.missing else ")")
        items += [(s.value, f"{tag} share"), (s.commitment_a, f"{tag} commitment a"),
                  (s.commitment_b, f"{tag} commitment b")]
    check_elements(group, items)


def combine_responses(group: Group, responses: Sequence[int]) -> mpz:
    """v = sum v_i mod q (eq 93)."""
    return sum((mpz(v) for v in responses), mpz(0)) % group.q


def commitment_digest(group: Group, statement, share: PartShare, present: Sequence[int]) -> bytes:
    """d_i over the part's commitment pair and value (eq 88; eq 99 for a ballot nonce)."""
    return statement.commitment_hash(group, share.part.guardian, share.commitment_a, share.commitment_b,
                                     share.value, present)


def check_joint(group: Group, g_table: FixedBase, joint_table: FixedBase, statement, m: int, challenge: int,
                response: int, shares: Sequence[PartShare]) -> bool:
    """The accumulated proof against the joint key: g^v K^c = a and base^v M^c = b (eqs 89, 93)."""
    p = group.p
    a = b = mpz(1)
    for s in shares:
        a, b = a * s.commitment_a % p, b * s.commitment_b % p
    return (g_table.pow(response) * joint_table.pow(challenge) % p == a and
            gmpy2.powmod(statement.base, response, p) * gmpy2.powmod(m, challenge, p) % p == b)


def check_joints_batched(group: Group, g_table: FixedBase, entries: Sequence[tuple], rng=None) -> bool:
    """check_joint for many statements at once, by random linear combination.

    entries: (statement, joint_table, M, c, v, a, b) with a, b the products of the parts'
    commitments. With independent random 128-bit weights r_s, t_s, the equations
    g^v_s K^c_s = a_s and base_s^v_s M_s^c_s = b_s all hold exactly when (up to 2^-127)
        g^(sum r v) prod K^(sum r c) prod a_s^(q - r_s) = 1   and
        prod base_s^(t v) M_s^(t c) b_s^(q - t_s) = 1,
    because every value is in the order-q subgroup (checked on receipt), so x^(q - r) = x^-r.
    One multi-exponentiation replaces two variable-base exponentiations per statement.
    """
    rng = rng or secrets.SystemRandom()
    q, p = group.q, group.p
    bound = min(1 << 128, int(q))        # toy groups have a smaller q
    g_exp = mpz(0)
    key_exps: dict[int, tuple[FixedBase, mpz]] = {}
    a_bases, a_exps, b_bases, b_exps = [], [], [], []
    for statement, table, m, c, v, a, b in entries:
        r, t = mpz(rng.randrange(1, bound)), mpz(rng.randrange(1, bound))
        g_exp = (g_exp + r * v) % q
        held = key_exps.get(id(table), (table, mpz(0)))
        key_exps[id(table)] = (table, (held[1] + r * c) % q)
        a_bases.append(a)
        a_exps.append(q - r)
        b_bases += [statement.base, m, b]
        b_exps += [t * v % q, t * c % q, q - t]
    left = g_table.pow(g_exp) * multi_exp(group, a_bases, a_exps) % p
    for table, e in key_exps.values():
        left = left * table.pow(e) % p
    return left == 1 and multi_exp(group, b_bases, b_exps) == 1


def wrong_parts(group: Group, g_table: FixedBase, publics: PublicShares, statement, shares: Sequence[PartShare],
                responses: Sequence[int], challenge: int, compensated: bool) -> list[Part]:
    """The parts whose own proof fails (eqs 94-95): who to blame when the accumulated proof does not hold."""
    return [s.part for s, v in zip(shares, responses)
            if not check_part(group, g_table, publics.public(s.part, compensated), statement.base, s, challenge, v)]


def describe_part(part: Part) -> str:
    return f"guardian {part.guardian}" + (f" (for missing guardian {part.missing})" if part.missing else "")


# --- the verifier's side ------------------------------------------------------------------------

def verify_tally_decryption(group: Group, g_table: FixedBase, k_table: FixedBase, statement: TallyStatement,
                            value: int, t_power: int, proof_c: int, proof_v: int, what: str) -> None:
    """Verification 10 for one option: T = K^t and the proof (c, v) of M = B / T. Raises ProofError."""
    p = group.p
    c = check_scalar(group, proof_c, f"{what} challenge")
    v = check_scalar(group, proof_v, f"{what} response")                   # (10.A)
    t_power = check_element(group, t_power, f"{what} T")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{what}: the tally value must be a non-negative integer")
    if k_table.pow(value) != t_power:                                       # (10.C)
        raise ProofError(f"{what}: T is not K^t for the stated tally {value} (Verification 10.C)")
    m = statement.b * gmpy2.invert(t_power, p) % p                          # (10.1) M = B T^-1
    a = g_table.pow(v) * k_table.pow(c) % p                                 # (10.2) a = g^v K^c
    b = gmpy2.powmod(statement.a, v, p) * gmpy2.powmod(m, c, p) % p         # (10.3) b = A^v M^c
    if statement.challenge(group, a, b, m) != c:                            # (10.B)
        raise ProofError(f"{what}: the decryption proof does not verify (Verification 10.B)")


def verify_nonce_decryption(group: Group, g_table: FixedBase, k_hat_table: FixedBase,
                            statement: NonceStatement, beta: int, proof_c: int, proof_v: int, what: str) -> None:
    """The analogue of Verification 12 for a ballot nonce: the proof that beta = C0^s-hat."""
    p = group.p
    c = check_scalar(group, proof_c, f"{what} challenge")
    v = check_scalar(group, proof_v, f"{what} response")
    beta = check_element(group, beta, f"{what} beta")
    a = g_table.pow(v) * k_hat_table.pow(c) % p                             # (12.1)
    b = gmpy2.powmod(statement.c0, v, p) * gmpy2.powmod(beta, c, p) % p     # (12.2)
    if statement.challenge(group, a, b, beta) != c:                         # (12.B)
        raise ProofError(f"{what}: the ballot nonce decryption proof does not verify")


def tally_from_power(group: Group, joint_key: int, t_power: int, bound: int) -> int:
    """t from T = K^t (spec 3.6.2), by baby-step giant-step up to `bound`."""
    return discrete_log(group, mpz(joint_key), bound).solve(t_power)


def t_power_from_m(group: Group, b_value: int, m: int) -> mpz:
    """T = B * M^-1 mod p (eq 82)."""
    return mpz(b_value) * gmpy2.invert(m, group.p) % group.p


class DecryptionSession:
    """Runs the two rounds of 3.6.5 for one statement among in-process guardians.

    The accumulated proof is checked against the joint key (g^v K^c = a and
    base^v M^c = b); only when it fails are the parts checked one by one
    (eqs 94-95, spec Note 3.7) to name the guardian at fault. The node protocol
    does the same exchange over the network; this class is the reference its
    messages follow, and the demo's engine.
    """

    def __init__(self, group: Group, g_table: FixedBase, joint_table: FixedBase, publics: PublicShares,
                 statement, parts: Sequence[Part], compensated: bool) -> None:
        self.group, self.g_table, self.joint_table, self.publics = group, g_table, joint_table, publics
        self.statement, self.parts, self.compensated = statement, list(parts), compensated

    def run(self, keys: Mapping[int, ThresholdKey], rng=None) -> tuple[JointDecryption, list[PartShare]]:
        group, base = self.group, self.statement.base
        shares: list[PartShare] = []
        nonces: dict[int, list[PartNonce]] = {}
        for i, key in keys.items():
            s, n = compute_shares(group, self.g_table, key, base, self.parts, self.compensated, rng)
            shares += s
            nonces[i] = n
        if sorted((s.part.guardian, s.part.missing or 0) for s in shares) != \
                sorted((pt.guardian, pt.missing or 0) for pt in self.parts):
            raise DecryptionError("the present guardians' shares do not cover the decryption plan")
        check_share_values(group, shares, "decryption share")
        m, c = joint_challenge(group, self.statement, shares)
        responses = {i: respond(group, key, nonces[i], c, self.compensated) for i, key in keys.items()}
        v = combine_responses(group, [r for rs in responses.values() for r in rs])
        if check_joint(group, self.g_table, self.joint_table, self.statement, m, c, v, shares):
            return JointDecryption(m, c, v), shares
        ordered = [s for i in keys for s in shares if s.part.guardian == i]
        flat = [r for i in keys for r in responses[i]]
        wrong = wrong_parts(group, self.g_table, self.publics, self.statement, ordered, flat, c, self.compensated)
        if wrong:
            raise DecryptionError(f"{describe_part(wrong[0])} sent a wrong decryption share")
        raise DecryptionError("the joint decryption proof fails but every part checks: inconsistent keys")
