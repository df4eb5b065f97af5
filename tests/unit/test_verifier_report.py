"""The verifier's report: warnings appear in the table and in the JSON, and never fail the record."""

from __future__ import annotations

import json

import node.verifier
import node.verifier.verify
from node.cli.main import main
from node.verifier import Report, StepResult, format_table, passed, results_to_json, verify_record
from node.verifier.loader import load

WARNING = "election_manifest.json: contests[0].label contains a line break (accepted from another tool)"


def passing_report(warnings: list[str]) -> Report:
    return Report([StepResult("parameters", True, 6, 0.01), StepResult("contest data", None, 0, 0.0),
                   StepResult("record index", True, 31, 0.002)], warnings)


def test_a_warning_appears_in_both_forms_and_does_not_fail_the_record():
    report = passing_report([WARNING])
    assert passed(report)
    obj = results_to_json("rec", report, 1.0, report.warnings)
    assert obj["ok"] is True and obj["warnings"] == [WARNING]
    lines = format_table(report, 1.0, warnings=report.warnings).splitlines()
    total = next(i for i, line in enumerate(lines) if "total (wall)" in line)
    assert lines[total + 1] == f"warning: {WARNING}"
    assert not any(line.startswith("FAIL") for line in lines)


def test_the_json_always_lists_warnings():
    assert results_to_json("rec", passing_report([]), 1.0)["warnings"] == []
    assert "warning:" not in format_table(passing_report([]), 1.0)


def test_guardian_verify_prints_warnings_and_exits_zero(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(node.verifier, "verify_record", lambda *args, **kwargs: passing_report([WARNING]))
    assert main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"warning: {WARNING}\n" in out and "the record verifies" in out
    assert main(["verify", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"] == [WARNING]


def test_the_loaders_warnings_reach_the_report(monkeypatch, tmp_path):
    def load_with_warning(root):
        data = load(root)
        data.warnings.append(WARNING)
        return data

    assert verify_record(tmp_path).warnings == []
    monkeypatch.setattr(node.verifier.verify, "load", load_with_warning)
    report = verify_record(tmp_path)
    assert report.warnings == [WARNING]
    assert [r.step for r in report] == [name for _, name in node.verifier.STEPS]
