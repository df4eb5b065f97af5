"""What the verifier found on each ballot file before, and the running products of batches of cast ballots.

Two tables in an SQLite file (a node keeps them in its own database, node.sqlite3;
`guardian verify --cache FILE` may name any file). The store is opaque: the
verifier (node/verifier/ballot_pass.py) makes the keys, from the file's SHA-256,
the election's H_E and the verifier's version, so a result is never found again
for another election or by another verifier, and says what the values mean.

  ballot_checks  key -> what one ballot file's checks found
  batch_products scope, members (the SHA-256s of the cast ballot files multiplied in) -> their product

Several processes may use one file at once (WAL, a busy timeout): the node, the
verifier it runs, and `guardian record follow`. The cache only saves work: a
lookup or a store that fails (a lock held too long, a full disk) is counted in
`failures` and the run goes on as if nothing had been cached.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

from node.crypto.errors import InputError

SCHEMA = """
CREATE TABLE IF NOT EXISTS ballot_checks (key BLOB PRIMARY KEY, found BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batch_products (
    id INTEGER PRIMARY KEY,
    scope BLOB NOT NULL,           -- the election and the verifier's version
    members BLOB NOT NULL,         -- concatenated 32-byte SHA-256s of the ballot files, in the order multiplied
    product BLOB NOT NULL,
    UNIQUE (scope, members)
);
"""
LOOKUP_CHUNK = 500          # keys per SELECT: under SQLite's limit on bound parameters
BUSY_SECONDS = 10
log = logging.getLogger("guardian.cache")


class BallotCache:
    """The cache file at `path`, created when missing. Use `with BallotCache(path) as cache:`."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.failures = 0
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise InputError(f"{self.path}: cannot use it as a verification cache: {e}") from None

    def __enter__(self) -> "BallotCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def found(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored findings of these keys, for those that have them."""
        keys = list(keys)
        out: dict[bytes, bytes] = {}
        try:
            for start in range(0, len(keys), LOOKUP_CHUNK):
                part = keys[start:start + LOOKUP_CHUNK]
                rows = self._db.execute(
                    f"SELECT key, found FROM ballot_checks WHERE key IN ({','.join('?' * len(part))})", part)
                out.update((bytes(k), bytes(v)) for k, v in rows)
        except sqlite3.Error as e:
            self._failed("look up", e)
            return {}
        return out

    def store(self, found: Iterable[tuple[bytes, bytes]], batches: Iterable[tuple[bytes, bytes, bytes]] = ()) -> None:
        """Findings by key, and batches as (scope, members, product), in one transaction."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO ballot_checks (key, found) VALUES (?, ?)", found)
                self._db.executemany("INSERT OR IGNORE INTO batch_products (scope, members, product) "
                                     "VALUES (?, ?, ?)", batches)
        except sqlite3.Error as e:
            self._failed("store into", e)

    def batches(self, scope: bytes) -> list[tuple[int, bytes]]:
        """(id, members) of every batch of `scope`, oldest first; `product(id)` reads one's product."""
        try:
            return [(rowid, bytes(members)) for rowid, members in self._db.execute(
                "SELECT id, members FROM batch_products WHERE scope = ? ORDER BY id", (scope,))]
        except sqlite3.Error as e:
            self._failed("look up", e)
            return []

    def product(self, rowid: int) -> bytes | None:
        try:
            row = self._db.execute("SELECT product FROM batch_products WHERE id = ?", (rowid,)).fetchone()
        except sqlite3.Error as e:
            self._failed("look up", e)
            return None
        return bytes(row[0]) if row else None

    def _failed(self, what: str, e: sqlite3.Error) -> None:
        self.failures += 1
        log.warning("could not %s the verification cache %s (%s): going on without it", what, self.path, e)

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM ballot_checks").fetchone()[0]
