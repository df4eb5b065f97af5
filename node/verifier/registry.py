"""The verification steps, each declared once, with its number and name, where its function is.

    @step("9", "aggregation", needs=keys_known,
          unmet="cannot check the aggregation without the election (steps 1-4)")
    def aggregation(run: Run, acc: Accumulator) -> None:
        ...                                     # the checks only

The decorator gives the step its accumulator (items, failures, note) and its
timer. When what the step needs from the steps before it is missing, the step
fails with `unmet` and its function is not called. A record can be malformed in
ways no step foresaw: an exception fails the step that raised it, and the other
steps still run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from node.cluster import ClusterUnavailable
from node.compute import Executor, executor
from node.crypto.election import ElectionContext
from node.record.election import Election, Findings
from node.storage.ballot_cache import BallotCache
from node.verifier.loader import Loaded

MAX_FAILURES_KEPT = 1000
T = TypeVar("T")


@dataclass
class StepResult:
    """The outcome of one verification step. ok is None when the step does not apply (n/a)."""

    step: str
    ok: bool | None
    items: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    note: str = ""

    @property
    def number(self) -> str:
        return STEP_NUMBER.get(self.step, "")

    @property
    def result(self) -> str:
        return "n/a" if self.ok is None else ("pass" if self.ok else "FAIL")

    @property
    def failure(self) -> str | None:
        """The first failure, naming the object at fault; None when the step passed."""
        return self.failures[0] if self.failures else None

    def to_json(self) -> dict:
        d = {"number": self.number, "step": self.step, "result": self.result, "items": self.items,
             "seconds": round(self.seconds, 3), "failures": self.failures}
        if self.failure_count > len(self.failures):
            d["failures_not_shown"] = self.failure_count - len(self.failures)
        if self.note:
            d["note"] = self.note
        return d


class Accumulator(Findings):
    """One step's items, failures (the first MAX_FAILURES_KEPT kept, all counted) and time."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step, self.seconds, self.not_applicable = step, 0.0, False

    def fail(self, message: str) -> None:
        self.count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(message)

    def result(self) -> StepResult:
        ok = None if self.not_applicable else not self.count
        return StepResult(self.step, ok, self.items, self.seconds, self.failures, self.count, self.note)


@dataclass
class Run:
    """One verification of a record: what was loaded, what the steps recomputed, and work they share."""

    data: Loaded
    election: Election
    workers: int | None = None
    progress: Callable[[int, int], None] | None = None
    scheduler: str | None = None            # a Dask scheduler's address; None: this machine's cores
    cache: BallotCache | None = None         # what earlier runs found on the same ballot files
    shared_seconds: float = field(default=0.0, init=False)
    _shared: dict = field(default_factory=dict, init=False, repr=False)

    def executor(self, ctx: ElectionContext) -> Executor:
        """Where the per-ballot tasks run: the Dask cluster if one is named, else a pool here."""
        return executor(ctx, self.scheduler, self.workers)

    def once(self, compute: Callable[["Run"], T]) -> T:
        """compute(run), computed for the first step that asks and kept for the others (or its error raised again).

        Its time is not charged to the step that happened to ask first: each step
        that uses it adds its own share.
        """
        if compute not in self._shared:
            start = time.perf_counter()
            try:
                self._shared[compute] = (compute(self), None)
            except Exception as e:
                self._shared[compute] = (None, e)
            self.shared_seconds += time.perf_counter() - start
        value, error = self._shared[compute]
        if error is not None:
            raise error
        return value


# What a step can need from Verifications 1-4.

def parameters_known(el: Election) -> bool:
    return el.parameters is not None


def keys_known(el: Election) -> bool:
    """K and K-hat, and with them the election context."""
    return el.context is not None


def every_key_verified(el: Election) -> bool:
    return el.context is not None and len(el.keys) == el.parameters.n


# Before the guardians decrypt, a record holds no decryption at all: Verifications 10, 11, 13 and 14 have
# nothing to check and say so (n/a, not pass). Once it holds one, each applies and what is missing fails.
NOT_DECRYPTED_YET = "the record holds no decryptions yet"


@dataclass(frozen=True)
class Step:
    number: str                 # "" for a check that spec section 6 does not number
    name: str
    check: Callable[[Run, Accumulator], None]
    needs: Callable[[Election], bool] | None = None
    unmet: str = ""
    of_decryptions: bool = False    # n/a on a record that holds no decryption yet

    def run(self, run: Run) -> StepResult:
        acc = Accumulator(self.name)
        start, shared = time.perf_counter(), run.shared_seconds
        try:
            if self.needs is not None and not self.needs(run.election):
                acc.fail(self.unmet)
            elif self.of_decryptions and not run.data.holds_decryptions():
                acc.not_applicable, acc.note = True, NOT_DECRYPTED_YET
            else:
                self.check(run, acc)
        except ClusterUnavailable:  # not the record's fault: the whole run stops, with that one line
            raise
        except Exception as e:      # report, and let the other steps run
            return StepResult(self.name, False, 0, time.perf_counter() - start,
                              [f"the step could not complete: {type(e).__name__}: {e}"], 1)
        acc.seconds += time.perf_counter() - start - (run.shared_seconds - shared)
        return acc.result()


_REGISTERED: list[Step] = []
STEP_NUMBER: dict[str, str] = {}


def step(number: str, name: str, needs: Callable[[Election], bool] | None = None, unmet: str = "",
         of_decryptions: bool = False):
    """Register the decorated function as verification step `number` `name`; the function is returned as is."""
    if needs is not None and not unmet:
        raise ValueError(f"step {name!r}: say why it cannot run without what it needs")

    def register(check: Callable[[Run, Accumulator], None]) -> Callable[[Run, Accumulator], None]:
        if name in STEP_NUMBER:
            raise ValueError(f"step {name!r} is declared twice")
        _REGISTERED.append(Step(number, name, check, needs, unmet, of_decryptions))
        STEP_NUMBER[name] = number
        return check

    return register


def registered() -> list[Step]:
    """The steps in report order: those of spec section 6 by number, then the others as declared."""
    return sorted(_REGISTERED, key=lambda s: (not s.number, int(s.number or 0)))
