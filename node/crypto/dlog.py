"""Small discrete logarithms: t from T = K^t for tallies (spec 3.6.2, footnote 47).

Baby-step giant-step: with m = ceil(sqrt(bound)) a table of K^0..K^(m-1) and at
most m giant steps of K^(-m) find any t <= bound. Bound 10^8 costs 10^4 + 10^4
multiplications; tables are cached per base and size.
"""

from __future__ import annotations

from functools import lru_cache

import gmpy2
from gmpy2 import mpz

from node.crypto.errors import DecryptionError
from node.crypto.params import Group

DEFAULT_BOUND = 10**8


class DiscreteLog:
    def __init__(self, group: Group, base: int, bound: int = DEFAULT_BOUND) -> None:
        self.group = group
        self.base = mpz(base)
        self.bound = bound
        self.m = int(gmpy2.isqrt(bound)) + 1
        p = group.p
        baby: dict[int, int] = {}
        x = mpz(1)
        for j in range(self.m):
            baby.setdefault(int(x), j)
            x = x * self.base % p
        self._baby = baby
        self._giant = gmpy2.invert(x, p)  # base^(-m)

    def solve(self, value: int) -> int:
        """The t in 0..bound with base^t = value; DecryptionError when there is none."""
        p = self.group.p
        y = mpz(value)
        for i in range(self.m + 1):
            j = self._baby.get(int(y))
            if j is not None:
                t = i * self.m + j
                if t <= self.bound:
                    return t
                break
            y = y * self._giant % p
        raise DecryptionError(f"no discrete log in 0..{self.bound}: the value is not K^t for a small t")


@lru_cache(maxsize=8)
def discrete_log(group: Group, base: int, bound: int = DEFAULT_BOUND) -> DiscreteLog:
    """A cached solver for `base` up to `bound`."""
    return DiscreteLog(group, base, bound)
