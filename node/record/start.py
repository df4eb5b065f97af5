"""`guardian record init`: a new election record from a key ceremony's export in a node's data directory.

A node writes each completed ceremony's public files to DATA_DIR/ceremonies/<hash>/ (the election
files, the guardians' public keys, the election config, every guardian's signed result, its index)
and, once every guardian's key custody is complete, the ceremony certificate beside them. The record
of the election starts as a copy of that export, file by file against its index: the certificate is
checked first (every signature, and that it is this export's), so a record never starts from a
ceremony whose custody is not certified, except as a rehearsal that says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.crypto.errors import GuardianError, InputError
from node.custody.certificate import ELECTION_CONFIG
from node.protocol.election_config import ElectionConfig, parse_election_config
from node.record import codec, layout
from node.record.custody_gate import CUSTODY_HINT, NotCertified, certified, mark_rehearsal

SESSION = re.compile(r"[0-9a-f]{64}")
PREFIX = re.compile(r"[0-9a-fA-F]{4,64}")
SAFE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


@dataclass(frozen=True)
class Started:
    session: str
    config: ElectionConfig
    h_e: str
    files: int
    certified: bool


def _exports(ceremonies: Path) -> list[Path]:
    if not ceremonies.is_dir():
        return []
    return sorted(p for p in ceremonies.iterdir() if p.is_dir() and SESSION.fullmatch(p.name))


def _config_of(export: Path) -> ElectionConfig | None:
    try:
        return parse_election_config((export / ELECTION_CONFIG).read_bytes())
    except (OSError, GuardianError):
        return None


def find_export(ceremonies: Path, prefix: str) -> Path:
    """The export of the completed ceremony named by (a prefix of) its hash; InputError naming the choices."""
    if not PREFIX.fullmatch(prefix or ""):
        raise InputError(f"--ceremony must be a ceremony's hash or a prefix of at least 4 hex digits, got {prefix!r}")
    exports = _exports(ceremonies)
    found = [p for p in exports if p.name.startswith(prefix.lower())]
    known = ", ".join(p.name[:16] for p in exports) or "none"
    if not found:
        raise InputError(f"no completed ceremony {prefix} in {ceremonies} (this node's completed ceremonies: "
                         f"{known}; see `guardian ceremony status`)")
    if len(found) > 1:
        shown = ", ".join(p.name[:16] for p in found)
        raise InputError(f"--ceremony {prefix} names {len(found)} ceremonies ({shown}): give more of the hash")
    return found[0]


def latest_export(ceremonies: Path) -> Path | None:
    """The export of the newest completed ceremony whose keys no other export replaces (None if there is none)."""
    exports = [p for p in _exports(ceremonies) if _config_of(p) is not None]
    replaced = {c.replaces.hex() for c in map(_config_of, exports) if c.replaces is not None}
    current = [p for p in exports if p.name not in replaced]
    return max(current, key=lambda p: (p / ELECTION_CONFIG).stat().st_mtime, default=None)


def start_record(ceremonies: Path, prefix: str, out: Path, rehearsal: bool = False,
                 warn: Callable[[str], None] = lambda _: None) -> Started:
    export = find_export(ceremonies, prefix)
    session = export.name
    record = layout.Record(export)
    missing = [rel for rel in (*layout.ELECTION_FILES, ELECTION_CONFIG, layout.INDEX) if not record.exists(rel)]
    config = _config_of(export)
    if missing or config is None or config.session.hex() != session:
        what = f"no {missing[0]}" if missing else f"its {ELECTION_CONFIG} is not ceremony {session[:16]}'s"
        raise InputError(f"ceremony {session[:16]}: its export in {export} is incomplete ({what}); is the ceremony "
                         f"complete on this node? (`guardian ceremony status`)")
    for other in _exports(ceremonies):
        theirs = _config_of(other) if other != export else None
        if theirs is not None and theirs.replaces is not None and theirs.replaces.hex() == session:
            raise InputError(f"ceremony {session[:16]} is superseded by ceremony {other.name[:16]} (its keys were "
                             f"replaced): start the record from that one, `guardian record init --ceremony "
                             f"{other.name[:16]}`")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: exists and is not empty; a record is never started over another")
    why = None
    try:
        certified(export)
    except NotCertified as e:
        if not rehearsal or e.hint != CUSTODY_HINT:
            hint = e.hint + ("; to rehearse without it, add --rehearsal" if e.hint == CUSTODY_HINT else "")
            raise InputError(f"ceremony {session[:16]}: {e.why} ({hint})") from None
        why = e.why
    index = record.read_index()
    copied = layout.Record(out)
    out.mkdir(parents=True, exist_ok=True)
    for rel, digest in sorted(index.items()):
        if not SAFE_PATH.fullmatch(rel):
            raise InputError(f"{export}: its index names an unsafe path {rel[:80]!r}")
        data = record.read(rel)
        if layout.sha256_hex(data) != digest:
            raise InputError(f"{export}: {rel} does not match the export's index: the export was altered or damaged")
        copied.write(rel, data)
    copied.write(layout.INDEX, record.read(layout.INDEX))
    if why is not None:
        warn(f"warning: REHEARSAL: {why}; guardian record init goes on because of --rehearsal, and the record "
             f"says so in rehearsal.json")
        mark_rehearsal(out, "guardian record init", why)
    h_e = codec.hashes_ext_from_json(copied.read_json(layout.HASHES_EXT))
    return Started(session, config, h_e.hex().upper(), len(index), why is None)
