"""The public constants of one election: parameters, manifest, base hashes and joint keys.

An ElectionContext is what every ballot, tally and decryption computation needs.
It holds the fixed-base tables for g, K and K-hat, built once, so that the
thousands of exponentiations of a ballot box reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from gmpy2 import mpz

from node.crypto.errors import InputError
from node.crypto.fixed_base import FixedBase
from node.crypto.hashing import election_base_hash, extended_base_hash, parameter_base_hash
from node.crypto.manifest import Manifest
from node.crypto.params import Group

_G_TABLES: dict[tuple[Group, int], FixedBase] = {}


def generator_table(group: Group, window: int = 8) -> FixedBase:
    """The process-wide fixed-base table for g, built once per window size."""
    table = _G_TABLES.get((group, window))
    if table is None:
        table = _G_TABLES[(group, window)] = FixedBase(group, group.g, window)
    return table


@dataclass(frozen=True)
class ElectionParameters:
    """n, k and the manifest: what H_P and H_B are computed from (spec 3.1.2-3.1.4)."""

    group: Group
    n: int
    k: int
    manifest: Manifest

    def __post_init__(self) -> None:
        for name, v in (("n", self.n), ("k", self.k)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"{name} must be an integer")
        if not 1 <= self.k <= self.n < 2**31:
            raise InputError(f"need 1 <= k <= n < 2^31, got n={self.n}, k={self.k}")

    @cached_property
    def h_p(self) -> bytes:
        """H_P (eq 4)."""
        return parameter_base_hash(self.group, self.n, self.k)

    @cached_property
    def h_b(self) -> bytes:
        """H_B (eq 5), over the manifest's canonical bytes."""
        return election_base_hash(self.h_p, self.manifest.canonical_bytes())

    @cached_property
    def g_table(self) -> FixedBase:
        return generator_table(self.group)


@dataclass(frozen=True)
class ElectionContext:
    """Parameters plus the joint keys K and K-hat and H_E: everything public after the key ceremony."""

    parameters: ElectionParameters
    joint_key: mpz
    joint_data_key: mpz
    window: int = field(default=8, compare=False)   # fixed-base window bits; 12 for bulk encryption

    @property
    def group(self) -> Group:
        return self.parameters.group

    @property
    def manifest(self) -> Manifest:
        return self.parameters.manifest

    @cached_property
    def h_e(self) -> bytes:
        """H_E = H(H_B; 0x14, K, K-hat) (eq 30)."""
        return extended_base_hash(self.group, self.parameters.h_b, self.joint_key, self.joint_data_key)

    @cached_property
    def g_table(self) -> FixedBase:
        return generator_table(self.group, self.window)

    @cached_property
    def k_table(self) -> FixedBase:
        return FixedBase(self.group, self.joint_key, self.window)

    @cached_property
    def k_hat_table(self) -> FixedBase:
        return FixedBase(self.group, self.joint_data_key)

    def __reduce__(self):
        # Tables are rebuilt on the other side of a process pool rather than pickled (they are MBs).
        return (ElectionContext, (self.parameters, self.joint_key, self.joint_data_key, self.window))
