"""Secrets at rest (node/crypto/sealing.py), the node identity (node/identity.py), node.toml and the roster
(node/config.py) and where a passphrase comes from (node/passphrase.py)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import stat
import sys
from pathlib import Path

import nacl.signing
import pytest
from nacl.pwhash import argon2id

from node.config import (
    NODE_TOML,
    ConfigError,
    load_node_config,
    load_roster,
    roster_entry_toml,
)
from node.crypto.errors import EncodingError, GuardianError, InputError
from node.crypto.sealing import WrongPassphrase, seal, unseal
from node.identity import (
    IDENTITY_FILE,
    PUBLIC_FILE,
    Identity,
    decode_public_key,
    encode_public_key,
    fingerprint,
    load_public_key,
)
from node.cli.passphrase import read_passphrase, source_from_args

PASS = "correct horse battery"
FAST = dict(opslimit=argon2id.OPSLIMIT_MIN, memlimit=argon2id.MEMLIMIT_MIN)   # the arithmetic is the same
SECRET = b"\x00the secret\nwith a newline\xff"


def sealed(purpose: str = "test secret") -> bytes:
    return seal(SECRET, PASS, purpose=purpose, **FAST)


def edit(blob: bytes, **changes) -> bytes:
    outer = json.loads(blob)
    outer.update(changes)
    return json.dumps(outer).encode()


# --- sealing ------------------------------------------------------------------------------------


def test_seal_unseal_round_trip():
    blob = sealed()
    assert unseal(blob, PASS, purpose="test secret") == SECRET
    assert SECRET not in blob and PASS.encode() not in blob
    outer = json.loads(blob)
    assert outer["kdf"] == "argon2id" and outer["purpose"] == "test secret"
    assert sealed() != blob                                   # a fresh salt every time


def test_seal_with_the_default_parameters():
    blob = seal(b"k" * 32, PASS, purpose="node identity")
    assert json.loads(blob)["opslimit"] == argon2id.OPSLIMIT_INTERACTIVE
    assert unseal(blob, PASS, purpose="node identity") == b"k" * 32


def test_wrong_passphrase():
    with pytest.raises(WrongPassphrase):
        unseal(sealed(), "not the passphrase", purpose="test secret")
    with pytest.raises(WrongPassphrase):
        unseal(sealed(), PASS + " ", purpose="test secret")


def _flip_ciphertext(blob: bytes, index: int) -> bytes:
    raw = bytearray(base64.b64decode(json.loads(blob)["ciphertext"]))
    raw[index] ^= 1
    return edit(blob, ciphertext=base64.b64encode(bytes(raw)).decode())


@pytest.mark.parametrize("index", [0, 20, -1])
def test_altered_ciphertext(index):
    with pytest.raises(WrongPassphrase):
        unseal(_flip_ciphertext(sealed(), index), PASS, purpose="test secret")


def test_altered_header_fields():
    blob = sealed()
    salt = bytearray(base64.b64decode(json.loads(blob)["salt"]))
    salt[0] ^= 1
    for altered in (edit(blob, salt=base64.b64encode(bytes(salt)).decode()),
                    edit(blob, opslimit=2), edit(blob, memlimit=2 * argon2id.MEMLIMIT_MIN)):
        with pytest.raises(WrongPassphrase):
            unseal(altered, PASS, purpose="test secret")
    for altered in (edit(blob, format="guardian-node sealed v2"), edit(blob, kdf="scrypt"),
                    edit(blob, opslimit=0), edit(blob, opslimit=1.0), edit(blob, memlimit=1),
                    edit(blob, memlimit=2**40), edit(blob, salt=base64.b64encode(b"short").decode())):
        with pytest.raises(EncodingError):
            unseal(altered, PASS, purpose="test secret")


def test_a_relabelled_purpose_is_detected_inside_the_seal():
    """The outer purpose is edited to match what the caller asks for: the sealed copy of the header disagrees."""
    relabelled = edit(sealed("backup share"), purpose="node identity")
    with pytest.raises(EncodingError) as info:
        unseal(relabelled, PASS, purpose="node identity")
    assert "altered" in str(info.value)


def test_wrong_purpose():
    with pytest.raises(EncodingError) as info:
        unseal(sealed("backup share"), PASS, purpose="node identity")
    assert "backup share" in str(info.value)


@pytest.mark.parametrize("blob", [
    b"", b"{", b"not json", b"[]", b"null", b"42", b'"sealed"', b"\xff\xfe",
    b'{"format": "guardian-node sealed v1"}',
], ids=["empty", "brace", "text", "list", "null", "int", "string", "bad-utf8", "header-only"])
def test_not_a_sealed_file(blob):
    with pytest.raises(EncodingError):
        unseal(blob, PASS, purpose="test secret")


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.99])
def test_truncated_file(keep):
    blob = sealed()
    with pytest.raises(EncodingError):
        unseal(blob[:int(len(blob) * keep)], PASS, purpose="test secret")


def test_truncated_ciphertext():
    blob = sealed()
    text = json.loads(blob)["ciphertext"]
    for cut in (8, len(text) // 2, len(text) - 4):
        with pytest.raises((EncodingError, WrongPassphrase)):
            unseal(edit(blob, ciphertext=text[:cut]), PASS, purpose="test secret")


def test_non_base64_ciphertext():
    with pytest.raises(EncodingError):
        unseal(edit(sealed(), ciphertext="not base64!"), PASS, purpose="test secret")


@pytest.mark.parametrize("passphrase", ["", "short", "1234567", None, 12345678])
def test_short_passphrase_is_refused(passphrase):
    with pytest.raises(InputError) as info:
        seal(SECRET, passphrase, purpose="test secret", **FAST)
    assert "at least 8" in str(info.value)
    with pytest.raises(InputError):
        unseal(sealed(), passphrase, purpose="test secret")


def test_every_sealing_error_is_typed():
    for error in (WrongPassphrase, EncodingError, InputError):
        assert issubclass(error, GuardianError)


# --- the node identity ----------------------------------------------------------------------------


def test_identity_save_and_load(tmp_path):
    identity = Identity.generate()
    path = identity.save(tmp_path, PASS)
    assert path == tmp_path / IDENTITY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / PUBLIC_FILE).read_text().strip() == encode_public_key(identity.public_key)
    assert bytes(identity.signing_key) not in path.read_bytes()
    loaded = Identity.load(tmp_path, PASS)
    assert loaded.public_key == identity.public_key
    assert loaded.sign(b"m") == identity.sign(b"m")
    assert load_public_key(tmp_path) == identity.public_key
    assert repr(loaded) == f"Identity({identity.fingerprint})"      # never the key itself


def test_identity_save_refuses_to_overwrite(tmp_path):
    first = Identity.generate()
    first.save(tmp_path, PASS)
    before = (tmp_path / IDENTITY_FILE).read_bytes(), (tmp_path / PUBLIC_FILE).read_bytes()
    with pytest.raises(InputError) as info:
        Identity.generate().save(tmp_path, PASS)
    assert "overwrite" in str(info.value)
    assert ((tmp_path / IDENTITY_FILE).read_bytes(), (tmp_path / PUBLIC_FILE).read_bytes()) == before
    assert Identity.load(tmp_path, PASS).public_key == first.public_key


def test_identity_load_checks_identity_pub(tmp_path):
    Identity.generate().save(tmp_path, PASS)
    (tmp_path / PUBLIC_FILE).write_text(encode_public_key(Identity.generate().public_key) + "\n")
    with pytest.raises(EncodingError) as info:
        Identity.load(tmp_path, PASS)
    assert PUBLIC_FILE in str(info.value)


def test_identity_load_with_a_corrupt_identity_pub(tmp_path):
    Identity.generate().save(tmp_path, PASS)
    (tmp_path / PUBLIC_FILE).write_text("not a key\n")
    with pytest.raises(EncodingError):
        Identity.load(tmp_path, PASS)


def test_identity_load_errors(tmp_path):
    with pytest.raises(InputError) as info:
        Identity.load(tmp_path, PASS)                             # no identity here
    assert IDENTITY_FILE in str(info.value)
    Identity.generate().save(tmp_path, PASS)
    with pytest.raises(WrongPassphrase):
        Identity.load(tmp_path, "wrong passphrase")
    with pytest.raises(InputError):
        load_public_key(tmp_path / "elsewhere")


def test_identity_file_of_another_purpose_is_refused(tmp_path):
    (tmp_path / IDENTITY_FILE).write_bytes(seal(bytes(32), PASS, purpose="backup share", **FAST))
    with pytest.raises(EncodingError):
        Identity.load(tmp_path, PASS)


def test_identity_file_holding_a_wrong_size_secret_is_refused(tmp_path):
    (tmp_path / IDENTITY_FILE).write_bytes(seal(bytes(31), PASS, purpose="node identity", **FAST))
    with pytest.raises(EncodingError):
        Identity.load(tmp_path, PASS)


def test_fingerprint_shape():
    key = Identity.generate().public_key
    fp = fingerprint(key)
    groups = fp.split("-")
    assert len(groups) == 6 and all(len(g) == 4 for g in groups)
    assert fp == fingerprint(key) and fp != fingerprint(Identity.generate().public_key)


@pytest.mark.parametrize("text", [
    None, 5, "", "not base64!", base64.b64encode(bytes(31)).decode(), base64.b64encode(bytes(33)).decode(),
    base64.b64encode(bytes(32)).decode().rstrip("="), base64.b64encode(bytes(32)).decode()[:-2] + "B=",
], ids=["none", "int", "empty", "invalid", "31-bytes", "33-bytes", "no-padding", "non-canonical"])
def test_decode_public_key_refuses(text):
    with pytest.raises(EncodingError):
        decode_public_key(text)


# --- node.toml ------------------------------------------------------------------------------------


def config_text(**lines) -> str:
    text = NODE_TOML.format(name="alice", listen="127.0.0.1:7001", advertise="ws://127.0.0.1:7001")
    for old, new in lines.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def config_error(tmp_path: Path, text: str, *words: str) -> ConfigError:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    message = str(info.value)
    assert str(path.resolve()) in message, message
    for word in words:
        assert word in message, (word, message)
    return info.value


def test_the_generated_config_loads(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text(config_text())
    config = load_node_config(path)
    assert config.name == "alice" and config.listen_host == "127.0.0.1" and config.listen_port == 7001
    assert config.advertise == "ws://127.0.0.1:7001"
    assert config.data_dir == tmp_path.resolve()
    assert config.roster_file == tmp_path.resolve() / "roster.toml"
    assert config.control_socket == tmp_path.resolve() / "control.sock"
    assert config.max_frame_bytes == 1048576 and config.heartbeat_seconds == 5.0
    assert config.passphrase_source == "prompt" and config.tls_cert is None
    assert (config.peer_burst_bytes, config.peer_bytes_per_second, config.peer_burst_messages,
            config.peer_messages_per_second, config.peer_open_sessions, config.peer_pending,
            config.fetch_timeout_seconds) == (16777216, 262144.0, 1000, 20.0, 8, 8, 600.0)


def test_minimal_config_uses_defaults(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nname = "bob"\nlisten = "127.0.0.1:7002"\n[passphrase]\nsource = "file:secret.txt"\n')
    config = load_node_config(path)
    assert config.advertise == "ws://127.0.0.1:7002"
    assert config.roster_file == tmp_path.resolve() / "roster.toml"
    assert (config.max_frame_bytes, config.heartbeat_seconds, config.redial_initial_seconds,
            config.redial_max_seconds) == (1048576, 5.0, 0.5, 30.0)
    assert config.passphrase_source == "file:" + str(tmp_path.resolve() / "secret.txt")


def test_ipv6_listen_address_with_explicit_advertise(tmp_path):
    path = tmp_path / "node.toml"
    path.write_text('[node]\nname = "bob"\nlisten = "[::1]:7002"\nadvertise = "ws://[::1]:7002"\n')
    config = load_node_config(path)
    assert (config.listen_host, config.listen_port, config.advertise) == ("::1", 7002, "ws://[::1]:7002")


def test_ipv6_listen_address_default_advertise(tmp_path):
    """listen = "[::1]:7002" is accepted, but the default advertise is built as ws://::1:7002 and refused."""
    path = tmp_path / "node.toml"
    path.write_text('[node]\nname = "bob"\nlisten = "[::1]:7002"\n')
    assert load_node_config(path).advertise == "ws://[::1]:7002"


