"""CPU-bound checks spread over every core, at the edge of the program (crypto stays pure).

Workers receive the ElectionContext once, through the pool initializer, and
rebuild its fixed-base tables on their side; each task then sends only one ballot.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence, TypeVar

from node.crypto.ballot import EncryptedBallot, verify_ballot
from node.crypto.election import ElectionContext
from node.crypto.errors import GuardianError

T = TypeVar("T")
_context: ElectionContext | None = None


def _init(ctx: ElectionContext) -> None:
    global _context
    _context = ctx


def _verify_one(ballot: EncryptedBallot) -> str | None:
    try:
        verify_ballot(_context, ballot)
    except GuardianError as e:
        return str(e)
    return None


def worker_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def verify_ballots(ctx: ElectionContext, ballots: Sequence[EncryptedBallot], workers: int | None = None,
                   progress: Callable[[int], None] | None = None) -> list[str | None]:
    """verify_ballot for each ballot, on every core; returns None or the refusal for each, in order."""
    workers = workers or worker_count()
    if workers == 1 or len(ballots) < 2:
        results = []
        for ballot in ballots:
            try:
                verify_ballot(ctx, ballot)
                results.append(None)
            except GuardianError as e:
                results.append(str(e))
            if progress:
                progress(len(results))
        return results
    mp = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(workers, mp_context=mp, initializer=_init, initargs=(ctx,)) as pool:
        results = []
        for result in pool.map(_verify_one, ballots, chunksize=max(1, len(ballots) // (4 * workers))):
            results.append(result)
            if progress:
                progress(len(results))
        return results
