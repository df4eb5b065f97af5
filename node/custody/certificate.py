"""The ceremony certificate as a file: its body digest, what each guardian signs, its text, and its checks.

When every guardian of a key ceremony has exported, confirmed and verified its key backup (seed 000),
each node signs the same certificate body; with all n signatures the certificate is written beside the
ceremony's export (certificate.json, certificate.txt) and travels with the record started from it.
These checks are pure: the running node (node/services/custody.py), the record's commands (the custody
gate, node/record/custody_gate.py), `guardian certificate verify` and the verifier all use them.

A certificate is "for" an election when its H_E is the record's, each guardian's public key file is the
one certified, and (where the record carries the ceremony's election_config.json, or the caller knows
the config) the ceremony, n, k and every guardian's identity key are the config's.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import nacl.exceptions
import nacl.signing

from node.crypto.errors import GuardianError, InputError
from node.identity import fingerprint as key_fingerprint
from node.protocol.election_config import ElectionConfig, parse_election_config
from node.record import codec, layout

STEPS = ("downloaded", "backed-up", "verified")
CERTIFICATE_FORMAT = "guardian-node ceremony certificate v1"
CERTIFICATE_JSON, CERTIFICATE_TEXT = "certificate.json", "certificate.txt"
ELECTION_CONFIG = "election_config.json"
SIGNING_TAG = b"guardian-node certificate\x00"
MAX_CERTIFICATE_BYTES = 4 * 2**20


class CustodyError(InputError):
    """A custody step or a certificate refused: the message says which and why."""


def certificate_message(digest: bytes) -> bytes:
    """What each guardian's identity key signs: a domain tag and the certificate body's SHA-256."""
    return SIGNING_TAG + digest


def body_digest(body: dict) -> bytes:
    return hashlib.sha256(codec.canonical_bytes(body)).digest()


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def missing_steps(guardians, steps: dict[str, dict]) -> list[str]:
    """'name (step, step)' for each guardian (with a .name) that has not done every custody step, in order."""
    return [f"{g.name} ({', '.join(s for s in STEPS if s not in steps.get(g.name, {}))})" for g in guardians
            if not all(s in steps.get(g.name, {}) for s in STEPS)]


def read_certificate(path: Path) -> dict:
    """certificate.json as a dict; CustodyError when it cannot be read or is not JSON."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise CustodyError(f"cannot read {path}: {e.strerror}") from None
    if len(raw) > MAX_CERTIFICATE_BYTES:
        raise CustodyError(f"{path}: too large for a ceremony certificate")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise CustodyError(f"{path} is not JSON") from None


def certificate_bytes(certificate: dict) -> bytes:
    """The certificate as a file holds it, wherever it is written (the record, `--out`, the page)."""
    return json.dumps(certificate, indent=1).encode() + b"\n"


