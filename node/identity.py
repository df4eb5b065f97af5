"""A node's Ed25519 identity: the key its peers know it by, sealed at rest in its data directory."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from node.crypto.errors import EncodingError, InputError
from node.crypto.sealing import seal, unseal

IDENTITY_FILE = "identity.sealed"
PUBLIC_FILE = "identity.pub"          # the public key, readable without the passphrase
PURPOSE = "node identity"


def fingerprint(public_key: bytes) -> str:
    """A short, speakable digest of a public key: 6 groups of 4 base32 characters (120 bits).

    Two guardians read these to each other to be sure they hold each other's real key.
    """
    digest = hashlib.sha256(b"guardian-node key fingerprint\x00" + public_key).digest()
    text = base64.b32encode(digest[:15]).decode()
    return "-".join(text[i:i + 4] for i in range(0, 24, 4))


def encode_public_key(public_key: bytes) -> str:
    """A public key as it appears in rosters: standard base64 of the 32 raw bytes."""
    return base64.b64encode(public_key).decode()


def decode_public_key(text: object, what: str = "public key") -> bytes:
    if not isinstance(text, str):
        raise EncodingError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raise EncodingError(f"{what} is not valid base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != text:
        raise EncodingError(f"{what} must be 32 bytes in canonical base64")
    try:
        nacl.signing.VerifyKey(raw)
    except Exception:
        raise EncodingError(f"{what} is not an Ed25519 public key") from None
    return raw


@dataclass(frozen=True)
class Identity:
    signing_key: nacl.signing.SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message).signature

    def __repr__(self) -> str:
        return f"Identity({self.fingerprint})"

    @classmethod
    def generate(cls) -> "Identity":
        return cls(nacl.signing.SigningKey.generate())

    def save(self, data_dir: Path, passphrase: str) -> Path:
        path = Path(data_dir) / IDENTITY_FILE
        if path.exists():
            raise InputError(f"{path} already exists: refusing to overwrite a node identity")
        blob = seal(bytes(self.signing_key), passphrase, purpose=PURPOSE)
        path.touch(mode=0o600)
        path.write_bytes(blob)
        (Path(data_dir) / PUBLIC_FILE).write_text(encode_public_key(self.public_key) + "\n")
        return path

    @classmethod
    def load(cls, data_dir: Path, passphrase: str) -> "Identity":
        path = Path(data_dir) / IDENTITY_FILE
        try:
            blob = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read the node identity {path}: {e.strerror}") from None
        seed = unseal(blob, passphrase, purpose=PURPOSE)
        if len(seed) != 32:
            raise EncodingError(f"{path} does not hold an Ed25519 key")
        identity = cls(nacl.signing.SigningKey(seed))
        public = Path(data_dir) / PUBLIC_FILE
        if public.exists() and load_public_key(data_dir) != identity.public_key:
            raise EncodingError(f"{public} does not match the sealed identity")
        return identity


def load_public_key(data_dir: Path) -> bytes:
    """This node's public key, without unsealing anything."""
    path = Path(data_dir) / PUBLIC_FILE
    try:
        return decode_public_key(path.read_text().strip(), str(path))
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}; is this a node data directory?") from None
