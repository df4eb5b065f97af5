"""The ballot box: what it refuses and why, and that a crash loses no accepted ballot (standard parameters)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from node.crypto.ballot import BallotChain, PlaintextBallot
from node.crypto.manifest import parse_manifest
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.record.ballot_box import BallotBox, Submission, read_journal
from node.record.encrypt import encrypt_records
from node.record.local import create_local_election
from node.record.election import open_election
from node.verifier import verify_record

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = {
    "label": "Ballot box test election",
    "contests": [
        {"label": "Mayor", "options": [{"label": "Ada"}, {"label": "Grace"}]},
        {"label": "Measure", "options": [{"label": "Yes"}, {"label": "No"}]},
    ],
    "ballot_styles": [{"label": "all", "contests": [1, 2]}],
}


def plain(ballot_id: str, mayor: str = "Ada") -> PlaintextBallot:
    return PlaintextBallot(ballot_id, "all", {"Mayor": {mayor: 1}, "Measure": {"Yes": 1}})


def encrypt_into(election: Path, out: Path, ids: list[str], device: str, chained: bool) -> list[Path]:
    ctx = open_election(election).context
    chain = BallotChain(ctx.h_e, device) if chained else None
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for _, rec in encrypt_records(ctx, [plain(i) for i in ids], device, chain, workers=1):
        assert not isinstance(rec, str), rec
        path = out / f"{rec.ballot_id}.json"
        path.write_bytes(codec.canonical_bytes(codec.ballot_to_json(STANDARD, rec)))
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("box")
    manifest = parse_manifest(MANIFEST)
    create_local_election(base / "election", base / "secrets", manifest, 3, 2, "box test")
    create_local_election(base / "other", base / "other-secrets", manifest, 3, 2, "another election")
    ballots = {
        "plain": encrypt_into(base / "election", base / "enc", ["p-1", "p-2", "p-3"], "kiosk-1", False),
        "chain": encrypt_into(base / "election", base / "enc", ["c-1", "c-2", "c-3"], "booth-7", True),
        "many": encrypt_into(base / "election", base / "enc", [f"m-{i}" for i in range(1, 9)], "kiosk-2", False),
        "other": encrypt_into(base / "other", base / "enc-other", ["p-1"], "kiosk-1", False),
    }
    return base, ballots


@pytest.fixture
def record(setup, tmp_path) -> Path:
    base, _ = setup
    root = tmp_path / "record"
    shutil.copytree(base / "election", root)
    return root


def subs(paths, state=codec.CAST) -> list[Submission]:
    return [Submission(str(p), Path(p).read_bytes(), state) for p in paths]


def submit(root: Path, submissions) -> dict:
    with BallotBox.open(root) as box:
        return {o.ballot_id or o.source: o for o in box.submit(submissions, workers=1)}


def tampered(path: Path, tmp: Path, change) -> Path:
    obj = json.loads(path.read_bytes())
    change(obj)
    out = tmp / f"tampered-{path.name}"
    out.write_bytes(codec.canonical_bytes(obj))
    return out


def assert_consistent(root: Path, acknowledged: set[str] = frozenset()) -> list[codec.JournalEntry]:
    """Every journal entry's file is there with its digest, nothing else is in ballots/, and the index matches."""
    entries = read_journal(layout.Record(root))
    ids = {e.ballot_id for e in entries}
    assert acknowledged <= ids, f"acknowledged but lost: {acknowledged - ids}"
    for e in entries:
        assert layout.sha256_file(root / layout.ballot_file(e.ballot_id)) == e.sha256
    on_disk = {p.name for p in (root / layout.BALLOTS).iterdir()} if (root / layout.BALLOTS).exists() else set()
    assert on_disk == {f"{i}.json" for i in ids}, on_disk
    res = {r.step: r for r in verify_record(root, workers=1)}
    assert res["record index"].ok, res["record index"].failures
    for step in ("selection identifiers", "selection well-formedness", "confirmation codes", "ballot signatures"):
        assert res[step].ok, (step, res[step].failures)
    return entries


