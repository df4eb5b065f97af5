"""Whom a decryption session waits for: when the coordinator opens a round, and when the session is stalled.

One pure function, `decide`, of the time, the coordinator's links and what the guardians said. The
transcript asks it for the set U of a round to open, the service for the session's status and for the
time to wake up at; so the rule lives here only.

Before the first round the coordinator opens a round as soon as every guardian it is linked to has said
ready and at least k have; a linked guardian that has not is still fetching or verifying the record, and is
waited for up to one step timeout. A guardian with no link is not waited for: it is missing from the round
(the compensated form then covers it, when asked for). In a round, a step not answered within the timeout is
given up on: a new round opens without the late ones if k are left. A session is stalled when it cannot go
on until someone comes back.

Who counts as linked: a live link, and a link that dropped at most `relink` (one heartbeat) ago. The re-dial
after a link that held starts again at the initial back-off (half a second), so a link reset by the network
is back within it. The trade-off: a guardian that was only slow (its machine so loaded that it missed
SILENT_HEARTBEATS heartbeats, and its link was dropped just as the coordinator gathers) is not waited for
beyond that; the round opens without it and the record names it missing, though it could have taken part
moments later. The decryption is no less valid: any k suffice. Waiting for such a guardian as long as it
may take to come back (three heartbeats, two re-dial back-offs and a handshake: over a minute with the
defaults) made every decryption with a guardian truly down wait out a full step timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

STEPS = ("shares", "commitments", "responses")
DEFAULT_HEARTBEAT_SECONDS = 5.0       # the node's defaults ([network] in node.toml)
SILENT_HEARTBEATS = 3                 # a node drops a link after this many heartbeats of silence
GATHER_CAP_TIMEOUTS = 10              # see WaitingPolicy.gather_cap


@dataclass(frozen=True)
class LinkView:
    """The coordinator's link to one guardian (itself included, as connected)."""

    connected: bool
    last_seen: float | None = None    # on the same clock as `now`
    dropped: float | None = None      # when the coordinator saw the link go down, if it did; same clock


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

    @property
    def relink(self) -> float:
        """How long a guardian whose link dropped still counts as linked (the trade-off is in the module's
        docstring): one heartbeat, more than a re-dial takes after a link that held (back-off and handshake)."""
        return self.heartbeat_seconds

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
        if can_open and (linked - s.refused - s.excluded <= set(available) or now >= gathered):
            present = available
        stalled = _stalled(now, s, linked, frozenset(), gathered, policy)
    elif r.step == "failed":
        points = []
        if can_open:
            present = available
        stalled = _stalled(now, s, set(), frozenset(), None, policy)
    else:
        given_up, stall_at = r.step_started + policy.step_timeout, r.step_started + policy.stall_delay
        linked, link_points = _linked(now, links, policy)
        points = [given_up, stall_at] + link_points
        # A guardian that answered this step but has lost its link since cannot answer the next round
        # either: it is left out, and named missing, with the late ones (it says ready again when back).
        gone = frozenset(i for i in available if i not in linked)
        remaining = tuple(i for i in available if i not in r.waiting_for and i not in gone)
        if can_open and now >= given_up and len(remaining) >= s.k:
            present, missing = remaining, tuple(sorted(r.waiting_for | gone))
        stalled = _stalled(now, s, set(), r.waiting_for, stall_at, policy)
    return Decision(present, missing, stalled, min((p for p in points if p > now), default=None))


def linked_guardians(now: float, links: Mapping[int, LinkView], policy: WaitingPolicy) -> frozenset[int]:
    """The guardians the coordinator counts as linked at `now`."""
    return frozenset(_linked(now, links, policy)[0])


def awaited(now: float, links: Mapping[int, LinkView], s: SessionView,
            policy: WaitingPolicy) -> tuple[tuple[int, ...], float | None]:
    """Whom the session is waiting for at `now`, and since when: before the first round the linked guardians
    that have not said ready (since the session started), in a round those that have not answered its step
    (since the step started). One step timeout after that, the coordinator goes on without them if it can."""
    r = s.current
    if r is None:
        busy = linked_guardians(now, links, policy) - s.refused - s.excluded - set(s.available)
        return tuple(sorted(busy)), s.started
    if r.step in STEPS:
        return tuple(sorted(r.waiting_for)), r.step_started
    return (), None


def _linked(now: float, links: Mapping[int, LinkView], policy: WaitingPolicy) -> tuple[set[int], list[float]]:
    """The guardians linked now, and the times at which a dropped link stops counting as one."""
    linked, points = set(), []
    for i, link in links.items():
        if link.connected:
            linked.add(i)
        elif link.dropped is not None:
            points.append(link.dropped + policy.relink)
            if now < link.dropped + policy.relink:
                linked.add(i)
    return linked, points


def _stalled(now: float, s: SessionView, linked: set[int], late: frozenset[int], stall_at: float | None,
             policy: WaitingPolicy) -> tuple[int, ...] | None:
    """The absent and the late, once the session cannot go on without one of them and `stall_at` is past."""
    available = set(s.available)
    if s.current is None:
        # Linked guardians that have neither refused nor said ready are still fetching or verifying the
        # record: a stall only if even they cannot make k, or past the cap.
        working = linked - s.refused - s.excluded - available
        if len(available) + len(working) >= s.k and now < s.started + policy.gather_cap:
            return None
    if stall_at is not None and now < stall_at:
        return None
    if len(available - late) >= s.k:
        return None
    absent = set(range(1, s.n + 1)) - available - s.refused - s.excluded
    return tuple(sorted(absent | late))
