"""The verifier's report: the steps' results and the warnings, as a table or as JSON.

A warning is something a reader of the record should know that fails no step:
it never changes the outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from node.verifier.registry import StepResult


@dataclass
class Report(Sequence):
    """The results of every step, in report order, and the warnings; iterates over the results."""

    steps: list[StepResult]
    warnings: list[str] = field(default_factory=list)

    def __getitem__(self, i):
        return self.steps[i]

    def __len__(self) -> int:
        return len(self.steps)


def passed(results: Iterable[StepResult]) -> bool:
    return all(r.ok is not False for r in results)


def results_to_json(root: Path | str, results: Sequence[StepResult], seconds: float,
                    warnings: Sequence[str] = ()) -> dict:
    return {"record": str(root), "ok": passed(results), "seconds": round(seconds, 3),
            "steps": [r.to_json() for r in results], "warnings": list(warnings)}


def format_table(results: Sequence[StepResult], seconds: float, max_failures: int = 5,
                 warnings: Sequence[str] = ()) -> str:
    lines = [f"{'':>3} {'step':<30} {'result':<6} {'items':>7} {'time':>9}"]
    for r in results:
        lines.append(f"{r.number:>3} {r.step:<30} {r.result:<6} {r.items:>7} {r.seconds:>8.2f}s")
    lines.append(f"{'':>3} {'total (wall)':<30} {'':<6} {'':>7} {seconds:>8.2f}s")
    lines += [f"warning: {w}" for w in warnings]
    failures = [(r, f) for r in results for f in r.failures[:max_failures]]
    if failures:
        lines.append("")
        for r in results:
            label = f"{r.number} {r.step}".strip()
            for f in r.failures[:max_failures]:
                lines.append(f"FAIL [{label}] {f}")
            if r.failure_count > max_failures:
                lines.append(f"FAIL [{label}] ... and {r.failure_count - max_failures} more")
    return "\n".join(lines)
