"""Per-peer quotas on what a node stores of what its peers send: sans-I/O, the clock is passed in.

Every envelope that passed the inbound filter is charged to its signer (an authenticated roster key,
whoever carried it) before it is committed to the inbox:

  bytes      a token bucket: `burst_bytes` at once, refilled at `bytes_per_second`
  messages   a token bucket: `burst_messages` at once, refilled at `messages_per_second`
  sessions   envelopes of sessions this node has not opened (kept because their opening may lag):
             at most `open_sessions` such sessions per signer, and MAX_PER_OPEN_SESSION envelopes each;
             a session this node opens since no longer counts

A refused envelope is charged nothing, so the same envelope is taken once the quota allows it. The
limits are settings ([network] in node.toml, node/config.py); the defaults leave an honest key
ceremony or decryption far below them and cut a flood to a trickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

# Envelopes of one not-yet-opened session held per signer: a decryption's messages that outrun its
# request are a few per round.
MAX_PER_OPEN_SESSION = 64


@dataclass(frozen=True)
class Limits:
    burst_bytes: int
    bytes_per_second: float
    burst_messages: int
    messages_per_second: float
    open_sessions: int
    per_open_session: int = MAX_PER_OPEN_SESSION


@dataclass
class Bucket:
    """A token bucket: `level` tokens, at most `capacity`, `rate` more each second since `at`."""
    capacity: float
    rate: float
    level: float
    at: float | None = None

    def refill(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = now if self.at is None else max(self.at, now)

    def has(self, amount: float) -> bool:
        return self.level >= amount


@dataclass
class _Peer:
    bytes: Bucket
    messages: Bucket
    unopened: dict[bytes, int] = field(default_factory=dict)    # session not opened yet -> envelopes held


class Quota:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._peers: dict[bytes, _Peer] = {}

    def admit(self, sender: bytes, session: bytes, size: int, now: float,
              opened: Callable[[bytes], bool]) -> str | None:
        """None, and the envelope charged to `sender`, if it may be stored; else why not (nothing charged).
        `opened(session)` says whether this node has opened a session."""
        peer = self._peer(sender)
        peer.bytes.refill(now)
        peer.messages.refill(now)
        limits = self.limits
        unopened = not opened(session)
        if unopened and session not in peer.unopened and len(peer.unopened) >= limits.open_sessions:
            # Sessions opened since they were counted no longer count.
            peer.unopened = {s: n for s, n in peer.unopened.items() if not opened(s)}
            if len(peer.unopened) >= limits.open_sessions:
                return f"{limits.open_sessions} sessions not opened here are held for this peer already"
        if unopened and peer.unopened.get(session, 0) >= limits.per_open_session:
            return f"{limits.per_open_session} envelopes of session {session.hex()[:16]}, not opened here, held"
        if not peer.messages.has(1):
            return f"more than {limits.burst_messages} messages at once, {limits.messages_per_second:g}/s after"
        if not peer.bytes.has(size):
            return f"more than {limits.burst_bytes} bytes at once, {limits.bytes_per_second:g} bytes/s after"
        peer.messages.level -= 1
        peer.bytes.level -= size
        if unopened:
            peer.unopened[session] = peer.unopened.get(session, 0) + 1
        return None

    def _peer(self, sender: bytes) -> _Peer:
        peer = self._peers.get(sender)
        if peer is None:
            limits = self.limits
            peer = self._peers[sender] = _Peer(
                Bucket(limits.burst_bytes, limits.bytes_per_second, limits.burst_bytes),
                Bucket(limits.burst_messages, limits.messages_per_second, limits.burst_messages))
        return peer
