"""Byte encodings of spec section 5.1 and the hex form of the serialization spec.

b(a, m) is the big-endian byte array of fixed length m (eq 123). Integers mod p
take l_p bytes, integers mod q take l_q bytes, small integers 4 bytes, strings
and files a 4-byte length prefix when their length is not fixed (5.1.4, 5.1.5).
"""

from __future__ import annotations

import re

from gmpy2 import mpz

from node.crypto.errors import EncodingError

SMALL_INT_LIMIT = 2**31  # small integers are < 2^31 (spec 5.1.3)


def b(a: int, length: int) -> bytes:
    """b(a, m) of eq 123: a as exactly `length` big-endian bytes."""
    a = int(a)
    if a < 0 or a.bit_length() > 8 * length:
        raise EncodingError(f"integer does not fit in {length} bytes")
    return a.to_bytes(length, "big")


def small(a: int) -> bytes:
    """A small integer as 4 bytes (spec 5.1.3); indices, n, k, lengths."""
    if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < SMALL_INT_LIMIT:
        raise EncodingError(f"small integer out of range 0..2^31-1: {a!r}")
    return a.to_bytes(4, "big")


def length_prefixed(data: bytes) -> bytes:
    """A variable-length string or file: 4-byte big-endian length, then the bytes (5.1.4, 5.1.5)."""
    if len(data) >= SMALL_INT_LIMIT:
        raise EncodingError("string or file longer than 2^31 - 1 bytes")
    return len(data).to_bytes(4, "big") + data


def int_from_bytes(data: bytes) -> mpz:
    """The big-endian integer a byte array represents (eq 122)."""
    return mpz(int.from_bytes(data, "big"))


def to_hex(a: int, length: int) -> str:
    """Uppercase hex of exactly 2*length digits: the serialization spec's large-integer form."""
    return b(a, length).hex().upper()


def from_hex(text: object, length: int, what: str) -> mpz:
    """Parse the serialization spec's `^[0-9A-F]{N}$` form; EncodingError names `what` otherwise."""
    if not isinstance(text, str) or len(text) != 2 * length or not _HEX.fullmatch(text):
        raise EncodingError(f"{what}: expected {2 * length} uppercase hex digits")
    return mpz(text, 16)


_HEX = re.compile(r"[0-9A-F]+")
