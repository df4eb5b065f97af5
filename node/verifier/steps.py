"""The independent verifier of an election record (design spec section 6).

Each verification step is a function that returns a StepResult: the step's
name, pass / FAIL / n/a, how many items it checked, the time it took and, for
each failure, a message that names the object at fault (guardian, ballot,
contest, option). Nothing in the record that can be recomputed is trusted:
H_P, H_B, K, K-hat, H_E, H_I, contest hashes, confirmation codes, chain hashes
and the aggregate are recomputed and compared, and the recomputed values are
the ones used by the later steps.

Speed. The per-ballot work (Verifications 5.B, 6, 7, 8.A-8.D and the ballot
signatures) runs on every core. Received group elements are checked for
membership in batches (node.crypto.group.check_elements). The decryption proofs
of the tally and of the challenged ballots are checked as one batch of
equations: every equation has the form prod(x^e) = prod(y^f) over elements of
the order-q subgroup, so raising each to an independent random 128-bit weight
and multiplying them all gives one multi-exponentiation that equals 1 for valid
equations and, for any false one, equals 1 with probability at most 2^-127
(q is prime). Only when a batch fails are its equations evaluated one by one,
to name the culprit. The hash checks ((10.B) and its analogue for ballot nonces)
are done exactly, over the published commitments.
"""

from __future__ import annotations

import multiprocessing
import os
from contextlib import contextmanager
import secrets
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import gmpy2
from gmpy2 import mpz

from node.crypto.ballot import (
    NO_CHAINING, SIMPLE_CHAINING, BallotChain, confirmation_code, contest_hash, decrypt_ballot_nonce,
    election_id, identifier_hash, nonce_for_selection, signature_content, unchained_field,
    verify_encrypted_nonce,
)
from node.crypto.ballot_signature import verify_ballot_signature
from node.crypto.challenged import nonce_statement
from node.crypto.decryption import Part, PublicShares, TallyStatement, plan_parts
from node.crypto.election import ElectionContext, ElectionParameters
from node.crypto.elgamal import aggregate, encrypt
from node.crypto.errors import GuardianError, InputError
from node.crypto.fixed_base import FixedBase, multi_exp
from node.crypto.group import check_element, check_elements, check_scalar
from node.crypto.hashing import election_base_hash, extended_base_hash, guardian_record_hash, parameter_base_hash
from node.crypto.keys import GuardianPublicKey, joint_key, verify_guardian_public_key
from node.crypto.manifest import Manifest, parse_manifest
from node.crypto.params import STANDARD
from node.crypto.range_proof import contest_prefix, selection_prefix, verify_range

from node.record import codec, layout

STEPS: tuple[tuple[str, str], ...] = (
    ("1", "parameters"),
    ("2", "guardian public keys"),
    ("3", "election public key"),
    ("4", "extended base hash"),
    ("5", "selection identifiers"),
    ("6", "selection well-formedness"),
    ("7", "vote limits"),
    ("8", "confirmation codes"),
    ("9", "aggregation"),
    ("10", "tally decryption"),
    ("11", "tally contents"),
    ("12", "contest data"),
    ("13", "challenged ballot decryption"),
    ("14", "challenged ballot contents"),
    ("", "ballot signatures"),
    ("", "record index"),
)
STEP_NUMBER = {name: number for number, name in STEPS}
MAX_FAILURES_KEPT = 1000
BULK_BALLOTS = 64
BATCH_WEIGHT_BITS = 128


@dataclass
class StepResult:
    """The outcome of one verification step. ok is None when the step does not apply (n/a)."""

    step: str
    ok: bool | None
    items: int
    seconds: float
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    note: str = ""

    @property
    def number(self) -> str:
        return STEP_NUMBER.get(self.step, "")

    @property
    def result(self) -> str:
        return "n/a" if self.ok is None else ("pass" if self.ok else "FAIL")

    @property
    def failure(self) -> str | None:
        """The first failure, naming the object at fault; None when the step passed."""
        return self.failures[0] if self.failures else None

    def to_json(self) -> dict:
        d = {"number": self.number, "step": self.step, "result": self.result, "items": self.items,
             "seconds": round(self.seconds, 3), "failures": self.failures}
        if self.failure_count > len(self.failures):
            d["failures_not_shown"] = self.failure_count - len(self.failures)
        if self.note:
            d["note"] = self.note
        return d


class _Acc:
    """Collects one step's items, failures and time."""

    def __init__(self, step: str) -> None:
        self.step, self.items, self.failures, self.count, self.seconds = step, 0, [], 0, 0.0
        self.not_applicable = False
        self.note = ""

    def fail(self, message: str) -> None:
        self.count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(message)

    def result(self) -> StepResult:
        ok = None if self.not_applicable else not self.count
        return StepResult(self.step, ok, self.items, self.seconds, self.failures, self.count, self.note)


class _Timer:
    def __init__(self, acc: _Acc) -> None:
        self.acc = acc

    def __enter__(self):
        self.start = time.perf_counter()
        return self.acc

    def __exit__(self, *exc):
        self.acc.seconds += time.perf_counter() - self.start
        return False


# --------------------------------------------------------------------------- loading


@dataclass
class _Loaded:
    """Everything read from the record, with the reason for each object that could not be read."""

    record: layout.Record
    errors: dict[str, str] = field(default_factory=dict)      # relative path -> why it could not be read
    params: codec.RecordParameters | None = None
    manifest: Manifest | None = None
    manifest_bytes: bytes | None = None
    hashes: codec.Hashes | None = None
    joint: codec.JointKeys | None = None
    h_e_file: bytes | None = None
    ceremony: tuple[bytes, str] | None = None
    guardians: dict[int, tuple[str, GuardianPublicKey]] = field(default_factory=dict)
    ballots: dict[str, tuple[str, codec.BallotRecord]] = field(default_factory=dict)   # id -> (path, record)
    devices: tuple[bytes, list[codec.DeviceRecord]] | None = None
    encrypted_tally: tuple | None = None
    decrypted_tally: codec.DecryptedTallyRecord | None = None
    challenged: dict[str, tuple[str, codec.ChallengedRecord]] = field(default_factory=dict)

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


