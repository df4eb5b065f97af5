"""The guardian's key backup file (node/custody/backup_file.py): two layers, metadata, fingerprint, errors."""

from __future__ import annotations

import base64
import json
import re
import stat

import pytest
from nacl.pwhash import argon2id

from node.crypto.errors import EncodingError, InputError
from node.crypto.sealing import WrongPassphrase
from node.custody import ALPHABET
from node.custody.backup_file import (
    FORMAT, PURPOSE, BackupFileError, BackupMeta, WrongBackupKey, encode_backup, fingerprint, open_backup,
    open_backup_key, open_backup_with_key, read_backup, read_backup_bytes, write_backup,
)

PASS = "correct horse battery"
FAST = dict(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)
PAYLOAD = b"\x00identity seed and sealed guardian secrets\n\xff" * 10
META = BackupMeta.make("Alice", 1, bytes(range(32)), b"\x02" * 512, b"\x03" * 32, "2025-03-01T12:00:00Z")


@pytest.fixture
def backup(tmp_path):
    path = tmp_path / "alice.backup"
    key, fp = write_backup(path, PAYLOAD, META, PASS, **FAST)
    return path, key, fp


def edit(path, change) -> bytes:
    doc = json.loads(path.read_bytes())
    change(doc)
    return json.dumps(doc).encode()


# --- round trips -----------------------------------------------------------------------------------------


def test_round_trip_with_the_passphrase_and_with_the_key(backup):
    path, key, fp = backup
    assert open_backup(path, PASS) == (PAYLOAD, META)
    assert open_backup_with_key(path, key) == (PAYLOAD, META)
    assert open_backup_key(path, PASS) == key and len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_file_shows_its_metadata_and_hides_its_secrets(backup):
    path, key, _ = backup
    raw = path.read_bytes()
    doc = json.loads(raw)
    assert doc["format"] == FORMAT and doc["sealed_key"]["purpose"] == PURPOSE
    assert doc["meta"] == {"guardian": "Alice", "sequence": 1, "session": bytes(range(32)).hex(),
                           "public_key": "02" * 512, "commitments_digest": "03" * 32,
                           "created": "2025-03-01T12:00:00Z"}
    assert read_backup(path).meta == META
    for secret in (PAYLOAD, PAYLOAD[:20], key, PASS.encode(), base64.b64encode(key)):
        assert secret not in raw


def test_a_mapping_of_metadata_is_accepted_and_stamped(tmp_path):
    meta = {"guardian": "Bob", "sequence": 2, "session": b"\x01" * 32, "public_key": b"\x05" * 512,
            "commitments_digest": "ab" * 32}
    write_backup(tmp_path / "b", b"payload", meta, PASS, **FAST)
    payload, got = open_backup(tmp_path / "b", PASS)
    assert payload == b"payload" and got.guardian == "Bob" and got.session == "01" * 32
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", got.created)


