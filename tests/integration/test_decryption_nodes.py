"""Decryption across guardian nodes, with guardians missing, end to end, on the standard parameters.

One cluster of five real `guardian run` processes (n=5, k=3) made with `guardian init` and `guardian
roster entry`, one key ceremony on the embedded demo manifest, and one record made from the ceremony's
export (`guardian encrypt`, `ballots submit`, `tally`: two cast ballots and one challenged). Each test
decrypts its own copy of that record, in its own session, through `guardian decrypt` or the control
socket, and checks the result with `guardian verify`. Every node verifies the record it fetched in a
child process (verify_workers = 1 keeps five of them sane on two cores); step timeouts are short.

Where a guardian must misbehave, it is g3 itself run in this test process (node.testing.inprocess on
g3's own data directory, with g3's identity and key shares) with the DecryptionGuardian of
node.testing.adversary that sends a wrong partial decryption. No second cluster or ceremony is needed for it.

Cost: each session has every present node verify the record (about 4-5 CPU seconds each), so a session
of five takes some 20 s on two cores; the module takes 3 to 4 minutes. The tests that stop g4 and g5
share one class-scoped stop, and the order of the tests keeps restarts few.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import trio

from decryption_harness import (
    DECRYPT_WAIT,
    ceremony_export,
    cli,
    completes_on,
    decrypted,
    entry,
    expected_tally,
    final,
    no_traceback,
    prepare_record,
    request,
    set_decryption,
    tally_values,
    verify,
)
from node.app import Guardians
from node.testing import adversary
from node.testing.inprocess import InProcessNode
from node.testing.processes import all_connected, eventually, start_dead
from test_ceremony_nodes import ask, make_cluster, restart_dead, sigkill, start_cluster
from test_record_flow import VALID, option

BALLOTS = [b for b in VALID if b[0] in ("v-1", "v-3", "v-challenged")]      # two cast, one challenged
NAMES = [f"g{i}" for i in range(1, 6)]
ROUND_TIMEOUT = 10      # --timeout when every guardian is there: only a stuck step waits for it
STEP_TIMEOUT = 6        # --timeout when the test waits for it once (a guardian killed or excluded mid-round)
GATHER_TIMEOUT = 4      # --timeout when guardians never start (the coordinator waits at most this long for them)
DECRYPTION_STEPS = {"10": "tally decryption", "11": "tally contents", "13": "challenged ballot decryption",
                    "14": "challenged ballot contents"}


# --- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster5():
    """Five nodes, their ceremony (k=3), and a tallied record that is never decrypted itself."""
    cluster, nodes = make_cluster(NAMES)
    with cluster:
        for node in nodes:
            set_decryption(node, timeout_seconds=ROUND_TIMEOUT, verify_workers=1)
        start_cluster(cluster, nodes)
        export = ceremony_export(nodes)
        template = prepare_record(cluster.base, export, BALLOTS)
        yield cluster, nodes, template


@pytest.fixture
def record(cluster5):
    """A fresh copy of the tallied record, for this test alone."""
    cluster, _, template = cluster5
    copy = Path(tempfile.mkdtemp(prefix="rec-", dir=cluster.base)) / "record"
    shutil.copytree(template, copy)
    return copy


@pytest.fixture
def five(cluster5):
    cluster, nodes, _ = cluster5
    trio.run(all_connected, nodes)          # the coordinator waits before round 1 only for the peers it has links to
    yield nodes
    print(cluster.diagnostics())                 # shown by pytest only when the test fails
    restart_dead(nodes)


# --- checks ------------------------------------------------------------------------------------------------


def session_prefix(stdout: str) -> str:
    found = re.search(r"decryption session ([0-9a-f]{16}) opened", stdout)
    assert found, stdout
    return found.group(1)


async def full_session(node, prefix: str) -> str:
    (session,) = [e["session"] for e in await ask(node, "decrypt-status") if e["session"].startswith(prefix)]
    return session


def check_tally(record, present: list[int], missing: list[int], form: str = "standard") -> None:
    """decrypted_tally.json: its quorum, and the values: the sums of the cast plaintexts."""
    tally = decrypted(record)
    assert (tally["decryption_form"], tally["guardians_present"], tally["guardians_missing"]) == \
        (form, present, missing), {k: v for k, v in tally.items() if k != "contests"}
    assert tally["ballot_count"] == 2
    values = tally_values(record)
    assert len(values) == 68
    assert {k: v for k, v in values.items() if v} == expected_tally(BALLOTS)
    opened = json.loads((record / "challenged" / "v-challenged.json").read_bytes())
    assert (opened["decryption_form"], opened["guardians_present"], opened["guardians_missing"]) == \
        (form, present, missing)
    picked = {(c["contest_ix"], o["option_ix"]) for c in opened["contests"] for o in c["options"] if o["selection"]}
    assert picked == {(c, o) for c, opts in dict(BALLOTS)["v-challenged"].items() for o in opts}


def check_verifies(record) -> None:
    steps = verify(record)
    for number, name in DECRYPTION_STEPS.items():
        assert (steps[name]["number"], steps[name]["result"]) == (number, "pass"), steps[name]
    assert steps["tally decryption"]["items"] >= 68 and steps["challenged ballot decryption"]["items"] == 1


def check_outcome(e: dict, present: list[str], missing: list[str], form: str = "standard") -> None:
    o = e["outcome"]
    assert (e["status"], o["present"], o["missing"], o["form"]) == ("complete", present, missing, form), o
    assert o["challenged"] == ["v-challenged"], o


async def in_round_one(node, session: str, steps: tuple[str, ...]) -> dict:
    """`node`'s entry as soon as it is in round 1 at one of `steps`."""
    async def check():
        e = await entry(node, session)
        assert e["status"] == "ready" and e.get("round") == 1 and e.get("step") in steps, \
            {k: e.get(k) for k in ("status", "round", "step", "waiting_for")}
        return e
    return await eventually(check, DECRYPT_WAIT, f"round 1 under way on {node.name}", interval=0.03)