def _load(root: Path, election_only: bool = False) -> _Loaded:
    record = layout.Record(root)
    data = _Loaded(record)
    data.params = data.read(layout.PARAMETERS, codec.parameters_from_json)
    group = STANDARD      # the verifier's own parameters (Verification 1 may hard-code them)
    if record.exists(layout.MANIFEST):
        data.manifest_bytes = record.read(layout.MANIFEST)
        try:
            data.manifest = parse_manifest(data.manifest_bytes)
        except GuardianError as e:
            data.errors[layout.MANIFEST] = f"{layout.MANIFEST}: {e}"
    else:
        data.errors[layout.MANIFEST] = f"the record has no {layout.MANIFEST}"
    data.hashes = data.read(layout.HASHES, codec.hashes_from_json)
    data.joint = data.read(layout.JOINT_KEY, lambda o: codec.joint_keys_from_json(group, o))
    data.h_e_file = data.read(layout.HASHES_EXT, codec.hashes_ext_from_json)
    if record.exists(layout.CEREMONY):
        data.ceremony = data.read(layout.CEREMONY, codec.ceremony_from_json)
    for rel in record.list_dir(layout.GUARDIANS):
        key = data.read(rel, lambda o, rel=rel: codec.guardian_key_from_json(group, o, rel))
        if key is not None:
            if key.index in data.guardians:
                data.errors[rel] = f"{rel}: guardian {key.index} also in {data.guardians[key.index][0]}"
            else:
                data.guardians[key.index] = (rel, key)
    if election_only:
        return data
    for rel in record.list_dir(layout.BALLOTS):
        b = data.read(rel, lambda o, rel=rel: codec.ballot_from_json(group, o, rel))
        if b is not None:
            if b.ballot_id in data.ballots:
                data.errors[rel] = f"{rel}: ballot {b.ballot_id!r} is also in {data.ballots[b.ballot_id][0]}"
            else:
                data.ballots[b.ballot_id] = (rel, b)
    if record.exists(layout.DEVICES):
        data.devices = data.read(layout.DEVICES, codec.devices_from_json)
    data.encrypted_tally = data.read(layout.ENCRYPTED_TALLY, lambda o: codec.encrypted_tally_from_json(group, o))
    data.decrypted_tally = data.read(layout.DECRYPTED_TALLY, lambda o: codec.decrypted_tally_from_json(group, o))
    for rel in record.list_dir(layout.CHALLENGED):
        c = data.read(rel, lambda o, rel=rel: codec.challenged_from_json(group, o, rel))
        if c is not None:
            if c.ballot_id in data.challenged:
                data.errors[rel] = f"{rel}: ballot {c.ballot_id!r} is also in {data.challenged[c.ballot_id][0]}"
            else:
                data.challenged[c.ballot_id] = (rel, c)
    return data


# --------------------------------------------------------------------------- steps 1-4: the election


@dataclass
class _Election:
    """What steps 1-4 recomputed; later steps use these values, not the record's copies."""

    parameters: ElectionParameters | None = None
    h_p: bytes | None = None
    h_b: bytes | None = None
    keys: dict[int, GuardianPublicKey] = field(default_factory=dict)
    context: ElectionContext | None = None


def step_parameters(data: _Loaded, el: _Election) -> StepResult:
    """Verification 1: version, the standard p, q, g, and H_P, H_B recomputed."""
    acc = _Acc("parameters")
    with _Timer(acc):
        params = data.params
        if params is None:
            acc.fail(data.error(layout.PARAMETERS))
        else:
            acc.items += 4
            if params.version != codec.SPEC_VERSION:                                        # (1.A)
                acc.fail(f"election_parameters: specification version {'.'.join(map(str, params.version))}; "
                         f"this verifier checks version 2.1 (1.A)")
            if params.generation is not None and dict(params.generation) != codec.STANDARD_GENERATION:
                acc.fail("election_parameters: generation_parameters are not those of the standard group (1.A)")
            for name, have, want in (("p", params.group.p, STANDARD.p), ("q", params.group.q, STANDARD.q),
                                     ("g", params.group.g, STANDARD.g)):                     # (1.B)-(1.D)
                if have != want:
                    acc.fail(f"election_parameters: {name} is not the standard {name} of spec 3.1.1 "
                             f"(1.{'BCD'['pqg'.index(name)]})")
        manifest = data.manifest
        if manifest is None:
            acc.fail(data.error(layout.MANIFEST))
        elif data.manifest_bytes != manifest.canonical_bytes():
            acc.fail(f"{layout.MANIFEST}: not in canonical form, so H_B over it is ambiguous")
        if params is not None and manifest is not None:
            el.parameters = ElectionParameters(STANDARD, params.n, params.k, manifest)
            el.h_p = parameter_base_hash(STANDARD, params.n, params.k)                       # eq 4
            el.h_b = election_base_hash(el.h_p, data.manifest_bytes)                         # eq 5
            acc.items += 2
            if data.hashes is None:
                acc.fail(data.error(layout.HASHES))
            else:
                if data.hashes.h_p != el.h_p:                                                  # (1.E)
                    acc.fail("hashes: h_p is not H(ver; 0x00, p, q, g, n, k) (1.E)")
                if data.hashes.h_b != el.h_b:                                                  # (1.F)
                    acc.fail("hashes: h_b is not H(H_P; 0x01, manifest) (1.F)")
    return acc.result()


def step_guardian_keys(data: _Loaded, el: _Election) -> StepResult:
    """Verification 2: every guardian's commitments in Z_p^r and both Schnorr proofs (eqs 11, 13)."""
    acc = _Acc("guardian public keys")
    with _Timer(acc):
        if el.parameters is None:
            acc.fail("cannot check the guardians' keys without valid parameters (step 1)")
            return acc.result()
        n, k = el.parameters.n, el.parameters.k
        for rel, err in data.errors.items():
            if rel.startswith(layout.GUARDIANS + "/"):
                acc.fail(err)
        for i in range(1, n + 1):
            acc.items += 1
            entry = data.guardians.get(i)
            if entry is None:
                acc.fail(f"guardian {i}: no public key in the record ({layout.guardian_file(i)})")
                continue
            rel, key = entry
            if rel != layout.guardian_file(i):
                acc.fail(f"guardian {i}: its key is in {rel}, expected {layout.guardian_file(i)}")
            try:
                verify_guardian_public_key(STANDARD, el.parameters.g_table, el.h_p, key, k)   # (2.A)-(2.C)
                el.keys[i] = key
            except GuardianError as e:
                acc.fail(str(e))
        for i, (rel, _) in sorted(data.guardians.items()):
            if not 1 <= i <= n:
                acc.fail(f"guardian {i} ({rel}): the election has guardians 1..{n} only")
    return acc.result()


def step_election_key(data: _Loaded, el: _Election) -> StepResult:
    """Verification 3: K and K-hat are the products of the guardians' keys; H_G (eq 27) if recorded."""
    acc = _Acc("election public key")
    with _Timer(acc):
        if el.parameters is None:
            acc.fail("cannot compute K without valid parameters (step 1)")
            return acc.result()
        n = el.parameters.n
        have = [data.guardians[i][1] for i in range(1, n + 1) if i in data.guardians]
        if len(have) != n:
            acc.fail(f"cannot compute K and K-hat: {n - len(have)} guardian keys are missing")
            return acc.result()
        k_joint = joint_key(STANDARD, [pk.key for pk in have])                   # (3.A) eq 25
        k_hat = joint_key(STANDARD, [pk.data_key for pk in have])                # (3.B) eq 26
        acc.items += 2
        if data.joint is None:
            acc.fail(data.error(layout.JOINT_KEY))
        else:
            if data.joint.joint_key != k_joint:
                acc.fail("joint_election_public_key: K is not the product of the guardians' keys K_i (3.A)")
            if data.joint.joint_data_key != k_hat:
                acc.fail("joint_election_public_key: K-hat is not the product of the guardians' keys "
                         "K-hat_i (3.B)")
        if data.ceremony is not None:
            acc.items += 1
            h_g = guardian_record_hash(STANDARD, el.h_b, k_joint, k_hat, [pk.commitments for pk in have],
                                       [pk.data_commitments for pk in have],
                                       [pk.communication_key for pk in have])             # eq 27
            if data.ceremony[0] != h_g:
                acc.fail("key_ceremony: h_g is not H(H_B; 0x13, K, K-hat, commitments, kappas) (eq 27)")
        elif layout.CEREMONY in data.errors:
            acc.fail(data.errors[layout.CEREMONY])
        if len(el.keys) != n:
            acc.note = "later steps use K recomputed from keys whose proofs failed"
        el.context = ElectionContext(el.parameters, k_joint, k_hat)
    return acc.result()


