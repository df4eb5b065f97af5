"""The guardian's encrypted key backup file: two layers, so custodians can hold the key without the passphrase.

    payload     opaque bytes from the node (its identity seed and sealed guardian secrets), sealed with a
                random 32-byte backup key by XSalsa20-Poly1305 (PyNaCl SecretBox)
    backup key  sealed under the guardian's passphrase by node.crypto.sealing (Argon2id + SecretBox,
                purpose "guardian-backup")

The passphrase opens the backup key, which opens the payload. `guardian backup split` shares the backup
key (never the passphrase) among custodians: any T of them give the key back, and the key opens the
payload when the passphrase is lost. Changing the passphrase never touches the custodians' shares, and a
custodian learns nothing about the passphrase the guardian may use elsewhere.

The file is a JSON object:
    format      "guardian-node key backup v1"
    meta        public facts, in the clear so anyone can tell which guardian and election a file is for:
                guardian (name), sequence, session (the ceremony session / election id, hex), public_key
                (the guardian's election public key, hex), commitments_digest (hex), created (UTC, ISO 8601)
    sealed_key  the backup key sealed under the passphrase (the JSON object of node.crypto.sealing)
    payload     base64 of the SecretBox ciphertext (nonce included) of
                canonical JSON {"format", "meta"} + "\\n" + the payload bytes
SecretBox has no associated data, so the header is authenticated by sealing it with the payload (as
node.crypto.sealing does): a file whose clear `meta` was edited does not open.

The fingerprint, for two people to read aloud and compare (the guardian and a witness, or the node and
the backup medium): SHA-256 over a domain tag, the file's bytes and the public key and commitments digest
it restores (each length-prefixed), truncated to 160 bits, in 8 groups of 4 characters of Crockford's
base32 (digits and capitals without I, L, O, U: no two sound or look alike). 160 bits leave no room for a
second file with the same fingerprint; 32 characters read aloud in under a minute.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Mapping

import nacl.exceptions
import nacl.secret

from node.config import check_name
from node.crypto.errors import EncodingError, InputError
from node.crypto.sealing import DEFAULT_MEMLIMIT, DEFAULT_OPSLIMIT, WrongPassphrase, seal, unseal
from node.custody import b32encode, write_new_file

FORMAT = "guardian-node key backup v1"
PURPOSE = "guardian-backup"
KEY_BYTES = nacl.secret.SecretBox.KEY_SIZE
MAX_PAYLOAD_BYTES = 16 * 2**20
MAX_FILE_BYTES = 2 * MAX_PAYLOAD_BYTES        # base64 and the JSON around it
MAX_SEQUENCE = 65535
_FIELDS = {"format", "meta", "sealed_key", "payload"}
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_FINGERPRINT_TAG = b"guardian-node backup fingerprint\x00"


class BackupFileError(EncodingError):
    """Not a backup file, or a truncated, damaged or altered one; the message names the file."""


class WrongBackupKey(InputError):
    """A backup key (e.g. recovered from shares) that does not open this backup file."""


@dataclass(frozen=True)
class BackupMeta:
    """What a backup is for, readable without the passphrase; authenticated once the payload opens."""
    guardian: str
    sequence: int
    session: str                 # hex
    public_key: str              # hex
    commitments_digest: str      # hex
    created: str                 # UTC, e.g. 2025-03-01T12:00:00Z

    @classmethod
    def make(cls, guardian: str, sequence: int, session: bytes | str, public_key: bytes | str,
             commitments_digest: bytes | str, created: str | None = None) -> "BackupMeta":
        """Bytes become hex; `created` defaults to now."""
        def text(v):
            return v.hex() if isinstance(v, bytes) else v
        return cls(guardian, sequence, text(session), text(public_key), text(commitments_digest),
                   created or _now()).checked("backup metadata")

    @classmethod
    def from_mapping(cls, doc: object, where: str) -> "BackupMeta":
        names = set(cls.__dataclass_fields__)
        if not isinstance(doc, Mapping) or set(doc) != names:
            raise BackupFileError(f"{where}: the metadata must hold exactly {sorted(names)}")
        return cls(**doc).checked(where)

    def checked(self, where: str) -> "BackupMeta":
        try:
            check_name(self.guardian, f"{where}: guardian")
        except InputError as e:
            raise BackupFileError(str(e)) from None
        if not isinstance(self.sequence, int) or isinstance(self.sequence, bool) \
                or not 1 <= self.sequence <= MAX_SEQUENCE:
            raise BackupFileError(f"{where}: sequence must be a guardian number from 1 to {MAX_SEQUENCE}")
        _check_hex(self.session, 1, 64, "session", where)
        _check_hex(self.public_key, 1, 2048, "public_key", where)
        _check_hex(self.commitments_digest, 16, 64, "commitments_digest", where)
        try:
            datetime.datetime.strptime(self.created, _TIME_FORMAT)
        except (TypeError, ValueError):
            raise BackupFileError(f"{where}: created must be a UTC time like 2025-03-01T12:00:00Z") from None
        return self

    def restamped(self) -> "BackupMeta":
        """The same facts, created now: for a new file holding the same payload."""
        return replace(self, created=_now())

    def to_dict(self) -> dict:
        return asdict(self)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime(_TIME_FORMAT)


def _check_hex(text: object, min_bytes: int, max_bytes: int, name: str, where: str) -> bytes:
    ok = isinstance(text, str) and text == text.lower() and min_bytes * 2 <= len(text) <= max_bytes * 2
    try:
        raw = bytes.fromhex(text) if ok else b""
    except ValueError:
        ok = False
    if not ok:
        raise BackupFileError(f"{where}: {name} must be {min_bytes} to {max_bytes} bytes in lower-case hex")
    return raw


def _as_meta(public_meta: BackupMeta | Mapping, where: str) -> BackupMeta:
    if isinstance(public_meta, BackupMeta):
        return public_meta.checked(where)
    doc = dict(public_meta) if isinstance(public_meta, Mapping) else public_meta
    if isinstance(doc, dict) and "created" not in doc:
        doc["created"] = _now()
    if isinstance(doc, dict):
        doc = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in doc.items()}
    return BackupMeta.from_mapping(doc, where)


# --- the fingerprint ---------------------------------------------------------------------------------


def fingerprint(file_bytes: bytes, public_meta: BackupMeta | Mapping) -> str:
    """8 groups of 4 characters over the file's bytes and the public key and commitments it restores."""
    if not isinstance(file_bytes, bytes):
        raise InputError("the fingerprint is over a file's bytes")
    meta = _as_meta(public_meta, "backup metadata")
    h = hashlib.sha256(_FINGERPRINT_TAG)
    for part in (file_bytes, bytes.fromhex(meta.public_key), bytes.fromhex(meta.commitments_digest)):
        h.update(len(part).to_bytes(8, "big") + part)
    text = b32encode(h.digest()[:20])
    return "-".join(text[i:i + 4] for i in range(0, 32, 4))