# --- acceptance and refusals ---------------------------------------------------------------------------


def test_accepts_cast_and_challenged_ballots_durably(setup, record):
    _, b = setup
    out = submit(record, subs(b["plain"][:2]) + subs(b["plain"][2:], codec.CHALLENGED))
    assert all(o.accepted for o in out.values())
    assert out["p-3"].state == codec.CHALLENGED and len(out["p-1"].confirmation_code) == 64
    entries = assert_consistent(record, {"p-1", "p-2", "p-3"})
    assert [(e.seq, e.ballot_id, e.state) for e in entries] == [(1, "p-1", "Cast"), (2, "p-2", "Cast"),
                                                                 (3, "p-3", "Challenged")]
    stored = json.loads((record / layout.ballot_file("p-3")).read_bytes())
    assert stored["ballot_state"] == "Challenged"
    devices = json.loads((record / layout.DEVICES).read_bytes())["devices"]
    assert devices == [{"device": "kiosk-1", "chaining": "none", "ballots": ["p-1", "p-2", "p-3"]}]


def test_refuses_duplicates(setup, record, tmp_path):
    _, b = setup
    with BallotBox.open(record) as box:
        first = box.submit(subs([b["plain"][0], b["plain"][0]]), workers=1)
    assert [o.accepted for o in first] == [False, True] or [o.accepted for o in first] == [True, False]
    assert "appears twice in this submission" in next(o.reason for o in first if not o.accepted)
    again = submit(record, subs([b["plain"][0]]))
    assert not again["p-1"].accepted and "already accepted" in again["p-1"].reason
    # the same encryption under another id: the selection encryption identifier gives it away (5.A)
    copy = tampered(b["plain"][0], tmp_path, lambda o: o.update(id="p-1-copy"))
    out = submit(record, subs([copy]))
    assert not out["p-1-copy"].accepted
    assert "selection encryption identifier" in out["p-1-copy"].reason and "'p-1'" in out["p-1-copy"].reason
    # an id that differs only by case would collide as a file name on some systems
    upper = tampered(b["plain"][1], tmp_path, lambda o: o.update(id="P-2"))
    submit(record, subs([b["plain"][1]]))
    out = submit(record, subs([upper]))
    assert not out["P-2"].accepted and "already accepted" in out["P-2"].reason
    assert_consistent(record, {"p-1", "p-2"})


def test_refuses_a_ballot_of_another_election(setup, record):
    _, b = setup
    out = submit(record, subs(b["other"]))
    assert not out["p-1"].accepted and "for another election" in out["p-1"].reason
    assert read_journal(layout.Record(record)) == []


def test_refuses_a_bad_proof_naming_the_selection(setup, record, tmp_path):
    _, b = setup

    def change(o):
        pair = o["contest_fields_ciphertexts"][1]["proofs_correctness"][0][1]
        pair["v"] = format((int(pair["v"], 16) + 1) % int(STANDARD.q), "X").zfill(64)

    bad = tampered(b["plain"][1], tmp_path, change)
    out = submit(record, subs([b["plain"][0], bad, b["plain"][2]]))
    assert out["p-1"].accepted and out["p-3"].accepted
    assert not out["p-2"].accepted
    assert "ballot 'p-2' contest 2 option 1" in out["p-2"].reason and "Verification 6" in out["p-2"].reason
    assert_consistent(record, {"p-1", "p-3"})


def test_refuses_a_bad_signature(setup, record, tmp_path):
    _, b = setup
    other_sig = json.loads(b["plain"][2].read_bytes())["voter_ballot_signature"]
    bad = tampered(b["plain"][0], tmp_path, lambda o: o.update(voter_ballot_signature=other_sig))
    unsigned = tampered(b["plain"][1], tmp_path,
                        lambda o: [o.pop("voter_signing_pk"), o.pop("voter_ballot_signature")])
    out = submit(record, subs([bad, unsigned]))
    assert not out["p-1"].accepted and "bad signature" in out["p-1"].reason and "does not verify" in out["p-1"].reason
    assert not out["p-2"].accepted and "unsigned" in out["p-2"].reason