def test_the_default_kdf_limits(tmp_path):
    write_backup(tmp_path / "b", b"payload", META, PASS)
    assert json.loads((tmp_path / "b").read_bytes())["sealed_key"]["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE


def test_never_overwrites(backup):
    path, _, _ = backup
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_backup(path, b"other", META, PASS, **FAST)
    assert path.read_bytes() == before


# --- refusals, each naming the file -----------------------------------------------------------------------------


def test_wrong_passphrase(backup):
    path, _, _ = backup
    with pytest.raises(WrongPassphrase, match=f"{re.escape(str(path))}: wrong passphrase"):
        open_backup(path, "not the passphrase")


def test_a_key_that_does_not_open_it(backup, tmp_path):
    path, key, _ = backup
    other_key, _ = write_backup(tmp_path / "other", PAYLOAD, META, PASS, **FAST)
    with pytest.raises(WrongBackupKey, match=f"{re.escape(str(path))}: this key does not open the backup"):
        open_backup_with_key(path, other_key)
    with pytest.raises(WrongBackupKey, match="32 bytes"):
        open_backup_with_key(path, key[:31])


@pytest.mark.parametrize("keep", [0, 1, 50, 300, -3])
def test_truncated_file(backup, keep):
    path, _, _ = backup
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(BackupFileError, match=re.escape(str(path))):
        open_backup(path, PASS)


def test_altered_payload_with_the_passphrase(backup):
    path, _, _ = backup
    raw = bytearray(base64.b64decode(json.loads(path.read_bytes())["payload"]))
    raw[60] ^= 1
    path.write_bytes(edit(path, lambda d: d.update(payload=base64.b64encode(bytes(raw)).decode())))
    with pytest.raises(BackupFileError, match="contents were altered or damaged"):
        open_backup(path, PASS)


def test_altered_payload_with_the_key(backup):
    path, key, _ = backup
    raw = bytearray(base64.b64decode(json.loads(path.read_bytes())["payload"]))
    raw[-1] ^= 1
    path.write_bytes(edit(path, lambda d: d.update(payload=base64.b64encode(bytes(raw)).decode())))
    with pytest.raises(WrongBackupKey, match="altered"):
        open_backup_with_key(path, key)


@pytest.mark.parametrize("field, value", [("guardian", "Mallory"), ("sequence", 2), ("public_key", "04" * 512),
                                          ("created", "2030-01-01T00:00:00Z")])
def test_altered_public_metadata_is_caught_when_opened(backup, field, value):
    path, key, _ = backup
    path.write_bytes(edit(path, lambda d: d["meta"].update({field: value})))
    assert getattr(read_backup(path).meta, field) == value           # readable, but not yet authenticated
    with pytest.raises(BackupFileError, match="public metadata was altered"):
        open_backup_with_key(path, key)
    with pytest.raises(BackupFileError, match="public metadata was altered|contents were altered"):
        open_backup(path, PASS)


def test_altered_sealed_key(backup):
    path, _, _ = backup
    path.write_bytes(edit(path, lambda d: d["sealed_key"].update(purpose="node identity")))
    with pytest.raises(BackupFileError, match="sealed backup key is damaged"):
        open_backup(path, PASS)


def test_a_sealed_key_from_another_backup(backup, tmp_path):
    path, _, _ = backup
    write_backup(tmp_path / "other", PAYLOAD, META, PASS, **FAST)
    other = json.loads((tmp_path / "other").read_bytes())["sealed_key"]
    path.write_bytes(edit(path, lambda d: d.update(sealed_key=other)))
    with pytest.raises(BackupFileError, match="contents were altered"):
        open_backup(path, PASS)


@pytest.mark.parametrize("content, words", [
    (b"", "not a backup file"),
    (b"\x89PNG\r\n\x1a\n", "not a backup file"),
    (b"[1, 2]", "not a backup file"),
    (b'{"format": "guardian-node sealed v1"}', "not a backup file"),
    (b'{"format": "guardian-node custody share v1", "value": "00"}', "not a backup file"),
    (json.dumps({"format": FORMAT}).encode(), "damaged: it must hold"),
])
def test_other_files_are_refused(tmp_path, content, words):
    path = tmp_path / "something"
    path.write_bytes(content)
    with pytest.raises(BackupFileError, match=f"{re.escape(str(path))}.*{words}|{words}"):
        open_backup(path, PASS)


def test_a_share_file_is_not_a_backup(tmp_path):
    from node.custody.share_files import make_shares, share_json

    path = tmp_path / "share_1.json"
    path.write_bytes(share_json(make_shares(b"k" * 32, 2, 2, "x")[0]))
    with pytest.raises(BackupFileError, match="share_1.json is not a backup file"):
        read_backup(path)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(payload="!!not base64"), "not base64"),
    (lambda d: d.update(payload=base64.b64encode(b"short").decode()), "too short"),
    (lambda d: d.update(sealed_key="text"), "sealed backup key is damaged"),
    (lambda d: d["meta"].update(sequence=0), "sequence"),
    (lambda d: d["meta"].update(session="XYZ"), "session"),
    (lambda d: d["meta"].update(public_key=""), "public_key"),
    (lambda d: d["meta"].update(commitments_digest="00"), "commitments_digest"),
    (lambda d: d["meta"].update(created="yesterday"), "created"),
    (lambda d: d["meta"].update(guardian="\n"), "guardian"),
    (lambda d: d["meta"].pop("created"), "metadata must hold exactly"),
])
def test_damaged_fields_are_refused_by_name(backup, change, words):
    path, _, _ = backup
    path.write_bytes(edit(path, change))
    with pytest.raises(BackupFileError, match=words) as info:
        read_backup(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the backup file"):
        read_backup(tmp_path / "nope")


@pytest.mark.parametrize("payload", [b"", "text", None])
def test_bad_payloads_are_refused(tmp_path, payload):
    with pytest.raises(InputError, match="payload"):
        write_backup(tmp_path / "b", payload, META, PASS, **FAST)
    assert not (tmp_path / "b").exists()


def test_bad_metadata_is_refused(tmp_path):
    with pytest.raises(EncodingError, match="sequence"):
        BackupMeta.make("Alice", 0, b"\x01", b"\x02", b"\x03" * 32)
    with pytest.raises(EncodingError, match="exactly"):
        write_backup(tmp_path / "b", b"p", {"guardian": "Alice"}, PASS, **FAST)
    with pytest.raises(EncodingError, match="exactly"):
        write_backup(tmp_path / "b", b"p", "Alice", PASS, **FAST)


def test_a_short_passphrase_is_refused(tmp_path):
    with pytest.raises(InputError, match="at least 8"):
        write_backup(tmp_path / "b", b"p", META, "short", **FAST)
    assert not (tmp_path / "b").exists()


# --- the fingerprint -------------------------------------------------------------------------------------------


def test_fingerprint_shape_and_stability(backup):
    path, _, fp = backup
    raw = path.read_bytes()
    groups = fp.split("-")
    assert len(groups) == 8 and all(len(g) == 4 and set(g) <= set(ALPHABET) for g in groups)
    assert not set(fp) & set("ILOU")
    assert fingerprint(raw, META) == fp == read_backup(path).fingerprint()
    assert fingerprint(raw, META.to_dict()) == fp


def test_fingerprint_changes_with_the_file_and_with_the_public_key(backup, tmp_path):
    path, _, fp = backup
    raw = path.read_bytes()
    assert fingerprint(raw + b" ", META) != fp
    assert fingerprint(raw.replace(b'"Alice"', b'"Alicf"'), META) != fp
    other_key = BackupMeta.make("Alice", 1, bytes(range(32)), b"\x09" * 512, b"\x03" * 32, META.created)
    other_commitments = BackupMeta.make("Alice", 1, bytes(range(32)), b"\x02" * 512, b"\x04" * 32, META.created)
    assert fingerprint(raw, other_key) != fp and fingerprint(raw, other_commitments) != fp
    _, fp2 = write_backup(tmp_path / "same-content", PAYLOAD, META, PASS, **FAST)
    assert fp2 != fp                                   # a new backup key and salt: a different file


def test_fingerprint_refuses_non_bytes():
    with pytest.raises(InputError):
        fingerprint("text", META)


def test_encode_backup_is_the_file_write_backup_writes(tmp_path):
    data, key = encode_backup(PAYLOAD, META, PASS, **FAST)
    parsed = read_backup_bytes(data, "in memory")
    assert parsed.open_with_key(key) == PAYLOAD and parsed.open(PASS) == (PAYLOAD, key)
    assert "Alice" in repr(parsed) and PAYLOAD[:10].decode("latin-1") not in repr(parsed)


def test_restamped_keeps_the_facts():
    later = META.restamped()
    assert later.created != META.created and later.public_key == META.public_key