def test_missing_keys(tmp_path):
    config_error(tmp_path, config_text(**{"name = 'alice'\n": ""}), "[node]", "name")
    config_error(tmp_path, config_text(**{"listen = '127.0.0.1:7001'\n": ""}), "[node]", "listen")
    config_error(tmp_path, "", "name")


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1", ":7001", "127.0.0.1:", "127.0.0.1:99999",
                                    "127.0.0.1:-1", "127.0.0.1:http"])
def test_bad_listen_address(tmp_path, listen):
    config_error(tmp_path, config_text(**{"listen = '127.0.0.1:7001'": f"listen = {listen!r}"}), "listen")


@pytest.mark.parametrize("advertise", ["http://127.0.0.1:7001", "127.0.0.1:7001", "ws://127.0.0.1",
                                       "ws://:7001", "tcp://h:1"])
def test_bad_ws_address(tmp_path, advertise):
    config_error(tmp_path, config_text(**{"advertise = 'ws://127.0.0.1:7001'": f"advertise = {advertise!r}"}),
                 "[node]", "ws://")


@pytest.mark.parametrize("advertise", ["ws://127.0.0.1:http", "ws://127.0.0.1:70000", "ws://[::1:7001"],
                         ids=["port-not-a-number", "port-out-of-range", "broken-ipv6"])
