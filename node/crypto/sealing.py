"""Secrets at rest: Argon2id from a passphrase, then XSalsa20-Poly1305 (PyNaCl SecretBox).

A sealed blob is a small JSON object that names its own KDF parameters, so a
file sealed today still opens after the defaults change. Pure functions: the
caller reads and writes files and obtains the passphrase.
"""

from __future__ import annotations

import base64
import json
import secrets

import nacl.exceptions
import nacl.pwhash
import nacl.secret
from nacl.pwhash import argon2id

from node.crypto.errors import EncodingError, InputError

FORMAT = "guardian-node sealed v1"
# Interactive limits: about 0.15 s and 64 MiB here; an attacker pays the same for every guess.
DEFAULT_OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
DEFAULT_MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
MIN_PASSPHRASE_CHARS = 8


class WrongPassphrase(InputError):
    """The passphrase does not open this sealed blob (or the blob was altered)."""


def check_passphrase(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise InputError(f"the passphrase must have at least {MIN_PASSPHRASE_CHARS} characters")
    return passphrase.encode("utf-8")


def _key(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit)


def seal(plaintext: bytes, passphrase: str, *, purpose: str, opslimit: int = DEFAULT_OPSLIMIT,
         memlimit: int = DEFAULT_MEMLIMIT) -> bytes:
    """Seal `plaintext`; `purpose` (e.g. "node identity") is bound into the ciphertext and checked on open."""
    salt = secrets.token_bytes(argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_key(check_passphrase(passphrase), salt, opslimit, memlimit))
    header = {"format": FORMAT, "purpose": purpose, "kdf": "argon2id", "opslimit": opslimit,
              "memlimit": memlimit, "salt": base64.b64encode(salt).decode()}
    # The header is authenticated by sealing it together with the secret.
    inner = json.dumps(header, sort_keys=True).encode() + b"\n" + plaintext
    ciphertext = box.encrypt(inner)
    return json.dumps({**header, "ciphertext": base64.b64encode(bytes(ciphertext)).decode()}, indent=1).encode()


def unseal(blob: bytes, passphrase: str, *, purpose: str) -> bytes:
    """Open a sealed blob; WrongPassphrase if it does not open, EncodingError if it is not a sealed blob."""
    try:
        outer = json.loads(blob)
        header = {k: outer[k] for k in ("format", "purpose", "kdf", "opslimit", "memlimit", "salt")}
        ciphertext = base64.b64decode(outer["ciphertext"], validate=True)
        salt = base64.b64decode(header["salt"], validate=True)
    except (ValueError, KeyError, TypeError):
        raise EncodingError("not a sealed file, or a truncated one") from None
    if header["format"] != FORMAT or header["kdf"] != "argon2id":
        raise EncodingError(f"unsupported sealed format {header.get('format')!r}")
    if header["purpose"] != purpose:
        raise EncodingError(f"this sealed file holds a {header['purpose']!r}, not a {purpose!r}")
    ops, mem = header["opslimit"], header["memlimit"]
    if not (isinstance(ops, int) and isinstance(mem, int) and 1 <= ops <= 64 and 8192 <= mem <= 2**32
            and len(salt) == argon2id.SALTBYTES):
        raise EncodingError("sealed file has implausible KDF parameters")
    box = nacl.secret.SecretBox(_key(check_passphrase(passphrase), salt, ops, mem))
    try:
        inner = box.decrypt(ciphertext)
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase("wrong passphrase, or the sealed file was altered") from None
    bound, _, plaintext = inner.partition(b"\n")
    if json.loads(bound) != header:
        raise EncodingError("the sealed file's header was altered")
    return plaintext