def write_certificate(directory: Path, certificate: dict) -> None:
    record = layout.Record(directory)
    digests = {CERTIFICATE_JSON: record.write(CERTIFICATE_JSON, certificate_bytes(certificate)),
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


def superseded_by(certificate: dict) -> str | None:
    """The ceremony whose keys replaced this certificate's, as its node marked it (outside the signed body)."""
    status = certificate.get("status") if isinstance(certificate, dict) else None
    if isinstance(status, str) and status.startswith("superseded"):
        return status.rpartition(" ")[2]
    return None


def _guardian(g: object, i: int) -> dict:
    if not isinstance(g, dict) or not isinstance(g.get("sequence"), int) or isinstance(g.get("sequence"), bool) \
            or not isinstance(g.get("name"), str) or not isinstance(g.get("public_key"), str) \
            or not isinstance(g.get("commitments_sha256"), str) or not isinstance(g.get("custody"), dict):
        raise CustodyError(f"the certificate's guardian #{i} is malformed (sequence, name, public_key, "
                           f"commitments_sha256, custody)")
    return g


def verify_certificate(certificate: object, record_dir: Path | None = None,
                       config: ElectionConfig | None = None) -> list[str]:
    """Every check of `guardian certificate verify`; raises CustodyError naming the first failure.

    With `record_dir`, the certificate must be for that record's election (its H_E, every guardian's public
    key file, and the ceremony's election_config.json when the record holds it); with `config`, for that
    ceremony and those guardians' identity keys.
    """
    if not isinstance(certificate, dict) or not {"certificate", "sha256", "signatures"} <= set(certificate):
        raise CustodyError("not a ceremony certificate (certificate, sha256, signatures)")
    body = certificate["certificate"]
    if not isinstance(body, dict) or body.get("format") != CERTIFICATE_FORMAT:
        raise CustodyError(f"not a {CERTIFICATE_FORMAT!r}")
    try:
        digest = body_digest(body)
    except (GuardianError, TypeError, ValueError):
        raise CustodyError("the certificate body is not plain JSON data") from None
    if certificate["sha256"] != digest.hex():
        raise CustodyError("the certificate body does not match its SHA-256: it was altered")
    guardians = body.get("guardians")
    n = body.get("n")
    if not isinstance(guardians, list) or isinstance(n, bool) or not isinstance(n, int) or len(guardians) != n:
        raise CustodyError("the certificate must list its n guardians")
    guardians = [_guardian(g, i) for i, g in enumerate(guardians, 1)]
    if [g["sequence"] for g in guardians] != list(range(1, n + 1)):
        raise CustodyError(f"the certificate's guardians must be numbered 1..{n} in order")
    if not isinstance(certificate["signatures"], list):
        raise CustodyError("the certificate's signatures must be a list")
    signatures = {s.get("sequence"): s for s in certificate["signatures"] if isinstance(s, dict)}
    done = []
    for g in guardians:
        who = f"guardian {g['sequence']} ({g['name']})"
        s = signatures.get(g["sequence"])
        if s is None:
            raise CustodyError(f"{who} has not signed the certificate")
        try:
            nacl.signing.VerifyKey(bytes.fromhex(g["public_key"])).verify(certificate_message(digest),
                                                                           bytes.fromhex(s["signature"]))
        except (ValueError, TypeError, KeyError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
            raise CustodyError(f"{who}'s signature does not verify") from None
        if set(g["custody"]) != set(STEPS):
            raise CustodyError(f"{who} did not complete every custody step")
        done.append(f"signature of {who[:-1]}, {key_fingerprint(bytes.fromhex(g['public_key']))}) verifies")
    if record_dir is not None:
        done += _matches_record(body, guardians, Path(record_dir), config is not None)
    if config is not None:
        _matches_config(body, guardians, config, "the node's ceremony")
        done.append(f"the ceremony, n, k and every guardian's identity key are those of ceremony "
                    f"{config.session.hex()[:16]}")
    return done


def _matches_record(body: dict, guardians: list[dict], root: Path, config_known: bool) -> list[str]:
    record = layout.Record(root)
    try:
        h_e = codec.hashes_ext_from_json(record.read_json(layout.HASHES_EXT))
    except GuardianError as e:
        raise CustodyError(f"{root}: cannot read the record's H_E: {e}") from None
    if h_e.hex() != body.get("h_e"):
        raise CustodyError(f"{root}: the record's H_E is not the certificate's: another election or key")
    for g in guardians:
        rel = layout.guardian_file(g["sequence"])
        try:
            data = record.read(rel)
        except GuardianError as e:
            raise CustodyError(str(e)) from None
        if hashlib.sha256(data).hexdigest() != g["commitments_sha256"]:
            raise CustodyError(f"{root}: guardian {g['sequence']}'s public key file is not the one certified")
    done = []
    if record.exists(layout.JOINT_KEY):
        joint = hashlib.sha256(record.read(layout.JOINT_KEY)).hexdigest()
        done.append(f"the record's H_E and every guardian's public key file match (joint key file {joint[:16]})")
    if record.exists(ELECTION_CONFIG):
        data = record.read(ELECTION_CONFIG)
        try:
            config = parse_election_config(data)
        except GuardianError as e:
            raise CustodyError(f"{root}: {ELECTION_CONFIG} does not parse: {e}") from None
        _matches_config(body, guardians, config, f"{root}: the record's {ELECTION_CONFIG}")
        done.append(f"the record's {ELECTION_CONFIG} names this ceremony and every guardian's identity key")
    elif not config_known:
        done.append(f"the record holds no {ELECTION_CONFIG}: the guardians' identity keys are the certificate's own")
    return done


def _matches_config(body: dict, guardians: list[dict], config: ElectionConfig, where: str) -> None:
    if body.get("ceremony") != config.session.hex():
        raise CustodyError(f"{where} is ceremony {config.session.hex()[:16]}, the certificate is of "
                           f"{str(body.get('ceremony'))[:16]}")
    if (body.get("n"), body.get("k")) != (config.n, config.k):
        raise CustodyError(f"{where} has n={config.n}, k={config.k}; the certificate says n={body.get('n')}, "
                           f"k={body.get('k')}")
    for g, c in zip(guardians, config.guardians):
        if (g["name"], g["public_key"]) != (c.name, c.public_key.hex()):
            raise CustodyError(f"{where}: guardian {c.sequence} is {c.name} ({key_fingerprint(c.public_key)}), "
                               f"not the certificate's {g['name']}")
