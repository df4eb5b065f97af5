"""`guardian backup split|recover` and `guardian audit verify`, through node.cli.main."""

from __future__ import annotations

import base64
import json
import sqlite3
import stat

import pytest
from nacl.pwhash import argon2id

from node.cli.main import main
from node.config import NODE_TOML
from node.custody.backup_file import BackupMeta, open_backup, open_backup_with_key, read_backup, write_backup
from node.custody.share_files import load_share, recover_from
from node.storage.db import DB_FILE, NodeDatabase

PASS, NEW_PASS = "correct horse battery", "a whole new passphrase"
FAST = dict(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)
PAYLOAD = b"identity seed and sealed guardian secrets"
META = BackupMeta.make("Alice", 2, b"\xab" * 32, b"\x02" * 512, b"\x03" * 32)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("GN_TEST_PASS", PASS)
    monkeypatch.setenv("GN_TEST_NEW_PASS", NEW_PASS)
    monkeypatch.setenv("GN_TEST_WRONG", "not the passphrase")


@pytest.fixture
def backup(tmp_path, env):
    path = tmp_path / "alice.backup"
    key, fp = write_backup(path, PAYLOAD, META, PASS, **FAST)
    return path, key, fp


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def split(capsys, backup_path, out, m=5, t=3, *extra):
    return run(capsys, "backup", "split", backup_path, "--custodians", m, "--threshold", t, "--out", out,
               "--passphrase-env", "GN_TEST_PASS", *extra)


def assert_no_secret(key: bytes, *texts: str) -> None:
    for text in texts:
        for secret in (key.hex(), base64.b64encode(key).decode(), PASS, NEW_PASS):
            assert secret not in text


# --- backup split ------------------------------------------------------------------------------------------


def test_split_writes_every_share_and_prints_the_split_id(capsys, backup, tmp_path):
    path, key, fp = backup
    code, out, err = split(capsys, path, tmp_path / "shares")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "shares").iterdir())
    assert files == sorted(f"share_{i}.{ext}" for i in range(1, 6) for ext in ("json", "txt", "svg", "png"))
    shares = [load_share(tmp_path / "shares" / f"share_{i}.json") for i in range(1, 6)]
    assert f"split id {shares[0].split_id.hex()}" in out and fp in out
    assert all(s.label.startswith("Alice (guardian 2), election abababab") for s in shares)
    assert fp[:9] in shares[0].label
    assert recover_from(shares[:3]) == key
    assert stat.S_IMODE((tmp_path / "shares").stat().st_mode) == 0o700
    assert_no_secret(key, out, err)


def test_split_with_a_label(capsys, backup, tmp_path):
    path, _, _ = backup
    assert split(capsys, path, tmp_path / "s", 2, 2, "--label", "Alice, 2025 board election")[0] == 0
    assert load_share(tmp_path / "s" / "share_1.txt").label == "Alice, 2025 board election"


def test_split_with_the_wrong_passphrase(capsys, backup, tmp_path):
    path, _, _ = backup
    code, out, err = run(capsys, "backup", "split", path, "-m", 3, "-t", 2, "--out", tmp_path / "s",
                         "--passphrase-env", "GN_TEST_WRONG")
    assert code == 1 and "wrong passphrase" in err and str(path) in err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("m, t, words", [(3, 4, "smaller than the threshold"), (300, 2, "at most 255"),
                                         (3, 1, "at least 2")])
def test_split_refuses_bad_numbers(capsys, backup, tmp_path, m, t, words):
    path, _, _ = backup
    code, _, err = split(capsys, path, tmp_path / "s", m, t)
    assert code == 1 and words in err and err.startswith("guardian backup: error:")


def test_split_refuses_to_overwrite_shares(capsys, backup, tmp_path):
    path, _, _ = backup
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "share_3.svg").write_text("mine")
    code, _, err = split(capsys, path, tmp_path / "s")
    assert code == 1 and "share_3.svg already exists" in err
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["share_3.svg"]


def test_split_refuses_a_file_that_is_not_a_backup(capsys, env, tmp_path):
    (tmp_path / "node.toml").write_text("[node]\n")
    code, _, err = split(capsys, tmp_path / "node.toml", tmp_path / "s")
    assert code == 1 and "node.toml is not a backup file" in err


def test_split_refuses_a_label_on_two_lines(capsys, backup, tmp_path):
    path, _, _ = backup
    code, _, err = split(capsys, path, tmp_path / "s", 3, 2, "--label", "two\nlines")
    assert code == 1 and "--label" in err


# --- backup recover -----------------------------------------------------------------------------------------


def recover(capsys, backup_path, out, *shares, passphrase_env="GN_TEST_NEW_PASS"):
    return run(capsys, "backup", "recover", *shares, "--backup", backup_path, "--out", out,
               "--passphrase-env", passphrase_env)


def test_recover_from_json_and_typed_shares_writes_a_new_backup(capsys, backup, tmp_path):
    path, key, _ = backup
    shares = tmp_path / "shares"
    assert split(capsys, path, shares)[0] == 0
    typed = tmp_path / "typed.txt"                                  # a custodian typed their page
    typed.write_text("\n".join(line for line in (shares / "share_4.txt").read_text().splitlines()
                               if line[:1].isdigit()).lower())
    code, out, err = recover(capsys, path, tmp_path / "new.backup", shares / "share_1.json", typed,
                             shares / "share_5.txt")
    assert code == 0, err
    new = tmp_path / "new.backup"
    payload, meta = open_backup(new, NEW_PASS)
    assert payload == PAYLOAD
    assert (meta.guardian, meta.sequence, meta.session, meta.public_key, meta.commitments_digest) == \
        (META.guardian, META.sequence, META.session, META.public_key, META.commitments_digest)
    assert read_backup(new).fingerprint() in out
    assert stat.S_IMODE(new.stat().st_mode) == 0o600
    with pytest.raises(Exception, match="does not open"):
        open_backup_with_key(new, key)                               # the old shares are retired
    assert open_backup(path, PASS)[0] == PAYLOAD                     # the old file is untouched
    assert_no_secret(key, out, err)


