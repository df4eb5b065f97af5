"""The key ceremony across guardian nodes, end to end, on the standard parameters.

Real `guardian run` processes made with `guardian init` and `guardian roster entry`, on loopback.
Where a test needs a guardian that is slow on purpose or misbehaves, that guardian is a node run in
this test process (node.testing.inprocess: node.app, same code, same wire) with a guardian of
node.testing.adversary: it holds a message back until the test says go (so the other nodes sit in a
known phase while one of them is killed), or sends a bad proof, a bad share, a false complaint,
or different keys to different peers.

Clusters are shared by the tests of this module (each ceremony has its own session): `five`
(5 processes), `gated` (4 processes and the in-process guardian as guardian 3). Waits poll the
control sockets against deadlines; phase timeouts in the election files are short.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import signal
from pathlib import Path

import pytest
import trio

from node.app import Guardians
from node.cli.node import load_election_file
from node.crypto.errors import InputError
from node.protocol.envelope import decode_envelope
from node.services.ceremonies import honest_guardian
from node.testing import adversary
from node.testing.inprocess import InProcessNode
from node.testing.peer import HarnessPeer
from node.testing.processes import PROJECT, Cluster, NodeProc, all_connected, cli, eventually, start_dead

DEMO_MANIFEST = PROJECT / "node" / "data" / "demo-manifest.json"
TIMEOUT = 20            # phase_timeout_seconds of the election files: short, but far above a phase's length
ABSENT_TIMEOUT = 8      # for the guardian that never shows up
CEREMONY_WAIT = 90      # deadline for a whole ceremony to end (n=7 on two cores is the slowest)
ELECTION_FILES = ("election_parameters.json", "election_manifest.json", "hashes.json",
                  "joint_election_public_key.json", "hashes_ext.json", "key_ceremony.json",
                  "election_config.json", "ceremony_results.json", "index.json")


# --- building clusters ----------------------------------------------------------------------------


def make_cluster(names: list[str]) -> tuple[Cluster, list[NodeProc]]:
    """`guardian init` for each name and one roster from `guardian roster entry` (two at a time)."""
    cluster = Cluster()
    nodes = cluster.init_nodes(names)
    cluster.write_roster(nodes)
    return cluster, nodes


def start_cluster(cluster: Cluster, nodes: list[NodeProc], connected: list | None = None) -> None:
    """From a synchronous (module-scoped) fixture: start the processes and wait for their links."""
    async def go():
        await cluster.start(*nodes)
        await all_connected(connected if connected is not None else nodes, 60)
    trio.run(go)


def write_election(directory: Path, quorum: int, timeout: float = TIMEOUT, name: str = "Test county election") \
        -> Path:
    path = directory / f"election-{quorum}-{int(timeout)}-{len(list(directory.glob('election-*')))}.toml"
    path.write_text(f'election = "{name}"\nmanifest = "{DEMO_MANIFEST}"\nquorum = {quorum}\n'
                    f"phase_timeout_seconds = {timeout}\n")
    return path


# --- the ceremony, through the control sockets ------------------------------------------------------


async def ask(member, cmd: str, **fields):
    """A control request with a generous timeout: a node busy with a ceremony step answers late, and a
    client that hangs up early is a bug of its own (see the test on it below)."""
    return await member.control({"cmd": cmd, **fields}, timeout=60)


async def entry_of(member, session: str) -> dict:
    for entry in await ask(member, "ceremony-status"):
        if entry["session"] == session:
            return entry
    raise AssertionError(f"{member.name} has no ceremony {session[:16]}")


async def propose(member, election: Path) -> str:
    return (await ask(member, "ceremony-propose", election=load_election_file(election)))["session"]


async def wait_status(members, session: str, status: str, timeout: float = 30) -> dict[str, dict]:
    async def check():
        entries = {}
        for m in members:
            entry = await entry_of(m, session)
            assert entry["status"] == status, (m.name, entry["status"], entry.get("outcome"))
            entries[m.name] = entry
        return entries
    return await eventually(check, timeout, f"ceremony {session[:16]} {status} on {[m.name for m in members]}")


async def accept(members, session: str) -> None:
    await wait_status(members, session, "proposed")
    for m in members:
        await ask(m, "ceremony-accept", session=session)


async def final(members, session: str, timeout: float = CEREMONY_WAIT) -> dict[str, dict]:
    """Wait until the ceremony has ended (complete or aborted) on every member; their status entries."""
    async def check():
        entries = {}
        for m in members:
            entry = await entry_of(m, session)
            assert entry["status"] in ("complete", "aborted"), (m.name, entry["status"], entry.get("phase"),
                                                                entry.get("waiting_for"))
            entries[m.name] = entry
        return entries
    return await eventually(check, timeout, f"ceremony {session[:16]} ends on every node", interval=0.2)


async def completes(members, session: str, timeout: float = CEREMONY_WAIT) -> str:
    """Every member completes the ceremony with the same H_E; returns it."""
    entries = await final(members, session, timeout)
    assert {name: e["status"] for name, e in entries.items()} == {m.name: "complete" for m in members}, \
        {name: e["outcome"] for name, e in entries.items()}
    h_e = {e["outcome"]["h_e"] for e in entries.values()}
    assert len(h_e) == 1, h_e
    assert len({e["outcome"]["joint_key_sha256"] for e in entries.values()}) == 1
    return h_e.pop()


async def aborts_naming(members, session: str, culprits: list[int], reason: str,
                        timeout: float = CEREMONY_WAIT) -> dict[str, dict]:
    """Every member aborts, naming exactly `culprits`, with `reason` in the reason."""
    entries = await final(members, session, timeout)
    print("outcomes:", {name: e["outcome"] for name, e in entries.items()})
    for name, e in entries.items():
        assert e["status"] == "aborted", (name, e)
        assert e["outcome"]["culprits"] == culprits, (name, e["outcome"])
        assert reason in e["outcome"]["reason"], (name, e["outcome"])
    return entries


def not_running(status: dict, session: str) -> bool:
    """`guardian status`: no ceremony phase for this session (it may be listed: a proposal is listened to)."""
    return all(s["phase"] is None for s in status["sessions"] if s["id"] == session)


def sigkill(node: NodeProc) -> None:
    assert node.kill() == -signal.SIGKILL


# --- fixtures -----------------------------------------------------------------------------------------


def restart_dead(nodes: list[NodeProc]) -> None:
    trio.run(start_dead, nodes)


@pytest.fixture(scope="module")
def five_cluster():
    cluster, nodes = make_cluster([f"g{i}" for i in range(1, 6)])
    with cluster:
        start_cluster(cluster, nodes)
        yield cluster, nodes


@pytest.fixture
def five(five_cluster):
    cluster, nodes = five_cluster
    yield nodes
    print(cluster.diagnostics())                 # shown by pytest only when the test fails
    restart_dead(nodes)                          # a test that failed half-way leaves every node running


@pytest.fixture(scope="module")
def gated_cluster():
    """Guardians g1, g2, h3 (in this process), g4, g5."""
    cluster = Cluster()
    harness = InProcessNode.fresh(cluster.base / "h3", "h3")
    nodes = cluster.init_nodes(["g1", "g2", "g4", "g5"])
    cluster.write_roster(nodes[:2] + [harness] + nodes[2:])
    with cluster:
        start_cluster(cluster, nodes)
        yield cluster, nodes, harness


@pytest.fixture
def gated(gated_cluster):
    cluster, nodes, harness = gated_cluster
    yield nodes, harness
    print(cluster.diagnostics())
    restart_dead(nodes)


async def connected_to(harness: InProcessNode, nodes: list[NodeProc]) -> None:
    async def check():
        states = {p["name"]: p["state"] for p in (await ask(harness, "status"))["peers"]}
        assert states == {n.name: "connected" for n in nodes}, states
    await eventually(check, 30, "the in-process guardian connected to every node")


# --- (1) n=5, k=3: propose, show, accept, complete, export, verify ----------------------------------


async def test_five_nodes_propose_show_accept_complete_export_and_verify(five):
    g1, g2 = five[0], five[1]
    election = write_election(g1.dir.parent, 3)
    proposed = await cli("ceremony", "propose", "--election", election, "--config", g1.config)
    assert proposed.returncode == 0, proposed.stderr
    session = re.search(r"proposed ceremony ([0-9a-f]{64})", proposed.stdout).group(1)

    await wait_status(five, session, "proposed")
    shown = await cli("ceremony", "show", session[:12], "--config", g2.config)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].startswith(f"ceremony {session}  (proposed, proposed by g1)"), shown.stdout
    assert "n=5, quorum k=3" in shown.stdout and "Test county election" in shown.stdout
    for node in five:                  # every guardian's fingerprint, to read aloud before accepting
        assert re.search(rf"\b{node.sequence}\s+{node.name}\s+{node.fingerprint}", shown.stdout), shown.stdout
    config = (await ask(g2, "ceremony-show", session=session))["config"]
    assert (config["n"], config["k"], config["phase_timeout_seconds"]) == (5, 3, TIMEOUT)
    assert [base64.b64decode(g["public_key"]) for g in config["guardians"]] == [n.public_key for n in five]

    for node in five:
        accepted = await cli("ceremony", "accept", session[:16], "--config", node.config)
        assert accepted.returncode == 0, accepted.stderr
    h_e = await completes(five, session)

    for node in five:
        status = await cli("ceremony", "status", "--json", "--config", node.config)
        assert status.returncode == 0, status.stderr
        (entry,) = [e for e in json.loads(status.stdout) if e["session"] == session]
        assert entry["status"] == "complete" and entry["phase"] == "complete"
        assert entry["outcome"]["h_e"] == h_e
        assert entry["done"] == {n.name: ["keys", "echo", "shares", "check", "result"] for n in five}
        assert entry["waiting_for"] == [] and entry["votes"] == {n.name: {"vote": "accept", "why": ""} for n in five}
        assert Path(entry["outcome"]["export"]) == node.dir / "ceremonies" / session
    text = await cli("ceremony", "status", "--config", g2.config)
    assert f"ceremony {session[:16]}  complete\n" in text.stdout, text.stdout

    # the export: ElectionGuard 2.1 public election files, the agreed config, every guardian's signed result
    exported = {}
    for node in five:
        directory = node.dir / "ceremonies" / session
        for name in ELECTION_FILES + tuple(f"guardians/guardian_{i}.public_key.json" for i in range(1, 6)):
            assert (directory / name).is_file(), (node.name, name)
        assert hashlib.sha256((directory / "election_config.json").read_bytes()).hexdigest() == session
        assert json.loads((directory / "hashes_ext.json").read_text())["h_e"] == h_e.upper()
        joint = json.loads((directory / "joint_election_public_key.json").read_text())
        signed = json.loads((directory / "ceremony_results.json").read_text())["signed_results"]
        envelopes = [decode_envelope(bytes.fromhex(s), 1 << 20) for s in signed]
        for envelope in envelopes:             # each guardian signed K, K-hat, H_E and H_G
            envelope.verify()
            assert envelope.type == "result" and envelope.session.hex() == session
            assert envelope.body["status"] == "success" and envelope.body["h_e"].hex() == h_e
            assert int.from_bytes(envelope.body["joint_key"], "big") == int(joint["joint_election_public_key"], 16)
            assert int.from_bytes(envelope.body["joint_data_key"], "big") == \
                int(joint["joint_ballot_data_public_key"], 16)
            assert envelope.body["h_g"].hex().upper() == \
                json.loads((directory / "key_ceremony.json").read_text())["h_g"]
        assert sorted(e.sender for e in envelopes) == sorted(n.public_key for n in five)
        exported[node.name] = {name: (directory / name).read_bytes() for name in (
            "election_parameters.json", "election_manifest.json", "hashes.json", "joint_election_public_key.json",
            "hashes_ext.json", "key_ceremony.json", "guardians/guardian_3.public_key.json")}
    assert all(files == exported["g1"] for files in exported.values())

    verified = await cli("verify", "--json", g2.dir / "ceremonies" / session)
    report = json.loads(verified.stdout)
    first = [(s["number"], s["step"], s["result"]) for s in report["steps"][:4]]
    assert [r for _, _, r in first] == ["pass"] * 4, (first, report["steps"][:4])
    assert [s for _, s, _ in first] == ["parameters", "guardian public keys", "election public key",
                                        "extended base hash"]
    assert verified.returncode == 1 and report["ok"] is False   # no ballots, no tally: the later steps fail


# --- (2) other sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(2, 2), pytest.param(7, 4, marks=pytest.mark.slow)], ids=["n2k2", "n7k4"])
async def test_other_sizes_complete(n, k):
    cluster, nodes = make_cluster([f"s{i}" for i in range(1, n + 1)])
    with cluster:
        await cluster.start(*nodes)
        await all_connected(nodes, 60)
        session = await propose(nodes[-1], write_election(cluster.base, k, 30))
        await accept(nodes, session)
        h_e = await completes(nodes, session)
        for node in nodes:
            directory = node.dir / "ceremonies" / session
            assert sorted(p.name for p in (directory / "guardians").iterdir()) == \
                sorted(f"guardian_{i}.public_key.json" for i in range(1, n + 1))
            assert len(json.loads((directory / "ceremony_results.json").read_text())["signed_results"]) == n
            assert json.loads((directory / "election_parameters.json").read_text()) is not None
            assert json.loads((directory / "hashes_ext.json").read_text())["h_e"] == h_e.upper()


# --- (3) votes: all n, rejections, rosters that differ ------------------------------------------------


async def test_the_ceremony_waits_for_all_n_accepts(five):
    session = await propose(five[1], write_election(five[0].dir.parent, 3))
    await accept(five[:4], session)

    async def four_accepts():
        for node in five:
            entry = await entry_of(node, session)
            assert entry["votes"] == {n.name: {"vote": "accept", "why": ""} for n in five[:4]}, node.name
    await eventually(four_accepts, 20, "every node has the four accepts")
    # Asserting that nothing happens needs a window: for two seconds, nobody starts.
    end = trio.current_time() + 2
    while trio.current_time() < end:
        for node in five:
            entry = await entry_of(node, session)
            assert entry["status"] == "proposed" and "phase" not in entry, (node.name, entry)
            assert not_running(await node.status(), session), node.name
        await trio.sleep(0.2)
    await ask(five[4], "ceremony-accept", session=session)
    await completes(five, session)


async def test_a_rejection_with_a_reason_stops_the_proposal_everywhere(five):
    session = await propose(five[2], write_election(five[0].dir.parent, 2))
    await wait_status(five, session, "proposed")
    await ask(five[0], "ceremony-accept", session=session)
    with pytest.raises(InputError, match="reason"):
        await ask(five[3], "ceremony-reject", session=session, why="   ")
    rejected = await cli("ceremony", "reject", session[:16], "--why", "quorum 2 is too low for this county",
                         "--config", five[3].config)
    assert rejected.returncode == 0, rejected.stderr
    entries = await wait_status(five, session, "rejected", 20)
    for name, entry in entries.items():
        assert entry["outcome"] == {"by": "g4", "why": "quorum 2 is too low for this county"}, name
        assert entry["votes"]["g4"] == {"vote": "reject", "why": "quorum 2 is too low for this county"}, name
    shown = await cli("ceremony", "show", session[:16], "--config", five[0].config)
    assert "rejected" in shown.stdout and "g4: reject (quorum 2 is too low for this county)" in shown.stdout
    late = await cli("ceremony", "accept", session[:16], "--config", five[1].config)
    assert late.returncode == 1 and "rejected" in late.stderr
    for node in five:
        assert not_running(await node.status(), session), node.name


async def test_a_proposal_whose_guardians_differ_from_the_roster_is_invalid_there():
    """a and b run; b's roster has a third guardian (never running), so a's and b's proposals differ."""
    phantom = HarnessPeer("phantom")
    cluster, (a, b) = make_cluster(["a", "b"])
    with cluster:
        (b.dir / "roster.toml").write_text((a.dir / "roster.toml").read_text() + "\n" + phantom.roster_entry(3))
        await cluster.start(a, b)
        await all_connected([a, b])
        from_a = await propose(a, write_election(cluster.base, 2))
        entry = (await wait_status([b], from_a, "invalid"))["b"]
        assert "differ from this node's roster" in entry["outcome"]["reason"]
        assert (await entry_of(a, from_a))["status"] == "proposed"
        with pytest.raises(InputError, match="invalid"):
            await ask(b, "ceremony-accept", session=from_a)
        from_b = await propose(b, write_election(cluster.base, 2))
        entry = (await wait_status([a], from_b, "invalid"))["a"]
        assert "differ from this node's roster" in entry["outcome"]["reason"]
        assert entry["proposer"] == "b"