def test_bad_ws_address_port_names_the_file(tmp_path, advertise):
    """urlparse(...).port raises a bare ValueError here: it must become a ConfigError naming the file and key."""
    config_error(tmp_path, config_text(**{"advertise = 'ws://127.0.0.1:7001'": f"advertise = {advertise!r}"}),
                 "[node]")


@pytest.mark.parametrize("line,new,words", [
    ("max_frame_bytes = 1048576", "max_frame_bytes = 100", ("[network]", "max_frame_bytes")),
    ("max_frame_bytes = 1048576", 'max_frame_bytes = "1 MiB"', ("[network]", "max_frame_bytes")),
    ("heartbeat_seconds = 5.0", "heartbeat_seconds = 0", ("[network]", "heartbeat")),
    ("heartbeat_seconds = 5.0", "heartbeat_seconds = true", ("[network]", "heartbeat_seconds")),
    ("redial_initial_seconds = 0.5", "redial_initial_seconds = 60.0", ("[network]", "initial")),
    ("peer_burst_bytes = 16777216", "peer_burst_bytes = 1000", ("[network]", "peer_burst_bytes", "max_frame_bytes")),
    ("peer_bytes_per_second = 262144", "peer_bytes_per_second = 0", ("[network]", "peer_bytes_per_second")),
    ("peer_messages_per_second = 20.0", "peer_messages_per_second = -1.0", ("[network]", "peer_messages_per_second")),
    ("peer_burst_messages = 1000", "peer_burst_messages = 0", ("[network]", "peer_burst_messages")),
    ("peer_open_sessions = 8", "peer_open_sessions = 0", ("[network]", "peer_open_sessions")),
    ("peer_pending = 8", "peer_pending = true", ("[network]", "peer_pending")),
    ("fetch_timeout_seconds = 600.0", "fetch_timeout_seconds = 0.5", ("[decryption]", "fetch_timeout_seconds")),
    ('cert = ""', 'cert = "cert.pem"', ("[tls]", "cert")),
    ('source = "prompt"', 'source = "argv"', ("[passphrase]", "source")),
    ('source = "prompt"', "source = 1", ("[passphrase]", "source")),
    ('file = "roster.toml"', "file = 3", ("[roster]", "file")),
    ('socket = "control.sock"', "socket = []", ("[control]", "socket")),
    ("name = 'alice'", "name = 'alice!'", ("[node]", "name")),
    ("name = 'alice'", "name = ' alice'", ("[node]", "name")),
])
def test_bad_values_name_the_file_and_key(tmp_path, line, new, words):
    config_error(tmp_path, config_text(**{line: new}), *words)