# --- (1) every guardian present --------------------------------------------------------------------------


async def test_all_five_present_decrypt_and_every_copy_verifies(five, record):
    g1 = five[0]
    r = await cli("decrypt", "--record", record, "--config", g1.config, "--timeout", ROUND_TIMEOUT)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "decrypted (standard form) by g1, g2, g3, g4, g5; 1 round(s)" in r.stdout, r.stdout
    for (c, o), value in expected_tally(BALLOTS).items():          # the tally, printed
        assert re.search(rf"(?m)^ +{re.escape(option(c, o))} +{value}$", r.stdout), (option(c, o), r.stdout)
    assert "challenged ballots opened: v-challenged" in r.stdout and f"written to {record};" in r.stdout

    session = await full_session(g1, session_prefix(r.stdout))
    entries = await completes_on(five, session)
    copies = []
    for node in five:
        e = entries[node.name]
        check_outcome(e, NAMES, [])
        assert e["outcome"]["rounds"] == 1 and e["outcome"]["excluded"] == {} and e["outcome"]["refused"] == {}
        own = node.dir / "decryptions" / session / "record"
        assert e["outcome"]["written"] == ([str(own), str(record)] if node is g1 else [str(own)]), e["outcome"]
        assert e["outcome"]["tally"] == entries["g1"]["outcome"]["tally"]
        copies.append(own)
    check_tally(record, [1, 2, 3, 4, 5], [])
    # The requester's record and g5's own copy verify (two verifiers at once); every other node's copy holds
    # the very same files (index.json and every file it names), so it verifies as well.
    async with trio.open_nursery() as nursery:
        for path in (record, copies[4]):
            nursery.start_soon(trio.to_thread.run_sync, check_verifies, path)
    index = (record / "index.json").read_bytes()
    names = json.loads(index)["files"]
    assert "decrypted_tally.json" in names and "challenged/v-challenged.json" in names
    for copy in copies:
        assert (copy / "index.json").read_bytes() == index, copy
        for rel in names:
            assert (copy / rel).read_bytes() == (record / rel).read_bytes(), (copy, rel)


# --- (6) a cast ballot is never decrypted on its own ---------------------------------------------------------