# --- (4) kill -9 and restart ------------------------------------------------------------------------------

KILL_PHASES = {"keys": "keys", "echo": "echo", "shares": "shares", "check": "share-check", "result": "result"}


def held_back(sessions: set[str], phase: str, opened: trio.Event, then=honest_guardian) -> Guardians:
    """The in-process guardian sends nothing in `phase` of the ceremonies in `sessions` until `opened` is set:
    the others wait for it there."""
    return Guardians(ceremony=adversary.only_in(sessions, adversary.hold_back(phase, opened, then)))


@pytest.mark.parametrize("phase, victim", [("keys", 0), ("echo", 1), ("shares", 2), ("check", 3), ("result", 0)])
async def test_a_node_killed_in_a_phase_and_restarted_completes_with_the_same_keys(gated, phase, victim):
    nodes, harness = gated
    victim = nodes[victim]
    sessions: set[str] = set()
    opened = trio.Event()
    async with harness.running(held_back(sessions, phase, opened)) as h:
        await connected_to(harness, nodes)
        session = await propose(nodes[0], write_election(nodes[0].dir.parent, 3))
        sessions.add(session)
        everyone = nodes + [harness]
        await accept(everyone, session)

        async def victim_in_phase():
            entry = await entry_of(victim, session)
            assert entry.get("phase") == phase, entry.get("phase")
            return entry
        entry = await eventually(victim_in_phase, 30, f"{victim.name} in the {phase} phase", interval=0.02)
        assert harness.name in entry["waiting_for"], entry
        sigkill(victim)

        # the others are held up to this phase by the in-process guardian
        order = list(KILL_PHASES)
        for node in nodes:
            if node is not victim:
                other = await entry_of(node, session)
                assert other["status"] == "running" and order.index(other["phase"]) <= order.index(phase), \
                    (node.name, other)
        # while the victim is down: our held message goes out, after a burst of duplicates, newest first
        resent = await adversary.replay_session(h.node, bytes.fromhex(session))
        opened.set()
        h.ceremonies.step(bytes.fromhex(session))
        assert resent >= (0 if phase == "keys" else 1)

        victim.start()
        await victim.wait_ready()
        h_e = await completes(everyone, session)
        assert f"ceremony {session[:16]} resumed: phase {phase}" in victim.log(), victim.log()[-3000:]
        # the duplicates were taken as replays, never as a fault of the in-process guardian (a link that
        # comes back may resend an envelope the peer has: counted as "replay", and nothing else)
        for node in nodes:
            peer = [p for p in (await node.status())["peers"] if p["name"] == harness.name][0]
            assert set(peer["refusals"]) <= {"replay"}, (node.name, peer["refusals"])
        exported = {n.name: (n.dir / "ceremonies" / session / "joint_election_public_key.json").read_bytes()
                    for n in nodes}
        assert len(set(exported.values())) == 1
        assert json.loads((victim.dir / "ceremonies" / session / "hashes_ext.json").read_text())["h_e"] == \
            h_e.upper()


