"""The verifier on a good record and on records tampered with one change each, standard parameters.

One record is built once (3 guardians, quorum 2, guardian 2 missing at decryption,
compensated form; a chained device and an unchained one; one challenged ballot);
each test copies it, changes one thing, and checks that the right step fails and
names the right object.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import gmpy2
import pytest

from node.crypto.ballot import BallotChain, PlaintextBallot
from node.crypto.manifest import parse_manifest
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.record.ballot_box import BallotBox, Submission
from node.record.encrypt import encrypt_records
from node.record.local import create_local_election, decrypt_local
from node.record.election import open_election
from node.verifier import STEPS, passed, verify_record

MANIFEST = {
    "label": "Tamper test election",
    "contests": [
        {"label": "Mayor", "options": [{"label": "Ada"}, {"label": "Grace"}]},
        {"label": "Council", "selection_limit": 2,
         "options": [{"label": "Alan"}, {"label": "Barbara"}, {"label": "Claude", "selection_limit": 2}]},
    ],
    "ballot_styles": [{"label": "all", "contests": [1, 2]}, {"label": "mayor", "contests": [1]}],
}
PLAINTEXTS = [
    PlaintextBallot("b-1", "all", {"Mayor": {"Ada": 1}, "Council": {"Claude": 2}}),
    PlaintextBallot("b-2", "all", {"Mayor": {"Grace": 1}, "Council": {"Alan": 1, "Barbara": 1}}),
    PlaintextBallot("b-3", "mayor", {"Mayor": {"Ada": 1}}),
    PlaintextBallot("c-1", "all", {"Mayor": {"Grace": 1}, "Council": {"Barbara": 1}}),
    PlaintextBallot("u-1", "all", {"Council": {"Alan": 1}}),
]
CHALLENGED = {"c-1"}


def build_record(root: Path, secrets: Path) -> None:
    create_local_election(root, secrets, parse_manifest(MANIFEST), 3, 2, "tamper test", "2025-01-01")
    ctx = open_election(root).context
    chain = BallotChain(ctx.h_e, "booth-1")
    subs = []
    for device, chained, plains in (("booth-1", True, PLAINTEXTS[:4]), ("mail-1", False, PLAINTEXTS[4:])):
        for plain, rec in encrypt_records(ctx, plains, device, chain if chained else None, workers=1):
            assert not isinstance(rec, str), rec
            state = codec.CHALLENGED if rec.ballot_id in CHALLENGED else codec.CAST
            subs.append(Submission(rec.ballot_id, codec.canonical_bytes(codec.ballot_to_json(STANDARD, rec)), state))
    random.Random(5).shuffle(subs)             # the box orders a chain by its links
    with BallotBox.open(root) as box:
        outcomes = box.submit(subs, workers=1)
        assert all(o.accepted for o in outcomes), [o.reason for o in outcomes if not o.accepted]
        box.tally()
    decrypt_local(root, secrets, missing=[2], compensated=True)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tamper")
    build_record(base / "record", base / "secrets")
    return base / "record"


@pytest.fixture
def record(pristine, tmp_path) -> Path:
    copy = tmp_path / "record"
    shutil.copytree(pristine, copy)
    return copy


def load(root: Path, rel: str) -> dict:
    return json.loads((root / rel).read_bytes())


def save(root: Path, rel: str, obj: dict) -> None:
    (root / rel).write_bytes(codec.canonical_bytes(obj))


def other_element(hex_value: str) -> str:
    """Another element of Z_p^r: x * g mod p, so membership holds and only the proofs can catch it."""
    x = gmpy2.mpz(hex_value, 16) * STANDARD.g % STANDARD.p
    return format(int(x), "X").zfill(1024)


def other_scalar(hex_value: str) -> str:
    return format((int(hex_value, 16) + 1) % int(STANDARD.q), "X").zfill(64)


def results(root: Path) -> dict:
    return {r.step: r for r in verify_record(root, workers=2)}


def assert_fails(res: dict, step: str, *names: str) -> None:
    r = res[step]
    assert r.ok is False, f"step {step} passed: {r}"
    text = "\n".join(r.failures)
    for name in names:
        assert name in text, f"{name!r} not named by step {step}: {text}"


def assert_pass(res: dict, *steps: str) -> None:
    for step in steps:
        assert res[step].ok is True, f"step {step}: {res[step].failures}"


# --- the good record --------------------------------------------------------------------------------


def test_the_untouched_record_verifies_every_step(pristine):
    res = verify_record(pristine, workers=2)
    assert [r.step for r in res] == [name for _, name in STEPS]
    assert passed(res), [(r.step, r.failures) for r in res if r.ok is False]
    by = {r.step: r for r in res}
    assert by["contest data"].ok is None and by["contest data"].result == "n/a" and by["contest data"].items == 0
    assert by["selection identifiers"].items == 5
    assert by["selection well-formedness"].items == 4 * 5 + 2            # four full ballots and one mayor-only
    assert by["aggregation"].items == 5 and by["tally decryption"].items == 5
    assert by["challenged ballot decryption"].items == 1
    assert by["ballot signatures"].items == 5
    assert all(r.seconds >= 0 for r in res)


# --- one change each ----------------------------------------------------------------------------------


def test_changed_group_parameter_fails_parameters(record):
    obj = load(record, layout.PARAMETERS)
    g = obj["fixed_parameters"]["group"]["g"]
    obj["fixed_parameters"]["group"]["g"] = other_element(g)
    save(record, layout.PARAMETERS, obj)
    res = results(record)
    assert_fails(res, "parameters", "election_parameters: g is not the standard g")


def test_changed_quorum_fails_parameters_hash(record):
    obj = load(record, layout.PARAMETERS)
    obj["varying_parameters"]["k"] = 3
    save(record, layout.PARAMETERS, obj)
    assert_fails(results(record), "parameters", "hashes: h_p", "(1.E)")


def test_changed_guardian_proof_fails_guardian_keys_naming_the_guardian(record):
    rel = layout.guardian_file(2)
    obj = load(record, rel)
    obj["data_coefficient_proof"]["responses"][1] = other_scalar(obj["data_coefficient_proof"]["responses"][1])
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "guardian public keys", "guardian 2", "data key proof")
    assert_pass(res, "parameters")


def test_changed_joint_key_fails_election_key(record):
    obj = load(record, layout.JOINT_KEY)
    obj["joint_election_public_key"] = other_element(obj["joint_election_public_key"])
    save(record, layout.JOINT_KEY, obj)
    res = results(record)
    assert_fails(res, "election public key", "K is not the product")
    # the verifier used the recomputed K: the ballots still verify
    assert_pass(res, "selection well-formedness", "tally decryption")


def test_changed_extended_hash_fails_extended_base_hash(record):
    obj = load(record, layout.HASHES_EXT)
    obj["h_e"] = "00" * 32
    save(record, layout.HASHES_EXT, obj)
    res = results(record)
    assert_fails(res, "extended base hash", "hashes_ext")
    assert_pass(res, "selection well-formedness", "confirmation codes", "ballot signatures")


def test_changed_ciphertext_fails_well_formedness_naming_ballot_contest_option(record):
    rel = layout.ballot_file("b-2")
    obj = load(record, rel)
    field = obj["contest_fields_ciphertexts"][1]["fields_ciphertexts"][0]
    field["alpha"] = other_element(field["alpha"])
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "selection well-formedness", "ballot 'b-2' contest 2 option 1")
    assert_fails(res, "aggregation", "contest 2 option 1")
    assert_fails(res, "record index", "ballots/b-2.json")
    assert_pass(res, "parameters", "guardian public keys", "tally decryption")


def test_ciphertext_outside_the_group_is_named(record):
    rel = layout.ballot_file("b-1")
    obj = load(record, rel)
    obj["contest_fields_ciphertexts"][0]["fields_ciphertexts"][1]["beta"] = format(int(STANDARD.p) - 1, "X")
    save(record, rel, obj)
    assert_fails(results(record), "selection well-formedness", "ballot 'b-1' contest 1 option 2 beta",
                 "not in the order-q subgroup")


def test_changed_selection_proof_fails_well_formedness(record):
    rel = layout.ballot_file("u-1")
    obj = load(record, rel)
    pair = obj["contest_fields_ciphertexts"][1]["proofs_correctness"][2][1]
    pair["c"] = other_scalar(pair["c"])
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "selection well-formedness", "ballot 'u-1' contest 2 option 3")
    assert_pass(res, "vote limits", "aggregation")


def test_changed_limit_proof_fails_vote_limits_naming_the_contest(record):
    rel = layout.ballot_file("b-1")
    obj = load(record, rel)
    pair = obj["contest_fields_ciphertexts"][1]["proof_selection_limit"][0]
    pair["v"] = other_scalar(pair["v"])
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "vote limits", "ballot 'b-1' contest 2 selection limit")
    assert_pass(res, "selection well-formedness", "confirmation codes")


def test_changed_confirmation_code_fails_confirmation_codes(record):
    rel = layout.ballot_file("u-1")
    obj = load(record, rel)
    obj["confirmation_code"] = "AB" * 32
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "confirmation codes", "ballot 'u-1'", "(8.B)")
    assert_fails(res, "ballot signatures", "ballot 'u-1'")     # the code is part of the signed content


def test_changed_chaining_field_breaks_the_chain(record):
    rel = layout.ballot_file("b-2")
    obj = load(record, rel)
    obj["chaining_field"] = obj["chaining_field"][:8] + "00" * 32
    save(record, rel, obj)
    assert_fails(results(record), "confirmation codes", "ballot 'b-2'")


def test_reordered_device_list_fails_the_chain_check(record):
    obj = load(record, layout.DEVICES)
    booth = next(d for d in obj["devices"] if d["device"] == "booth-1")
    booth["ballots"][0], booth["ballots"][1] = booth["ballots"][1], booth["ballots"][0]
    save(record, layout.DEVICES, obj)
    res = results(record)
    assert_fails(res, "confirmation codes", "(8.E)", "device 'booth-1'")
    assert_pass(res, "selection well-formedness")


def test_changed_signature_fails_ballot_signatures_only(record):
    a, b = load(record, layout.ballot_file("b-1")), load(record, layout.ballot_file("b-2"))
    a["voter_ballot_signature"] = b["voter_ballot_signature"]
    save(record, layout.ballot_file("b-1"), a)
    res = results(record)
    assert_fails(res, "ballot signatures", "ballot 'b-1'", "does not verify")
    assert_pass(res, "selection well-formedness", "vote limits", "confirmation codes", "aggregation",
                "tally decryption")


def test_changed_identifier_hash_fails_selection_identifiers(record):
    rel = layout.ballot_file("b-3")
    obj = load(record, rel)
    obj["selection_encryption_identifier_hash"] = "11" * 32
    save(record, rel, obj)
    assert_fails(results(record), "selection identifiers", "ballot 'b-3'", "(5.B)")


def test_duplicated_ballot_fails_selection_identifiers(record):
    obj = load(record, layout.ballot_file("b-2"))
    obj["id"] = "b-2-again"
    save(record, layout.ballot_file("b-2-again"), obj)
    res = results(record)
    assert_fails(res, "selection identifiers", "ballot 'b-2-again'", "'b-2'", "(5.A)")
    assert_fails(res, "record index", "ballots/b-2-again.json: not in index.json")
    assert_fails(res, "aggregation", "counts 4 cast ballots, the record has 5")


def test_dropped_ballot_fails_aggregation_and_is_named_by_the_index(record):
    (record / layout.ballot_file("b-2")).unlink()
    res = results(record)
    assert_fails(res, "aggregation", "counts 4 cast ballots, the record has 3")
    assert_fails(res, "record index", "ballots/b-2.json")
    assert_fails(res, "confirmation codes", "'b-2'")


def test_changed_encrypted_tally_fails_aggregation_naming_the_option(record):
    obj = load(record, layout.ENCRYPTED_TALLY)
    opt = obj["contests"][0]["options"][1]
    opt["beta"] = other_element(opt["beta"])
    save(record, layout.ENCRYPTED_TALLY, obj)
    res = results(record)
    assert_fails(res, "aggregation", "contest 1 option 2")
    assert_fails(res, "tally decryption", "tally contest 1 option 2")


def test_changed_tally_value_fails_tally_decryption_naming_the_option(record):
    obj = load(record, layout.DECRYPTED_TALLY)
    obj["contests"][1]["options"][2]["tally"] += 1
    save(record, layout.DECRYPTED_TALLY, obj)
    res = results(record)
    assert_fails(res, "tally decryption", "tally contest 2 option 3", "(10.C)")
    assert_pass(res, "aggregation", "tally contents")


def test_changed_decryption_share_fails_tally_decryption_naming_the_guardian(record):
    obj = load(record, layout.DECRYPTED_TALLY)
    shares = obj["contests"][1]["options"][0]["shares"]
    share = next(s for s in shares if s["guardian"] == 3 and "missing_guardian" not in s)
    share["share"] = other_element(share["share"])
    save(record, layout.DECRYPTED_TALLY, obj)
    res = results(record)
    assert_fails(res, "tally decryption", "tally contest 2 option 1", "guardian 3")
    assert "guardian 1" not in "\n".join(res["tally decryption"].failures)
    assert_pass(res, "aggregation", "challenged ballot decryption")


def test_changed_compensating_share_names_the_guardian_and_the_missing_one(record):
    obj = load(record, layout.DECRYPTED_TALLY)
    shares = obj["contests"][0]["options"][0]["shares"]
    share = next(s for s in shares if s["guardian"] == 1 and s.get("missing_guardian") == 2)
    share["response"] = other_scalar(share["response"])
    save(record, layout.DECRYPTED_TALLY, obj)
    assert_fails(results(record), "tally decryption", "tally contest 1 option 1",
                 "the share of guardian 1 for missing guardian 2 does not verify")


def test_changed_tally_label_fails_tally_contents(record):
    obj = load(record, layout.DECRYPTED_TALLY)
    obj["contests"][0]["options"][0]["label"] = "Ada Lovelace"
    save(record, layout.DECRYPTED_TALLY, obj)
    res = results(record)
    assert_fails(res, "tally contents", "decrypted tally contest 1 option 1", "(11.B)")
    assert_pass(res, "tally decryption")


def test_changed_challenged_nonce_fails_challenged_decryption(record):
    rel = layout.challenged_file("c-1")
    obj = load(record, rel)
    opt = obj["contests"][1]["options"][1]
    opt["nonce"] = other_scalar(opt["nonce"])
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "challenged ballot decryption", "challenged ballot 'c-1' contest 2 option 2")
    assert_pass(res, "challenged ballot contents", "tally decryption")


def test_changed_challenged_selection_fails_both_challenged_steps(record):
    rel = layout.challenged_file("c-1")
    obj = load(record, rel)
    obj["contests"][0]["options"][0]["selection"] = 2       # Mayor, Ada: the option limit is 1
    save(record, rel, obj)
    res = results(record)
    assert_fails(res, "challenged ballot contents", "challenged ballot 'c-1' contest 1 option 1", "(14.E)")


def test_changed_challenged_share_names_the_guardian(record):
    rel = layout.challenged_file("c-1")
    obj = load(record, rel)
    share = next(s for s in obj["ballot_nonce_decryption"]["shares"] if s["guardian"] == 1
                 and "missing_guardian" not in s)
    share["commitment_b"] = other_element(share["commitment_b"])
    save(record, rel, obj)
    assert_fails(results(record), "challenged ballot decryption", "challenged ballot 'c-1' nonce",
                 "the share of guardian 1 does not verify")


def test_decrypting_a_cast_ballot_is_a_failure(record):
    obj = load(record, layout.challenged_file("c-1"))
    obj["id"] = "b-1"
    save(record, layout.challenged_file("b-1"), obj)
    assert_fails(results(record), "challenged ballot decryption", "ballot 'b-1': a cast ballot has been decrypted")


def test_extra_and_changed_files_fail_the_record_index(record):
    (record / "notes.txt").write_text("hello")
    with open(record / layout.HASHES, "ab") as f:
        f.write(b" ")
    res = results(record)
    assert_fails(res, "record index", "notes.txt: not in index.json", "hashes.json: its SHA-256 does not match")


def test_unreadable_ballot_is_reported_not_fatal(record):
    (record / layout.ballot_file("b-3")).write_text('{"id": "b-3", "ballot_state": "Cast"}')
    res = results(record)
    assert_fails(res, "selection well-formedness", "ballots/b-3.json", "missing property")
    assert_pass(res, "parameters", "guardian public keys")
