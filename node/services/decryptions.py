"""The node's decryption sessions: the service between the port and the sans-I/O decryption machine.

A session goes through four stages on every node:

  fetching  the node gets its own copy of the record, file by file, by SHA-256
            from the index the request names: from the record locations it is
            given (the request's, then its own [decryption] record_sources), else
            in chunks over the links (node/services/record_copy.py; the requester
            has every file, and any node with a copy serves it)
  checking  `guardian verify` runs on the copy in a child process, then the node's
            policy (node/services/decryption_policy.py) derives the statements or refuses
  ready     the DecryptionTranscript and this node's DecryptionGuardian run the
            rounds; every step commits the guardian's sealed state together with
            the messages that depend on it before anything is sent
  complete  every node writes the decryptions into its copy of the record; the
            requester also into the record directory it was given

After a restart, a session resumes at its stage: the copy and the verification
are kept, the transcript is rebuilt from the stored messages and the guardian
from its sealed state, so no nonce is drawn twice for one round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Mapping

import trio

from node.config import check_record_sources
from node.crypto.errors import GuardianError, InputError
from node.services.decryption_policy import Checked, PolicyRefusal, check_record, custody_refusal
from node.protocol.ceremony import Guardian, Transcript
from node.protocol.decryption import (
    MESSAGE_TYPES, REQUEST_TYPE, DecryptionContext, DecryptionGuardian, DecryptionRequest, DecryptionTranscript,
    MalformedMessage, Send, parse_request,
)
from node.protocol.election_config import parse_election_config
from node.protocol.lifecycle import DECRYPTION
from node.protocol.waiting import LinkView, SessionView, awaited, decide, linked_guardians
from node.protocol.envelope import Envelope, decode_envelope
from node.protocol.link import Blob
from node.record import codec, layout
from node.record.custody_gate import mark_rehearsal
from node.record.decrypted import JointResult, challenged_record, quorum, tally_record, write_decryptions
from node.services.pending import room_for
from node.services.port import Port, Service
from node.services.record_copy import LocationError, Transfers, copy_checked, place, read_location
from node.storage.state_box import StateBox

log = logging.getLogger("guardian.decryption")
FETCH_RETRY_SECONDS = 1.0
LOCATION_READS = 4          # files read from record locations at once
LOCATION_STRIKES = 3        # failures in a row after which a location is no longer tried for a session
ACTIVE = ("fetching", "checking", "ready")
SAFE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")
SUMMARY = "decryption_session.json"
MAX_EVENTS = 300       # progress events kept per session (the oldest go first)

# How this node's DecryptionGuardian is made: (port, transcript, own sequence, key shares, sealed state
# or None). A misbehaving guardian for rehearsals plugs in here (node/testing/adversary.py).
GuardianFactory = Callable[[Port, DecryptionTranscript, int, Mapping, "dict | None"], DecryptionGuardian]


def honest_guardian(port: Port, transcript: DecryptionTranscript, me: int, keys: Mapping,
                    state: dict | None) -> DecryptionGuardian:
    return DecryptionGuardian(transcript, me, keys, state)


@dataclass(frozen=True)
class Snapshot:
    """What `status` shows of a session's transcript, copied on the thread that advances it: the
    transcript itself is only ever touched by that one thread at a time."""
    view: SessionView
    round: int
    refused: dict[int, str]
    excluded: dict[int, str]
    present: tuple[int, ...] = ()        # the current round's U


class Session:
    """One decryption session on this node (its status is the database's)."""

    def __init__(self, session: bytes, request: DecryptionRequest, requester: str, record_dir: str | None,
                 started: float, fetch_deadline: float) -> None:
        self.session, self.request, self.requester, self.record_dir = session, request, requester, record_dir
        self.started = started
        self.fetch_deadline = fetch_deadline     # the node's clock: past it, a copy still fetching fails
        self.needed: dict[bytes, list[str]] | None = None      # digest -> paths in the copy, once the index is in
        self.checked: Checked | None = None
        self.transcript: DecryptionTranscript | None = None
        self.guardian: DecryptionGuardian | None = None
        self.snapshot: Snapshot | None = None
        self.pending: list[Envelope] = []
        self.wake = trio.Event()
        self.timings: dict[str, float] = {}
        self.fetch_error: str | None = None
        self.sources: list[str] = []             # record locations: the request's, then this node's
        self.located: set[bytes] = set()         # digests already tried at the locations
        # What `guardian decrypt` shows as it goes: one event each time the stage, the round, its step, who is
        # ready, linked or awaited changes; numbered, so a follower polling the status misses none.
        self.events: list[dict] = []
        self.noted = 0
        self.last_key: tuple | None = None

    def poke(self) -> None:
        event, self.wake = self.wake, trio.Event()
        event.set()


class Decryptions(Service):
    name = "decryptions"
    node_types = frozenset({REQUEST_TYPE})
    # A session's messages may reach us before the request that opens it (it comes over another
    # link): they are kept, and replayed when the session starts.
    open_types = MESSAGE_TYPES
    read_only = frozenset({"decrypt-status"})

    def __init__(self, port: Port, box: StateBox, guardian: GuardianFactory = honest_guardian) -> None:
        self.port, self.box, self._make_guardian = port, box, guardian
        self.sessions: dict[bytes, Session] = {}
        self.serving: dict[bytes, Path] = {}    # public record files this node can give its peers
        self._up: set[int] = set()              # guardians linked when the links were last looked at
        self._dropped: dict[int, float] = {}    # guardian -> when its link was seen to go down
        self.transfers = Transfers(port.links, port.want, self._refuse_file, port.now, port.me.sequence,
                                   self._incoming(), port.config.max_frame_bytes, self._arrived)

    def commands(self) -> dict:
        return {"decrypt-request": self._request_command, "decrypt-status": lambda r: self.status(r.get("session"))}

    def _request_command(self, request: dict) -> dict:
        ballots = request.get("ballots") or None
        if ballots is not None and (not isinstance(ballots, list) or not all(isinstance(b, str) for b in ballots)):
            raise InputError("ballots must be a list of ballot ids")
        timeout = request.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 1 <= timeout <= 86400):
            raise InputError("timeout must be between 1 and 86400 seconds")
        sources = check_record_sources(request.get("sources") or [], "--source")
        return {"session": self.request(str(request["record"]), bool(request.get("compensated")), ballots, timeout,
                                        request.get("rehearsal") is True, sources)}

    def session_kind(self, session: bytes) -> tuple[str, str | None] | None:
        return "decryption", None

    def on_node_message(self, envelope: Envelope, sender: str) -> None:
        self.on_request(envelope, sender)

    def _copy(self, session: bytes) -> Path:
        return self.port.config.data_dir / "decryptions" / session.hex() / "record"

    # --- start and restart ------------------------------------------------------------------------

    def start(self) -> None:
        keep: set[bytes] = set()        # what the copies still fetching need of the partial files
        for d in self.port.db.decryptions():
            if d["status"] == "invalid":
                continue
            request = parse_request(d["request"], len(self.port.roster))
            self._listen(d["session"])
            copy = self._copy(d["session"])
            if (copy / layout.INDEX).exists():
                self._serve_copy(copy)
            if d["status"] == "fetching":
                keep |= {request.record, *self._index_digests(copy)}
            if d["status"] in ACTIVE:
                # Its fetching deadline counts from the request, across restarts.
                self._begin(d["session"], request, d["requester"], d["record_dir"], time.time() - d["created"],
                            self._load_sources(d["session"]))
        self.transfers.prune(keep)
        self.port.start_task(self.transfers.run)

    def _listen(self, session: bytes) -> None:
        self.port.accept_session(session, MESSAGE_TYPES)

    def _begin(self, session: bytes, request: DecryptionRequest, requester: str, record_dir: str | None,
               age: float = 0.0, sources: list[str] = ()) -> None:
        now = self.port.now()
        run = Session(session, request, requester, record_dir, now,
                      now + self.port.config.fetch_timeout_seconds - max(0.0, age))
        run.sources = list(dict.fromkeys([*sources, *self.port.config.record_sources]))
        self.sessions[session] = run
        self.port.start_task(self._guarded, run)

    async def _guarded(self, run: Session) -> None:
        try:
            await self._run(run)
        except GuardianError as e:
            self._fail(run, str(e))
        except Exception as e:     # a bug costs this session, never the node
            log.exception("internal error in decryption session %s", run.session.hex()[:16])
            self._fail(run, f"internal error: {type(e).__name__}")

    # --- requests -----------------------------------------------------------------------------------

    def request(self, record_dir: str, compensated: bool, ballots: list[str] | None, timeout: float | None,
                rehearsal: bool = False, sources: list[str] = ()) -> str:
        """`guardian decrypt --record DIR [--source URL_OR_PATH]`: ask every guardian to decrypt the record's
        tally and challenged ballots (reading the record from the sources, if they can, else from the peers)."""
        root = Path(record_dir).resolve()
        record = layout.Record(root)
        if not record.exists(layout.INDEX):
            raise InputError(f"{root}: not an election record (no {layout.INDEX})")
        index_bytes = record.read(layout.INDEX)
        index = codec.index_from_json(codec.load_json(index_bytes, layout.INDEX))
        # The peers' policy refuses a record that already holds decryptions: refuse it here, before a session.
        held = sorted({rel for rel in index if rel == layout.DECRYPTED_TALLY or rel.startswith(layout.CHALLENGED + "/")}
                      | ({layout.DECRYPTED_TALLY} if record.exists(layout.DECRYPTED_TALLY) else set())
                      | set(record.list_dir(layout.CHALLENGED)))
        if held:
            shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise InputError(f"{root}: the record already holds decryptions ({shown}); "
                             f"check them with `guardian verify {root}`")
        h_e = codec.hashes_ext_from_json(record.read_json(layout.HASHES_EXT))
        ceremony = self._ceremony_for(h_e)
        self._custody_gate(ceremony, rehearsal)
        for rel, digest in index.items():
            if not record.exists(rel) or layout.sha256_file(record.path(rel)) != digest:
                raise InputError(f"{root}: {rel} does not match the record's index; run `guardian verify {root}`")
        if ballots:
            wanted = [layout.check_ballot_id(b) for b in ballots]
            tally = None
        else:
            wanted = [rel[len(layout.BALLOTS) + 1:-len(".json")] for rel in record.list_dir(layout.BALLOTS)
                      if _ballot_state(record, rel) == codec.CHALLENGED]
            if layout.ENCRYPTED_TALLY not in index:
                raise InputError(f"{root}: the record has no encrypted tally yet (run `guardian tally`)")
            tally = bytes.fromhex(index[layout.ENCRYPTED_TALLY])
        challenged = []
        for ballot_id in wanted:
            rel = layout.ballot_file(ballot_id)
            if rel not in index:
                raise InputError(f"{root}: no ballot {ballot_id!r} in the record")
            challenged.append((ballot_id, bytes.fromhex(index[rel])))
        if tally is None and not challenged:
            raise InputError(f"{root}: nothing to decrypt")
        if rehearsal:       # the record says so, in a file its index (which the request names) lists
            log.warning("decryption of %s requested as a rehearsal: custody is not checked", root)
            mark_rehearsal(root, "guardian decrypt", "the ceremony certificate: the decryption was requested as a "
                                                     "rehearsal, on nodes that allow rehearsals")
            index_bytes = record.read(layout.INDEX)
            index = codec.index_from_json(codec.load_json(index_bytes, layout.INDEX))
        n = len(self.port.roster)
        request = DecryptionRequest(ceremony, h_e, hashlib.sha256(index_bytes).digest(), tally, tuple(challenged),
                                    compensated, self.port.me.sequence,
                                    float(timeout or self.port.config.decryption_timeout_seconds),
                                    secrets.token_hex(8), rehearsal)
        data = request.canonical_bytes()
        parse_request(data, n)           # the checks a peer will make
        session = request.session
        self._serve_record(root, index, index_bytes)
        self.port.db.add_decryption(session, data, self.port.me.name, "fetching", {}, str(root))
        self._listen(session)
        self._keep_sources(session, list(sources))
        self.port.send(REQUEST_TYPE, {"request": data, **({"sources": list(sources)} if sources else {})})
        self._begin(session, request, self.port.me.name, str(root), sources=list(sources))
        return session.hex()

    def _custody_gate(self, ceremony: bytes, rehearsal: bool) -> None:
        """Refuse up front what this node's own policy would refuse: a ceremony whose custody is not certified
        (naming who is missing), or a rehearsal this node takes no part in."""
        refusal = custody_refusal(self.port.db, self.port.db.ceremony(ceremony), rehearsal,
                                  self.port.config.allow_rehearsal)
        if refusal is not None:
            hint = (f"; set [decryption] allow_rehearsal = true in {self.port.config.path} to rehearse" if rehearsal
                    else "; to rehearse without it, add --rehearsal (on nodes that allow rehearsals)")
            raise InputError(refusal + hint)

    def _ceremony_for(self, h_e: bytes) -> bytes:
        for c in self.port.db.ceremonies("complete"):
            if c["outcome"].get("h_e") == h_e.hex():
                return c["session"]
        raise InputError("this guardian took part in no completed key ceremony for the record's election "
                         f"(H_E {h_e.hex()[:16]}...)")

    def on_request(self, envelope: Envelope, sender: str) -> None:
        body = envelope.body if isinstance(envelope.body, dict) else {}
        data = body.get("request")
        try:
            request = parse_request(data, len(self.port.roster))
            entry = self.port.roster.by_key(envelope.sender)
            if entry is None or entry.sequence != request.coordinator:
                raise InputError("the request names another guardian as its coordinator than its sender")
        except GuardianError as e:
            log.warning("invalid decryption request from %s: %s", sender, e)
            if isinstance(data, bytes) and room_for(self.port, "decryptions", sender, "invalid",
                                                    "decryption requests"):
                self.port.db.add_decryption(hashlib.sha256(data).digest(), data, sender, "invalid",
                                            {"reason": str(e)[:300]})
            return
        session = request.session
        if self.port.db.decryption(session) is not None:
            return            # a request again: its session is under way or over
        ceremony = self.port.db.ceremony(request.ceremony)
        if ceremony is None or ceremony["status"] != "complete":
            # Before it opens a session: a request naming no ceremony this node completed can never proceed.
            if self.port.db.refuse(sender, "unknown ceremony", f"request {session.hex()[:16]} names ceremony "
                                   f"{request.ceremony.hex()[:16]}, which this node has not completed"):
                log.warning("decryption request from %s refused: its ceremony %s is not one this node completed",
                            sender, request.ceremony.hex()[:16])
            return
        if not room_for(self.port, "decryptions", sender, ACTIVE, "decryption requests"):
            return
        sources: list[str] = []
        if body.get("sources") is not None:
            try:
                sources = check_record_sources(body["sources"], "its record locations")
            except InputError as e:     # the request stands; only its locations are not used
                self.port.db.refuse(sender, "bad record location", str(e)[:300])
                log.warning("decryption request %s from %s: %s; they are not used", session.hex()[:16], sender, e)
        if self.port.db.add_decryption(session, data, sender, "fetching", {}):
            self._listen(session)
            self._keep_sources(session, sources)
            self._begin(session, request, sender, None, sources=sources)

    def on_session_message(self, envelope: Envelope) -> None:
        run = self.sessions.get(envelope.session)
        if run is not None and run.transcript is not None:
            run.pending.append(envelope)      # before the transcript exists, the log replays it
            run.poke()

    # --- stage 1: the record copy -------------------------------------------------------------------

    def _serve_record(self, root: Path, index: dict[str, str], index_bytes: bytes) -> None:
        self.serving[hashlib.sha256(index_bytes).digest()] = root / layout.INDEX
        for rel, digest in index.items():
            self.serving[bytes.fromhex(digest)] = root / rel

    def _serve_copy(self, copy: Path) -> None:
        try:
            index_bytes = (copy / layout.INDEX).read_bytes()
            self._serve_record(copy, codec.index_from_json(codec.load_json(index_bytes, layout.INDEX)), index_bytes)
        except (OSError, GuardianError):
            pass

    def blob(self, digest: bytes) -> Path | None:
        """A public record file a peer asked for, if this node has it (the daemon checks its digest)."""
        return self.serving.get(digest)

    def on_blob(self, peer: int, blob: Blob) -> None:
        self.transfers.on_blob(peer, blob)

    def on_lack(self, peer: int, digests: list[bytes]) -> None:
        self.transfers.on_lack(peer, digests)

    def _refuse_file(self, peer: int, detail: str) -> None:
        name = self._names().get(peer, f"guardian {peer}")
        if self.port.db.refuse(name, "bad record file", detail):
            log.warning("record file from %s refused: %s", name, detail)

    def _arrived(self, digest: bytes) -> None:
        for run in self.sessions.values():
            if run.needed is None or digest in run.needed:
                run.poke()

    def _incoming(self) -> Path:
        return self.port.config.data_dir / "decryptions" / "incoming"

    def _keep_sources(self, session: bytes, sources: list[str]) -> None:
        if sources:
            path = self._copy(session).parent / "sources.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            layout.atomic_write(path, json.dumps(sources).encode())

    def _load_sources(self, session: bytes) -> list[str]:
        path = self._copy(session).parent / "sources.json"
        try:
            return check_record_sources(json.loads(path.read_text()), str(path))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, GuardianError) as e:
            log.warning("%s: %s; the session's record locations are not used", path, e)
            return []

    def _index_digests(self, copy: Path) -> set[bytes]:
        try:
            index = codec.index_from_json(codec.load_json((copy / layout.INDEX).read_bytes(), layout.INDEX))
            return {bytes.fromhex(d) for d in index.values()}
        except (OSError, GuardianError):
            return set()

    async def _take_index(self, run: Session, data: bytes) -> None:
        """The request's index arrived (checked): the files it names that the copy lacks are needed."""
        copy = self._copy(run.session)
        index = codec.index_from_json(codec.load_json(data, layout.INDEX))
        for rel in index:
            if not SAFE_PATH.fullmatch(rel) or rel == layout.INDEX:
                raise PolicyRefusal(f"the record's index names an unsafe path {rel[:80]!r}")
        copy.mkdir(parents=True, exist_ok=True)
        needed = await trio.to_thread.run_sync(_missing, copy, index)
        layout.atomic_write(copy / layout.INDEX, data)
        run.needed = needed

    async def _got(self, run: Session, digest: bytes, path: Path) -> None:
        """A file of this node's own (checked against its digest): the index, or files of the copy."""
        if run.needed is None:
            if digest == run.request.record:
                await self._take_index(run, await trio.to_thread.run_sync(path.read_bytes))
            return
        rels = run.needed.get(digest)
        if rels is not None:
            copy = self._copy(run.session)
            await trio.to_thread.run_sync(place, path, [copy / rel for rel in rels])
            run.needed.pop(digest, None)

    async def _fetch(self, run: Session) -> None:
        copy = self._copy(run.session)
        if (copy / layout.INDEX).exists():
            data = (copy / layout.INDEX).read_bytes()
            if hashlib.sha256(data).digest() == run.request.record:
                await self._take_index(run, data)
        try:
            with trio.move_on_at(run.fetch_deadline):
                await self._fetch_files(run)
                self._serve_copy(copy)
                return
        finally:
            self.transfers.release(run.session, {run.request.record, *self._index_digests(copy)})
        missing = "its index" if run.needed is None else f"{len(run.needed)} of its files"
        raise InputError(f"the record did not arrive within {self.port.config.fetch_timeout_seconds:g} s of the "
                         f"request ([decryption] fetch_timeout_seconds): {missing} never came from any peer")

    async def _fetch_files(self, run: Session) -> None:
        """Each file from what this node serves (the requester has them all), else the record locations,
        else its peers over the links; every one checked against the digest the index gives it."""
        incoming = self._incoming()
        incoming.mkdir(parents=True, exist_ok=True)
        requester = self.port.roster.by_name(run.requester)
        while run.needed is None or run.needed:
            if run.fetch_error:
                raise PolicyRefusal(run.fetch_error)
            wake = run.wake
            wanted = [run.request.record] if run.needed is None else list(run.needed)
            got = False
            for digest in wanted:
                ready = self.transfers.ready.get(digest)
                served = self.serving.get(digest)
                if ready is not None:
                    await self._got(run, digest, ready)
                    got = True
                elif served is not None:
                    temp = incoming / f"tmp-{digest.hex()}-{secrets.token_hex(4)}"
                    if await trio.to_thread.run_sync(copy_checked, served, digest, temp):
                        await self._got(run, digest, temp)
                        got = True
                    _unlink(temp)
            if got:
                continue
            fresh = [d for d in wanted if d not in run.located]
            if fresh and run.sources:
                await self._from_locations(run, fresh)
                continue
            self.transfers.need(run.session, wanted, requester.sequence if requester else None)
            with trio.move_on_after(FETCH_RETRY_SECONDS):
                await wake.wait()

    async def _from_locations(self, run: Session, digests: list[bytes]) -> None:
        """Read these files from the record locations, in order; a location that fails or serves a wrong file
        is logged (one line naming it and the file), and the file comes from the next one, or the links."""
        incoming = self._incoming()
        names = {run.request.record: layout.INDEX} if run.needed is None else \
            {d: run.needed[d][0] for d in digests if d in run.needed}
        strikes: dict[str, int] = {}
        got: list[tuple[bytes, Path]] = []
        counts: dict[str, int] = {}
        limiter = trio.CapacityLimiter(LOCATION_READS)

        async def one(digest: bytes, rel: str) -> None:
            for i, location in enumerate(run.sources):
                if strikes.get(location, 0) >= LOCATION_STRIKES:
                    continue
                temp = incoming / f"tmp-{digest.hex()}-{secrets.token_hex(4)}"
                try:
                    async with limiter:
                        await trio.to_thread.run_sync(read_location, location, rel, digest, temp)
                except LocationError as e:
                    strikes[location] = strikes.get(location, 0) + 1
                    later = [loc for loc in run.sources[i + 1:] if strikes.get(loc, 0) < LOCATION_STRIKES]
                    log.warning("decryption %s: record location %s, %s: %s; %s", run.session.hex()[:16], location,
                                rel, e, "trying the next location" if later else "it comes from the peers")
                    if strikes[location] == LOCATION_STRIKES:
                        log.warning("decryption %s: record location %s failed %d times in a row; not tried again "
                                    "for this session", run.session.hex()[:16], location, LOCATION_STRIKES)
                    continue
                strikes[location] = 0
                counts[location] = counts.get(location, 0) + 1
                got.append((digest, temp))
                return

        run.located.update(digests)
        async with trio.open_nursery() as nursery:
            for digest, rel in names.items():
                nursery.start_soon(one, digest, rel)
        for location, count in counts.items():
            log.info("decryption %s: %d record file(s) read from %s", run.session.hex()[:16], count, location)
        for digest, temp in got:
            try:
                await self._got(run, digest, temp)
            finally:
                _unlink(temp)

    # --- stage 2: the policy ----------------------------------------------------------------------------

    async def _check(self, run: Session) -> Checked:
        copy = self._copy(run.session)
        ceremony = self.port.db.ceremony(run.request.ceremony)
        if ceremony is None or ceremony["status"] != "complete":
            raise PolicyRefusal("this guardian has no completed key ceremony with the session the request names")
        refusal = await trio.to_thread.run_sync(custody_refusal, self.port.db, ceremony, run.request.rehearsal,
                                                self.port.config.allow_rehearsal)
        if refusal is not None:          # before this node uses its key: custody certified, or a rehearsal it allows
            raise PolicyRefusal(refusal)
        export = Path(ceremony["outcome"].get("export", ""))
        own = await trio.to_thread.run_sync(_election_of, export)
        steps = await self._verify(copy)
        return await trio.to_thread.run_sync(check_record, copy, run.request, own[0], own[1], steps)

    async def _verify(self, copy: Path) -> dict[str, dict]:
        """`guardian verify --json` on the copy, in a child process: the event loop never waits on it.

        The report is kept beside the copy (in this node's own data directory), with the verifier's
        version, so a restart does not verify the same files again (and an upgraded verifier does)."""
        from node.verifier.ballot_pass import verifier_version

        cache = copy.parent / "verified.json"
        index_digest = layout.sha256_file(copy / layout.INDEX)
        version = verifier_version()
        try:
            kept = json.loads(cache.read_text())
            if kept.get("index") == index_digest and kept.get("verifier") == version:
                return kept["steps"]
        except (OSError, ValueError, AttributeError):
            pass
        # With the node's database as the verification cache, a ballot file checked before (by
        # `guardian record follow` while voting was open, or by an earlier request) is not checked again.
        command = [sys.executable, "-m", "node.cli.main", "verify", str(copy), "--json",
                   "--cache", str(self.port.db.path)]
        workers = self.port.config.verify_workers
        if workers:
            command += ["--workers", str(workers)]
        scheduler = self.port.config.compute_scheduler
        result = await trio.run_process(command + (["--scheduler", scheduler] if scheduler else []),
                                        capture_stdout=True, capture_stderr=True, check=False)
        if scheduler and not result.stdout:
            # The guardian's cluster could not be used: not the record's fault, so no refusal for it.
            log.warning("the Dask cluster at %s did not verify the record (%s): verifying on this machine",
                        scheduler, result.stderr.decode(errors="replace").strip()[-200:])
            result = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
        try:
            report = json.loads(result.stdout)
            steps = {s["step"]: s for s in report["steps"]}
        except (ValueError, KeyError, TypeError):
            raise PolicyRefusal("the verifier did not produce a report: "
                                + result.stderr.decode(errors="replace")[-300:]) from None
        incomplete = any(f.startswith("the step could not complete")
                         for step in steps.values() for f in step.get("failures", []))
        if not incomplete:                # an error of this run, not a finding on the record: not kept
            layout.atomic_write(cache, json.dumps({"index": index_digest, "verifier": version,
                                                   "steps": steps}).encode())
        return steps

    # --- the session ------------------------------------------------------------------------------------

    async def _run(self, run: Session) -> None:
        status = self._status_row(run.session)
        self._note(run, {"stage": status})
        try:
            if status == "fetching":
                await self._fetch(run)
                run.timings["fetched"] = self.port.now() - run.started
                self.port.db.set_decryption_status(run.session, "checking")
                self._note(run, {"stage": "checking"})
            run.checked = await self._check(run)
        except PolicyRefusal as e:
            self._refuse(run, str(e))
            return
        run.timings["checked"] = self.port.now() - run.started
        if status != "ready":
            self.port.db.set_decryption_status(run.session, "ready")
        await self._rounds(run)

    def _refuse(self, run: Session, reason: str) -> None:
        log.warning("decryption %s refused: %s", run.session.hex()[:16], reason)
        self.port.db.set_decryption_status(run.session, "refused", {"reason": reason[:500]})
        self._note(run, {"stage": "refused", "reason": reason[:500]})
        self.port.send("decrypt-refuse", {"reason": reason[:500]}, session=run.session)

    def _fail(self, run: Session, reason: str) -> None:
        log.warning("decryption %s failed: %s", run.session.hex()[:16], reason)
        status = self._status_row(run.session)
        if status is None or DECRYPTION.terminal(status):
            return        # an error after the session ended (e.g. while sending its refusal) changes nothing
        self.port.db.set_decryption_status(run.session, "failed", {"reason": reason[:500]})
        self._note(run, {"stage": "failed", "reason": reason[:500]})

    def _status_row(self, session: bytes) -> str | None:
        row = self.port.db.decryption(session)
        return row["status"] if row else None

    async def _rounds(self, run: Session) -> None:
        checked, request = run.checked, run.request
        ctx = checked.ctx
        dctx = DecryptionContext(ctx.group, ctx.g_table, ctx.parameters.n, ctx.parameters.k, checked.items,
                                 {"vote": ctx.k_table, "data": ctx.k_hat_table},
                                 {"vote": checked.vote_publics, "data": checked.data_publics})
        keys = await trio.to_thread.run_sync(self._keys, request.ceremony)
        sealed = self.port.db.sealed_state(run.session)
        state = self.box.open(sealed) if sealed else None
        transcript = DecryptionTranscript(request, dctx, self.port.now(),
                                          heartbeat_seconds=self.port.config.heartbeat_seconds,
                                          frame_bytes=self.port.config.max_frame_bytes)
        guardian = self._make_guardian(self.port, transcript, self.port.me.sequence, keys, state)
        for raw, own in self.port.db.session_log(run.session):
            envelope = decode_envelope(raw, 64 * 2**20)
            if own:
                guardian.note_sent(envelope.type, envelope.body)
            run.pending.append(envelope)
        run.transcript, run.guardian = transcript, guardian
        log.info("decryption %s: %d statements, %s", run.session.hex()[:16], len(checked.items),
                 "resumed" if sealed else "ready")
        while True:
            batch, run.pending = run.pending, []
            now = self.port.now()
            wake = run.wake
            links = self._links()
            sends, faults = await trio.to_thread.run_sync(self._advance, run, batch, now, links)
            self._note_round(run, links)
            for name, reason in faults:
                self.port.db.refuse(name, "bad decryption message", reason)
                log.warning("decryption message from %s refused: %s", name, reason)
            if sends:
                self._commit(run, sends)
                continue
            if transcript.result is not None:
                await self._finish(run)
                return
            if transcript.fatal or transcript.unreachable():
                self._fail(run, transcript.fatal or self._unreachable_reason(transcript))
                return
            if run.pending:
                continue
            deadline = transcript.deadline(now, links)          # after `now`, or None
            with trio.move_on_at(deadline + 0.05 if deadline is not None else float("inf")):
                await wake.wait()

    def _advance(self, run: Session, batch: list[Envelope], now: float,
                 links: Mapping[int, LinkView]) -> tuple[list[Send], list[tuple[str, str]]]:
        """In a worker thread: feed the messages to the transcript, let the guardian act, copy for status."""
        faults = []
        t = run.transcript
        for envelope in batch:
            entry = self.port.roster.by_key(envelope.sender)
            try:
                t.receive(entry.sequence, envelope.type, envelope.body, now)
            except MalformedMessage as e:
                faults.append((entry.name, str(e)))
        sends = run.guardian.act(now, links)
        r = t.current
        run.snapshot = Snapshot(t.view(), r.number if r else 0, dict(t.refused), dict(t.excluded),
                                r.present if r else ())
        return sends, faults

    def links_changed(self) -> None:
        """A link came up or went down: the coordinator may now wait for fewer (or more) guardians."""
        self.transfers.links_changed()
        self._links()
        for run in self.sessions.values():
            if run.transcript is not None:
                run.poke()

    def _links(self) -> dict[int, LinkView]:
        """The port's links, each dropped one with the time this node saw it go down (the waiting rule counts
        a link that dropped moments ago as still there)."""
        now, links = self.port.now(), dict(self.port.links())
        for i, link in links.items():
            if link.connected:
                self._up.add(i)
                self._dropped.pop(i, None)
            elif i in self._up:
                self._up.discard(i)
                self._dropped[i] = now
            if not link.connected and i in self._dropped:
                links[i] = replace(link, dropped=self._dropped[i])
        return links

    def _commit(self, run: Session, sends: list[Send]) -> None:
        envelopes = self.port.commit_and_send(run.session, sends, self.box.seal(run.guardian.state))
        run.pending[:0] = envelopes            # our own messages pass the same checks

    def _keys(self, ceremony_session: bytes) -> dict:
        row = self.port.db.ceremony(ceremony_session)
        if row is None:
            raise PolicyRefusal("this node took part in no key ceremony with the session the request names")
        config = parse_election_config(row["config"])
        me = config.guardian_by_key(self.port.identity.public_key).sequence
        sealed = self.port.db.sealed_state(ceremony_session)
        if sealed is None:
            raise PolicyRefusal("this node holds no key shares for the ceremony")
        vote, data = Guardian(Transcript(config), me, self.box.open(sealed)).decryption_keys()
        return {"vote": vote, "data": data}

    def _unreachable_reason(self, t: DecryptionTranscript) -> str:
        names = self._names()
        out = [f"{names[i]} refused: {why}" for i, why in sorted(t.refused.items())]
        out += [f"{names[i]} excluded: {why}" for i, why in sorted(t.excluded.items())]
        return f"fewer than {t.ctx.k} guardians can take part: " + "; ".join(out)

    def _names(self) -> dict[int, str]:
        return {e.sequence: e.name for e in self.port.roster.entries}

    # --- stage 4: the result ------------------------------------------------------------------------

    async def _finish(self, run: Session) -> None:
        outcome = await trio.to_thread.run_sync(self._write_results, run)
        run.timings["first_round"] = run.transcript.rounds[0].started - run.started
        run.timings["complete"] = self.port.now() - run.started
        run.timings["last_round"] = self.port.now() - run.transcript.result.started
        outcome["seconds"] = {k: round(v, 3) for k, v in run.timings.items()}
        self.port.db.set_decryption_status(run.session, "complete", outcome)
        self._note(run, {"stage": "complete", "rounds": outcome["rounds"], "present": outcome["present"],
                         "missing": outcome["missing"], "form": outcome["form"]})
        log.info("decryption %s complete: present %s, missing %s", run.session.hex()[:16], outcome["present"],
                 outcome["missing"])

    def _write_results(self, run: Session) -> dict:
        t, checked = run.transcript, run.checked
        ctx, rnd = checked.ctx, t.result
        who = quorum(ctx.parameters.n, rnd.present, run.request.compensated)
        joints = [JointResult(m, c, v, tuple(codec.ShareRecord(s.part.guardian, s.part.missing, s.value,
                                                               s.commitment_a, s.commitment_b, v_i)
                                             for s, v_i in parts))
                  for m, c, v, parts in rnd.results]
        pos = 0
        decrypted = None
        if checked.tally is not None:
            count = sum(len(c.options) for c in ctx.manifest.contests)
            decrypted = tally_record(ctx, checked.tally, joints[:count], who)
            pos = count
        opened = []
        for rec in checked.challenged:
            item = checked.items[pos]
            opened.append(challenged_record(ctx, rec, item.statement, joints[pos], who))
            pos += 1
        names = self._names()
        summary = {"session": run.session.hex(), "request": run.request.to_json_dict(),
                   "form": who.form, "present": list(who.present), "missing": list(who.missing),
                   "rounds": [{"round": r.number, "present": list(r.present), "missing": list(r.missing),
                               "excluded": {str(i): why for i, why in r.culprits.items()}} for r in t.rounds],
                   "refused": {names.get(i, str(i)): why for i, why in t.refused.items()}}
        extra = {SUMMARY: codec.canonical_bytes(summary)}
        targets = [self._copy(run.session)]
        written = []
        if run.record_dir:
            root = Path(run.record_dir)
            try:
                same = hashlib.sha256((root / layout.INDEX).read_bytes()).digest() == run.request.record
            except OSError:
                same = False
            if same:
                targets.append(root)
            else:
                log.warning("%s changed since the request; the result is only in %s", root, targets[0])
        for root in targets:
            write_decryptions(layout.Record(root), ctx, decrypted, opened, extra)
            written.append(str(root))
        tally = None
        if decrypted is not None:
            tally = {c.label: {o.label: o.tally for o in c.options} for c in decrypted.contests}
        return {"present": [names[i] for i in who.present], "missing": [names[i] for i in who.missing],
                "form": who.form, "rounds": len(t.rounds), "tally": tally,
                "challenged": [o.ballot_id for o in opened],
                "excluded": {names.get(i, str(i)): why for i, why in t.excluded.items()},
                "refused": {names.get(i, str(i)): why for i, why in t.refused.items()},
                "written": written}

    # --- status ----------------------------------------------------------------------------------------

    def status(self, session: str | None = None) -> list[dict]:
        """Every session, or only the one named (by its full hash), then with its progress events."""
        now = self.port.now()
        names = self._names()
        out = []
        for d in self.port.db.decryptions() if session is None else self._named(session):
            entry = {"session": d["session"].hex(), "status": d["status"], "requester": d["requester"],
                     "outcome": d["outcome"]}
            try:
                request = parse_request(d["request"], len(self.port.roster))
                entry.update({"compensated": request.compensated, "timeout_seconds": request.timeout,
                              "tally": request.tally is not None, "challenged": len(request.challenged)})
            except GuardianError:
                pass
            run = self.sessions.get(d["session"])
            if run is not None:
                entry["seconds"] = round(now - run.started, 1)
                if session is not None:
                    entry["events"] = list(run.events)
                snap = run.snapshot
                if snap is not None and d["status"] == "ready":
                    entry.update(self._round_status(snap, run.transcript.policy, now, names, self._links()))
            out.append(entry)
        return out

    def _named(self, session: str) -> list[dict]:
        """The session of this full hash, by the primary key (`guardian decrypt` polls it): [] if none."""
        try:
            row = self.port.db.decryption(bytes.fromhex(session))
        except ValueError:
            row = None
        return [row] if row is not None else []

    def _round_status(self, snap: Snapshot, policy, now: float, names: dict[int, str],
                      links: Mapping[int, LinkView]) -> dict:
        view = snap.view
        stalled = decide(now, links, view, policy).stalled
        available = view.available
        absent = [i for i in range(1, view.n + 1)
                  if i not in available and i not in view.refused and i not in view.excluded]
        missing = absent if stalled is None else sorted(stalled)
        linked = linked_guardians(now, links, policy)
        waiting, since = awaited(now, links, view, policy)
        r = view.current
        return {"available": [names[i] for i in available if stalled is None or i not in stalled],
                "absent": [names[i] for i in missing],
                "refused": {names[i]: why for i, why in snap.refused.items()},
                "excluded": {names[i]: why for i, why in snap.excluded.items()},
                "round": snap.round,
                "step": r.step if r else "gathering",
                "waiting_for": [names[i] for i in (sorted(r.waiting_for) if r else absent)],
                "stalled": stalled is not None,
                "quorum": view.k,
                "ready": [names[i] for i in available],
                "linked": [names[i] for i in sorted(linked)],
                "unlinked": [names[i] for i in absent if i not in linked],
                "present": [names[i] for i in snap.present],
                # since when each awaited guardian is awaited, in seconds; the coordinator goes on without
                # them (if k are left) once the wait is one step timeout long
                "awaited": {names[i]: round(now - since, 1) for i in waiting},
                "gives_up_in": round(max(0.0, since + policy.step_timeout - now), 1) if waiting else None,
                "step_timeout": policy.step_timeout,
                # linked guardians whose link is down, counted for `relink_seconds` after the drop: seconds since
                "dropped": {names[i]: round(now - links[i].dropped, 1) for i in sorted(linked)
                            if not links[i].connected and links[i].dropped is not None},
                "relink_seconds": policy.relink}

    # --- progress -------------------------------------------------------------------------------------

    def _note(self, run: Session, event: dict, key: tuple | None = None, now: float | None = None) -> None:
        """Add a progress event, unless `key` says nothing changed since the last one."""
        key = key if key is not None else (event["stage"],)
        if key == run.last_key:
            return
        run.last_key = key
        run.noted += 1
        at = self.port.now() if now is None else now
        run.events.append({"n": run.noted, "seconds": round(at - run.started, 1), **event})
        del run.events[:-MAX_EVENTS]

    def _note_round(self, run: Session, links: Mapping[int, LinkView]) -> None:
        now, snap = self.port.now(), run.snapshot
        if snap is None or snap.view.current is not None and snap.view.current.step == "complete":
            return          # the stage "complete" follows
        if snap.view.current is None and self.port.me.sequence not in snap.view.ready:
            return          # this node's own ready is on its way through the transcript
        state = self._round_status(snap, run.transcript.policy, now, self._names(), links)
        event = {"stage": "ready", **{k: state[k] for k in (
            "round", "step", "ready", "linked", "unlinked", "present", "awaited", "gives_up_in", "stalled",
            "absent", "quorum", "step_timeout", "dropped", "relink_seconds")},
            "excluded": sorted(state["excluded"]), "refused": sorted(state["refused"])}
        key = ("ready", state["round"], state["step"], tuple(state["ready"]), tuple(state["linked"]),
               tuple(state["awaited"]), state["stalled"], tuple(event["excluded"]), tuple(event["refused"]))
        self._note(run, event, key, now)


def _missing(copy: Path, index: dict[str, str]) -> dict[bytes, list[str]]:
    """digest -> the paths of the copy that lack it (or hold other bytes)."""
    needed: dict[bytes, list[str]] = {}
    for rel, hex_digest in index.items():
        path = copy / rel
        if not path.is_file() or layout.sha256_file(path) != hex_digest:
            needed.setdefault(bytes.fromhex(hex_digest), []).append(rel)
    return needed


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _election_of(export: Path) -> tuple[bytes, tuple[int, int]]:
    from node.record.election import open_election

    ctx = open_election(export).context
    return ctx.h_e, (ctx.joint_key, ctx.joint_data_key)


def _ballot_state(record: layout.Record, rel: str) -> str | None:
    try:
        obj = record.read_json(rel)
    except GuardianError:
        return None
    return obj.get("ballot_state") if isinstance(obj, dict) else None