def step_extended_hash(data: _Loaded, el: _Election) -> StepResult:
    """Verification 4: H_E = H(H_B; 0x14, K, K-hat); every object that names H_E names this one."""
    acc = _Acc("extended base hash")
    with _Timer(acc):
        ctx = el.context
        if ctx is None:
            acc.fail("cannot compute H_E without K and K-hat (step 3)")
            return acc.result()
        h_e = extended_base_hash(STANDARD, el.h_b, ctx.joint_key, ctx.joint_data_key)     # (4.A) eq 30
        acc.items += 1
        if data.h_e_file is None:
            acc.fail(data.error(layout.HASHES_EXT))
        elif data.h_e_file != h_e:
            acc.fail("hashes_ext: h_e is not H(H_B; 0x14, K, K-hat) (4.A)")
        named = [(f"ballot {bid!r}", b.h_e) for bid, (_, b) in sorted(data.ballots.items())]
        named += [(f"challenged ballot {bid!r}", c.h_e) for bid, (_, c) in sorted(data.challenged.items())]
        if data.encrypted_tally is not None:
            named.append(("encrypted tally", data.encrypted_tally[0]))
        if data.decrypted_tally is not None:
            named.append(("decrypted tally", data.decrypted_tally.h_e))
        if data.devices is not None:
            named.append(("devices", data.devices[0]))
        for who, value in named:
            acc.items += 1
            if value != h_e:
                acc.fail(f"{who}: belongs to another election (its h_e is not this election's H_E)")
    return acc.result()


# --------------------------------------------------------------------------- per-ballot checks (all cores)

_worker_ctx: ElectionContext | None = None


def _init_worker(ctx: ElectionContext) -> None:
    global _worker_ctx
    _worker_ctx = ctx


def _check_ballot_in_worker(rec: codec.BallotRecord) -> dict:
    return check_ballot(_worker_ctx, rec)


