"""One scenario, start to end: nodes, ceremony, custody, ballots, decryption, verification; faults on cue.

The election is driven through the commands a guardian or an operator types (`guardian ceremony
propose|accept`, `guardian backup export|confirm|verify`, `guardian record init`, `guardian encrypt`,
`guardian ballots submit`, `guardian tally`, `guardian decrypt`, `guardian verify`); the simulator only
watches the nodes' control sockets, as `guardian status` does, to know when to inject each fault. A
scenario without custody is a rehearsal: those commands run with --rehearsal, and every node allows it.
"""

from __future__ import annotations

import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import trio

from node.crypto.errors import GuardianError
from node.testing.processes import PASS_ENV, TimedOut, all_connected, eventually

from simulate.cluster import SimCluster, SimNode, guardian
from simulate.relay import RelayMesh
from simulate.scenario import Fault, Scenario

MANIFEST = Path(__file__).resolve().parent.parent / "node" / "data" / "demo-manifest.json"
POLL = 0.2


@dataclass
class Outcome:
    ceremony: str = "none"
    culprits: tuple[int, ...] = ()
    reason: str = ""
    decryption: str = "none"
    missing: tuple[int, ...] = ()
    excluded: tuple[int, ...] = ()
    verified: bool | None = None
    refusals: dict[str, int] = field(default_factory=dict)
    links: dict[str, float] = field(default_factory=dict)     # METRICS_SHOWN, summed over the nodes
    tally: dict | None = None
    times: dict[str, float] = field(default_factory=dict)


@dataclass
class Result:
    scenario: Scenario
    outcome: Outcome
    mismatches: list[str]
    seconds: float
    directory: Path
    events: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatches


class Faults:
    """Fires each of the scenario's faults once, at its cue; undoes timed ones after their duration."""

    def __init__(self, scenario: Scenario, cluster: SimCluster, mesh: RelayMesh, nursery: trio.Nursery,
                 events: list[str], say: Callable[[str], None], started: float) -> None:
        self.scenario, self.cluster, self.mesh, self.nursery = scenario, cluster, mesh, nursery
        self.events, self.say, self.started = events, say, started
        self.fired: set[int] = set()

    def _note(self, text: str) -> None:
        line = f"{time.monotonic() - self.started:7.2f}s  {text}"
        self.events.append(line)
        self.say(text)

    async def fire(self, when: str) -> None:
        for i, fault in enumerate(self.scenario.faults):
            if fault.when == when and i not in self.fired:
                self.fired.add(i)
                self._note(f"fault: {fault.describe()}")
                await self._apply(fault)

    async def _apply(self, f: Fault) -> None:
        node = self.cluster.node(f.guardian) if f.guardian else None
        link = self.mesh.link(*f.link) if f.link else None
        if f.action == "kill":
            node.kill()
            if f.seconds:
                self.nursery.start_soon(self._later, f.seconds, node.start, f"{node.name} restarted")
        elif f.action == "restart":
            node.kill()
            node.start()
        elif f.action == "stop":
            node.stop()
        elif f.action == "start":
            node.start()
        elif f.action == "pause":
            node.pause()
            if f.seconds:
                self.nursery.start_soon(self._later, f.seconds, node.resume, f"{node.name} resumed")
        elif f.action == "resume":
            node.resume()
        elif f.action == "isolate":
            self.mesh.isolate(f.guardian, f.seconds or None)       # heals by itself after `seconds`
        elif f.action == "partition":
            if f.seconds:
                link.partition(f.seconds)
            else:
                link.cut()
        elif f.action == "heal":
            link.heal()
        elif f.action == "garbage":
            link.garbage(int(f.value or 64))
        else:                                    # delay, corrupt, duplicate, drop, reorder, slow
            link.set(**{f.action: f.value})
            if f.seconds:
                def end(link=link):
                    link.clear()
                    link.close_all()      # a connection a lost byte left half-open is dropped, and re-dialled
                self.nursery.start_soon(self._later, f.seconds, end, f"{f.action} on link g{f.link[0]}-g{f.link[1]} ended")

    async def _later(self, seconds: float, action, text: str) -> None:
        await trio.sleep(seconds)
        action()
        self._note(text)


