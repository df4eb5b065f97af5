"""What a new guardian sees, through the real `guardian` command (subprocesses) and real nodes on loopback:
one-line refusals to start, roster entries that are TOML, status tables (once and --watch), a second
decryption of a decrypted record refused at once, messages that say each thing once, --config help, and
--version.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest
import trio

import node
from node.cli.main import build_parser
from node.config import ConfigError, load_roster
from node.record import layout
from node.testing.processes import (
    PASS_ENV, PROJECT, Cluster, all_connected, cli, eventually, guardian, node_env,
)

MANIFEST = json.loads((PROJECT / "node" / "data" / "demo-manifest.json").read_text())
STYLE = MANIFEST["ballot_styles"][0]["label"]
ELECTION_NAME = "Test county election"


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one line a failing command printed on stderr (no traceback, no exception group)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "ExceptionGroup" not in result.stderr, result.stderr
    return lines[0]


def ok(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    result = guardian(*args, timeout=timeout)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def ballot_line(ballot_id: str, contest: int, option: int) -> str:
    c = MANIFEST["contests"][contest - 1]
    return json.dumps({"id": ballot_id, "ballot_style": STYLE,
                       "contests": {c["label"]: [c["options"][option - 1]["label"]]}})


# --- a cluster of three, running for the module ------------------------------------------------------------


@pytest.fixture(scope="module")
def three():
    cluster = Cluster()
    with cluster:
        nodes = cluster.init_nodes(["g1", "g2", "g3"])
        cluster.write_roster(nodes)

        async def go():
            await cluster.start(*nodes)
            await all_connected(nodes, 60)
        trio.run(go)
        yield cluster, nodes


# --- (3) a port in use, a second run of a running node ---------------------------------------------------


async def test_a_second_run_and_a_port_in_use_are_refused_in_one_line(cluster):
    alice = cluster.init_node("alice")
    cluster.write_roster([alice])
    await cluster.start(alice)

    second = await cli("run", "--config", alice.config, "--passphrase-env", PASS_ENV)
    assert second.returncode == 1
    line = one_line(second)
    assert line == (f"guardian run: error: node 'alice' is already running (pid {alice.proc.pid}) on "
                    f"127.0.0.1:{alice.port} with the data directory {alice.dir.resolve()}: stop that one first")
    assert (await alice.status())["name"] == "alice"          # the running node keeps its socket and port
    assert (alice.dir / "node.pid").read_text() == f"{alice.proc.pid}\n"

    alice.stop()
    with socket.socket() as holder:                             # another process holds the port
        holder.bind(("127.0.0.1", alice.port))
        holder.listen()
        busy = await cli("run", "--config", alice.config, "--passphrase-env", PASS_ENV)
    assert busy.returncode == 1
    assert one_line(busy) == (f"guardian run: error: cannot listen on 127.0.0.1:{alice.port}: the address is in "
                              f"use by another process (stop it, or change [node] listen in "
                              f"{alice.config.resolve()})")
    assert not alice.socket.exists()

    # the pid file of a node that has stopped blocks nothing
    await cluster.start(alice)
    assert (alice.dir / "node.pid").read_text() == f"{alice.proc.pid}\n"


# --- (5) roster entries are TOML: concatenated, they are the roster -------------------------------------


def test_roster_entries_concatenated_are_the_roster(tmp_path):
    with Cluster(tmp_path / "c") as cluster:
        nodes = cluster.init_nodes(["alice", "bob", "carol"])
        entries = []
        for sequence, member in enumerate(nodes, 1):
            out = ok("roster", "entry", "--config", member.config, "--sequence", sequence).stdout
            doc = tomllib.loads(out)                                   # each entry alone is valid TOML
            assert doc == {"guardian": [{"sequence": sequence, "name": member.name, "public_key": doc["guardian"][0]
                                         ["public_key"], "address": member.address,
                                         "fingerprint": member.fingerprint}]}, out
            assert f"# Fingerprint: {member.fingerprint}\n" in out
            entries.append(tmp_path / f"entry{sequence}.toml")
            entries[-1].write_text(out)
        roster = subprocess.run(["cat", *entries], capture_output=True, text=True, check=True).stdout
        for member in nodes:
            (member.dir / "roster.toml").write_text(roster)            # cat entry*.toml > roster.toml

        loaded = load_roster(nodes[0].dir / "roster.toml")
        assert [(e.sequence, e.name, e.public_key, e.address) for e in loaded.entries] == \
            [(i, m.name, m.public_key, m.address) for i, m in enumerate(nodes, 1)]

        shown = ok("roster", "show", "--config", nodes[1].config).stdout.splitlines()
        assert shown[0] == f"roster {(nodes[1].dir / 'roster.toml').resolve()}: 3 guardians"
        assert re.fullmatch(r"\s+#\s+name\s+fingerprint\s+address", shown[1]), shown
        for i, member in enumerate(nodes, 1):
            mark = re.escape("  (this node)") if member is nodes[1] else ""
            assert re.fullmatch(rf"\s+{i}  {member.name}\s+{member.fingerprint}  {member.address}{mark}",
                                shown[1 + i]), shown

        # entries without --sequence concatenate too, and the roster says what to fill in
        unnumbered = "".join(ok("roster", "entry", "--config", m.config).stdout for m in nodes)
        (tmp_path / "unnumbered.toml").write_text(unnumbered)
        with pytest.raises(ConfigError, match=r"set the sequence number of alice, bob, carol: the guardians are "
                                              r"numbered 1\.\.3"):
            load_roster(tmp_path / "unnumbered.toml")


# --- (6) status as tables, and --watch -----------------------------------------------------------------


def test_node_status_is_a_table(three):
    _, (g1, g2, g3) = three
    text = ok("status", "--config", g1.config).stdout
    lines = text.splitlines()
    assert lines[0] == f"node g1, guardian 1 of 3, fingerprint {g1.fingerprint}"
    assert re.fullmatch(rf"listening on 127\.0\.0\.1:{g1.port}; up [0-9.]+ (s|min [0-9]+ s); "
                        r"inbox \d+ messages?, outbox \d+ messages?", lines[1]), lines[1]
    assert re.fullmatch(r"page at http://127\.0\.0\.1:\d+/  \(log in with `guardian page`\)", lines[2]), lines[2]
    assert re.fullmatch(r"\s+#\s+peer\s+state\s+last seen\s+links\s+refused frames", lines[4]), text
    for row, peer in zip(lines[5:7], (g2, g3)):
        assert re.fullmatch(rf"\s+{peer.sequence}\s+{peer.name}\s+connected\s+[0-9.]+ s ago\s+\d+\s+none", row), text
    assert "0000000000000000" not in text and "sessions: node" not in text
    assert "sessions: none" in text
    machine = json.loads(ok("status", "--config", g1.config, "--json").stdout)
    assert {"name", "sequence", "guardians", "fingerprint", "listen", "uptime_seconds", "peers", "other_refusals",
            "sessions", "inbox", "outbox"} <= set(machine)
    assert machine["serving"]["page"] == lines[2].split()[2]


def frames_of(command: list, count: int, stop_after: float = 60) -> tuple[str, str, int]:
    """Run a --watch command until it printed `count` frames, then SIGINT: (stdout, stderr, exit status)."""
    proc = subprocess.Popen([sys.executable, "-m", "node", *map(str, command)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=node_env(), cwd=PROJECT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + stop_after
        while sum(bool(FRAME.match(line)) for line in list(lines)) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        status = proc.wait(timeout=20)
        reader.join(timeout=20)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return "".join(lines), err, status


FRAME = re.compile(r"\d\d:\d\d:\d\d  every [0-9.]+ s; Ctrl-C to stop$")


def test_status_watch_redraws_until_ctrl_c(three):
    _, (g1, _, _) = three
    out, err, status = frames_of(["status", "--config", g1.config, "--watch", "0.3"], 3)
    assert status == 0 and err == "", (status, err)
    frames = [f for f in re.split(r"(?m)^(?=\d\d:\d\d:\d\d  every 0\.3 s; Ctrl-C to stop$)", out) if f.strip()]
    assert len(frames) >= 3, out
    for frame in frames[:3]:
        assert f"node g1, guardian 1 of 3, fingerprint {g1.fingerprint}" in frame, frame
        assert re.search(r"(?m)^\s+2\s+g2\s+connected", frame), frame


async def ceremony_entry(member, session: str) -> dict:
    for entry in await member.control({"cmd": "ceremony-status"}, timeout=60):
        if entry["session"] == session:
            return entry
    raise AssertionError(f"{member.name} has no ceremony {session[:16]}")


def test_ceremony_status_tables_while_proposed_running_and_complete(three):
    cluster, (g1, g2, g3) = three
    election = cluster.base / "election.toml"
    election.write_text(f'election = "{ELECTION_NAME}"\nmanifest = "{PROJECT / "node" / "data" / "demo-manifest.json"}"'
                        f"\nquorum = 2\nphase_timeout_seconds = 60\n")
    proposed = ok("ceremony", "propose", "--election", election, "--config", g1.config).stdout
    session = re.search(r"proposed ceremony ([0-9a-f]{64})", proposed).group(1)
    short = session[:16]

    async def seen_by_all():
        for member in (g1, g2, g3):
            assert (await ceremony_entry(member, session))["status"] == "proposed"
    trio.run(eventually, seen_by_all, 20, "the proposal on every node")
    ok("ceremony", "accept", short, "--config", g1.config)

    async def g1_accepted_on_g2():
        assert "g1" in (await ceremony_entry(g2, session))["votes"]
    trio.run(eventually, g1_accepted_on_g2, 20, "g2 has g1's accept")

    text = ok("ceremony", "status", "--config", g2.config).stdout
    block = text.split("\n\n")[0].splitlines()
    assert block[:7] == [
        f"ceremony {short}  proposed, 1 of 3 guardians accepted",
        f"  waiting for: g2, g3 to accept (guardian ceremony accept {short}) or reject",
        f"  election   {ELECTION_NAME}: n=3, quorum k=2; proposed by g1",
        "  guardian  vote",
        "  g1        accepted",
        "  g2        awaited",
        "  g3        awaited"], text
    machine = json.loads(ok("ceremony", "status", "--json", "--config", g2.config).stdout)
    (entry,) = [c for c in machine if c["session"] == session]
    assert {"session", "status", "proposer", "outcome", "election", "n", "k", "votes"} <= set(entry)
    assert entry["votes"] == {"g1": {"vote": "accept", "why": ""}}

    # guardian status lists the session with its election, not the node session
    status = ok("status", "--config", g2.config).stdout
    assert re.search(rf"(?m)^  ceremony\s+{short}\s+proposed\s+{ELECTION_NAME}$", status), status
    assert "0000000000000000" not in status

    # --watch on the ceremony status: the same table, again and again, until Ctrl-C
    out, err, code = frames_of(["ceremony", "status", "--config", g2.config, "--watch", "0.3"], 2)
    assert code == 0 and err == "", (code, err)
    assert out.count(f"ceremony {short}  proposed, 1 of 3 guardians accepted") >= 2, out

    ok("ceremony", "accept", short, "--config", g2.config)
    ok("ceremony", "accept", short, "--config", g3.config)

    async def complete():
        for member in (g1, g2, g3):
            entry = await ceremony_entry(member, session)
            assert entry["status"] == "complete", (member.name, entry["status"], entry.get("outcome"))
        return entry
    done = trio.run(eventually, complete, 300, "the ceremony completes on every node")

    first = ok("ceremony", "status", "--config", g3.config).stdout
    time.sleep(1.2)
    again = ok("ceremony", "status", "--config", g3.config).stdout
    assert first == again, (first, again)                     # nothing in it keeps growing
    block = first.split("\n\n")[0]
    lines = block.splitlines()
    assert lines[0] == f"ceremony {short}  complete", block
    assert lines[1] == f"  election   {ELECTION_NAME}: n=3, quorum k=2; proposed by g1", block
    outcome = done["outcome"]
    assert f"  joint key  SHA-256 {outcome['joint_key_sha256']}" in lines, block
    assert f"  H_E        {outcome['h_e']}" in lines, block
    assert f"  export     {outcome['export']}" in lines, block
    assert "{" not in block and "phase" not in block, block
    assert re.search(r"(?m)^  key custody ", block), block


# --- (7), (8) a record: messages, verify before and after decryption, a second decryption ------------


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A tallied record of three guardians (k = 2) with one cast and one challenged ballot, never decrypted."""
    base = tmp_path_factory.mktemp("record")
    rec, secrets, enc = base / "record", base / "secrets", base / "encrypted"
    ok("election", "create-local", "-n", 3, "-k", 2, "--out", rec, "--secrets", secrets, "--info", ELECTION_NAME)
    (base / "plain.jsonl").write_text(ballot_line("c-1", 1, 2) + "\n" + ballot_line("ch-1", 1, 3) + "\n")
    ok("encrypt", "--election", rec, "--ballots", base / "plain.jsonl", "--device", "booth", "--out", enc)
    ok("ballots", "submit", "--record", rec, "--cast", enc / "c-1.json", "--challenge", enc / "ch-1.json")
    return base, rec, secrets