def test_not_toml(tmp_path):
    config_error(tmp_path, "[node\nname = ", "TOML")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_node_config(tmp_path / "absent.toml")
    assert "absent.toml" in str(info.value)


@pytest.mark.parametrize("table", ["roster", "network", "node"])
def test_a_section_that_is_not_a_table(tmp_path, table):
    """A plausible slip (`roster = "roster.toml"` at the top) must give a ConfigError, not an AttributeError."""
    body = config_text(**{f"[{table}]\n": f"[{table}_unused]\n"})
    config_error(tmp_path, f'{table} = "oops"\n' + body, table)


@pytest.mark.parametrize("section,line", [
    ("[network]\n", "hearbeat_seconds = 0.1\n"),
    ("[node]\n", "listne = '127.0.0.1:1'\n"),
], ids=["typo-in-network", "typo-in-node"])
def test_unknown_config_keys_are_refused(tmp_path, section, line):
    """A misspelt key in node.toml is silently ignored today; like the roster, it should be refused."""
    config_error(tmp_path, config_text(**{section: section + line}), line.split(" ")[0])


# --- the roster -------------------------------------------------------------------------------------


KEYS = [nacl.signing.SigningKey(bytes([i]) * 32) for i in range(1, 5)]


def entry(seq: int, i: int | None = None, **override) -> str:
    i = seq if i is None else i
    key = bytes(KEYS[i - 1].verify_key)
    fields = dict(sequence=seq, name=f"guardian-{i}", public_key=encode_public_key(key),
                  address=f"ws://127.0.0.1:{7000 + i}", fingerprint=fingerprint(key))
    fields.update(override)
    lines = ["[[guardian]]"]
    for k, v in fields.items():
        if v is not None:
            lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def roster_error(tmp_path: Path, text: str, *words: str) -> ConfigError:
    path = tmp_path / "roster.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_roster(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, (word, message)
    return info.value