async def run_scenario(scenario: Scenario, base: Path, say: Callable[[str], None] = lambda _: None) -> Result:
    """Run one scenario in its own directory under `base`; the Result compares what happened with what was expected."""
    directory = base / scenario.name
    directory.mkdir(parents=True)
    started = time.monotonic()
    events: list[str] = []
    outcome = Outcome()
    cluster = SimCluster(directory, scenario.guardians)
    try:
        with trio.fail_after(60 + 30 * scenario.guardians + 10 * scenario.phase_timeout + 20 * scenario.timeout):
            await _run(scenario, cluster, outcome, events, say, started)
    except* trio.TooSlowError:
        outcome.reason = outcome.reason or "the scenario ran out of time"
        events.append("the scenario ran out of time")
    except* (GuardianError, RuntimeError, OSError, TimedOut) as group:
        e = _first(group)           # the run's own tasks raise inside nurseries: a group of one
        outcome.reason = f"{type(e).__name__}: {e}"
        events.append(f"error: {outcome.reason}")
    finally:
        cluster.stop_all()
    return Result(scenario, outcome, compare(scenario, outcome), time.monotonic() - started, directory, events)


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _run(scenario: Scenario, cluster: SimCluster, outcome: Outcome, events: list[str],
               say: Callable[[str], None], started: float) -> None:
    n = scenario.guardians
    say(f"making {n} guardian nodes (guardian init, roster entries) in {cluster.base}")
    await cluster.create()
    if not scenario.custody:       # a rehearsal: no key custody, so no certificate; every node takes part
        for node in cluster.nodes:
            node.set_config(allow_rehearsal="true")
    if scenario.adversary:
        a = scenario.adversary
        cluster.node(a.guardian).adversary = (a.behaviour, a.victim)
    async with trio.open_nursery() as nursery:
        mesh = RelayMesh({node.sequence: node.port for node in cluster.nodes}, seed=scenario.seed)
        await nursery.start(mesh.serve)
        cluster.write_rosters(mesh.roster_addresses(), scenario.wrong_roster)
        faults = Faults(scenario, cluster, mesh, nursery, events, say, started)
        for node in cluster.nodes:
            node.start()
        await _all_answer(cluster.nodes)
        if scenario.wrong_roster is None:
            await all_connected(cluster.nodes, 30 + 3 * n)
        say(f"{n} nodes running, every link through its own relay")
        await faults.fire("start")

        t = time.monotonic()
        session = await _ceremony(scenario, cluster, faults, outcome, say)
        outcome.times["ceremony"] = time.monotonic() - t
        if outcome.ceremony == "complete":
            if scenario.custody:
                t = time.monotonic()
                await faults.fire("custody")
                await _custody(cluster, session, say)
                outcome.times["custody"] = time.monotonic() - t
            t = time.monotonic()
            await faults.fire("ballots")
            record = await _ballots(scenario, cluster, session, say)
            outcome.times["ballots"] = time.monotonic() - t
            t = time.monotonic()
            await _decryption(scenario, cluster, faults, record, outcome, say)
            outcome.times["decryption"] = time.monotonic() - t
            if outcome.decryption == "complete":
                t = time.monotonic()
                report = await guardian("verify", record, "--json")
                try:
                    outcome.verified = bool(json.loads(report.stdout)["ok"])
                except (ValueError, KeyError):
                    outcome.verified = False
                outcome.times["verify"] = time.monotonic() - t
                say("guardian verify: the record " + ("verifies" if outcome.verified else "does NOT verify"))
        outcome.refusals = await _refusals(cluster.nodes)
        outcome.links = await _links(cluster.nodes)
        events += [f"relay {e}" for e in mesh.events() if e.kind not in ("connect", "close")][:200]
        nursery.cancel_scope.cancel()


# --- stages -------------------------------------------------------------------------------------------------

async def _all_answer(nodes: list[SimNode]) -> None:
    for node in nodes:
        await eventually(lambda node=node: node.request("status", timeout=5), 30, f"{node.name} answers", POLL)


def _honest(scenario: Scenario, cluster: SimCluster) -> list[SimNode]:
    bad = scenario.adversary.guardian if scenario.adversary else None
    return [node for node in cluster.nodes if node.sequence != bad]