def test_messages_say_each_thing_once_with_plurals(record, tmp_path):
    base, rec, _ = record
    (tmp_path / "plain.jsonl").write_text(ballot_line("one", 1, 1) + "\n\n{not json\n")
    r = guardian("encrypt", "--election", rec, "--ballots", tmp_path / "plain.jsonl", "--device", "booth",
                 "--out", tmp_path / "enc")
    assert r.returncode == 1
    assert ("refused line 3: not valid JSON (Expecting property name enclosed in double quotes at line 1 column 2)"
            in r.stderr.splitlines()), r.stderr
    assert r.stdout.splitlines()[-1] == f"1 ballot encrypted into {tmp_path / 'enc'}, 1 refused"

    broken = tmp_path / "b-2.json"
    broken.write_text('{"id": \n')
    copy = tmp_path / "copy"
    shutil.copytree(rec, copy)
    r = guardian("ballots", "submit", "--record", copy, "--cast", broken)
    assert r.returncode == 1
    assert (f"refused {broken}: not a valid encrypted ballot: not valid JSON (Expecting value at line 2 column 1)"
            in r.stderr.splitlines()), r.stderr

    r = ok("tally", "--record", copy)
    assert f"encrypted tally of 1 cast ballot written to {copy / layout.ENCRYPTED_TALLY}" in r.stdout.splitlines()

    # a ballot file that is not JSON: the verifier names the file once
    bad = tmp_path / "bad"
    shutil.copytree(copy, bad)
    (bad / "ballots" / "c-1.json").write_text('{"id": \n')
    r = guardian("verify", bad)
    assert r.returncode == 1
    assert "ballots/c-1.json: ballots/c-1.json" not in r.stdout, r.stdout
    assert "FAIL [6 selection well-formedness] ballots/c-1.json: not valid JSON (Expecting value at line 2 " \
           "column 1)" in r.stdout, r.stdout


