"""Frames on an authenticated link, both ways, as events: sans-I/O.

Inside the SecureLink (node/protocol/handshake.py), every frame is msgpack [kind, payload]:
  env    a signed envelope from its signer            -> EnvelopeFrame(relayed=False)
  relay  another guardian's envelope passed on          -> EnvelopeFrame(relayed=True)
  sync   which of our messages the peer already holds  -> Sync(since)
  hb     heartbeat                                     -> Heartbeat()
  want   byte ranges of record files, by SHA-256       -> Want(ranges): [[digest, offset, length], ...]
  blob   one chunk of a record file                    -> Blob(digest, offset, total, data)
  lack   record files asked for that the sender lacks  -> Lack(digests)
A record file of any size goes in chunks: the receiver asks for ranges (its credit), the sender sends
only what was asked, each chunk in one frame of at most max_frame_bytes (`chunk_bytes`). An empty chunk
at offset == total says the file ends there (the answer to a range at or past its end).
`LinkFrames` turns sealed bytes into one event (or raises) and events' parts into sealed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from node.protocol.envelope import EnvelopeError
from node.protocol.handshake import SecureLink

MAX_WANTED = 256            # ranges in one want frame, digests in one lack frame
MAX_FILE_BYTES = 2**40      # the largest record file a node sends or takes
MAX_RANGE_BYTES = 64 * 2**20    # one asked range (the sender splits it into chunks of its own frame size)
BLOB_OVERHEAD = 128         # a blob frame's bytes around its chunk: msgpack and the seal's tag


def chunk_bytes(max_frame_bytes: int) -> int:
    """The largest chunk whose sealed blob frame fits in max_frame_bytes."""
    return max_frame_bytes - BLOB_OVERHEAD


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
class Range:
    digest: bytes
    offset: int
    length: int


@dataclass(frozen=True)
class Want:
    ranges: tuple[Range, ...]


@dataclass(frozen=True)
class Blob:
    digest: bytes
    offset: int
    total: int
    data: bytes


@dataclass(frozen=True)
class Lack:
    digests: tuple[bytes, ...]


Event = EnvelopeFrame | Sync | Heartbeat | Want | Blob | Lack
KINDS = ("env", "relay", "sync", "hb", "want", "blob", "lack")


def encode(kind: str, payload) -> bytes:
    return msgpack.packb([kind, payload], use_bin_type=True)


def decode(frame: bytes, max_chunk: int = MAX_RANGE_BYTES) -> Event:
    """One opened frame as an event; EnvelopeError("malformed", ...) for anything else. A blob's chunk
    may hold at most `max_chunk` bytes (this node's chunk_bytes)."""
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception:
        raise EnvelopeError("malformed", "link frame is not msgpack") from None
    if not isinstance(value, list) or len(value) != 2 or value[0] not in KINDS:
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
        if not (isinstance(payload, list) and 1 <= len(payload) <= MAX_WANTED):
            raise EnvelopeError("malformed", f"want frame must list 1 to {MAX_WANTED} ranges")
        return Want(tuple(_range(item) for item in payload))
    if kind == "lack":
        if not (isinstance(payload, list) and 1 <= len(payload) <= MAX_WANTED
                and all(_is_digest(d) for d in payload)):
            raise EnvelopeError("malformed", f"lack frame must list 1 to {MAX_WANTED} SHA-256 digests")
        return Lack(tuple(payload))
    if not (isinstance(payload, list) and len(payload) == 4 and _is_digest(payload[0])
            and isinstance(payload[3], bytes)):
        raise EnvelopeError("malformed", "blob frame must be [digest, offset, total, bytes]")
    digest, offset, total, data = payload
    if not (_is_size(total) and _is_size(offset) and offset <= total):
        raise EnvelopeError("malformed", f"blob frame: offset and total must be 0 <= offset <= total <= "
                                         f"{MAX_FILE_BYTES}")
    if len(data) > max_chunk:
        raise EnvelopeError("malformed", f"blob frame: a chunk of {len(data)} bytes, more than {max_chunk}")
    if offset + len(data) > total:
        raise EnvelopeError("malformed", f"blob frame: {len(data)} bytes at {offset} run past the total {total}")
    if not data and offset != total:
        raise EnvelopeError("malformed", "blob frame: an empty chunk before the end of the file")
    return Blob(digest, offset, total, data)


def _is_digest(value) -> bool:
    return isinstance(value, bytes) and len(value) == 32


def _is_size(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FILE_BYTES


def _range(item) -> Range:
    if not (isinstance(item, list) and len(item) == 3 and _is_digest(item[0]) and _is_size(item[1])
            and isinstance(item[2], int) and not isinstance(item[2], bool) and 1 <= item[2] <= MAX_RANGE_BYTES
            and item[1] + item[2] <= MAX_FILE_BYTES):
        raise EnvelopeError("malformed", f"want frame: a range must be [digest, offset, length] with length 1 to "
                                         f"{MAX_RANGE_BYTES}, within {MAX_FILE_BYTES} bytes")
    return Range(item[0], item[1], item[2])


class LinkFrames:
    """Seal and open the frames of one link (the sealing counters follow the wire order)."""

    def __init__(self, link: SecureLink, max_chunk: int = MAX_RANGE_BYTES) -> None:
        self.link, self.max_chunk = link, max_chunk

    def seal(self, kind: str, payload) -> bytes:
        return self.link.seal(encode(kind, payload))

    def open(self, sealed: bytes) -> Event:
        """LinkError when the frame does not open (the link must close); EnvelopeError when it is malformed."""
        return decode(self.link.open(sealed), self.max_chunk)


def _no_ext(code, data):
    raise ValueError("extension type")
