"""The record as a whole: every file's SHA-256 in index.json, and the ballot box journal."""

from __future__ import annotations

from node.crypto.errors import GuardianError
from node.record import codec, layout
from node.record.election import Findings
from node.verifier.ballots import every_ballot
from node.verifier.loader import Loaded
from node.verifier.registry import Accumulator, Run, step


@step("", "record index")
def record_index(run: Run, acc: Accumulator) -> None:
    """Every file's SHA-256 matches index.json, no file is outside it, and the ballot box journal matches."""
    record = run.data.record
    try:
        index = record.read_index() if record.exists(layout.INDEX) else None
    except GuardianError as e:
        acc.fail(f"{layout.INDEX}: {e}")
        index = None
    if index is None and not record.exists(layout.INDEX):
        acc.fail(f"the record has no {layout.INDEX}")
    files = record.files()
    if index is not None:
        for rel in files:
            acc.items += 1
            if rel not in index:
                acc.fail(f"{rel}: not in {layout.INDEX}")
                continue
            path = record.path(rel)
            if path.is_symlink() or not path.is_file():
                acc.fail(f"{rel}: not a regular file")
            elif layout.sha256_file(path) != index[rel]:
                acc.fail(f"{rel}: its SHA-256 does not match {layout.INDEX}")
        for rel in sorted(set(index) - set(files)):
            acc.fail(f"{rel}: listed in {layout.INDEX} but missing from the record")
    states = ({bid: s.state for bid, s in every_ballot(run).summaries.items()} if run.election.context is not None
              else {})
    _check_journal(run.data, states, acc)


def _check_journal(data: Loaded, ballots: dict[str, str], found: Findings) -> None:
    """Each ballot accepted once, in sequence, its file the one accepted; no ballot that was not accepted."""
    record = data.record
    if not record.exists(layout.JOURNAL):
        if ballots or data.record.list_dir(layout.BALLOTS):
            found.fail(f"the record has ballots but no {layout.JOURNAL}")
        return
    raw = record.read(layout.JOURNAL)
    if raw and not raw.endswith(b"\n"):
        found.fail(f"{layout.JOURNAL}: the last entry is incomplete")
    journaled: dict[str, codec.JournalEntry] = {}
    for number, line in enumerate(raw.split(b"\n")[:-1], start=1):    # after the last newline: nothing, or torn
        found.items += 1
        where = f"{layout.JOURNAL} line {number}"
        try:
            entry = codec.journal_entry_from_json(codec.load_json(line, where), where)
        except GuardianError as e:
            found.fail(str(e))
            continue
        if entry.seq != number:
            found.fail(f"{where}: sequence number {entry.seq}")
        if entry.ballot_id in journaled:
            found.fail(f"{where}: ballot {entry.ballot_id!r} accepted twice")
            continue
        journaled[entry.ballot_id] = entry
        if not layout.BALLOT_ID.fullmatch(entry.ballot_id):
            found.fail(f"{where}: ballot id {entry.ballot_id!r} is not allowed")
            continue
        rel = layout.ballot_file(entry.ballot_id)
        if not record.exists(rel):
            found.fail(f"ballot {entry.ballot_id!r}: accepted by the ballot box (journal line {number}) but {rel} "
                       f"is missing")
            continue
        if layout.sha256_file(record.path(rel)) != entry.sha256:
            found.fail(f"ballot {entry.ballot_id!r}: {rel} is not the file the ballot box accepted")
        state = ballots.get(entry.ballot_id)
        if state is not None and state != entry.state:
            found.fail(f"ballot {entry.ballot_id!r}: state {state} but accepted as {entry.state}")
    for bid in sorted(set(ballots) - set(journaled)):
        found.fail(f"ballot {bid!r}: in the record but never accepted by the ballot box ({layout.JOURNAL})")