def test_recover_with_too_few_shares(capsys, backup, tmp_path):
    path, _, _ = backup
    split(capsys, path, tmp_path / "s")
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "s" / "share_1.json",
                           tmp_path / "s" / "share_2.txt")
    assert code == 1 and "any 3 shares are needed, only 2" in err
    assert not (tmp_path / "new").exists()


def test_recover_with_a_corrupted_share_names_it(capsys, backup, tmp_path):
    path, _, _ = backup
    split(capsys, path, tmp_path / "s")
    bad = tmp_path / "s" / "share_2.json"
    doc = json.loads(bad.read_bytes())
    doc["value"] = doc["value"][:-1] + ("0" if doc["value"][-1] != "0" else "1")
    bad.write_text(json.dumps(doc))
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "s" / "share_1.json", bad,
                           tmp_path / "s" / "share_3.json")
    assert code == 1 and f"{bad} is damaged" in err


def test_recover_with_a_typo_names_the_line(capsys, backup, tmp_path):
    path, _, _ = backup
    split(capsys, path, tmp_path / "s")
    txt = tmp_path / "s" / "share_3.txt"
    lines = txt.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("5:"))
    lines[i] = lines[i][:3] + ("A" if lines[i][3] != "A" else "B") + lines[i][4:]
    typed = tmp_path / "typed3.txt"
    typed.write_text("\n".join(lines))
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "s" / "share_1.json",
                           tmp_path / "s" / "share_2.json", typed)
    assert code == 1 and f"{typed}: line 5 has a typing mistake, most likely in group 1 (character 1)" in err


def test_recover_with_shares_of_another_backup(capsys, backup, tmp_path):
    path, _, _ = backup
    write_backup(tmp_path / "other.backup", PAYLOAD, META, PASS, **FAST)
    split(capsys, tmp_path / "other.backup", tmp_path / "o", 2, 2)
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "o" / "share_1.json",
                           tmp_path / "o" / "share_2.json")
    assert code == 1 and "this key does not open the backup" in err and str(path) in err


def test_recover_with_shares_of_two_splits(capsys, backup, tmp_path):
    path, _, _ = backup
    split(capsys, path, tmp_path / "a", 3, 2)
    split(capsys, path, tmp_path / "b", 3, 2)
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "a" / "share_1.json",
                           tmp_path / "b" / "share_2.json")
    assert code == 1 and "b/share_2.json belongs to split" in err


def test_recover_refuses_an_existing_output(capsys, backup, tmp_path):
    path, _, _ = backup
    split(capsys, path, tmp_path / "s", 2, 2)
    code, _, err = recover(capsys, path, path, tmp_path / "s" / "share_1.json", tmp_path / "s" / "share_2.json")
    assert code == 1 and "already exists" in err


def test_recover_refuses_a_short_new_passphrase(capsys, backup, tmp_path, monkeypatch):
    path, _, _ = backup
    split(capsys, path, tmp_path / "s", 2, 2)
    monkeypatch.setenv("GN_TEST_SHORT", "short")
    code, _, err = recover(capsys, path, tmp_path / "new", tmp_path / "s" / "share_1.json",
                           tmp_path / "s" / "share_2.json", passphrase_env="GN_TEST_SHORT")
    assert code == 1 and "at least 8 characters" in err and not (tmp_path / "new").exists()


# --- audit verify -----------------------------------------------------------------------------------------------


@pytest.fixture
def node_dir(tmp_path):
    directory = tmp_path / "node"
    directory.mkdir()
    (directory / "node.toml").write_text(NODE_TOML.format(name="Alice", listen="127.0.0.1:7401",
                                                          advertise="ws://127.0.0.1:7401"))
    db = NodeDatabase(directory)
    for i in range(5):
        db.audit("event", {"i": i})
    db.close()
    return directory


def test_audit_verify_ok(capsys, node_dir):
    for args in (["--dir", node_dir], ["--config", node_dir / "node.toml"]):
        code, out, _ = run(capsys, "audit", "verify", *args)
        assert code == 0 and out.startswith("audit trail OK: 5 entries")


def test_audit_verify_default_config(capsys, node_dir, monkeypatch):
    monkeypatch.chdir(node_dir)
    code, out, _ = run(capsys, "audit", "verify")
    assert code == 0 and "5 entries" in out


def test_audit_verify_names_the_first_bad_entry(capsys, node_dir):
    db = sqlite3.connect(node_dir / DB_FILE)
    db.execute("UPDATE audit SET detail = '{}' WHERE id = 4")
    db.execute("DELETE FROM audit WHERE id = 2")
    db.commit()
    db.close()
    code, out, err = run(capsys, "audit", "verify", "--dir", node_dir)
    assert code == 1 and out == ""
    assert err.strip() == "guardian audit: error: audit trail broken at entry 2: entry 2 is missing (removed)"


def test_audit_verify_not_a_node(capsys, tmp_path):
    code, _, err = run(capsys, "audit", "verify", "--dir", tmp_path)
    assert code == 1 and "no node database" in err
    code, _, err = run(capsys, "audit", "verify", "--config", tmp_path / "missing.toml")
    assert code == 1 and "missing.toml" in err


def test_audit_verify_takes_one_source(capsys, node_dir):
    with pytest.raises(SystemExit):
        main(["audit", "verify", "--dir", str(node_dir), "--config", str(node_dir / "node.toml")])
    capsys.readouterr()