async def _ceremony(scenario: Scenario, cluster: SimCluster, faults: Faults, outcome: Outcome,
                    say: Callable[[str], None]) -> str:
    election = cluster.base / "election.toml"
    election.write_text(f'election = "Simulated election {scenario.name}"\nmanifest = "{MANIFEST}"\n'
                        f"quorum = {scenario.quorum}\nphase_timeout_seconds = {scenario.phase_timeout}\n")
    proposer = cluster.node(1 if scenario.wrong_roster != 1 else 2)
    result = await guardian("ceremony", "propose", "--election", election, "--config", proposer.config)
    if result.returncode != 0:
        raise RuntimeError(f"guardian ceremony propose: {result.stderr.strip()}")
    session = re.search(r"proposed ceremony ([0-9a-f]{64})", result.stdout).group(1)
    say(f"{proposer.name} proposed the election (n={scenario.guardians}, k={scenario.quorum}); "
        f"ceremony {session[:16]}")

    async def entry(node: SimNode) -> dict | None:
        try:
            return next((e for e in await node.request("ceremony-status") if e["session"] == session), None)
        except (GuardianError, OSError):
            return None

    await eventually(lambda: _have_proposal(cluster.nodes, entry), 20, "every node has the proposal", POLL)
    for node in cluster.nodes:
        accepted = await guardian("ceremony", "accept", session[:16], "--config", node.config)
        if accepted.returncode != 0:
            say(f"{node.name} cannot accept: {accepted.stderr.strip().splitlines()[-1]}")
    honest = _honest(scenario, cluster)
    seen: set[str] = set()
    deadline = trio.current_time() + 10 * scenario.phase_timeout + 30
    while True:
        entries = {node.name: await entry(node) for node in honest if node.alive and not node.paused}
        for e in entries.values():
            if e and e.get("phase") and e["phase"] not in seen:
                seen.add(e["phase"])
                say(f"ceremony phase: {e['phase']}")
                await faults.fire(f"ceremony:{e['phase']}")
        statuses = {name: (e or {}).get("status") for name, e in entries.items()}
        if "invalid" in statuses.values():
            bad = [name for name, s in statuses.items() if s == "invalid"]
            outcome.ceremony = "refused"
            outcome.reason = f"the proposal is invalid on {', '.join(bad)}: " + \
                             str(entries[bad[0]]["outcome"].get("reason", ""))
            say(f"ceremony refused: {outcome.reason}")
            return session
        done = [e for e in entries.values() if e and e["status"] in ("complete", "aborted")]
        if entries and len(done) == len(entries) and all(n.alive for n in honest):
            break
        if trio.current_time() > deadline:
            outcome.ceremony = "stuck"
            outcome.reason = f"the ceremony did not end: {statuses}"
            return session
        await trio.sleep(POLL)
    states = {e["status"] for e in done}
    if states == {"complete"}:
        if len({e["outcome"]["h_e"] for e in done}) != 1:
            outcome.ceremony, outcome.reason = "disagreement", "the nodes report different H_E"
        else:
            outcome.ceremony = "complete"
            say(f"ceremony complete on every node: H_E {done[0]['outcome']['h_e'][:16]}...")
    else:
        outcome.ceremony = "aborted" if states == {"aborted"} else "disagreement"
        culprits = {tuple(e["outcome"].get("culprits", [])) for e in done if e["status"] == "aborted"}
        outcome.culprits = sorted(culprits)[0] if len(culprits) == 1 else ()
        outcome.reason = "; ".join(sorted({e["outcome"].get("reason", "") for e in done if e["status"] == "aborted"}))
        say(f"ceremony aborted, naming guardian(s) {list(outcome.culprits)}: {outcome.reason}")
    return session


async def _have_proposal(nodes: list[SimNode], entry) -> None:
    for node in nodes:
        assert not node.alive or await entry(node) is not None, f"{node.name} has no proposal yet"


async def _custody(cluster: SimCluster, session: str, say: Callable[[str], None]) -> None:
    """Each guardian downloads its key backup, confirms two copies and verifies one (seed 000)."""
    async def one(node: SimNode) -> None:
        if not node.alive:
            return
        backup = cluster.base / f"{node.name}-key-backup.json"
        for args in (("export", "--out", backup, "--passphrase-env", PASS_ENV), ("confirm", "--copies", "2"),
                     ("verify", backup, "--passphrase-env", PASS_ENV)):
            result = await guardian("backup", *args, "--ceremony", session[:16], "--config", node.config)
            if result.returncode != 0:
                raise RuntimeError(f"{node.name}: guardian backup {args[0]}: {result.stderr.strip()}")
    async with trio.open_nursery() as nursery:
        for node in cluster.nodes:
            nursery.start_soon(one, node)

    async def certified() -> None:         # every node signs, then each writes it beside its export
        for node in cluster.nodes:
            if node.alive and not node.paused:
                entry = next(e for e in await node.request("ceremony-status") if e["session"] == session)
                assert entry.get("certificate") is True, f"{node.name}: the certificate is not signed by all yet"
    await eventually(certified, 60, "the certificate signed by all", POLL)
    say("every guardian exported, backed up and verified its key; the certificate is signed by all")


