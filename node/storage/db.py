"""The node database: one SQLite file in WAL mode in the data directory.

Rules that keep promises to peers across crashes:
- what the node is about to send is committed to the outbox before any peer sees it;
- what the node accepts is committed to the inbox before it acts on it;
- every step is appended to the audit trail, each entry carrying the hash of the one before;
- a ceremony's or a decryption's status changes only as its table allows (node/protocol/lifecycle.py),
  checked in the transaction that writes it.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import shutil
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Collection

from node.crypto.errors import InputError
from node.protocol.envelope import Envelope, EnvelopeError, decode_envelope
from node.protocol.lifecycle import CEREMONY, DECRYPTION, Lifecycle

DB_FILE = "node.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,       -- the order peers receive rows in; our own envelopes carry it
    recipient BLOB,                -- NULL: every peer
    type TEXT NOT NULL,
    session BLOB NOT NULL,
    envelope BLOB NOT NULL,
    created REAL NOT NULL,
    relayed BLOB                   -- for another guardian's envelope we pass on: its digest; else NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    digest BLOB PRIMARY KEY,
    sender BLOB NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    session BLOB NOT NULL,
    envelope BLOB NOT NULL,
    received REAL NOT NULL,
    direct INTEGER NOT NULL DEFAULT 1,   -- 1: from the sender's own link; 0: relayed by another peer
    applied INTEGER NOT NULL DEFAULT 0,  -- 1 once the service it is for has acted on it (replayed at start if 0)
    UNIQUE (sender, seq)
);
CREATE TABLE IF NOT EXISTS refusals (
    peer TEXT NOT NULL,            -- a roster name (authenticated), or the remote address before that
    reason TEXT NOT NULL,
    count INTEGER NOT NULL,        -- one row per (peer, reason): a flood costs a counter, not a row each
    first_at REAL NOT NULL,
    last_at REAL NOT NULL,
    detail TEXT NOT NULL,          -- the latest one's
    PRIMARY KEY (peer, reason)
);
CREATE TABLE IF NOT EXISTS ceremonies (
    session BLOB PRIMARY KEY,
    config BLOB NOT NULL,          -- the canonical election config; its SHA-256 is the session id
    proposer TEXT NOT NULL,
    status TEXT NOT NULL,          -- node/protocol/lifecycle.py: CeremonyStatus
    outcome TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL,
    mac BLOB                       -- HMAC of the row under the node's storage key: a changed byte is named
);
CREATE TABLE IF NOT EXISTS ceremony_votes (
    session BLOB NOT NULL,
    guardian TEXT NOT NULL,
    vote TEXT NOT NULL,            -- accept | reject
    why TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session, guardian)
);
CREATE TABLE IF NOT EXISTS sealed_state (
    session BLOB PRIMARY KEY,
    sealed BLOB NOT NULL           -- the guardian's ceremony secrets, sealed with the node's storage key
);
CREATE TABLE IF NOT EXISTS decryptions (
    session BLOB PRIMARY KEY,
    request BLOB NOT NULL,         -- the canonical request (node/protocol/decryption.py)
    requester TEXT NOT NULL,
    status TEXT NOT NULL,          -- node/protocol/lifecycle.py: DecryptionStatus
    outcome TEXT NOT NULL DEFAULT '{}',
    record_dir TEXT,               -- where the requester wants the result written (its own node only)
    created REAL NOT NULL,
    mac BLOB                       -- HMAC of the row under the node's storage key
);
CREATE TABLE IF NOT EXISTS custody_steps (
    ceremony BLOB NOT NULL,
    guardian TEXT NOT NULL,
    step TEXT NOT NULL,            -- downloaded | backed-up | verified
    at REAL NOT NULL,              -- when the guardian says it did it (inside its signed message)
    detail TEXT NOT NULL DEFAULT '{}',
    envelope BLOB,                 -- the signed custody-step message: the evidence
    PRIMARY KEY (ceremony, guardian, step)
);
CREATE TABLE IF NOT EXISTS certificate_signatures (
    ceremony BLOB NOT NULL,
    guardian TEXT NOT NULL,
    digest BLOB NOT NULL,          -- SHA-256 of the certificate body it signed
    signature BLOB NOT NULL,
    PRIMARY KEY (ceremony, guardian)
);
CREATE TABLE IF NOT EXISTS node_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
);
"""

