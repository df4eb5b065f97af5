"""The record codec: round trips, canonical bytes, and readers that name the field at fault.

The arithmetic here runs on TOY_64 (fast); the codec only sees hex of the group's widths.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crypto.ballot import BallotChain, PlaintextBallot, encrypt_ballot, signature_content, election_id
from node.crypto.ballot_signature import sign_ballot
from node.crypto.ballot import identifier_hash
from node.crypto.election import ElectionParameters
from node.crypto.errors import EncodingError, InputError
from node.crypto.local_ceremony import run_local_ceremony
from node.crypto.params import STANDARD, TOY_64
from node.crypto.tally import tally_ballots
from node.record import codec, layout
from node.record.local import decrypt_tally_record, open_challenged_record

GROUP = TOY_64


@pytest.fixture(scope="module")
def election(small_manifest):
    return run_local_ceremony(ElectionParameters(GROUP, 4, 2, small_manifest), rng=random.Random(11))


@pytest.fixture(scope="module")
def records(election, small_manifest):
    ctx = election.context
    rng = random.Random(3)
    chain = BallotChain(ctx.h_e, "dev")
    out = []
    for n, choices in enumerate([{"Mayor": {"Alice": 1}, "Council": {"Dave": 2}}, {}, {"Measure 1": {"No": 1}}]):
        ballot = encrypt_ballot(ctx, PlaintextBallot(f"b-{n + 1}", "North", choices), "dev", chain.next_field(),
                                rng=rng)
        chain.advance(ballot.confirmation_code)
        sig = sign_ballot(ballot.ballot_id, election_id(ctx), signature_content(ctx, ballot, "2025-01-01T00:00:00Z"))
        out.append(codec.BallotRecord(ballot, codec.CAST, ctx.h_e, "2025-01-01T00:00:00Z",
                                      identifier_hash(ctx.h_e, ballot.selection_identifier), sig))
    return out


def roundtrip(obj: dict) -> object:
    data = codec.canonical_bytes(obj)
    assert data == json.dumps(json.loads(data), separators=(",", ":"), ensure_ascii=False).encode()
    return codec.load_json(data, "test")


# --- round trips ---------------------------------------------------------------------------------------


def test_ballot_round_trip_is_exact(records):
    for rec in records:
        obj = codec.ballot_to_json(GROUP, rec)
        back = codec.ballot_from_json(GROUP, roundtrip(obj))
        assert back == rec
        assert codec.canonical_bytes(codec.ballot_to_json(GROUP, back)) == codec.canonical_bytes(obj)
    first = codec.ballot_to_json(GROUP, records[0])
    assert list(first)[:5] == ["id", "ballot_state", "ballot_style", "device", "creation_date"]
    assert list(first)[-3:] == ["confirmation_code", "voter_signing_pk", "voter_ballot_signature"]
    alpha = first["contest_fields_ciphertexts"][0]["fields_ciphertexts"][0]["alpha"]
    assert len(alpha) == 2 * GROUP.p_bytes and alpha == alpha.upper()


def test_election_objects_round_trip(election):
    ctx = election.context
    params = codec.RecordParameters(GROUP, 4, 2, "A test election", "2025-01-01", "Required")
    assert codec.parameters_from_json(roundtrip(codec.parameters_to_json(params))).group is TOY_64
    back = codec.parameters_from_json(roundtrip(codec.parameters_to_json(params)))
    assert (back.n, back.k, back.info, back.date, back.ballot_chaining) == (4, 2, "A test election", "2025-01-01",
                                                                             "Required")
    for pk in election.public_keys:
        assert codec.guardian_key_from_json(GROUP, roundtrip(codec.guardian_key_to_json(GROUP, pk))) == pk
    keys = codec.JointKeys(ctx.joint_key, ctx.joint_data_key)
    assert codec.joint_keys_from_json(GROUP, roundtrip(codec.joint_keys_to_json(GROUP, keys))) == keys
    hashes = codec.Hashes(ctx.parameters.h_p, ctx.parameters.h_b)
    assert codec.hashes_from_json(roundtrip(codec.hashes_to_json(hashes))) == hashes
    assert codec.hashes_ext_from_json(roundtrip(codec.hashes_ext_to_json(ctx.h_e))) == ctx.h_e
    for i, gk in election.guardian_keys.items():
        assert codec.threshold_key_from_json(GROUP, i, roundtrip(codec.threshold_key_to_json(GROUP, gk.vote)),
                                             "k") == gk.vote


def test_standard_parameters_are_written_as_the_spec_shows():
    obj = codec.parameters_to_json(codec.RecordParameters(STANDARD, 5, 3, "info", "2025-01-01"))
    fixed = obj["fixed_parameters"]
    assert fixed["ElectionGuard_Design_Specification_version"] == {"number": [2, 1]}
    assert fixed["generation_parameters"] == codec.STANDARD_GENERATION
    assert fixed["field"]["q"] == "F" * 62 + "43"
    assert list(fixed["group"]) == ["p", "g", "q"] and fixed["group"]["p"].startswith("F" * 64 + "B17217F7")
    assert codec.parameters_from_json(obj).group is STANDARD


def test_tally_and_decryption_objects_round_trip(election, records):
    ctx = election.context
    tally = tally_ballots(ctx, [r.ballot for r in records[:2]])
    h_e, back = codec.encrypted_tally_from_json(GROUP, roundtrip(codec.encrypted_tally_to_json(GROUP, ctx.h_e, tally)))
    assert back == tally and h_e == ctx.h_e
    keys = {i: election.guardian_keys[i].vote for i in (1, 3)}
    dec = decrypt_tally_record(ctx, election.vote_publics(), keys, tally, compensated=True, rng=random.Random(1))
    assert codec.decrypted_tally_from_json(GROUP, roundtrip(codec.decrypted_tally_to_json(GROUP, dec))) == dec
    shares = dec.contests[0].options[0].shares
    assert {(s.guardian, s.missing) for s in shares} == {(1, None), (3, None), (1, 2), (1, 4), (3, 2), (3, 4)}
    data_keys = {i: election.guardian_keys[i].data for i in (2, 4)}
    opened = open_challenged_record(ctx, election.data_publics(), data_keys, records[2], False, random.Random(2))
    assert codec.challenged_from_json(GROUP, roundtrip(codec.challenged_to_json(GROUP, opened))) == opened
    assert [s.selection for c in opened.contests for s in c.selections] == [0, 0, 0, 0, 0, 0, 0, 1]


def test_devices_journal_and_index_round_trip(records):
    dev = codec.DeviceRecord("dev", "simple", ("b-1", "b-2"), bytes(range(32)))
    plain = codec.DeviceRecord("kiosk é", "none", ("b-3",), None)
    h_e, back = codec.devices_from_json(roundtrip(codec.devices_to_json(b"\x01" * 32, [dev, plain])))
    assert back == [dev, plain] and h_e == b"\x01" * 32
    b = records[0].ballot
    entry = codec.JournalEntry(1, b.ballot_id, codec.CAST, b.device, "simple", b.selection_identifier,
                               b.confirmation_code, "AB" * 32)
    assert codec.journal_entry_from_json(roundtrip(entry.to_json()), "j") == entry
    index = {"b.json": "00" * 32, "a/x.json": "FF" * 32}
    assert codec.index_from_json(roundtrip(codec.index_to_json(index))) == index
    assert list(codec.index_to_json(index)["files"]) == ["a/x.json", "b.json"]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=int(GROUP.p) - 1), st.integers(min_value=0, max_value=int(GROUP.q) - 1))
def test_hex_widths_are_fixed(x, y):
    obj = codec.joint_keys_to_json(GROUP, codec.JointKeys(x, y))
    assert len(obj["joint_election_public_key"]) == 2 * GROUP.p_bytes
    assert codec.joint_keys_from_json(GROUP, obj) == codec.JointKeys(x, y)


# --- readers name the field at fault ------------------------------------------------------------------


def test_reader_names_the_path_of_a_bad_proof_value(records):
    obj = json.loads(codec.canonical_bytes(codec.ballot_to_json(GROUP, records[0])))
    obj["id"] = "b-7"
    obj["contest_fields_ciphertexts"][1]["proofs_correctness"][2][1]["c"] = "abc"
    digits = 2 * GROUP.q_bytes
    with pytest.raises(EncodingError, match=rf"^ballot 'b-7' contest 2 option 3 proof challenge 1: expected {digits} "
                                            r"uppercase hex digits$"):
        codec.ballot_from_json(GROUP, obj)


def _leaves(value, path=()):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_corrupted_field_is_refused_with_the_ballot_named(records, data):
    base = json.loads(codec.canonical_bytes(codec.ballot_to_json(GROUP, records[0])))
    leaves = [p for p in _leaves(base) if p[0] not in ("voter_signing_pk", "voter_ballot_signature",
                                                       "device", "creation_date", "ballot_state", "id")]
    path = data.draw(st.sampled_from(leaves))
    bad = data.draw(st.sampled_from([True, None, [], {}, -1, 2**31, 1.5, "", "zz", "0" * 3]))
    obj = json.loads(json.dumps(base))
    target = obj
    for key in path[:-1]:
        target = target[key]
    original = target[path[-1]]
    if bad == original:
        return
    target[path[-1]] = bad
    with pytest.raises(InputError) as info:
        codec.ballot_from_json(GROUP, obj)
    assert "ballot" in str(info.value)


def test_unknown_missing_and_repeated_properties_are_refused(records):
    obj = codec.ballot_to_json(GROUP, records[0])
    with pytest.raises(EncodingError, match="unknown property 'extra'"):
        codec.ballot_from_json(GROUP, {**obj, "extra": 1})
    del obj["confirmation_code"]
    with pytest.raises(EncodingError, match="ballot 'b-1': missing property 'confirmation_code'"):
        codec.ballot_from_json(GROUP, obj)
    with pytest.raises(EncodingError, match="'h_e' appears more than once"):
        codec.hashes_ext_from_json(codec.load_json(b'{"h_e":"' + b"0" * 64 + b'","h_e":"' + b"0" * 64 + b'"}', "x"))


@pytest.mark.parametrize("data, message", [
    (b"\xef\xbb\xbf{}", "byte order mark"),
    (b"{\"a\": 1.5}", "non-integer number"),
    (b"{\"a\": NaN}", "NaN is not a JSON value"),
    (b"\xff", "not valid UTF-8"),
    (b"{\"a\": ", "not valid JSON"),
])
def test_load_json_is_strict(data, message):
    with pytest.raises(EncodingError, match=message):
        codec.load_json(data, "some.json")


def test_parameters_reader_refuses_bad_shapes():
    obj = codec.parameters_to_json(codec.RecordParameters(STANDARD, 5, 3, "info"))
    obj["varying_parameters"]["k"] = 6
    with pytest.raises(EncodingError, match="k = 6 is larger than n = 5"):
        codec.parameters_from_json(obj)
    obj = codec.parameters_to_json(codec.RecordParameters(STANDARD, 5, 3, "info"))
    obj["fixed_parameters"]["group"]["p"] = "00" + obj["fixed_parameters"]["group"]["p"]
    with pytest.raises(EncodingError, match="group"):
        codec.parameters_from_json(obj)
    obj = codec.parameters_to_json(codec.RecordParameters(STANDARD, 5, 3, "info"))
    obj["varying_parameters"]["ballot_chaining"] = "Sometimes"
    with pytest.raises(EncodingError, match="ballot_chaining: expected one of Prohibited, Allowed, Required"):
        codec.parameters_from_json(obj)


def test_plaintext_lines(small_manifest):
    ballot = codec.plaintext_from_json(
        codec.load_json(b'{"id":"x-1","ballot_style":"North","contests":{"Mayor":["Bob"],"Council":{"Dave":2}}}',
                        "line 1"), "line 1")
    assert ballot == PlaintextBallot("x-1", "North", {"Mayor": {"Bob": 1}, "Council": {"Dave": 2}})
    with pytest.raises(EncodingError, match="ballot 'x-2' contest 'Mayor': option 'Bob' is listed twice"):
        codec.plaintext_from_json({"id": "x-2", "ballot_style": "North", "contests": {"Mayor": ["Bob", "Bob"]}}, "l")
    with pytest.raises(EncodingError, match="line 3: missing property 'ballot_style'"):
        codec.plaintext_from_json({"id": "x-3"}, "line 3")


# --- the directory layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("ballot_id", ["b-1", "A.b_c-9", "x" * 64, "0"])
def test_safe_ballot_ids(ballot_id):
    assert layout.ballot_file(ballot_id) == f"ballots/{ballot_id}.json"


@pytest.mark.parametrize("ballot_id", ["", ".hidden", "../up", "a/b", "a\\b", "x" * 65, "sp ace", "é", "-x", None, 7])
def test_unsafe_ballot_ids_are_refused(ballot_id):
    with pytest.raises(InputError, match="is not allowed"):
        layout.check_ballot_id(ballot_id)


def test_atomic_writes_and_the_index(tmp_path):
    record = layout.Record(tmp_path)
    digest = record.write_json("a/b.json", {"x": 1})
    assert (tmp_path / "a/b.json").read_bytes() == b'{"x":1}'
    assert digest == layout.sha256_hex(b'{"x":1}')
    record.write("c.json", b"{}")
    (tmp_path / "a" / ".b.json.tmp.123.abcd").write_bytes(b"partial")
    index = record.update_index(["a/b.json", "c.json"])
    assert index == {"a/b.json": digest, "c.json": layout.sha256_hex(b"{}")}
    assert record.read_index() == index
    assert record.remove_temp_files() == ["a/.b.json.tmp.123.abcd"]
    (tmp_path / "c.json").unlink()
    assert record.update_index(["c.json"]) == {"a/b.json": digest}
    assert not [p for p in tmp_path.rglob("*") if ".tmp." in p.name]
