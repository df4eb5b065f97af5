"""In-process stand-ins for the guardians: the key ceremony and the decryptions, all in one process.

`guardian election create-local` and `guardian election decrypt-local` run the
ceremony and the decryptions here, with every guardian's secrets in one place:
for tests and single-machine rehearsals (real elections use the nodes:
`guardian ceremony`, `guardian decrypt`). The secrets are written to a separate
directory that is marked as test-only and is never part of the record. The
decryptions publish each guardian's part (share, commitment and response) so
that the verifier can name a guardian whose part is wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

from node.crypto.decryption import (
    PublicShares, ThresholdKey, check_joint, check_share_values, combine_responses,
    compute_shares, describe_part, joint_challenge, plan_parts, respond,
    wrong_parts,
)
from node.crypto.election import ElectionContext, ElectionParameters
from node.crypto.errors import DecryptionError, InputError
from node.crypto.fixed_base import FixedBase
from node.crypto.local_ceremony import CeremonyResult, run_local_ceremony
from node.crypto.manifest import Manifest
from node.crypto.params import STANDARD
from node.crypto.tally import EncryptedTally, tally_ballots

from node.record import codec, layout
from node.record.ballot_box import BallotBox
from node.record.custody_gate import mark_rehearsal
from node.record.decrypted import (
    JointResult, challenged_record, challenged_statement, quorum, tally_record, tally_statements, write_decryptions,
)

SECRETS_README = "README-TEST-ONLY.txt"
# An in-process election has no key custody to certify: its record is a rehearsal from the start.
LOCAL_SKIPPED = ("the key ceremony across the guardians' nodes and their key custody: every guardian's secrets are "
                 "in one process (test only), so there is no ceremony certificate")
SECRETS_WARNING = ("TEST ONLY: every guardian's secret key shares, in the clear, from an in-process key ceremony. "
                   "Never use this for a real election; never publish it; it is not part of the election record.")


def _inside(child: Path, parent: Path) -> bool:
    child, parent = child.resolve(), parent.resolve()
    return child == parent or parent in child.parents


def write_election(root: Path, ceremony: CeremonyResult, info: str, date: str | None = None,
                   ballot_chaining: str = "Allowed", method: str = "in-process (test only)") -> None:
    """The public election directory: the first files of the record, and its index."""
    ctx = ceremony.context
    group, params = ctx.group, ctx.parameters
    record = layout.Record(root)
    root.mkdir(parents=True, exist_ok=True)
    digests = {
        layout.PARAMETERS: record.write_json(layout.PARAMETERS, codec.parameters_to_json(
            codec.RecordParameters(group, params.n, params.k, info, date, ballot_chaining))),
        layout.MANIFEST: record.write(layout.MANIFEST, params.manifest.canonical_bytes()),
        layout.HASHES: record.write_json(layout.HASHES, codec.hashes_to_json(codec.Hashes(params.h_p, params.h_b))),
        layout.JOINT_KEY: record.write_json(layout.JOINT_KEY, codec.joint_keys_to_json(
            group, codec.JointKeys(ctx.joint_key, ctx.joint_data_key))),
        layout.HASHES_EXT: record.write_json(layout.HASHES_EXT, codec.hashes_ext_to_json(ctx.h_e)),
        layout.CEREMONY: record.write_json(layout.CEREMONY, codec.ceremony_to_json(ceremony.record_hash, method)),
    }
    for pk in ceremony.public_keys:
        rel = layout.guardian_file(pk.index)
        digests[rel] = record.write_json(rel, codec.guardian_key_to_json(group, pk))
    record.update_index((), digests)


def write_secrets(directory: Path, ceremony: CeremonyResult) -> None:
    """Every guardian's key shares, for tests and the demo only, clearly marked so."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    layout.atomic_write(directory / SECRETS_README, (SECRETS_WARNING + "\n").encode())
    group = ceremony.context.group
    for i, keys in sorted(ceremony.guardian_keys.items()):
        obj = {"WARNING": SECRETS_WARNING, "i": i, "h_e": codec.hex_hash(ceremony.context.h_e),
               "vote": codec.threshold_key_to_json(group, keys.vote),
               "data": codec.threshold_key_to_json(group, keys.data)}
        path = directory / f"guardian_{i}.TEST_ONLY_secret_shares.json"
        layout.atomic_write(path, codec.canonical_bytes(obj))
        os.chmod(path, 0o600)


