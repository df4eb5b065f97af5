"""The election of a record: the files that define it, Verifications 1-4 over them, an opened election.

Nothing in these files that can be recomputed is trusted: H_P, H_B, K, K-hat and
H_E are recomputed and compared, and the recomputed values are the ones handed
on. The verifier reports every failure of these checks; the ballot box,
encryption and the decryption policy open an election only when all of them
pass (open_election).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from node.crypto.election import ElectionContext, ElectionParameters
from node.crypto.errors import GuardianError, InputError
from node.crypto.hashing import election_base_hash, extended_base_hash, guardian_record_hash, parameter_base_hash
from node.crypto.keys import GuardianPublicKey, joint_key, verify_guardian_public_key
from node.crypto.manifest import Manifest, parse_manifest
from node.crypto.params import STANDARD

from node.record import codec, layout


class Findings:
    """What a check found: how many items it looked at, its failures (each naming the object at fault), a note."""

    def __init__(self) -> None:
        self.items, self.failures, self.count, self.note = 0, [], 0, ""

    def fail(self, message: str) -> None:
        self.count += 1
        self.failures.append(message)


@dataclass
class ElectionFiles:
    """The election's files as read from a record, with the reason for each one that could not be read."""

    record: layout.Record
    errors: dict[str, str] = field(default_factory=dict)      # relative path -> why it could not be read
    params: codec.RecordParameters | None = None
    manifest: Manifest | None = None
    manifest_bytes: bytes | None = None
    hashes: codec.Hashes | None = None
    joint: codec.JointKeys | None = None
    h_e_file: bytes | None = None
    ceremony: tuple[bytes, str] | None = None
    guardians: dict[int, tuple[str, GuardianPublicKey]] = field(default_factory=dict)   # index -> (path, key)

    def read(self, rel: str, parse):
        if not self.record.exists(rel):
            self.errors[rel] = f"the record has no {rel}"
            return None
        try:
            return parse(self.record.read_json(rel))
        except GuardianError as e:
            self.errors[rel] = f"{rel}: {e}"
            return None

    def error(self, rel: str) -> str:
        return self.errors.get(rel, f"{rel} could not be read")

    def read_election(self) -> None:
        group = STANDARD      # the reader's own parameters (Verification 1 may hard-code them)
        record = self.record
        self.params = self.read(layout.PARAMETERS, codec.parameters_from_json)
        if record.exists(layout.MANIFEST):
            self.manifest_bytes = record.read(layout.MANIFEST)
            try:
                self.manifest = parse_manifest(self.manifest_bytes, strict=False)   # written by any tool: deviations are warnings
            except GuardianError as e:
                self.errors[layout.MANIFEST] = f"{layout.MANIFEST}: {e}"
        else:
            self.errors[layout.MANIFEST] = f"the record has no {layout.MANIFEST}"
        self.hashes = self.read(layout.HASHES, codec.hashes_from_json)
        self.joint = self.read(layout.JOINT_KEY, lambda o: codec.joint_keys_from_json(group, o))
        self.h_e_file = self.read(layout.HASHES_EXT, codec.hashes_ext_from_json)
        if record.exists(layout.CEREMONY):
            self.ceremony = self.read(layout.CEREMONY, codec.ceremony_from_json)
        for rel in record.list_dir(layout.GUARDIANS):
            key = self.read(rel, lambda o, rel=rel: codec.guardian_key_from_json(group, o, rel))
            if key is not None:
                if key.index in self.guardians:
                    self.errors[rel] = f"{rel}: guardian {key.index} also in {self.guardians[key.index][0]}"
                else:
                    self.guardians[key.index] = (rel, key)


@dataclass
class Election:
    """What Verifications 1-4 recomputed; everything after them uses these values, not the files' copies."""

    parameters: ElectionParameters | None = None
    h_p: bytes | None = None
    h_b: bytes | None = None
    h_e: bytes | None = None
    keys: dict[int, GuardianPublicKey] = field(default_factory=dict)     # those whose proofs verify
    context: ElectionContext | None = None


@dataclass(frozen=True)
class Verification:
    """One of Verifications 1-4: its number and name (as the verifier reports it) and its check.

    Each check needs what the ones before it recomputed: Verification 2 and 3
    need valid parameters, 4 needs K and K-hat.
    """

    number: str
    name: str
    check: Callable[[ElectionFiles, Election, Findings], None]


def _parameters(files: ElectionFiles, el: Election, found: Findings) -> None:
    """Verification 1: version, the standard p, q, g, and H_P, H_B recomputed."""
    params = files.params
    if params is None:
        found.fail(files.error(layout.PARAMETERS))
    else:
        found.items += 4
        if params.version != codec.SPEC_VERSION:                                        # (1.A)
            found.fail(f"election_parameters: specification version {'.'.join(map(str, params.version))}; "
                       f"this verifier checks version 2.1 (1.A)")
        if params.generation is not None and dict(params.generation) != codec.STANDARD_GENERATION:
            found.fail("election_parameters: generation_parameters are not those of the standard group (1.A)")
        for name, have, want in (("p", params.group.p, STANDARD.p), ("q", params.group.q, STANDARD.q),
                                 ("g", params.group.g, STANDARD.g)):                     # (1.B)-(1.D)
            if have != want:
                found.fail(f"election_parameters: {name} is not the standard {name} of spec 3.1.1 "
                           f"(1.{'BCD'['pqg'.index(name)]})")
    manifest = files.manifest
    if manifest is None:
        found.fail(files.error(layout.MANIFEST))
    if params is not None and manifest is not None:
        el.parameters = ElectionParameters(STANDARD, params.n, params.k, manifest)
        el.h_p = parameter_base_hash(STANDARD, params.n, params.k)                       # eq 4
        el.h_b = election_base_hash(el.h_p, manifest.canonical_bytes())                 # eq 5, over the canonical bytes
        found.items += 2
        if files.hashes is None:
            found.fail(files.error(layout.HASHES))
        else:
            if files.hashes.h_p != el.h_p:                                                 # (1.E)
                found.fail("hashes: h_p is not H(ver; 0x00, p, q, g, n, k) (1.E)")
            if files.hashes.h_b != el.h_b:                                                 # (1.F)
                found.fail("hashes: h_b is not H(H_P; 0x01, manifest) (1.F)")