def test_verify_before_decryption_says_the_decryption_steps_do_not_apply(record):
    _, rec, secrets = record
    before = rec.parent / "before"
    if not before.exists():
        shutil.copytree(rec, before)
        ok("tally", "--record", before)
    r = ok("verify", before)
    for number, name in (("10", "tally decryption"), ("11", "tally contents"), ("13", "challenged ballot decryption"),
                         ("14", "challenged ballot contents")):
        assert re.search(rf"(?m)^\s*{number} {name}\s+n/a\s+0\s", r.stdout), r.stdout
    assert "FAIL" not in r.stdout
    assert r.stdout.rstrip().splitlines()[-1] == (
        "the record verifies so far: every applicable step passed; it holds no decryptions yet, so steps 10, 11, "
        "13, 14 do not apply (run `guardian decrypt`, then verify again)")
    steps = {s["step"]: s for s in json.loads(ok("verify", before, "--json").stdout)["steps"]}
    assert steps["challenged ballot decryption"]["result"] == steps["challenged ballot contents"]["result"] == "n/a"
    assert steps["challenged ballot decryption"]["note"] == "the record holds no decryptions yet"

    after = rec.parent / "after"
    shutil.copytree(before, after)
    ok("election", "decrypt-local", "--record", after, "--secrets", secrets)
    r = ok("verify", after)
    for number, name in (("10", "tally decryption"), ("13", "challenged ballot decryption"),
                         ("14", "challenged ballot contents")):
        assert re.search(rf"(?m)^\s*{number} {name}\s+pass\s+[1-9]", r.stdout), r.stdout
    assert r.stdout.rstrip().splitlines()[-1] == "the record verifies: every applicable step passed"

    # one label changed in the decrypted tally (and the index brought along): one step fails
    relabelled = rec.parent / "relabelled"
    shutil.copytree(after, relabelled)
    tally = json.loads((relabelled / layout.DECRYPTED_TALLY).read_text())
    tally["contests"][0]["options"][0]["label"] = "Someone else"
    (relabelled / layout.DECRYPTED_TALLY).write_text(json.dumps(tally))
    layout.Record(relabelled).update_index([layout.DECRYPTED_TALLY])
    r = guardian("verify", relabelled)
    assert r.returncode == 1
    assert r.stdout.rstrip().splitlines()[-1].startswith("the record does NOT verify: 1 step failed, first: step 11 "
                                                         "tally contents: decrypted tally contest 1 option 1"), r.stdout

    # once the record holds decryptions, a missing one fails both steps of its ballot
    (after / "challenged" / "ch-1.json").unlink()
    layout.Record(after).update_index(["challenged/ch-1.json"])
    r = guardian("verify", after)
    assert r.returncode == 1
    assert "FAIL [13 challenged ballot decryption] challenged ballot 'ch-1': has no decryption" in r.stdout
    assert "FAIL [14 challenged ballot contents] challenged ballot 'ch-1': has no decryption" in r.stdout
    assert r.stdout.rstrip().splitlines()[-1].startswith("the record does NOT verify: 2 steps failed, first: step 13")


