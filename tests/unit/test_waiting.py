"""The waiting rule of a decryption session (node/protocol/waiting.py): when the coordinator opens a round,
whom it gives up on, when the session is stalled, and when to wake up.

Scenarios run on a fake clock that jumps from one wake-up deadline to the next, as the service does; the
properties run on random sessions, against the rule written out a second time, as plainly as it is said
(`reference` below).
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.waiting import (
    STEPS, Decision, LinkView, RoundView, SessionView, WaitingPolicy, all_linked, awaited, decide,
)
from node.record.decrypted import quorum

N, K, T = 5, 3, 10.0
POLICY = WaitingPolicy(T)                              # heartbeat 5 s: a dropped link counts for 5 s more


class Clock:
    """Fake time: moves only when told, to a wake-up deadline or by a step."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def wake(self, d: Decision) -> None:
        assert d.wake is not None and d.wake > self.now
        self.now = d.wake


def linked(*guardians: int, dropped: dict[int, float | None] | None = None) -> dict[int, LinkView]:
    """Live links to `guardians`; links to the `dropped` ones that went down at the time given (None: before
    the coordinator was there to see it), each last heard from a heartbeat before."""
    links = {i: LinkView(True) for i in guardians}
    links.update({i: LinkView(False, None if at is None else at - POLICY.heartbeat_seconds, at)
                  for i, at in (dropped or {}).items()})
    return links


def view(ready=(), refused=(), excluded=(), current=None, started=0.0, n=N, k=K, fatal=False) -> SessionView:
    return SessionView(n, k, started, frozenset(ready), frozenset(refused), frozenset(excluded), current, fatal)


# --- the policy ---------------------------------------------------------------------------------------

def test_the_derived_constants():
    assert POLICY.relink == 5                                    # one heartbeat, whatever the re-dial back-off
    assert WaitingPolicy(4, heartbeat_seconds=1).relink == 1
    assert POLICY.gather_cap == 10 * T and POLICY.stall_delay == 2 * T


# --- before the first round -------------------------------------------------------------------------------

def test_all_ready_opens_at_once():
    d = decide(0.0, all_linked(N), view(ready=range(1, N + 1)), POLICY)
    assert d.present == (1, 2, 3, 4, 5) and d.missing == () and d.stalled is None


def test_exactly_k_ready_and_no_one_else_linked_opens_at_once():
    d = decide(0.0, linked(1, 2, 3), view(ready=(1, 2, 3)), POLICY)
    assert d.present == (1, 2, 3) and d.stalled is None


def test_exactly_k_ready_and_one_unlinked_opens_at_once():
    """Three guardians, k = 2, the third down: the round opens as soon as the two are ready, and the third
    is missing from it, as the record will say."""
    s = view(ready=(1, 2), n=3, k=2)
    for links in (linked(1, 2), linked(1, 2, dropped={3: None}), linked(1, 2, dropped={3: -POLICY.relink})):
        d = decide(0.0, links, s, POLICY)
        assert d.present == (1, 2) and d.missing == () and d.stalled is None
        assert quorum(3, d.present, compensated=False).missing == (3,)
        assert (quorum(3, d.present, compensated=True).form, quorum(3, d.present, True).missing) == \
            ("compensated", (3,))


def test_a_linked_busy_guardian_is_waited_for_until_the_timeout():
    """Three guardians, k = 2, two ready, the third linked and still verifying: it is waited for (a step
    timeout at most), and the round then opens without it."""
    clock, links, s = Clock(), linked(1, 2, 3), view(ready=(1, 2), n=3, k=2)
    d = decide(clock.now, links, s, POLICY)
    assert d.present is None and d.stalled is None and d.wake == T
    assert awaited(clock.now, links, s, POLICY) == ((3,), 0.0)
    assert decide(T - 0.001, links, s, POLICY).present is None
    assert decide(T - 0.001, linked(1, 2), s, POLICY).present == (1, 2)     # once its link is gone: at once
    assert decide(T - 0.001, links, replace(s, ready=frozenset({1, 2, 3})), POLICY).present == (1, 2, 3)
    clock.wake(d)
    d = decide(clock.now, links, s, POLICY)
    assert d.present == (1, 2) and quorum(3, d.present, False).missing == (3,)


def test_exactly_k_ready_waits_for_the_linked_ones_until_the_timeout():
    clock, links, s = Clock(), all_linked(N), view(ready=(1, 2, 3))
    d = decide(clock.now, links, s, POLICY)
    assert d.present is None and d.stalled is None and d.wake == T
    clock.wake(d)
    assert decide(clock.now, links, s, POLICY).present == (1, 2, 3)


