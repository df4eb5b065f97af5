"""Mutual authentication on connect, and the encrypted link that follows (sans-I/O).

Both sides send HELLO at once: [MAGIC_HELLO, version, role, identity key, ephemeral X25519 key, nonce].
The transcript hash covers both hellos in role order (dialer first), so it binds
both identity keys, both ephemeral keys and both fresh nonces. Each side then
sends AUTH: its identity key's signature over the transcript and its role. A
peer whose identity key is not in the roster is refused before any AUTH is
sent; a signature that fails ends the handshake.

Link keys come from the X25519 secret of the ephemeral keys, keyed with the
transcript (BLAKE2b), one key per direction. Every frame after the handshake is
sealed with XSalsa20-Poly1305 under a counter nonce, so frames cannot be
replayed, reordered, dropped or altered without the link failing.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable

import msgpack
import nacl.bindings
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.secret
import nacl.signing

from node.crypto.errors import GuardianError

HANDSHAKE_VERSION = 1
MAGIC_HELLO = "gn-hello"
MAGIC_AUTH = "gn-auth"
MAGIC_REFUSE = "gn-refuse"
DIALER, LISTENER = "dialer", "listener"
_TRANSCRIPT_DOMAIN = b"guardian-node handshake v1\x00"
_AUTH_DOMAIN = b"guardian-node handshake auth v1\x00"
MAX_HANDSHAKE_FRAME = 512


class HandshakeError(GuardianError):
    """peer_key is the key the peer presented; key_verified whether its signature proved it.
    Only a verified key may be blamed: anyone can put an honest guardian's key in a hello."""

    def __init__(self, reason: str, detail: str = "", peer_key: bytes | None = None,
                 key_verified: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail, self.peer_key, self.key_verified = reason, detail, peer_key, key_verified


class LinkError(GuardianError):
    """A sealed frame failed to open: the link is corrupted or attacked and must be closed."""


class SecureLink:
    """Both directions of an established link: seal outgoing frames, open incoming ones, in order."""

    def __init__(self, send_key: bytes, receive_key: bytes) -> None:
        self._send, self._receive = nacl.secret.SecretBox(send_key), nacl.secret.SecretBox(receive_key)
        self._sent = 0
        self._received = 0

    @staticmethod
    def _nonce(counter: int) -> bytes:
        return counter.to_bytes(nacl.secret.SecretBox.NONCE_SIZE, "little")

    def seal(self, frame: bytes) -> bytes:
        self._sent += 1
        return self._send.encrypt(frame, self._nonce(self._sent)).ciphertext

    def open(self, sealed: bytes) -> bytes:
        try:
            frame = self._receive.decrypt(bytes(sealed), self._nonce(self._received + 1))
        except (nacl.exceptions.CryptoError, TypeError, ValueError):
            raise LinkError("a link frame failed to open (altered, replayed or out of order)") from None
        self._received += 1
        return frame


@dataclass
class _Hello:
    raw: bytes
    role: str
    identity: bytes
    ephemeral: bytes
    nonce: bytes


class Handshake:
    """One side of the handshake. Feed it the peer's frames; it returns frames to send.

    accept_key(peer_identity) decides whether the peer is a roster member.
    """

    def __init__(self, signing_key: nacl.signing.SigningKey, role: str,
                 accept_key: Callable[[bytes], bool], random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        if role not in (DIALER, LISTENER):
            raise ValueError("role must be dialer or listener")
        self._signing_key, self.role, self._accept_key = signing_key, role, accept_key
        self._ephemeral = nacl.public.PrivateKey(random_bytes(32))
        self._nonce = random_bytes(32)
        self._mine = msgpack.packb([MAGIC_HELLO, HANDSHAKE_VERSION, role, bytes(signing_key.verify_key),
                                    bytes(self._ephemeral.public_key), self._nonce], use_bin_type=True)
        self._peer: _Hello | None = None
        self._transcript: bytes | None = None
        self.link: SecureLink | None = None
        self.peer_key: bytes | None = None

    @property
    def done(self) -> bool:
        return self.link is not None

    def hello(self) -> bytes:
        return self._mine

    def refusal(self, reason: str) -> bytes:
        """A frame telling the peer why we hang up (sent in the clear: it carries no secret)."""
        return msgpack.packb([MAGIC_REFUSE, reason[:200]], use_bin_type=True)

    def receive(self, frame: bytes) -> list[bytes]:
        if self.done:
            raise HandshakeError("protocol", "handshake frame after the handshake")
        message = _parse(frame)
        if message[0] == MAGIC_REFUSE:
            reason = message[1] if len(message) == 2 and isinstance(message[1], str) else "no reason"
            raise HandshakeError("refused by peer", reason)
        if self._peer is None:
            return self._on_hello(frame, message)
        return self._on_auth(message)

    def _on_hello(self, frame: bytes, message: list) -> list[bytes]:
        if message[0] != MAGIC_HELLO or len(message) != 6:
            raise HandshakeError("malformed", "expected a hello")
        _, version, role, identity, ephemeral, nonce = message
        if version != HANDSHAKE_VERSION:
            raise HandshakeError("unsupported version", f"handshake version {version!r}")
        if role not in (DIALER, LISTENER) or role == self.role:
            raise HandshakeError("malformed", f"peer claims role {role!r}")
        for value, size, name in ((identity, 32, "identity key"), (ephemeral, 32, "ephemeral key"),
                                  (nonce, 32, "nonce")):
            if not isinstance(value, bytes) or len(value) != size:
                raise HandshakeError("malformed", f"{name} must be {size} bytes")
        if identity == bytes(self._signing_key.verify_key):
            raise HandshakeError("own key", "the peer presents this node's own identity", identity)
        if not self._accept_key(identity):
            raise HandshakeError("unknown key", "not in the roster", identity)
        self._peer = _Hello(frame, role, identity, ephemeral, nonce)
        dialer_hello, listener_hello = (self._mine, frame) if self.role == DIALER else (frame, self._mine)
        self._transcript = hashlib.sha256(_TRANSCRIPT_DOMAIN + _length(dialer_hello) + dialer_hello
                                          + _length(listener_hello) + listener_hello).digest()
        signature = self._signing_key.sign(_AUTH_DOMAIN + self.role.encode() + self._transcript).signature
        return [msgpack.packb([MAGIC_AUTH, signature], use_bin_type=True)]

    def _on_auth(self, message: list) -> list[bytes]:
        peer = self._peer
        if message[0] != MAGIC_AUTH or len(message) != 2 or not isinstance(message[1], bytes):
            raise HandshakeError("malformed", "expected an auth")
        try:
            nacl.signing.VerifyKey(peer.identity).verify(_AUTH_DOMAIN + peer.role.encode() + self._transcript,
                                                        message[1])
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
            raise HandshakeError("bad signature", "the peer's handshake signature does not verify",
                                 peer.identity) from None
        try:
            shared = nacl.bindings.crypto_scalarmult(bytes(self._ephemeral), peer.ephemeral)
        except nacl.exceptions.CryptoError:
            raise HandshakeError("malformed", "degenerate ephemeral key", peer.identity, key_verified=True) from None
        keys = nacl.hash.blake2b(shared, digest_size=64, key=self._transcript, person=b"gn-link-keys",
                                 encoder=nacl.encoding.RawEncoder)
        dialer_to_listener, listener_to_dialer = keys[:32], keys[32:]
        if self.role == DIALER:
            self.link = SecureLink(dialer_to_listener, listener_to_dialer)
        else:
            self.link = SecureLink(listener_to_dialer, dialer_to_listener)
        self.peer_key = peer.identity
        return []


def _length(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big")


def _parse(frame: object) -> list:
    if not isinstance(frame, (bytes, bytearray)) or len(frame) > MAX_HANDSHAKE_FRAME:
        raise HandshakeError("malformed", "handshake frame is not a short binary frame")
    try:
        message = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=True,
                                  ext_hook=_no_ext)
    except Exception:
        raise HandshakeError("malformed", "handshake frame is not msgpack") from None
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        raise HandshakeError("malformed", "handshake frame has no kind")
    return message


def _no_ext(code, data):
    raise ValueError("extension types are not allowed")
