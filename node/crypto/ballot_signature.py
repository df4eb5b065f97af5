"""The one-time Ed25519 ballot signature of seed 003.

Each ballot record carries `voter_signing_pk` (base64 of the DER
SubjectPublicKeyInfo of a one-time Ed25519 key) and `voter_ballot_signature`
(base64 of the 64-byte signature). What is signed (seed 003, "Payload
Preparation") is

    u64le(len(ballot_id))   || ballot_id
    u64le(len(election_id)) || election_id
    u64le(len(content))     || content

where the ids are UTF-8 and `content` is the Borsh serialization of the core
ballot content (version, issue_date, contests, config, ballot_style_hash).

Pure functions: no I/O, no clock, no logging. Refusals are typed: InputError
for arguments of the wrong shape, SignatureError for a record that does not
check out.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct
from dataclasses import dataclass

from borsh_construct import CStruct, String, U32, Vec
from construct import ConstructError
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)

from node.crypto.errors import EncodingError, InputError, SignatureError

U32_MAX = 2**32 - 1
U64_MAX = 2**64 - 1
SIGNATURE_LENGTH = 64

# Field order is part of the format: Borsh has no field names on the wire, so
# reordering these would silently change every signed payload.
_CONTENT_SCHEMA = CStruct(
    "version" / U32,
    "issue_date" / String,
    "contests" / Vec(String),
    "config" / String,
    "ballot_style_hash" / String,
)


def _utf8(value: object, field: str, max_len: int) -> bytes:
    """UTF-8 bytes of a str argument; InputError naming `field` otherwise."""
    if not isinstance(value, str):
        raise InputError(f"{field}: expected str, got {type(value).__name__}")
    try:
        data = value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates are legal in a Python str but have no UTF-8 form.
        raise InputError(f"{field}: not encodable as UTF-8 ({exc.reason})") from None
    if len(data) > max_len:
        raise InputError(f"{field}: {len(data)} bytes does not fit the length prefix")
    return data


@dataclass(frozen=True)
class BallotContent:
    """The core ballot content of seed 003, the part serialized with Borsh."""

    version: int
    issue_date: str
    contests: tuple[str, ...]
    config: str
    ballot_style_hash: str

    def __post_init__(self) -> None:
        """Check every field fits its Borsh type, so a bad value fails where it is made."""
        # bool is an int subclass; True as a version is a caller bug, not 1.
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise InputError(f"version: expected int, got {type(self.version).__name__}")
        if not 0 <= self.version <= U32_MAX:
            raise InputError(f"version: {self.version} does not fit in u32")
        # A bare str is iterable and would silently become one contest per character.
        if isinstance(self.contests, (str, bytes)) or not isinstance(self.contests, (tuple, list)):
            raise InputError(f"contests: expected tuple of str, got {type(self.contests).__name__}")
        if len(self.contests) > U32_MAX:
            raise InputError(f"contests: {len(self.contests)} entries do not fit in u32")
        # Lists come naturally from JSON; store a tuple so the value stays hashable and immutable.
        object.__setattr__(self, "contests", tuple(self.contests))
        _utf8(self.issue_date, "issue_date", U32_MAX)
        for i, contest in enumerate(self.contests):
            _utf8(contest, f"contests[{i}]", U32_MAX)
        _utf8(self.config, "config", U32_MAX)
        _utf8(self.ballot_style_hash, "ballot_style_hash", U32_MAX)

    def to_borsh(self) -> bytes:
        """The Borsh bytes of this content: the serialized_content of seed 003."""
        return _CONTENT_SCHEMA.build(
            {
                "version": self.version,
                "issue_date": self.issue_date,
                "contests": list(self.contests),
                "config": self.config,
                "ballot_style_hash": self.ballot_style_hash,
            }
        )


def content_from_borsh(data: bytes) -> BallotContent:
    """Parse Borsh bytes back into a BallotContent; EncodingError (an InputError) if malformed."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"data: expected bytes, got {type(data).__name__}")
    data = bytes(data)
    stream = io.BytesIO(data)
    try:
        parsed = _CONTENT_SCHEMA.parse_stream(stream)
    except ConstructError as exc:
        raise EncodingError(f"ballot content: malformed Borsh ({exc})") from None
    except UnicodeDecodeError as exc:
        raise EncodingError(f"ballot content: string is not valid UTF-8 ({exc.reason})") from None
    # construct stops at the end of the struct; trailing bytes would let two
    # different byte strings stand for the same content.
    if stream.tell() != len(data):
        raise EncodingError(
            f"ballot content: {len(data) - stream.tell()} trailing bytes after the Borsh struct"
        )
    return BallotContent(
        version=parsed.version,
        issue_date=parsed.issue_date,
        contests=tuple(parsed.contests),
        config=parsed.config,
        ballot_style_hash=parsed.ballot_style_hash,
    )