def test_roster_loads_sorted_by_sequence(tmp_path):
    path = tmp_path / "roster.toml"
    path.write_text(entry(3) + entry(1) + entry(2))
    roster = load_roster(path)
    assert [e.sequence for e in roster.entries] == [1, 2, 3] and len(roster) == 3
    assert roster.by_name("guardian-2").public_key == bytes(KEYS[1].verify_key)
    assert roster.by_key(bytes(KEYS[2].verify_key)).name == "guardian-3"
    assert roster.by_key(bytes(KEYS[3].verify_key)) is None and roster.by_name("nobody") is None
    assert roster.entries[0].fingerprint == fingerprint(bytes(KEYS[0].verify_key))


def test_roster_entry_toml_round_trips(tmp_path):
    key = bytes(KEYS[0].verify_key)
    text = roster_entry_toml(1, "alice", encode_public_key(key), "ws://127.0.0.1:7001", fingerprint(key))
    path = tmp_path / "roster.toml"
    path.write_text(text)
    (e,) = load_roster(path).entries
    assert (e.sequence, e.name, e.public_key, e.address) == (1, "alice", key, "ws://127.0.0.1:7001")
    # without a sequence number it is a template the operators must fill in
    path.write_text(roster_entry_toml(None, "alice", encode_public_key(key), "ws://127.0.0.1:7001",
                                      fingerprint(key)))
    roster_error(tmp_path, path.read_text(), "sequence")


def test_fingerprint_is_optional(tmp_path):
    path = tmp_path / "roster.toml"
    path.write_text(entry(1, fingerprint=None) + entry(2))
    assert len(load_roster(path)) == 2


@pytest.mark.parametrize("text,words", [
    ("", ("[[guardian]]",)),
    ("guardian = 5\n", ("[[guardian]]",)),
    ("[guardian]\nsequence = 1\n", ("[[guardian]]",)),
    ("guardian = [1, 2]\n", ("entry 1",)),
])
def test_roster_without_entries(tmp_path, text, words):
    roster_error(tmp_path, text, *words)


@pytest.mark.parametrize("missing", ["sequence", "name", "public_key", "address"])
def test_roster_missing_key(tmp_path, missing):
    roster_error(tmp_path, entry(1) + entry(2, **{missing: None}), "entry 2", missing)


def test_roster_duplicate_sequence(tmp_path):
    roster_error(tmp_path, entry(1) + entry(1, 2), "sequence")


def test_roster_sequences_not_one_to_n(tmp_path):
    roster_error(tmp_path, entry(1) + entry(3), "sequence", "1..2")
    roster_error(tmp_path, entry(0, 1) + entry(1, 2), "sequence")
    roster_error(tmp_path, entry(2, 1) + entry(3, 2), "sequence")


def test_roster_sequence_of_wrong_type(tmp_path):
    roster_error(tmp_path, entry(1, sequence="1"), "entry 1", "sequence")


def test_roster_duplicate_name(tmp_path):
    roster_error(tmp_path, entry(1) + entry(2, name="guardian-1"), "name")


def test_roster_duplicate_key(tmp_path):
    key = bytes(KEYS[0].verify_key)
    roster_error(tmp_path, entry(1) + entry(2, public_key=encode_public_key(key), fingerprint=fingerprint(key)),
                 "public key")


def test_roster_duplicate_address(tmp_path):
    roster_error(tmp_path, entry(1) + entry(2, address="ws://127.0.0.1:7001"), "address")


