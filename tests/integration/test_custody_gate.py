"""The custody gate through the real `guardian` CLI: an election proceeds only with its ceremony certificate.

Without nodes (a ceremony export as a node writes it, custody done and certified, from node.testing.certified):
`guardian record init` and its refusals, the example plaintext ballots of configs/ encrypted into the record,
`guardian encrypt`, `ballots submit` and `tally` refusing a record whose certificate is missing or does not
hold, a rehearsal going on loudly (stderr, rehearsal.json, the verifier's warning), an in-process election
being a rehearsal from the start, and `guardian certificate show` read from the data directory.

With three real nodes (n = 3, k = 2): `guardian decrypt` refused before custody is complete, naming who is
missing and which steps; a rehearsal refused by a node that does not allow them, then decrypted by those
that do, the other refusing with its reason.
"""

from __future__ import annotations

import json
import shutil

import pytest
import trio

from decryption_harness import ceremony_export, final, prepare_record, set_decryption
from node.custody.certificate import CERTIFICATE_JSON, certificate_text, write_certificate
from node.record import layout
from node.testing.certified import certified_export
from node.testing.processes import PASS_ENV, PROJECT, all_connected, eventually, guardian, start_dead
from test_ceremony_nodes import ask, make_cluster, start_cluster
from test_record_flow import VALID

EXAMPLE = PROJECT / "configs" / "ballots.jsonl"
HINT = ("the election may not proceed until every guardian has exported, confirmed and verified its key backup: "
        "see who is missing with `guardian ceremony status`, then start the record with `guardian record init`")
NO_CERTIFICATE = "no ceremony certificate: the guardians' key custody is not certified"


def ok(*args, timeout: float = 300):
    r = guardian(*args, timeout=timeout)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r


