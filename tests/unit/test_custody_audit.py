"""The audit trail check (node/custody/audit_chain.py) against a real node database altered behind its back."""

from __future__ import annotations

import sqlite3

import pytest

from node.crypto.errors import InputError
from node.custody.audit_chain import GENESIS, entry_hash, verify_audit_chain, verify_data_dir, verify_database
from node.storage.db import DB_FILE, NodeDatabase

ENTRIES = 6


@pytest.fixture
def data_dir(tmp_path):
    db = NodeDatabase(tmp_path)
    for i in range(1, ENTRIES + 1):
        db.audit("test event", {"n": i, "text": f"entry {i}", "unicode": "é✓"})
    db.close()
    return tmp_path


def tamper(data_dir, *statements):
    db = sqlite3.connect(data_dir / DB_FILE)
    with db:
        for sql in statements:
            db.execute(sql)
    db.close()


def test_an_untouched_trail_verifies(data_dir):
    result = verify_data_dir(data_dir)
    assert result.ok and result.count == ENTRIES and result.bad_id is None
    db = NodeDatabase(data_dir)
    entries = db.audit_entries()
    db.close()
    assert result.head == bytes(entries[-1][5])
    assert verify_audit_chain(entries) == result
    assert str(result).startswith(f"audit trail OK: {ENTRIES} entries, head ")


def test_the_hash_is_the_databases():
    db_rows = []
    prev = GENESIS
    for i, (at, event, detail) in enumerate([(1.5, "a", "{}"), (2.25, "b", '{"x": 1}')], 1):
        digest = entry_hash(prev, at, event, detail)
        db_rows.append((i, at, event, detail, prev, digest))
        prev = digest
    assert verify_audit_chain(db_rows).ok


def test_an_empty_trail_verifies(tmp_path):
    NodeDatabase(tmp_path).close()
    result = verify_data_dir(tmp_path)
    assert result.ok and result.count == 0 and result.head == GENESIS


def test_the_check_opens_read_only(data_dir):
    before = (data_dir / DB_FILE).read_bytes()
    verify_data_dir(data_dir)
    assert (data_dir / DB_FILE).read_bytes() == before


def test_the_check_works_while_the_node_has_the_database_open(data_dir):
    db = NodeDatabase(data_dir)
    db.audit("live", {"x": 1})
    try:
        assert verify_data_dir(data_dir).count == ENTRIES + 1
    finally:
        db.close()


def test_an_altered_detail_is_named(data_dir):
    tamper(data_dir, "UPDATE audit SET detail = '{\"n\": 99}' WHERE id = 3")
    result = verify_data_dir(data_dir)
    assert not result.ok and result.bad_id == 3 and result.count == 2
    assert "entry 3 was altered" in result.problem


@pytest.mark.parametrize("sql", ["UPDATE audit SET event = 'other' WHERE id = 4",
                                 "UPDATE audit SET at = at + 1 WHERE id = 4"])
def test_an_altered_event_or_time_is_named(data_dir, sql):
    tamper(data_dir, sql)
    result = verify_data_dir(data_dir)
    assert result.bad_id == 4 and "altered" in result.problem


def test_an_altered_and_rehashed_entry_breaks_the_next_link(data_dir):
    db = sqlite3.connect(data_dir / DB_FILE)
    _, at, event, _, prev, _ = db.execute("SELECT * FROM audit WHERE id = 2").fetchone()
    forged = '{"n": 2, "text": "rewritten"}'
    db.execute("UPDATE audit SET detail = ?, hash = ? WHERE id = 2", (forged, entry_hash(prev, at, event, forged)))
    db.commit()
    db.close()
    result = verify_data_dir(data_dir)
    assert result.bad_id == 3 and "entry 2 was altered and rehashed" in result.problem


def test_a_removed_entry_is_named(data_dir):
    tamper(data_dir, "DELETE FROM audit WHERE id = 4")
    result = verify_data_dir(data_dir)
    assert not result.ok and result.bad_id == 4 and result.count == 3
    assert result.problem == "entry 4 is missing (removed)"
    assert str(result) == "audit trail broken at entry 4: entry 4 is missing (removed)"


def test_removed_entries_are_named(data_dir):
    tamper(data_dir, "DELETE FROM audit WHERE id IN (2, 3)")
    assert verify_data_dir(data_dir).problem == "entries 2 to 3 are missing (removed)"


