"""The process pool: CPU-bound work of one election spread over every core (crypto stays pure).

A task is a module-level function called as function(ctx, item). The workers
receive the ElectionContext once, through the pool initializer; each task then
sends only its item. Workers are forked where the platform allows, so that they
share the fixed-base tables the parent built once; spawned workers rebuild them.
Results come back in the order of the items. `imap` streams: the items may be
a generator of any length, and at most a few per worker are in flight, so
neither the items nor the results are ever all in memory.

A Dask cluster (node/cluster.py) offers the same `imap`, `workers` and `close`,
and runs the same task functions: `executor()` picks one or the other.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from node.crypto.ballot import EncryptedBallot, verify_ballot
from node.crypto.election import ElectionContext
from node.crypto.errors import GuardianError, InputError
from node.futures import in_order

T = TypeVar("T")
R = TypeVar("R")
CHUNKS_PER_WORKER = 8        # enough chunks to even out uneven items, few enough to keep pickling cheap
IN_FLIGHT_PER_WORKER = 3     # imap: enough queued that no worker idles, few enough that memory stays flat
SCHEDULER_VARIABLE = "DASK_SCHEDULER_ADDRESS"

_context: ElectionContext | None = None


def worker_count() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def chunk_size(items: int, workers: int) -> int:
    return max(1, items // (CHUNKS_PER_WORKER * workers))


def _start_method():
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _init(ctx: ElectionContext) -> None:
    global _context
    _context = ctx


def _call(function: Callable[[ElectionContext, T], R], item: T) -> R:
    return function(_context, item)


class Pool:
    """Worker processes that hold one election context. Use `with Pool(ctx, workers) as pool:`.

    The processes start at the first map of two items or more; shorter maps,
    and every map when workers is 1, run in this process.
    """

    def __init__(self, ctx: ElectionContext, workers: int | None = None) -> None:
        self.ctx = ctx
        self.workers = workers or worker_count()
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def map(self, function: Callable[[ElectionContext, T], R], items: Sequence[T],
            progress: Callable[[int, int], None] | None = None) -> Iterator[R]:
        """function(ctx, item) for each item, in order; progress(done, total) after each."""
        total = len(items)
        if self.workers == 1 or total < 2:
            results: Iterable[R] = (function(self.ctx, item) for item in items)
        else:
            results = self._start(total).map(partial(_call, function), items,
                                              chunksize=chunk_size(total, self.workers))
        for done, result in enumerate(results, start=1):
            yield result
            if progress:
                progress(done, total)

    def imap(self, function: Callable[[ElectionContext, T], R], items: Iterable[T]) -> Iterator[R]:
        """function(ctx, item) for each item, in order, with at most IN_FLIGHT_PER_WORKER per worker in flight."""
        if self.workers == 1:
            for item in items:
                yield function(self.ctx, item)
            return
        yield from in_order(lambda item: self._start(self.workers).submit(_call, function, item), items,
                            IN_FLIGHT_PER_WORKER * self.workers)

    def _start(self, items: int) -> ProcessPoolExecutor:
        if self._executor is None:
            self.ctx.g_table, self.ctx.k_table, self.ctx.k_hat_table    # built before the fork, then shared
            self._executor = ProcessPoolExecutor(min(self.workers, items), mp_context=_start_method(),
                                                 initializer=_init, initargs=(self.ctx,))
        return self._executor


class Executor(Protocol):
    """Where tasks run: this machine's Pool, or a Dask cluster (node.cluster.ClusterPool)."""

    workers: int

    def imap(self, function: Callable[[ElectionContext, T], R], items: Iterable[T]) -> Iterator[R]: ...

    def close(self) -> None: ...


SCHEDULER_ADDRESS = re.compile(r"(?:(?:tcp|tls|ucx)://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}")


def check_scheduler_address(address: str, where: str) -> str:
    """`address` if it is a Dask scheduler address like tcp://HOST:8786, else InputError naming `where`."""
    if not SCHEDULER_ADDRESS.fullmatch(address):
        raise InputError(f"{where}: {address[:100]!r} is not a Dask scheduler address like tcp://HOST:8786")
    return address


def scheduler_address(given: str | None = None) -> str | None:
    """The Dask scheduler to use: the one given, else $DASK_SCHEDULER_ADDRESS, else None (this machine)."""
    if given and given.strip():
        return check_scheduler_address(given.strip(), "--scheduler")
    env = os.environ.get(SCHEDULER_VARIABLE, "").strip()
    return check_scheduler_address(env, f"${SCHEDULER_VARIABLE}") if env else None


def executor(ctx: ElectionContext, scheduler: str | None = None, workers: int | None = None) -> Executor:
    """A Dask cluster's workers when a scheduler is given (or in $DASK_SCHEDULER_ADDRESS), else a Pool of
    `workers` processes here. Close it when done."""
    address = scheduler_address(scheduler)
    if address is None:
        return Pool(ctx, workers)
    from node.cluster import ClusterPool       # Dask is an optional extra: imported only when asked for
    return ClusterPool(ctx, address)


def tree_reduce(combine: Callable[[R, R], R], results: Iterable[R]) -> R | None:
    """combine over results as a balanced binary tree, as they come: at most log2(n) partials are held.

    `combine` must be associative (the products of ciphertexts are): the answer does not depend on
    where the tasks ran or in which order the partials meet."""
    stack: list[tuple[int, R]] = []          # (level, partial): a binary counter of partials
    for r in results:
        level = 0
        while stack and stack[-1][0] == level:
            r = combine(stack.pop()[1], r)
            level += 1
        stack.append((level, r))
    if not stack:
        return None
    total = stack.pop()[1]
    while stack:
        total = combine(stack.pop()[1], total)
    return total


def map_tasks(ctx: ElectionContext, function: Callable[[ElectionContext, T], R], items: Sequence[T],
              workers: int | None = None, progress: Callable[[int, int], None] | None = None,
              scheduler: str | None = None) -> Iterator[R]:
    """function(ctx, item) for each item, in order, as the results come: on a pool of its own, or on the Dask
    cluster of `scheduler` (or $DASK_SCHEDULER_ADDRESS)."""
    if scheduler_address(scheduler) is None:
        with Pool(ctx, workers) as pool:
            yield from pool.map(function, items, progress)
        return
    with executor(ctx, scheduler) as cluster:
        for done, result in enumerate(cluster.imap(function, items), start=1):
            yield result
            if progress:
                progress(done, len(items))


def ballot_failure(ctx: ElectionContext, ballot: EncryptedBallot) -> str | None:
    """Why the ballot's proofs and codes do not verify, or None."""
    try:
        verify_ballot(ctx, ballot)
    except GuardianError as e:
        return str(e)
    return None


def verify_ballots(ctx: ElectionContext, ballots: Sequence[EncryptedBallot], workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[str | None]:
    """verify_ballot for each ballot, on every core; returns None or the refusal for each, in order."""
    return list(map_tasks(ctx, ballot_failure, ballots, workers, progress))