async def test_a_node_killed_after_accepting_before_the_start_completes_after_restart(gated):
    nodes, harness = gated
    victim = nodes[2]
    async with harness.running():
        await connected_to(harness, nodes)
        session = await propose(nodes[0], write_election(nodes[0].dir.parent, 3))
        await accept([victim], session)
        others = [n for n in nodes if n is not victim] + [harness]

        async def accept_known():
            for m in others:
                assert (await entry_of(m, session))["votes"].get(victim.name, {}).get("vote") == "accept", m.name
        await eventually(accept_known, 20, f"everyone has {victim.name}'s accept")
        sigkill(victim)
        await accept(others, session)

        async def others_waiting():
            for m in others:
                entry = await entry_of(m, session)
                assert entry["status"] == "running" and victim.name in entry["waiting_for"], (m.name, entry)
        await eventually(others_waiting, 20, f"the others started and wait for {victim.name}")
        victim.start()
        await victim.wait_ready()
        await completes(nodes + [harness], session)


async def test_a_node_killed_when_a_peer_shows_a_phase_completes_after_restart(five):
    """All real processes, nothing held back: kill node 3 as soon as a peer reports the shares phase."""
    session = await propose(five[0], write_election(five[0].dir.parent, 3))
    await accept(five, session)

    async def peer_in_shares():
        entry = await entry_of(five[0], session)
        assert entry.get("phase") in ("shares", "check", "complaints", "result", "complete"), entry.get("phase")
        return entry["phase"]
    seen = await eventually(peer_in_shares, 30, "g1 in the shares phase", interval=0.02)
    sigkill(five[2])
    five[2].start()
    await five[2].wait_ready()
    await completes(five, session)
    print(f"g3 killed when g1 was in the {seen} phase")


