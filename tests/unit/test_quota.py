"""The per-peer quota (node/protocol/quota.py): what it admits is bounded by its limits over any run, a
refusal charges nothing, an honest rate is never refused, and one peer's flood costs another nothing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol.quota import Limits, Quota

LIMITS = Limits(burst_bytes=10_000, bytes_per_second=1_000.0, burst_messages=20, messages_per_second=5.0,
                open_sessions=3, per_open_session=4)
A, B = b"a" * 32, b"b" * 32
NODE = bytes(32)

# One envelope: seconds since the one before, its size, and its session (0: the node session; else a session
# this node may not have opened).
envelope = st.tuples(st.floats(0, 3, allow_nan=False), st.integers(1, 12_000), st.integers(0, 6))


def opened_none(session: bytes) -> bool:
    return session == NODE


def session(number: int) -> bytes:
    return NODE if number == 0 else bytes([number]) * 32


@settings(max_examples=200, deadline=None)
@given(st.lists(envelope, max_size=120))
def test_what_is_admitted_stays_within_the_buckets(run):
    quota, now, stored_bytes, stored = Quota(LIMITS), 0.0, 0, 0
    held: dict[bytes, int] = {}
    for gap, size, number in run:
        now += gap
        if quota.admit(A, session(number), size, now, opened_none) is None:
            stored_bytes, stored = stored_bytes + size, stored + 1
            if number:
                held[session(number)] = held.get(session(number), 0) + 1
        assert stored_bytes <= LIMITS.burst_bytes + LIMITS.bytes_per_second * now
        assert stored <= LIMITS.burst_messages + LIMITS.messages_per_second * now
        assert len(held) <= LIMITS.open_sessions
        assert all(count <= LIMITS.per_open_session for count in held.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(envelope, max_size=80), st.integers(1, 12_000), st.integers(0, 6))
def test_a_refusal_charges_nothing(run, size, number):
    """Whatever came before, a refused envelope leaves the quota as it was: the next one is judged the same."""
    quota, now = Quota(LIMITS), 0.0
    for gap, s, n in run:
        now += gap
        quota.admit(A, session(n), s, now, opened_none)
    first = quota.admit(A, session(number), size, now, opened_none)
    if first is not None:
        assert quota.admit(A, session(number), size, now, opened_none) == first


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.25, 5, allow_nan=False), st.integers(1, 250)), max_size=200))
def test_a_peer_within_the_rates_is_never_refused(run):
    """Node-session envelopes no larger and no more often than the refill rates: always stored."""
    quota, now = Quota(LIMITS), 0.0
    for gap, size in run:
        now += gap
        assert quota.admit(A, NODE, size, now, opened_none) is None


@settings(max_examples=100, deadline=None)
@given(st.lists(envelope, max_size=150), st.lists(st.integers(1, 10_000), min_size=1, max_size=10))
def test_a_flood_from_one_peer_costs_another_nothing(flood, honest):
    """B is judged exactly as it would be had A sent nothing."""
    flooded, quiet, now = Quota(LIMITS), Quota(LIMITS), 0.0
    for gap, size, number in flood:
        now += gap
        flooded.admit(A, session(number), size, now, opened_none)
    for size in honest:
        assert flooded.admit(B, NODE, size, now, opened_none) == quiet.admit(B, NODE, size, now, opened_none)


def test_a_session_opened_since_makes_room():
    quota, opened = Quota(LIMITS), {NODE}
    for number in (1, 2, 3):
        assert quota.admit(A, session(number), 10, 0.0, opened.__contains__) is None
    refused = quota.admit(A, session(4), 10, 0.0, opened.__contains__)
    assert refused is not None and "3 sessions not opened here" in refused
    opened.add(session(2))
    assert quota.admit(A, session(4), 10, 0.0, opened.__contains__) is None
    assert quota.admit(A, session(2), 10, 0.0, opened.__contains__) is None      # opened: no longer held as such


def test_a_refusal_names_the_limit():
    quota = Quota(LIMITS)
    assert quota.admit(A, NODE, 10_000, 0.0, opened_none) is None
    assert "10000 bytes at once" in quota.admit(A, NODE, 1, 0.0, opened_none)
    assert quota.admit(A, NODE, 990, 1.0, opened_none) is None                    # a second refills 1000 bytes
    for _ in range(4):
        assert quota.admit(A, session(1), 1, 1.0, opened_none) is None
    assert "4 envelopes of session 0101" in quota.admit(A, session(1), 1, 1.0, opened_none)
