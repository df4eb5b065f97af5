"""Key custody: the guardian's encrypted key backup, its split among custodians, and the audit trail check.

    shamir        Shamir secret sharing over the prime field of 2^521 - 1
    share_files   a custodian's share as a file, as typed text and as a printable page with a QR code
    backup_file   the encrypted key backup file (two layers: a backup key, itself sealed under the passphrase)
    audit_chain   verification of the node database's hash-chained audit trail
    certificate   the ceremony certificate: what is signed, its text, and every check of it

This module holds what they share: writing a new file safely, and the base32 alphabet people read and type.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from node.crypto.errors import EncodingError, InputError

# Crockford's base32: digits and capitals without I, L, O and U, so nothing read aloud or typed is ambiguous.
# Typed input maps O to 0 and I, L to 1, the usual slips.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUES = {c: i for i, c in enumerate(ALPHABET)} | {"O": 0, "I": 1, "L": 1}


def b32encode(data: bytes) -> str:
    """Bytes as base32 characters, most significant bit first; the last character is padded with zero bits."""
    bits = len(data) * 8
    chars = -(-bits // 5)
    value = int.from_bytes(data, "big") << (chars * 5 - bits)
    return "".join(ALPHABET[(value >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def b32decode(text: str, length: int) -> bytes:
    """The inverse of b32encode for `length` bytes; the text must already be checked (see b32value)."""
    chars = -(-length * 8 // 5)
    if len(text) != chars:
        raise EncodingError(f"expected {chars} base32 characters, got {len(text)}")
    value = 0
    for c in text:
        value = (value << 5) | b32value(c)
    return (value >> (chars * 5 - length * 8)).to_bytes(length, "big")


def b32value(char: str) -> int:
    """The value of one typed character, case-insensitive; EncodingError if it is not in the alphabet."""
    value = _VALUES.get(char.upper())
    if value is None:
        raise EncodingError(f"{char!r} is not a base32 character (use 0-9 and A-Z without U)")
    return value


def write_new_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    """Write `data` to a new file, all or nothing: never over an existing file, never half written.

    The bytes go to a temporary file in the same directory, are flushed to disk, and are then linked
    to `path`; the link fails if `path` exists, so two writers cannot overwrite each other.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise InputError(f"{path} already exists: refusing to overwrite it")
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"cannot write in {directory}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _link_new(tmp, path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _sync_directory(directory)
    return path


def _link_new(tmp: str, path: Path) -> None:
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(f"{path} already exists: refusing to overwrite it") from None
    except OSError:
        # A file system without hard links: the existence check above is the best we can do.
        if path.exists():
            raise InputError(f"{path} already exists: refusing to overwrite it") from None
        os.replace(tmp, path)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass   # some file systems refuse fsync on a directory; the file itself is on disk
    finally:
        os.close(fd)
