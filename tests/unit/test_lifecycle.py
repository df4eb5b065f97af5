"""The ceremony and decryption lifecycles (node/protocol/lifecycle.py): every pair of statuses is either in
the table or refused with both statuses named; terminal statuses have no exit."""

from __future__ import annotations

import itertools
from enum import StrEnum

import pytest

from node.crypto.errors import GuardianError
from node.protocol.lifecycle import (
    CEREMONY, DECRYPTION, CeremonyStatus, DecryptionStatus, IllegalTransition, Lifecycle,
)

C, D = CeremonyStatus, DecryptionStatus
LEGAL = {
    CEREMONY: {(C.PROPOSED, C.RUNNING), (C.PROPOSED, C.REJECTED), (C.PROPOSED, C.FINISHED_ELSEWHERE),
               (C.RUNNING, C.COMPLETE), (C.RUNNING, C.ABORTED), (C.COMPLETE, C.SUPERSEDED)},
    DECRYPTION: {(D.FETCHING, D.CHECKING), (D.CHECKING, D.READY), (D.READY, D.COMPLETE),
                 *((old, new) for old in (D.FETCHING, D.CHECKING, D.READY) for new in (D.REFUSED, D.FAILED))},
}
STATUSES = {CEREMONY: C, DECRYPTION: D}


def pairs(lifecycle):
    return list(itertools.product(STATUSES[lifecycle], repeat=2))


@pytest.mark.parametrize("lifecycle", [CEREMONY, DECRYPTION], ids=lambda lc: lc.name)
def test_every_legal_transition_passes(lifecycle):
    for old, new in LEGAL[lifecycle]:
        lifecycle.check(old, new)
        lifecycle.check(str(old), str(new))            # the database holds plain strings


@pytest.mark.parametrize("lifecycle", [CEREMONY, DECRYPTION], ids=lambda lc: lc.name)
def test_every_other_pair_raises_naming_both_states(lifecycle):
    for old, new in pairs(lifecycle):
        if (old, new) in LEGAL[lifecycle]:
            continue
        with pytest.raises(IllegalTransition) as e:
            lifecycle.check(old, new)
        assert lifecycle.name in str(e.value) and f"'{old}'" in str(e.value) and f"'{new}'" in str(e.value)
        assert isinstance(e.value, GuardianError)


def test_the_stored_values_are_todays():
    assert {s.value for s in C} == {"proposed", "invalid", "rejected", "running", "complete", "aborted",
                                    "superseded", "finished-elsewhere"}
    assert {s.value for s in D} == {"fetching", "checking", "ready", "complete", "refused", "failed", "invalid"}
    assert set(CEREMONY.transitions) == set(C) and set(DECRYPTION.transitions) == set(D)


@pytest.mark.parametrize("lifecycle, terminal", [
    (CEREMONY, {C.INVALID, C.REJECTED, C.ABORTED, C.SUPERSEDED, C.FINISHED_ELSEWHERE}),
    (DECRYPTION, {D.COMPLETE, D.REFUSED, D.FAILED, D.INVALID}),
], ids=["ceremony", "decryption"])
def test_terminal_states_have_no_exits(lifecycle, terminal):
    assert {s for s in STATUSES[lifecycle] if lifecycle.terminal(s)} == terminal
    for old in terminal:
        assert lifecycle.transitions[old] == frozenset()
        for new in STATUSES[lifecycle]:
            with pytest.raises(IllegalTransition):
                lifecycle.check(old, new)


def test_initial_statuses():
    assert CEREMONY.initial == {C.PROPOSED, C.INVALID, C.COMPLETE}
    assert DECRYPTION.initial == {D.FETCHING, D.INVALID}
    CEREMONY.check_initial("complete")               # restored from a key backup
    with pytest.raises(IllegalTransition, match="ceremony: 'running' is not a status to begin with"):
        CEREMONY.check_initial("running")
    with pytest.raises(IllegalTransition, match="decryption: 'ready'"):
        DECRYPTION.check_initial(D.READY)


def test_unknown_statuses_are_refused():
    with pytest.raises(IllegalTransition, match="from 'lost' to 'running'"):
        CEREMONY.check("lost", "running")
    with pytest.raises(IllegalTransition, match="from 'proposed' to 'lost'"):
        CEREMONY.check("proposed", "lost")


def test_a_table_naming_a_status_it_does_not_list_is_refused():
    class S(StrEnum):
        A = "a"
        B = "b"

    Lifecycle("small", {S.A: frozenset({S.B}), S.B: frozenset()}, frozenset({S.A}))
    with pytest.raises(ValueError, match="small"):
        Lifecycle("small", {S.A: frozenset({S.B})}, frozenset({S.A}))