def test_a_decrypted_record_is_refused_at_once_without_a_session(record, three):
    _, rec, secrets = record
    _, (g1, _, _) = three
    decrypted = rec.parent / "decrypted"
    shutil.copytree(rec, decrypted)
    ok("tally", "--record", decrypted)
    ok("election", "decrypt-local", "--record", decrypted, "--secrets", secrets)
    started = time.monotonic()
    r = guardian("decrypt", "--record", decrypted, "--config", g1.config)
    assert r.returncode == 1
    assert one_line(r) == (f"guardian decrypt: error: {decrypted.resolve()}: the record already holds decryptions "
                           f"(challenged/ch-1.json, decrypted_tally.json); check them with "
                           f"`guardian verify {decrypted.resolve()}`")
    assert time.monotonic() - started < 5             # refused by this node, not after the peers' checks
    assert trio.run(lambda: g1.control({"cmd": "decrypt-status"})) == []


# --- (8) --config help, init's next steps; (9) --version --------------------------------------------------


def test_every_config_option_states_its_default_and_the_variable():
    parser, _ = build_parser()
    found = []

    def walk(p, path):
        for action in p._actions:
            if "--config" in action.option_strings:
                found.append((path, action.help))
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, path + [name])
    walk(parser, [])
    assert len(found) >= 15, found
    for path, text in found:
        assert text and "$GUARDIAN_CONFIG" in text and "./node.toml" in text, (path, text)
    r = ok("status", "--help")
    assert re.search(r"--config FILE\s+the node's node\.toml \(default: \$GUARDIAN_CONFIG if set,\s+else ./node\.toml\)",
                     r.stdout), r.stdout