async def test_a_request_for_one_cast_ballot_is_refused_by_every_node(five, record):
    g1 = five[0]
    r = await cli("decrypt", "--record", record, "--ballot", "v-1", "--config", g1.config,
                  "--timeout", ROUND_TIMEOUT)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "refused" in r.stdout and "cast" in r.stdout, r.stdout
    session = await full_session(g1, session_prefix(r.stdout))
    entries = await final(five, session)
    for name, e in entries.items():
        assert e["status"] == "refused", (name, e)
        assert "'v-1' is cast, not challenged" in e["outcome"]["reason"], (name, e["outcome"])

    async def refusals_everywhere():
        for node in five:
            refusals = {m["from"]: m["body"]["reason"] for m in await node.inbox()
                        if m["session"] == session and m["type"] == "decrypt-refuse"}
            assert set(refusals) == set(NAMES) - {node.name}, (node.name, refusals)
            assert all("cast" in why for why in refusals.values()), refusals
    await eventually(refusals_everywhere, 30, "every node holds the others' signed refusals")
    assert not (record / "decrypted_tally.json").exists() and not (record / "challenged").exists()


# --- ballots checked ahead, while voting is open, are not checked again at the decryption -----------------------


async def test_ballots_checked_ahead_are_not_checked_again_when_the_guardians_decrypt(five, record):
    g1, g2, g3 = five[:3]
    for node in (g2, g3):
        r = await cli("record", "follow", "--record", record, "--once", "--config", node.config)
        assert r.returncode == 0, (r.stdout, r.stderr)
        found = re.search(r"(\d+) ballots? checked, (\d+) checked before; 3 ballots in the box; 0 failures", r.stdout)
        assert found and int(found.group(1)) + int(found.group(2)) == 3, r.stdout
        again = await cli("record", "follow", "--record", record, "--once", "--config", node.config)
        assert "0 ballots checked, 3 checked before" in again.stdout, again.stdout
    r = await cli("decrypt", "--record", record, "--config", g1.config, "--timeout", ROUND_TIMEOUT)
    assert r.returncode == 0, (r.stdout, r.stderr)
    session = await full_session(g1, session_prefix(r.stdout))
    await completes_on(five, session)
    for node in (g2, g3):
        report = json.loads((node.dir / "decryptions" / session / "verified.json").read_bytes())
        step = report["steps"]["selection well-formedness"]
        assert (step["result"], step.get("note")) == ("pass", "3 of 3 ballots checked before (verification cache)"), \
            (node.name, step)
    check_tally(record, [1, 2, 3, 4, 5], [])


# --- (3) two guardians killed in the middle of round 1 ------------------------------------------------------------


async def test_two_guardians_killed_in_round_one_the_other_three_finish(five, record):
    g1, g2, g3, g4, g5 = five
    session = await request(g1, record, timeout=STEP_TIMEOUT)

    seen = await in_round_one(g1, session, ("shares", "commitments"))
    for node in (g4, g5):          # both at once: one must not answer a step while the other is being killed
        node.signal(signal.SIGKILL)
    sigkill(g4)
    sigkill(g5)
    print("killed g4 and g5 at", {k: seen.get(k) for k in ("round", "step", "waiting_for")})
    entries = await completes_on([g1, g2, g3], session)
    for e in entries.values():
        check_outcome(e, ["g1", "g2", "g3"], ["g4", "g5"])
        assert e["outcome"]["rounds"] == 2 and e["outcome"]["excluded"] == {}, e["outcome"]
    rounds = json.loads((record / "decryption_session.json").read_bytes())["rounds"]
    assert [(r["present"], r["excluded"]) for r in rounds] == [([1, 2, 3, 4, 5], {}), ([1, 2, 3], {})], rounds
    assert set(rounds[0]["missing"]) <= {4, 5} and rounds[0]["missing"] and not rounds[1]["missing"], rounds
    check_tally(record, [1, 2, 3], [4, 5])
    async with trio.open_nursery() as nursery:            # verify while the restarts below go on
        nursery.start_soon(trio.to_thread.run_sync, check_verifies, record)
        await catch_up(five, session)


async def catch_up(five, session: str) -> None:
    g1, g2, g3, g4, g5 = five
    # Back again: they resume the session and learn its end from the others. g1 and g3 come back only
    # after g4 and g5 have everything g2 sent, so g2's round-2 responses reach them before the round-2
    # commitments of g1 and g3 (links are independent: nothing orders one sender's messages after another's).
    g1.stop()
    g3.stop()
    await start_dead([g4, g5])
    await has_round_messages([g4, g5], session, {"g2"}, 2)
    await start_dead([g1, g3])
    await has_round_messages([g4, g5], session, {"g1", "g2", "g3"}, 2)
    entries = await settled([g4, g5], session)
    for node in five:
        no_traceback(node)
        assert node.alive, node.output()[-3000:]
    for name, e in entries.items():
        assert e["status"] == "complete", (name, {k: e.get(k) for k in ("round", "step", "excluded", "available")})
        check_outcome(e, ["g1", "g2", "g3"], ["g4", "g5"])
        assert e["outcome"]["excluded"] == {}, e["outcome"]


