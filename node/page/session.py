"""Who may use the page: one-time login tokens, sessions held in a cookie, and each session's CSRF token.

`guardian page` asks the node for a login token (the `page-login` control command, so only the node's
owner can get one). The token works once: redeemed, it becomes a session whose random id is the value of
an HttpOnly, SameSite=Strict cookie, and the browser is sent on to a URL without it. Every POST carries
the session's CSRF token. Everything lives in the node's memory: a restart logs everyone out.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Callable

LOGIN_SECONDS = 600                # a login link not used within this is void
SESSION_SECONDS = 12 * 3600        # a session unused for this long ends
MAX_LOGINS = 16                    # outstanding login tokens; the oldest is dropped beyond this
MAX_SESSIONS = 32


@dataclass
class Session:
    csrf: str
    expires: float
    notice: str | None = None      # shown once on the next page (after a redirect)


class Sessions:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._logins: dict[str, float] = {}
        self._sessions: dict[str, Session] = {}

    def new_login(self) -> str:
        now = self._clock()
        self._logins = {t: e for t, e in self._logins.items() if e > now}
        while len(self._logins) >= MAX_LOGINS:
            del self._logins[next(iter(self._logins))]
        token = secrets.token_urlsafe(32)
        self._logins[token] = now + LOGIN_SECONDS
        return token

    def redeem(self, token: str) -> str | None:
        """A new session id for an unused, unexpired login token (which is spent either way); else None."""
        expires = self._logins.pop(token, None)
        now = self._clock()
        if expires is None or expires <= now:
            return None
        self._sessions = {s: v for s, v in self._sessions.items() if v.expires > now}
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(secrets.token_urlsafe(32), now + SESSION_SECONDS)
        return session_id

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this cookie value (its idle time starts again), or None."""
        session = self._sessions.get(session_id) if session_id else None
        now = self._clock()
        if session is None or session.expires <= now:
            return None
        session.expires = now + SESSION_SECONDS
        return session


def csrf_matches(session: Session, value: object) -> bool:
    return isinstance(value, str) and hmac.compare_digest(session.csrf.encode(), value.encode())
