"""ElGamal in the base-K form of eq 31 and its homomorphic aggregation (eq 79)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import gmpy2
from gmpy2 import mpz

from node.crypto.fixed_base import FixedBase
from node.crypto.params import Group


@dataclass(frozen=True)
class Ciphertext:
    alpha: mpz
    beta: mpz


def encrypt(g_table: FixedBase, k_table: FixedBase, sigma: int, nonce: int) -> Ciphertext:
    """Enc(sigma, xi) = (g^xi mod p, K^(sigma + xi) mod p) (eq 31)."""
    return Ciphertext(g_table.pow(nonce), k_table.pow(sigma + nonce))


def aggregate(group: Group, ciphertexts: Iterable[Ciphertext]) -> Ciphertext:
    """(A, B) = (prod alpha_i mod p, prod beta_i mod p): an encryption of the sum (eq 79)."""
    a, b = mpz(1), mpz(1)
    p = group.p
    for ct in ciphertexts:
        a = a * ct.alpha % p
        b = b * ct.beta % p
    return Ciphertext(a, b)


def power_of_key_from_nonce(group: Group, k_table: FixedBase, ct: Ciphertext, nonce: int) -> mpz:
    """K^sigma = beta * K^(-xi) mod p: decryption with the encryption nonce (eq 109)."""
    return ct.beta * gmpy2.invert(k_table.pow(nonce), group.p) % group.p
