"""The ballot box: verified, durable acceptance of cast and challenged ballots into a record.

A ballot is accepted only after every check: its shape and id, that it is for
this election (its H_E), that neither its id nor its selection encryption
identifier was accepted before (5.A), its seed 003 signature, every proof and
code (Verifications 5.B, 6, 7, 8.A-8.D, on every core through the pool of
node.compute), and its place in its device's chain (8.E).
A refusal names the ballot and the reason and does not stop the others.

Durability. Acceptance of one ballot is:
  1. write ballots/<id>.json atomically (temporary file, fsync, rename, fsync dir);
  2. append one line to ballot_box.jsonl (the journal) and fsync it;
  3. only then report the ballot as accepted.
The journal line is the commit point. A crash before it leaves at most a
ballot file without a journal line: it was never acknowledged, and the next
opening of the box removes it (and any temporary file). A crash in the middle
of step 2 leaves an incomplete last line, which is cut off the same way. Every
journal line names the SHA-256 of its ballot file, so an accepted ballot that
went missing or changed is detected, not silently dropped. devices.json and
index.json are derived from the journal and rewritten after each batch and on
recovery. One process at a time holds the box (an exclusive lock on the journal).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

from node.crypto.ballot import (
    NO_CHAINING, SIMPLE_CHAINING, BallotChain, election_id, identifier_hash, signature_content,
)
from node.crypto.ballot_signature import verify_ballot_signature
from node.crypto.errors import GuardianError, InputError
from node.crypto.election import ElectionContext
from node.crypto.tally import EncryptedTally, combine_tallies, tally_ballots
from node.compute import Pool, ballot_failure, executor, tree_reduce

from node.record import codec, layout
from node.record.election import OpenElection, open_election

CHUNK_PER_WORKER = 4
TALLY_BATCH = 32            # ballot files a tally task reads and multiplies


@dataclass(frozen=True)
class Submission:
    """One ballot file handed to the box, to be cast or challenged."""

    source: str                 # where it came from, for messages (a file name)
    data: bytes | None          # the file's bytes; None when it could not be read
    state: str                  # codec.CAST or codec.CHALLENGED
    read_error: str = ""


@dataclass(frozen=True)
class Outcome:
    source: str
    ballot_id: str | None
    accepted: bool
    state: str
    reason: str = ""                    # why it was refused
    confirmation_code: str = ""         # hex, when accepted


class BallotBoxClosed(InputError):
    """The tally has been computed: the box accepts no more ballots."""


class BallotBox:
    """The ballot box of one record. Use `with BallotBox.open(root) as box:`."""

    def __init__(self, election: OpenElection, lock_fd: int, notes: list[str]) -> None:
        self.election = election
        self.record = election.record
        self.ctx = election.context
        self._lock_fd = lock_fd
        self.recovery_notes = notes
        self.entries: list[codec.JournalEntry] = []
        self.ids_folded: dict[str, str] = {}
        self.selection_ids: dict[int, str] = {}
        self.device_mode: dict[str, str] = {}
        self.device_last: dict[str, bytes] = {}
        self._known: dict[str, str] = {}       # accepted files not yet in index.json: path -> SHA-256
        self._load_journal()

    # --- opening and recovery ----------------------------------------------------------------

    @classmethod
    def open(cls, root: Path | str, election: OpenElection | None = None) -> "BallotBox":
        election = election or open_election(root)
        record = election.record
        path = record.path(layout.JOURNAL)
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if created:
            layout.fsync_dir(path.parent)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"{record.root}: another process is using this ballot box") from None
        try:
            notes = _recover(record, fd)
            return cls(election, fd, notes)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)     # releases the lock
            self._lock_fd = -1

    def __enter__(self) -> "BallotBox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _load_journal(self) -> None:
        for entry in read_journal(self.record):
            self._remember(entry)

    def _remember(self, entry: codec.JournalEntry) -> None:
        self.entries.append(entry)
        self.ids_folded[entry.ballot_id.lower()] = entry.ballot_id
        self.selection_ids[int(entry.selection_identifier)] = entry.ballot_id
        self.device_mode.setdefault(entry.device, entry.chaining)
        self.device_last[entry.device] = entry.confirmation_code

    @property
    def closed(self) -> bool:
        return self.record.exists(layout.ENCRYPTED_TALLY)

    def load_ballots(self, state: str | None = None) -> list[codec.BallotRecord]:
        """The accepted ballots (of one state), each checked against the digest in its journal line."""
        out = []
        for e in self.entries:
            if state is not None and e.state != state:
                continue
            rel = layout.ballot_file(e.ballot_id)
            data = self.record.read(rel)
            if layout.sha256_hex(data) != e.sha256:
                raise InputError(f"{self.record.root}: accepted ballot {e.ballot_id!r} has changed since it was "
                                 f"accepted ({rel})")
            out.append(codec.ballot_from_json(self.ctx.group, codec.load_json(data, rel), rel))
        return out

    def tally(self, workers: int | None = None, scheduler: str | None = None) -> EncryptedTally:
        """Close the box: the encrypted tally, the homomorphic aggregate of the cast ballots (eq 79).

        Streamed: batches of ballot files are read and multiplied on `workers` processes (or the Dask
        cluster of `scheduler`), and the batches' products meet in a tree; no more than a few batches are
        in memory at once."""
        if self.closed:
            raise BallotBoxClosed(f"{self.record.root}: the encrypted tally has already been computed")
        cast = [(e.ballot_id, e.sha256) for e in self.entries if e.state == codec.CAST]
        batches = ((str(self.record.root), tuple(cast[i:i + TALLY_BATCH])) for i in range(0, len(cast), TALLY_BATCH))
        with executor(self.ctx, scheduler, workers) as pool:
            tally = tree_reduce(lambda a, b: combine_tallies(self.ctx, a, b), pool.imap(tally_files, batches))
        if tally is None:
            tally = tally_ballots(self.ctx, [])
        digest = self.record.write_json(layout.ENCRYPTED_TALLY,
                                        codec.encrypted_tally_to_json(self.ctx.group, self.ctx.h_e, tally))
        known = {layout.ENCRYPTED_TALLY: digest}
        changed = write_devices(self.record, self.ctx.h_e, self.entries)
        self.record.update_index(changed + [layout.JOURNAL], known)
        return tally

    # --- submission --------------------------------------------------------------------------

    def submit(self, submissions: Sequence[Submission], workers: int | None = None,
               report: Callable[[Outcome], None] | None = None,
               verified: Sequence[tuple[codec.BallotRecord, str]] = (),
               carry: list[Submission] | None = None, derive: bool = True) -> list[Outcome]:
        """Check and accept ballots; `report` hears each outcome as soon as it is final (accepted = durable).

        `verified` holds (ballot record, state) pairs for a caller that has just run
        node.compute.verify_ballots itself on exactly these ballots (the demo):
        their proofs are not checked a second time; every other check still is.

        A caller that submits a long run in chunks passes `carry`: a chained ballot that
        follows nothing accepted yet nor any of this chunk is put there, to come again with
        the next chunk, instead of being refused; and `derive=False`, with one
        `write_derived()` at the end, so that devices.json and index.json are written once
        rather than after every chunk (until then the journal is the record's truth, and an
        interrupted run's next opening rewrites them).
        """
        if self.closed:
            raise BallotBoxClosed(f"{self.record.root}: voting is closed (the encrypted tally has been computed)")
        outcomes: list[Outcome] = []

        def done(o: Outcome) -> None:
            outcomes.append(o)
            if report:
                report(o)

        candidates: list[tuple[Submission, codec.BallotRecord]] = []
        batch_ids: dict[str, str] = {}
        batch_sids: dict[int, str] = {}
        items = [(s, None) for s in submissions]
        items += [(Submission(f"ballot {r.ballot_id!r}", None, state), r) for r, state in verified]
        for sub, rec in items:
            if rec is None:
                rec, reason = self._parse(sub)
                if rec is None:
                    done(Outcome(sub.source, None, False, sub.state, reason))
                    continue
            reason = self._static_check(rec, sub.state, batch_ids, batch_sids)
            if reason:
                done(Outcome(sub.source, rec.ballot_id, False, sub.state, reason))
                continue
            batch_ids[rec.ballot_id.lower()] = rec.ballot_id
            batch_sids[int(rec.ballot.selection_identifier)] = rec.ballot_id
            candidates.append((sub, rec))
        ordered, unlinked = self._chain_order(candidates)
        if carry is not None:
            carry += [sub for sub, _ in unlinked]
            unlinked = []
        for sub, rec in unlinked:
            done(Outcome(sub.source, rec.ballot_id, False, sub.state,
                         f"broken chain: ballot {rec.ballot_id!r} does not follow the last ballot accepted from "
                         f"device {rec.ballot.device!r} nor any ballot of this batch (8.E)"))
        pre_verified = {id(r) for r, _ in verified}
        pool = Pool(self.ctx, workers)
        chunk = CHUNK_PER_WORKER * pool.workers     # verified, then accepted, chunk by chunk: outcomes come early
        accepted_paths: list[str] = []
        known: dict[str, str] = {}
        try:
            for start in range(0, len(ordered), chunk):
                part = ordered[start:start + chunk]
                need = [rec.ballot for _, rec in part if id(rec) not in pre_verified]
                results = iter(list(pool.map(ballot_failure, need)))
                for sub, rec in part:
                    failure = None if id(rec) in pre_verified else next(results)
                    if failure:
                        done(Outcome(sub.source, rec.ballot_id, False, sub.state, failure))
                        continue
                    reason = self._chain_check(rec)
                    if reason:
                        done(Outcome(sub.source, rec.ballot_id, False, sub.state, reason))
                        continue
                    rel, digest = self._accept(rec, sub.state)
                    accepted_paths.append(rel)
                    known[rel] = digest
                    done(Outcome(sub.source, rec.ballot_id, True, sub.state,
                                 confirmation_code=rec.ballot.confirmation_code.hex().upper()))
        finally:
            pool.close()
            self._known.update(known)
            if accepted_paths and derive:
                self.write_derived()
        return outcomes

    def _parse(self, sub: Submission) -> tuple[codec.BallotRecord | None, str]:
        if sub.data is None:
            return None, sub.read_error or "cannot be read"
        try:
            rec = codec.ballot_from_json(self.ctx.group, codec.load_json(sub.data, sub.source), sub.source)
        except GuardianError as e:
            return None, f"not a valid encrypted ballot: {e}"
        return rec, ""

    def _static_check(self, rec: codec.BallotRecord, state: str, batch_ids: dict, batch_sids: dict) -> str:
        """Everything but the proofs and the chain link, cheapest first; the reason, or ''."""
        b = rec.ballot
        try:
            layout.check_ballot_id(b.ballot_id)
        except InputError as e:
            return str(e)
        if rec.state != codec.ENCRYPTED:
            return f"ballot state is {rec.state!r}; the box takes freshly encrypted ballots ({codec.ENCRYPTED})"
        if rec.h_e != self.ctx.h_e:
            return (f"ballot is for another election (its H_E {rec.h_e.hex().upper()[:16]}... is not this "
                    f"election's {self.ctx.h_e.hex().upper()[:16]}...)")
        folded = b.ballot_id.lower()
        if folded in self.ids_folded:
            earlier = self.ids_folded[folded]
            return f"duplicate: ballot id {b.ballot_id!r} was already accepted" + (
                f" (as {earlier!r}; ids differ from file names only by case)" if earlier != b.ballot_id else "")
        if folded in batch_ids:
            return f"duplicate: ballot id {b.ballot_id!r} appears twice in this submission"
        sid = int(b.selection_identifier)
        if sid in self.selection_ids:
            return (f"duplicate: its selection encryption identifier is that of accepted ballot "
                    f"{self.selection_ids[sid]!r} (5.A)")
        if sid in batch_sids:
            return f"duplicate: its selection encryption identifier is that of ballot {batch_sids[sid]!r} (5.A)"
        if identifier_hash(self.ctx.h_e, b.selection_identifier) != rec.identifier_hash:
            return "selection_encryption_identifier_hash is not H(H_E; 0x20, id_B) (5.B)"
        mode = b.chaining_field[:4]
        if mode not in (NO_CHAINING, SIMPLE_CHAINING):
            return f"unknown chaining mode {mode.hex().upper()}"
        chaining = "simple" if mode == SIMPLE_CHAINING else "none"
        policy = self.election.parameters.ballot_chaining
        if chaining == "simple" and policy == "Prohibited":
            return "ballot chaining is prohibited in this election, and this ballot is chained"
        if chaining == "none" and policy == "Required":
            return "ballot chaining is required in this election, and this ballot is not chained"
        known = self.device_mode.get(b.device)
        if known is not None and known != chaining:
            return f"device {b.device!r} used {known} chaining before; a device keeps one chaining mode"
        try:
            self.ctx.manifest.ballot_style(b.style_index)
        except GuardianError:
            return f"unknown ballot style index {b.style_index}"
        if rec.signature is None:
            return "unsigned: voter_signing_pk and voter_ballot_signature are missing"
        try:
            content = signature_content(self.ctx, b, rec.creation_date)
        except GuardianError as e:
            return f"bad signature: cannot rebuild the signed content ({e})"
        try:
            verify_ballot_signature(b.ballot_id, election_id(self.ctx), content, rec.signature)
        except GuardianError as e:
            return f"bad signature: {e}"
        return ""

    def _chain_order(self, candidates):
        """Order chained ballots by their links (a batch may come in any order); unchained keep theirs."""
        ordered, unlinked = [], []
        chained: dict[str, list] = {}
        for sub, rec in candidates:
            if rec.ballot.chaining_field[:4] == SIMPLE_CHAINING:
                chained.setdefault(rec.ballot.device, []).append((sub, rec))
            else:
                ordered.append((sub, rec))
        for device, items in chained.items():
            chain = BallotChain(self.ctx.h_e, device, self.device_last.get(device))
            by_field = {}
            for sub, rec in items:
                by_field.setdefault(rec.ballot.chaining_field, []).append((sub, rec))
            while True:
                nxt = by_field.get(chain.next_field())
                if not nxt:
                    break
                sub, rec = nxt.pop(0)
                ordered.append((sub, rec))
                chain.advance(rec.ballot.confirmation_code)
            for rest in by_field.values():
                unlinked += rest
        return ordered, unlinked

    def _chain_check(self, rec: codec.BallotRecord) -> str:
        """At the moment of acceptance: the ballot must follow the device's last accepted ballot (8.E)."""
        b = rec.ballot
        if b.chaining_field[:4] != SIMPLE_CHAINING:
            return ""
        chain = BallotChain(self.ctx.h_e, b.device, self.device_last.get(b.device))
        if b.chaining_field != chain.next_field():
            return (f"broken chain: its chaining field does not follow the last ballot accepted from device "
                    f"{b.device!r} (8.E)")
        return ""

    def _accept(self, rec: codec.BallotRecord, state: str) -> tuple[str, str]:
        """Make one ballot durable: its file, then its journal line (the commit point)."""
        b = rec.ballot
        stored = replace(rec, state=state)
        rel = layout.ballot_file(b.ballot_id)
        data = codec.canonical_bytes(codec.ballot_to_json(self.ctx.group, stored))
        digest = self.record.write(rel, data)
        entry = codec.JournalEntry(len(self.entries) + 1, b.ballot_id, state, b.device,
                                   "simple" if b.chaining_field[:4] == SIMPLE_CHAINING else "none",
                                   b.selection_identifier, b.confirmation_code, digest)
        line = codec.canonical_bytes(entry.to_json()) + b"\n"
        written = os.write(self._lock_fd, line)
        if written != len(line):
            raise OSError(f"short write to {layout.JOURNAL}")
        os.fsync(self._lock_fd)
        self._remember(entry)
        return rel, digest

    def write_derived(self) -> None:
        """devices.json and index.json follow from the journal; rewrite them after a batch."""
        if not self._known:
            return
        changed = write_devices(self.record, self.ctx.h_e, self.entries)
        self.record.update_index(changed + [layout.JOURNAL], self._known)
        self._known = {}


# --- the journal, shared with recovery, the tally and the verifier's tools --------------------


def tally_files(ctx: ElectionContext, task: tuple[str, tuple[tuple[str, str], ...]]) -> EncryptedTally:
    """The task of the tally: the product of some accepted cast ballots (eq 79), each file checked against the
    SHA-256 its journal line names. The task names each ballot by (id, SHA-256)."""
    root, files = task
    record = layout.Record(Path(root))
    ballots = []
    for ballot_id, sha in files:
        rel = layout.ballot_file(ballot_id)
        data = record.read(rel)
        if layout.sha256_hex(data) != sha:
            raise InputError(f"{record.root}: accepted ballot {ballot_id!r} has changed since it was accepted "
                             f"({rel})")
        ballots.append(codec.ballot_from_json(ctx.group, codec.load_json(data, rel), rel).ballot)
    return tally_ballots(ctx, ballots)


def read_journal(record: layout.Record) -> list[codec.JournalEntry]:
    """The journal's entries; InputError if a complete line is damaged (recovery cuts only a torn tail)."""
    return journal_tail(record)[0]


def journal_tail(record: layout.Record, offset: int = 0, seen: int = 0) -> tuple[list[codec.JournalEntry], int]:
    """The complete journal lines after byte `offset` (which follows entry number `seen`), and the offset after
    them: a follower reads each line once, however long the journal grows."""
    path = record.path(layout.JOURNAL)
    if not path.exists():
        return [], offset
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read()
    except OSError as e:
        raise InputError(f"{record.root}: cannot read {layout.JOURNAL}: {e.strerror}") from None
    end = raw.rfind(b"\n") + 1                 # after the last newline: nothing yet, or a line being written
    entries = []
    for number, line in enumerate(raw[:end].split(b"\n")[:-1], start=seen + 1):
        where = f"{record.root}: {layout.JOURNAL} line {number}"
        entry = codec.journal_entry_from_json(codec.load_json(line, where), where)
        if entry.seq != number:
            raise InputError(f"{where} has sequence number {entry.seq}")
        entries.append(entry)
    return entries, offset + end


def _recover(record: layout.Record, fd: int) -> list[str]:
    """Bring the record back to its last committed state after a crash; return what was done."""
    notes = []
    raw = record.read(layout.JOURNAL)
    if raw and not raw.endswith(b"\n"):
        keep = raw.rfind(b"\n") + 1
        os.ftruncate(fd, keep)
        os.fsync(fd)
        notes.append(f"cut an incomplete last journal entry ({len(raw) - keep} bytes) left by an interrupted run")
    for rel in record.remove_temp_files():
        notes.append(f"removed the temporary file {rel} left by an interrupted run")
    entries = read_journal(record)
    journaled = set()
    for number, entry in enumerate(entries, start=1):
        rel = layout.ballot_file(entry.ballot_id)
        journaled.add(rel)
        if not record.exists(rel):
            raise InputError(f"{record.root}: accepted ballot {entry.ballot_id!r} is missing ({rel}); the record "
                             f"is damaged and must be restored from a copy")
        # Files are never rewritten once accepted, so only the last one can have met a crash; the
        # others are checked against their digests whenever they are read (tally, decryption, verify).
        if number == len(entries) and layout.sha256_file(record.path(rel)) != entry.sha256:
            raise InputError(f"{record.root}: accepted ballot {entry.ballot_id!r} has changed ({rel}); the record "
                             f"is damaged and must be restored from a copy")
    orphans = [rel for rel in record.list_dir(layout.BALLOTS) if rel not in journaled]
    for rel in orphans:
        os.unlink(record.path(rel))
        notes.append(f"removed {rel}: written by an interrupted run but never accepted")
    if orphans:
        layout.fsync_dir(record.path(layout.BALLOTS))
    if notes or _index_stale(record, entries):
        h_e = codec.hashes_ext_from_json(record.read_json(layout.HASHES_EXT))
        changed = write_devices(record, h_e, entries) if entries else []
        record.update_index(changed + [layout.JOURNAL] + orphans + [layout.ballot_file(e.ballot_id) for e in entries])
    return notes


def _index_stale(record: layout.Record, entries: list[codec.JournalEntry]) -> bool:
    index = record.read_index()
    if index.get(layout.JOURNAL) != layout.sha256_file(record.path(layout.JOURNAL)):
        return True
    return any(index.get(layout.ballot_file(e.ballot_id)) != e.sha256 for e in entries)


def devices_from_entries(h_e: bytes, entries: Sequence[codec.JournalEntry]) -> list[codec.DeviceRecord]:
    by_device: dict[str, list[codec.JournalEntry]] = {}
    for e in entries:
        by_device.setdefault(e.device, []).append(e)
    devices = []
    for name in sorted(by_device):
        es = by_device[name]
        closing = None
        if es[0].chaining == "simple":
            closing = BallotChain(h_e, name, es[-1].confirmation_code).closing_hash()   # eqs 77, 78
        devices.append(codec.DeviceRecord(name, es[0].chaining, tuple(e.ballot_id for e in es), closing))
    return devices


def write_devices(record: layout.Record, h_e: bytes, entries: Sequence[codec.JournalEntry]) -> list[str]:
    record.write_json(layout.DEVICES, codec.devices_to_json(h_e, devices_from_entries(h_e, entries)))
    return [layout.DEVICES]


MAX_BALLOT_BYTES = 64 << 20


def read_submission(path: Path, state: str) -> Submission:
    try:
        if path.stat().st_size > MAX_BALLOT_BYTES:
            return Submission(str(path), None, state, f"larger than {MAX_BALLOT_BYTES >> 20} MiB: not a ballot")
        return Submission(str(path), path.read_bytes(), state)
    except OSError as e:
        return Submission(str(path), None, state, f"cannot read the file: {e.strerror}")