def test_a_linked_busy_guardian_is_waited_for_up_to_the_cap():
    """Two ready, a third linked but still verifying: no round (fewer than k), and no stall until the cap."""
    clock, links, s = Clock(), linked(1, 2, 3), view(ready=(1, 2))
    seen = []
    d = decide(clock.now, links, s, POLICY)
    while d.stalled is None:
        assert d.present is None
        seen.append(clock.now)
        clock.wake(d)
        d = decide(clock.now, links, s, POLICY)
    assert seen == [0.0, T] and clock.now == POLICY.gather_cap
    assert d.stalled == (3, 4, 5) and d.present is None and d.wake is None
    # with nobody else linked, the stall comes with the gathering timeout
    assert decide(T, linked(1, 2), s, POLICY).stalled == (3, 4, 5)
    assert decide(T - 0.5, linked(1, 2), s, POLICY).stalled is None


def test_a_busy_guardian_does_not_hold_a_round_that_k_can_make_past_the_timeout():
    d = decide(T, linked(1, 2, 3, 4), view(ready=(1, 2, 3)), POLICY)
    assert d.present == (1, 2, 3)


def test_a_link_dropped_moments_ago_counts_for_one_heartbeat_and_not_after():
    clock, s = Clock(), view(ready=(1, 2, 3))
    links = linked(1, 2, 3, dropped={4: -1.0})                   # went down a second ago
    policy = WaitingPolicy(1000.0)                               # the timeout is not what ends the wait
    d = decide(clock.now, links, s, policy)
    assert d.present is None and d.wake == -1.0 + policy.relink
    assert awaited(clock.now, links, s, policy) == ((4,), 0.0)
    clock.wake(d)
    d = decide(clock.now, links, s, policy)
    assert d.present == (1, 2, 3)
    assert decide(clock.now - 0.001, links, s, policy).present is None
    assert awaited(clock.now, links, s, policy) == ((), 0.0)


def test_a_link_heard_from_lately_but_down_is_not_waited_for():
    """Last heard a moment ago, but its drop was not seen (the coordinator started since): not linked."""
    s = view(ready=(1, 2, 3))
    assert decide(0.0, {**linked(1, 2, 3), 4: LinkView(False, last_seen=-0.5)}, s, POLICY).present == (1, 2, 3)


def test_a_link_dropped_moments_ago_is_no_stall_and_a_heartbeat_later_it_is():
    clock, s = Clock(2 * T), view(ready=(1, 2))
    links = linked(1, 2, dropped={3: clock.now - 1.0})
    d = decide(clock.now, links, s, POLICY)
    assert d.stalled is None and d.wake == clock.now - 1.0 + POLICY.relink
    clock.wake(d)
    assert decide(clock.now, links, s, POLICY).stalled == (3, 4, 5)
    assert decide(clock.now, linked(1, 2, dropped={3: None}), s, POLICY).stalled == (3, 4, 5)   # drop not seen


def test_a_refusal_is_not_waited_for():
    s = view(ready=(1, 2, 3), refused=(4,))
    assert decide(0.0, linked(1, 2, 3, 4), s, POLICY).present == (1, 2, 3)
    assert decide(0.0, linked(1, 2, 3, 4, 5), s, POLICY).present is None


def test_fewer_than_k_never_opens_a_round():
    for now in (0.0, T, 10 * T, 10**9):
        for links in (all_linked(N), linked(1, 2)):
            assert decide(now, links, view(ready=(1, 2)), POLICY).present is None


def test_a_session_that_cannot_succeed_opens_nothing():
    assert decide(T, all_linked(N), view(ready=(1, 2, 3), fatal=True), POLICY).present is None
    assert decide(T, all_linked(N), view(ready=(1, 2, 3), refused=(4, 5), excluded=(1,)), POLICY).present is None


# --- in a round ---------------------------------------------------------------------------------------

def test_a_late_step_is_given_up_on_after_the_timeout():
    clock = Clock(5.0)
    s = view(ready=range(1, 6), current=RoundView("commitments", 5.0, frozenset({4, 5})))
    d = decide(clock.now, all_linked(N), s, POLICY)
    assert d.present is None and d.wake == 5.0 + T
    clock.wake(d)
    d = decide(clock.now, all_linked(N), s, POLICY)
    assert d.present == (1, 2, 3) and d.missing == (4, 5) and d.stalled is None
    assert d.wake == 5.0 + 2 * T