@pytest.mark.parametrize("address", ["http://127.0.0.1:1", "127.0.0.1:7002", "ws://127.0.0.1", 7002])
def test_roster_bad_address(tmp_path, address):
    roster_error(tmp_path, entry(1) + entry(2, address=address), "entry 2", "address")


@pytest.mark.parametrize("address", ["ws://127.0.0.1:http", "ws://127.0.0.1:99999"],
                         ids=["port-not-a-number", "port-out-of-range"])
def test_roster_bad_address_port_names_the_file(tmp_path, address):
    """Same urlparse bug as in node.toml: a bare ValueError escapes load_roster."""
    roster_error(tmp_path, entry(1) + entry(2, address=address), "entry 2")


@pytest.mark.parametrize("key", ["not base64!", base64.b64encode(bytes(31)).decode(),
                                 base64.b64encode(bytes(32)).decode().rstrip("=")])
def test_roster_bad_base64_key(tmp_path, key):
    roster_error(tmp_path, entry(1) + entry(2, public_key=key, fingerprint=None), "entry 2", "public_key")


def test_roster_fingerprint_mismatch(tmp_path):
    wrong = fingerprint(bytes(KEYS[3].verify_key))
    roster_error(tmp_path, entry(1) + entry(2, fingerprint=wrong), "entry 2", "fingerprint")


def test_roster_unknown_keys(tmp_path):
    roster_error(tmp_path, entry(1) + entry(2, role="admin"), "entry 2", "role")


def test_roster_bad_name(tmp_path):
    roster_error(tmp_path, entry(1, name="bad/name"), "entry 1", "name")


def test_roster_not_toml(tmp_path):
    roster_error(tmp_path, "[[guardian]\n", "TOML")


def test_every_config_error_is_an_input_error():
    assert issubclass(ConfigError, InputError) and issubclass(ConfigError, GuardianError)


# --- passphrase sources -------------------------------------------------------------------------------


def test_passphrase_from_env(monkeypatch):
    monkeypatch.setenv("GN_TEST_PASS", PASS)
    assert read_passphrase("env:GN_TEST_PASS") == PASS
    monkeypatch.setenv("GN_TEST_PASS", "")
    with pytest.raises(InputError) as info:
        read_passphrase("env:GN_TEST_PASS")
    assert "GN_TEST_PASS" in str(info.value)
    monkeypatch.delenv("GN_TEST_PASS")
    with pytest.raises(InputError):
        read_passphrase("env:GN_TEST_PASS")


def test_passphrase_from_file(tmp_path):
    path = tmp_path / "pass.txt"
    path.write_text(PASS + "\nsecond line is ignored\n")
    assert read_passphrase(f"file:{path}") == PASS
    path.write_text("")
    with pytest.raises(InputError) as info:
        read_passphrase(f"file:{path}")
    assert "empty" in str(info.value)
    path.write_text("\n" + PASS)
    with pytest.raises(InputError):
        read_passphrase(f"file:{path}")
    with pytest.raises(InputError) as info:
        read_passphrase(f"file:{tmp_path / 'absent'}")
    assert "absent" in str(info.value)


def test_passphrase_prompt_without_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASS + "\n"))
    with pytest.raises(InputError) as info:
        read_passphrase("prompt")
    assert "--passphrase-file" in str(info.value) or "--passphrase-env" in str(info.value)


def test_passphrase_prompt_with_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    answers = iter([PASS, PASS, PASS, PASS, "different"])
    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert read_passphrase("prompt") == PASS
    assert read_passphrase("prompt", confirm=True) == PASS
    with pytest.raises(InputError):
        read_passphrase("prompt", confirm=True)


def test_unknown_passphrase_source():
    with pytest.raises(InputError):
        read_passphrase("argv:" + PASS)


def test_passphrase_source_from_args(tmp_path):
    assert source_from_args(argparse.Namespace(passphrase_file=None, passphrase_env=None)) == "prompt"
    assert source_from_args(argparse.Namespace(passphrase_file=None, passphrase_env="V"), "x") == "env:V"
    assert source_from_args(argparse.Namespace(passphrase_file="p.txt", passphrase_env=None)) == \
        "file:" + str(Path("p.txt").resolve())
    assert source_from_args(argparse.Namespace(), "env:DEFAULT") == "env:DEFAULT"


def test_no_passphrase_option_on_the_command_line():
    from node.cli.main import build_parser
    parser, _ = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["init", "d", "--name", "a", "--listen", "127.0.0.1:1", "--passphrase", PASS])
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--passphrase", PASS])