def test_a_removed_first_entry_is_named(data_dir):
    tamper(data_dir, "DELETE FROM audit WHERE id = 1")
    result = verify_data_dir(data_dir)
    assert result.bad_id == 1 and result.count == 0


def test_a_removed_entry_with_the_ids_renumbered_is_named(data_dir):
    tamper(data_dir, "DELETE FROM audit WHERE id = 3", "UPDATE audit SET id = id - 1 WHERE id > 3")
    result = verify_data_dir(data_dir)
    assert result.bad_id == 3 and "does not link to entry 2" in result.problem


def test_two_swapped_entries_are_named(data_dir):
    tamper(data_dir, "UPDATE audit SET id = -1 WHERE id = 3", "UPDATE audit SET id = 3 WHERE id = 5",
           "UPDATE audit SET id = 5 WHERE id = -1")
    result = verify_data_dir(data_dir)
    assert not result.ok and result.bad_id == 3 and result.count == 2
    assert "entry 3 is out of place: it links to entry 4, not to entry 2" in result.problem


def test_swapped_contents_are_named(data_dir):
    db = sqlite3.connect(data_dir / DB_FILE)
    rows = {r[0]: r for r in db.execute("SELECT * FROM audit WHERE id IN (2, 3)")}
    for target, source in ((2, 3), (3, 2)):
        db.execute("UPDATE audit SET at = ?, event = ?, detail = ?, prev_hash = ?, hash = ? WHERE id = ?",
                   (*rows[source][1:], target))
    db.commit()
    db.close()
    result = verify_data_dir(data_dir)
    assert result.bad_id == 2 and "out of place" in result.problem


def test_an_inserted_entry_is_named(data_dir):
    tamper(data_dir, "UPDATE audit SET id = -id WHERE id >= 4", "UPDATE audit SET id = 1 - id WHERE id < 0")
    db = sqlite3.connect(data_dir / DB_FILE)
    prev = db.execute("SELECT hash FROM audit WHERE id = 3").fetchone()[0]
    db.execute("INSERT INTO audit VALUES (4, 1.0, 'forged', '{}', ?, ?)", (prev, entry_hash(prev, 1.0, "forged", "{}")))
    db.commit()
    db.close()
    result = verify_data_dir(data_dir)
    assert result.bad_id == 5 and "it links to entry 3, not to entry 4 (entries were moved or inserted)" in \
        result.problem


def test_malformed_rows_are_named(data_dir):
    tamper(data_dir, "UPDATE audit SET hash = 'text' WHERE id = 2")
    result = verify_data_dir(data_dir)
    assert result.bad_id == 2 and "malformed" in result.problem
    assert verify_audit_chain([("x", 1.0, "e", "{}", GENESIS, GENESIS)]).problem.startswith("audit row 1 is malformed")
    assert not verify_audit_chain([(1, 1.0, "e", "{}", GENESIS)]).ok


def test_a_first_entry_that_does_not_start_the_chain():
    rows = [(1, 1.0, "e", "{}", b"\x01" * 32, entry_hash(b"\x01" * 32, 1.0, "e", "{}"))]
    result = verify_audit_chain(rows)
    assert result.bad_id == 1 and "should start the trail" in result.problem


def test_out_of_order_rows():
    a = entry_hash(GENESIS, 1.0, "e", "{}")
    b = entry_hash(a, 2.0, "e", "{}")
    rows = [(2, 2.0, "e", "{}", a, b), (1, 1.0, "e", "{}", GENESIS, a)]
    result = verify_audit_chain(rows)
    assert not result.ok and result.bad_id == 1


def test_not_a_data_directory(tmp_path):
    with pytest.raises(InputError, match="no node database in"):
        verify_data_dir(tmp_path)
    (tmp_path / DB_FILE).write_bytes(b"not sqlite at all, " * 100)
    with pytest.raises(InputError, match="cannot read the audit trail"):
        verify_data_dir(tmp_path)
    with pytest.raises(InputError, match="no node database at"):
        verify_database(tmp_path / "missing.sqlite3")


def test_a_database_without_an_audit_table(tmp_path):
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("CREATE TABLE other (x)")
    db.close()
    with pytest.raises(InputError, match="no such table: audit"):
        verify_data_dir(tmp_path)
