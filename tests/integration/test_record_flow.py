"""The whole flow through the real `guardian` CLI, as subprocesses, on the standard parameters.

create-local -> encrypt -> ballots submit -> tally -> decrypt-local -> verify, on the
embedded 8-contest, 68-option manifest with a handful of ballots; then the record's
layout, the decrypted results against the plaintexts, and a tampered copy.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from node.record import layout
from node.verifier import STEPS

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "node" / "data" / "demo-manifest.json").read_text())
STYLE = MANIFEST["ballot_styles"][0]["label"]


def guardian(*args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def option(contest: int, number: int) -> str:
    return MANIFEST["contests"][contest - 1]["options"][number - 1]["label"]


def contest(index: int) -> str:
    return MANIFEST["contests"][index - 1]["label"]


# (id, {contest index: [option numbers]}); contest 5 has limit 3, contest 6 limit 2.
VALID = [
    ("v-1", {1: [3], 2: [27], 5: [4], 6: [1, 8], 7: [2]}),
    ("v-2", {}),
    ("v-3", {1: [1], 2: [1], 3: [6], 4: [3], 5: [1, 2, 10], 6: [1, 2], 7: [1], 8: [2]}),
    ("v-4", {1: [3], 5: [4, 5], 8: [1]}),
    ("v-challenged", {1: [7], 5: [5, 6], 6: [3], 8: [1]}),
]


def plaintext_line(ballot_id: str, picks: dict) -> str:
    return json.dumps({"id": ballot_id, "ballot_style": STYLE,
                       "contests": {contest(c): [option(c, o) for o in opts] for c, opts in picks.items()}})


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    base = tmp_path_factory.mktemp("flow")
    rec, sec, enc = base / "record", base / "guardian-secrets", base / "encrypted"
    runs = {}
    runs["create"] = guardian("election", "create-local", "-n", 5, "-k", 3, "--out", rec, "--secrets", sec,
                              "--info", "Flow test election", "--date", "2025-03-01")
    lines = [plaintext_line(i, p) for i, p in VALID]
    lines.insert(2, plaintext_line("bad-over", {1: [1, 2]}))                       # Governor allows one
    lines.insert(4, json.dumps({"id": "bad-option", "ballot_style": STYLE, "contests": {contest(1): ["Nobody"]}}))
    lines.insert(5, "{this is not json")
    (base / "plain.jsonl").write_text("\n".join(lines) + "\n")
    runs["encrypt"] = guardian("encrypt", "--election", rec, "--ballots", base / "plain.jsonl", "--device",
                               "booth-1", "--out", enc, "--chaining")
    cast = [enc / f"{i}.json" for i, _ in VALID if i != "v-challenged"]
    runs["submit"] = guardian("ballots", "submit", "--record", rec, "--cast", *cast,
                              "--challenge", enc / "v-challenged.json")
    runs["resubmit"] = guardian("ballots", "submit", "--record", rec, "--cast", cast[0])
    runs["tally"] = guardian("tally", "--record", rec)
    runs["late"] = guardian("ballots", "submit", "--record", rec, "--cast", cast[0])
    runs["decrypt"] = guardian("election", "decrypt-local", "--record", rec, "--secrets", sec, "--missing", "2,4")
    runs["verify_json"] = guardian("verify", rec, "--json")
    return base, rec, sec, enc, runs


def test_every_command_succeeds(flow):
    *_, runs = flow
    for name in ("create", "submit", "tally", "decrypt", "verify_json"):
        assert runs[name].returncode == 0, (name, runs[name].stdout, runs[name].stderr)


def test_encrypt_refuses_bad_ballots_by_id_and_goes_on(flow):
    *_, enc, runs = flow
    r = runs["encrypt"]
    assert r.returncode == 1
    err = r.stderr
    assert "refused ballot 'bad-over'" in err and "overvoted" in err
    assert "refused ballot 'bad-option'" in err and "no option 'Nobody'" in err
    assert "refused line 6" in err and "not valid JSON" in err
    for ballot_id, _ in VALID:
        assert f"encrypted {ballot_id}  confirmation code " in r.stdout
        assert (enc / f"{ballot_id}.json").exists()
    assert "5 ballots encrypted" in r.stdout and "3 refused" in r.stdout


def test_ballot_box_acknowledges_and_refuses(flow):
    *_, runs = flow
    out = runs["submit"].stdout
    assert out.count("accepted ") == 5 and "accepted v-challenged as challenged" in out
    assert runs["resubmit"].returncode == 1 and "already accepted" in runs["resubmit"].stderr
    assert runs["late"].returncode == 1 and "voting is closed" in runs["late"].stderr
    assert len(runs["late"].stderr.strip().splitlines()) == 1


def test_record_layout(flow):
    base, rec, sec, *_ = flow
    files = set(layout.Record(rec).files())
    expected = {"election_parameters.json", "election_manifest.json", "hashes.json", "hashes_ext.json",
                "joint_election_public_key.json", "key_ceremony.json", "devices.json", "ballot_box.jsonl",
                "encrypted_tally.json", "decrypted_tally.json", "challenged/v-challenged.json",
                "rehearsal.json"}      # an in-process election: no key custody, a rehearsal from the start
    expected |= {f"guardians/guardian_{i}.public_key.json" for i in range(1, 6)}
    expected |= {f"ballots/{i}.json" for i, _ in VALID}
    assert files == expected
    index = json.loads((rec / "index.json").read_bytes())
    assert set(index["files"]) == expected
    assert not any("secret" in f.lower() for f in files)
    assert (sec / "README-TEST-ONLY.txt").exists() and not sec.is_relative_to(rec)
    # the election objects are canonical JSON: no whitespace, no trailing newline
    for name in ("election_parameters.json", "hashes.json", "ballots/v-1.json", "decrypted_tally.json"):
        raw = (rec / name).read_bytes()
        assert raw == json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode()
    params = json.loads((rec / "election_parameters.json").read_bytes())
    assert list(params["fixed_parameters"]) == ["ElectionGuard_Design_Specification_version",
                                                "generation_parameters", "field", "group"]
    assert params["varying_parameters"] == {"n": 5, "k": 3, "info": "Flow test election", "date": "2025-03-01",
                                            "ballot_chaining": "Allowed"}
    assert len(params["fixed_parameters"]["group"]["p"]) == 1024
    ballot = json.loads((rec / "ballots/v-1.json").read_bytes())
    assert ballot["ballot_state"] == "Cast" and ballot["device"] == "booth-1"
    assert ballot["chaining_field"].startswith("00000001") and len(ballot["chaining_field"]) == 72
    assert ballot["voter_signing_pk"] and ballot["voter_ballot_signature"]


def test_decrypted_tally_is_the_sum_of_the_cast_plaintexts(flow):
    _, rec, *_, runs = flow
    expected: dict = {}
    for ballot_id, picks in VALID:
        if ballot_id == "v-challenged":
            continue
        for c, opts in picks.items():
            for o in opts:
                expected[(c, o)] = expected.get((c, o), 0) + 1
    tally = json.loads((rec / "decrypted_tally.json").read_bytes())
    assert tally["guardians_present"] == [1, 3, 5] and tally["guardians_missing"] == [2, 4]
    assert tally["decryption_form"] == "standard" and tally["ballot_count"] == 4
    got = {(c["contest_ix"], o["option_ix"]): o["tally"] for c in tally["contests"] for o in c["options"]}
    assert len(got) == 68
    assert {k: v for k, v in got.items() if v} == expected
    opened = json.loads((rec / "challenged/v-challenged.json").read_bytes())
    picked = {(c["contest_ix"], o["option_ix"]) for c in opened["contests"] for o in c["options"] if o["selection"]}
    assert picked == {(c, o) for c, opts in dict(VALID)["v-challenged"].items() for o in opts}
    assert "Governor" in runs["decrypt"].stdout


def test_verify_json_has_every_step_in_order(flow):
    *_, runs = flow
    report = json.loads(runs["verify_json"].stdout)
    assert report["ok"] is True
    (warning,) = report["warnings"]          # the record of an in-process election says it is a rehearsal
    assert warning.startswith("rehearsal: custody was not certified: guardian election create-local at "), warning
    for command in ("encrypt", "ballots submit", "tally"):          # each command on it added itself
        assert f"guardian {command} at " in warning, warning
    assert [s["step"] for s in report["steps"]] == [name for _, name in STEPS]
    results = {s["step"]: s for s in report["steps"]}
    assert results["contest data"]["result"] == "n/a" and results["contest data"]["items"] == 0
    assert all(s["result"] == "pass" for s in report["steps"] if s["step"] != "contest data")
    assert results["selection well-formedness"]["items"] == 5 * 68
    assert results["confirmation codes"]["items"] == 5 + 1        # five ballots, one device


def test_verify_names_the_step_and_object_of_a_tampered_copy(flow, tmp_path):
    _, rec, *_ = flow
    copy = tmp_path / "copy"
    shutil.copytree(rec, copy)
    path = copy / "ballots/v-3.json"
    ballot = json.loads(path.read_bytes())
    ballot["contest_fields_ciphertexts"][4]["proof_selection_limit"][1]["c"] = "0" * 64
    path.write_bytes(json.dumps(ballot, separators=(",", ":")).encode())
    r = guardian("verify", copy)
    assert r.returncode == 1
    out = r.stdout
    positions = [out.index(f" {name} ") for _, name in STEPS]     # the table: every step, in order
    assert positions == sorted(positions)
    failed = {name for _, name in STEPS if re.search(rf"^\s*\d*\s{re.escape(name)}\s+FAIL\s", out, re.M)}
    assert failed == {"vote limits", "record index"}, out
    assert "FAIL [7 vote limits] ballot 'v-3' contest 5 selection limit proof" in out
    assert "FAIL [record index] ballots/v-3.json: its SHA-256 does not match index.json" in out
    assert "the record does NOT verify" in out


def test_demo_writes_a_record_that_verifies(tmp_path):
    small = {"label": "Small demo", "ballot_styles": [{"label": "everyone", "contests": [1, 2]}],
             "contests": [{"label": "Mayor", "options": [{"label": "Ada"}, {"label": "Grace"}]},
                          {"label": "Council", "selection_limit": 2,
                           "options": [{"label": "Alan"}, {"label": "Barbara"}, {"label": "Claude"}]}]}
    (tmp_path / "small.json").write_text(json.dumps(small))
    rec = tmp_path / "demo-record"
    r = guardian("demo", "--manifest", tmp_path / "small.json", "--ballots", "3", "--challenged", "1",
                 "--missing", "1", "-n", "3", "-k", "2", "--compensated", "--seed", "4", "--record", rec)
    assert r.returncode == 0, r.stderr
    assert f"guardian verify {rec}" in r.stdout
    r = guardian("verify", rec)
    assert r.returncode == 0, r.stdout
    assert "the record verifies: every applicable step passed" in r.stdout
    assert re.search(r"^\s*13 challenged ballot decryption\s+pass\s+1\s", r.stdout, re.M), r.stdout
    assert re.search(r"^\s*12 contest data\s+n/a\s+0\s", r.stdout, re.M), r.stdout
    tally = json.loads((rec / "decrypted_tally.json").read_bytes())
    assert tally["decryption_form"] == "compensated" and tally["guardians_missing"] == [1]


@pytest.mark.parametrize("args, message", [
    (["verify", "/nonexistent/record"], "not a directory"),
    (["tally", "--record", "/nonexistent/record"], "not a directory"),
    (["ballots", "submit", "--record", "/tmp"], "nothing to submit"),
    (["encrypt", "--election", "/tmp", "--ballots", "x", "--device", "d", "--out", "/tmp/x"],
     "not an election directory"),
])
def test_bad_arguments_get_one_readable_line(args, message):
    r = guardian(*args, timeout=120)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


def test_create_local_refuses_secrets_inside_the_record(tmp_path):
    r = guardian("election", "create-local", "-n", 3, "-k", 2, "--out", tmp_path / "rec",
                 "--secrets", tmp_path / "rec" / "secrets", timeout=120)
    assert r.returncode == 1 and "outside the election directory" in r.stderr
    assert not (tmp_path / "rec").exists()


def test_help_describes_the_local_stand_ins():
    r = guardian("election", "create-local", "--help", timeout=60)
    assert r.returncode == 0 and "stand-in" in r.stdout and "TEST" in r.stdout
    r = guardian("election", "decrypt-local", "--help", timeout=60)
    assert r.returncode == 0 and "stand-in" in r.stdout
    r = guardian("--help", timeout=60)
    for command in ("encrypt", "ballots", "tally", "verify", "election"):
        assert command in r.stdout
