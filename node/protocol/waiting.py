"""Whom a decryption session waits for: when the coordinator opens a round, and when the session is stalled.

One pure function, `decide`, of the time, the coordinator's links and what the guardians said. The
transcript asks it for the set U of a round to open, the service for the session's status and for the
time to wake up at; so the rule lives here only.

Before the first round the coordinator waits for every guardian it is linked to (or heard from within the
grace of a dropped link) to say ready, or for one step timeout; then at least k must be ready. In a round,
a step not answered within the timeout is given up on: a new round opens without the late ones if k are
left. A session is stalled when it cannot go on until someone comes back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

STEPS = ("shares", "commitments", "responses")
DEFAULT_HEARTBEAT_SECONDS = 5.0       # the node's defaults ([network] in node.toml)
DEFAULT_REDIAL_MAX_SECONDS = 30.0
SILENT_HEARTBEATS = 3                 # a node drops a link after this many heartbeats of silence
HANDSHAKE_SECONDS = 2.0               # a re-dialled link's handshake
GATHER_CAP_TIMEOUTS = 10              # see WaitingPolicy.gather_cap


@dataclass(frozen=True)
class LinkView:
    """The coordinator's link to one guardian (itself included, as connected)."""

    connected: bool
    last_seen: float | None = None    # on the same clock as `now`


@dataclass(frozen=True)
class RoundView:
    """The current round, as far as waiting goes."""

    step: str                         # shares | commitments | responses | failed | complete
    step_started: float
    waiting_for: frozenset[int] = frozenset()    # guardians of U that have not answered the step


@dataclass(frozen=True)
class SessionView:
    """What the guardians said, from the transcript."""

    n: int
    k: int
    started: float
    ready: frozenset[int]             # said ready since they were last named missing
    refused: frozenset[int] = frozenset()
    excluded: frozenset[int] = frozenset()
    current: RoundView | None = None
    fatal: bool = False               # no round can succeed

    @property
    def available(self) -> tuple[int, ...]:
        return tuple(sorted(self.ready - self.refused - self.excluded))

    @property
    def unreachable(self) -> bool:
        return self.n - len(self.refused | self.excluded) < self.k


@dataclass(frozen=True)
class WaitingPolicy:
    step_timeout: float
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS
    redial_max_seconds: float = DEFAULT_REDIAL_MAX_SECONDS

    @property
    def grace(self) -> float:
        """How long a guardian whose link dropped still counts as linked. A busy node can miss heartbeats for
        a moment: its link drops after SILENT_HEARTBEATS of silence, the re-dial sleeps a jittered back-off of
        up to 1.5 redial_max (two are allowed), then comes the handshake. Until then it is not away."""
        return SILENT_HEARTBEATS * self.heartbeat_seconds + 2 * self.redial_max_seconds + HANDSHAKE_SECONDS

    @property
    def gather_cap(self) -> float:
        """Before the first round, how long linked guardians that have not said ready keep the session from
        being stalled: they are fetching and verifying the record, which takes many timeouts on a large one,
        but a node that never finishes must not hide a stall for ever."""
        return GATHER_CAP_TIMEOUTS * self.step_timeout

    @property
    def stall_delay(self) -> float:
        """How late a round's step must be before the session is stalled on it: a late answer still completes
        the round, so one timeout (when the round is given up on) is not enough."""
        return 2 * self.step_timeout


@dataclass(frozen=True)
class Decision:
    present: tuple[int, ...] | None   # U of a round to open now
    missing: tuple[int, ...]          # the current round's guardians that round gives up on
    stalled: tuple[int, ...] | None   # whom the session cannot go on without, if it is stalled
    wake: float | None                # after now, the first time the decision may change without a message


def all_linked(n: int) -> dict[int, LinkView]:
    """Links to every guardian: the coordinator then waits for all n before the first round."""
    return {i: LinkView(True) for i in range(1, n + 1)}


def decide(now: float, links: Mapping[int, LinkView], s: SessionView, policy: WaitingPolicy) -> Decision:
    """The round to open at `now`, whom the session is stalled on, and when to look again.

    Every comparison with `now` is against a point in time, and `wake` is the first such point after
    `now`: the decision is the same at every time before it."""
    r = s.current
    if r is not None and r.step == "complete":
        return Decision(None, (), None, None)
    available = s.available
    can_open = not (s.fatal or s.unreachable) and len(available) >= s.k
    present, missing = None, ()
    if r is None:
        linked, points = _linked(now, links, policy)
        gathered = s.started + policy.step_timeout
        points += [gathered, s.started + policy.gather_cap]
        if can_open and (linked - s.refused <= set(available) or now >= gathered):
            present = available
        stalled = _stalled(now, s, linked, frozenset(), gathered, policy)
    elif r.step == "failed":
        points = []
        if can_open:
            present = available
        stalled = _stalled(now, s, set(), frozenset(), None, policy)
    else:
        given_up, stall_at = r.step_started + policy.step_timeout, r.step_started + policy.stall_delay
        points = [given_up, stall_at]
        remaining = tuple(i for i in available if i not in r.waiting_for)
        if can_open and now >= given_up and len(remaining) >= s.k:
            present, missing = remaining, tuple(sorted(r.waiting_for))
        stalled = _stalled(now, s, set(), r.waiting_for, stall_at, policy)
    return Decision(present, missing, stalled, min((p for p in points if p > now), default=None))


def _linked(now: float, links: Mapping[int, LinkView], policy: WaitingPolicy) -> tuple[set[int], list[float]]:
    """The guardians linked now, and the times at which a dropped link's grace runs out."""
    linked, points = set(), []
    for i, link in links.items():
        if link.connected:
            linked.add(i)
        elif link.last_seen is not None:
            points.append(link.last_seen + policy.grace)
            if now < link.last_seen + policy.grace:
                linked.add(i)
    return linked, points


def _stalled(now: float, s: SessionView, linked: set[int], late: frozenset[int], stall_at: float | None,
             policy: WaitingPolicy) -> tuple[int, ...] | None:
    """The absent and the late, once the session cannot go on without one of them and `stall_at` is past."""
    available = set(s.available)
    if s.current is None:
        # Linked guardians that have neither refused nor said ready are still fetching or verifying the
        # record: a stall only if even they cannot make k, or past the cap.
        working = linked - s.refused - available
        if len(available) + len(working) >= s.k and now < s.started + policy.gather_cap:
            return None
    if stall_at is not None and now < stall_at:
        return None
    if len(available - late) >= s.k:
        return None
    absent = set(range(1, s.n + 1)) - available - s.refused - s.excluded
    return tuple(sorted(absent | late))