async def _ballots(scenario: Scenario, cluster: SimCluster, session: str, say: Callable[[str], None]) -> Path:
    source = next(node for node in cluster.nodes if node.alive)
    record = cluster.base / "record"
    rehearsal = () if scenario.custody else ("--rehearsal",)
    result = await guardian("record", "init", "--ceremony", session, "--out", record, "--config", source.config,
                            *rehearsal)
    if result.returncode != 0:
        raise RuntimeError(f"guardian record init: {result.stderr.strip()}")
    manifest = json.loads(MANIFEST.read_text())
    rng = random.Random(scenario.seed)
    style = manifest["ballot_styles"][0]
    lines = []
    for b in range(scenario.ballots):
        contests = {}
        for index in style["contests"]:
            contest = manifest["contests"][index - 1]
            limit = min(contest.get("selection_limit", 1), len(contest["options"]))
            picks = rng.sample(contest["options"], rng.randint(0, limit))
            contests[contest["label"]] = [o["label"] for o in picks]
        lines.append(json.dumps({"id": f"b-{b + 1}", "ballot_style": style["label"], "contests": contests}))
    (cluster.base / "ballots.jsonl").write_text("\n".join(lines) + "\n")
    encrypted = cluster.base / "encrypted"
    result = await guardian("encrypt", "--election", record, "--ballots", cluster.base / "ballots.jsonl", "--device",
                            "booth-1", "--out", encrypted, *rehearsal)
    if result.returncode != 0:
        raise RuntimeError(f"guardian encrypt: {result.stderr.strip()}")
    files = [encrypted / f"b-{b + 1}.json" for b in range(scenario.ballots)]
    cast, challenged = files[:len(files) - scenario.challenged], files[len(files) - scenario.challenged:]
    result = await guardian("ballots", "submit", "--record", record, "--cast", *cast,
                            *(["--challenge", *challenged] if challenged else []), *rehearsal)
    if result.returncode != 0:
        raise RuntimeError(f"guardian ballots submit: {result.stderr.strip()}")
    result = await guardian("tally", "--record", record, *rehearsal)
    if result.returncode != 0:
        raise RuntimeError(f"guardian tally: {result.stderr.strip()}")
    say(f"{len(cast)} ballots cast and {len(challenged)} challenged (guardian record init, encrypt, ballots "
        f"submit); tally computed" + (" (a rehearsal: no key custody, so no certificate)" if rehearsal else ""))
    return record


async def _decryption(scenario: Scenario, cluster: SimCluster, faults: Faults, record: Path, outcome: Outcome,
                      say: Callable[[str], None]) -> None:
    for sequence in scenario.missing_at_decryption:
        cluster.node(sequence).stop()
    if scenario.missing_at_decryption:
        say(f"guardians {', '.join(f'g{i}' for i in scenario.missing_at_decryption)} are away for the decryption")
    await faults.fire("decryption:start")
    honest = [node for node in _honest(scenario, cluster) if node.alive]
    coordinator = honest[0]
    args = ["decrypt", "--record", record, "--config", coordinator.config, "--timeout", scenario.timeout, "--json"]
    if scenario.compensated:
        args.append("--compensated")
    if not scenario.custody:
        args.append("--rehearsal")
    say(f"{coordinator.name}: guardian decrypt --record {record.name}" + (" --compensated" * scenario.compensated))
    results: list = []

    async def run_cli():
        results.append(await guardian(*args))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_cli)
        steps: set[str] = set()
        while not results:
            try:
                entries = await coordinator.request("decrypt-status", timeout=10)
            except (GuardianError, OSError):
                entries = []
            for e in entries:
                step = e.get("step")
                if e.get("stalled"):
                    step = "stalled"
                if step and step not in steps and step in ("shares", "commitments", "responses", "stalled"):
                    steps.add(step)
                    await faults.fire(f"decryption:{step}")
            await trio.sleep(POLL)
    entry = _json_tail(results[0].stdout)
    if entry.get("stalled"):
        # The command may have seen the stall before any poll did: the faults waiting for it happen now
        # (a fault fires once).
        await faults.fire("decryption:stalled")
    if entry.get("stalled") and any(f.when == "decryption:stalled" for f in scenario.faults):
        say(f"decryption waits for guardians ({', '.join(entry.get('absent', []))}); they return")
        follow = await guardian("decrypt", "--session", entry["session"][:16], "--config", coordinator.config, "--json",
                                "--wait", 10 * scenario.timeout + 60)
        entry = _json_tail(follow.stdout)
    status = entry.get("status")
    if status == "complete":
        o = entry["outcome"]
        outcome.decryption = "complete"
        outcome.missing = tuple(int(name[1:]) for name in o.get("missing", []))
        outcome.excluded = tuple(sorted(int(name[1:]) for name in o.get("excluded", {})))
        outcome.tally = o.get("tally")
        say(f"decrypted by {', '.join(o['present'])}" + (f"; missing {', '.join(o['missing'])}" if o["missing"] else "")
            + (f"; excluded {', '.join(o['excluded'])}" if o.get("excluded") else "") + f" ({o['rounds']} round(s))")
    elif entry.get("stalled"):
        outcome.decryption = "stalled"
        outcome.missing = tuple(int(name[1:]) for name in entry.get("absent", []))
        outcome.excluded = tuple(sorted(int(name[1:]) for name in entry.get("excluded", {})))
        say(f"decryption cannot go on: {len(entry.get('available', []))} of {entry.get('quorum')} needed; "
            f"missing {', '.join(entry.get('absent', []))}; it stays open")
    else:
        outcome.decryption = status if status in ("refused", "failed") else "error"
        outcome.reason = (entry.get("outcome") or {}).get("reason", "") or results[0].stderr.strip()[-300:]
        say(f"decryption {outcome.decryption}: {outcome.reason}")