async def test_a_node_killed_in_the_complaints_phase_reaches_the_same_verdict_after_restart(gated):
    """Guardian 3 sent g4 a bad share and holds its answer to g4's complaint back; g5 is killed meanwhile."""
    nodes, harness = gated
    victim = nodes[3]
    sessions: set[str] = set()
    opened = trio.Event()

    async with harness.running(held_back(sessions, "complaints", opened, adversary.bad_share(4, "true"))) as h:
        await connected_to(harness, nodes)
        session = await propose(nodes[0], write_election(nodes[0].dir.parent, 3))
        sessions.add(session)
        await accept(nodes + [harness], session)

        async def victim_in_complaints():
            entry = await entry_of(victim, session)
            assert entry.get("phase") == "complaints", entry.get("phase")
            return entry
        entry = await eventually(victim_in_complaints, 30, "g5 in the complaints phase", interval=0.02)
        assert entry["waiting_for"] == [harness.name], entry
        sigkill(victim)
        opened.set()
        h.ceremonies.step(bytes.fromhex(session))
        victim.start()
        await victim.wait_ready()
        await aborts_naming(nodes, session, [harness.sequence],
                            "complaint by guardian 4 upheld: the revealed share does not match the published "
                            "ciphertext")
        assert f"ceremony {session[:16]} resumed: phase complaints" in victim.log()


