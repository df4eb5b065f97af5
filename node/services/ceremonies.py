"""The node's key ceremonies: the service between the port and the sans-I/O ceremony machine.

It keeps, for each ceremony this node takes part in, the election config, the votes
of the guardians on it, and once all n accepted, a Transcript and this node's
Guardian. Every step commits the guardian's sealed state together with the
messages that depend on it before anything is sent; after a restart, the
transcript is rebuilt from the stored messages and the guardian from its
sealed state, so nothing is computed twice with different randomness.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from pathlib import Path
from typing import Callable

import trio

from node.crypto.errors import GuardianError, InputError
from node.crypto.local_ceremony import CeremonyResult
from node.crypto.manifest import parse_manifest
from node.crypto.election import ElectionContext
from node.protocol.ceremony import MESSAGE_TYPES, CeremonyFault, Guardian, Transcript
from node.protocol.election_config import ConfigGuardian, ElectionConfig, default_phase_timeout, parse_election_config
from node.protocol.envelope import Envelope, decode_envelope
from node.record import layout
from node.record.local import write_election
from node.services.custody import Custody
from node.services.pending import room_for
from node.services.port import Port, Service
from node.storage.state_box import StateBox

log = logging.getLogger("guardian.ceremony")
NODE_TYPES = frozenset({"ceremony-propose", "ceremony-accept", "ceremony-reject"})
# Keys messages and share checks are passed on to every peer, so a guardian showing different keys or
# complaints to different peers is caught by all (spec 3.2.2 step 1, the H_G echo; the check views
# signed into the results).
RELAYED = frozenset({"keys", "share-check"})

# How this node's Guardian is made: (port, transcript, own sequence, sealed state or None) -> Guardian.
# A misbehaving guardian for rehearsals plugs in here (node/testing/adversary.py).
GuardianFactory = Callable[[Port, Transcript, int, "dict | None"], Guardian]


def honest_guardian(port: Port, transcript: Transcript, me: int, state: dict | None) -> Guardian:
    return Guardian(transcript, me, state)


class Running:
    """One ceremony under way on this node."""

    def __init__(self, guardian: Guardian, started: float) -> None:
        self.transcript = guardian.t
        self.config = self.transcript.config
        self.guardian = guardian
        self.phase_started = started
        self.phase = self.transcript.phase
        self.changed = trio.Event()


class Ceremonies(Service):
    name = "ceremonies"
    node_types = NODE_TYPES
    read_only = frozenset({"ceremony-show", "ceremony-status"})

    def __init__(self, port: Port, box: StateBox, custody: Custody,
                 guardian: GuardianFactory = honest_guardian) -> None:
        self.port, self.box, self.custody, self._make_guardian = port, box, custody, guardian
        self.running: dict[bytes, Running] = {}
        custody.finished_elsewhere = self.finished_elsewhere

    def commands(self) -> dict:
        return {"ceremony-propose": lambda r: {"session": self.propose(r["election"])},
                "ceremony-show": lambda r: self.show(r.get("session")),
                "ceremony-accept": lambda r: self._vote_command(r, True),
                "ceremony-reject": lambda r: self._vote_command(r, False),
                "ceremony-status": lambda r: self.status()}

    def _vote_command(self, request: dict, accept: bool) -> dict:
        self.vote(request.get("session"), accept, request.get("why", ""))
        return {"ok": True}

    def session_kind(self, session: bytes) -> tuple[str, str | None] | None:
        run = self.running.get(session)
        return "ceremony", run.transcript.phase if run is not None else None

    # --- start and restart ----------------------------------------------------------------------

    def start(self) -> None:
        for c in self.port.db.ceremonies(("proposed", "running")):
            if c["status"] == "proposed":
                self._listen(c["session"])
            elif c["status"] == "running":
                self._start(parse_election_config(c["config"]))

    def _listen(self, session: bytes) -> None:
        """Take messages of a proposed ceremony into the inbox at once: a faster peer may start it
        (all n accepts reached it) before the last accept reaches us; they are replayed at our start."""
        self.port.accept_session(session, MESSAGE_TYPES)

    def _start(self, config: ElectionConfig) -> None:
        """Start (or, after a restart, resume) a ceremony: replay every stored message of it, ours
        included, then let the guardian act on what is left to do."""
        session = config.session
        me = config.guardian_by_key(self.port.identity.public_key).sequence
        sealed = self.port.db.sealed_state(session)
        state = self.box.open(sealed) if sealed else None
        run = Running(self._make_guardian(self.port, Transcript(config), me, state), self.port.now())
        self.running[session] = run
        self._listen(session)
        for raw, own in self.port.db.session_log(session):
            envelope = decode_envelope(raw, 64 * 2**20)
            if own:
                run.guardian.note_sent(envelope.type, envelope.body)
            self._feed(run, envelope)
        self.port.start_task(self._deadlines, session)
        self.step(session)
        log.info("ceremony %s %s: phase %s", session.hex()[:16], "resumed" if sealed else "started",
                 run.transcript.phase)

    # --- proposals and votes (node session) ----------------------------------------------------------

    def propose(self, election: dict) -> str:
        """Build the election config from an election file's contents and this node's roster; broadcast it."""
        roster = self.port.roster
        manifest = parse_manifest(election["manifest"])
        k = election.get("quorum")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(roster):
            raise InputError(f"quorum must be between 1 and the number of guardians ({len(roster)})")
        timeout = float(election.get("phase_timeout_seconds") or default_phase_timeout(len(roster)))
        replaces = None
        if election.get("replaces"):
            replaces = self._session(str(election["replaces"]), status="complete")
        config = ElectionConfig(
            str(election.get("election") or manifest.label), k,
            tuple(ConfigGuardian(e.sequence, e.name, e.public_key) for e in roster.entries),
            manifest, timeout, secrets.token_hex(16), replaces)
        self._check_replaces(config)
        data = config.canonical_bytes()
        parse_election_config(data)   # the same checks a peer will make
        self.port.db.add_ceremony(config.session, data, self.port.me.name, "proposed", {})
        self._listen(config.session)
        self.port.send("ceremony-propose", {"config": data})
        return config.session.hex()

    def vote(self, session_hex: str, accept: bool, why: str = "") -> None:
        session = self._session(session_hex)
        record = self._ceremony(session)
        if record is None or record["status"] != "proposed":
            raise InputError(f"ceremony {session_hex[:16]} is {record['status']}, not open for votes")
        if not accept and not why.strip():
            raise InputError("a rejection needs a reason (--why)")
        self.port.send("ceremony-accept" if accept else "ceremony-reject",
                       {"session": session, **({} if accept else {"why": why[:500]})})
        self._record_vote(session, self.port.me.name, "accept" if accept else "reject", why)

    def on_node_message(self, envelope: Envelope, sender: str) -> None:
        body = envelope.body if isinstance(envelope.body, dict) else {}
        if envelope.type == "ceremony-propose":
            data = body.get("config")
            try:
                if not isinstance(data, bytes):
                    raise InputError("no config bytes")
                config = parse_election_config(data)
                self._check_roster(config)
                self._check_replaces(config)
                status, outcome = "proposed", {}
            except GuardianError as e:
                config, status, outcome = None, "invalid", {"reason": str(e)[:300]}
                log.warning("invalid ceremony proposal from %s: %s", sender, e)
            if isinstance(data, bytes):
                session = hashlib.sha256(data).digest()
                if self._ceremony(session) is None and not room_for(self.port, "ceremonies", sender, status,
                                                                   "ceremony proposals"):
                    return
                self.port.db.add_ceremony(session, data, sender, status, outcome)
                if config is not None:
                    self._listen(config.session)
                    self.custody.check_finished(config.session)     # a replayed proposal of a finished one
                    self._maybe_start(config.session)
            return
        session = body.get("session")
        if not isinstance(session, bytes) or len(session) != 32:
            return
        if envelope.type == "ceremony-accept":
            self._record_vote(session, sender, "accept", "")
        else:
            why = body.get("why") if isinstance(body.get("why"), str) else ""
            self._record_vote(session, sender, "reject", why)

    def _record_vote(self, session: bytes, guardian: str, vote: str, why: str) -> None:
        self.port.db.vote(session, guardian, vote, why)
        record = self._ceremony(session)
        if vote == "reject" and record is not None and record["status"] == "proposed":
            self.port.db.set_ceremony_status(session, "rejected", {"by": guardian, "why": why})
        self._maybe_start(session)

    def _maybe_start(self, session: bytes) -> None:
        record = self._ceremony(session)
        if record is None or record["status"] != "proposed" or session in self.running:
            return
        votes = self.port.db.votes(session)
        names = {e.name for e in self.port.roster.entries}
        if {g for g, (v, _) in votes.items() if v == "accept"} >= names:
            self.port.db.set_ceremony_status(session, "running")
            self._start(parse_election_config(record["config"]))

    def finished_elsewhere(self, session: bytes, reports: dict[str, str]) -> None:
        """Every other guardian reports this ceremony finished (custody sync), yet this node holds only its
        proposal: peers replay their old proposals and accepts to a node restored from a backup, which never
        knew the ceremony. It must not be offered for a vote: a ceremony needs all n, and it ended without
        this node (its keys, if it had any, are not in this node's database)."""
        record = self._ceremony(session)
        if record is None or record["status"] != "proposed" or session in self.running:
            return
        said = ", ".join(f"{name} {status}" for name, status in sorted(reports.items()))
        self.port.db.set_ceremony_status(session, "finished-elsewhere", {
            "finished_elsewhere": reports,
            "why": f"finished without this node (every other guardian reports it: {said}); this node holds no "
                   f"keys of it and takes no part"})
        log.info("ceremony %s finished without this node (%s): not open for a vote", session.hex()[:16], said)

    def _check_replaces(self, config: ElectionConfig) -> None:
        """A ceremony may replace (rotate) the keys of a completed one of the same election, before voting:
        while no decryption has been asked of the old keys."""
        if config.replaces is None:
            return
        old = self._ceremony(config.replaces)
        if old is None or old["status"] != "complete":
            raise InputError(f"it replaces ceremony {config.replaces.hex()[:16]}, which this node has not completed "
                             f"(or which is already superseded)")
        previous = parse_election_config(old["config"])
        if (previous.election, previous.manifest.canonical_bytes()) != (config.election,
                                                                        config.manifest.canonical_bytes()):
            raise InputError("a replacing ceremony must be for the same election (name and manifest)")
        if self.port.db.decryptions_of(config.replaces):
            raise InputError(f"the keys of ceremony {config.replaces.hex()[:16]} were already asked to decrypt: "
                             f"voting is over, they can no longer be replaced")

    def _check_roster(self, config: ElectionConfig) -> None:
        mine = [(e.sequence, e.public_key) for e in self.port.roster.entries]
        theirs = [(g.sequence, g.public_key) for g in config.guardians]
        if mine != theirs:
            raise InputError("the proposal's guardians differ from this node's roster")

    # --- the ceremony itself ----------------------------------------------------------------------

    def on_session_message(self, envelope: Envelope) -> None:
        if envelope.type in RELAYED:
            self.port.relay(envelope)
        run = self.running.get(envelope.session)
        if run is None:
            return
        self._feed(run, envelope)
        self.step(envelope.session)

    def _feed(self, run: Running, envelope: Envelope) -> None:
        sender = run.config.guardian_by_key(envelope.sender)
        try:
            run.transcript.receive(sender.sequence, envelope.type, envelope.body, envelope.digest)
        except CeremonyFault as e:
            log.warning("ceremony %s aborted: %s", envelope.session.hex()[:16], e)
        except GuardianError as e:
            log.warning("ceremony message refused: %s", e)

    def step(self, session: bytes) -> None:
        """Let the guardian act until it has nothing more to send; commit, then send."""
        run = self.running[session]
        while True:
            sends = run.guardian.act()
            if not sends:
                break
            envelopes = self.port.commit_and_send(session, sends, self.box.seal(run.guardian.state))
            for envelope in envelopes:
                self._feed(run, envelope)         # our own messages pass the same checks
        self._after_step(session, run)

    def _after_step(self, session: bytes, run: Running) -> None:
        t = run.transcript
        if t.phase != run.phase:
            run.phase, run.phase_started = t.phase, self.port.now()
            event, run.changed = run.changed, trio.Event()
            event.set()
        if t.outcome is None:
            return
        status = "complete" if t.outcome.status == "complete" else "aborted"
        record = self._ceremony(session)
        if record is not None and record["status"] == "running":
            outcome = {"culprits": t.outcome.culprits, "reason": t.outcome.reason}
            if status == "complete":
                outcome = {"joint_key_sha256": _short(t.expected_result()["joint_key"]),
                           "h_e": t.expected_result()["h_e"].hex(), "export": str(self._export(session, run))}
                if run.config.replaces:
                    outcome["replaces"] = run.config.replaces.hex()
            self.port.db.set_ceremony_status(session, status, outcome)
            log.info("ceremony %s %s %s", session.hex()[:16], status, outcome)
            if status == "complete" and run.config.replaces:
                self.custody.superseded(run.config.replaces, session)

    async def _deadlines(self, session: bytes) -> None:
        run = self.running[session]
        while run.transcript.outcome is None:
            deadline = run.phase_started + run.config.phase_timeout
            changed = run.changed
            with trio.move_on_at(deadline):
                await changed.wait()
                continue
            if run.transcript.outcome is None and self.port.now() >= deadline:
                try:
                    run.transcript.timeout()
                except CeremonyFault as e:
                    log.warning("ceremony %s timed out: %s", session.hex()[:16], e)
                self.step(session)

    def _export(self, session: bytes, run: Running) -> Path:
        """The ElectionGuard 2.1 public election files, the config and every guardian's signed result."""
        t = run.transcript
        directory = self.port.config.data_dir / "ceremonies" / session.hex()
        ctx = ElectionContext(t.parameters, *t.joint_keys)
        result = CeremonyResult(ctx, tuple(t.keys[i] for i in t.everyone), {}, t.record_hash)
        write_election(directory, result, run.config.election, method="key ceremony across guardian nodes")
        record = layout.Record(directory)
        # In signer order, not arrival order: every node writes the same bytes for the same results.
        results = [(decode_envelope(raw, 64 * 2**20), raw) for raw, _ in self.port.db.session_log(session)]
        sequence = {g.public_key: g.sequence for g in self.port.roster.entries}
        signed = [raw.hex() for envelope, raw in sorted(
            ((e, raw) for e, raw in results if e.type == "result"),
            key=lambda item: (sequence.get(item[0].sender, 1 << 30), item[0].seq, item[1]))]
        digests = {"election_config.json": record.write("election_config.json", run.config.canonical_bytes()),
                   "ceremony_results.json": record.write("ceremony_results.json",
                                                         json.dumps({"signed_results": signed}).encode())}
        record.update_index((), digests)
        return directory

    # --- status ----------------------------------------------------------------------------------

    def status(self) -> list[dict]:
        now = self.port.now()
        result = []
        for c in self.port.db.ceremonies():
            session = c["session"]
            entry = {"session": session.hex(), "status": c["status"], "proposer": c["proposer"],
                     "outcome": c["outcome"]}
            try:
                config = parse_election_config(c["config"])
                entry.update({"election": config.election, "n": config.n, "k": config.k,
                              "phase_timeout_seconds": config.phase_timeout})
            except GuardianError:
                pass
            votes = self.port.db.votes(session)
            entry["votes"] = {g: {"vote": v, "why": w} for g, (v, w) in votes.items()}
            if c["status"] in ("complete", "superseded"):
                try:
                    custody = self.custody.status(session.hex())
                    entry["custody"] = custody["table"]
                    entry["custody_complete"] = custody["complete"]
                    entry["certificate"] = custody["certificate"]
                except GuardianError:
                    pass
            run = self.running.get(session)
            if run is not None:
                t = run.transcript
                names = {g.sequence: g.name for g in run.config.guardians}
                entry.update({"phase": t.phase, "phase_seconds": round(now - run.phase_started, 1),
                              "waiting_for": [names[i] for i in t.waiting_for()],
                              "done": {names[i]: self._done(t, i) for i in t.everyone}})
            result.append(entry)
        return result

    @staticmethod
    def _done(t: Transcript, i: int) -> list[str]:
        steps = [("keys", t.keys), ("echo", t.echoes), ("shares", t.shares), ("check", t.checks),
                 ("result", t.results)]
        return [name for name, have in steps if i in have]

    def show(self, session_hex: str | None) -> dict:
        sessions = self.port.db.ceremony_sessions(session_hex or "")
        if not sessions:
            raise InputError("no such ceremony proposal")
        c = self._ceremony(sessions[-1])
        return {"session": c["session"].hex(), "status": c["status"], "proposer": c["proposer"],
                "config": json.loads(c["config"]), "votes": self.port.db.votes(c["session"])}

    def _session(self, session_hex: str | None, status: str = "proposed") -> bytes:
        wanted = status if not session_hex or status != "proposed" else None
        sessions = self.port.db.ceremony_sessions(session_hex or "", wanted)
        if len(sessions) != 1:
            raise InputError(f"name the {status} ceremony by (a prefix of) its hash: "
                             + (", ".join(s.hex()[:16] for s in sessions) or f"none {status}"))
        return sessions[0]

    def _ceremony(self, session: bytes) -> dict | None:
        return self.port.db.ceremony(session)


def _short(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