async def has_round_messages(nodes, session: str, senders: set[str], number: int) -> None:
    async def check():
        for node in nodes:
            got = {m["from"] for m in await node.inbox() if m["session"] == session
                   and m["type"] == "decrypt-responses" and m["body"]["round"] == number}
            assert senders <= got, (node.name, got)
    await eventually(check, 60, f"round {number} responses of {sorted(senders)} on {[n.name for n in nodes]}")


async def settled(nodes, session: str, timeout: float = 30) -> dict[str, dict]:
    """Each node's entry once it has completed the session, or stopped at a failed round (which only the
    coordinator's next round could move on from)."""
    async def check():
        out = {}
        for node in nodes:
            e = await entry(node, session)
            assert e["status"] != "ready" or e.get("step") == "failed", (node.name, e)
            out[node.name] = e
        return out
    return await eventually(check, timeout, "the restarted guardians settled", interval=0.25)


# --- (8) every node killed during round 1 and started again ----------------------------------------------------------


async def test_every_node_killed_in_round_one_resumes_and_never_answers_twice(five, record):
    g1 = five[0]
    session = await request(g1, record, timeout=ROUND_TIMEOUT)

    seen = await in_round_one(g1, session, ("commitments", "responses"))
    for node in five:            # the coordinator first
        sigkill(node)
    print("killed every node at", {k: seen.get(k) for k in ("round", "step", "waiting_for")})
    await start_dead(five)
    entries = await completes_on(five, session)
    outcome = entries["g1"]["outcome"]
    print("after the restart:", outcome)
    for e in entries.values():            # normally all five, in round 1; a node slow to come back may be left out
        check_outcome(e, outcome["present"], outcome["missing"])
        assert len(outcome["present"]) >= 3 and e["outcome"]["excluded"] == {}, e["outcome"]
    for node in five:
        assert re.search(rf"decryption {session[:16]}: \d+ statements, resumed", node.log()), node.log()[-3000:]
        no_traceback(node)
    # No guardian sent two messages for one step of one round: above all, never two responses (one nonce,
    # two challenges would give its key share away). g2 sees everyone's messages but its own, g3 g2's.
    sent: Counter = Counter()
    for node, senders in ((five[1], {"g1", "g3", "g4", "g5"}), (five[2], {"g2"})):
        for m in await node.inbox():
            if m["session"] == session and m["from"] in senders and m["type"] in (
                    "decrypt-shares", "decrypt-commitments", "decrypt-responses"):
                sent[(m["from"], m["type"], m["body"]["round"])] += 1
    assert {key for key, count in sent.items() if count > 1} == set(), sent
    last = outcome["rounds"]
    assert {who for who, t, r in sent if t == "decrypt-responses" and r == last} == set(outcome["present"]), sent
    present = [int(name[1:]) for name in outcome["present"]]
    check_tally(record, present, [i for i in range(1, 6) if i not in present])
    await trio.to_thread.run_sync(check_verifies, record)


# --- (5) a guardian sending a wrong partial decryption ----------------------------------------------------------


async def test_a_wrong_partial_decryption_excludes_its_guardian_and_the_others_finish(five, record):
    g1, g2, g3, g4, g5 = five
    honest = [g1, g2, g4, g5]
    g3.stop()
    culprit = InProcessNode.of(g3)
    # its partial decryption M of the first statement (the tally of contest 1 option 1) is wrong, with a
    # commitment hash that matches that M; everything else it sends is honest
    async with culprit.running(Guardians(decryption=adversary.wrong_decryption(first_only=True))):
        await all_connected(honest, among=honest + [culprit])
        session = await request(g1, record, timeout=ROUND_TIMEOUT)
        entries = await completes_on(honest, session)
        own = (await final([culprit], session, 60))["g3"]
    for name, e in entries.items():
        check_outcome(e, ["g1", "g2", "g4", "g5"], ["g3"])
        assert list(e["outcome"]["excluded"]) == ["g3"], (name, e["outcome"])
        assert "wrong partial decryption for contest 1 option 1" in e["outcome"]["excluded"]["g3"], \
            (name, e["outcome"])
        assert e["outcome"]["rounds"] == 2, e["outcome"]
    print("the culprit's own view:", own["status"], own["outcome"])
    rounds = json.loads((record / "decryption_session.json").read_bytes())["rounds"]
    assert [r["present"] for r in rounds] == [[1, 2, 3, 4, 5], [1, 2, 4, 5]], rounds
    assert list(rounds[0]["excluded"]) == ["3"] and rounds[1]["excluded"] == {}, rounds
    check_tally(record, [1, 2, 4, 5], [3])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, check_verifies, record)
        g3.start()              # g3 as a process again, on the same data directory
        await g3.wait_ready()
        assert (await entry(g3, session))["status"] == own["status"]