async def test_a_guardian_silent_in_the_shares_phase_is_named_after_the_timeout(gated):
    nodes, harness = gated
    sessions: set[str] = set()
    async with harness.running(held_back(sessions, "shares", trio.Event())):
        await connected_to(harness, nodes)
        session = await propose(nodes[0], write_election(nodes[0].dir.parent, 3, ABSENT_TIMEOUT))
        sessions.add(session)
        await accept(nodes + [harness], session)
        await aborts_naming(nodes, session, [harness.sequence], "shares phase", ABSENT_TIMEOUT + 30)


async def test_a_status_client_that_hangs_up_early_does_not_stop_the_node():
    """`guardian ceremony status` gives up after its timeout when a node is busy with a ceremony step (or the
    operator presses Ctrl-C): the node must answer into the void and keep running, not exit."""
    cluster, (solo,) = make_cluster(["solo"])
    with cluster:
        await cluster.start(solo)
        for _ in range(3):
            stream = await trio.open_unix_socket(str(solo.socket))
            await stream.send_all(b'{"cmd": "ceremony-status"}\n')
            await stream.aclose()                       # hang up before the answer
            await trio.sleep(0.3)
            assert solo.alive, solo.output()[-3000:]
        assert (await solo.status())["name"] == "solo"


# --- (5) a guardian that never shows up -------------------------------------------------------------------


