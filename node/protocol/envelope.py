"""Signed envelopes: the unit of every message between guardian nodes (docs/ARCHITECTURE.md "The wire").

On the wire an envelope is a msgpack array:
    [version, type, session, sender, seq, body, signature]
version   int, PROTOCOL_VERSION
type      str, the message type ("heartbeat", "hello-peer", ceremony messages ...)
session   32 bytes: the hash of the agreed election config, or NODE_SESSION for link upkeep
sender    32 bytes: the sender's Ed25519 public key
seq       int >= 1: the sender's sequence number, one counter per sender
body      any msgpack value made of nil, bool, int, str, bin, array and map with str keys
signature 64 bytes: Ed25519 by `sender` over SIGNING_DOMAIN || msgpack([version .. body])

Decoding is strict and bounded: a frame that is not exactly one such array,
with those types and sizes, raises EnvelopeError with a short reason, and
nothing else ever escapes the decoder.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import msgpack
import nacl.exceptions
import nacl.signing

from node.crypto.errors import GuardianError

PROTOCOL_VERSION = 1
SIGNING_DOMAIN = b"guardian-node envelope v1\x00"
NODE_SESSION = bytes(32)
MAX_TYPE_CHARS = 64
MAX_DEPTH = 16


class EnvelopeError(GuardianError):
    """A frame refused; `reason` is one of the short codes counted in `guardian status`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Envelope:
    version: int
    type: str
    session: bytes
    sender: bytes
    seq: int
    body: object
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return SIGNING_DOMAIN + msgpack.packb(
            [self.version, self.type, self.session, self.sender, self.seq, self.body], use_bin_type=True)

    def encode(self) -> bytes:
        return msgpack.packb([self.version, self.type, self.session, self.sender, self.seq, self.body,
                              self.signature], use_bin_type=True)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the encoded envelope: its identity for replay detection."""
        return hashlib.sha256(self.encode()).digest()

    def verify(self) -> None:
        """Check the signature against the sender key the envelope names."""
        if len(self.signature) != 64:
            raise EnvelopeError("unsigned", "no 64-byte signature")
        try:
            nacl.signing.VerifyKey(self.sender).verify(self.signed_bytes(), self.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError):
            raise EnvelopeError("bad signature", "the signature does not verify") from None


def seal_envelope(signing_key: nacl.signing.SigningKey, type_: str, session: bytes, seq: int,
                  body: object) -> Envelope:
    """Build and sign an envelope from this node."""
    unsigned = Envelope(PROTOCOL_VERSION, type_, session, bytes(signing_key.verify_key), seq, body)
    check_body(body)
    signature = signing_key.sign(unsigned.signed_bytes()).signature
    return Envelope(PROTOCOL_VERSION, type_, session, unsigned.sender, seq, body, signature)


def check_body(value: object, depth: int = 0) -> None:
    """Only plain msgpack data: no floats (no canonical form), no ext types, string map keys, bounded depth."""
    if depth > MAX_DEPTH:
        raise EnvelopeError("malformed", "body nested too deeply")
    if isinstance(value, msgpack.ExtType):   # a tuple subclass: test it before the arrays
        raise EnvelopeError("malformed", "msgpack extension types are not allowed")
    if value is None or isinstance(value, (bool, str, bytes)):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise EnvelopeError("malformed", "integer out of msgpack range")
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_body(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EnvelopeError("malformed", "map keys must be strings")
            check_body(item, depth + 1)
        return
    raise EnvelopeError("malformed", f"unsupported value of type {type(value).__name__}")


def decode_envelope(frame: bytes, max_bytes: int) -> Envelope:
    """Parse one frame into an Envelope. Raises EnvelopeError("oversized" | "malformed" | "unsupported version")."""
    if not isinstance(frame, (bytes, bytearray)):
        raise EnvelopeError("malformed", "not a binary frame")
    if len(frame) > max_bytes:
        raise EnvelopeError("oversized", f"{len(frame)} bytes > limit {max_bytes}")
    try:
        value = msgpack.unpackb(
            bytes(frame), raw=False, use_list=True, strict_map_key=True,
            ext_hook=_refuse_ext, unicode_errors="strict")
    except EnvelopeError:
        raise
    except Exception as e:  # msgpack raises many types for bad input (ExtraData, ValueError, ...)
        raise EnvelopeError("malformed", f"not one msgpack value ({type(e).__name__})") from None
    if not isinstance(value, list) or len(value) != 7:
        raise EnvelopeError("malformed", "an envelope is an array of 7 fields")
    version, type_, session, sender, seq, body, signature = value
    if isinstance(version, bool) or not isinstance(version, int):
        raise EnvelopeError("malformed", "version must be an integer")
    if version != PROTOCOL_VERSION:
        raise EnvelopeError("unsupported version", f"version {version}")
    if not isinstance(type_, str) or not 1 <= len(type_) <= MAX_TYPE_CHARS:
        raise EnvelopeError("malformed", "type must be a short string")
    if not isinstance(session, bytes) or len(session) != 32:
        raise EnvelopeError("malformed", "session must be 32 bytes")
    if not isinstance(sender, bytes) or len(sender) != 32:
        raise EnvelopeError("malformed", "sender must be a 32-byte key")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq < 2**63:
        raise EnvelopeError("malformed", "seq must be a positive integer")
    if not isinstance(signature, bytes):
        raise EnvelopeError("malformed", "signature must be bytes")
    if len(signature) == 0:
        raise EnvelopeError("unsigned", "empty signature")
    check_body(body)
    envelope = Envelope(version, type_, session, sender, seq, body, signature)
    if envelope.encode() != bytes(frame):
        raise EnvelopeError("malformed", "not in canonical msgpack form")
    return envelope


def _refuse_ext(code: int, data: bytes):
    raise EnvelopeError("malformed", f"msgpack extension type {code}")
