"""Frames on an authenticated link, both ways, as events: sans-I/O.

Inside the SecureLink (node/protocol/handshake.py), every frame is msgpack [kind, payload]:
  env    a signed envelope from its signer            -> EnvelopeFrame(relayed=False)
  relay  another guardian's envelope passed on          -> EnvelopeFrame(relayed=True)
  sync   which of our messages the peer already holds  -> Sync(since)
  hb     heartbeat                                     -> Heartbeat()
  want   record files asked for by SHA-256             -> Want(digests)
  blob   one record file                               -> Blob(digest, data)
`LinkFrames` turns sealed bytes into one event (or raises) and events' parts into sealed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from node.protocol.envelope import EnvelopeError
from node.protocol.handshake import SecureLink

MAX_WANTED = 256       # digests in one want frame


@dataclass(frozen=True)
class EnvelopeFrame:
    data: bytes
    relayed: bool


@dataclass(frozen=True)
class Sync:
    since: int


@dataclass(frozen=True)
class Heartbeat:
    pass


@dataclass(frozen=True)
class Want:
    digests: list[bytes]


@dataclass(frozen=True)
class Blob:
    digest: bytes
    data: bytes


Event = EnvelopeFrame | Sync | Heartbeat | Want | Blob


def encode(kind: str, payload) -> bytes:
    return msgpack.packb([kind, payload], use_bin_type=True)


def decode(frame: bytes) -> Event:
    """One opened frame as an event; EnvelopeError("malformed", ...) for anything else."""
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception:
        raise EnvelopeError("malformed", "link frame is not msgpack") from None
    if not isinstance(value, list) or len(value) != 2 or value[0] not in ("env", "relay", "sync", "hb", "want", "blob"):
        raise EnvelopeError("malformed", "unknown link frame")
    kind, payload = value
    if kind in ("env", "relay"):
        if not isinstance(payload, bytes):
            raise EnvelopeError("malformed", "envelope frame without bytes")
        return EnvelopeFrame(payload, relayed=kind == "relay")
    if kind == "hb":
        return Heartbeat()
    if kind == "sync":
        since = payload.get("since") if isinstance(payload, dict) else None
        if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**63:
            raise EnvelopeError("malformed", "sync without a valid 'since'")
        return Sync(since)
    if kind == "want":
        if not (isinstance(payload, list) and len(payload) <= MAX_WANTED and
                all(isinstance(d, bytes) and len(d) == 32 for d in payload)):
            raise EnvelopeError("malformed", f"want frame must list at most {MAX_WANTED} SHA-256 digests")
        return Want(payload)
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[0], bytes)
            and len(payload[0]) == 32 and isinstance(payload[1], bytes)):
        raise EnvelopeError("malformed", "blob frame must be [digest, bytes]")
    return Blob(payload[0], payload[1])


class LinkFrames:
    """Seal and open the frames of one link (the sealing counters follow the wire order)."""

    def __init__(self, link: SecureLink) -> None:
        self.link = link

    def seal(self, kind: str, payload) -> bytes:
        return self.link.seal(encode(kind, payload))

    def open(self, sealed: bytes) -> Event:
        """LinkError when the frame does not open (the link must close); EnvelopeError when it is malformed."""
        return decode(self.link.open(sealed))


def _no_ext(code, data):
    raise ValueError("extension type")
