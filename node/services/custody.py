"""Key custody on the running node: backup export, confirm, verify; steps shared with the peers; the certificate.

Each guardian, after a key ceremony completes (seed 000 "Key Ceremony Process"):
  downloaded  `guardian backup export`: its key backup file, sealed under a passphrase it chooses
  backed-up   `guardian backup confirm --copies N`: it states that N separate copies exist
  verified    `guardian backup verify FILE`: the file opens, restores exactly this guardian's
              identity, key shares and commitments, and is the file that was exported
Each step is a signed node message (`custody-step`) that every node keeps, so every node can show
the table of who has done what. When every guardian has verified, custody is complete and the
election may proceed: each node signs the ceremony certificate (the same bytes on every node,
built from the signed steps) and sends its signature; with all n signatures the certificate is
written beside the ceremony's export. The certificate's pure parts (the body digest, what is signed,
the text, verify_certificate) are node/custody/certificate.py. When a link comes up, the two nodes
compare their custody of each finished ceremony (`custody-sync`) and hand over the signed steps and
signatures the other lacks: a node restored from a backup gets its own old steps back that way.

The backup's payload holds everything needed to decrypt later on a new machine: the node's
identity seed, its node.toml and roster, and the ceremony (config, outcome, public export files
and this guardian's sealed-state secrets). It is sealed by node/custody/backup_file.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Callable

import nacl.exceptions
import nacl.signing
from gmpy2 import mpz

from node.crypto.errors import GuardianError
from node.crypto.keys import commitment_at
from node.crypto.params import STANDARD
from node.crypto.sealing import check_passphrase
from node.custody.backup_file import BackupMeta, read_backup, write_backup
from node.custody.certificate import (  # noqa: F401  (the certificate's names, for this module's users)
    CERTIFICATE_FORMAT, CERTIFICATE_JSON, CERTIFICATE_TEXT, SIGNING_TAG, STEPS, CustodyError, body_digest,
    certificate_message, certificate_text, utc as _utc, verify_certificate, write_certificate,
)
from node.identity import fingerprint as key_fingerprint
from node.protocol.ceremony import Guardian, Transcript
from node.protocol.election_config import ElectionConfig, parse_election_config
from node.protocol.envelope import NODE_SESSION, Envelope, EnvelopeError, decode_envelope
from node.record import codec, layout
from node.services.port import Port, Service
from node.storage.state_box import StateBox

log = logging.getLogger("guardian.custody")
NODE_TYPES = frozenset({"custody-step", "certificate-signature", "custody-sync"})
PAYLOAD_FORMAT = "guardian-node key backup payload v1"
MIN_COPIES = 2
MAX_SYNCED = 4096                 # envelopes and signatures in one custody-sync
MAX_SYNCED_ENVELOPE = 4096        # bytes of one synced custody step
FINISHED = ("complete", "superseded")

# Someone to tell when every other guardian reports a ceremony finished that this node holds only as
# proposed (a node restored from a backup sees old proposals replayed): (session, {guardian: status}).
FinishedElsewhere = Callable[[bytes, dict[str, str]], None]


class Custody(Service):
    name = "custody"
    node_types = NODE_TYPES
    read_only = frozenset({"custody-status", "certificate"})

    def __init__(self, port: Port, box: StateBox) -> None:
        self.port, self.box = port, box
        self.finished_elsewhere: FinishedElsewhere | None = None
        self.reports: dict[bytes, dict[bytes, str]] = {}     # ceremony -> guardian's key -> status it reports
        self._up: set[int] = set()                             # guardians linked when last looked at
        self._answered: dict[tuple[str, bytes], bytes] = {}   # (peer, ceremony) -> our state we last sent it

    def commands(self) -> dict:
        return {"backup-export": lambda r: self.export(r.get("ceremony"), str(r["out"]), str(r["passphrase"])),
                "backup-confirm": lambda r: self.confirm(r.get("ceremony"), r.get("copies")),
                "backup-verify": lambda r: self.verify(r.get("ceremony"), str(r["file"]), str(r["passphrase"])),
                "custody-status": lambda r: self.status(r.get("ceremony")),
                "certificate": lambda r: self.show_certificate(r.get("ceremony"))}

    # --- helpers -------------------------------------------------------------------------------

    def _ceremony(self, session_hex: str | None) -> dict:
        """The completed ceremony named by a hash prefix; the latest completed one when none is given."""
        done = self.port.db.ceremonies(("complete", "superseded"))
        if session_hex:
            done = [c for c in done if c["session"].hex().startswith(session_hex.lower())]
        else:
            done = [c for c in done if c["status"] == "complete"][-1:]
        if len(done) != 1:
            raise CustodyError("name one completed key ceremony by (a prefix of) its hash: "
                               + (", ".join(c["session"].hex()[:16] for c in done) or "none completed"))
        return done[0]

    def _config(self, record: dict) -> ElectionConfig:
        return parse_election_config(record["config"])

    def _export_dir(self, record: dict) -> Path:
        return Path(record["outcome"]["export"])

    def _me(self, config: ElectionConfig) -> int:
        return config.guardian_by_key(self.port.identity.public_key).sequence

    def _state(self, session: bytes) -> dict:
        sealed = self.port.db.sealed_state(session)
        if sealed is None:
            raise CustodyError("this node holds no key shares for the ceremony")
        return self.box.open(sealed)

    def _commitments_digest(self, record: dict, sequence: int) -> bytes:
        """SHA-256 of the guardian's public key file (commitments, proofs) in the ceremony export."""
        return hashlib.sha256((self._export_dir(record) / layout.guardian_file(sequence)).read_bytes()).digest()

    def _send_step(self, session: bytes, step: str, detail: dict) -> None:
        at_ms = int(time.time() * 1000)          # msgpack bodies carry no floats
        seq = self.port.send("custody-step", {"ceremony": session, "step": step, "at_ms": at_ms, "detail": detail})
        # The signed message is kept with the step: it is what a custody sync hands to a peer that lacks it.
        self.port.db.add_custody_step(session, self.port.me.name, step, at_ms / 1000, detail,
                                      self._own_envelope(lambda e: e.seq == seq))
        self._maybe_sign(session)

    def _own_envelope(self, match: Callable[[Envelope], bool]) -> bytes | None:
        """The newest custody step this node signed and sent that `match`es, from its outbox."""
        for raw, own in reversed(self.port.db.session_log(NODE_SESSION)):
            if own:
                envelope = decode_envelope(raw, 64 * 2**20)
                if envelope.type == "custody-step" and match(envelope):
                    return raw
        return None

    # --- the guardian's steps ----------------------------------------------------------------------

    def export(self, session_hex: str | None, out: str, passphrase: str) -> dict:
        check_passphrase(passphrase)
        record = self._ceremony(session_hex)
        if record["status"] != "complete":
            raise CustodyError("this ceremony's keys are superseded: back up the keys of the ceremony that replaced it")
        session = record["session"]
        config = self._config(record)
        me = self._me(config)
        export = self._export_dir(record)
        files = {rel: base64.b64encode((export / rel).read_bytes()).decode() for rel in layout.Record(export).files()
                 if not rel.startswith("certificate.")}
        files[layout.INDEX] = base64.b64encode((export / layout.INDEX).read_bytes()).decode()
        payload = codec.canonical_bytes({
            "format": PAYLOAD_FORMAT,
            "identity_seed": bytes(self.port.identity.signing_key).hex(),
            "node": {"name": self.port.me.name, "node_toml": self.port.config.path.read_text(),
                     "roster_toml": self.port.config.roster_file.read_text()},
            "ceremony": {"session": session.hex(), "config": base64.b64encode(record["config"]).decode(),
                         "proposer": record["proposer"], "outcome": record["outcome"],
                         "state": self._state(session), "export": files},
        })
        meta = BackupMeta.make(self.port.me.name, me, session, self.port.identity.public_key,
                               self._commitments_digest(record, me))
        path = Path(out)
        _, fingerprint = write_backup(path, payload, meta, passphrase)
        self.port.db.clear_custody_steps(session, self.port.me.name, ("backed-up", "verified"))
        self._send_step(session, "downloaded", {"fingerprint": fingerprint})
        log.info("key backup of ceremony %s exported (fingerprint %s)", session.hex()[:16], fingerprint)
        return {"path": str(path.resolve()), "fingerprint": fingerprint, "ceremony": session.hex()}

    def confirm(self, session_hex: str | None, copies: object) -> dict:
        if isinstance(copies, bool) or not isinstance(copies, int) or not MIN_COPIES <= copies <= 100:
            raise CustodyError(f"--copies must be a number of separate backups from {MIN_COPIES} to 100 "
                               f"(keep more than one)")
        record = self._ceremony(session_hex)
        session = record["session"]
        steps = self.port.db.custody_steps(session).get(self.port.me.name, {})
        if "downloaded" not in steps:
            raise CustodyError("export the key backup first: guardian backup export --out FILE")
        self._send_step(session, "backed-up", {"copies": copies,
                                               "fingerprint": steps["downloaded"]["detail"]["fingerprint"]})
        return {"ceremony": session.hex(), "copies": copies}

    def verify(self, session_hex: str | None, path: str, passphrase: str) -> dict:
        record = self._ceremony(session_hex)
        session = record["session"]
        steps = self.port.db.custody_steps(session).get(self.port.me.name, {})
        if "downloaded" not in steps:
            raise CustodyError("no backup of this ceremony was exported yet: guardian backup export --out FILE")
        backup = read_backup(Path(path))
        payload, _ = backup.open(passphrase)
        self.check_backup(record, backup.meta, payload)
        fingerprint = backup.fingerprint()
        expected = steps["downloaded"]["detail"]["fingerprint"]
        if fingerprint != expected:
            raise CustodyError(f"{path}: fingerprint {fingerprint} is not the one exported last ({expected}); "
                               f"verify the file `guardian backup export` wrote most recently")
        if "backed-up" not in steps:
            raise CustodyError("confirm the copies first: guardian backup confirm --copies N")
        self._send_step(session, "verified", {"fingerprint": fingerprint})
        return {"ceremony": session.hex(), "fingerprint": fingerprint, "guardian": self.port.me.name}

    def check_backup(self, record: dict, meta: BackupMeta, payload: bytes) -> None:
        """The backup restores exactly this guardian of this ceremony: identity, key shares, commitments."""
        where = "the backup"
        doc = _payload(payload)
        if meta.public_key != self.port.identity.public_key.hex() or \
                doc["identity_seed"] != bytes(self.port.identity.signing_key).hex():
            raise CustodyError(f"{where} holds the key of guardian {meta.guardian!r} "
                               f"({key_fingerprint(bytes.fromhex(meta.public_key))}), not this node's")
        session = record["session"]
        if meta.session != session.hex() or doc["ceremony"]["session"] != session.hex():
            raise CustodyError(f"{where} is of another election or ceremony ({meta.session[:16]}), not "
                               f"{session.hex()[:16]}")
        config = self._config(record)
        me = self._me(config)
        if meta.sequence != me or bytes.fromhex(meta.commitments_digest) != self._commitments_digest(record, me):
            raise CustodyError(f"{where}'s commitments are not guardian {me}'s in this ceremony")
        check_state_restores(config, me, doc["ceremony"]["state"], self._export_dir(record))

    # --- the peers' steps --------------------------------------------------------------------------

    def on_node_message(self, envelope: Envelope, sender: str) -> None:
        body = envelope.body if isinstance(envelope.body, dict) else {}
        session = body.get("ceremony")
        if not isinstance(session, bytes) or len(session) != 32:
            log.warning("%s from %s names no ceremony: ignored", envelope.type, sender)
            return
        record = self.port.db.ceremony(session)
        if envelope.type == "custody-sync" and "status" in body:
            self._report(session, sender, envelope.sender, body.get("status"), record)
        if record is None or record["status"] not in FINISHED:
            if envelope.type != "custody-sync":
                log.warning("%s from %s for a ceremony this node has not completed: ignored", envelope.type, sender)
            return
        config = self._config(record)
        if config.guardian_by_key(envelope.sender) is None:
            log.warning("%s from %s, who is not a guardian of that ceremony: ignored", envelope.type, sender)
            return
        if envelope.type == "custody-step":
            if self._apply_step(session, sender, body, envelope.encode(), synced=False):
                self._maybe_sign(session)
        elif envelope.type == "certificate-signature":
            self._peer_signature(session, sender, body, envelope.sender)
        else:
            self._on_sync(session, record, config, sender, envelope.sender, body)

    def _apply_step(self, session: bytes, sender: str, body: dict, raw: bytes, synced: bool) -> bool:
        """Keep a guardian's signed custody step; False when it is refused (logged) or brings nothing new.

        A step handed over by a custody sync may be one this node already has, or older than what it has:
        it is kept only when it is newer, and a later step only when it belongs to the export kept."""
        step, at, detail = body.get("step"), body.get("at_ms"), body.get("detail")
        if step not in STEPS or isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**53 \
                or not isinstance(detail, dict) or len(json.dumps(detail)) > 1000:
            log.warning("malformed custody step from %s: ignored", sender)
            return False
        have = self.port.db.custody_steps(session).get(sender, {})
        if synced:
            kept = have.get(step)
            if kept is not None and round(kept["at"] * 1000) >= at:
                return False
            exported = have.get("downloaded")
            if step != "downloaded" and exported is not None and (
                    round(exported["at"] * 1000) > at
                    or detail.get("fingerprint") != exported["detail"].get("fingerprint")):
                return False           # a step of an older export of that guardian's key
        needed = STEPS[STEPS.index(step) - 1] if step != "downloaded" else None
        if needed is not None and needed not in have:
            log.warning("custody step %s from %s before %s: ignored", step, sender, needed)
            return False
        if step == "downloaded":
            self.port.db.clear_custody_steps(session, sender, ("backed-up", "verified"))
        self.port.db.add_custody_step(session, sender, step, at / 1000, detail, raw)
        return True

    def _peer_signature(self, session: bytes, sender: str, body: dict, key: bytes) -> None:
        digest, signature = body.get("digest"), body.get("signature")
        if not (isinstance(digest, bytes) and len(digest) == 32 and isinstance(signature, bytes)
                and len(signature) == 64):
            log.warning("malformed certificate signature from %s: ignored", sender)
            return
        if not _signed(key, digest, signature):
            log.warning("certificate signature from %s does not verify: ignored", sender)
            return
        self.port.db.add_certificate_signature(session, sender, digest, signature)
        self._maybe_write(session)

    # --- custody sync: what a peer missed (a node restored from a backup, say) ---------------------------
    #
    # Peers send a node's messages again from where that node's database says it stopped, but never its own
    # old messages: a node restored from a backup would never see its own custody steps, nor signatures it
    # gave. So when a link comes up, each side tells the other, for each finished ceremony, its status and a
    # digest of the custody it holds; a peer whose digest differs is handed the signed steps and the
    # certificate signatures, each checked on receipt against the guardians' keys like any other.

    def links_changed(self) -> None:
        links = self.port.links()
        for entry in self.port.roster.entries:
            link = links.get(entry.sequence)
            if entry.sequence == self.port.me.sequence or link is None:
                continue
            if not link.connected:
                self._up.discard(entry.sequence)
            elif entry.sequence not in self._up:
                self._up.add(entry.sequence)
                self._answered = {k: v for k, v in self._answered.items() if k[0] != entry.name}
                for record in self.port.db.ceremonies(FINISHED):
                    self.port.send("custody-sync", {"ceremony": record["session"], "status": record["status"],
                                                    "have": self._state_digest(record["session"])},
                                   to=entry.public_key)

    def _state_digest(self, session: bytes) -> bytes:
        steps = {name: {s: round(v["at"] * 1000) for s, v in mine.items()}
                 for name, mine in self.port.db.custody_steps(session).items()}
        signatures = {name: d.hex() for name, (d, _) in self.port.db.certificate_signatures(session).items()}
        return hashlib.sha256(codec.canonical_bytes({"steps": steps, "signatures": signatures})).digest()

    def _report(self, session: bytes, sender: str, key: bytes, status: object, record: dict | None) -> None:
        """A peer says the ceremony is finished on its node; a proposal this node holds may be one it missed."""
        if status not in FINISHED:
            log.warning("custody sync from %s with a status %r: ignored", sender, str(status)[:40])
            return
        self.reports.setdefault(session, {})[key] = status
        if record is not None and record["status"] == "proposed":
            self.check_finished(session)

    def check_finished(self, session: bytes) -> None:
        """Every other guardian reported the ceremony finished: tell whoever holds its proposal."""
        record = self.port.db.ceremony(session)
        if record is None or record["status"] != "proposed" or self.finished_elsewhere is None:
            return
        try:
            config = self._config(record)
        except GuardianError:
            return
        reports = self.reports.get(session, {})
        others = [g for g in config.guardians if g.public_key != self.port.identity.public_key]
        if others and all(g.public_key in reports for g in others):
            self.finished_elsewhere(session, {g.name: reports[g.public_key] for g in others})

    def _on_sync(self, session: bytes, record: dict, config: ElectionConfig, sender: str, key: bytes,
                 body: dict) -> None:
        if set(body) == {"ceremony", "status", "have"}:
            have = body["have"]
            if not isinstance(have, bytes) or len(have) != 32:
                log.warning("custody sync from %s: malformed digest: ignored", sender)
                return
            mine = self._state_digest(session)
            if have != mine and self._answered.get((sender, session)) != mine:
                self._answered[(sender, session)] = mine
                self.port.send("custody-sync", {"ceremony": session, **self._handover(session, config)}, to=key)
        elif set(body) == {"ceremony", "steps", "signatures"}:
            self._take_over(session, config, sender, body["steps"], body["signatures"])
        else:
            log.warning("custody sync from %s: malformed: ignored", sender)

    def _handover(self, session: bytes, config: ElectionConfig) -> dict:
        """This node's custody of a ceremony: every guardian's signed steps and certificate signatures."""
        names = {g.name: g.sequence for g in config.guardians}
        signatures = [{"sequence": names[name], "digest": d, "signature": sig}
                      for name, (d, sig) in self.port.db.certificate_signatures(session).items() if name in names]
        return {"steps": self._signed_steps(session)[:MAX_SYNCED], "signatures": signatures[:MAX_SYNCED]}

    def _signed_steps(self, session: bytes) -> list[bytes]:
        """The signed message of each custody step this node keeps: its peers' from its inbox, its own from
        its outbox (the node's log holds both)."""
        steps = self.port.db.custody_steps(session)
        names = {e.public_key: e.name for e in self.port.roster.entries}
        found: dict[tuple[str, str], bytes] = {}
        for raw, _ in self.port.db.session_log(NODE_SESSION):
            try:
                envelope = decode_envelope(raw, 64 * 2**20)
            except EnvelopeError:
                continue
            body = envelope.body if isinstance(envelope.body, dict) else {}
            name = names.get(envelope.sender)
            if envelope.type != "custody-step" or body.get("ceremony") != session or name is None:
                continue
            kept = steps.get(name, {}).get(body.get("step"))
            if kept is not None and round(kept["at"] * 1000) == body.get("at_ms"):
                found[(name, body["step"])] = raw
        return list(found.values())

    def _take_over(self, session: bytes, config: ElectionConfig, sender: str, steps: object,
                   signatures: object) -> None:
        if not isinstance(steps, list) or not isinstance(signatures, list) or len(steps) > MAX_SYNCED \
                or len(signatures) > MAX_SYNCED:
            log.warning("custody sync from %s: malformed: ignored", sender)
            return
        received = []
        for raw in steps:
            try:
                if not isinstance(raw, bytes) or len(raw) > MAX_SYNCED_ENVELOPE:
                    raise EnvelopeError("malformed", "not a custody step of at most 4 KiB")
                envelope = decode_envelope(raw, MAX_SYNCED_ENVELOPE)
                guardian = config.guardian_by_key(envelope.sender)
                if guardian is None:
                    raise EnvelopeError("unknown key", "not signed by a guardian of the ceremony")
                envelope.verify()
                body = envelope.body if isinstance(envelope.body, dict) else {}
                if envelope.type != "custody-step" or envelope.session != NODE_SESSION \
                        or body.get("ceremony") != session:
                    raise EnvelopeError("malformed", "not a custody step of this ceremony")
            except EnvelopeError as e:
                log.warning("custody sync from %s: a step refused (%s): ignored", sender, e)
                continue
            received.append((guardian.name, envelope.seq, STEPS.index(body["step"]) if body.get("step") in STEPS
                             else 0, body, raw))
        changed = False
        for name, _, _, body, raw in sorted(received, key=lambda r: (r[0], r[1], r[2])):
            changed |= self._apply_step(session, name, body, raw, synced=True)
        current = self._current_digest(session, config)
        kept = self.port.db.certificate_signatures(session)
        by_sequence = {g.sequence: g for g in config.guardians}
        for s in signatures:
            g = by_sequence.get(s.get("sequence")) if isinstance(s, dict) else None
            digest, signature = (s.get("digest"), s.get("signature")) if g is not None else (None, None)
            if not (isinstance(digest, bytes) and len(digest) == 32 and isinstance(signature, bytes)
                    and len(signature) == 64 and _signed(g.public_key, digest, signature)):
                log.warning("custody sync from %s: a certificate signature refused: ignored", sender)
                continue
            ours = kept.get(g.name)
            if ours is not None and (ours[0] == digest or ours[0] == current):
                continue               # the same, or the one that signs the certificate as it stands
            if ours is None or digest == current:
                self.port.db.add_certificate_signature(session, g.name, digest, signature)
                changed = True
        if changed:
            log.info("custody of ceremony %s brought up to date by %s", session.hex()[:16], sender)
            self._maybe_sign(session)
            self._maybe_write(session)

    def _current_digest(self, session: bytes, config: ElectionConfig) -> bytes | None:
        record = self.port.db.ceremony(session)
        if record is None or not self.complete(session, config):
            return None
        return body_digest(self.certificate_body(record))

    # --- the table and the certificate -----------------------------------------------------------------

    def table(self, session: bytes, config: ElectionConfig) -> dict[str, dict]:
        steps = self.port.db.custody_steps(session)
        return {g.name: {"generated": True, **{s: s in steps.get(g.name, {}) for s in STEPS}}
                for g in config.guardians}

    def complete(self, session: bytes, config: ElectionConfig) -> bool:
        steps = self.port.db.custody_steps(session)
        return all("verified" in steps.get(g.name, {}) for g in config.guardians)

    def certificate_body(self, record: dict) -> dict:
        """The certificate's content, from facts every node shares: the config, the outcome, the signed steps."""
        session, config = record["session"], self._config(record)
        steps = self.port.db.custody_steps(session)
        outcome = record["outcome"]
        guardians = []
        for g in config.guardians:
            mine = steps.get(g.name, {})
            guardians.append({
                "sequence": g.sequence, "name": g.name, "public_key": g.public_key.hex(),
                "key_fingerprint": key_fingerprint(g.public_key),
                "commitments_sha256": self._commitments_digest(record, g.sequence).hex(),
                "custody": {s: {"at": _utc(mine[s]["at"]), **mine[s]["detail"]} for s in STEPS if s in mine},
            })
        body = {"format": CERTIFICATE_FORMAT, "election": config.election, "ceremony": session.hex(),
                "n": config.n, "k": config.k, "h_e": outcome.get("h_e"),
                "joint_key_sha256": outcome.get("joint_key_sha256"),
                "parameters": "ElectionGuard 2.1 standard (4096-bit p, 256-bit q)",
                "guardians": guardians,
                "verification": "every guardian exported, backed up and verified its key backup",
                "completed": _utc(max(s["verified"]["at"] for s in steps.values() if "verified" in s))}
        if config.replaces:
            body["replaces"] = config.replaces.hex()
        return body

    def _maybe_sign(self, session: bytes) -> None:
        record = self.port.db.ceremony(session)
        if record is None or record["status"] != "complete":
            return
        config = self._config(record)
        if not self.complete(session, config):
            return
        digest = body_digest(self.certificate_body(record))
        mine = self.port.db.certificate_signatures(session).get(self.port.me.name)
        if mine is not None and mine[0] == digest:
            return                 # signed already; a new export and verification change the body: sign that
        signature = self.port.identity.sign(certificate_message(digest))
        self.port.send("certificate-signature", {"ceremony": session, "digest": digest, "signature": signature})
        self.port.db.add_certificate_signature(session, self.port.me.name, digest, signature)
        log.info("custody of ceremony %s complete; certificate signed", session.hex()[:16])
        self._maybe_write(session)

    def _maybe_write(self, session: bytes) -> None:
        record = self.port.db.ceremony(session)
        if record is None:
            return
        certificate = self.certificate(record, strict=False)
        if certificate is None:
            return
        write_certificate(self._export_dir(record), certificate)

    def certificate(self, record: dict, strict: bool = True) -> dict | None:
        """The certificate with every guardian's signature, or (strict) a CustodyError saying what is missing."""
        session, config = record["session"], self._config(record)
        if not self.complete(session, config):
            if not strict:
                return None
            table = self.table(session, config)
            waiting = [f"{name} ({', '.join(s for s in STEPS if not done[s])})" for name, done in table.items()
                       if not done["verified"]]
            raise CustodyError("custody is not complete; waiting for " + "; ".join(waiting))
        body = self.certificate_body(record)
        digest = body_digest(body)
        signatures = self.port.db.certificate_signatures(session)
        other = [name for name, (d, _) in signatures.items() if d != digest]
        missing = [g.name for g in config.guardians if g.name not in signatures]
        if other or missing:
            if not strict:
                return None
            raise CustodyError("the certificate is not signed by every guardian yet: "
                               + "; ".join([f"waiting for {', '.join(missing)}"] * bool(missing)
                                           + [f"{', '.join(other)} signed a different certificate"] * bool(other)))
        certificate = {"certificate": body, "sha256": digest.hex(),
                       "signatures": [{"sequence": g.sequence, "name": g.name,
                                       "signature": signatures[g.name][1].hex()} for g in config.guardians]}
        if record["status"] == "superseded":
            certificate["status"] = f"superseded by ceremony {record['outcome'].get('superseded_by', '?')}"
        return certificate

    def show_certificate(self, session_hex: str | None) -> dict:
        return self.certificate(self._ceremony(session_hex))

    def status(self, session_hex: str | None) -> dict:
        record = self._ceremony(session_hex)
        config = self._config(record)
        session = record["session"]
        steps = self.port.db.custody_steps(session)
        return {"ceremony": session.hex(), "status": record["status"],
                "table": self.table(session, config),
                "steps": steps, "complete": self.complete(session, config),
                "certificate": self.certificate(record, strict=False) is not None}

    def superseded(self, old: bytes, new: bytes) -> None:
        """The keys of `old` are replaced by those of `new`: mark it in the log and in its certificate."""
        record = self.port.db.ceremony(old)
        if record is None or record["status"] != "complete":
            return
        self.port.db.set_ceremony_status(old, "superseded", {**record["outcome"], "superseded_by": new.hex()})
        record = self.port.db.ceremony(old)
        certificate = self.certificate(record, strict=False)
        if certificate is not None:
            write_certificate(self._export_dir(record), certificate)
        log.info("ceremony %s superseded by %s", old.hex()[:16], new.hex()[:16])