def test_a_guardian_that_answered_but_lost_its_link_is_left_out_of_the_next_round():
    # g4 is late with its commitments; g5 sent them but its link went down at 6 s (killed): after the
    # timeout the next round is the three that can still answer, and both are named missing.
    s = view(ready=range(1, 6), current=RoundView("commitments", 5.0, frozenset({4})))
    links = linked(1, 2, 3, 4, dropped={5: 6.0})
    d = decide(5.0 + T, links, s, POLICY)
    assert d.present == (1, 2, 3) and d.missing == (4, 5), d
    # still linked (or dropped less than a heartbeat ago): it stays in
    assert decide(5.0 + T, all_linked(N), s, POLICY).present == (1, 2, 3, 5)
    assert decide(5.0 + T, linked(1, 2, 3, 4, dropped={5: 5.0 + T - 1}), s, POLICY).present == (1, 2, 3, 5)


def test_a_late_step_without_k_left_stalls_after_two_timeouts():
    clock = Clock(0.0)
    s = view(ready=range(1, 6), current=RoundView("responses", 0.0, frozenset({3, 4, 5})))
    d = decide(clock.now, all_linked(N), s, POLICY)
    clock.wake(d)
    d = decide(clock.now, all_linked(N), s, POLICY)
    assert clock.now == T and d.present is None and d.stalled is None       # a late answer may still come
    clock.wake(d)
    d = decide(clock.now, all_linked(N), s, POLICY)
    assert clock.now == 2 * T and d.stalled == (3, 4, 5) and d.wake is None


def test_a_guardian_that_says_ready_again_ends_a_stall():
    failed = RoundView("failed", 0.0)
    stalled = view(ready=(1, 2), excluded=(3,), current=failed)
    assert decide(100.0, {}, stalled, POLICY) == Decision(None, (), (4, 5), None)
    back = replace(stalled, ready=frozenset({1, 2, 5}))
    assert decide(100.0, {}, back, POLICY) == Decision((1, 2, 5), (), None, None)


def test_a_complete_session_decides_nothing():
    s = view(ready=(1, 2), current=RoundView("complete", 0.0))
    assert decide(10**6, {}, s, POLICY) == Decision(None, (), None, None)


# --- properties ------------------------------------------------------------------------------------------

@st.composite
def situations(draw, integral: bool = False):
    """A random session on the coordinator's side: (now, links, view, policy)."""
    time = (st.integers(-300, 300).map(float) if integral
            else st.floats(-300, 300, allow_nan=False, allow_infinity=False))
    n = draw(st.integers(1, 7))
    k = draw(st.integers(1, n))
    guardians = st.sets(st.integers(1, n))
    timeout = draw(st.integers(1, 60).map(float) if integral else st.floats(1, 60))
    policy = WaitingPolicy(timeout, draw(st.sampled_from([1.0, 5.0])))
    started = draw(time)
    current = None
    if draw(st.booleans()):
        step = draw(st.sampled_from(STEPS + ("failed", "complete")))
        late = draw(guardians) if step in STEPS else set()
        current = RoundView(step, started + abs(draw(time)), frozenset(late))
    s = SessionView(n, k, started, frozenset(draw(guardians)), frozenset(draw(guardians)),
                    frozenset(draw(guardians)), current, draw(st.booleans()))
    links = {}
    for i in range(1, n + 1):
        kind = draw(st.sampled_from(["none", "connected", "dropped", "drop unseen", "never"]))
        if kind == "connected":
            links[i] = LinkView(True, draw(time))
        elif kind == "dropped":
            seen = draw(time)
            links[i] = LinkView(False, seen, seen + draw(st.sampled_from([0.0, 0.5, 3.0, 20.0])))
        elif kind == "drop unseen":
            links[i] = LinkView(False, draw(time))
        elif kind == "never":
            links[i] = LinkView(False)
    return draw(time), links, s, policy


@settings(max_examples=400, deadline=None)
@given(situations())
def test_a_round_has_at_least_k_ready_guardians_and_never_a_late_one(situation):
    now, links, s, policy = situation
    d = decide(now, links, s, policy)
    available = s.ready - s.refused - s.excluded
    if len(available) < s.k:
        assert d.present is None
    if d.present is not None:
        assert len(d.present) >= s.k and list(d.present) == sorted(set(d.present))
        assert set(d.present) <= available and not set(d.present) & (s.refused | s.excluded)
        late = s.current.waiting_for if s.current is not None else frozenset()
        assert not set(d.present) & late and set(d.missing) >= late
        # besides the late: those that answered but have lost their link since, and only those
        gone = set(d.missing) - late
        assert gone <= available - reference_expected(now, links, policy) and not gone & set(d.present)
        assert d.stalled is None
    else:
        assert d.missing == ()
    if d.stalled is not None:             # the absent, and the late of the round (whatever they said since)
        late = s.current.waiting_for if s.current is not None else frozenset()
        assert set(d.stalled) <= set(range(1, s.n + 1)) and d.stalled == tuple(sorted(set(d.stalled)))
        assert not set(d.stalled) & (s.refused | s.excluded) - late


