"""The election record directory: file names, atomic writes and the index of SHA-256 digests.

Every file of a record is written whole or not at all: to a temporary file in
the same directory, fsync, rename over the final name, fsync the directory. A
crash therefore leaves either the old file or the new one, never a torn one;
what it can leave behind is a stray temporary file (named `.NAME.tmp.*`), which
the ballot box removes when it next opens and the verifier reports.

index.json maps the relative path of every other file to its SHA-256; the
writers update it at the end of each operation.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterable

from node.crypto.errors import InputError

from node.record import codec

INDEX = "index.json"
PARAMETERS = "election_parameters.json"
MANIFEST = "election_manifest.json"
HASHES = "hashes.json"
JOINT_KEY = "joint_election_public_key.json"
HASHES_EXT = "hashes_ext.json"
CEREMONY = "key_ceremony.json"
GUARDIANS = "guardians"
BALLOTS = "ballots"
CHALLENGED = "challenged"
DEVICES = "devices.json"
JOURNAL = "ballot_box.jsonl"
ENCRYPTED_TALLY = "encrypted_tally.json"
DECRYPTED_TALLY = "decrypted_tally.json"

ELECTION_FILES = (PARAMETERS, MANIFEST, HASHES, JOINT_KEY, HASHES_EXT, CEREMONY)

# Ballot ids become file names: a portable set of characters, no leading dot, bounded length.
BALLOT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TEMP = re.compile(r"\..+\.tmp\.[0-9]+\.[0-9a-f]+")


def check_ballot_id(ballot_id: object) -> str:
    """Return the id if it is safe as a file name, else raise InputError saying what is allowed."""
    if not isinstance(ballot_id, str) or not BALLOT_ID.fullmatch(ballot_id):
        raise InputError(f"ballot id {ballot_id!r} is not allowed: use 1 to 64 characters from A-Z a-z 0-9 . _ - "
                         f"starting with a letter or digit")
    return ballot_id


def guardian_file(index: int) -> str:
    return f"{GUARDIANS}/guardian_{index}.public_key.json"


def ballot_file(ballot_id: str) -> str:
    return f"{BALLOTS}/{check_ballot_id(ballot_id)}.json"


def challenged_file(ballot_id: str) -> str:
    return f"{CHALLENGED}/{check_ballot_id(ballot_id)}.json"


def is_temp_name(name: str) -> bool:
    return bool(_TEMP.fullmatch(name))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest().upper()


def file_hasher(path: Path) -> "hashlib._Hash":
    """SHA-256 over the file's bytes so far, read a MiB at a time (to go on with as the file grows)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h


def sha256_file(path: Path) -> str:
    return file_hasher(path).hexdigest().upper()


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in `path` durable (POSIX: the directory entry is data of the directory)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves the old content or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


class Record:
    """A record directory. Paths given to its methods are relative, with '/' separators."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def read(self, rel: str) -> bytes:
        try:
            return self.path(rel).read_bytes()
        except FileNotFoundError:
            raise InputError(f"{self.root}: the record has no {rel}") from None
        except OSError as e:
            raise InputError(f"{self.root}: cannot read {rel}: {e.strerror}") from None

    def read_json(self, rel: str) -> object:
        return codec.load_json(self.read(rel), rel)

    def write(self, rel: str, data: bytes) -> str:
        """Write a file atomically; return its SHA-256 for the index."""
        atomic_write(self.path(rel), data)
        return sha256_hex(data)

    def write_json(self, rel: str, obj: object) -> str:
        return self.write(rel, codec.canonical_bytes(obj))

    def files(self) -> list[str]:
        """Every file below the root except index.json, as sorted relative paths; symlinks included."""
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in filenames:
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                if rel != INDEX:
                    out.append(rel)
        return sorted(out)

    def list_dir(self, rel: str, suffix: str = ".json") -> list[str]:
        """The non-temporary files directly in a subdirectory, as relative paths."""
        d = self.path(rel)
        if not d.is_dir():
            return []
        return sorted(f"{rel}/{p.name}" for p in d.iterdir()
                      if p.name.endswith(suffix) and not is_temp_name(p.name) and not p.name.startswith("."))

    # --- the index ----------------------------------------------------------------------------

    def read_index(self) -> dict[str, str]:
        if not self.exists(INDEX):
            return {}
        return codec.index_from_json(self.read_json(INDEX))

    def update_index(self, changed: Iterable[str] = (), known: dict[str, str] | None = None) -> dict[str, str]:
        """Re-hash the `changed` paths (dropping those that no longer exist) and rewrite index.json.

        `known` gives digests the caller has just computed, to avoid reading the file again.
        """
        index = self.read_index()
        known = known or {}
        for rel in set(changed) | set(known):
            if rel == INDEX:
                continue
            if rel in known and self.exists(rel):
                index[rel] = known[rel]
            elif self.exists(rel):
                index[rel] = sha256_file(self.path(rel))
            else:
                index.pop(rel, None)
        self.write_json(INDEX, codec.index_to_json(index))
        return index

    def rebuild_index(self) -> dict[str, str]:
        """Hash every file (except temporary ones) and rewrite index.json."""
        index = {rel: sha256_file(self.path(rel)) for rel in self.files()
                 if not is_temp_name(rel.rsplit("/", 1)[-1])}
        self.write_json(INDEX, codec.index_to_json(index))
        return index

    def remove_temp_files(self) -> list[str]:
        """Delete the temporary files a crash may have left; return their paths."""
        removed = []
        for rel in self.files():
            if is_temp_name(rel.rsplit("/", 1)[-1]):
                os.unlink(self.path(rel))
                removed.append(rel)
        return removed


def is_election_dir(root: Path) -> bool:
    return all((root / name).is_file() for name in (PARAMETERS, MANIFEST, JOINT_KEY))