# --- pure helpers, for the node and for `guardian restore` / `guardian certificate verify` ---------------

def _signed(key: bytes, digest: bytes, signature: bytes) -> bool:
    """Whether `signature` is the guardian's (its identity key) on the certificate body of SHA-256 `digest`."""
    try:
        nacl.signing.VerifyKey(key).verify(certificate_message(digest), signature)
        return True
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError, TypeError):
        return False


def _payload(payload: bytes) -> dict:
    try:
        doc = json.loads(payload)
    except ValueError:
        raise CustodyError("the backup's contents are not a key backup payload") from None
    if not isinstance(doc, dict) or doc.get("format") != PAYLOAD_FORMAT or \
            set(doc) != {"format", "identity_seed", "node", "ceremony"}:
        raise CustodyError(f"the backup's contents are not a {PAYLOAD_FORMAT!r}")
    return doc


def parse_payload(payload: bytes) -> dict:
    return _payload(payload)


def check_state_restores(config: ElectionConfig, me: int, state: dict, export: Path | None = None,
                         public_files: dict[str, bytes] | None = None) -> None:
    """The guardian state decrypts: its commitments are its published ones, and every share it received
    matches the sender's published commitments (g^P_j(i) = prod K_j,m^(i^m), eq 28 of spec 3.2.2)."""
    group = STANDARD

    def public_key(i: int):
        rel = layout.guardian_file(i)
        raw = public_files[rel] if public_files is not None else (export / rel).read_bytes()
        return codec.guardian_key_from_json(group, codec.load_json(raw, rel), f"guardian {i} public key")

    try:
        guardian = Guardian(Transcript(config), me, state)
        vote, data = guardian.decryption_keys()
        secret = guardian._secret()
    except (KeyError, ValueError, TypeError, GuardianError) as e:
        raise CustodyError(f"the backup's key shares are incomplete or damaged ({type(e).__name__})") from None
    mine = public_key(me)
    if [pow(group.g, int(a), group.p) for a in secret.coefficients] != [mpz(c) for c in mine.commitments]:
        raise CustodyError(f"the backup's secret polynomial does not match guardian {me}'s published commitments")
    for j in range(1, config.n + 1):
        pk = public_key(j)
        for key, commitments in ((vote, pk.commitments), (data, pk.data_commitments)):
            share = key.received.get(j)
            if share is None or pow(group.g, int(share), group.p) != commitment_at(group, commitments, me):
                raise CustodyError(f"the backup's share from guardian {j} does not match its published "
                                   f"commitments")