@settings(max_examples=400, deadline=None)
@given(situations(), st.floats(0, 1))
def test_the_wake_up_deadline_is_in_the_future_and_nothing_changes_before_it(situation, fraction):
    now, links, s, policy = situation
    d = decide(now, links, s, policy)
    assert d.wake is None or d.wake > now
    later = now + 10**6 if d.wake is None else now + fraction * (d.wake - now)
    if later < (d.wake if d.wake is not None else float("inf")):
        assert decide(later, links, s, policy) == d


@settings(max_examples=200, deadline=None)
@given(situations())
def test_following_the_wake_ups_the_decision_settles(situation):
    """A fake clock jumping from deadline to deadline comes to a decision that no time changes."""
    now, links, s, policy = situation
    d = decide(now, links, s, policy)
    for _ in range(len(links) + 4):
        if d.wake is None:
            break
        now = d.wake
        d = decide(now, links, s, policy)
    assert d.wake is None
    assert decide(now + 10**7, links, s, policy) == d


@settings(max_examples=400, deadline=None)
@given(situations())
def test_a_guardian_without_a_link_never_delays_the_first_round(situation):
    """Before the first round: every linked guardian ready and k of them make the round at once, and the
    links of the guardians not counted as linked could as well not be there."""
    now, links, s, policy = situation
    s = replace(s, current=None)
    d = decide(now, links, s, policy)
    counted = reference_expected(now, links, policy)
    assert decide(now, {i: link for i, link in links.items() if i in counted}, s, policy) == d
    can = not s.fatal and not s.unreachable and len(s.available) >= s.k
    if can and counted - s.refused - s.excluded <= set(s.available):
        assert d.present == s.available
    if d.present is None and can:         # it waits only for linked guardians, and only up to the timeout
        assert now < s.started + policy.step_timeout and awaited(now, links, s, policy)[0]


@settings(max_examples=600, deadline=None)
@given(situations(integral=True))
def test_the_rule_is_the_reference(situation):
    now, links, s, policy = situation
    d = decide(now, links, s, policy)
    assert d.present == reference_next_round(now, links, s, policy)
    assert d.stalled == reference_stalled(now, links, s, policy)


# --- the rule, written out plainly ------------------------------------------------------------------------------

def reference_expected(now, links, policy) -> set[int]:
    """Linked: a live link, or one seen going down less than a heartbeat ago."""
    return {i for i, link in links.items()
            if link.connected or (link.dropped is not None and now - link.dropped < policy.heartbeat_seconds)}


def reference_next_round(now, links, s, policy):
    r, timeout = s.current, policy.step_timeout
    unreachable = s.n - len(s.excluded | s.refused) < s.k
    if (r is not None and r.step == "complete") or s.fatal or unreachable:
        return None
    available = sorted(s.ready - s.refused - s.excluded)
    if len(available) < s.k:
        return None
    if r is None:
        awaited = reference_expected(now, links, policy) - s.refused - s.excluded
        if awaited <= set(available) or now - s.started >= timeout:
            return tuple(available)
        return None
    if r.step == "failed":
        return tuple(available)
    if now - r.step_started >= timeout:
        # one that answered but has lost its link is left out too
        linked = reference_expected(now, links, policy)
        remaining = [i for i in available if i not in r.waiting_for and i in linked]
        return tuple(remaining) if len(remaining) >= s.k else None
    return None


def reference_stalled(now, links, s, policy):
    r, timeout = s.current, policy.step_timeout
    if r is not None and r.step == "complete":
        return None
    available = set(s.ready - s.refused - s.excluded)
    if r is None:
        working = reference_expected(now, links, policy) - s.refused - s.excluded - available
        if len(available) + len(working) >= s.k and now < s.started + 10 * timeout:
            return None
    if r is None:
        deadline = s.started + timeout
    else:
        deadline = r.step_started + 2 * timeout if r.step in STEPS else None
    if deadline is not None and now < deadline:
        return None
    late = set(r.waiting_for) if r is not None and r.step in STEPS else set()
    if len(available - late) >= s.k:
        return None
    absent = set(range(1, s.n + 1)) - available - s.refused - s.excluded
    return tuple(sorted(absent | late))