PARAMETERS = Verification("1", "parameters", _parameters)


def _guardian_keys(files: ElectionFiles, el: Election, found: Findings) -> None:
    """Verification 2: every guardian's commitments in Z_p^r and both Schnorr proofs (eqs 11, 13)."""
    n, k = el.parameters.n, el.parameters.k
    for rel, err in files.errors.items():
        if rel.startswith(layout.GUARDIANS + "/"):
            found.fail(err)
    for i in range(1, n + 1):
        found.items += 1
        entry = files.guardians.get(i)
        if entry is None:
            found.fail(f"guardian {i}: no public key in the record ({layout.guardian_file(i)})")
            continue
        rel, key = entry
        if rel != layout.guardian_file(i):
            found.fail(f"guardian {i}: its key is in {rel}, expected {layout.guardian_file(i)}")
        try:
            verify_guardian_public_key(STANDARD, el.parameters.g_table, el.h_p, key, k)    # (2.A)-(2.C)
            el.keys[i] = key
        except GuardianError as e:
            found.fail(str(e))
    for i, (rel, _) in sorted(files.guardians.items()):
        if not 1 <= i <= n:
            found.fail(f"guardian {i} ({rel}): the election has guardians 1..{n} only")


GUARDIAN_KEYS = Verification("2", "guardian public keys", _guardian_keys)


def _election_key(files: ElectionFiles, el: Election, found: Findings) -> None:
    """Verification 3: K and K-hat are the products of the guardians' keys; H_G (eq 27) if recorded."""
    n = el.parameters.n
    have = [files.guardians[i][1] for i in range(1, n + 1) if i in files.guardians]
    if len(have) != n:
        found.fail(f"cannot compute K and K-hat: {n - len(have)} guardian keys are missing")
        return
    k_joint = joint_key(STANDARD, [pk.key for pk in have])                   # (3.A) eq 25
    k_hat = joint_key(STANDARD, [pk.data_key for pk in have])                # (3.B) eq 26
    found.items += 2
    if files.joint is None:
        found.fail(files.error(layout.JOINT_KEY))
    else:
        if files.joint.joint_key != k_joint:
            found.fail("joint_election_public_key: K is not the product of the guardians' keys K_i (3.A)")
        if files.joint.joint_data_key != k_hat:
            found.fail("joint_election_public_key: K-hat is not the product of the guardians' keys K-hat_i (3.B)")
    if files.ceremony is not None:
        found.items += 1
        h_g = guardian_record_hash(STANDARD, el.h_b, k_joint, k_hat, [pk.commitments for pk in have],
                                   [pk.data_commitments for pk in have],
                                   [pk.communication_key for pk in have])             # eq 27
        if files.ceremony[0] != h_g:
            found.fail("key_ceremony: h_g is not H(H_B; 0x13, K, K-hat, commitments, kappas) (eq 27)")
    elif layout.CEREMONY in files.errors:
        found.fail(files.errors[layout.CEREMONY])
    if len(el.keys) != n:
        found.note = "later steps use K recomputed from keys whose proofs failed"
    el.context = ElectionContext(el.parameters, k_joint, k_hat)


ELECTION_KEY = Verification("3", "election public key", _election_key)


def _extended_hash(files: ElectionFiles, el: Election, found: Findings) -> None:
    """Verification 4: H_E = H(H_B; 0x14, K, K-hat), and hashes_ext.json holds it."""
    ctx = el.context
    el.h_e = extended_base_hash(STANDARD, el.h_b, ctx.joint_key, ctx.joint_data_key)   # (4.A) eq 30
    found.items += 1
    if files.h_e_file is None:
        found.fail(files.error(layout.HASHES_EXT))
    elif files.h_e_file != el.h_e:
        found.fail("hashes_ext: h_e is not H(H_B; 0x14, K, K-hat) (4.A)")


EXTENDED_HASH = Verification("4", "extended base hash", _extended_hash)
VERIFICATIONS = (PARAMETERS, GUARDIAN_KEYS, ELECTION_KEY, EXTENDED_HASH)


@dataclass(frozen=True)
class OpenElection:
    """An election directory whose Verifications 1-4 passed: the context built from recomputed values."""

    context: ElectionContext
    parameters: codec.RecordParameters
    keys: tuple[GuardianPublicKey, ...]
    record: layout.Record


def open_election(root: Path | str, window: int = 8) -> OpenElection:
    """Load an election (or record) directory and run Verifications 1-4; GuardianError on any failure."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    if not layout.is_election_dir(root):
        raise InputError(f"{root}: not an election directory (no {layout.PARAMETERS}, {layout.MANIFEST} "
                         f"or {layout.JOINT_KEY}); create one with `guardian election create-local`")
    files = ElectionFiles(layout.Record(root))
    files.read_election()
    el = Election()
    for v in VERIFICATIONS:
        found = Findings()
        v.check(files, el, found)
        if found.failures:
            raise InputError(f"{root}: the election does not verify: {found.failures[0]} (step {v.number} {v.name})")
    ctx = el.context
    if window != 8:
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=window)
    return OpenElection(ctx, files.params, tuple(el.keys[i] for i in sorted(el.keys)), files.record)
