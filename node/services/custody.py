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
written beside the ceremony's export.

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

import nacl.exceptions
import nacl.signing
from gmpy2 import mpz

from node.crypto.errors import GuardianError, InputError
from node.crypto.keys import commitment_at
from node.crypto.params import STANDARD
from node.crypto.sealing import check_passphrase
from node.custody.backup_file import BackupMeta, read_backup, write_backup
from node.identity import fingerprint as key_fingerprint
from node.protocol.ceremony import Guardian, Transcript
from node.protocol.election_config import ElectionConfig, parse_election_config
from node.protocol.envelope import Envelope
from node.record import codec, layout
from node.services.port import Port, Service
from node.storage.state_box import StateBox

log = logging.getLogger("guardian.custody")
STEPS = ("downloaded", "backed-up", "verified")
NODE_TYPES = frozenset({"custody-step", "certificate-signature"})
PAYLOAD_FORMAT = "guardian-node key backup payload v1"
CERTIFICATE_FORMAT = "guardian-node ceremony certificate v1"
CERTIFICATE_JSON, CERTIFICATE_TEXT = "certificate.json", "certificate.txt"
SIGNING_TAG = b"guardian-node certificate\x00"
MIN_COPIES = 2


class CustodyError(InputError):
    """A custody step refused: the message says which and why."""


def certificate_message(digest: bytes) -> bytes:
    """What each guardian's identity key signs: a domain tag and the certificate body's SHA-256."""
    return SIGNING_TAG + digest


def body_digest(body: dict) -> bytes:
    return hashlib.sha256(codec.canonical_bytes(body)).digest()


class Custody(Service):
    name = "custody"
    node_types = NODE_TYPES

    def __init__(self, port: Port, box: StateBox) -> None:
        self.port, self.box = port, box

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
        self.port.send("custody-step", {"ceremony": session, "step": step, "at_ms": at_ms, "detail": detail})
        self.port.db.add_custody_step(session, self.port.me.name, step, at_ms / 1000, detail, None)
        self._maybe_sign(session)

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
        record = self.port.db.ceremony(session)
        if record is None or record["status"] not in ("complete", "superseded"):
            log.warning("%s from %s for a ceremony this node has not completed: ignored", envelope.type, sender)
            return
        config = self._config(record)
        if config.guardian_by_key(envelope.sender) is None:
            log.warning("%s from %s, who is not a guardian of that ceremony: ignored", envelope.type, sender)
            return
        if envelope.type == "custody-step":
            self._peer_step(session, sender, body, envelope)
        else:
            self._peer_signature(session, sender, body, envelope.sender)

    def _peer_step(self, session: bytes, sender: str, body: dict, envelope: Envelope) -> None:
        step, at, detail = body.get("step"), body.get("at_ms"), body.get("detail")
        if step not in STEPS or isinstance(at, bool) or not isinstance(at, int) or not 0 <= at < 2**53 \
                or not isinstance(detail, dict) or len(json.dumps(detail)) > 1000:
            log.warning("malformed custody step from %s: ignored", sender)
            return
        have = self.port.db.custody_steps(session).get(sender, {})
        needed = STEPS[STEPS.index(step) - 1] if step != "downloaded" else None
        if needed is not None and needed not in have:
            log.warning("custody step %s from %s before %s: ignored", step, sender, needed)
            return
        if step == "downloaded":
            self.port.db.clear_custody_steps(session, sender, ("backed-up", "verified"))
        self.port.db.add_custody_step(session, sender, step, at / 1000, detail, envelope.encode())
        self._maybe_sign(session)

    def _peer_signature(self, session: bytes, sender: str, body: dict, key: bytes) -> None:
        digest, signature = body.get("digest"), body.get("signature")
        if not (isinstance(digest, bytes) and len(digest) == 32 and isinstance(signature, bytes)
                and len(signature) == 64):
            log.warning("malformed certificate signature from %s: ignored", sender)
            return
        try:
            nacl.signing.VerifyKey(key).verify(certificate_message(digest), signature)
        except nacl.exceptions.BadSignatureError:
            log.warning("certificate signature from %s does not verify: ignored", sender)
            return
        self.port.db.add_certificate_signature(session, sender, digest, signature)
        self._maybe_write(session)

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


def write_certificate(directory: Path, certificate: dict) -> None:
    record = layout.Record(directory)
    digests = {CERTIFICATE_JSON: record.write(CERTIFICATE_JSON, json.dumps(certificate, indent=1).encode() + b"\n"),
               CERTIFICATE_TEXT: record.write(CERTIFICATE_TEXT, certificate_text(certificate).encode())}
    record.update_index((), digests)


