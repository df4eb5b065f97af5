"""The statuses a key ceremony and a decryption session go through, as tables.

The node database checks every status change against its table (node/storage/db.py), so a status
that no table allows is refused before it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Mapping, TypeVar

from node.crypto.errors import GuardianError

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(GuardianError):
    """A status change, or a first status, that the lifecycle's table does not allow."""


@dataclass(frozen=True, eq=False)      # one object per table: compared (and hashed) by identity
class Lifecycle(Generic[S]):
    name: str
    transitions: Mapping[S, frozenset[S]]      # status -> the statuses it may become; every status is a key
    initial: frozenset[S]                      # the statuses a new row may have

    def __post_init__(self) -> None:
        unknown = (set().union(*self.transitions.values()) | self.initial) - set(self.transitions)
        if unknown:
            raise ValueError(f"{self.name} lifecycle: {sorted(unknown)} are not in its table")

    def check(self, old: str, new: str) -> None:
        if new not in self.transitions.get(old, frozenset()):
            raise IllegalTransition(f"{self.name}: no transition from {str(old)!r} to {str(new)!r}")

    def check_initial(self, status: str) -> None:
        if status not in self.initial:
            raise IllegalTransition(f"{self.name}: {str(status)!r} is not a status to begin with")

    def terminal(self, status: str) -> bool:
        return not self.transitions.get(status)


class CeremonyStatus(StrEnum):
    PROPOSED = "proposed"
    INVALID = "invalid"
    REJECTED = "rejected"
    RUNNING = "running"
    COMPLETE = "complete"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"
    FINISHED_ELSEWHERE = "finished-elsewhere"


C = CeremonyStatus
CEREMONY: Lifecycle[CeremonyStatus] = Lifecycle("ceremony", {
    C.PROPOSED: frozenset({
        C.RUNNING,          # every guardian of the roster accepted it
        C.REJECTED,         # a guardian rejected it while it was open for votes
        C.FINISHED_ELSEWHERE,   # every other guardian reports it finished: a node restored from a backup
                                # holds only the replayed proposal of a ceremony it never took part in
    }),
    C.RUNNING: frozenset({
        C.COMPLETE,         # the transcript reached its outcome: joint keys and every guardian's result
        C.ABORTED,          # the transcript aborted: a culprit named, or a phase timed out
    }),
    C.COMPLETE: frozenset({
        C.SUPERSEDED,       # a ceremony replacing its keys completed
    }),
    C.INVALID: frozenset(),
    C.REJECTED: frozenset(),
    C.ABORTED: frozenset(),
    C.SUPERSEDED: frozenset(),
    C.FINISHED_ELSEWHERE: frozenset(),
}, initial=frozenset({
    C.PROPOSED,             # this node proposed it, or a peer's proposal passed this node's checks
    C.INVALID,              # a peer's proposal failed them: kept, with the reason
    C.COMPLETE,             # restored from a key backup
}))


class DecryptionStatus(StrEnum):
    FETCHING = "fetching"
    CHECKING = "checking"
    READY = "ready"
    COMPLETE = "complete"
    REFUSED = "refused"
    FAILED = "failed"
    INVALID = "invalid"


D = DecryptionStatus
DECRYPTION: Lifecycle[DecryptionStatus] = Lifecycle("decryption", {
    D.FETCHING: frozenset({
        D.CHECKING,         # every file of the record copy arrived and matches the index
        D.REFUSED,          # the index names an unsafe path
        D.FAILED,           # an error ended the session
    }),
    D.CHECKING: frozenset({
        D.READY,            # the copy verified and the policy derived the statements
        D.REFUSED,          # the verifier or the policy refused the record or the request
        D.FAILED,           # an error ended the session
    }),
    D.READY: frozenset({
        D.COMPLETE,         # a round's proof checked: the decryptions are written
        D.REFUSED,          # after a restart the policy, checked again, refuses (its ceremony superseded, say)
        D.FAILED,           # no round can succeed (fewer than k left, keys that do not fit), or an error
    }),
    D.COMPLETE: frozenset(),
    D.REFUSED: frozenset(),
    D.FAILED: frozenset(),
    D.INVALID: frozenset(),
}, initial=frozenset({
    D.FETCHING,             # this node requested it, or accepted a peer's request
    D.INVALID,              # a peer's request failed the checks: kept, with the reason
}))
