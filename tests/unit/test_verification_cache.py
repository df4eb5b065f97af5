"""The verification cache: each ballot file checked once per election and verifier version; memory stays flat.

One record (10 ballots, one challenged, decrypted) is built once; each test copies it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from node.compute import Pool
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.record.ballot_box import BallotBox
from node.record.election import open_election
from node.storage.ballot_cache import BallotCache
from node.testing.records import add_ballots, build_record
from node.verifier import ballot_pass, verify_record
from node.verifier.ballot_pass import check_ahead, run_pass, tally_from_bytes, tally_to_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cache")
    build_record(base / "record", base / "secrets", ballots=10, challenged=1, decrypt=True, workers=2)
    return base / "record"


@pytest.fixture
def record(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "record")
    return tmp_path / "record"


def by_step(report) -> dict:
    return {r.step: r for r in report}


def outcome(report) -> list:
    return [(r.step, r.ok, r.items, r.failures) for r in report]


def test_a_second_run_checks_no_ballot_again_and_reports_the_same(record, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    first = verify_record(record, workers=2, cache=cache)
    assert by_step(first)["selection well-formedness"].note == ""
    assert all(r.ok is not False for r in first)
    second = verify_record(record, workers=2, cache=cache)
    assert outcome(second) == outcome(first)
    assert by_step(second)["selection well-formedness"].note == "10 of 10 ballots checked before (verification cache)"
    with BallotCache(cache) as c:
        assert c.count() == 10
        assert len(list(c.batches(ballot_pass.cache_scope(open_election(record).context.h_e)))) >= 1


def test_the_cached_batch_products_are_what_the_aggregation_uses(record, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    verify_record(record, workers=2, cache=cache)
    with sqlite3.connect(cache) as db:         # every cached product squared: no longer the cast ballots' product
        rows = db.execute("SELECT id, product FROM batch_products").fetchall()
        for rowid, product in rows:
            t = tally_from_bytes(product)
            t = type(t)({k: type(ct)(ct.alpha * ct.alpha % STANDARD.p, ct.beta) for k, ct in t.totals.items()},
                        t.ballot_count)
            db.execute("UPDATE batch_products SET product = ? WHERE id = ?", (tally_to_bytes(t), rowid))
    res = by_step(verify_record(record, workers=2, cache=cache))
    assert res["aggregation"].ok is False
    assert "is not the product of the cast ballots' encryptions" in res["aggregation"].failure


def test_a_changed_ballot_file_is_checked_again_and_named(record, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    verify_record(record, workers=2, cache=cache)
    rel = layout.ballot_file("b-0000005")
    ballot = json.loads((record / rel).read_bytes())
    pair = ballot["contest_fields_ciphertexts"][0]["proofs_correctness"][0][1]
    pair["c"] = format((int(pair["c"], 16) + 1) % int(STANDARD.q), "X").zfill(64)
    (record / rel).write_bytes(codec.canonical_bytes(ballot))
    layout.Record(record).update_index([rel])              # the index names the new file: a new digest
    res = by_step(verify_record(record, workers=2, cache=cache))
    assert res["selection well-formedness"].ok is False
    assert "ballot 'b-0000005' contest 1 option 1" in res["selection well-formedness"].failure
    assert res["selection well-formedness"].note == "9 of 10 ballots checked before (verification cache)"


def test_a_file_changed_behind_the_index_fails_the_record_index_step(record, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    verify_record(record, workers=2, cache=cache)
    rel = layout.ballot_file("b-0000006")
    (record / rel).write_bytes((record / rel).read_bytes().replace(b"{", b"{ ", 1))
    res = by_step(verify_record(record, workers=2, cache=cache))
    assert res["record index"].ok is False and f"{rel}: its SHA-256 does not match" in res["record index"].failure


def test_another_verifier_version_finds_nothing_cached(record, tmp_path, monkeypatch):
    cache = tmp_path / "cache.sqlite3"
    verify_record(record, workers=2, cache=cache)
    monkeypatch.setattr(ballot_pass, "verifier_version", lambda: "another version")
    res = by_step(verify_record(record, workers=2, cache=cache))
    assert res["selection well-formedness"].note == ""


def test_another_election_finds_nothing_cached(record, tmp_path):
    cache = tmp_path / "cache.sqlite3"
    verify_record(record, workers=2, cache=cache)
    build_record(tmp_path / "other", tmp_path / "other-secrets", ballots=3, challenged=0, workers=2)
    res = by_step(verify_record(tmp_path / "other", workers=2, cache=cache))
    assert res["selection well-formedness"].note == "" and res["aggregation"].ok is True


def test_checking_ahead_while_the_box_is_open_leaves_only_the_newest_to_check(tmp_path):
    build_record(tmp_path / "r", tmp_path / "s", ballots=6, challenged=1, close=False, workers=2)
    cache_path = tmp_path / "cache.sqlite3"
    record = layout.Record(tmp_path / "r")
    ctx = open_election(record.root).context
    with BallotCache(cache_path) as cache, Pool(ctx, 2) as pool:
        def journal():
            from node.record.ballot_box import read_journal
            return [(layout.ballot_file(e.ballot_id), bytes.fromhex(e.sha256)) for e in read_journal(record)]
        first = check_ahead(ctx, record, journal(), pool, cache)
        assert (first.checked, first.known, first.failures) == (6, 0, [])
        with BallotBox.open(record.root) as box:
            add_ballots(box, 2, start=7, workers=2)
        again = check_ahead(ctx, record, journal(), pool, cache)
        assert (again.checked, again.known) == (2, 6)
        # one stored product per round of cast ballots, however they were batched: few rows, small beside the files
        scope = ballot_pass.cache_scope(ctx.h_e)
        assert [len(members) // 32 for _, members in cache.batches(scope)] == [5, 2]
    with BallotBox.open(record.root) as box:
        box.tally()
    res = by_step(verify_record(record.root, workers=2, cache=cache_path))
    assert res["selection well-formedness"].note == "8 of 8 ballots checked before (verification cache)"
    assert all(r.ok is not False for r in res.values()), [(r.step, r.failures) for r in res.values() if r.ok is False]


def test_the_pass_holds_summaries_not_ballots(tmp_path, monkeypatch):
    """Python's peak allocation over the pass at 4N ballots exceeds that at N by far less than 3N ballots' bytes."""
    monkeypatch.setattr(ballot_pass, "MAX_BATCH", 4)
    build_record(tmp_path / "r", tmp_path / "s", ballots=80, challenged=0, workers=2)
    record = layout.Record(tmp_path / "r")
    ctx = open_election(record.root).context

    def peak(files: int) -> int:
        sub = tmp_path / f"sub-{files}"
        (sub / layout.BALLOTS).mkdir(parents=True)
        for rel in record.list_dir(layout.BALLOTS)[:files]:
            shutil.copy(record.path(rel), sub / rel)
        with Pool(ctx, 1) as pool:
            tracemalloc.start()
            try:
                result = run_pass(ctx, layout.Record(sub), pool)
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
                assert len(result.summaries) == files

    n = 20
    peak(n - 1)              # the first pass also imports and compiles what every pass uses
    ballot_bytes = sum(record.path(rel).stat().st_size for rel in record.list_dir(layout.BALLOTS)[n:4 * n])
    growth = peak(4 * n) - peak(n)
    assert growth < ballot_bytes / 3, (growth, ballot_bytes)


def test_a_cache_that_cannot_be_written_costs_only_the_saving(record, tmp_path, monkeypatch):
    """Another process holds the cache's write lock all along: the verifier waits a little, then goes on
    without storing, and the record verifies just the same."""
    import node.storage.ballot_cache as ballot_cache

    cache = tmp_path / "cache.sqlite3"
    BallotCache(cache).close()
    monkeypatch.setattr(ballot_cache, "BUSY_SECONDS", 0.2)
    holder = sqlite3.connect(cache, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        res = verify_record(record, workers=2, cache=cache)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert all(r.ok is not False for r in res), [(r.step, r.failures) for r in res if r.ok is False]
    with BallotCache(cache) as c:
        assert c.count() == 0
    again = by_step(verify_record(record, workers=2, cache=cache))
    assert again["selection well-formedness"].note == ""          # nothing was stored, so all was checked


def test_the_verifier_version_covers_its_code_and_libraries():
    version = ballot_pass.verifier_version()
    release, digest = version.split("+")
    assert release and len(digest) == 16
    assert set(ballot_pass._VERSIONED_LIBRARIES) >= {"gmpy2", "pynacl", "cryptography"}
    assert "crypto" in ballot_pass._VERSIONED_CODE and "verifier" in ballot_pass._VERSIONED_CODE