def load_secrets(directory: Path, h_e: bytes, indices: Sequence[int]) -> dict[int, tuple[ThresholdKey, ThresholdKey]]:
    """(vote key, data key) of each guardian in `indices`, from a test-only secrets directory."""
    out = {}
    for i in indices:
        path = directory / f"guardian_{i}.TEST_ONLY_secret_shares.json"
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise InputError(f"cannot read guardian {i}'s test-only secrets {path}: {e.strerror}") from None
        obj = codec.load_json(raw, str(path))
        if not isinstance(obj, dict) or set(obj) != {"WARNING", "i", "h_e", "vote", "data"}:
            raise InputError(f"{path}: not a guardian secrets file written by `guardian election create-local`")
        if obj["i"] != i:
            raise InputError(f"{path}: holds guardian {obj['i']!r}, not guardian {i}")
        if obj["h_e"] != codec.hex_hash(h_e):
            raise InputError(f"{path}: the secrets are for another election")
        out[i] = (codec.threshold_key_from_json(STANDARD, i, obj["vote"], f"guardian {i} vote key"),
                  codec.threshold_key_from_json(STANDARD, i, obj["data"], f"guardian {i} data key"))
    return out


def create_local_election(root: Path, secrets_dir: Path, manifest: Manifest, n: int, k: int, info: str,
                          date: str | None = None, ballot_chaining: str = "Allowed", rng=None) -> CeremonyResult:
    """Run the in-process ceremony (node.crypto.local_ceremony) and write the election and the secrets."""
    if root.exists() and any(root.iterdir()):
        raise InputError(f"{root}: exists and is not empty; an election directory is never overwritten")
    if _inside(secrets_dir, root) or _inside(root, secrets_dir):
        raise InputError("the secrets directory must be outside the election directory (it is never part of the "
                         "record)")
    if secrets_dir.exists() and any(secrets_dir.iterdir()):
        raise InputError(f"{secrets_dir}: exists and is not empty")
    ceremony = run_local_ceremony(ElectionParameters(STANDARD, n, k, manifest), rng=rng)
    write_secrets(secrets_dir, ceremony)
    write_election(root, ceremony, info, date, ballot_chaining)
    mark_rehearsal(root, "guardian election create-local", LOCAL_SKIPPED)
    return ceremony


# --- decryption with every part published ---------------------------------------------------------


def decrypt_statement(ctx: ElectionContext, joint_table: FixedBase, publics: PublicShares, statement,
                      keys: Mapping[int, ThresholdKey], compensated: bool, rng=None) -> JointResult:
    """The two rounds of spec 3.6.5 among in-process guardians, keeping each part's response."""
    group = ctx.group
    parts = plan_parts(group, ctx.parameters.n, sorted(keys), compensated)
    shares, nonces = [], {}
    for i in sorted(keys):
        s, n = compute_shares(group, ctx.g_table, keys[i], statement.base, parts, compensated, rng)   # eqs 84, 87
        shares += s
        nonces[i] = n
    check_share_values(group, shares, "decryption share")
    m, c = joint_challenge(group, statement, shares)                                                # eqs 86, 89, 90
    records = []
    for i in sorted(keys):
        mine = [s for s in shares if s.part.guardian == i]
        for share, v_i in zip(mine, respond(group, keys[i], nonces[i], c, compensated)):           # eqs 91, 92
            records.append((share, v_i))
    v = combine_responses(group, [v_i for _, v_i in records])                                       # eq 93
    if not check_joint(group, ctx.g_table, joint_table, statement, m, c, v, [s for s, _ in records]):
        wrong = wrong_parts(group, ctx.g_table, publics, statement, [s for s, _ in records],
                            [v_i for _, v_i in records], c, compensated)                             # eqs 94, 95
        if wrong:
            raise DecryptionError(f"{describe_part(wrong[0])}'s decryption share does not match its public "
                                  f"commitments")
        raise DecryptionError("the joint decryption proof fails but every part checks: inconsistent keys")
    return JointResult(m, c, v, tuple(codec.ShareRecord(s.part.guardian, s.part.missing, s.value, s.commitment_a,
                                                        s.commitment_b, v_i) for s, v_i in records))


def decrypt_tally_record(ctx: ElectionContext, publics: PublicShares, keys: Mapping[int, ThresholdKey],
                         tally: EncryptedTally, compensated: bool, rng=None,
                         progress: Callable[[int, int], None] | None = None) -> codec.DecryptedTallyRecord:
    """Every option of the tally decrypted (spec 3.6.2-3.6.5), as the record publishes it."""
    statements = tally_statements(ctx, tally)
    results = []
    for done, statement in enumerate(statements, 1):
        results.append(decrypt_statement(ctx, ctx.k_table, publics, statement, keys, compensated, rng))
        if progress:
            progress(done, len(statements))
    return tally_record(ctx, tally, results, quorum(ctx.parameters.n, sorted(keys), compensated))


