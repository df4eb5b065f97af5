"""The custody gate: an election proceeds only on a record whose ceremony certificate holds (seed 000).

"Only after all trustees complete these steps can the election proceed": `guardian encrypt`, `ballots
submit`, `tally` and `decrypt` each check that the record carries the ceremony's certificate, that every
guardian's signature on it verifies, and that it is for this record's election (H_E, every guardian's
public key file, the ceremony's election_config.json). The presence of the file is not enough.

A rehearsal may go without it, loudly: with --rehearsal (or on a record that already is one, such as an
in-process test election) the command warns on stderr and appends what it skipped, and when, to the
record's rehearsal.json, which the verifier reports as a warning. A rehearsal never becomes a real
election: the note stays in the record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from node.crypto.errors import GuardianError, InputError
from node.custody.certificate import (
    CERTIFICATE_JSON, CustodyError, read_certificate, superseded_by, verify_certificate,
)
from node.record import layout

REHEARSAL = "rehearsal.json"
REHEARSAL_FORMAT = "guardian-node rehearsal v1"
REHEARSAL_NOTE = ("a rehearsal: the guardians' key custody was not certified for these commands; "
                  "this is not a real election")
MAX_ENTRIES = 1000
NOT_CERTIFIED = "the guardians' key custody is not certified"
CUSTODY_HINT = ("the election may not proceed until every guardian has exported, confirmed and verified its key "
                "backup: see who is missing with `guardian ceremony status`, then start the record with "
                "`guardian record init`")


class NotCertified(InputError):
    """The record carries no certificate that holds; `why` says what is wrong, without the record's path."""

    def __init__(self, root: Path, why: str, hint: str = "") -> None:
        self.root, self.why, self.hint = root, why, hint
        super().__init__(f"{root}: {why}" + (f" ({hint})" if hint else ""))


def certified(root: Path | str) -> dict:
    """The record's ceremony certificate, checked against the record; NotCertified saying why not."""
    root = Path(root)
    record = layout.Record(root)
    if not record.exists(CERTIFICATE_JSON):
        raise NotCertified(root, f"no ceremony certificate: {NOT_CERTIFIED}", CUSTODY_HINT)
    try:
        certificate = read_certificate(record.path(CERTIFICATE_JSON))
        verify_certificate(certificate, root)
    except CustodyError as e:
        raise NotCertified(root, f"its ceremony certificate does not hold: {str(e).replace(f'{root}: ', '')}",
                           CUSTODY_HINT) from None
    newer = superseded_by(certificate)
    if newer is not None:
        raise NotCertified(root, f"its ceremony's keys are superseded by ceremony {newer[:16]}",
                           f"start a record from that ceremony: `guardian record init --ceremony {newer[:16]}`")
    return certificate


@dataclass(frozen=True)
class Passed:
    """A command let through the gate: with the certificate, or as a rehearsal that must say so (`note`)."""

    root: Path
    command: str
    flag: bool                      # --rehearsal given
    why: str | None                 # what was skipped; None when the certificate holds
    certificate: dict | None

    def note(self, warn: Callable[[str], None]) -> None:
        """A rehearsal: warn, and append to the record's rehearsal.json. Called once the command's own checks
        passed, so that a command refused for another reason leaves the record as it was."""
        if self.why is None:
            return
        if self.flag:
            warn(f"warning: REHEARSAL: {self.why}; {self.command} goes on because of --rehearsal, and the record "
                 f"says so in {REHEARSAL}")
        else:
            warn(f"warning: REHEARSAL: {self.why}; {self.command} goes on because the record is a rehearsal "
                 f"({REHEARSAL}), and adds itself to it")
        mark_rehearsal(self.root, self.command, self.why)


def gate(root: Path | str, command: str, rehearsal: bool) -> Passed:
    """Whether `command` may go on: with a certificate that holds, or as a rehearsal (--rehearsal, or a
    record that already is one); NotCertified, saying why and how to proceed, otherwise."""
    root = Path(root)
    try:
        return Passed(root, command, rehearsal, None, certified(root))
    except NotCertified as e:
        if not rehearsal and rehearsal_entries(layout.Record(root)) is None:
            raise NotCertified(root, e.why, f"{e.hint}; to rehearse without it, add --rehearsal") from None
        return Passed(root, command, rehearsal, e.why, None)


# --- rehearsal.json --------------------------------------------------------------------------------------

def rehearsal_entries(record: layout.Record) -> list[dict] | None:
    """What rehearsal.json says was skipped (None when the record is no rehearsal); InputError if malformed."""
    if not record.exists(REHEARSAL):
        return None
    obj = record.read_json(REHEARSAL)
    entries = obj.get("entries") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or obj.get("format") != REHEARSAL_FORMAT or set(obj) != {"format", "note",
                                                                                           "entries"} \
            or not isinstance(entries, list) or len(entries) > MAX_ENTRIES \
            or not all(isinstance(e, dict) and set(e) == {"command", "skipped", "at"}
                       and all(isinstance(v, str) for v in e.values()) for e in entries):
        raise InputError(f"{REHEARSAL}: not a {REHEARSAL_FORMAT!r} note (format, note, entries of command, "
                         f"skipped, at)")
    return entries


def mark_rehearsal(root: Path | str, command: str, skipped: str, at: float | None = None) -> None:
    """Append to the record's rehearsal.json what `command` went on without, and when; keep the index."""
    record = layout.Record(root)
    entries = rehearsal_entries(record) or []
    entries = (entries + [{"command": command, "skipped": skipped[:500],
                           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if at is None else at))}]
               )[-MAX_ENTRIES:]
    digest = record.write_json(REHEARSAL, {"format": REHEARSAL_FORMAT, "note": REHEARSAL_NOTE, "entries": entries})
    record.update_index((), {REHEARSAL: digest})


def custody_warnings(record: layout.Record) -> list[str]:
    """What the verifier says of the record's custody: a rehearsal, or a certificate that does not hold."""
    warnings = []
    try:
        entries = rehearsal_entries(record)
    except GuardianError as e:
        entries = None
        warnings.append(str(e))
    if entries is not None:
        done = "; ".join(f"{e['command']} at {e['at']}" for e in entries[-5:])
        more = f" (and {len(entries) - 5} more)" if len(entries) > 5 else ""
        warnings.append(f"rehearsal: custody was not certified: {done}{more} went on without a ceremony "
                        f"certificate ({REHEARSAL}); this record is a rehearsal, not a real election")
    if record.exists(CERTIFICATE_JSON):
        try:
            certified(record.root)
        except NotCertified as e:
            warnings.append(f"{CERTIFICATE_JSON}: {e.why}")
    return warnings