def _json_tail(text: str) -> dict:
    start = text.find("{")
    try:
        return json.loads(text[start:]) if start >= 0 else {}
    except ValueError:
        return {}


async def _answers(nodes: list[SimNode], ask) -> list:
    """`await ask(node)` of each node that runs and answers; a stopped, paused or failing one is left out."""
    answers = []
    for node in nodes:
        if not node.alive or node.paused:
            continue
        try:
            answers.append(await ask(node))
        except (GuardianError, OSError):
            continue
    return answers


async def _refusals(nodes: list[SimNode]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in await _answers(nodes, lambda node: node.request("status", timeout=5)):
        for peer in status["peers"]:
            for reason, count in peer["refusals"].items():
                counts[reason] = counts.get(reason, 0) + count
        for reasons in status["other_refusals"].values():
            for reason, count in reasons.items():
                counts[reason] = counts.get(reason, 0) + count
    return counts


# (metric, direction) -> what the report calls it: how busy and how troubled the links were.
METRICS_SHOWN = {("guardian_links_established_total", None): "links", ("guardian_dials_total", None): "dials",
                 ("guardian_dial_failures_total", None): "dial failures",
                 ("guardian_link_frames_total", "in"): "frames in", ("guardian_envelopes_total", "in"): "envelopes in"}


async def _links(nodes: list[SimNode]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for samples in await _answers(nodes, lambda node: node.metrics()):
        for (name, labels), value in samples.items():
            shown = METRICS_SHOWN.get((name, dict(labels).get("direction")))
            if shown is not None:
                totals[shown] = totals.get(shown, 0) + value
    return {shown: totals[shown] for shown in METRICS_SHOWN.values() if shown in totals}


# --- expected against actual ------------------------------------------------------------------------------

def compare(scenario: Scenario, o: Outcome) -> list[str]:
    e = scenario.expect
    bad = []
    if o.ceremony != e.ceremony:
        bad.append(f"ceremony {o.ceremony} (expected {e.ceremony})" + (f": {o.reason}" if o.reason else ""))
    elif e.ceremony == "aborted" and tuple(o.culprits) != e.culprits:
        bad.append(f"culprits {list(o.culprits)} (expected {list(e.culprits)})")
    if o.ceremony == "complete" and e.ceremony == "complete":
        if o.decryption != e.decryption:
            bad.append(f"decryption {o.decryption} (expected {e.decryption})" + (f": {o.reason}" if o.reason else ""))
        elif e.decryption in ("complete", "stalled"):
            if e.exact_missing and tuple(o.missing) != e.missing:
                bad.append(f"missing {list(o.missing)} (expected {list(e.missing)})")
            if not e.exact_missing and not set(e.missing) <= set(o.missing):
                bad.append(f"missing {list(o.missing)} (expected at least {list(e.missing)})")
            if tuple(o.excluded) != e.excluded:
                bad.append(f"excluded {list(o.excluded)} (expected {list(e.excluded)})")
        if e.decryption == "complete" and o.decryption == "complete" and e.verified and not o.verified:
            bad.append("the record does not verify")
    for reason in e.refusals:
        if not o.refusals.get(reason):
            bad.append(f"no node counted a refusal {reason!r}")
    return bad