async def test_a_guardian_that_accepts_and_never_shows_up_is_named_after_the_timeout(five):
    absent = five[3]
    present = [n for n in five if n is not absent]
    session = await propose(five[0], write_election(five[0].dir.parent, 3, ABSENT_TIMEOUT))
    await accept([absent], session)

    async def accept_known():
        for node in present:
            assert (await entry_of(node, session))["votes"].get(absent.name, {}).get("vote") == "accept"
    await eventually(accept_known, 20, "everyone has g4's accept")
    sigkill(absent)
    await wait_status(present, session, "proposed")
    started = trio.current_time()
    for node in present:
        await ask(node, "ceremony-accept", session=session)

    # meanwhile `guardian ceremony status`: the phase, who did what, who is awaited and for how long
    async def waiting():
        entry = await entry_of(present[0], session)
        assert entry["status"] == "running" and entry["phase"] == "keys", entry
        assert entry["waiting_for"] == [absent.name] and entry["phase_seconds"] >= 1.0, entry
        assert entry["done"] == {n.name: (["keys"] if n is not absent else []) for n in five}, entry
        return entry
    await eventually(waiting, 20, "status shows the ceremony waiting for g4")
    text = await cli("ceremony", "status", "--config", present[1].config)
    assert text.returncode == 0, text.stderr
    (block,) = [b for b in re.split(r"(?m)^(?=ceremony )", text.stdout) if b.startswith(f"ceremony {session[:16]}")]
    assert re.match(rf"ceremony {session[:16]}  running, phase keys for [0-9.]+ s\n  waiting for: g4\n", block), block
    assert re.search(r"(?m)^  g4 +-$", block) and re.search(r"(?m)^  g1 +keys$", block), block

    await aborts_naming(present, session, [absent.sequence], "keys phase", ABSENT_TIMEOUT + 30)
    assert trio.current_time() - started >= ABSENT_TIMEOUT - 0.5     # aborted by the deadline, not before it
    # when it comes back, it learns the outcome too
    absent.start()
    await absent.wait_ready()
    entry = (await final([absent], session, 30))[absent.name]
    assert entry["status"] == "aborted" and entry["outcome"]["culprits"] == [absent.sequence]


