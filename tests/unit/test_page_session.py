"""The page's logins and sessions on a clock of our own: one use per token, expiries, caps, CSRF."""

from __future__ import annotations

from node.page.session import LOGIN_SECONDS, MAX_LOGINS, MAX_SESSIONS, SESSION_SECONDS, Sessions, csrf_matches


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_login_token_works_once():
    sessions = Sessions(Clock())
    token = sessions.new_login()
    first = sessions.redeem(token)
    assert first is not None and sessions.get(first) is not None
    assert sessions.redeem(token) is None
    assert sessions.redeem("made-up") is None and sessions.redeem("") is None


def test_a_login_token_expires_and_an_idle_session_ends():
    clock = Clock()
    sessions = Sessions(clock)
    late = sessions.new_login()
    clock.now += LOGIN_SECONDS
    assert sessions.redeem(late) is None
    session_id = sessions.redeem(sessions.new_login())
    clock.now += SESSION_SECONDS - 1
    assert sessions.get(session_id) is not None          # used: its idle time starts again
    clock.now += SESSION_SECONDS - 1
    assert sessions.get(session_id) is not None
    clock.now += SESSION_SECONDS
    assert sessions.get(session_id) is None
    assert sessions.get(None) is None


def test_outstanding_logins_and_sessions_are_capped_oldest_first():
    sessions = Sessions(Clock())
    tokens = [sessions.new_login() for _ in range(MAX_LOGINS + 1)]
    assert sessions.redeem(tokens[0]) is None and sessions.redeem(tokens[-1]) is not None
    sessions = Sessions(Clock())
    ids = [sessions.redeem(sessions.new_login()) for _ in range(MAX_SESSIONS + 1)]
    assert sessions.get(ids[0]) is None and all(sessions.get(i) is not None for i in ids[1:])


def test_csrf_is_the_sessions_own_token():
    sessions = Sessions(Clock())
    one = sessions.get(sessions.redeem(sessions.new_login()))
    two = sessions.get(sessions.redeem(sessions.new_login()))
    assert csrf_matches(one, one.csrf)
    assert not csrf_matches(one, two.csrf) and not csrf_matches(one, "") and not csrf_matches(one, None)