def check_ballot(ctx: ElectionContext, rec: codec.BallotRecord) -> dict:
    """Verifications 5.B, 6, 7, 8.A-8.D and the signature for one ballot.

    Returns {step name: (items, [failures], seconds)}; never raises for a bad ballot.
    """
    out = {name: [0, [], 0.0] for name in ("selection identifiers", "selection well-formedness", "vote limits",
                                             "confirmation codes", "ballot signatures")}
    b = rec.ballot
    who = f"ballot {b.ballot_id!r}"
    group, manifest = ctx.group, ctx.manifest

    @contextmanager
    def timed(step: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            out[step][2] += time.perf_counter() - start

    with timed("selection identifiers"):
        out["selection identifiers"][0] += 1
        h_i = identifier_hash(ctx.h_e, b.selection_identifier)                  # (5.B) eq 32
        if h_i != rec.identifier_hash:
            out["selection identifiers"][1].append(
                f"{who}: selection_encryption_identifier_hash is not H(H_E; 0x20, id_B) (5.B)")

    with timed("selection well-formedness"):
        wf = out["selection well-formedness"][1]
        structure_ok = True
        try:
            style = manifest.ballot_style(b.style_index)
            expected = sorted(style.contests)
            if [c.contest_index for c in b.contests] != expected:
                wf.append(f"{who}: contests {[c.contest_index for c in b.contests]} do not match ballot style "
                          f"{style.label!r} ({expected})")
                structure_ok = False
        except GuardianError:
            wf.append(f"{who}: unknown ballot style {b.style_index}")
            structure_ok = False
        if structure_ok:
            for ec in b.contests:
                contest = manifest.contest(ec.contest_index)
                if len(ec.selections) != len(contest.options):
                    wf.append(f"{who} contest {contest.index}: {len(ec.selections)} selections, the manifest has "
                              f"{len(contest.options)} options")
                    structure_ok = False
    if not structure_ok:
        return {k: tuple(v) for k, v in out.items()}

    with timed("selection well-formedness"):
        nonce_what = f"{who} encrypted ballot nonce"
        items = [(b.encrypted_nonce.c0, f"{nonce_what} C0")]
        for ec in b.contests:
            for s in ec.selections:
                where = f"{who} contest {ec.contest_index} option {s.option_index}"
                items += [(s.ciphertext.alpha, f"{where} alpha"), (s.ciphertext.beta, f"{where} beta")]
        bad: set[str] = set()
        try:
            check_elements(group, items)                                           # (6.A), (7.A) batched
        except GuardianError:
            for x, what in items:                                                  # name every culprit
                try:
                    check_element(group, x, what)
                except GuardianError as e:
                    wf.append(f"{e} (6.A)")
                    bad.add(what.rsplit(" ", 1)[0])
        for ec in b.contests:
            contest = manifest.contest(ec.contest_index)
            for s, option in zip(ec.selections, contest.options):
                out["selection well-formedness"][0] += 1
                where = f"{who} contest {contest.index} option {option.index}"
                if where in bad:
                    continue
                try:                                                               # (6.1)-(6.3), (6.B)-(6.D)
                    verify_range(group, ctx.g_table, ctx.k_table, h_i, selection_prefix(contest.index, option.index),
                                 s.ciphertext, s.proof, option.selection_limit, f"{where} proof")
                except GuardianError as e:
                    wf.append(f"{e} (Verification 6)")
        if nonce_what not in bad:
            try:                                                                   # spec 3.3.4, eq 38
                verify_encrypted_nonce(ctx, h_i, b.encrypted_nonce, nonce_what)
            except GuardianError as e:
                wf.append(str(e))

    with timed("vote limits"):
        for ec in b.contests:
            contest = manifest.contest(ec.contest_index)
            out["vote limits"][0] += 1
            total = aggregate(group, (s.ciphertext for s in ec.selections))        # (7.1), (7.2)
            try:                                                                   # (7.3)-(7.5), (7.B)-(7.D)
                verify_range(group, ctx.g_table, ctx.k_table, h_i, contest_prefix(contest.index), total, ec.proof,
                             contest.selection_limit, f"{who} contest {contest.index} selection limit proof")
            except GuardianError as e:
                out["vote limits"][1].append(f"{e} (Verification 7)")

    with timed("confirmation codes"):
        cc = out["confirmation codes"][1]
        out["confirmation codes"][0] += 1
        hashes = []
        for ec in b.contests:
            chi = contest_hash(ctx, h_i, ec.contest_index, [s.ciphertext for s in ec.selections])   # (8.A) eq 70
            if chi != ec.contest_hash:
                cc.append(f"{who} contest {ec.contest_index}: contest hash is wrong (8.A)")
            hashes.append(chi)
        if confirmation_code(h_i, hashes, b.chaining_field) != b.confirmation_code:                  # (8.B) eq 71
            cc.append(f"{who}: confirmation code is not H(H_I; 0x29, contest hashes, B_C) (8.B)")
        mode = b.chaining_field[:4]
        if mode == NO_CHAINING:
            if b.chaining_field != unchained_field(ctx.h_e, b.device):                                # (8.C), (8.D)
                cc.append(f"{who}: chaining field is not 0x00000000 || H_DI of device {b.device!r} (8.D)")
        elif mode != SIMPLE_CHAINING:
            cc.append(f"{who}: unknown chaining mode {mode.hex().upper()} in the chaining field")

    with timed("ballot signatures"):
        out["ballot signatures"][0] += 1
        if rec.signature is None:
            out["ballot signatures"][1].append(f"{who}: has no voter_signing_pk / voter_ballot_signature")
        else:
            try:                                                                   # seed 003
                verify_ballot_signature(b.ballot_id, election_id(ctx), signature_content(ctx, b, rec.creation_date),
                                        rec.signature)
            except GuardianError as e:
                out["ballot signatures"][1].append(str(e))
    return {k: tuple(v) for k, v in out.items()}


def worker_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def check_ballots(ctx: ElectionContext, records: Sequence[codec.BallotRecord], workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """check_ballot for every ballot, spread over `workers` processes (default: every core)."""
    workers = workers or worker_count()
    ctx.g_table, ctx.k_table, ctx.k_hat_table   # built once here; forked workers share them
    results: list[dict] = []
    if workers == 1 or len(records) < 2:
        for rec in records:
            results.append(check_ballot(ctx, rec))
            if progress:
                progress(len(results), len(records))
        return results
    methods = multiprocessing.get_all_start_methods()
    mp = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ProcessPoolExecutor(min(workers, len(records)), mp_context=mp, initializer=_init_worker,
                             initargs=(ctx,)) as pool:
        for result in pool.map(_check_ballot_in_worker, records, chunksize=max(1, len(records) // (8 * workers))):
            results.append(result)
            if progress:
                progress(len(results), len(records))
    return results


def step_ballots(data: _Loaded, el: _Election, workers: int | None,
                 progress: Callable[[int, int], None] | None) -> dict[str, StepResult]:
    """Verifications 5, 6, 7, 8 and the signatures, over every ballot (cast and challenged)."""
    names = ("selection identifiers", "selection well-formedness", "vote limits", "confirmation codes",
             "ballot signatures")
    accs = {name: _Acc(name) for name in names}
    ctx = el.context
    if ctx is None:
        for acc in accs.values():
            acc.fail("cannot check ballots without the election's keys (steps 1-4)")
        return {name: acc.result() for name, acc in accs.items()}
    for rel, err in sorted(data.errors.items()):
        if rel.startswith(layout.BALLOTS + "/"):
            accs["selection well-formedness"].fail(err)
    ids = accs["selection identifiers"]
    with _Timer(ids):
        seen: dict[int, str] = {}
        folded: dict[str, str] = {}
        for bid, (rel, rec) in sorted(data.ballots.items()):
            expected_rel = layout.ballot_file(bid) if layout.BALLOT_ID.fullmatch(bid) else None
            if rel != expected_rel:
                ids.fail(f"{rel}: holds ballot {bid!r}" + (f", whose file is {expected_rel}" if expected_rel
                                                            else ", whose id is not allowed as a file name"))
            if bid.lower() in folded:
                ids.fail(f"ballot {bid!r}: its id differs only in case from ballot {folded[bid.lower()]!r}")
            folded[bid.lower()] = bid
            sid = int(rec.ballot.selection_identifier)
            if sid in seen:                                                        # (5.A)
                ids.fail(f"ballot {bid!r}: duplicate selection encryption identifier, the same as ballot "
                         f"{seen[sid]!r} (5.A)")
            else:
                seen[sid] = bid
    records = [rec for _, (_, rec) in sorted(data.ballots.items())]
    if len(records) >= BULK_BALLOTS:         # 12-bit tables for g and K: built once, a third cheaper per use
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
    wall = time.perf_counter()
    results = check_ballots(ctx, records, workers, progress)
    wall = time.perf_counter() - wall
    cpu = 0.0
    for result in results:
        for name, (items, failures, seconds) in result.items():
            accs[name].items += items
            accs[name].seconds += seconds
            cpu += seconds
            for f in failures:
                accs[name].fail(f)
    # Report wall time: the per-step CPU time scaled to the wall time of the parallel pass.
    if cpu > 0:
        for name in names:
            share = [r[name][2] for r in results]
            accs[name].seconds = wall * sum(share) / cpu + (accs[name].seconds - sum(share))
    _check_devices(data, el, accs["confirmation codes"])
    return {name: acc.result() for name, acc in accs.items()}


def _check_devices(data: _Loaded, el: _Election, acc: _Acc) -> None:
    """Verification 8.E-8.G: the ordered ballots of each device, and the chains of simple chaining."""
    start = time.perf_counter()
    ctx = el.context
    by_device: dict[str, list[str]] = {}
    for bid, (_, rec) in sorted(data.ballots.items()):
        by_device.setdefault(rec.ballot.device, []).append(bid)
    if data.devices is None:
        if data.ballots:
            acc.fail(data.error(layout.DEVICES))
        acc.seconds += time.perf_counter() - start
        return
    listed: dict[str, str] = {}
    policy = data.params.ballot_chaining if data.params else "Allowed"
    for dev in data.devices[1]:
        acc.items += 1
        where = f"device {dev.device!r}"
        if dev.chaining == "simple" and policy == "Prohibited":
            acc.fail(f"{where}: uses simple chaining, which the election parameters prohibit")
        if dev.chaining == "none" and policy == "Required":
            acc.fail(f"{where}: does not chain its ballots, which the election parameters require")
        chain = BallotChain(ctx.h_e, dev.device)
        broken = False
        for position, bid in enumerate(dev.ballots, start=1):
            if bid in listed:
                acc.fail(f"ballot {bid!r}: listed under device {listed[bid]!r} and again under {dev.device!r}")
                continue
            listed[bid] = dev.device
            entry = data.ballots.get(bid)
            if entry is None:
                acc.fail(f"{where}: lists ballot {bid!r}, which is not in the record")
                broken = True
                continue
            ballot = entry[1].ballot
            if ballot.device != dev.device:
                acc.fail(f"ballot {bid!r}: encrypted on device {ballot.device!r} but listed under {dev.device!r}")
                continue
            mode = ballot.chaining_field[:4]
            if (mode == SIMPLE_CHAINING) != (dev.chaining == "simple"):
                acc.fail(f"ballot {bid!r}: its chaining mode differs from that of device {dev.device!r}")
                broken = True
                continue
            if dev.chaining == "simple" and not broken:
                if ballot.chaining_field != chain.next_field():                    # (8.E), (8.F) eqs 74-76
                    acc.fail(f"ballot {bid!r}: chaining field is not 0x00000001 || H_(j-1) for position {position} "
                             f"on device {dev.device!r} (8.E)")
                    broken = True
                chain.advance(ballot.confirmation_code)
        if dev.chaining == "simple" and not broken and dev.closing_hash != chain.closing_hash():   # (8.G) eqs 77-78
            acc.fail(f"{where}: closing hash is not H(H_E; 0x29, 0x00000001 || H(H_E; 0x2B, H_l, B_C,0)) (8.G)")
    for device, bids in sorted(by_device.items()):
        for bid in bids:
            if bid not in listed:
                acc.fail(f"ballot {bid!r}: not in the ordered list of device {device!r} (devices.json)")
    acc.seconds += time.perf_counter() - start


# --------------------------------------------------------------------------- batched equation checks


@dataclass
class _Equation:
    """prod(lhs) == prod(rhs), each side a list of (base or table name, exponent)."""

    what: str
    lhs: list
    rhs: list


class _Batch:
    """Random-linear-combination check of many equations over Z_p^r (see the module docstring)."""

    def __init__(self, group, tables: dict[str, FixedBase]) -> None:
        self.group, self.tables = group, tables
        self.equations: list[_Equation] = []

    def add(self, eq: _Equation) -> None:
        self.equations.append(eq)

    def _value(self, term) -> mpz:
        base, e = term
        if isinstance(base, str):
            return self.tables[base].pow(e)
        return gmpy2.powmod(base, int(e) % int(self.group.q), self.group.p)

    def holds(self, eq: _Equation) -> bool:
        p = self.group.p
        left, right = mpz(1), mpz(1)
        for t in eq.lhs:
            left = left * self._value(t) % p
        for t in eq.rhs:
            right = right * self._value(t) % p
        return left == right

    def failing(self, rng=None) -> list[_Equation]:
        """The equations that do not hold; one multi-exponentiation when all do."""
        if not self.equations:
            return []
        rng = rng or secrets.SystemRandom()
        q, p = int(self.group.q), self.group.p
        table_exp: dict[str, int] = {}
        pos: dict[int, int] = {}
        bases: list = []
        exps: list[int] = []
        for eq in self.equations:
            r = rng.getrandbits(BATCH_WEIGHT_BITS) | 1
            for side, sign in ((eq.lhs, 1), (eq.rhs, -1)):
                for base, e in side:
                    w = sign * r * int(e) % q
                    if isinstance(base, str):
                        table_exp[base] = (table_exp.get(base, 0) + w) % q
                        continue
                    key = int(base)
                    at = pos.get(key)
                    if at is None:
                        pos[key] = len(bases)
                        bases.append(base)
                        exps.append(w)
                    else:
                        exps[at] = (exps[at] + w) % q
        total = multi_exp(self.group, bases, exps)
        for name, e in table_exp.items():
            total = total * self.tables[name].pow(e) % p
        if total == 1:
            return []
        return [eq for eq in self.equations if not self.holds(eq)]


@dataclass
class _Decryption:
    """One joint decryption to check: M = base^s with proof (c, v) and its parts (spec 3.6.5)."""

    what: str
    statement: object               # TallyStatement or NonceStatement: knows the challenge hash
    base: mpz                       # A, or C0
    joint_table: str                # "K" or "K-hat"
    m: mpz                          # M = B T^-1, or beta
    challenge: mpz
    response: mpz
    shares: Sequence[codec.ShareRecord]


def _check_decryptions(ctx: ElectionContext, publics: PublicShares, quorum: codec.Quorum,
                       decryptions: list[_Decryption], elements: list[tuple[object, str]], acc: _Acc) -> set[str]:
    """Check joint decryptions; return the `what` of those that failed (each failure already reported)."""
    group, q, p = ctx.group, int(ctx.group.q), ctx.group.p
    failed: set[str] = set()
    n = ctx.parameters.n
    try:
        parts = plan_parts(group, n, quorum.present, quorum.form == "compensated")
    except GuardianError as e:
        acc.fail(f"the decryption quorum is invalid: {e}")
        return {d.what for d in decryptions}
    compensated = quorum.form == "compensated"
    weights = {(pt.guardian, pt.missing): pt.weight for pt in parts}
    for d in decryptions:
        for s in d.shares:
            tag = f"{d.what} {s.name}"
            elements += [(s.share, f"{tag} share"), (s.commitment_a, f"{tag} commitment_a"),
                         (s.commitment_b, f"{tag} commitment_b")]
    bad_elements: set[str] = set()
    try:
        check_elements(group, elements)                                                  # (2.A)-style, batched
    except GuardianError:
        for x, what in elements:
            try:
                check_element(group, x, what)
            except GuardianError as e:
                acc.fail(str(e))
                bad_elements.add(what)
    batch = _Batch(group, {"g": ctx.g_table, "K": ctx.k_table, "K-hat": ctx.k_hat_table})
    owner: dict[int, _Decryption] = {}
    for d in decryptions:
        if any(what.startswith(d.what + " ") or what == d.what for what in bad_elements):
            failed.add(d.what)
            continue
        keys = sorted((s.guardian, s.missing or 0) for s in d.shares)
        if keys != sorted((g, m or 0) for g, m in weights):
            acc.fail(f"{d.what}: the shares do not match the decryption plan of guardians {list(quorum.present)} "
                     f"({quorum.form} form)")
            failed.add(d.what)
            continue
        try:
            c = check_scalar(group, d.challenge, f"{d.what} proof challenge")
            v = check_scalar(group, d.response, f"{d.what} proof response")                # (10.A)
            for s in d.shares:
                check_scalar(group, s.response, f"{d.what} {s.name} response")
        except GuardianError as e:
            acc.fail(str(e))
            failed.add(d.what)
            continue
        a = b = mpz(1)
        for s in d.shares:
            a, b = a * s.commitment_a % p, b * s.commitment_b % p                      # eq 89
        # On a failure here, go on: the per-part equations below name the guardian at fault.
        if d.statement.challenge(group, a, b, d.m) != c:                                # (10.B) eq 90
            acc.fail(f"{d.what}: the challenge is not the hash of the commitments and M (10.B)")
            failed.add(d.what)
        if sum(int(s.response) for s in d.shares) % q != v:                            # eq 93
            acc.fail(f"{d.what}: the response is not the sum of the guardians' responses (eq 93)")
            failed.add(d.what)
        start = len(batch.equations)
        # (10.2), (10.3) over the published commitments: g^v K^c = a and A^v M^c = b
        batch.add(_Equation(f"{d.what}: g^v K^c is not the product of the commitments a_i (10.2, 10.B)",
                            [("g", v), (d.joint_table, c)], [(s.commitment_a, 1) for s in d.shares]))
        batch.add(_Equation(f"{d.what}: A^v M^c is not the product of the commitments b_i (10.3, 10.B)",
                            [(d.base, v), (d.m, c)], [(s.commitment_b, 1) for s in d.shares]))
        # eq 86: M = prod M_i^w_i
        batch.add(_Equation(f"{d.what}: the guardians' shares do not combine to M (eq 86)",
                            [(s.share, weights[(s.guardian, s.missing)]) for s in d.shares], [(d.m, 1)]))
        for s in d.shares:
            part = Part(s.guardian, s.missing, weights[(s.guardian, s.missing)])
            x_pub = publics.public(part, compensated)
            cw = c * part.weight % q
            # eqs 94, 95: g^v_i X^(c w_i) = a_i and base^v_i Y^(c w_i) = b_i
            batch.add(_Equation(f"{d.what}: the share of {s.name} does not verify (eqs 94, 95)",
                                [("g", s.response), (x_pub, cw)], [(s.commitment_a, 1)]))
            batch.add(_Equation(f"{d.what}: the share of {s.name} does not verify (eqs 94, 95)",
                                [(d.base, s.response), (s.share, cw)], [(s.commitment_b, 1)]))
        for i in range(start, len(batch.equations)):
            owner[id(batch.equations[i])] = d
    reported = set()
    for eq in batch.failing():
        if eq.what not in reported:
            acc.fail(eq.what)
            reported.add(eq.what)
        failed.add(owner[id(eq)].what)
    return failed


def _check_quorum(quorum: codec.Quorum, n: int, k: int, who: str, acc: _Acc) -> bool:
    present, missing = list(quorum.present), list(quorum.missing)
    ok = True
    if present != sorted(set(present)) or missing != sorted(set(missing)):
        acc.fail(f"{who}: guardians_present and guardians_missing must be sorted without repeats")
        ok = False
    if sorted(present + missing) != list(range(1, n + 1)):
        acc.fail(f"{who}: present {present} and missing {missing} guardians are not exactly 1..{n}")
        ok = False
    if len(present) < k:
        acc.fail(f"{who}: only {len(present)} guardians decrypted, the quorum is {k}")
        ok = False
    return ok


# --------------------------------------------------------------------------- steps 9-14: tally and challenged


def _cast(data: _Loaded) -> list[codec.BallotRecord]:
    return [rec for _, (_, rec) in sorted(data.ballots.items()) if rec.state == codec.CAST]


def step_aggregation(data: _Loaded, el: _Election) -> StepResult:
    """Verification 9: (A, B) of every option is the product of the cast ballots' encryptions (eq 79)."""
    acc = _Acc("aggregation")
    with _Timer(acc):
        ctx = el.context
        if ctx is None:
            acc.fail("cannot check the aggregation without the election (steps 1-4)")
            return acc.result()
        if data.encrypted_tally is None:
            acc.fail(data.error(layout.ENCRYPTED_TALLY))
            return acc.result()
        tally = data.encrypted_tally[1]
        cast = _cast(data)
        expected = {(c.index, o.index) for c in ctx.manifest.contests for o in c.options}
        columns: dict = {key: [] for key in expected}
        for rec in cast:
            for ec in rec.ballot.contests:
                for s in ec.selections:
                    if (ec.contest_index, s.option_index) in columns:
                        columns[(ec.contest_index, s.option_index)].append(s.ciphertext)
        if tally.ballot_count != len(cast):
            acc.fail(f"encrypted tally: counts {tally.ballot_count} cast ballots, the record has {len(cast)}")
        for key in sorted(set(tally.totals) - expected):
            acc.fail(f"encrypted tally: contest {key[0]} option {key[1]} is not in the manifest")
        for key in sorted(expected):
            acc.items += 1
            have = tally.totals.get(key)
            if have is None:
                acc.fail(f"encrypted tally: contest {key[0]} option {key[1]} is missing")
            elif aggregate(STANDARD, columns[key]) != have:                               # (9.A), (9.B)
                acc.fail(f"encrypted tally contest {key[0]} option {key[1]}: (A, B) is not the product of the "
                         f"cast ballots' encryptions (9.A, 9.B)")
    return acc.result()


def step_tally_decryption(data: _Loaded, el: _Election) -> StepResult:
    """Verification 10 for every option, with the guardians' shares (eqs 86, 93-95), batched."""
    acc = _Acc("tally decryption")
    with _Timer(acc):
        ctx = el.context
        if ctx is None or len(el.keys) != (el.parameters.n if el.parameters else -1):
            acc.fail("cannot check decryptions without every guardian's verified key (steps 1-3)")
            return acc.result()
        if data.encrypted_tally is None or data.decrypted_tally is None:
            acc.fail(data.error(layout.DECRYPTED_TALLY if data.decrypted_tally is None else layout.ENCRYPTED_TALLY))
            return acc.result()
        tally, dec = data.encrypted_tally[1], data.decrypted_tally
        if not _check_quorum(dec.quorum, ctx.parameters.n, ctx.parameters.k, "decrypted tally", acc):
            return acc.result()
        publics = PublicShares(STANDARD, {i: pk.commitments for i, pk in el.keys.items()})
        decryptions, elements = [], []
        for (ci, oi), ct in sorted(tally.totals.items()):
            acc.items += 1
            what = f"tally contest {ci} option {oi}"
            opt = dec.option(ci, oi)
            if opt is None:
                acc.fail(f"{what}: has no decryption")
                continue
            elements += [(opt.decrypted_value, f"{what} T"), (ct.alpha, f"{what} A"), (ct.beta, f"{what} B")]
            if ctx.k_table.pow(opt.tally) != opt.decrypted_value:                        # (10.C)
                acc.fail(f"{what}: T is not K^t for the stated tally {opt.tally} (10.C)")
                continue
            if gmpy2.gcd(opt.decrypted_value, STANDARD.p) != 1:
                acc.fail(f"{what}: T is not invertible mod p")
                continue
            m = ct.beta * gmpy2.invert(opt.decrypted_value, STANDARD.p) % STANDARD.p      # (10.1) M = B T^-1
            decryptions.append(_Decryption(what, TallyStatement(ctx.h_e, ci, oi, ct.alpha, ct.beta), ct.alpha, "K",
                                           m, opt.challenge, opt.response, opt.shares))
        _check_decryptions(ctx, publics, dec.quorum, decryptions, elements, acc)
    return acc.result()


def step_tally_contents(data: _Loaded, el: _Election) -> StepResult:
    """Verification 11: the tally's contests and options are the manifest's, labels included."""
    acc = _Acc("tally contents")
    with _Timer(acc):
        if el.parameters is None:
            acc.fail("cannot check the tally's contents without the manifest (step 1)")
            return acc.result()
        if data.decrypted_tally is None:
            acc.fail(data.error(layout.DECRYPTED_TALLY))
            return acc.result()
        manifest, dec = el.parameters.manifest, data.decrypted_tally
        cast_per_contest: dict[int, int] = {}
        for rec in _cast(data):
            for ec in rec.ballot.contests:
                cast_per_contest[ec.contest_index] = cast_per_contest.get(ec.contest_index, 0) + 1
        seen = set()
        for c in dec.contests:
            acc.items += 1
            where = f"decrypted tally contest {c.contest_index}"
            if c.contest_index in seen:
                acc.fail(f"{where}: appears twice")
                continue
            seen.add(c.contest_index)
            if not 1 <= c.contest_index <= len(manifest.contests):                         # (11.A)
                acc.fail(f"{where}: not a contest of the manifest (11.A)")
                continue
            contest = manifest.contest(c.contest_index)
            if c.label != contest.label:
                acc.fail(f"{where}: label {c.label!r} is not the manifest's {contest.label!r} (11.A)")
            options = [o.option_index for o in c.options]
            if sorted(options) != [o.index for o in contest.options] or len(set(options)) != len(options):
                acc.fail(f"{where}: options {options} are not the manifest's 1..{len(contest.options)} (11.B, 11.C)")
            for o in c.options:
                acc.items += 1
                if 1 <= o.option_index <= len(contest.options):
                    option = contest.option(o.option_index)
                    if o.label != option.label:                                              # (11.B)
                        acc.fail(f"{where} option {o.option_index}: label {o.label!r} is not the manifest's "
                                 f"{option.label!r} (11.B)")
                    cap = option.selection_limit * cast_per_contest.get(c.contest_index, 0)
                    if o.tally > cap:
                        acc.fail(f"{where} option {o.option_index}: tally {o.tally} exceeds what the cast ballots "
                                 f"allow ({cap})")
        for contest in manifest.contests:                                                    # (11.C), (11.D)
            if contest.index not in seen:
                acc.fail(f"decrypted tally: contest {contest.index} ({contest.label!r}) is missing (11.D)")
        cast = len(_cast(data))
        if dec.ballot_count != cast:
            acc.fail(f"decrypted tally: counts {dec.ballot_count} cast ballots, the record has {cast}")
    return acc.result()


def step_contest_data(data: _Loaded, el: _Election) -> StepResult:
    """Verification 12 does not apply: ballots carry no contest data (spec 3.3.10)."""
    acc = _Acc("contest data")
    acc.not_applicable = True
    acc.note = "no contest data is produced by this system"
    return acc.result()


def step_challenged(data: _Loaded, el: _Election) -> tuple[StepResult, StepResult]:
    """Verifications 13 and 14 for every challenged ballot, and the joint proofs of their nonces."""
    dec_acc, con_acc = _Acc("challenged ballot decryption"), _Acc("challenged ballot contents")
    start = time.perf_counter()
    ctx = el.context
    if ctx is None or len(el.keys) != (el.parameters.n if el.parameters else -1):
        dec_acc.fail("cannot check decryptions without every guardian's verified key (steps 1-3)")
        con_acc.fail("cannot check challenged ballots without the election (steps 1-4)")
        return dec_acc.result(), con_acc.result()
    for rel, err in sorted(data.errors.items()):
        if rel.startswith(layout.CHALLENGED + "/"):
            dec_acc.fail(err)
    challenged = {bid: rec for bid, (_, rec) in data.ballots.items() if rec.state == codec.CHALLENGED}
    for bid in sorted(set(data.challenged) - set(challenged)):
        if bid in data.ballots:
            dec_acc.fail(f"ballot {bid!r}: a cast ballot has been decrypted ({layout.challenged_file(bid)}); "
                         f"cast ballots must not be")
        else:
            dec_acc.fail(f"challenged ballot {bid!r}: decrypted, but the record has no such ballot")
    manifest = ctx.manifest
    publics = PublicShares(STANDARD, {i: pk.data_commitments for i, pk in el.keys.items()})
    pairs = []
    decryptions, elements = [], {}
    for bid in sorted(challenged):
        dec_acc.items += 1
        con_acc.items += 1
        rec = challenged[bid]
        if bid not in data.challenged:
            dec_acc.fail(f"challenged ballot {bid!r}: has no decryption in the record ({layout.challenged_file(bid)})")
            continue
        opened = data.challenged[bid][1]
        who = f"challenged ballot {bid!r}"
        if not _check_quorum(opened.quorum, ctx.parameters.n, ctx.parameters.k, who, dec_acc):
            continue
        stmt = nonce_statement(ctx, rec.ballot)
        elements[who] = [(opened.beta, f"{who} nonce beta"), (rec.ballot.encrypted_nonce.c0, f"{who} nonce C0")]
        decryptions.append(_Decryption(f"{who} nonce", stmt, rec.ballot.encrypted_nonce.c0, "K-hat", opened.beta,
                                       opened.challenge, opened.response, opened.shares))
        pairs.append((rec, opened))
    failed: set[str] = set()
    for quorum in {o.quorum for _, o in pairs}:     # usually one: every decryption by the same guardians
        group = [(d, o) for d, (_, o) in zip(decryptions, pairs) if o.quorum == quorum]
        group_elements = [e for _, o in group for e in elements[f"challenged ballot {o.ballot_id!r}"]]
        failed |= _check_decryptions(ctx, publics, quorum, [d for d, _ in group], group_elements, dec_acc)
    contents_seconds = 0.0
    for rec, opened in pairs:
        b = rec.ballot
        who = f"challenged ballot {b.ballot_id!r}"
        t = time.perf_counter()
        contents_ok = _check_opened_contents(manifest, b, opened, who, con_acc)
        contents_seconds += time.perf_counter() - t
        if f"{who} nonce" in failed or not contents_ok:
            continue
        h_i = identifier_hash(ctx.h_e, b.selection_identifier)
        xi_b = decrypt_ballot_nonce(ctx, h_i, b.encrypted_nonce, opened.beta)           # eqs 35-37
        hashes = []
        for ec, oc in zip(b.contests, opened.contests):
            recomputed = []
            for s, o in zip(ec.selections, oc.selections):
                where = f"{who} contest {ec.contest_index} option {s.option_index}"
                if nonce_for_selection(ctx, b, xi_b, ec.contest_index, s.option_index) != o.nonce:   # eq 33
                    dec_acc.fail(f"{where}: the nonce is not the one derived from the decrypted ballot nonce (eq 33)")
                ct = encrypt(ctx.g_table, ctx.k_table, o.selection, o.nonce)             # (13.1), (13.2)
                if ct != s.ciphertext:
                    dec_acc.fail(f"{where}: selection {o.selection} with the published nonce does not reproduce "
                                 f"the encryption (13.1, 13.2)")
                recomputed.append(ct)
            hashes.append(contest_hash(ctx, h_i, ec.contest_index, recomputed))         # (13.3)
        if confirmation_code(h_i, hashes, b.chaining_field) != b.confirmation_code:     # (13.B)
            dec_acc.fail(f"{who}: the confirmation code does not follow from the decrypted selections (13.B)")
    dec_acc.seconds = time.perf_counter() - start - contents_seconds
    con_acc.seconds = contents_seconds
    return dec_acc.result(), con_acc.result()


def _check_opened_contents(manifest: Manifest, ballot, opened: codec.ChallengedRecord, who: str, acc: _Acc) -> bool:
    """Verification 14 for one challenged ballot; True when the openings line up with the ballot."""
    ok = True
    try:
        style = manifest.ballot_style(ballot.style_index)
    except GuardianError:
        acc.fail(f"{who}: unknown ballot style {ballot.style_index}")
        return False
    have = [c.contest_index for c in opened.contests]
    if have != sorted(style.contests) or have != [c.contest_index for c in ballot.contests]:   # (14.A), (14.B)
        acc.fail(f"{who}: decrypted contests {have} are not those of ballot style {style.label!r} "
                 f"({sorted(style.contests)}) (14.A, 14.B)")
        return False
    for oc in opened.contests:
        contest = manifest.contest(oc.contest_index)
        where = f"{who} contest {contest.index}"
        if oc.label != contest.label:
            acc.fail(f"{where}: label {oc.label!r} is not the manifest's {contest.label!r} (14.A)")
            ok = False
        if [s.option_index for s in oc.selections] != [o.index for o in contest.options]:   # (14.C), (14.D)
            acc.fail(f"{where}: options {[s.option_index for s in oc.selections]} are not the manifest's "
                     f"(14.C, 14.D)")
            ok = False
            continue
        for s, option in zip(oc.selections, contest.options):
            if s.label != option.label:
                acc.fail(f"{where} option {option.index}: label {s.label!r} is not the manifest's "
                         f"{option.label!r} (14.C)")
                ok = False
            if not 0 <= s.selection <= option.selection_limit:                               # (14.E)
                acc.fail(f"{where} option {option.index}: selection {s.selection} is not in "
                         f"0..{option.selection_limit} (14.E)")
                ok = False
        total = sum(s.selection for s in oc.selections)
        if total > contest.selection_limit:                                                  # (14.F)
            acc.fail(f"{where}: {total} selections exceed the contest's limit {contest.selection_limit} (14.F)")
            ok = False
    return ok


# --------------------------------------------------------------------------- the index and the journal


def step_index(data: _Loaded) -> StepResult:
    """Every file's SHA-256 matches index.json, no file is outside it, and the ballot box journal matches."""
    acc = _Acc("record index")
    with _Timer(acc):
        record = data.record
        try:
            index = record.read_index() if record.exists(layout.INDEX) else None
        except GuardianError as e:
            acc.fail(f"{layout.INDEX}: {e}")
            index = None
        if index is None and not record.exists(layout.INDEX):
            acc.fail(f"the record has no {layout.INDEX}")
        files = record.files()
        if index is not None:
            for rel in files:
                acc.items += 1
                if rel not in index:
                    acc.fail(f"{rel}: not in {layout.INDEX}")
                    continue
                path = record.path(rel)
                if path.is_symlink() or not path.is_file():
                    acc.fail(f"{rel}: not a regular file")
                elif layout.sha256_file(path) != index[rel]:
                    acc.fail(f"{rel}: its SHA-256 does not match {layout.INDEX}")
            for rel in sorted(set(index) - set(files)):
                acc.fail(f"{rel}: listed in {layout.INDEX} but missing from the record")
        _check_journal(data, acc)
    return acc.result()


def _check_journal(data: _Loaded, acc: _Acc) -> None:
    record = data.record
    if not record.exists(layout.JOURNAL):
        if data.ballots:
            acc.fail(f"the record has ballots but no {layout.JOURNAL}")
        return
    raw = record.read(layout.JOURNAL)
    if raw and not raw.endswith(b"\n"):
        acc.fail(f"{layout.JOURNAL}: the last entry is incomplete")
    journaled: dict[str, codec.JournalEntry] = {}
    for number, line in enumerate(raw.split(b"\n")[:-1] if raw.endswith(b"\n") else raw.split(b"\n")[:-1], start=1):
        acc.items += 1
        try:
            entry = codec.journal_entry_from_json(codec.load_json(line, f"{layout.JOURNAL} line {number}"),
                                                  f"{layout.JOURNAL} line {number}")
        except GuardianError as e:
            acc.fail(str(e))
            continue
        if entry.seq != number:
            acc.fail(f"{layout.JOURNAL} line {number}: sequence number {entry.seq}")
        if entry.ballot_id in journaled:
            acc.fail(f"{layout.JOURNAL} line {number}: ballot {entry.ballot_id!r} accepted twice")
            continue
        journaled[entry.ballot_id] = entry
        if not layout.BALLOT_ID.fullmatch(entry.ballot_id):
            acc.fail(f"{layout.JOURNAL} line {number}: ballot id {entry.ballot_id!r} is not allowed")
            continue
        rel = layout.ballot_file(entry.ballot_id)
        if not record.exists(rel):
            acc.fail(f"ballot {entry.ballot_id!r}: accepted by the ballot box (journal line {number}) but {rel} "
                     f"is missing")
            continue
        if layout.sha256_file(record.path(rel)) != entry.sha256:
            acc.fail(f"ballot {entry.ballot_id!r}: {rel} is not the file the ballot box accepted")
        rec = data.ballots.get(entry.ballot_id)
        if rec is not None and rec[1].state != entry.state:
            acc.fail(f"ballot {entry.ballot_id!r}: state {rec[1].state} but accepted as {entry.state}")
    for bid in sorted(set(data.ballots) - set(journaled)):
        acc.fail(f"ballot {bid!r}: in the record but never accepted by the ballot box ({layout.JOURNAL})")


# --------------------------------------------------------------------------- the whole record


def verify_record(root: Path | str, workers: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[StepResult]:
    """Run every step on the record at `root`; the results come in the order of STEPS.

    Raises InputError only when `root` is not a record directory at all; every
    problem inside the record is a failed step.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a directory")
    data = _load(root)
    el = _Election()
    results: dict[str, StepResult] = {}

    def run(names: tuple[str, ...], fn) -> None:
        start = time.perf_counter()
        try:
            out = fn()
        except Exception as e:      # a record can be malformed in ways no step foresaw: report, go on
            out = [StepResult(name, False, 0, time.perf_counter() - start,
                              [f"the step could not complete: {type(e).__name__}: {e}"], 1) for name in names]
        for r in ([out] if isinstance(out, StepResult) else list(out.values()) if isinstance(out, dict) else out):
            results[r.step] = r

    for name, fn in (("parameters", step_parameters), ("guardian public keys", step_guardian_keys),
                     ("election public key", step_election_key), ("extended base hash", step_extended_hash)):
        run((name,), lambda fn=fn: fn(data, el))
    run(("selection identifiers", "selection well-formedness", "vote limits", "confirmation codes",
         "ballot signatures"), lambda: step_ballots(data, el, workers, progress))
    for name, fn in (("aggregation", step_aggregation), ("tally decryption", step_tally_decryption),
                     ("tally contents", step_tally_contents), ("contest data", step_contest_data)):
        run((name,), lambda fn=fn: fn(data, el))
    run(("challenged ballot decryption", "challenged ballot contents"), lambda: step_challenged(data, el))
    run(("record index",), lambda: step_index(data))
    return [results.get(name) or StepResult(name, False, 0, 0.0, ["the step did not run"], 1) for _, name in STEPS]


def passed(results: Iterable[StepResult]) -> bool:
    return all(r.ok is not False for r in results)


def results_to_json(root: Path | str, results: Sequence[StepResult], seconds: float) -> dict:
    return {"record": str(root), "ok": passed(results), "seconds": round(seconds, 3),
            "steps": [r.to_json() for r in results]}


def format_table(results: Sequence[StepResult], seconds: float, max_failures: int = 5) -> str:
    lines = [f"{'':>3} {'step':<30} {'result':<6} {'items':>7} {'time':>9}"]
    for r in results:
        lines.append(f"{r.number:>3} {r.step:<30} {r.result:<6} {r.items:>7} {r.seconds:>8.2f}s")
    lines.append(f"{'':>3} {'total (wall)':<30} {'':<6} {'':>7} {seconds:>8.2f}s")
    failures = [(r, f) for r in results for f in r.failures[:max_failures]]
    if failures:
        lines.append("")
        for r in results:
            for f in r.failures[:max_failures]:
                step = f"{r.number} {r.step}".strip()
                lines.append(f"FAIL [{step}] {f}")
            if r.failure_count > max_failures:
                lines.append(f"FAIL [{f'{r.number} {r.step}'.strip()}] ... and {r.failure_count - max_failures} more")
    return "\n".join(lines)


# --------------------------------------------------------------------------- for the other commands


@dataclass(frozen=True)
class OpenElection:
    """An election directory whose steps 1-4 passed: the context built from recomputed values."""

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
    record = layout.Record(root)
    data = _load(root, election_only=True)
    el = _Election()
    for fn in (step_parameters, step_guardian_keys, step_election_key, step_extended_hash):
        r = fn(data, el)
        if not r.ok:
            raise InputError(f"{root}: the election does not verify: {r.failure} (step {r.number} {r.step})")
    ctx = el.context
    if window != 8:
        ctx = ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=window)
    return OpenElection(ctx, data.params, tuple(el.keys[i] for i in sorted(el.keys)), record)