# --- writing -------------------------------------------------------------------------------------------


def _inner_header(meta: BackupMeta) -> bytes:
    return json.dumps({"format": FORMAT, "meta": meta.to_dict()}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def encode_backup(payload: bytes, public_meta: BackupMeta | Mapping, passphrase: str, *,
                  opslimit: int = DEFAULT_OPSLIMIT, memlimit: int = DEFAULT_MEMLIMIT) -> tuple[bytes, bytes]:
    """(the backup file's bytes, the new random backup key)."""
    if not isinstance(payload, bytes) or not 1 <= len(payload) <= MAX_PAYLOAD_BYTES:
        raise InputError(f"the backup payload must be 1 byte to {MAX_PAYLOAD_BYTES // 2**20} MiB")
    meta = _as_meta(public_meta, "backup metadata")
    backup_key = secrets.token_bytes(KEY_BYTES)
    sealed_key = seal(backup_key, passphrase, purpose=PURPOSE, opslimit=opslimit, memlimit=memlimit)
    box = nacl.secret.SecretBox(backup_key).encrypt(_inner_header(meta) + b"\n" + payload)
    doc = {"format": FORMAT, "meta": meta.to_dict(), "sealed_key": json.loads(sealed_key),
           "payload": base64.b64encode(bytes(box)).decode()}
    return json.dumps(doc, indent=1).encode() + b"\n", backup_key


def write_backup(path: Path, payload: bytes, public_meta: BackupMeta | Mapping, passphrase: str, *,
                 opslimit: int = DEFAULT_OPSLIMIT, memlimit: int = DEFAULT_MEMLIMIT) -> tuple[bytes, str]:
    """Write a new backup file (owner-only, never over an existing file): (backup key, fingerprint)."""
    meta = _as_meta(public_meta, "backup metadata")
    data, backup_key = encode_backup(payload, meta, passphrase, opslimit=opslimit, memlimit=memlimit)
    write_new_file(Path(path), data)
    return backup_key, fingerprint(data, meta)


# --- reading -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupFile:
    """A backup file as read; `meta` is what the file says, authenticated only once the payload opens."""
    where: str
    raw: bytes
    meta: BackupMeta
    sealed_key: bytes
    box: bytes

    def __repr__(self) -> str:
        return f"BackupFile({self.where}, guardian {self.meta.guardian!r})"

    def fingerprint(self, public_meta: BackupMeta | Mapping | None = None) -> str:
        """Over this file's bytes and the public key of `public_meta` (default: the file's own)."""
        return fingerprint(self.raw, self.meta if public_meta is None else public_meta)

    def open_key(self, passphrase: str) -> bytes:
        """The backup key, from the passphrase."""
        try:
            key = unseal(self.sealed_key, passphrase, purpose=PURPOSE)
        except WrongPassphrase:
            raise WrongPassphrase(f"{self.where}: wrong passphrase, or the sealed backup key was altered") \
                from None
        except EncodingError as e:
            raise BackupFileError(f"{self.where}: the sealed backup key is damaged: {e}") from None
        if len(key) != KEY_BYTES:
            raise BackupFileError(f"{self.where}: the sealed backup key is not {KEY_BYTES} bytes")
        return key

    def open_with_key(self, backup_key: bytes) -> bytes:
        """The payload; WrongBackupKey if this key does not open it."""
        if not isinstance(backup_key, bytes) or len(backup_key) != KEY_BYTES:
            raise WrongBackupKey(f"a backup key is {KEY_BYTES} bytes")
        try:
            inner = nacl.secret.SecretBox(backup_key).decrypt(self.box)
        except nacl.exceptions.CryptoError:
            raise WrongBackupKey(f"{self.where}: this key does not open the backup (shares of another "
                                 f"backup, or the file was altered)") from None
        header, _, payload = inner.partition(b"\n")
        if header != _inner_header(self.meta):
            raise BackupFileError(f"{self.where}: the public metadata was altered")
        return payload

    def open(self, passphrase: str) -> tuple[bytes, bytes]:
        """(payload, backup key) from the passphrase."""
        key = self.open_key(passphrase)
        try:
            return self.open_with_key(key), key
        except WrongBackupKey:
            # The passphrase opened this file's own key: so the payload, not the key, is at fault.
            raise BackupFileError(f"{self.where}: the backup's contents were altered or damaged") from None


def read_backup(path: Path) -> BackupFile:
    """Parse a backup file without opening it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise InputError(f"cannot read the backup file {path}: {e.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BackupFileError(f"{path} is too large to be a backup file")
    return read_backup_bytes(data, str(path))


def read_backup_bytes(data: bytes, where: str = "backup file") -> BackupFile:
    try:
        doc = json.loads(data)
    except ValueError:
        raise BackupFileError(f"{where} is not a backup file, or a truncated one") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupFileError(f"{where} is not a backup file ({FORMAT!r})")
    if set(doc) != _FIELDS:
        raise BackupFileError(f"{where} is damaged: it must hold exactly {sorted(_FIELDS)}")
    meta = BackupMeta.from_mapping(doc["meta"], where)
    if not isinstance(doc["sealed_key"], dict):
        raise BackupFileError(f"{where}: the sealed backup key is damaged")
    try:
        box = base64.b64decode(doc["payload"], validate=True)
    except (TypeError, ValueError):
        raise BackupFileError(f"{where}: the payload is not base64: the file is damaged") from None
    if len(box) < nacl.secret.SecretBox.NONCE_SIZE + nacl.secret.SecretBox.MACBYTES:
        raise BackupFileError(f"{where}: the payload is too short: the file is damaged")
    return BackupFile(where, bytes(data), meta, json.dumps(doc["sealed_key"]).encode(), box)


def open_backup(path: Path, passphrase: str) -> tuple[bytes, BackupMeta]:
    """(payload, metadata), with the guardian's passphrase."""
    backup = read_backup(path)
    payload, _ = backup.open(passphrase)
    return payload, backup.meta


def open_backup_with_key(path: Path, backup_key: bytes) -> tuple[bytes, BackupMeta]:
    """(payload, metadata), with the backup key (e.g. recovered from the custodians' shares)."""
    backup = read_backup(path)
    return backup.open_with_key(backup_key), backup.meta


def open_backup_key(path: Path, passphrase: str) -> bytes:
    """The backup key, checked to open the payload: what `backup split` shares among custodians."""
    _, key = read_backup(path).open(passphrase)
    return key
