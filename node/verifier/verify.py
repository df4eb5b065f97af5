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
from node.crypto.errors import InputError
from node.record.election import Election
from node.verifier.loader import load
from node.verifier.registry import Run, registered
from node.verifier.report import Report


def verify_record(root: Path | str, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Report:
    """Run every step on the record at `root`; the results come in the order of STEPS.

    Raises InputError only when `root` is not a record directory at all; every
    problem inside the record is a failed step. `progress(done, total)` hears the
    pass over the ballots.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    data = load(root)
    run = Run(data, Election(), workers, progress)
    return Report([s.run(run) for s in registered()], list(data.warnings))
