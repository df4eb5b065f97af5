"""The ceremony certificate's checks (node/custody/certificate.py), the custody gate and rehearsal note of a
record (node/record/custody_gate.py), the node's custody refusal (node/services/decryption_policy.py), the
rehearsal flag of a decryption request and `[decryption] allow_rehearsal`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nacl.signing
import pytest

from node.config import ConfigError, load_node_config
from node.custody.certificate import (
    CERTIFICATE_JSON, CustodyError, body_digest, certificate_message, verify_certificate, write_certificate,
)
from node.protocol.decryption import parse_request
from node.protocol.election_config import ConfigGuardian, ElectionConfig
from node.record import layout
from node.record.custody_gate import REHEARSAL, NotCertified, certified, custody_warnings, gate, rehearsal_entries
from node.services.decryption_policy import custody_refusal
from node.testing.certified import certified_export, sign_certificate

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def made(standard_election, tmp_path_factory):
    return certified_export(tmp_path_factory.mktemp("certified") / "node", standard_election)


@pytest.fixture
def export(made, tmp_path):
    """A fresh copy of the certified export, for a test to alter."""
    copy = tmp_path / "export"
    shutil.copytree(made.export, copy)
    return copy


def certificate_of(root) -> dict:
    return json.loads((root / CERTIFICATE_JSON).read_text())


def resign(certificate: dict, keys) -> dict:
    digest = body_digest(certificate["certificate"])
    certificate["sha256"] = digest.hex()
    for s, key in zip(certificate["signatures"], keys):
        s["signature"] = key.sign(certificate_message(digest)).signature.hex()
    return certificate


# --- verify_certificate -------------------------------------------------------------------------------------


def test_a_certified_export_verifies_against_its_record_and_its_config(made):
    lines = verify_certificate(made.certificate, made.export, made.config)
    listed = made.certificate["certificate"]["guardians"]
    assert [line for line in lines if line.startswith("signature of guardian")] == [
        f"signature of guardian {g['sequence']} ({g['name']}, {g['key_fingerprint']}) verifies" for g in listed]
    assert any("the record's H_E and every guardian's public key file match" in line for line in lines)
    assert any("election_config.json names this ceremony" in line for line in lines)
    assert certified(made.export) == made.certificate


@pytest.mark.parametrize("change, message", [
    (lambda c, m: c["certificate"]["guardians"][1].update(name="mallory"), "it was altered"),
    (lambda c, m: c["signatures"].pop(2), r"guardian 3 \(g3\) has not signed the certificate"),
    (lambda c, m: c["signatures"][0].update(signature=c["signatures"][1]["signature"]),
     r"guardian 1 \(g1\)'s signature does not verify"),
    (lambda c, m: c["signatures"][0].update(signature="zz"), r"guardian 1 \(g1\)'s signature does not verify"),
    (lambda c, m: resign(c, m.keys) if c["certificate"]["guardians"][4]["custody"].pop("verified") else None,
     r"guardian 5 \(g5\) did not complete every custody step"),
    (lambda c, m: c.update(signatures="none"), "signatures must be a list"),
    (lambda c, m: resign(c, m.keys) if c["certificate"].update(guardians=c["certificate"]["guardians"][:4]) is None
     else None, "its n guardians"),
    (lambda c, m: resign(c, m.keys) if c["certificate"]["guardians"].__setitem__(0, "g1") is None else None,
     "guardian #1 is malformed"),
])
def test_an_altered_certificate_is_refused_naming_the_first_failure(made, change, message):
    certificate = json.loads(json.dumps(made.certificate))
    change(certificate, made)
    with pytest.raises(CustodyError, match=message):
        verify_certificate(certificate, made.export)


def test_a_certificate_is_for_one_record_its_key_files_and_its_guardians_identity_keys(made, export, tmp_path):
    # another election's record
    other = tmp_path / "other"
    shutil.copytree(export, other)
    (other / layout.HASHES_EXT).write_text(json.dumps({"h_e": "AB" * 32}))
    with pytest.raises(CustodyError, match="the record's H_E is not the certificate's: another election or key"):
        verify_certificate(made.certificate, other)
    # a guardian's public key file that is not the certified one
    rel = layout.guardian_file(2)
    (export / rel).write_bytes((export / rel).read_bytes() + b" ")
    with pytest.raises(CustodyError, match="guardian 2's public key file is not the one certified"):
        verify_certificate(made.certificate, export)


def test_a_certificate_re_signed_by_other_keys_does_not_match_the_ceremony_config(made, export):
    """Signatures verify against the keys the certificate itself lists: what ties those keys to the ceremony
    is its election config (the record's election_config.json, or the node's own)."""
    forger = [nacl.signing.SigningKey.generate() for _ in made.keys]
    certificate = certificate_of(export)
    for g, key in zip(certificate["certificate"]["guardians"], forger):
        g["public_key"] = bytes(key.verify_key).hex()
    resign(certificate, forger)
    verify_certificate(certificate)                             # self-consistent on its own
    with pytest.raises(CustodyError, match=r"election_config.json: guardian 1 is g1 \(.*\), not the certificate's g1"):
        verify_certificate(certificate, export)
    with pytest.raises(CustodyError, match=r"the node's ceremony: guardian 1 is g1"):
        verify_certificate(certificate, None, made.config)


# --- the custody gate of the record's commands ---------------------------------------------------------------


def test_the_gate_refuses_a_record_without_certificate_saying_how_to_proceed(export):
    (export / CERTIFICATE_JSON).unlink()
    layout.Record(export).update_index([CERTIFICATE_JSON])
    with pytest.raises(NotCertified) as e:
        gate(export, "guardian tally", False)
    assert str(e.value) == (
        f"{export}: no ceremony certificate: the guardians' key custody is not certified (the election "
        f"may not proceed until every guardian has exported, confirmed and verified its key backup: see who is missing "
        f"with `guardian ceremony status`, then start the record with `guardian record init`; to rehearse without it, "
        f"add --rehearsal)")
    assert not (export / REHEARSAL).exists()


def test_the_gate_refuses_a_certificate_that_does_not_hold_or_whose_keys_are_superseded(made, export):
    certificate = certificate_of(export)
    certificate["signatures"][1]["signature"] = certificate["signatures"][0]["signature"]
    write_certificate(export, certificate)
    with pytest.raises(NotCertified, match=r"its ceremony certificate does not hold: guardian 2 \(g2\)'s signature "
                                           r"does not verify"):
        gate(export, "guardian encrypt", False)
    certificate = dict(made.certificate, status="superseded by ceremony " + "cd" * 32)
    write_certificate(export, certificate)
    with pytest.raises(NotCertified, match=r"superseded by ceremony cdcdcdcdcdcdcdcd \(start a record from that "
                                           r"ceremony: `guardian record init --ceremony cdcdcdcdcdcdcdcd`"):
        certified(export)


def test_a_rehearsal_goes_on_loudly_and_the_record_says_so(export):
    (export / CERTIFICATE_JSON).unlink()
    layout.Record(export).update_index([CERTIFICATE_JSON])
    said = []
    passed = gate(export, "guardian ballots submit", True)
    assert passed.certificate is None and not (export / REHEARSAL).exists()      # nothing written before note()
    passed.note(said.append)
    assert said == ["warning: REHEARSAL: no ceremony certificate: the guardians' key custody is not "
                    "certified; guardian ballots submit goes on because of --rehearsal, and the record says so in "
                    "rehearsal.json"]
    # once a rehearsal, later commands go on without the flag, and add themselves
    gate(export, "guardian tally", False).note(said.append)
    assert "guardian tally goes on because the record is a rehearsal (rehearsal.json)" in said[1]
    record = layout.Record(export)
    entries = rehearsal_entries(record)
    assert [e["command"] for e in entries] == ["guardian ballots submit", "guardian tally"]
    assert all(e["skipped"].startswith("no ceremony certificate") and e["at"].endswith("Z") for e in entries)
    assert record.read_index()[REHEARSAL] == layout.sha256_file(export / REHEARSAL)
    (warning,) = custody_warnings(record)
    assert warning.startswith("rehearsal: custody was not certified: guardian ballots submit at ") and \
        "this record is a rehearsal, not a real election" in warning


def test_the_verifier_warns_of_a_certificate_that_does_not_hold(made, export):
    assert custody_warnings(layout.Record(export)) == []
    certificate = certificate_of(export)
    certificate["signatures"].pop()
    (export / CERTIFICATE_JSON).write_text(json.dumps(certificate))
    assert custody_warnings(layout.Record(export)) == [
        "certificate.json: its ceremony certificate does not hold: guardian 5 (g5) has not signed the certificate"]
    (export / REHEARSAL).write_text("{}")
    assert custody_warnings(layout.Record(export))[0].startswith("rehearsal.json: not a 'guardian-node rehearsal v1'")


# --- the node's policy ------------------------------------------------------------------------------------------


class FakeDB:
    def __init__(self, steps=None, signatures=None):
        self.steps, self.signatures = steps or {}, signatures or {}

    def custody_steps(self, session):
        return self.steps

    def certificate_signatures(self, session):
        return self.signatures


def row(made, export) -> dict:
    return {"session": made.config.session, "config": made.config.canonical_bytes(), "status": "complete",
            "outcome": {"export": str(export)}}


def test_a_node_uses_its_key_only_with_the_certificate_beside_its_export(made, export):
    assert custody_refusal(FakeDB(), row(made, export), False, False) is None
    (export / CERTIFICATE_JSON).unlink()
    done = {s: {} for s in ("downloaded", "backed-up", "verified")}
    steps = {"g1": done, "g2": {"downloaded": {}, "backed-up": {}}, "g4": done, "g5": done}
    assert custody_refusal(FakeDB(steps), row(made, export), False, False) == (
        f"the key custody of ceremony {made.session[:16]} is not complete, so this guardian does not use its key: "
        f"waiting for g2 (verified); g3 (downloaded, backed-up, verified) (`guardian ceremony status`)")
    steps.update(g2=done, g3=done)
    assert custody_refusal(FakeDB(steps, {"g1": (b"", b"")}), row(made, export), False, False) == (
        f"the certificate of ceremony {made.session[:16]} is not signed by every guardian yet: waiting for g2, g3, "
        f"g4, g5")


def test_a_certificate_for_other_keys_beside_the_export_is_refused(made, export):
    """A certificate signed by keys that are not the ceremony's guardians' (a forged one, beside the export)."""
    forger = [nacl.signing.SigningKey.generate() for _ in made.keys]
    config = made.config
    other = ElectionConfig(config.election, config.k, tuple(ConfigGuardian(g.sequence, g.name, bytes(k.verify_key))
                                                            for g, k in zip(config.guardians, forger)),
                           config.manifest, config.phase_timeout, config.nonce)
    sign_certificate(export, other, forger)
    refusal = custody_refusal(FakeDB(), row(made, export), False, False)
    assert refusal.startswith(f"the certificate of ceremony {made.session[:16]} does not hold: ")


def test_a_rehearsal_request_needs_a_node_that_allows_rehearsals(made, export):
    (export / CERTIFICATE_JSON).unlink()
    assert custody_refusal(FakeDB(), row(made, export), True, False) == (
        "the request is a rehearsal (custody not certified) and this guardian's node takes no part in rehearsals "
        "([decryption] allow_rehearsal is false in its node.toml)")
    assert custody_refusal(FakeDB(), row(made, export), True, True) is None


def test_the_request_carries_the_rehearsal_flag_canonically():
    obj = {"ceremony": "11" * 32, "h_e": "22" * 32, "record": "33" * 32, "tally": "44" * 32, "challenged": [],
           "compensated": False, "coordinator": 1, "timeout": 30.0, "nonce": "n", "rehearsal": True}
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    request = parse_request(data, 3)
    assert request.rehearsal is True and request.canonical_bytes() == data
    assert parse_request(data.replace(b'"rehearsal":true', b'"rehearsal":false'), 3).session != request.session


def test_allow_rehearsal_in_node_toml(tmp_path):
    assert load_node_config(CONFIGS / "node.toml").allow_rehearsal is False
    text = (CONFIGS / "node.toml").read_text()
    path = tmp_path / "node.toml"
    path.write_text(text.replace("allow_rehearsal = false", "allow_rehearsal = true"))
    assert load_node_config(path).allow_rehearsal is True
    path.write_text(text.replace("allow_rehearsal = false", 'allow_rehearsal = "yes"'))
    with pytest.raises(ConfigError, match=r"\[decryption\]: 'allow_rehearsal' must be a bool"):
        load_node_config(path)
