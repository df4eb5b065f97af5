"""A Dask cluster as an executor: the same task functions as node.compute.Pool, on many machines.

`dask.distributed` does the scheduling (an optional extra: `pip install 'guardian-node[cluster]'`).
The election context is sent to every worker once (scattered, broadcast); each task
then sends only its item, and the workers build their fixed-base tables at the first
task and keep them. Workers must have guardian-node installed and see the paths the
items name (the record's directory). Start them with one thread each
(`dask worker ADDRESS --nthreads 1 --nworkers N`): the exponentiations hold the GIL.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, TypeVar

from node.crypto.election import ElectionContext
from node.crypto.errors import InputError
from node.futures import in_order

T = TypeVar("T")
R = TypeVar("R")
IN_FLIGHT_PER_THREAD = 3
CONNECT_SECONDS = 20


class ClusterUnavailable(InputError):
    """The Dask scheduler cannot be used: not installed, not reachable, or without workers."""


def _call(function: Callable[[ElectionContext, T], R], ctx: ElectionContext, item: T) -> R:
    return function(ctx, item)


class ClusterPool:
    """The workers of the Dask scheduler at `address`, holding one election context."""

    def __init__(self, ctx: ElectionContext, address: str) -> None:
        try:
            from distributed import Client
        except ImportError:
            raise ClusterUnavailable(f"a Dask scheduler is named ({address}) but Dask is not installed here: "
                             f"pip install 'guardian-node[cluster]'") from None
        try:
            self.client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as e:
            raise ClusterUnavailable(f"cannot reach the Dask scheduler at {address}: {e}") from None
        threads = self.client.nthreads()
        if not threads:
            self.client.close()
            raise ClusterUnavailable(f"the Dask scheduler at {address} has no workers (start some: dask worker {address})")
        self.address = address
        self.workers = sum(threads.values())
        self._ctx = self.client.scatter(ctx, broadcast=True, hash=False)

    def __enter__(self) -> "ClusterPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def imap(self, function: Callable[[ElectionContext, T], R], items: Iterable[T]) -> Iterator[R]:
        """function(ctx, item) on the cluster for each item, in order, a few per worker thread in flight.

        A task's own exception comes back as it is; losing the cluster (a worker killed, the scheduler
        gone) is ClusterUnavailable: the run cannot go on, and the record is not at fault."""
        from distributed import KilledWorker
        from distributed.comm import CommClosedError

        try:
            yield from in_order(lambda item: self.client.submit(_call, function, self._ctx, item, pure=False), items,
                                IN_FLIGHT_PER_THREAD * self.workers)
        except (KilledWorker, CommClosedError, OSError, TimeoutError) as e:
            raise ClusterUnavailable(f"lost the Dask cluster at {self.address}: {type(e).__name__}: {e}") from None
