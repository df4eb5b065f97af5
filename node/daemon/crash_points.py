"""Named commit points where a node can be made to kill itself, for the tests that prove a kill loses nothing.

GUARDIAN_CRASH_AT="POINT:TYPE[,POINT:TYPE...]" makes the node SIGKILL itself the first time it passes
POINT for a message of TYPE (`*` for any). The points, in the order a received envelope passes them:
  inbox     committed to the inbox, not yet acted on
  applied   acted on by its service (the service's own commits done), not yet marked applied
and, for record files in chunks, with TYPE `part` (a chunk that does not end its file) or `end`:
  blob-in   a chunk received and handed to the services
  blob-out  a chunk sent
Unset (always, outside those tests) the check is one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "GUARDIAN_CRASH_AT"
POINTS = ("inbox", "applied", "blob-in", "blob-out")


def _parse(text: str) -> frozenset[tuple[str, str]]:
    wanted = set()
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, _, type_ = item.partition(":")
        if point not in POINTS or not type_:
            raise ValueError(f"{VARIABLE}: {item!r} is not POINT:TYPE with POINT one of {', '.join(POINTS)}")
        wanted.add((point, type_))
    return frozenset(wanted)


_WANTED = _parse(os.environ.get(VARIABLE, ""))


def reached(point: str, type_: str) -> None:
    if _WANTED and ((point, type_) in _WANTED or (point, "*") in _WANTED):
        os.kill(os.getpid(), signal.SIGKILL)