def certificate_text(certificate: dict) -> str:
    body = certificate["certificate"]
    lines = ["KEY CEREMONY CERTIFICATE", "",
             f"Election:   {body['election']}",
             f"Ceremony:   {body['ceremony']}",
             f"Guardians:  n = {body['n']}, any k = {body['k']} decrypt",
             f"H_E:        {body['h_e']}",
             f"Joint key:  SHA-256 {body['joint_key_sha256']}...",
             f"Parameters: {body['parameters']}",
             f"Completed:  {body['completed']}"]
    if body.get("replaces"):
        lines.append(f"Replaces:   ceremony {body['replaces']} (its keys are superseded)")
    if certificate.get("status"):
        lines.append(f"STATUS:     {certificate['status'].upper()}")
    lines += ["", "Guardians, their identity keys and custody steps:"]
    for g in body["guardians"]:
        lines.append(f"  {g['sequence']:>3}. {g['name']}  identity {g['key_fingerprint']}")
        lines.append(f"       commitments SHA-256 {g['commitments_sha256']}")
        for step in STEPS:
            s = g["custody"].get(step)
            if s:
                extra = ", ".join(f"{k} {v}" for k, v in s.items() if k != "at")
                lines.append(f"       {step:<11} {s['at']}  {extra}")
    lines += ["", f"{body['verification']}.", f"Certificate SHA-256: {certificate['sha256']}",
              "Signed by every guardian's identity key (Ed25519):"]
    for s in certificate["signatures"]:
        lines.append(f"  {s['sequence']:>3}. {s['name']:<20} {s['signature'][:32]}...")
    lines.append("")
    lines.append("Check it: guardian certificate verify certificate.json --record RECORD")
    return "\n".join(lines) + "\n"


def verify_certificate(certificate: object, record_dir: Path | None = None) -> list[str]:
    """Every check of `guardian certificate verify`; raises CustodyError naming the first failure."""
    if not isinstance(certificate, dict) or not {"certificate", "sha256", "signatures"} <= set(certificate):
        raise CustodyError("not a ceremony certificate (certificate, sha256, signatures)")
    body = certificate["certificate"]
    if not isinstance(body, dict) or body.get("format") != CERTIFICATE_FORMAT:
        raise CustodyError(f"not a {CERTIFICATE_FORMAT!r}")
    digest = body_digest(body)
    if certificate["sha256"] != digest.hex():
        raise CustodyError("the certificate body does not match its SHA-256: it was altered")
    guardians = body.get("guardians")
    if not isinstance(guardians, list) or len(guardians) != body.get("n"):
        raise CustodyError("the certificate must list its n guardians")
    signatures = {s.get("sequence"): s for s in certificate["signatures"] if isinstance(s, dict)}
    done = []
    for g in guardians:
        s = signatures.get(g.get("sequence"))
        if s is None:
            raise CustodyError(f"guardian {g.get('sequence')} ({g.get('name')}) has not signed the certificate")
        try:
            nacl.signing.VerifyKey(bytes.fromhex(g["public_key"])).verify(certificate_message(digest),
                                                                           bytes.fromhex(s["signature"]))
        except (ValueError, TypeError, KeyError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            raise CustodyError(f"guardian {g.get('sequence')} ({g.get('name')})'s signature does not verify") from None
        if set(g.get("custody", {})) != set(STEPS):
            raise CustodyError(f"guardian {g['sequence']} ({g['name']}) did not complete every custody step")
        done.append(f"signature of guardian {g['sequence']} ({g['name']}, {g['key_fingerprint']}) verifies")
    if record_dir is not None:
        record = layout.Record(record_dir)
        h_e = codec.hashes_ext_from_json(record.read_json(layout.HASHES_EXT))
        if h_e.hex() != body["h_e"]:
            raise CustodyError(f"{record_dir}: the record's H_E is not the certificate's: another election or key")
        for g in guardians:
            rel = layout.guardian_file(g["sequence"])
            if hashlib.sha256(record.read(rel)).hexdigest() != g["commitments_sha256"]:
                raise CustodyError(f"{record_dir}: guardian {g['sequence']}'s public key file is not the one certified")
        joint = hashlib.sha256(record.read(layout.JOINT_KEY)).hexdigest()
        done.append(f"the record's H_E and every guardian's public key file match (joint key file {joint[:16]})")
    return done


def _utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))
