"""Shamir secret sharing: any T of M shares give the secret back; fewer give no information about it.

The field is the integers modulo the Mersenne prime 2^521 - 1. Why this prime:
- one field element holds a whole secret of up to 56 bytes with its marker and check (a 32-byte key with
  room to spare), so each custodian holds one number and no secret is cut into pieces that could be mixed up;
- its primality is famous and easy to check (it is the prime of the P-521 curve), so nobody has to trust
  a constant picked for this program;
- the shares are uniform in the field whatever the secret is, which a prime field guarantees and
  working modulo a power of two would not.

A share is a point (x, f(x)) of a random polynomial f of degree T - 1 with f(0) = the secret; x runs 1..M.
Every coefficient is drawn uniformly from the whole field, the leading one included: that is what makes
any T - 1 shares consistent with every secret in exactly the same number of ways.

A byte secret is shared as the integer of 0x01 | secret | the first 8 bytes of SHA-256(secret): the marker
keeps leading zero bytes, and the check makes a wrong recovery (too few shares, shares that do not belong
together, an altered share) fail instead of yielding a wrong secret. The check reveals nothing: like the
secret, it is only in f(0), which fewer than T shares say nothing about.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from node.crypto.errors import InputError

PRIME = 2**521 - 1
MAX_SHARES = 255                      # share numbers fit in one byte in the typed form
CHECK_BYTES = 8
MAX_SECRET_BYTES = 56                 # 0x01 + 56 + 8 bytes = 520 bits < 521
VALUE_BYTES = (PRIME.bit_length() + 7) // 8    # 66: a share value in bytes

Rng = Callable[[int], int]            # rng(n) -> a uniform integer in [0, n); secrets.randbelow by default


class SharingError(InputError):
    """Parameters or shares that cannot split or recover a secret."""


@dataclass(frozen=True)
class Share:
    x: int
    y: int

    def __repr__(self) -> str:          # the value is a piece of a secret: never in logs or tracebacks
        return f"Share(x={self.x})"


def check_parameters(threshold: object, count: object, prime: int = PRIME) -> tuple[int, int]:
    """2 <= T <= M <= 255 (and M < prime, so the x values are distinct and non-zero)."""
    for name, value in (("threshold", threshold), ("count", count)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise SharingError(f"the {name} must be a whole number, got {value!r}")
    if threshold < 2:
        # With T = 1 every share would be a plain copy of the secret: that is a copy, not custody.
        raise SharingError(f"the threshold must be at least 2, got {threshold}: with 1 every share "
                           f"is a copy of the secret")
    if count < threshold:
        raise SharingError(f"the number of shares ({count}) is smaller than the threshold ({threshold})")
    if count > MAX_SHARES or count >= prime:
        raise SharingError(f"at most {min(MAX_SHARES, prime - 1)} shares, got {count}")
    return threshold, count


def split_int(secret: int, threshold: int, count: int, rng: Rng = secrets.randbelow,
              prime: int = PRIME) -> list[Share]:
    """Shares 1..count of `secret`, an element of the field of `prime`."""
    threshold, count = check_parameters(threshold, count, prime)
    if not isinstance(secret, int) or isinstance(secret, bool) or not 0 <= secret < prime:
        raise SharingError("the secret must be an integer in the field")
    coefficients = [secret] + [_draw(rng, prime) for _ in range(threshold - 1)]
    return [Share(x, _evaluate(coefficients, x, prime)) for x in range(1, count + 1)]


def recover_int(shares: Sequence[Share], prime: int = PRIME) -> int:
    """f(0) by Lagrange interpolation through all the given shares (T or more of one split)."""
    points = check_shares(shares, prime)
    secret = 0
    for i, (xi, yi) in enumerate(points):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(points):
            if i != j:
                numerator = numerator * xj % prime
                denominator = denominator * (xj - xi) % prime
        secret = (secret + yi * numerator * pow(denominator, -1, prime)) % prime
    return secret


def evaluate_at(shares: Sequence[Share], x: int, prime: int = PRIME) -> int:
    """The value at `x` of the polynomial through `shares`: checks that a further share agrees with them."""
    points = check_shares(shares, prime)
    total = 0
    for i, (xi, yi) in enumerate(points):
        term = yi
        for j, (xj, _) in enumerate(points):
            if i != j:
                term = term * (x - xj) % prime * pow(xi - xj, -1, prime) % prime
        total = (total + term) % prime
    return total


def check_shares(shares: Iterable[Share], prime: int = PRIME) -> list[tuple[int, int]]:
    """Every share a point with 1 <= x <= 255, x < prime, 0 <= y < prime; no x twice."""
    points: list[tuple[int, int]] = []
    seen: set[int] = set()
    for n, share in enumerate(shares, 1):
        if not isinstance(share, Share):
            raise SharingError(f"share {n} is not a share")
        x, y = share.x, share.y
        if not isinstance(x, int) or isinstance(x, bool) or not 1 <= x <= min(MAX_SHARES, prime - 1):
            raise SharingError(f"share {n} has the number {x!r}: share numbers run from 1 to "
                               f"{min(MAX_SHARES, prime - 1)}")
        if not isinstance(y, int) or isinstance(y, bool) or not 0 <= y < prime:
            raise SharingError(f"share {n} (number {x}) has a value outside the field")
        if x in seen:
            raise SharingError(f"share number {x} is given twice")
        seen.add(x)
        points.append((x, y))
    if not points:
        raise SharingError("no shares given")
    return points


def split(secret: bytes, threshold: int, count: int, rng: Rng = secrets.randbelow) -> list[Share]:
    """Shares 1..count of a secret of 1 to 56 bytes; any `threshold` of them recover it."""
    if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise SharingError(f"the secret must be 1 to {MAX_SECRET_BYTES} bytes")
    return split_int(int.from_bytes(b"\x01" + secret + _check(secret), "big"), threshold, count, rng)


def recover(shares: Sequence[Share]) -> bytes:
    """The secret from exactly T shares of one split made by `split`."""
    value = recover_int(shares)
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    secret = raw[1:-CHECK_BYTES]
    if len(raw) < 2 + CHECK_BYTES or raw[0] != 1 or raw[-CHECK_BYTES:] != _check(secret):
        raise SharingError("these shares do not give back a secret: too few of them, or shares of "
                           "different splits, or a share was altered")
    return secret


def _check(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()[:CHECK_BYTES]


def _draw(rng: Rng, prime: int) -> int:
    value = rng(prime)
    if not isinstance(value, int) or not 0 <= value < prime:
        raise SharingError("the random number source returned a value outside the field")
    return value


def _evaluate(coefficients: list[int], x: int, prime: int) -> int:
    result = 0
    for c in reversed(coefficients):    # Horner
        result = (result * x + c) % prime
    return result