# --- (6) misbehaving guardians, played by the in-process node ------------------------------------------


async def _misbehave(gated, factory, quorum: int = 3, outbox=None) -> tuple[str, dict[str, dict]]:
    """A ceremony in which the in-process guardian is `factory`'s; every member's final status entry."""
    nodes, harness = gated
    sessions: set[str] = set()
    result = {}
    async with harness.running(Guardians(ceremony=adversary.only_in(sessions, factory)), outbox):
        await connected_to(harness, nodes)
        session = await propose(nodes[1], write_election(nodes[0].dir.parent, quorum))
        sessions.add(session)
        await accept(nodes + [harness], session)
        result["entries"] = await final(nodes + [harness], session)
    return session, result["entries"]


async def test_an_invalid_key_proof_aborts_naming_its_guardian(gated):
    nodes, harness = gated
    session, entries = await _misbehave(gated, adversary.bad_proof())
    await aborts_naming(nodes, session, [harness.sequence], "invalid key proof")


@pytest.mark.parametrize("reveal, reason", [
    ("true", "complaint by guardian 4 upheld: the revealed share does not match the published ciphertext"),
    ("sent", "complaint by guardian 4 upheld: the revealed share does not match the commitments"),
], ids=["reveals-true-share", "reveals-sent-share"])
async def test_a_bad_share_is_complained_about_revealed_and_its_sender_named(gated, reveal, reason):
    nodes, harness = gated
    g4 = nodes[2]
    assert g4.sequence == 4
    session, entries = await _misbehave(gated, adversary.bad_share(4, reveal))
    await aborts_naming(nodes, session, [harness.sequence], reason)
    # the complaint and the public reveal are in every honest node's inbox
    for node in nodes:
        inbox = [(m["from"], m["type"], m["body"]) for m in await node.inbox() if m["session"] == session]
        if node is not g4:
            assert ("g4", "share-check", {"complaints": [harness.sequence]}) in inbox, node.name
        assert [b["to"] for f, t, b in inbox if f == harness.name and t == "reveal"] == [4], node.name