def test_init_prints_the_real_paths_of_the_next_steps(tmp_path):
    directory = tmp_path / "alice node"
    r = guardian("init", directory, "--name", "alice", "--listen", "127.0.0.1:7401", "--passphrase-env", PASS_ENV)
    assert r.returncode == 0, r.stderr
    config, roster = f"'{directory / 'node.toml'}'", f"'{directory / 'roster.toml'}'"
    assert f"Next: `guardian roster entry --config {config} --sequence N`" in r.stdout, r.stdout
    assert f"concatenate them all into {roster}, then `guardian run --config {config}`." in r.stdout, r.stdout
    assert "DIR/" not in r.stdout


def test_version():
    r = ok("--version")
    assert r.stdout == f"guardian-node {node.__version__}\n"


def test_an_empty_ballots_file_and_an_empty_directory_are_refused(record, tmp_path):
    _, rec, _ = record
    (tmp_path / "empty.jsonl").write_text("\n\n")
    r = guardian("encrypt", "--election", rec, "--ballots", tmp_path / "empty.jsonl", "--device", "booth",
                 "--out", tmp_path / "enc")
    assert r.returncode == 1
    assert one_line(r) == (f"guardian encrypt: error: {tmp_path / 'empty.jsonl'}: no ballots in it "
                           f"(one JSON object per line, as in configs/ballots.jsonl)")
    assert not (tmp_path / "enc").exists() or not any((tmp_path / "enc").iterdir())
    (tmp_path / "none").mkdir()
    copy = tmp_path / "copy"
    shutil.copytree(rec, copy)
    r = guardian("ballots", "submit", "--record", copy, "--cast", tmp_path / "none")
    assert r.returncode == 1
    assert one_line(r) == f"guardian ballots: error: {tmp_path / 'none'}: no ballot files (*.json) in this directory"