_REFUSALS_TABLE = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS refusals"):]
_REFUSALS_TABLE = _REFUSALS_TABLE[:_REFUSALS_TABLE.index(";") + 1]
# A refusal is written to the audit trail (and logged) at most once per (peer, reason) in this
# many seconds; in between it only counts, and the counts reach the database in batches.
REFUSAL_REPORT_SECONDS = 60.0
REFUSAL_KEYS_REMEMBERED = 4096

CEREMONY_COLUMNS = "session, config, proposer, status, outcome, created"
DECRYPTION_COLUMNS = "session, request, requester, status, outcome, record_dir, created"


class StoreError(InputError):
    """The node database cannot be used as it is; the message is one line naming the file."""


class DiskFull(StoreError):
    """The disk holding the node database is full: nothing was written, and the node takes no new work."""


class StoreDamaged(StoreError):
    """The node database is damaged or was changed outside the node."""


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return 2**62


def store_error(path: Path, error: BaseException) -> StoreError | None:
    """The StoreError an SQLite or OS error stands for, or None if it is not about the store itself."""
    code = getattr(error, "sqlite_errorcode", None)
    text = str(error)
    # SQLite says "disk I/O error" when it cannot even create its shared-memory file on a full disk.
    io_error_on_full_disk = code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and _free_bytes(path) < 2**16
    if code == sqlite3.SQLITE_FULL or "disk is full" in text or getattr(error, "errno", None) == errno.ENOSPC \
            or io_error_on_full_disk:
        return DiskFull(f"the disk holding {path} is full: free some space (the node takes no new work until "
                        f"then; nothing it accepted is lost)")
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return StoreDamaged(f"the node database {path} is damaged ({text}): restore the node from its key "
                            f"backup (`guardian restore`) rather than run on it")
    return None


def _ceremony(r: tuple) -> dict:
    return {"session": bytes(r[0]), "config": bytes(r[1]), "proposer": r[2], "status": r[3],
            "outcome": json.loads(r[4]), "created": r[5]}


def _decryption(r: tuple) -> dict:
    return {"session": bytes(r[0]), "request": bytes(r[1]), "requester": r[2], "status": r[3],
            "outcome": json.loads(r[4]), "record_dir": r[5], "created": r[6]}


