"""Verification of the node's hash-chained audit trail (the `audit` table of node/storage/db.py).

Entry k carries prev_hash = the hash of entry k - 1 (32 zero bytes for the first) and
hash = SHA-256(prev_hash + json.dumps([at, event, detail])), where `detail` is the stored JSON text.
An entry altered in place no longer matches its hash; an entry removed leaves a gap in the ids and a
broken link; entries moved around link to the wrong predecessor. The check names the first such entry.

What a chain alone cannot show: entries cut off its end. Compare `count` and `head` with values
recorded elsewhere (a backup certificate, a peer) to catch that.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from node.crypto.errors import GuardianError, InputError
from node.storage.db import DB_FILE

HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)
_QUERY = "SELECT id, at, event, detail, prev_hash, hash FROM audit ORDER BY id"


class AuditChainError(GuardianError):
    """The audit trail was altered: an entry changed, removed or moved."""


@dataclass(frozen=True)
class AuditResult:
    ok: bool
    count: int                    # entries checked (all of them when ok)
    head: bytes                   # the hash of the last good entry; GENESIS for an empty trail
    bad_id: int | None = None     # the first entry at fault (for a removal: the missing id)
    problem: str = ""

    def __str__(self) -> str:
        if self.ok:
            return f"audit trail OK: {self.count} entries, head {self.head.hex()[:16]}"
        return f"audit trail broken at entry {self.bad_id}: {self.problem}"


def entry_hash(prev_hash: bytes, at: float, event: str, detail: str) -> bytes:
    """As NodeDatabase._audit computes it."""
    return hashlib.sha256(prev_hash + json.dumps([at, event, detail]).encode()).digest()


def verify_audit_chain(entries: Iterable[Sequence]) -> AuditResult:
    """Rows (id, at, event, detail, prev_hash, hash) in id order, as NodeDatabase.audit_entries() gives them."""
    rows = list(entries)
    by_hash = {bytes(row[5]): row[0] for row in rows if _well_formed(row)}
    prev_id, prev_hash = 0, GENESIS
    for count, row in enumerate(rows):
        problem, bad_id = _row_problem(count + 1, row, prev_id, prev_hash, by_hash)
        if problem:
            return AuditResult(False, count, prev_hash, bad_id, problem)
        prev_id, prev_hash = row[0], bytes(row[5])
    return AuditResult(True, len(rows), prev_hash)


def _row_problem(n: int, row: Sequence, prev_id: int, prev_hash: bytes,
                 by_hash: dict[bytes, int]) -> tuple[str, int | None]:
    if not _well_formed(row):
        entry_id = row[0] if _has_id(row) else None
        what = f"audit entry {entry_id}" if entry_id is not None else f"audit row {n}"
        return f"{what} is malformed: a column has the wrong type or length", entry_id
    entry_id, at, event, detail, prev, digest = row
    problem, bad_id = _link_problem(entry_id, bytes(prev), prev_id, prev_hash, by_hash)
    if problem:
        return problem, bad_id
    if entry_hash(bytes(prev), at, event, detail) != digest:
        return f"entry {entry_id} was altered: its content does not match its hash", entry_id
    return "", None


def _has_id(row: object) -> bool:
    return (isinstance(row, (tuple, list)) and len(row) == 6 and isinstance(row[0], int)
            and not isinstance(row[0], bool))


def _well_formed(row: object) -> bool:
    """The column types the database writes; anything else is an altered row."""
    if not _has_id(row):
        return False
    _, at, event, detail, prev, digest = row
    return (isinstance(at, (int, float)) and not isinstance(at, bool) and isinstance(event, str)
            and isinstance(detail, str) and isinstance(prev, bytes) and isinstance(digest, bytes)
            and len(prev) == HASH_BYTES and len(digest) == HASH_BYTES)


def _link_problem(entry_id: int, prev: bytes, prev_id: int, prev_hash: bytes,
                  by_hash: dict[bytes, int]) -> tuple[str, int | None]:
    if entry_id <= prev_id:
        return f"entry {entry_id} comes after entry {prev_id}: the entries are out of order", entry_id
    if entry_id > prev_id + 1:
        gap = f"entry {prev_id + 1} is" if entry_id == prev_id + 2 else f"entries {prev_id + 1} to {entry_id - 1} are"
        return f"{gap} missing (removed)", prev_id + 1
    if prev == prev_hash:
        return "", None
    linked = by_hash.get(prev)
    if linked is not None:
        return (f"entry {entry_id} is out of place: it links to entry {linked}, not to entry {prev_id} "
                f"(entries were moved or inserted)"), entry_id
    if prev_id == 0:
        return f"entry {entry_id} should start the trail but links to an entry that is not there", entry_id
    return (f"entry {entry_id} does not link to entry {prev_id}: entry {prev_id} was altered and rehashed, "
            f"or entries were removed or inserted between them"), entry_id


def verify_database(path: Path) -> AuditResult:
    """Open a node database read-only (never creating or changing it) and verify its audit trail."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no node database at {path}")
    try:
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            rows = db.execute(_QUERY).fetchall()
        finally:
            db.close()
    except sqlite3.Error as e:
        raise InputError(f"cannot read the audit trail of {path}: {e}") from None
    return verify_audit_chain(rows)


def verify_data_dir(data_dir: Path) -> AuditResult:
    """The audit trail of a node data directory."""
    path = Path(data_dir) / DB_FILE
    if not path.is_file():
        raise InputError(f"no node database in {data_dir}: is it a node data directory?")
    return verify_database(path)