def open_challenged_record(ctx: ElectionContext, publics: PublicShares, keys: Mapping[int, ThresholdKey],
                           record: codec.BallotRecord, compensated: bool, rng=None) -> codec.ChallengedRecord:
    """A challenged ballot opened through its ballot nonce (spec 3.6.7), as the record publishes it."""
    statement = challenged_statement(ctx, record)
    joint = decrypt_statement(ctx, ctx.k_hat_table, publics, statement, keys, compensated, rng)
    return challenged_record(ctx, record, statement, joint, quorum(ctx.parameters.n, sorted(keys), compensated))


def decrypt_into_record(box: BallotBox, vote_keys: Mapping[int, ThresholdKey],
                        data_keys: Mapping[int, ThresholdKey], compensated: bool, rng=None,
                        say: Callable[[str], None] | None = None) -> codec.DecryptedTallyRecord:
    """Decrypt the tally and every challenged ballot of a closed ballot box and add them to the record."""
    record, ctx = box.record, box.ctx
    if not box.closed:
        raise InputError(f"{record.root}: the tally has not been computed yet (run `guardian tally` first)")
    if record.exists(layout.DECRYPTED_TALLY):
        raise InputError(f"{record.root}: the tally has already been decrypted")
    group = ctx.group
    h_e, tally = codec.encrypted_tally_from_json(group, record.read_json(layout.ENCRYPTED_TALLY))
    cast = box.load_ballots(codec.CAST)
    recomputed = tally_ballots(ctx, [r.ballot for r in cast])
    # A guardian decrypts only an aggregate it has recomputed from the accepted cast ballots.
    if h_e != ctx.h_e or recomputed != tally:
        raise InputError(f"{record.root}: encrypted_tally.json is not the aggregate of the accepted cast ballots; "
                         f"refusing to decrypt it")
    keys = {pk.index: pk for pk in box.election.keys}
    vote_publics = PublicShares(group, {i: pk.commitments for i, pk in keys.items()})
    data_publics = PublicShares(group, {i: pk.data_commitments for i, pk in keys.items()})
    if say:
        say(f"decrypting {len(tally.totals)} option totals with guardians {sorted(vote_keys)}")
    decrypted = decrypt_tally_record(ctx, vote_publics, vote_keys, tally, compensated, rng)
    opened = []
    for rec in box.load_ballots(codec.CHALLENGED):
        opened.append(open_challenged_record(ctx, data_publics, data_keys, rec, compensated, rng))
        if say:
            say(f"challenged ballot {rec.ballot_id!r} decrypted")
    write_decryptions(record, ctx, decrypted, opened)
    return decrypted


def decrypt_local(root: Path, secrets_dir: Path, missing: Sequence[int], compensated: bool,
                  say: Callable[[str], None] | None = None) -> codec.DecryptedTallyRecord:
    """`guardian election decrypt-local`: the present guardians' test-only secrets decrypt the record."""
    with BallotBox.open(root) as box:
        n, k = box.ctx.parameters.n, box.ctx.parameters.k
        bad = [j for j in missing if not 1 <= j <= n]
        if bad:
            raise InputError(f"--missing names guardians outside 1..{n}: {bad}")
        present = [i for i in range(1, n + 1) if i not in set(missing)]
        if len(present) < k:
            raise InputError(f"only {len(present)} guardians present, the quorum is {k}")
        loaded = load_secrets(secrets_dir, box.ctx.h_e, present)
        return decrypt_into_record(box, {i: v for i, (v, _) in loaded.items()},
                                   {i: d for i, (_, d) in loaded.items()}, compensated, say=say)



def export_demo_record(root: Path, ceremony: CeremonyResult, ballots: Sequence[codec.BallotRecord],
                       challenged_ids: set[str], present: Sequence[int], compensated: bool, info: str,
                       date: str | None = None, say: Callable[[str], None] | None = None) -> None:
    """The complete record of an in-process election (`guardian demo --record`), ready for `guardian verify`.

    The ballots have just been verified by the caller; they still go through the
    ballot box's every other check, and the decryptions are made again with every
    guardian's part published.
    """
    if root.exists() and any(root.iterdir()):
        raise InputError(f"{root}: exists and is not empty; a record is never overwritten")
    write_election(root, ceremony, info, date)
    mark_rehearsal(root, "guardian demo --in-process", LOCAL_SKIPPED)
    with BallotBox.open(root) as box:
        verified = [(rec, codec.CHALLENGED if rec.ballot_id in challenged_ids else codec.CAST) for rec in ballots]
        refused = [o for o in box.submit([], verified=verified) if not o.accepted]
        if refused:
            raise InputError(f"ballot {refused[0].ballot_id!r} refused by the ballot box: {refused[0].reason}")
        box.tally()
        keys = ceremony.guardian_keys
        decrypt_into_record(box, {i: keys[i].vote for i in present}, {i: keys[i].data for i in present},
                            compensated)
    if say:
        say(f"Election record written to {root}; anyone can check it with: guardian verify {root}")