def test_refuses_a_broken_chain_and_orders_a_shuffled_one(setup, record):
    _, b = setup
    c1, c2, c3 = b["chain"]
    out = submit(record, subs([c1, c3]))
    assert out["c-1"].accepted
    assert not out["c-3"].accepted and "broken chain" in out["c-3"].reason and "booth-7" in out["c-3"].reason
    out = submit(record, subs([c3, c2]))               # any order: the box follows the links
    assert out["c-2"].accepted and out["c-3"].accepted
    entries = assert_consistent(record, {"c-1", "c-2", "c-3"})
    assert [e.ballot_id for e in entries] == ["c-1", "c-2", "c-3"]
    devices = json.loads((record / layout.DEVICES).read_bytes())["devices"]
    assert devices[0]["chaining"] == "simple" and devices[0]["ballots"] == ["c-1", "c-2", "c-3"]
    assert len(devices[0]["closing_hash"]) == 64


def test_the_command_submits_in_chunks_and_a_chain_out_of_order_finds_its_place(setup, record, tmp_path,
                                                                                monkeypatch, capsys):
    """`guardian ballots submit` reads, checks and accepts SUBMIT_CHUNK files at a time (memory stays flat); a
    chained ballot whose predecessor comes in a later chunk waits for it, and the index is written once."""
    import node.cli.record as record_cli
    from node.cli.main import main

    _, b = setup
    c1, c2, c3 = b["chain"]
    monkeypatch.setattr(record_cli, "SUBMIT_CHUNK", 2)
    files = tmp_path / "in"
    files.mkdir()
    for i, path in enumerate([c3, b["plain"][0], c2, b["plain"][1], c1]):     # the chain backwards, in 3 chunks
        shutil.copy(path, files / f"{i}-{Path(path).name}")
    assert main(["ballots", "submit", "--record", str(record), "--cast", str(files), "--rehearsal"]) == 0
    assert "5 accepted, 0 refused" in capsys.readouterr().out
    entries = assert_consistent(record, {"c-1", "c-2", "c-3", "p-1", "p-2"})
    assert [e.ballot_id for e in entries if e.ballot_id.startswith("c-")] == ["c-1", "c-2", "c-3"]


def test_a_follower_reads_each_journal_line_once_and_waits_for_a_torn_one(setup, record):
    from node.record.ballot_box import journal_tail

    _, b = setup
    submit(record, subs(b["plain"][:2]))
    rec = layout.Record(record)
    entries, offset = journal_tail(rec)
    assert [e.ballot_id for e in entries] == ["p-1", "p-2"]
    assert journal_tail(rec, offset, 2) == ([], offset)
    submit(record, subs(b["plain"][2:]))
    with open(record / layout.JOURNAL, "ab") as f:
        f.write(b'{"seq": 4, "ballot')                  # a line being written
    entries, after = journal_tail(rec, offset, 2)
    assert [e.ballot_id for e in entries] == ["p-3"] and after < (record / layout.JOURNAL).stat().st_size


def test_refuses_malformed_files_and_unsafe_ids_and_goes_on(setup, record, tmp_path):
    _, b = setup
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    evil = tampered(b["plain"][0], tmp_path, lambda o: o.update(id="../../etc/passwd"))
    missing = Submission(str(tmp_path / "nowhere.json"), None, codec.CAST, "cannot read the file: No such file")
    with BallotBox.open(record) as box:
        outcomes = box.submit(subs([garbage, evil, b["plain"][1]]) + [missing], workers=1)
    by_source = {o.source: o for o in outcomes}
    assert "not valid JSON" in by_source[str(garbage)].reason
    assert "is not allowed" in by_source[str(evil)].reason
    assert "cannot read" in by_source[str(tmp_path / "nowhere.json")].reason
    assert by_source[str(b["plain"][1])].accepted
    assert not (record / "etc").exists() and not (record.parent / "etc").exists()