async def test_a_false_complaint_is_resolved_by_the_public_reveal_and_the_ceremony_completes(gated):
    nodes, harness = gated
    session, entries = await _misbehave(gated, adversary.false_complaint(5))
    assert {name: e["status"] for name, e in entries.items()} == {m.name: "complete" for m in nodes + [harness]}, \
        {name: e["outcome"] for name, e in entries.items()}
    assert len({e["outcome"]["h_e"] for e in entries.values()}) == 1
    for node in nodes:
        inbox = [(m["from"], m["type"], m["body"]) for m in await node.inbox() if m["session"] == session]
        assert (harness.name, "share-check", {"complaints": [5]}) in inbox, node.name
        if node.name != "g5":
            assert [b["to"] for f, t, b in inbox if f == "g5" and t == "reveal"] == [harness.sequence], node.name


@pytest.mark.parametrize("type_, same_seq, reason", [
    ("keys", False, "equivocation: two different signed keys messages"),
    ("keys", True, "equivocation"),
    ("share-check", True, "equivocation"),
], ids=["keys", "keys-same-seq", "share-check-same-seq"])
async def test_equivocation_is_caught_and_only_its_guardian_named(gated, type_, same_seq, reason):
    """Different keys (or complaints) to different peers. Every honest node must name guardian 3 alone:
    naming an honest guardian that merely passed on what it was shown would be wrong."""
    nodes, harness = gated
    outbox = adversary.TwoFacedOutbox() if same_seq else None        # one sequence number, two messages
    session, entries = await _misbehave(gated, adversary.equivocate(type_, 3, outbox), outbox=outbox)
    for node in nodes:
        print(node.name, "refusals:", {p["name"]: p["refusals"] for p in (await node.status())["peers"]})
    await aborts_naming(nodes, session, [harness.sequence], reason)


async def test_equivocation_on_complaints_while_two_nodes_are_down_names_only_its_guardian(gated):
    """Guardian 3 holds its share check back until g4 and g5 are down, then sends "no complaint" to g1 and
    g2 and "complaint against 4" to g4 and g5 (own sequence numbers). g1 and g2 relay what they got, but
    g4 and g5 are down then; when they come back, only guardian 3 may be named."""
    nodes, harness = gated
    g1, g2, g4, g5 = nodes
    sessions: set[str] = set()
    opened = trio.Event()

    async with harness.running(held_back(sessions, "check", opened, adversary.equivocate("share-check", 3))) as h:
        await connected_to(harness, nodes)
        session = await propose(g1, write_election(g1.dir.parent, 3))
        sessions.add(session)
        await accept(nodes + [harness], session)

        async def all_checks_but_ours():
            for node in nodes:
                entry = await entry_of(node, session)
                assert entry.get("phase") == "check" and entry["waiting_for"] == [harness.name], (node.name, entry)
        await eventually(all_checks_but_ours, 30, "every honest check exchanged, guardian 3's held back")
        sigkill(g4)
        sigkill(g5)
        opened.set()
        h.ceremonies.step(bytes.fromhex(session))

        async def signed():
            for node in (g1, g2):
                entry = await entry_of(node, session)
                assert entry.get("phase") == "result" and "result" in entry["done"][node.name], (node.name, entry)
        await eventually(signed, 30, "g1 and g2 signed their results")
        g4.start()
        g5.start()
        await g4.wait_ready()
        await g5.wait_ready()
        await aborts_naming(nodes, session, [harness.sequence], "equivocation")