def one_line(*args, timeout: float = 300) -> str:
    """Exit 1 with one readable line on stderr: that line."""
    r = guardian(*args, timeout=timeout)
    assert r.returncode == 1, (args, r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def node_dir(standard_election, tmp_path_factory):
    """A node data directory holding a certified ceremony export and an uncertified one."""
    base = tmp_path_factory.mktemp("gate")
    good = certified_export(base / "node", standard_election, "Gate test election")
    bare = certified_export(base / "node", standard_election, "Gate test election, custody not done", certify=False)
    return base, good, bare


@pytest.fixture(scope="module")
def encrypted(node_dir):
    """The example plaintext ballots, encrypted for the election (a rehearsal's copy: any copy's H_E is the same)."""
    base, good, _ = node_dir
    scratch = base / "scratch"
    shutil.copytree(good.export, scratch)
    enc = base / "encrypted"
    ok("encrypt", "--election", scratch, "--ballots", EXAMPLE, "--device", "booth-1", "--out", enc)
    return enc


# --- guardian record init ------------------------------------------------------------------------------------


def test_record_init_starts_the_record_and_the_example_ballots_encrypt_into_it(node_dir, tmp_path):
    base, good, _ = node_dir
    config = base / "node" / "node.toml"
    rec = tmp_path / "record"
    r = ok("record", "init", "--ceremony", good.session[:12], "--out", rec, "--config", config)
    h_e = json.loads((good.export / layout.HASHES_EXT).read_text())["h_e"]
    files = len(layout.Record(good.export).read_index())
    assert r.stdout.splitlines() == [
        f"record started in {rec} from ceremony {good.session[:16]} (Gate test election: n=5, k=3), H_E {h_e}; "
        f"{files} files copied and checked against the index",
        "  the ceremony certificate is signed by all 5 guardians and is this record's: custody complete, the "
        "election may proceed",
        f"Next: guardian encrypt --election {rec} --ballots FILE --device ID --out DIR   (plaintext ballots, one "
        f"JSON object a line: see configs/ballots.jsonl)"], r.stdout
    assert r.stderr == ""
    assert layout.Record(rec).files() == layout.Record(good.export).files()
    for rel in layout.Record(rec).files() + [layout.INDEX]:
        assert (rec / rel).read_bytes() == (good.export / rel).read_bytes(), rel
    assert {CERTIFICATE_JSON, "certificate.txt", "election_config.json"} <= set(layout.Record(rec).read_index())

    enc = tmp_path / "encrypted"
    r = ok("encrypt", "--election", rec, "--ballots", EXAMPLE, "--device", "booth-1", "--out", enc)
    ids = [json.loads(line)["id"] for line in EXAMPLE.read_text().splitlines()]
    assert r.stdout.splitlines()[-1] == f"{len(ids)} ballots encrypted into {enc}" and "warning" not in r.stderr
    r = ok("ballots", "submit", "--record", rec, "--cast", *[enc / f"{i}.json" for i in ids[:-1]],
           "--challenge", enc / f"{ids[-1]}.json")
    assert r.stdout.splitlines()[-1] == f"{len(ids)} accepted, 0 refused" and "warning" not in r.stderr
    ok("tally", "--record", rec)
    report = json.loads(ok("verify", rec, "--json").stdout)
    assert report["ok"] is True and report["warnings"] == [], report["warnings"]


def test_record_init_refuses_what_it_must_naming_it(node_dir, tmp_path):
    base, good, bare = node_dir
    config = base / "node" / "node.toml"
    ceremonies = base / "node" / "ceremonies"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert one_line("record", "init", "--ceremony", good.session, "--out", busy, "--config", config) == (
        f"guardian record: error: {busy}: exists and is not empty; a record is never started over another")
    known = ", ".join(sorted(s[:16] for s in (good.session, bare.session)))
    assert one_line("record", "init", "--ceremony", "fffff", "--out", tmp_path / "r1", "--config", config) == (
        f"guardian record: error: no completed ceremony fffff in {ceremonies} (this node's completed "
        f"ceremonies: {known}; see `guardian ceremony status`)")
    assert one_line("record", "init", "--ceremony", "xyz", "--out", tmp_path / "r1", "--config", config) == (
        "guardian record: error: --ceremony must be a ceremony's hash or a prefix of at least 4 hex digits, "
        "got 'xyz'")
    assert one_line("record", "init", "--ceremony", bare.session[:12], "--out", tmp_path / "r1", "--config",
                    config) == (
        f"guardian record: error: ceremony {bare.session[:16]}: {NO_CERTIFICATE} ({HINT}; to rehearse "
        f"without it, add --rehearsal)")
    assert not (tmp_path / "r1").exists()

    half = ceremonies / ("0" * 64)            # a ceremony directory without its election files
    half.mkdir()
    (half / "election_config.json").write_text("{}")
    assert one_line("record", "init", "--ceremony", "0000", "--out", tmp_path / "r1", "--config", config) == (
        f"guardian record: error: ceremony {'0' * 16}: its export in {half} is incomplete (no "
        f"election_parameters.json); is the ceremony complete on this node? (`guardian ceremony status`)")
    shutil.rmtree(half)

    # a rehearsal is started loudly, and says so
    rehearsal = tmp_path / "rehearsal"
    r = ok("record", "init", "--ceremony", bare.session[:12], "--out", rehearsal, "--config", config, "--rehearsal")
    assert r.stderr.splitlines() == [
        f"warning: REHEARSAL: {NO_CERTIFICATE}; guardian record init goes on because of --rehearsal, and the "
        f"record says so in rehearsal.json"]
    assert "  REHEARSAL: no ceremony certificate; every command on this record will say so" in r.stdout.splitlines()
    note = json.loads((rehearsal / "rehearsal.json").read_text())
    assert [e["command"] for e in note["entries"]] == ["guardian record init"]
    assert "rehearsal.json" in layout.Record(rehearsal).read_index()


def test_record_init_refuses_a_superseded_ceremony(standard_election, tmp_path):
    old = certified_export(tmp_path / "node", standard_election, "Rotated election")
    new = certified_export(tmp_path / "node", standard_election, "Rotated election", replaces=old.config.session)
    assert one_line("record", "init", "--ceremony", old.session[:16], "--out", tmp_path / "r",
                    "--config", tmp_path / "node" / "node.toml") == (
        f"guardian record: error: ceremony {old.session[:16]} is superseded by ceremony {new.session[:16]} "
        f"(its keys were replaced): start the record from that one, `guardian record init --ceremony "
        f"{new.session[:16]}`")


# --- encrypt, submit, tally: the gate --------------------------------------------------------------------------


def test_the_commands_refuse_a_record_without_a_certificate_that_holds(node_dir, encrypted, tmp_path):
    base, good, bare = node_dir
    ids = [json.loads(line)["id"] for line in EXAMPLE.read_text().splitlines()]
    ballots = [encrypted / f"{i}.json" for i in ids]
    record = tmp_path / "bare"
    shutil.copytree(bare.export, record)
    refusal = f"{record}: {NO_CERTIFICATE} ({HINT}; to rehearse without it, add --rehearsal)"
    assert one_line("encrypt", "--election", record, "--ballots", EXAMPLE, "--device", "d", "--out",
                    tmp_path / "enc") == f"guardian encrypt: error: {refusal}"
    assert not (tmp_path / "enc").exists()
    assert one_line("ballots", "submit", "--record", record, "--cast", *ballots) == \
        f"guardian ballots: error: {refusal}"
    assert one_line("tally", "--record", record) == f"guardian tally: error: {refusal}"
    assert not (record / layout.ENCRYPTED_TALLY).exists() and not (record / "rehearsal.json").exists()

    # a certificate that does not hold is no certificate: every signature is checked
    forged = tmp_path / "forged"
    shutil.copytree(good.export, forged)
    certificate = json.loads((forged / CERTIFICATE_JSON).read_text())
    certificate["signatures"][1]["signature"] = certificate["signatures"][2]["signature"]
    write_certificate(forged, certificate)
    assert one_line("tally", "--record", forged) == (
        f"guardian tally: error: {forged}: its ceremony certificate does not hold: guardian 2 (g2)'s signature does "
        f"not verify ({HINT}; to rehearse without it, add --rehearsal)")
    # nor is another ceremony's certificate (here: of the same keys, with other guardians' identities)
    other = tmp_path / "other"
    shutil.copytree(bare.export, other)
    write_certificate(other, good.certificate)
    assert one_line("encrypt", "--election", other, "--ballots", EXAMPLE, "--device", "d", "--out",
                    tmp_path / "enc2") == (
        f"guardian encrypt: error: {other}: its ceremony certificate does not hold: the record's election_config.json "
        f"is ceremony {bare.session[:16]}, the certificate is of {good.session[:16]} ({HINT}; to rehearse without "
        f"it, add --rehearsal)")


def test_a_rehearsal_goes_on_loudly_and_the_verifier_says_so(node_dir, encrypted, tmp_path):
    _, _, bare = node_dir
    ids = [json.loads(line)["id"] for line in EXAMPLE.read_text().splitlines()]
    record = tmp_path / "rehearsal"
    shutil.copytree(bare.export, record)
    r = ok("ballots", "submit", "--record", record, "--cast", *[encrypted / f"{i}.json" for i in ids], "--rehearsal")
    assert r.stderr.splitlines()[0] == (
        f"warning: REHEARSAL: {NO_CERTIFICATE}; guardian ballots submit goes on because of --rehearsal, and the "
        f"record says so in rehearsal.json")
    r = ok("tally", "--record", record)                     # a rehearsal already: no flag needed, still loud
    assert r.stderr.splitlines() == [
        f"warning: REHEARSAL: {NO_CERTIFICATE}; guardian tally goes on because the record is a rehearsal "
        f"(rehearsal.json), and adds itself to it"]
    note = json.loads((record / "rehearsal.json").read_text())
    assert note["format"] == "guardian-node rehearsal v1" and "not a real election" in note["note"]
    assert [(e["command"], e["skipped"]) for e in note["entries"]] == [
        ("guardian ballots submit", NO_CERTIFICATE), ("guardian tally", NO_CERTIFICATE)]
    r = ok("verify", record)
    (warning,) = [line for line in r.stdout.splitlines() if line.startswith("warning: ")]
    at = [e["at"] for e in note["entries"]]
    assert warning == (f"warning: rehearsal: custody was not certified: guardian ballots submit at {at[0]}; "
                       f"guardian tally at {at[1]} went on without a ceremony certificate (rehearsal.json); this "
                       f"record is a rehearsal, not a real election")
    assert json.loads(ok("verify", record, "--json").stdout)["warnings"] == [warning[len("warning: "):]]


def test_an_in_process_election_is_a_rehearsal_from_the_start(tmp_path):
    rec = tmp_path / "local"
    ok("election", "create-local", "-n", 3, "-k", 2, "--out", rec, "--secrets", tmp_path / "secrets")
    assert [e["command"] for e in json.loads((rec / "rehearsal.json").read_text())["entries"]] == \
        ["guardian election create-local"]
    r = ok("encrypt", "--election", rec, "--ballots", EXAMPLE, "--device", "d", "--out", tmp_path / "enc")
    assert r.stderr.splitlines()[0].startswith(f"warning: REHEARSAL: {NO_CERTIFICATE}; guardian encrypt goes on "
                                               f"because the record is a rehearsal (rehearsal.json)")


# --- guardian certificate show, without a running node ------------------------------------------------------------


def test_certificate_show_reads_the_export_in_the_data_directory(node_dir, tmp_path):
    base, good, bare = node_dir
    config = base / "node" / "node.toml"
    r = ok("certificate", "show", "--ceremony", good.session[:12], "--config", config)
    assert r.stdout == certificate_text(good.certificate)
    r = ok("certificate", "show", "--json", "--ceremony", good.session[:12], "--config", config)
    assert json.loads(r.stdout) == good.certificate
    out = tmp_path / "cert.json"
    ok("certificate", "show", "--ceremony", good.session[:12], "--config", config, "--out", out)
    assert json.loads(out.read_text()) == good.certificate
    assert (tmp_path / "cert.txt").read_text() == certificate_text(good.certificate)
    assert one_line("certificate", "show", "--ceremony", bare.session[:12], "--config", config) == (
        f"guardian certificate: error: ceremony {bare.session[:16]} has no certificate yet: custody is not complete "
        f"(see who is missing with `guardian ceremony status` on the running node)")


# --- on real nodes: the node's policy ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def three():
    """Three nodes (k = 2), their ceremony with no custody done yet, and a record of it prepared as a rehearsal."""
    cluster, nodes = make_cluster(["g1", "g2", "g3"])
    with cluster:
        for node in nodes:
            set_decryption(node, timeout_seconds=8, verify_workers=1)
        start_cluster(cluster, nodes)
        export = ceremony_export(nodes, quorum=2, custody=False)
        record = prepare_record(cluster.base, export, [b for b in VALID if b[0] in ("v-1", "v-challenged")],
                                rehearsal=True)
        yield cluster, nodes, export, record


def test_a_node_refuses_to_decrypt_before_custody_is_complete_naming_who_is_missing(three):
    cluster, (g1, g2, g3), export, record = three
    session = export.name
    backup = cluster.base / "g1.backup"
    ok("backup", "export", "--out", backup, "--ceremony", session, "--config", g1.config, "--passphrase-env", PASS_ENV)
    ok("backup", "confirm", "--copies", 2, "--ceremony", session, "--config", g1.config)
    ok("backup", "verify", backup, "--ceremony", session, "--config", g1.config, "--passphrase-env", PASS_ENV)
    ok("backup", "export", "--out", cluster.base / "g2.backup", "--ceremony", session, "--config", g2.config,
       "--passphrase-env", PASS_ENV)

    async def seen():                  # g2's step reached g1
        entry = next(e for e in await ask(g1, "ceremony-status") if e["session"] == session)
        assert entry["custody"]["g2"]["downloaded"], entry["custody"]
    trio.run(eventually, seen, 20, "g2's step at g1")
    assert one_line("decrypt", "--record", record, "--config", g1.config) == (
        f"guardian decrypt: error: the key custody of ceremony {session[:16]} is not complete, so this guardian does "
        f"not use its key: waiting for g2 (backed-up, verified); g3 (downloaded, backed-up, verified) (`guardian "
        f"ceremony status`); to rehearse without it, add --rehearsal (on nodes that allow rehearsals)")
    assert one_line("decrypt", "--record", record, "--config", g1.config, "--rehearsal").endswith(
        f"error: the request is a rehearsal (custody not certified) and this guardian's node takes no part in "
        f"rehearsals ([decryption] allow_rehearsal is false in its node.toml); set [decryption] allow_rehearsal = "
        f"true in {g1.config.resolve()} to rehearse")
    assert trio.run(ask, g1, "decrypt-status") == []       # refused before any session


def test_a_rehearsal_is_decrypted_by_the_nodes_that_allow_it_and_refused_by_the_other(three):
    cluster, (g1, g2, g3), export, record = three
    for node in (g1, g2):
        node.stop()
        node.set_config(allow_rehearsal="true")
    trio.run(start_dead, [g1, g2])
    trio.run(all_connected, [g1, g2, g3])
    r = guardian("decrypt", "--record", record, "--config", g1.config, "--rehearsal", "--timeout", 8, timeout=400)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert r.stderr.splitlines()[0] == ("warning: REHEARSAL: the guardians' nodes decrypt without checking the "
                                        "ceremony certificate; the record says so (rehearsal.json)")
    lines = r.stdout.splitlines()
    assert lines[1] == "decrypted (standard form) by g1, g2; missing: g3; 1 round(s)", r.stdout
    refusal = ("the request is a rehearsal (custody not certified) and this guardian's node takes no part in "
               "rehearsals ([decryption] allow_rehearsal is false in its node.toml)")
    assert f"  refused by g3: {refusal}" in lines, r.stdout
    (session,) = [e["session"] for e in trio.run(ask, g1, "decrypt-status")]
    entries = trio.run(final, [g3], session)
    assert entries["g3"]["status"] == "refused" and entries["g3"]["outcome"]["reason"] == refusal
    note = json.loads((record / "rehearsal.json").read_text())
    assert [e["command"] for e in note["entries"]] == ["guardian record init", "guardian encrypt",
                                                      "guardian ballots submit", "guardian tally", "guardian decrypt"]
    report = json.loads(ok("verify", record, "--json").stdout)
    assert report["ok"] is True
    assert [w for w in report["warnings"] if w.startswith("rehearsal: custody was not certified: guardian record "
                                                          "init at ")], report["warnings"]
