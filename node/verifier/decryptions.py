"""Joint decryptions with the guardians' shares (spec 3.6.5): Verification 10 and its analogue for ballot nonces.

The equations of every decryption of one quorum are checked as one batch
(node.crypto.batch); only when the batch fails are they evaluated one by one,
to name the guardian at fault. The challenge hashes (10.B) are checked exactly,
over the published commitments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from gmpy2 import mpz

from node.crypto.batch import Batch, Equation, not_members
from node.crypto.decryption import Part, PublicShares, plan_parts
from node.crypto.election import ElectionContext
from node.crypto.errors import GuardianError
from node.crypto.group import check_scalar
from node.record import codec
from node.record.election import Findings


@dataclass
class Decryption:
    """One joint decryption to check: M = base^s with proof (c, v) and its parts."""

    what: str
    statement: object               # TallyStatement or NonceStatement: knows the challenge hash
    base: mpz                       # A, or C0
    joint_table: str                # "K" or "K-hat"
    m: mpz                          # M = B T^-1, or beta
    challenge: mpz
    response: mpz
    shares: Sequence[codec.ShareRecord]


def quorum_failures(quorum: codec.Quorum, n: int, k: int, who: str) -> list[str]:
    present, missing = list(quorum.present), list(quorum.missing)
    failures = []
    if present != sorted(set(present)) or missing != sorted(set(missing)):
        failures.append(f"{who}: guardians_present and guardians_missing must be sorted without repeats")
    if sorted(present + missing) != list(range(1, n + 1)):
        failures.append(f"{who}: present {present} and missing {missing} guardians are not exactly 1..{n}")
    if len(present) < k:
        failures.append(f"{who}: only {len(present)} guardians decrypted, the quorum is {k}")
    return failures


def check_decryptions(ctx: ElectionContext, publics: PublicShares, quorum: codec.Quorum,
                      decryptions: list[Decryption], elements: list[tuple[object, str]], found: Findings) -> set[str]:
    """Check joint decryptions by one quorum; return the `what` of those that failed (each failure reported)."""
    group, q, p = ctx.group, int(ctx.group.q), ctx.group.p
    failed: set[str] = set()
    try:
        parts = plan_parts(group, ctx.parameters.n, quorum.present, quorum.form == "compensated")
    except GuardianError as e:
        found.fail(f"the decryption quorum is invalid: {e}")
        return {d.what for d in decryptions}
    compensated = quorum.form == "compensated"
    weights = {(pt.guardian, pt.missing): pt.weight for pt in parts}
    for d in decryptions:
        for s in d.shares:
            tag = f"{d.what} {s.name}"
            elements += [(s.share, f"{tag} share"), (s.commitment_a, f"{tag} commitment_a"),
                         (s.commitment_b, f"{tag} commitment_b")]
    bad_elements: set[str] = set()
    for what, why in not_members(group, elements):                                      # (2.A)-style, batched
        found.fail(why)
        bad_elements.add(what)
    batch = Batch(group, {"g": ctx.g_table, "K": ctx.k_table, "K-hat": ctx.k_hat_table})
    owner: dict[int, Decryption] = {}
    for d in decryptions:
        if any(what.startswith(d.what + " ") or what == d.what for what in bad_elements):
            failed.add(d.what)
            continue
        keys = sorted((s.guardian, s.missing or 0) for s in d.shares)
        if keys != sorted((g, m or 0) for g, m in weights):
            found.fail(f"{d.what}: the shares do not match the decryption plan of guardians {list(quorum.present)} "
                       f"({quorum.form} form)")
            failed.add(d.what)
            continue
        try:
            c = check_scalar(group, d.challenge, f"{d.what} proof challenge")
            v = check_scalar(group, d.response, f"{d.what} proof response")                # (10.A)
            for s in d.shares:
                check_scalar(group, s.response, f"{d.what} {s.name} response")
        except GuardianError as e:
            found.fail(str(e))
            failed.add(d.what)
            continue
        a = b = mpz(1)
        for s in d.shares:
            a, b = a * s.commitment_a % p, b * s.commitment_b % p                      # eq 89
        # On a failure here, go on: the per-part equations below name the guardian at fault.
        if d.statement.challenge(group, a, b, d.m) != c:                                # (10.B) eq 90
            found.fail(f"{d.what}: the challenge is not the hash of the commitments and M (10.B)")
            failed.add(d.what)
        if sum(int(s.response) for s in d.shares) % q != v:                            # eq 93
            found.fail(f"{d.what}: the response is not the sum of the guardians' responses (eq 93)")
            failed.add(d.what)
        start = len(batch.equations)
        # (10.2), (10.3) over the published commitments: g^v K^c = a and A^v M^c = b
        batch.add(Equation(f"{d.what}: g^v K^c is not the product of the commitments a_i (10.2, 10.B)",
                           [("g", v), (d.joint_table, c)], [(s.commitment_a, 1) for s in d.shares]))
        batch.add(Equation(f"{d.what}: A^v M^c is not the product of the commitments b_i (10.3, 10.B)",
                           [(d.base, v), (d.m, c)], [(s.commitment_b, 1) for s in d.shares]))
        # eq 86: M = prod M_i^w_i
        batch.add(Equation(f"{d.what}: the guardians' shares do not combine to M (eq 86)",
                           [(s.share, weights[(s.guardian, s.missing)]) for s in d.shares], [(d.m, 1)]))
        for s in d.shares:
            part = Part(s.guardian, s.missing, weights[(s.guardian, s.missing)])
            x_pub = publics.public(part, compensated)
            cw = c * part.weight % q
            # eqs 94, 95: g^v_i X^(c w_i) = a_i and base^v_i Y^(c w_i) = b_i
            batch.add(Equation(f"{d.what}: the share of {s.name} does not verify (eqs 94, 95)",
                               [("g", s.response), (x_pub, cw)], [(s.commitment_a, 1)]))
            batch.add(Equation(f"{d.what}: the share of {s.name} does not verify (eqs 94, 95)",
                               [(d.base, s.response), (s.share, cw)], [(s.commitment_b, 1)]))
        for i in range(start, len(batch.equations)):
            owner[id(batch.equations[i])] = d
    reported = set()
    for eq in batch.failing():
        if eq.what not in reported:
            found.fail(eq.what)
            reported.add(eq.what)
        failed.add(owner[id(eq)].what)
    return failed
