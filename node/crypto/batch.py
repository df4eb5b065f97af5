"""Many equations over the order-q subgroup checked as one multi-exponentiation; many elements at once.

Every equation has the form prod(x_i^e_i) = prod(y_j^f_j) with the x_i, y_j in
the subgroup of order q (their membership checked beforehand). Raise each
equation, moved to one side, to an independent random 128-bit weight r and
multiply them all: valid equations give 1 whatever the weights. If one equation
is false, its quotient z = prod(x^e) / prod(y^f) is an element other than 1 of
a group of prime order q, so z^r = 1 only for r = 0 mod q, and the whole
product is 1 for at most one value of that equation's weight given all the
others: probability at most 2^-127 over an odd 128-bit r. Only when the product
is not 1 are the equations evaluated one by one, to name the culprits.

Membership of received elements in Z_p^r is batched the same way
(node.crypto.group.check_elements); not_members names the elements at fault.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz

from node.crypto.errors import GuardianError
from node.crypto.fixed_base import FixedBase, multi_exp
from node.crypto.group import check_element, check_elements
from node.crypto.params import Group

WEIGHT_BITS = 128


@dataclass
class Equation:
    """prod(lhs) == prod(rhs), each side a list of (base, exponent); a base is an element or a table's name."""

    what: str
    lhs: list
    rhs: list


class Batch:
    """Equations over Z_p^r, checked together by a random linear combination of their exponents."""

    def __init__(self, group: Group, tables: dict[str, FixedBase]) -> None:
        self.group, self.tables = group, tables
        self.equations: list[Equation] = []

    def add(self, eq: Equation) -> None:
        self.equations.append(eq)

    def _value(self, term) -> mpz:
        base, e = term
        if isinstance(base, str):
            return self.tables[base].pow(e)
        return gmpy2.powmod(base, int(e) % int(self.group.q), self.group.p)

    def holds(self, eq: Equation) -> bool:
        p = self.group.p
        left, right = mpz(1), mpz(1)
        for t in eq.lhs:
            left = left * self._value(t) % p
        for t in eq.rhs:
            right = right * self._value(t) % p
        return left == right

    def failing(self, rng=None) -> list[Equation]:
        """The equations that do not hold; one multi-exponentiation when all do."""
        if not self.equations:
            return []
        rng = rng or secrets.SystemRandom()
        q, p = int(self.group.q), self.group.p
        table_exp: dict[str, int] = {}
        pos: dict[int, int] = {}
        bases: list = []
        exps: list[int] = []
        for eq in self.equations:
            r = rng.getrandbits(WEIGHT_BITS) | 1
            for side, sign in ((eq.lhs, 1), (eq.rhs, -1)):
                for base, e in side:
                    w = sign * r * int(e) % q
                    if isinstance(base, str):
                        table_exp[base] = (table_exp.get(base, 0) + w) % q
                        continue
                    key = int(base)
                    at = pos.get(key)
                    if at is None:      # a base used by several equations is raised once
                        pos[key] = len(bases)
                        bases.append(base)
                        exps.append(w)
                    else:
                        exps[at] = (exps[at] + w) % q
        total = multi_exp(self.group, bases, exps)
        for name, e in table_exp.items():
            total = total * self.tables[name].pow(e) % p
        if total == 1:
            return []
        return [eq for eq in self.equations if not self.holds(eq)]


def not_members(group: Group, items: list[tuple[object, str]]) -> list[tuple[str, str]]:
    """(what, why) for each (value, what) not in Z_p^r; one batched check when every value is."""
    try:
        check_elements(group, items)
        return []
    except GuardianError:
        pass
    bad = []
    for x, what in items:
        try:
            check_element(group, x, what)
        except GuardianError as e:
            bad.append((what, str(e)))
    return bad
