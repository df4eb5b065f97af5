"""The node database's ceremony and decryption rows (node/storage/db.py): the accessors filter in SQL, and
every status change goes through its lifecycle table (node/protocol/lifecycle.py) inside the write
transaction, so an illegal one is refused with nothing written."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from node.crypto.errors import InputError
from node.protocol.lifecycle import CEREMONY, DECRYPTION, CeremonyStatus as C, DecryptionStatus as D, \
    IllegalTransition
from node.storage.db import DB_FILE, NodeDatabase


@pytest.fixture
def db(tmp_path):
    database = NodeDatabase(tmp_path)
    yield database
    database.close()


def sid(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def add_ceremony(db, name: str, status=C.PROPOSED, outcome=None) -> bytes:
    assert db.add_ceremony(sid(name), name.encode(), "alice", status, outcome or {})
    return sid(name)


def add_decryption(db, name: str, status=D.FETCHING, outcome=None) -> bytes:
    assert db.add_decryption(sid(name), name.encode(), "bob", status, outcome or {}, "/records/" + name)
    return sid(name)


def snapshot(db) -> tuple:
    return db.ceremonies(), db.decryptions(), db.audit_entries()


def paths(lifecycle, start):
    """Every run through the table from `start`."""
    out = [[start]]
    for new in sorted(lifecycle.transitions[start]):
        out += [[start] + rest for rest in paths(lifecycle, new)]
    return out


# --- accessors ----------------------------------------------------------------------------------------

def test_ceremony_by_session(db):
    s = add_ceremony(db, "c1", outcome={"note": 1})
    row = db.ceremony(s)
    assert row == {"session": s, "config": b"c1", "proposer": "alice", "status": "proposed",
                   "outcome": {"note": 1}, "created": row["created"]}
    assert db.ceremony(sid("nope")) is None
    assert db.ceremonies() == [row]


def test_ceremonies_by_status_in_order(db):
    a, b, c = (add_ceremony(db, n) for n in ("a", "b", "c"))
    db.set_ceremony_status(a, C.RUNNING)
    db.set_ceremony_status(c, "running")
    db.set_ceremony_status(c, "complete", {"h_e": "00"})
    assert [r["session"] for r in db.ceremonies()] == [a, b, c]
    assert [r["session"] for r in db.ceremonies("running")] == [a]
    assert [r["session"] for r in db.ceremonies(C.PROPOSED)] == [b]
    assert [r["session"] for r in db.ceremonies(("complete", C.RUNNING))] == [a, c]
    assert db.ceremonies(["superseded"]) == [] and db.ceremonies(()) == []
    assert db.ceremony(c)["outcome"] == {"h_e": "00"} and db.ceremony(c)["status"] == "complete"


def test_decryption_by_session_and_status(db):
    a, b = add_decryption(db, "a"), add_decryption(db, "b")
    i = sid("bad")
    assert db.add_decryption(i, b"bad", "carol", "invalid", {"reason": "no"})
    assert not db.add_decryption(a, b"again", "carol", "fetching", {})          # once per session
    db.set_decryption_status(b, D.CHECKING)
    row = db.decryption(a)
    assert row == {"session": a, "request": b"a", "requester": "bob", "status": "fetching", "outcome": {},
                   "record_dir": "/records/a", "created": row["created"]}
    assert db.decryption(i)["record_dir"] is None and db.decryption(sid("nope")) is None
    assert [r["session"] for r in db.decryptions()] == [a, b, i]
    assert [r["session"] for r in db.decryptions(("fetching", "checking", "ready"))] == [a, b]
    assert [r["session"] for r in db.decryptions(D.INVALID)] == [i]


def test_the_status_filters_use_an_index(db):
    for table in ("ceremonies", "decryptions"):
        plan = " ".join(str(r) for r in db._db.execute(
            f"EXPLAIN QUERY PLAN SELECT session FROM {table} WHERE status IN (?, ?) ORDER BY created", ("a", "b")))
        assert f"{table}_status" in plan


def test_an_older_database_gets_the_indexes(tmp_path):
    old = sqlite3.connect(tmp_path / DB_FILE)
    old.execute("CREATE TABLE ceremonies (session BLOB PRIMARY KEY, config BLOB NOT NULL, proposer TEXT NOT NULL, "
                "status TEXT NOT NULL, outcome TEXT NOT NULL DEFAULT '{}', created REAL NOT NULL)")
    old.execute("INSERT INTO ceremonies VALUES (?, x'00', 'alice', 'running', '{}', 1.0)", (sid("old"),))
    old.commit()
    old.close()
    db = NodeDatabase(tmp_path)
    try:
        names = {r[0] for r in db._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"ceremonies_status", "decryptions_status"} <= names
        assert [r["session"] for r in db.ceremonies("running")] == [sid("old")]
        db.set_ceremony_status(sid("old"), "aborted", {"reason": "timeout"})
    finally:
        db.close()


# --- the lifecycle inside the transaction -----------------------------------------------------------

@pytest.mark.parametrize("path", [p for start in CEREMONY.initial for p in paths(CEREMONY, start)], ids=str)
def test_every_legal_ceremony_run_is_stored(db, path):
    s = add_ceremony(db, "c", path[0])
    for i, status in enumerate(path[1:]):
        db.set_ceremony_status(s, status, {"step": i})
        assert db.ceremony(s)["status"] == status and db.ceremony(s)["outcome"] == {"step": i}
    assert db.audit_entries()[-1][2] == (f"ceremony {path[-1]}" if len(path) > 1 else "ceremony proposed")


@pytest.mark.parametrize("path", [p for start in DECRYPTION.initial for p in paths(DECRYPTION, start)], ids=str)
def test_every_legal_decryption_run_is_stored(db, path):
    s = add_decryption(db, "d", path[0])
    for status in path[1:]:
        db.set_decryption_status(s, status)
        assert db.decryption(s)["status"] == status
    if len(path) > 1:
        assert db.audit_entries()[-1][2] == f"decryption {path[-1]}"


def test_the_outcome_is_kept_when_none_is_given(db):
    s = add_decryption(db, "d", outcome={"kept": True})
    db.set_decryption_status(s, "checking")
    assert db.decryption(s)["outcome"] == {"kept": True}


@pytest.mark.parametrize("old, new", [("proposed", "complete"), ("running", "proposed"), ("complete", "running"),
                                      ("rejected", "running"), ("aborted", "aborted"), ("invalid", "proposed")])
def test_an_illegal_ceremony_transition_is_refused_with_nothing_written(db, old, new):
    s = add_ceremony(db, "c", "invalid" if old == "invalid" else "proposed", {"before": 1})
    route = {"proposed": [], "running": ["running"], "complete": ["running", "complete"],
             "rejected": ["rejected"], "aborted": ["running", "aborted"], "invalid": []}[old]
    for status in route:
        db.set_ceremony_status(s, status, {"before": 1})
    before = snapshot(db)
    with pytest.raises(IllegalTransition, match=f"ceremony: no transition from '{old}' to '{new}'"):
        db.set_ceremony_status(s, new, {"after": 2})
    assert snapshot(db) == before


@pytest.mark.parametrize("old, new", [("fetching", "ready"), ("checking", "fetching"), ("complete", "failed"),
                                      ("refused", "failed"), ("invalid", "fetching"), ("ready", "ready")])
def test_an_illegal_decryption_transition_is_refused_with_nothing_written(db, old, new):
    s = add_decryption(db, "d", "invalid" if old == "invalid" else "fetching")
    route = {"fetching": [], "checking": ["checking"], "ready": ["checking", "ready"],
             "complete": ["checking", "ready", "complete"], "refused": ["refused"], "invalid": []}[old]
    for status in route:
        db.set_decryption_status(s, status)
    before = snapshot(db)
    with pytest.raises(IllegalTransition, match=f"decryption: no transition from '{old}' to '{new}'"):
        db.set_decryption_status(s, new, {"reason": "x"})
    assert snapshot(db) == before


@pytest.mark.parametrize("status", ["running", "rejected", "aborted", "superseded", "lost"])
def test_a_ceremony_cannot_begin_in_a_later_status(db, status):
    before = snapshot(db)
    with pytest.raises(IllegalTransition, match=f"ceremony: '{status}' is not a status to begin with"):
        db.add_ceremony(sid("c"), b"c", "alice", status, {})
    assert snapshot(db) == before


@pytest.mark.parametrize("status", ["checking", "ready", "complete", "refused", "failed"])
def test_a_decryption_cannot_begin_in_a_later_status(db, status):
    before = snapshot(db)
    with pytest.raises(IllegalTransition, match=f"decryption: '{status}'"):
        db.add_decryption(sid("d"), b"d", "bob", status, {})
    assert snapshot(db) == before


def test_a_status_for_an_unknown_session_is_refused(db):
    before = snapshot(db)
    with pytest.raises(InputError, match="no ceremony"):
        db.set_ceremony_status(sid("nope"), "running")
    with pytest.raises(InputError, match="no decryption"):
        db.set_decryption_status(sid("nope"), "checking")
    assert snapshot(db) == before


def test_the_check_survives_a_restart(tmp_path):
    db = NodeDatabase(tmp_path)
    s = add_ceremony(db, "c")
    db.set_ceremony_status(s, "rejected", {"by": "bob"})
    db.close()
    db = NodeDatabase(tmp_path)                     # the database is the one source of truth
    try:
        with pytest.raises(IllegalTransition, match="from 'rejected' to 'running'"):
            db.set_ceremony_status(s, "running")
        assert db.ceremony(s)["outcome"] == {"by": "bob"}
    finally:
        db.close()


# --- refusals: counted in aggregate, audited at most once a minute per (peer, reason) -----------------


def test_refusals_are_one_row_per_peer_and_reason_and_audited_once(db):
    reported = [db.refuse("10.0.0.1", "malformed", f"frame {i}") for i in range(500)]
    assert reported[0] and not any(reported[1:])           # the caller logs the first only
    db.refuse("10.0.0.1", "bad signature", "x")
    db.refuse("bob", "replay", "y")
    assert db.refusal_counts() == {"10.0.0.1": {"malformed": 500, "bad signature": 1}, "bob": {"replay": 1}}
    assert sum(1 for e in db.audit_entries() if e[2] == "refused") == 3
    assert db._db.execute("SELECT COUNT(*) FROM refusals").fetchone()[0] == 3


def test_refusals_counted_in_memory_reach_the_database_on_close(tmp_path):
    first = NodeDatabase(tmp_path)
    for _ in range(10):
        first.refuse("10.0.0.2", "malformed", "")
    first.close()
    assert NodeDatabase(tmp_path).refusal_counts() == {"10.0.0.2": {"malformed": 10}}


def test_a_refusals_table_of_one_row_each_is_migrated_to_counts(tmp_path):
    old = sqlite3.connect(tmp_path / DB_FILE)
    old.execute("CREATE TABLE refusals (id INTEGER PRIMARY KEY, at REAL NOT NULL, peer TEXT NOT NULL, "
                "reason TEXT NOT NULL, detail TEXT NOT NULL)")
    rows = [(1.0, "bob", "replay", "a"), (2.0, "bob", "replay", "b"), (3.0, "1.2.3.4", "malformed", "c")]
    old.executemany("INSERT INTO refusals (at, peer, reason, detail) VALUES (?, ?, ?, ?)", rows)
    old.commit()
    old.close()
    db = NodeDatabase(tmp_path)
    assert db.refusal_counts() == {"bob": {"replay": 2}, "1.2.3.4": {"malformed": 1}}
    assert db._db.execute("SELECT first_at, last_at, detail FROM refusals WHERE peer = 'bob'").fetchone() == \
        (1.0, 2.0, "b")
    db.refuse("bob", "replay", "c")
    assert db.refusal_counts()["bob"] == {"replay": 3}
