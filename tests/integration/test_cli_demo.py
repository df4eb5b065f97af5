"""`guardian demo` and the CLI's error handling, run as a real subprocess on the standard parameters."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def guardian(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_demo_decrypts_with_two_guardians_missing():
    result = guardian("demo", "--in-process", "--ballots", "5", "--challenged", "2", "--missing", "2,4", "--seed", "11")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Missing guardians at decryption: Guardian 2, Guardian 4." in out
    assert "Decrypted by guardians 1, 3, 5 (standard form)" in out
    assert "5 ballots valid, 5 signatures valid" in out
    assert out.count("matches the voter's choices") == 2
    assert "3 cast ballots" in out
    # every option of the manifest appears in the result table with a count
    manifest = json.loads((ROOT / "node" / "data" / "demo-manifest.json").read_text())
    for contest in manifest["contests"]:
        for option in contest["options"]:
            assert re.search(rf"^\s+{re.escape(option['label'])}\s+\d+", out, re.M), option["label"]
    # the table's totals per contest cannot exceed ballots times the selection limit
    assert "Every proof verified" in out


@pytest.mark.slow
def test_demo_compensated_form_with_a_small_manifest(tmp_path):
    manifest = {
        "label": "Small election",
        "contests": [
            {"label": "Mayor", "options": [{"label": "Ada"}, {"label": "Grace"}]},
            {"label": "Council", "selection_limit": 2,
             "options": [{"label": "Alan"}, {"label": "Barbara"}, {"label": "Claude"}]},
        ],
        "ballot_styles": [{"label": "everyone", "contests": [1, 2]}],
    }
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(manifest))
    result = guardian("demo", "--manifest", str(path), "-n", "4", "-k", "2", "--ballots", "4",
                      "--challenged", "1", "--missing", "1,3", "--compensated", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert "Missing guardians at decryption: Guardian 1, Guardian 3." in result.stdout
    assert "(compensated form)" in result.stdout
    assert "Council (vote for up to 2)" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["demo", "--quorum", "7"], "quorum 7 is larger than the number of guardians 5"),
    (["demo", "--missing", "2,3,4"], "only 2 guardians present, the quorum is 3"),
    (["demo", "--missing", "9"], "outside 1..5"),
    (["demo", "--manifest", "/nonexistent/manifest.json"], "cannot read manifest"),
    (["demo", "--ballots", "2", "--challenged", "2"], "at least one challenged and one cast ballot"),
])
def test_demo_refuses_bad_arguments_with_one_line(args, message):
    result = guardian(*args, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_demo_refuses_a_malformed_manifest(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"label": "x", "contests": [], "ballot_styles": []}')
    result = guardian("demo", "--manifest", str(path), timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith("guardian demo: error:") and len(result.stderr.strip().splitlines()) == 1


def test_argument_errors_exit_non_zero():
    result = guardian("demo", "--ballots", "zero", timeout=60)
    assert result.returncode == 2
    assert "expected a whole number" in result.stderr


def test_help_lists_demo():
    result = guardian("--help", timeout=60)
    assert result.returncode == 0 and "demo" in result.stdout


def test_demo_on_real_nodes_tells_the_story_and_verifies(tmp_path):
    """The default demo: real guardian nodes, one guardian away at the decryption, the record verified."""
    result = guardian("demo", "-n", "3", "-k", "2", "--ballots", "2", "--challenged", "1", "--missing", "3",
                      "--dir", str(tmp_path / "run"), timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for line in ("proposed the election (n=3, k=2)", "ceremony complete on every node",
                 "every guardian exported, backed up and verified its key", "guardians g3 are away",
                 "decrypted by g1, g2; missing g3", "guardian verify: the record verifies", "The verified result:"):
        assert line in out, (line, out)
    assert (tmp_path / "run" / "demo" / "record" / "decrypted_tally.json").is_file()
    assert (tmp_path / "run" / "demo" / "g1" / "node.log").is_file()
    # custody done, the record started from the ceremony's certificate (`guardian record init`): no rehearsal
    assert "the certificate is signed by all" in out and "(guardian record init, encrypt, ballots submit)" in out
    record = tmp_path / "run" / "demo" / "record"
    assert (record / "certificate.json").is_file() and not (record / "rehearsal.json").exists()
