"""Results of futures in the order of their items, a bounded number in flight: the one loop both executors
(node/compute.py, node/cluster.py) stream with."""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def in_order(submit: Callable[[T], "Future"], items: Iterable[T], window: int) -> Iterator:
    """submit(item) for each item, at most `window` futures in flight; their results in the order of the items.

    Any future with result() and cancel() will do (concurrent.futures, Dask's). Stopped early, the
    futures not yet waited for are cancelled."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append(submit(item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