def test_the_box_closes_with_the_tally(setup, record):
    _, b = setup
    submit(record, subs(b["plain"][:1]))
    with BallotBox.open(record) as box:
        assert box.tally().ballot_count == 1
    with BallotBox.open(record) as box:
        with pytest.raises(Exception, match="voting is closed"):
            box.submit(subs(b["plain"][1:2]))


def test_one_process_at_a_time(record):
    with BallotBox.open(record):
        with pytest.raises(Exception, match="another process is using this ballot box"):
            BallotBox.open(record)


# --- crashes --------------------------------------------------------------------------------------------


def guardian_submit(root: Path, paths) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "node", "ballots", "submit", "--record", str(root), "--workers",
                             "1", "--cast", *map(str, paths)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def acknowledged(stdout: str) -> set[str]:
    return {line.split()[1] for line in stdout.splitlines() if line.startswith("accepted ")}


def _cut_last_journal_line(record: Path, keep_half: bool) -> None:
    """Leave the journal as a power cut during acceptance would: the ballot file is on disk, and the
    journal line that commits it is missing or only half written."""
    journal = record / layout.JOURNAL
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + (lines[-1][: len(lines[-1]) // 2] if keep_half else b""))


@pytest.mark.parametrize("crash", ["after the ballot file", "mid journal line"])
def test_a_crash_during_acceptance_leaves_nothing_half_accepted(setup, record, crash):
    _, b = setup
    # devices.json and index.json are rewritten after a batch: a crash mid-acceptance leaves the old ones.
    derived = {name: (record / name).read_bytes() for name in ("devices.json", "index.json")
               if (record / name).exists()}
    submit(record, subs(b["many"][:1]))
    _cut_last_journal_line(record, keep_half=crash == "mid journal line")
    for name in ("devices.json", "index.json"):
        if name in derived:
            (record / name).write_bytes(derived[name])
        else:
            (record / name).unlink(missing_ok=True)
    # The next opening recovers: no half-accepted ballot stays, nothing committed is lost.
    with BallotBox.open(record) as box:
        notes = box.recovery_notes
        committed = {e.ballot_id for e in box.entries}
    assert committed == set()
    if crash == "after the ballot file":
        assert any("never accepted" in n for n in notes), notes
    else:
        assert any("incomplete last journal entry" in n for n in notes), notes
    assert_consistent(record, committed)
    out = submit(record, subs(b["many"][:3]))
    assert {k for k, o in out.items() if o.accepted} == {"m-1", "m-2", "m-3"}
    assert_consistent(record, {"m-1", "m-2", "m-3"})


def test_sigkill_mid_submission_keeps_every_acknowledged_ballot(setup, record):
    _, b = setup
    proc = guardian_submit(record, b["many"])
    lines = []
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("accepted "):
            proc.send_signal(signal.SIGKILL)            # the power fails right after the first acknowledgment
            break
    proc.wait(timeout=300)
    rest, _ = proc.communicate()
    acked = acknowledged("".join(lines) + (rest or ""))
    assert "m-1" in acked
    for e_id in acked:                                   # before any recovery, the journal already has them
        assert e_id in {e.ballot_id for e in read_journal(layout.Record(record))}
    with BallotBox.open(record) as box:
        committed = {e.ballot_id for e in box.entries}
    assert acked <= committed
    assert_consistent(record, acked)
    out = submit(record, subs(b["many"]))
    assert {k for k, o in out.items() if o.accepted} == {f"m-{i}" for i in range(1, 9)} - committed
    assert_consistent(record, {f"m-{i}" for i in range(1, 9)})