def _u64_prefixed(data: bytes, field: str) -> bytes:
    """An 8-byte little-endian length, then the bytes (seed 003, Final Payload Construction)."""
    if len(data) > U64_MAX:
        raise InputError(f"{field}: length does not fit in u64")
    return struct.pack("<Q", len(data)) + data


def signing_payload(ballot_id: str, election_id: str, content: BallotContent) -> bytes:
    """The exact bytes that are signed: length-prefixed ballot_id, election_id, Borsh content."""
    ballot_bytes = _utf8(ballot_id, "ballot_id", U64_MAX)
    election_bytes = _utf8(election_id, "election_id", U64_MAX)
    if not isinstance(content, BallotContent):
        raise InputError(f"content: expected BallotContent, got {type(content).__name__}")
    return (
        _u64_prefixed(ballot_bytes, "ballot_id")
        + _u64_prefixed(election_bytes, "election_id")
        + _u64_prefixed(content.to_borsh(), "content")
    )


@dataclass(frozen=True)
class BallotSignature:
    """The two strings a ballot record carries: base64 DER public key and base64 signature."""

    voter_signing_pk: str
    voter_ballot_signature: str


def sign_ballot(
    ballot_id: str,
    election_id: str,
    content: BallotContent,
    private_key: Ed25519PrivateKey | None = None,
) -> BallotSignature:
    """Sign one ballot with a fresh Ed25519 key (or `private_key`, for tests) and drop the key."""
    payload = signing_payload(ballot_id, election_id, content)
    if private_key is None:
        # One key per ballot (seed 003): a key reused across ballots would link them.
        private_key = Ed25519PrivateKey.generate()
    elif not isinstance(private_key, Ed25519PrivateKey):
        raise InputError(
            f"private_key: expected Ed25519PrivateKey, got {type(private_key).__name__}"
        )
    signature = private_key.sign(payload)
    public_der = private_key.public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo
    )
    # Only the public half is returned; nothing here keeps the private key.
    return BallotSignature(
        voter_signing_pk=base64.b64encode(public_der).decode("ascii"),
        voter_ballot_signature=base64.b64encode(signature).decode("ascii"),
    )


def _strict_b64(text: str, ballot_id: str, what: str) -> bytes:
    """Decode standard base64, refusing stray characters, bad padding and non-canonical forms."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"ballot {ballot_id!r}: malformed {what}: not valid base64") from None
    # validate=True still accepts nonzero padding bits; refusing them keeps one
    # string per byte value, as Rust's default base64 engine does.
    if base64.b64encode(data).decode("ascii") != text:
        raise SignatureError(f"ballot {ballot_id!r}: malformed {what}: non-canonical base64")
    return data


def _load_ed25519_spki(der: bytes, ballot_id: str) -> Ed25519PublicKey:
    """Load a DER SubjectPublicKeyInfo that must hold an Ed25519 key."""
    try:
        key = load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            f"ballot {ballot_id!r}: malformed voter_signing_pk: not a DER SubjectPublicKeyInfo"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(
            f"ballot {ballot_id!r}: malformed voter_signing_pk: "
            f"{type(key).__name__} is not an Ed25519 key"
        )
    # Insist on the one DER form of the key, so the record has a single valid spelling.
    if key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo) != der:
        raise SignatureError(
            f"ballot {ballot_id!r}: malformed voter_signing_pk: non-canonical DER"
        )
    return key


def verify_ballot_signature(
    ballot_id: str,
    election_id: str,
    content: BallotContent,
    signature: BallotSignature,
) -> None:
    """Check a ballot's signature over the payload rebuilt from its fields; SignatureError if not."""
    payload = signing_payload(ballot_id, election_id, content)
    if not isinstance(signature, BallotSignature):
        raise InputError(f"signature: expected BallotSignature, got {type(signature).__name__}")
    for field in ("voter_signing_pk", "voter_ballot_signature"):
        value = getattr(signature, field)
        if not isinstance(value, str):
            raise InputError(f"{field}: expected str, got {type(value).__name__}")

    der = _strict_b64(signature.voter_signing_pk, ballot_id, "voter_signing_pk")
    public_key = _load_ed25519_spki(der, ballot_id)
    sig = _strict_b64(signature.voter_ballot_signature, ballot_id, "voter_ballot_signature")
    if len(sig) != SIGNATURE_LENGTH:
        raise SignatureError(
            f"ballot {ballot_id!r}: malformed voter_ballot_signature: wrong length "
            f"{len(sig)} bytes, expected {SIGNATURE_LENGTH}"
        )
    try:
        public_key.verify(sig, payload)
    except InvalidSignature:
        raise SignatureError(
            f"ballot {ballot_id!r}: voter_ballot_signature does not verify"
        ) from None
