"""The ElectionGuard hash H = HMAC-SHA-256 (spec 5.2), H_q (5.4) and the named base hashes.

Callers build the second argument B1 as bytes themselves, starting with the
domain-separation byte of the table in spec 5.5; the helpers here only join the
pieces. Keeping B1 explicit at each call site makes it easy to compare a call
with the spec's table, line by line.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Iterable

from gmpy2 import mpz

from node.crypto.encoding import length_prefixed, small
from node.crypto.errors import InputError
from node.crypto.params import Group, encode_p, encode_q

HASH_BYTES = 32
# ver = b("v2.1.0") || b(0, 26): the version byte array of spec 3.1.2.
VERSION = b"v2.1.0" + bytes(26)


def H(key: bytes, data: bytes) -> bytes:
    """H(B0; B1) = HMAC-SHA-256(B0, B1) (eq 130). B0 is always 32 bytes in ElectionGuard."""
    if len(key) != HASH_BYTES:
        raise InputError(f"hash key must be 32 bytes, got {len(key)}")
    return hmac.new(key, data, hashlib.sha256).digest()


def H_q(group: Group, key: bytes, data: bytes) -> mpz:
    """H_q(B0; B1) = H(B0; B1) mod q (eq 132)."""
    return mpz(int.from_bytes(H(key, data), "big")) % group.q


def elements(group: Group, values: Iterable[int]) -> bytes:
    """Concatenated b(x, l_p) of several elements of Z_p (spec 5.3)."""
    return b"".join(encode_p(group, x) for x in values)


def parameter_base_hash(group: Group, n: int, k: int) -> bytes:
    """H_P = H(ver; 0x00, p, q, g, n, k) (eq 4)."""
    data = b"\x00" + encode_p(group, group.p) + encode_q(group, group.q) + encode_p(group, group.g)
    return H(VERSION, data + small(n) + small(k))


def election_base_hash(h_p: bytes, manifest_bytes: bytes) -> bytes:
    """H_B = H(H_P; 0x01, manifest) with the manifest file length-prefixed (eq 5, spec 5.1.5)."""
    return H(h_p, b"\x01" + length_prefixed(manifest_bytes))


def guardian_record_hash(
    group: Group,
    h_b: bytes,
    joint_key: int,
    joint_data_key: int,
    commitments: list[list[int]],
    data_commitments: list[list[int]],
    communication_keys: list[int],
) -> bytes:
    """H_G = H(H_B; 0x13, K, K-hat, all K_ij, all K-hat_ij, all kappa_i) (eq 27).

    Guardians compare H_G to detect a peer that showed them different key data.
    """
    data = bytearray(b"\x13")
    data += elements(group, (joint_key, joint_data_key))
    for row in commitments:
        data += elements(group, row)
    for row in data_commitments:
        data += elements(group, row)
    data += elements(group, communication_keys)
    return H(h_b, bytes(data))


def extended_base_hash(group: Group, h_b: bytes, joint_key: int, joint_data_key: int) -> bytes:
    """H_E = H(H_B; 0x14, K, K-hat) (eq 30)."""
    return H(h_b, b"\x14" + elements(group, (joint_key, joint_data_key)))


def kdf_counter_mode(key: bytes, counter: bytes, label: bytes, context: bytes, length: bytes) -> bytes:
    """One block of the SP 800-108 counter-mode KDF with HMAC-SHA-256 (eqs 17, 18, 36, 66).

    HMAC(k, counter || Label || 0x00 || Context || L): the counter and the total
    output length L are given already encoded, because their widths differ
    between uses (one byte and two bytes in eqs 17/36, four bytes in eq 66).
    """
    return hmac.new(key, counter + label + b"\x00" + context + length, hashlib.sha256).digest()


def xor_bytes(a: bytes, b: bytes) -> bytes:
    if len(a) != len(b):
        raise InputError("xor of byte strings of different lengths")
    return bytes(x ^ y for x, y in zip(a, b))
