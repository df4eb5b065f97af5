"""The simulator's report: one row per scenario, expected against actual, who was named, and the times."""

from __future__ import annotations

from typing import Sequence

from simulate.runner import Result


def _names(numbers) -> str:
    return ",".join(f"g{i}" for i in numbers) or "-"


def expected(result: Result) -> str:
    e = result.scenario.expect
    text = f"ceremony {e.ceremony}"
    if e.ceremony == "aborted":
        text += f" ({_names(e.culprits)})"
    if e.ceremony == "complete":
        text += f", decryption {e.decryption}"
        if e.missing:
            text += f", missing {'>=' if not e.exact_missing else ''}{_names(e.missing)}"
        if e.excluded:
            text += f", excluded {_names(e.excluded)}"
    return text


def actual(result: Result) -> str:
    o = result.outcome
    text = f"ceremony {o.ceremony}"
    if o.ceremony == "aborted":
        text += f" ({_names(o.culprits)})"
    if o.ceremony == "complete":
        text += f", decryption {o.decryption}"
        if o.missing:
            text += f", missing {_names(o.missing)}"
        if o.excluded:
            text += f", excluded {_names(o.excluded)}"
        if o.verified is not None:
            text += ", verified" if o.verified else ", NOT verified"
    return text


def table(results: Sequence[Result]) -> str:
    rows = [("scenario", "n/k", "expected", "actual", "times (s)", "result")]
    for r in results:
        t = r.outcome.times
        times = " ".join(f"{k[:3]} {v:.1f}" for k, v in t.items()) + f" | total {r.seconds:.1f}"
        rows.append((r.scenario.name, f"{r.scenario.guardians}/{r.scenario.quorum}", expected(r), actual(r), times,
                     "ok" if r.ok else "MISMATCH"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in results:
        for m in r.mismatches:
            lines.append(f"MISMATCH {r.scenario.name}: {m}")
    return "\n".join(lines)


def details(result: Result) -> str:
    lines = [f"--- {result.scenario.name}: {result.scenario.description}", f"    directory: {result.directory}"]
    lines += [f"    {e}" for e in result.events]
    if result.outcome.refusals:
        lines.append("    refusals counted by the nodes: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(result.outcome.refusals.items())))
    if result.outcome.links:
        lines.append("    links, from the nodes' /metrics: "
                     + ", ".join(f"{k} {v:g}" for k, v in result.outcome.links.items()))
    if result.outcome.reason:
        lines.append(f"    reason: {result.outcome.reason}")
    return "\n".join(lines)
