"""Membership checks for every value received from outside (spec Verification 2.A, 2.B, 6.A ...).

A value x is in Z_p^r iff 0 <= x < p and x^q mod p = 1; a value is in Z_q iff
0 <= x < q. The batched check uses that (p - 1)/2q is prime (spec 3.1.1): the
Legendre symbol of each element rules out the order-2 part cheaply, and one
exponentiation of a random-exponent product to the power q then rules out the
rest except with probability 2^-128. A batch that fails is re-checked element
by element, so the error still names the culprit.
"""

from __future__ import annotations

import secrets
from typing import Iterable, Sequence

import gmpy2
from gmpy2 import mpz

from node.crypto.errors import GroupMembershipError
from node.crypto.fixed_base import multi_exp
from node.crypto.params import Group

BATCH_EXPONENT_BITS = 128


def _as_int(x: object, what: str) -> mpz:
    if isinstance(x, bool) or not isinstance(x, (int, type(mpz(0)))):
        raise GroupMembershipError(f"{what} is not an integer")
    return mpz(x)


def check_scalar(group: Group, x: object, what: str) -> mpz:
    """Return x if it is in Z_q, else raise naming `what`."""
    v = _as_int(x, what)
    if not 0 <= v < group.q:
        raise GroupMembershipError(f"{what} is not in Z_q (0 <= x < q)")
    return v


def check_element(group: Group, x: object, what: str) -> mpz:
    """Return x if it is in Z_p^r (the order-q subgroup), else raise naming `what`."""
    v = _as_int(x, what)
    if not 0 < v < group.p or gmpy2.powmod(v, group.q, group.p) != 1:
        raise GroupMembershipError(f"{what} is not in the order-q subgroup Z_p^r")
    return v


def check_elements(group: Group, items: Sequence[tuple[object, str]], rng=None) -> list[mpz]:
    """Batched check_element over (value, what) pairs; the same result, several times faster."""
    values = []
    for x, what in items:
        v = _as_int(x, what)
        # An element of Z_p^r is a quadratic residue, so its Legendre symbol is 1.
        if not 0 < v < group.p or gmpy2.legendre(v, group.p) != 1:
            raise GroupMembershipError(f"{what} is not in the order-q subgroup Z_p^r")
        values.append(v)
    # The batch is sound only when (p-1)/2q exceeds 2^128 (true of the standard group, not the toy ones).
    if len(values) <= 2 or group.r // 2 < 2**BATCH_EXPONENT_BITS:
        for v, (_, what) in zip(values, items):
            check_element(group, v, what)
        return values
    rng = rng or secrets.SystemRandom()
    weights = [rng.getrandbits(BATCH_EXPONENT_BITS) | 1 for _ in values]
    combined = multi_exp(group, values, weights)
    if gmpy2.powmod(combined, group.q, group.p) != 1:
        for v, (_, what) in zip(values, items):
            check_element(group, v, what)
        raise GroupMembershipError("batch membership check failed but no single element did")
    return values


def check_scalars(group: Group, items: Iterable[tuple[object, str]]) -> list[mpz]:
    return [check_scalar(group, x, what) for x, what in items]
