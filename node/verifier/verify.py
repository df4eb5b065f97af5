"""verify_record: every step on one record, in report order."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

# The modules that declare the steps; those spec section 6 does not number are reported in this order.
import node.verifier.parameters  # noqa: F401
import node.verifier.ballots  # noqa: F401
import node.verifier.tally  # noqa: F401
import node.verifier.challenged  # noqa: F401
import node.verifier.record_index  # noqa: F401
from node.compute import scheduler_address
from node.crypto.errors import InputError
from node.record.election import Election
from node.storage.ballot_cache import BallotCache
from node.verifier.loader import load
from node.verifier.registry import Run, registered
from node.verifier.report import Report


def verify_record(root: Path | str, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None, scheduler: str | None = None,
                  cache: Path | str | None = None) -> Report:
    """Run every step on the record at `root`; the results come in the order of STEPS.

    Raises InputError only when `root` is not a record directory at all (or the
    scheduler or the cache cannot be used); every problem inside the record is a
    failed step. `progress(done, total)` hears the pass over the ballots. The
    ballots are checked on the Dask cluster of `scheduler` (or
    $DASK_SCHEDULER_ADDRESS) if one is named, else on `workers` processes here;
    with `cache`, an SQLite file, a ballot file checked before is not checked again.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    scheduler = scheduler_address(scheduler)      # a bad address is the caller's error, not the record's
    data = load(root)
    store = BallotCache(cache) if cache is not None else None
    try:
        run = Run(data, Election(), workers, progress, scheduler, store)
        return Report([s.run(run) for s in registered()], list(data.warnings))
    finally:
        if store is not None:
            store.close()