# --- (2), (7) and (4): g4 and g5 never started; in (4) g3 neither, until the session stalls ------------


@pytest.fixture(scope="class")
def g4_g5_stopped(cluster5):
    cluster, nodes, _ = cluster5
    for node in nodes[3:]:
        node.stop()
    yield nodes
    restart_dead(nodes)


@pytest.fixture
def three(cluster5, g4_g5_stopped):
    cluster, nodes, _ = cluster5
    trio.run(all_connected, nodes[:3])
    yield nodes
    print(cluster.diagnostics())


class TestTwoGuardiansNeverStarted:
    @pytest.mark.parametrize("form", ["standard", "compensated"])
    async def test_the_three_present_decrypt_without_the_two_never_started(self, three, record, form):
        g1, g2, g3, g4, g5 = three
        assert not g4.alive and not g5.alive
        r = await cli("decrypt", "--record", record, "--config", g1.config, "--timeout", GATHER_TIMEOUT,
                      *(["--compensated"] if form == "compensated" else []))
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert f"decrypted ({form} form) by g1, g2, g3; missing: g4, g5; 1 round(s)" in r.stdout, r.stdout
        session = await full_session(g1, session_prefix(r.stdout))
        entries = await completes_on([g1, g2, g3], session)
        for e in entries.values():
            check_outcome(e, ["g1", "g2", "g3"], ["g4", "g5"], form)
            assert e["compensated"] is (form == "compensated")
        check_tally(record, [1, 2, 3], [4, 5], form)
        await trio.to_thread.run_sync(check_verifies, record)

    async def test_two_present_stalls_and_a_third_returning_completes_it(self, three, record):
        g1, g2, g3, g4, g5 = three
        assert not g4.alive and not g5.alive
        g3.stop()
        r = await cli("decrypt", "--record", record, "--config", g1.config, "--timeout", GATHER_TIMEOUT)
        assert r.returncode == 1, (r.stdout, r.stderr)
        prefix = session_prefix(r.stdout)
        assert "cannot go on: 2 of the 3 guardians needed are available (g1, g2); missing: g3, g4, g5" in r.stdout, \
            r.stdout
        assert f"The session stays open and resumes by itself when enough guardians return; follow it with: " \
               f"guardian decrypt --session {prefix}" in r.stdout, r.stdout
        session = await full_session(g1, prefix)

        async def stalled(node):
            e = await entry(node, session)
            assert e["status"] == "ready" and e["stalled"] is True, e
            assert (e["available"], e["absent"], e["quorum"], e["round"], e["step"]) == \
                (["g1", "g2"], ["g3", "g4", "g5"], 3, 0, "gathering"), e
        await stalled(g1)
        await eventually(lambda: stalled(g2), 30, "g2 sees the session stalled too")

        g3.start()
        await g3.wait_ready()

        async def under_way():
            e = await entry(g1, session)
            assert e["status"] == "complete" or not e.get("stalled"), e
        await eventually(under_way, DECRYPT_WAIT, "the session under way again with g3", interval=0.25)
        r = await cli("decrypt", "--session", prefix, "--config", g1.config)
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert "decrypted (standard form) by g1, g2, g3; missing: g4, g5; 1 round(s)" in r.stdout, r.stdout
        entries = await completes_on([g1, g2, g3], session)
        for e in entries.values():
            check_outcome(e, ["g1", "g2", "g3"], ["g4", "g5"])
        check_tally(record, [1, 2, 3], [4, 5])
        await trio.to_thread.run_sync(check_verifies, record)


async def test_no_node_logged_a_traceback(cluster5):
    """Whatever the sessions above went through, no node hit an internal error."""
    _, nodes, _ = cluster5
    for node in nodes:
        no_traceback(node)
        assert node.alive, node.output()[-3000:]
