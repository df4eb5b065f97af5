"""The inbound filter: every application envelope a node receives passes here before it is used.

Sans-I/O and deterministic: it knows the roster, the sessions this node takes
part in, and what it has already accepted (loaded from storage at start). It
returns the envelope to accept or raises EnvelopeError with the reason that
`guardian status` counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from node.protocol.envelope import Envelope, EnvelopeError, decode_envelope


class Equivocation(EnvelopeError):
    """A validly signed envelope that reuses a sequence number of its sender with other content.

    The fault is the signer's, not the peer's that carried it: `envelope` is the evidence.
    """

    def __init__(self, envelope: Envelope) -> None:
        super().__init__("conflicting sequence number", f"seq {envelope.seq} signed twice")
        self.envelope = envelope


@dataclass
class InboundFilter:
    roster_keys: frozenset[bytes]
    own_key: bytes
    max_frame_bytes: int
    sessions: set[bytes]
    accepted_types: dict[bytes, frozenset[str]] = field(default_factory=dict)   # session -> message types
    open_types: frozenset[str] = frozenset()    # kept even for a session not known yet (its opening may lag)
    _seen: set[bytes] = field(default_factory=set)
    _by_seq: dict[tuple[bytes, int], bytes] = field(default_factory=dict)

    def remember(self, envelopes: Iterable[Envelope]) -> None:
        """Load what was accepted before a restart, so replays stay replays."""
        for e in envelopes:
            self._seen.add(e.digest)
            self._by_seq[(e.sender, e.seq)] = e.digest

    def forget(self, envelope: Envelope) -> None:
        """Undo the check of an envelope that was not stored after all, so that it is taken when it comes again."""
        self._seen.discard(envelope.digest)
        self._by_seq.pop((envelope.sender, envelope.seq), None)

    def check(self, frame: bytes) -> Envelope:
        envelope = decode_envelope(frame, self.max_frame_bytes)        # oversized, malformed, unsigned
        if envelope.sender not in self.roster_keys:
            raise EnvelopeError("unknown key", "sender is not in the roster")
        if envelope.sender == self.own_key:
            raise EnvelopeError("own message", "an envelope signed by this node came back")
        envelope.verify()                                                # bad signature
        if envelope.session not in self.sessions and envelope.type not in self.open_types:
            raise EnvelopeError("unknown session", envelope.session.hex()[:16])
        allowed = self.accepted_types.get(envelope.session)
        if allowed is not None and envelope.type not in allowed:
            raise EnvelopeError("unknown type", envelope.type)
        digest = envelope.digest
        if digest in self._seen:
            raise EnvelopeError("replay", f"seq {envelope.seq} already received")
        previous = self._by_seq.get((envelope.sender, envelope.seq))
        if previous is not None:
            # Two different envelopes signed with one sequence number: evidence of equivocation.
            raise Equivocation(envelope)
        self._seen.add(digest)
        self._by_seq[(envelope.sender, envelope.seq)] = digest
        return envelope