def _with_status(status: str | Collection[str] | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE clause of a status filter, and its arguments."""
    if status is None:
        return "", ()
    statuses = (str(status),) if isinstance(status, str) else tuple(str(s) for s in status)
    return f" WHERE status IN ({', '.join('?' * len(statuses))})", statuses


# The rows whose change would change what the node does or shows (a ceremony's config and outcome, H_E
# among it; a decryption's request and result) carry an HMAC under a key derived from the node's
# identity: a flipped byte is named at start and on every read, not exported in a backup.
SEALED_ROWS = {"ceremonies": (CEREMONY_COLUMNS, _ceremony, "ceremony"),
               "decryptions": (DECRYPTION_COLUMNS, _decryption, "decryption")}


class NodeDatabase:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / DB_FILE
        self._mac_key: bytes | None = None
        self._applied: list[bytes] = []      # inbox digests acted on, written with the next transaction
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")   # a committed promise survives power loss
            self._db.executescript(SCHEMA)
            self._migrate()
            # A damaged page is found now, in one line, not as a traceback halfway through some step.
            problem = self._db.execute("PRAGMA quick_check(1)").fetchone()[0]
        except sqlite3.Error as e:
            raise (store_error(self.path, e) or StoreDamaged(f"cannot open the node database {self.path}: {e}")) \
                from None
        if problem != "ok":
            raise StoreDamaged(f"the node database {self.path} is damaged ({problem}): restore the node from its "
                               f"key backup (`guardian restore`) rather than run on it")
        self._refusal_reported: dict[tuple[str, str], float] = {}
        self._refusals_pending: dict[tuple[str, str], tuple[int, float, float, str]] = {}

    @contextmanager
    def _write(self):
        """One write transaction; a full disk or a damaged file comes out as a one-line StoreError."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                if self._applied:
                    self._flush_applied()
                yield
        except sqlite3.Error as e:
            error = store_error(self.path, e)
            if error is None:
                raise
            raise error from None

    def _migrate(self) -> None:
        """Bring a database made by an earlier version up to this schema (columns added since)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(refusals)")}
        if "count" not in columns:
            # One row per refusal before: fold them into one counted row per (peer, reason).
            with self._write():
                self._db.execute("ALTER TABLE refusals RENAME TO refusals_rows")
                self._db.execute(_REFUSALS_TABLE)
                self._db.execute(
                    "INSERT INTO refusals (peer, reason, count, first_at, last_at, detail) "
                    "SELECT peer, reason, COUNT(*), MIN(at), MAX(at), "
                    "(SELECT detail FROM refusals_rows r2 WHERE r2.peer = r.peer AND r2.reason = r.reason "
                    "ORDER BY id DESC LIMIT 1) FROM refusals_rows r GROUP BY peer, reason")
                self._db.execute("DROP TABLE refusals_rows")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(outbox)")}
        if "relayed" not in columns:
            self._db.execute("ALTER TABLE outbox ADD COLUMN relayed BLOB")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(inbox)")}
        if "direct" not in columns:
            self._db.execute("ALTER TABLE inbox ADD COLUMN direct INTEGER NOT NULL DEFAULT 1")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(inbox)")}
        if "applied" not in columns:
            # What an earlier version accepted it had acted on (or replays from its session's log).
            self._db.execute("ALTER TABLE inbox ADD COLUMN applied INTEGER NOT NULL DEFAULT 1")
        for table in SEALED_ROWS:
            if "mac" not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN mac BLOB")
        self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS outbox_relayed ON outbox (relayed)")
        self._db.execute("CREATE INDEX IF NOT EXISTS ceremonies_status ON ceremonies (status, created)")
        self._db.execute("CREATE INDEX IF NOT EXISTS decryptions_status ON decryptions (status, created)")
        # A session's log is read when it starts or resumes: by index, however full the inbox.
        self._db.execute("CREATE INDEX IF NOT EXISTS inbox_session ON inbox (session)")
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_session ON outbox (session)")

    # --- rows sealed at rest ----------------------------------------------------------------------

    def seal_rows(self, key: bytes) -> None:
        """From now on, check and write the rows' HMACs with `key`. Rows of a database made before
        HMACs, or while the node had no key (tests, a restore), are sealed now, once: after that a
        row without one is damage."""
        self._mac_key = key
        if self._db.execute("SELECT 1 FROM node_meta WHERE key = 'rows_sealed'").fetchone():
            return
        with self._write():
            for table, (columns, _, _) in SEALED_ROWS.items():
                for row in self._db.execute(f"SELECT {columns} FROM {table} WHERE mac IS NULL").fetchall():
                    self._db.execute(f"UPDATE {table} SET mac = ? WHERE session = ?", (self._mac(table, row), row[0]))
            self._db.execute("INSERT INTO node_meta (key, value) VALUES ('rows_sealed', '1')")

    def check_rows(self) -> None:
        """Every sealed row against its HMAC (at start): StoreDamaged naming the first changed one."""
        for table, (columns, _, _) in SEALED_ROWS.items():
            for row in self._db.execute(f"SELECT {columns}, mac FROM {table}").fetchall():
                self._checked(table, row)

    def check_store(self, open_sealed: Callable[[bytes], object]) -> None:
        """At start: every sealed row against its HMAC, every stored envelope against its signature, every
        sealed state against its box. StoreDamaged names the first that fails."""
        self.check_rows()
        for table, key in (("inbox", "digest"), ("outbox", "seq")):
            for ident, raw in self._db.execute(f"SELECT {key}, envelope FROM {table}"):
                try:
                    decode_envelope(bytes(raw), 64 * 2**20).verify()
                except EnvelopeError as e:
                    name = bytes(ident).hex()[:16] if isinstance(ident, bytes) else ident
                    raise StoreDamaged(f"the node database {self.path} is damaged: {table} envelope {name} "
                                       f"fails its check ({e}); restore the node from its key backup") from None
        for session, sealed in self._db.execute("SELECT session, sealed FROM sealed_state"):
            try:
                open_sealed(bytes(sealed))
            except Exception:
                raise StoreDamaged(f"the node database {self.path} is damaged: the sealed state of session "
                                   f"{bytes(session).hex()[:16]} does not open under this node's key; restore "
                                   f"the node from its key backup") from None

    def _mac(self, table: str, row: tuple) -> bytes:
        values = [v.hex() if isinstance(v, bytes) else v for v in row]
        return hmac.new(self._mac_key, json.dumps([table, *values]).encode(), hashlib.sha256).digest()

    def _checked(self, table: str, row: tuple) -> dict:
        """A row read with its mac as last column, checked when the node holds its key."""
        columns, convert, what = SEALED_ROWS[table]
        values, mac = row[:-1], row[-1]
        if self._mac_key is not None and (mac is None or not hmac.compare_digest(bytes(mac), self._mac(table, values))):
            raise StoreDamaged(f"the node database {self.path} was changed outside the node: {what} "
                               f"{bytes(values[0]).hex()[:16]} no longer matches its seal (status, outcome or "
                               f"config altered); restore the node from its key backup rather than run on it")
        return convert(values)

    def _reseal(self, table: str, session: bytes) -> None:
        if self._mac_key is None:
            return
        columns = SEALED_ROWS[table][0]
        row = self._db.execute(f"SELECT {columns} FROM {table} WHERE session = ?", (session,)).fetchone()
        if row is not None:
            self._db.execute(f"UPDATE {table} SET mac = ? WHERE session = ?", (self._mac(table, row), session))

    def close(self) -> None:
        try:
            self.flush_refusals()
            self.flush_applied()
        except StoreError:
            pass                  # a full disk: what was not written is replayed or recounted at start
        self._db.close()

    # --- outbox: commit before send ---------------------------------------------------------

    def next_seq(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM outbox").fetchone()
        floor = self._db.execute("SELECT value FROM node_meta WHERE key = 'seq_floor'").fetchone()
        return max(row[0], int(floor[0]) if floor else 0) + 1

    def set_seq_floor(self, seq: int) -> None:
        """A node restored from a backup numbers its messages above anything its identity signed before:
        a reused number with new content would be equivocation to its peers."""
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO node_meta (key, value) VALUES ('seq_floor', ?)", (str(seq),))
            self._audit("sequence floor", {"seq": seq})

    def append_outbox(self, envelope: Envelope, recipient: bytes | None) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO outbox (seq, recipient, type, session, envelope, created) VALUES (?, ?, ?, ?, ?, ?)",
                (envelope.seq, recipient, envelope.type, envelope.session, envelope.encode(), time.time()))
            self._audit("sent", {"seq": envelope.seq, "type": envelope.type,
                                 "to": recipient.hex()[:16] if recipient else "all"})

    def append_outbox_with_state(self, envelopes: list[Envelope], session: bytes, sealed: bytes) -> None:
        """Commit the sealed secret state and the messages that depend on it in one transaction."""
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO sealed_state (session, sealed) VALUES (?, ?)", (session, sealed))
            for envelope in envelopes:
                self._db.execute(
                    "INSERT INTO outbox (seq, recipient, type, session, envelope, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (envelope.seq, None, envelope.type, envelope.session, envelope.encode(), time.time()))
                self._audit("sent", {"seq": envelope.seq, "type": envelope.type, "to": "all",
                                     "session": envelope.session.hex()[:16]})

    def sealed_state(self, session: bytes) -> bytes | None:
        row = self._db.execute("SELECT sealed FROM sealed_state WHERE session = ?", (session,)).fetchone()
        return bytes(row[0]) if row else None

    def session_log(self, session: bytes) -> list[tuple[bytes, bool]]:
        """Every envelope of a session, ours and our peers', in the order this node stored them."""
        rows = self._db.execute(
            "SELECT created, envelope, 1 FROM outbox WHERE session = ? AND relayed IS NULL UNION ALL "
            "SELECT received, envelope, 0 FROM inbox WHERE session = ? ORDER BY 1", (session, session)).fetchall()
        return [(bytes(env), bool(own)) for _, env, own in rows]

    # --- ceremonies -------------------------------------------------------------------------------

    def add_ceremony(self, session: bytes, config: bytes, proposer: str, status: str, outcome: dict) -> bool:
        CEREMONY.check_initial(status)
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO ceremonies (session, config, proposer, status, outcome, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (session, config, proposer, str(status), json.dumps(outcome), time.time()))
            if cursor.rowcount:
                self._reseal("ceremonies", session)
                self._audit("ceremony proposed", {"session": session.hex(), "by": proposer, "status": status})
            return bool(cursor.rowcount)

    def set_ceremony_status(self, session: bytes, status: str, outcome: dict | None = None) -> None:
        """IllegalTransition, and nothing written, unless the ceremony lifecycle allows the change."""
        self._set_status("ceremonies", CEREMONY, session, status, outcome)

    def ceremony(self, session: bytes) -> dict | None:
        row = self._db.execute(f"SELECT {CEREMONY_COLUMNS}, mac FROM ceremonies WHERE session = ?",
                               (session,)).fetchone()
        return None if row is None else self._checked("ceremonies", row)

    def ceremonies(self, status: str | Collection[str] | None = None) -> list[dict]:
        """In the order they were stored; only those with the status (or one of the statuses) given."""
        where, args = _with_status(status)
        rows = self._db.execute(f"SELECT {CEREMONY_COLUMNS}, mac FROM ceremonies{where} ORDER BY created", args)
        return [self._checked("ceremonies", r) for r in rows.fetchall()]

    # --- decryption sessions ---------------------------------------------------------------------

    def add_decryption(self, session: bytes, request: bytes, requester: str, status: str, outcome: dict,
                       record_dir: str | None = None) -> bool:
        DECRYPTION.check_initial(status)
        with self._write():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO decryptions (session, request, requester, status, outcome, record_dir, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session, request, requester, str(status), json.dumps(outcome), record_dir, time.time()))
            if cursor.rowcount:
                self._reseal("decryptions", session)
                self._audit("decryption requested", {"session": session.hex(), "by": requester, "status": status})
            return bool(cursor.rowcount)

    def set_decryption_status(self, session: bytes, status: str, outcome: dict | None = None) -> None:
        """IllegalTransition, and nothing written, unless the decryption lifecycle allows the change."""
        self._set_status("decryptions", DECRYPTION, session, status, outcome)

    def decryption(self, session: bytes) -> dict | None:
        row = self._db.execute(f"SELECT {DECRYPTION_COLUMNS}, mac FROM decryptions WHERE session = ?",
                               (session,)).fetchone()
        return None if row is None else self._checked("decryptions", row)

    def decryptions(self, status: str | Collection[str] | None = None) -> list[dict]:
        """In the order they were stored; only those with the status (or one of the statuses) given."""
        where, args = _with_status(status)
        rows = self._db.execute(f"SELECT {DECRYPTION_COLUMNS}, mac FROM decryptions{where} ORDER BY created", args)
        return [self._checked("decryptions", r) for r in rows.fetchall()]

    # --- lookups by index: a peer's proposals or requests never make a hot path read a whole table ---------

    def ceremony_sessions(self, prefix: str = "", status: str | Collection[str] | None = None) -> list[bytes]:
        """The sessions of the ceremonies whose hash starts with the hex `prefix`, in the order they were stored."""
        digits = prefix.lower()
        if len(digits) > 64 or digits.strip("0123456789abcdef"):
            return []
        where, args = _with_status(status)
        where = (where + " AND" if where else " WHERE") + " session BETWEEN ? AND ?"
        low, high = (bytes.fromhex(digits + fill * (64 - len(digits))) for fill in "0f")
        rows = self._db.execute(f"SELECT session FROM ceremonies{where} ORDER BY created", (*args, low, high))
        return [bytes(r[0]) for r in rows.fetchall()]

    def held_from(self, table: str, peer: str, status: str | Collection[str]) -> int:
        """How many ceremonies (proposed by) or decryptions (requested by) `peer` have the status given."""
        column = {"ceremonies": "proposer", "decryptions": "requester"}[table]
        where, args = _with_status(status)
        return self._db.execute(f"SELECT COUNT(*) FROM {table}{where} AND {column} = ?", (*args, peer)).fetchone()[0]

    def decryptions_of(self, ceremony: bytes) -> int:
        """How many decryptions, other than invalid ones, ask for the keys of `ceremony` (a valid request is
        canonical JSON: its ceremony field reads exactly so)."""
        field = b'"ceremony":"' + ceremony.hex().encode() + b'"'
        return self._db.execute("SELECT COUNT(*) FROM decryptions WHERE status != 'invalid' AND instr(request, ?) > 0",
                                (field,)).fetchone()[0]

    def _set_status(self, table: str, lifecycle: Lifecycle, session: bytes, status: str,
                    outcome: dict | None) -> None:
        # The check reads the status inside the write transaction: no other change can come between.
        with self._write():
            columns = SEALED_ROWS[table][0]
            row = self._db.execute(f"SELECT {columns}, mac FROM {table} WHERE session = ?", (session,)).fetchone()
            if row is None:
                raise InputError(f"no {lifecycle.name} {session.hex()[:16]} in the node database")
            lifecycle.check(self._checked(table, row)["status"], status)
            self._db.execute(f"UPDATE {table} SET status = ?, outcome = COALESCE(?, outcome) WHERE session = ?",
                             (str(status), json.dumps(outcome) if outcome is not None else None, session))
            self._reseal(table, session)
            self._audit(f"{lifecycle.name} {status}", {"session": session.hex(), **(outcome or {})})

    # --- key custody ------------------------------------------------------------------------------

    def add_custody_step(self, ceremony: bytes, guardian: str, step: str, at: float, detail: dict,
                         envelope: bytes | None) -> bool:
        """A guardian's custody step; a later step of the same name (a new export, say) replaces it."""
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO custody_steps (ceremony, guardian, step, at, detail, envelope) "
                "VALUES (?, ?, ?, ?, ?, ?)", (ceremony, guardian, step, at, json.dumps(detail), envelope))
            self._audit("custody " + step, {"ceremony": ceremony.hex(), "guardian": guardian, **detail})
            return True

    def custody_steps(self, ceremony: bytes) -> dict[str, dict[str, dict]]:
        """guardian -> step -> {at, detail}."""
        out: dict[str, dict[str, dict]] = {}
        for guardian, step, at, detail in self._db.execute(
                "SELECT guardian, step, at, detail FROM custody_steps WHERE ceremony = ?", (ceremony,)):
            out.setdefault(guardian, {})[step] = {"at": at, "detail": json.loads(detail)}
        return out

    def clear_custody_steps(self, ceremony: bytes, guardian: str, steps: tuple[str, ...]) -> None:
        with self._write():
            for step in steps:
                self._db.execute("DELETE FROM custody_steps WHERE ceremony = ? AND guardian = ? AND step = ?",
                                 (ceremony, guardian, step))

    def add_certificate_signature(self, ceremony: bytes, guardian: str, digest: bytes, signature: bytes) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO certificate_signatures (ceremony, guardian, digest, signature) "
                             "VALUES (?, ?, ?, ?)", (ceremony, guardian, digest, signature))
            self._audit("certificate signed", {"ceremony": ceremony.hex(), "guardian": guardian,
                                               "digest": digest.hex()})

    def certificate_signatures(self, ceremony: bytes) -> dict[str, tuple[bytes, bytes]]:
        rows = self._db.execute("SELECT guardian, digest, signature FROM certificate_signatures WHERE ceremony = ?",
                                (ceremony,))
        return {g: (bytes(d), bytes(s)) for g, d, s in rows}

    def vote(self, session: bytes, guardian: str, vote: str, why: str = "") -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO ceremony_votes (session, guardian, vote, why) VALUES (?, ?, ?, ?)",
                             (session, guardian, vote, why[:500]))
            self._audit("ceremony vote", {"session": session.hex(), "guardian": guardian, "vote": vote, "why": why})

    def votes(self, session: bytes) -> dict[str, tuple[str, str]]:
        rows = self._db.execute("SELECT guardian, vote, why FROM ceremony_votes WHERE session = ?", (session,))
        return {g: (v, w) for g, v, w in rows}

    def append_relay(self, envelope: Envelope) -> bool:
        """Queue another guardian's envelope for every peer, once, in order with our own messages."""
        with self._write():
            seq = self.next_seq()
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (seq, recipient, type, session, envelope, created, relayed) "
                "VALUES (?, NULL, ?, ?, ?, ?, ?)",
                (seq, envelope.type, envelope.session, envelope.encode(), time.time(), envelope.digest))
            return bool(cursor.rowcount)

    def outbox_for(self, peer: bytes, after_seq: int) -> list[tuple[int, bytes]]:
        """Rows for `peer` after `after_seq`, ours and relayed ones, in order. Relays are resent after a
        reconnect too, since a peer's cursor counts only our own envelopes; resending them is harmless."""
        rows = self._db.execute(
            "SELECT seq, envelope FROM outbox WHERE seq > ? AND (recipient IS NULL OR recipient = ?) ORDER BY seq",
            (after_seq, peer)).fetchall()
        return [(seq, bytes(env)) for seq, env in rows]

    # --- inbox: commit before use -----------------------------------------------------------

    def accept(self, envelope: Envelope, via: str, direct: bool = True, applied: bool = False) -> None:
        """Commit an envelope to the inbox. Unless `applied`, it is replayed at start (`unapplied`) until
        `mark_applied` says its service acted on it: a kill between the two loses nothing."""
        with self._write():
            self._db.execute(
                "INSERT INTO inbox (digest, sender, seq, type, session, envelope, received, direct, applied) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (envelope.digest, envelope.sender, envelope.seq, envelope.type, envelope.session,
                 envelope.encode(), time.time(), int(direct), int(applied)))
            self._audit("received", {"from": via, "seq": envelope.seq, "type": envelope.type})

    def mark_applied(self, digest: bytes) -> None:
        """Its service has acted on this inbox envelope. Written with the next transaction (or flush):
        marks reach the disk in the order given, so what a kill leaves unmarked is the latest few, and
        replaying those in order again ends where the node was."""
        self._applied.append(digest)

    def _flush_applied(self) -> None:
        applied, self._applied = self._applied, []
        self._db.executemany("UPDATE inbox SET applied = 1 WHERE digest = ?", [(d,) for d in applied])

    def flush_applied(self) -> None:
        if self._applied:
            with self._write():
                pass

    def unapplied(self, max_frame_bytes: int = 64 * 2**20) -> list[Envelope]:
        """Inbox envelopes accepted but not yet acted on, in the order they were accepted."""
        rows = self._db.execute("SELECT envelope FROM inbox WHERE applied = 0 ORDER BY received, sender, seq")
        return [decode_envelope(bytes(r[0]), max_frame_bytes) for r in rows.fetchall()]

    def highest_own_seq(self) -> int:
        """The highest sequence number this node has used (or may not reuse, after a restore)."""
        return self.next_seq() - 1

    def mark_direct(self, digest: bytes) -> bool:
        """An envelope first seen relayed has now come over its sender's own link too."""
        with self._write():
            cursor = self._db.execute("UPDATE inbox SET direct = 1 WHERE digest = ? AND direct = 0", (digest,))
            return bool(cursor.rowcount)

    def inbox(self, max_frame_bytes: int = 64 * 2**20) -> list[Envelope]:
        rows = self._db.execute("SELECT envelope FROM inbox ORDER BY received, sender, seq").fetchall()
        return [decode_envelope(bytes(r[0]), max_frame_bytes) for r in rows]

    def highest_seq_from(self, sender: bytes) -> int:
        """The sync cursor for a peer: the highest of its sequence numbers received over its own link.

        A peer's link delivers its outbox in order, so everything below this arrived; copies of its
        envelopes relayed by others may run ahead and must not move the cursor past a gap.
        """
        row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM inbox WHERE sender = ? AND direct = 1",
                               (sender,)).fetchone()
        return row[0]

    def counts(self) -> dict:
        return {"outbox": self._db.execute("SELECT COUNT(*) FROM outbox WHERE relayed IS NULL").fetchone()[0],
                "inbox": self._db.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]}

    # --- refusals and the audit trail ---------------------------------------------------------

    def refuse(self, peer: str, reason: str, detail: str) -> bool:
        """Count a refusal. True when it is the first of its (peer, reason) in REFUSAL_REPORT_SECONDS:
        then it is written with an audit entry at once and the caller logs it; else it is only counted
        in memory until the next flush, so a flood costs neither a transaction nor a log line each."""
        key, now = (peer, reason), time.time()
        reported = self._refusal_reported.get(key)
        if reported is not None and now - reported < REFUSAL_REPORT_SECONDS:
            pending = self._refusals_pending.get(key)
            self._refusals_pending[key] = (pending[0] + 1 if pending else 1, pending[1] if pending else now,
                                           now, detail[:500])
            return False
        if len(self._refusal_reported) >= REFUSAL_KEYS_REMEMBERED:
            self._refusal_reported = {k: t for k, t in self._refusal_reported.items()
                                      if now - t < REFUSAL_REPORT_SECONDS}
        self._refusal_reported[key] = now
        pending = self._refusals_pending.pop(key, None)
        with self._write():
            self._count_refusal(key, (pending[0] if pending else 0) + 1, pending[1] if pending else now, now,
                                detail[:500])
            total = self._db.execute("SELECT count FROM refusals WHERE peer = ? AND reason = ?", key).fetchone()[0]
            self._audit("refused", {"peer": peer, "reason": reason, "detail": detail[:200], "count": total})
        return True

    def flush_refusals(self) -> None:
        """Write the refusals counted in memory since the last flush, in one transaction."""
        if not self._refusals_pending:
            return
        pending, self._refusals_pending = self._refusals_pending, {}
        with self._write():
            for key, (count, first, last, detail) in pending.items():
                self._count_refusal(key, count, first, last, detail)

    def _count_refusal(self, key: tuple[str, str], count: int, first: float, last: float, detail: str) -> None:
        self._db.execute(
            "INSERT INTO refusals (peer, reason, count, first_at, last_at, detail) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (peer, reason) DO UPDATE SET count = count + excluded.count, "
            "last_at = excluded.last_at, detail = excluded.detail", (*key, count, first, last, detail))

    def refusal_counts(self) -> dict[str, dict[str, int]]:
        self.flush_refusals()
        result: dict[str, dict[str, int]] = {}
        for peer, reason, count in self._db.execute("SELECT peer, reason, count FROM refusals"):
            result.setdefault(peer, {})[reason] = count
        return result

    def audit(self, event: str, detail: dict) -> None:
        with self._write():
            self._audit(event, detail)

    def _audit(self, event: str, detail: dict) -> None:
        # Inside the caller's transaction: the step and its audit entry commit together.
        row = self._db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        prev = bytes(row[0]) if row else bytes(32)
        at = time.time()
        text = json.dumps(detail, sort_keys=True)
        digest = hashlib.sha256(prev + json.dumps([at, event, text]).encode()).digest()
        self._db.execute("INSERT INTO audit (at, event, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                         (at, event, text, prev, digest))

    def audit_entries(self) -> list[tuple]:
        return self._db.execute("SELECT id, at, event, detail, prev_hash, hash FROM audit ORDER BY id").fetchall()
