"""Every benchmark in bench/ runs at a small size, as `python bench/run.py NAME ... --json` would.

Each run must exit 0 and end with one JSON object carrying the figures the benchmark reports,
positive and finite where they measure something. Timings are never compared with anything:
a loaded machine is slow, not wrong. Some runs name the embedded manifest and the others take
the default (../shared/bench when present), so both ways a manifest is chosen stay working.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]
RUN = PROJECT / "bench" / "run.py"
EMBEDDED = PROJECT / "node" / "data" / "demo-manifest.json"


def _bench_manifest_module():
    spec = importlib.util.spec_from_file_location("bench_manifest_under_test", PROJECT / "bench" / "manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(*args, timeout: float) -> dict:
    """The JSON object on the last line of a benchmark run; the run must exit 0."""
    # Its own process group: on a timeout the benchmark and every node it started are stopped.
    proc = subprocess.Popen([sys.executable, str(RUN), *map(str, args), "--json"], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)        # lets the benchmark's clean-up kill its nodes
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"bench {args[0]} still running after {timeout} s:\n{err[-4000:]}")
    assert proc.returncode == 0, f"bench {args[0]} exited {proc.returncode}:\n{err[-4000:]}"
    lines = out.strip().splitlines()
    assert lines, f"bench {args[0]} printed nothing:\n{err[-4000:]}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict), lines[-1]
    assert figures["benchmark"] == args[0]
    return figures


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def assert_positive(figures: dict, *keys: str) -> None:
    for key in keys:
        assert key in figures, f"no {key!r} in {sorted(figures)}"
        assert _number(figures[key]) and figures[key] > 0, (key, figures[key])


def assert_measured(figures: dict, *keys: str) -> None:
    """Rounded durations of short steps, which may round to zero."""
    for key in keys:
        assert key in figures, f"no {key!r} in {sorted(figures)}"
        assert _number(figures[key]) and figures[key] >= 0, (key, figures[key])


def assert_durations(table: dict) -> None:
    assert isinstance(table, dict) and table, table
    for name, value in table.items():
        assert _number(value) and value >= 0, (name, value)


def test_without_shared_the_embedded_manifest_is_used(monkeypatch, tmp_path):
    manifest = _bench_manifest_module()
    monkeypatch.setattr(manifest, "SHARED_MANIFEST", tmp_path / "shared" / "bench" / "manifest-8x68.json")
    assert manifest.bench_manifest() == manifest.EMBEDDED_MANIFEST == EMBEDDED
    assert EMBEDDED.is_file()
    assert manifest.bench_manifest(tmp_path / "m.json") == (tmp_path / "m.json").resolve()


def _default_manifest_name() -> str:
    return _bench_manifest_module().bench_manifest().name


def test_crypto():
    figures = run_bench("crypto", "--quick", "--manifest", EMBEDDED, timeout=180)
    assert figures["manifest"] == EMBEDDED.name
    assert figures["quick"] is True and figures["ballots"] == 1
    assert_positive(figures, "options", "contests", "exponents", "powmod_us", "fixed_base_exp_us",
                    "fixed_base_exp_w8_us", "membership_check_us", "membership_check_batched_us",
                    "encrypt_ms_per_ballot", "verify_ms_per_ballot", "tally_decrypt_5_3_two_missing_s",
                    "tally_decrypt_compensated_s", "cores_used")
    assert_measured(figures, "fixed_base_w12_build_s", "ceremony_5_3_s")


def test_record():
    figures = run_bench("record", "--ballots", 2, timeout=240)
    assert figures["manifest"] == _default_manifest_name()
    assert figures["ballots"] == 2 and figures["cast"] == 1 and figures["challenged"] == 1
    assert figures["verify_passed"] is True
    assert_positive(figures, "options", "contests", "cores_used", "encrypt_s", "encrypt_ballots_per_s", "submit_s",
                    "submit_ballots_per_s", "verify_s", "verify_ballots_per_s", "record_bytes")
    assert_measured(figures, "ceremony_s", "tally_s", "decrypt_local_s")
    assert_durations(figures["verify_step_seconds"])


def test_ceremony():
    figures = run_bench("ceremony", "--nodes", 3, "--quorum", 2, "--manifest", EMBEDDED, timeout=300)
    assert figures["nodes"] == 3 and figures["quorum"] == 2
    assert figures["manifest"] == EMBEDDED.name
    assert_positive(figures, "ceremony_seconds", "first_complete_seconds", "setup_seconds", "poll_seconds")
    assert_durations(figures["phase_seconds"])
    assert_durations(figures["phase_reached_seconds"])
    assert len(bytes.fromhex(figures["h_e"])) == 32


def test_decrypt():
    figures = run_bench("decrypt", "--nodes", 3, "--quorum", 2, "--missing", 1, "--ballots", 1, "--challenged", 0,
                        timeout=420)
    assert figures["manifest"] == _default_manifest_name()
    assert (figures["nodes"], figures["quorum"], figures["missing"], figures["ballots"], figures["challenged"]) \
        == (3, 2, 1, 1, 0)
    assert len(figures["present"]) == 2 and len(figures["absent"]) == 1
    assert_positive(figures, "statements", "rounds", "total_seconds", "decryption_seconds", "verify_seconds")
    assert_measured(figures, "ready_seconds", "record_setup_seconds")


def test_links():
    figures = run_bench("links", "--messages", 100, "--rounds", 10, timeout=120)
    assert figures["messages"] == 100 and figures["rounds"] == 10
    assert_positive(figures, "handshake_ms", "round_trip_ms", "messages_per_second")


def test_flood():
    figures = run_bench("flood", "--rounds", 10, timeout=120)
    assert figures["rounds"] == 10
    assert_positive(figures, "idle_round_trip_ms", "flood_round_trip_ms", "ratio", "offered_mb_per_second",
                    "offered_envelopes", "offered_bytes", "stored_bytes")
    # The flood's steady state was measured: beyond b's burst, so some of it was refused as over quota.
    assert figures["refused"].get("quota", 0) > 0, figures["refused"]
    assert figures["stored_bytes"] < figures["offered_bytes"]


def test_scale():
    figures = run_bench("scale", "--ballots", 4, "--manifest", EMBEDDED, timeout=300)
    assert figures["ballots"] == 4 and figures["quarter_ballots"] == 1 and figures["built"] is True
    assert figures["verify_passed"] is True and figures["verify_failed_steps"] == []
    assert figures["verify_cache_again_passed"] is True
    assert figures["verify_cache_again_note"] == "4 of 4 ballots checked before (verification cache)"
    assert_positive(figures, "encrypt_s", "submit_s", "verify_s", "verify_ballots_per_s", "verify_peak_rss_mb",
                    "verify_quarter_peak_rss_mb", "rss_ratio_full_to_quarter", "verify_cache_first_s",
                    "verify_cache_again_s", "record_bytes", "ballot_file_bytes", "hours_to_verify_1e6_ballots_here")
    assert_measured(figures, "ceremony_s", "tally_s")
