"""The key ceremony benchmark: n `guardian run` processes on loopback, the whole ceremony across them.

`python bench/run.py ceremony --nodes 5 --quorum 3 --json` prints one JSON object on its last line.

The nodes are made as an operator would: `guardian init` each, `guardian roster entry` each into
one roster.toml, `guardian run` each (node.toml defaults, but re-dials within a second). The
heartbeat stays at its 5 s default: a node computes the ceremony's exponentiations on its event
loop, and at n=15 on two cores a step can outlast three 1-second heartbeats, which drops links.
Node 1 proposes the election (--manifest, else the 8-contest, 68-option manifest of ../shared/bench,
else the embedded copy of it), every node accepts over its control socket, and the clock runs from the
last accept until every node reports the ceremony complete. Each node's ceremony-status is polled
every POLL seconds meanwhile: the first time a node is seen in a phase gives that node's phase
times (phases shorter than one poll may be skipped; a busy node answers late, so they are
approximate). Every process is killed at the end, whatever happens.

Measured:
  ceremony_seconds        last accept -> every node reports "complete"
  first_complete_seconds  last accept -> the first node reports "complete"
  phase_seconds           per phase, the median over nodes of the time each node spent in it
  phase_reached_seconds   per phase, last accept -> the last node seen in it (or past it)
  setup_seconds           guardian init + roster entries + guardian run until every link is up
All n processes share this machine's cores with the polling client.
"""

from __future__ import annotations

import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from node.cli.node import load_election_file  # noqa: E402
from node.daemon.control import control_request  # noqa: E402
from node.protocol.election_config import default_phase_timeout  # noqa: E402
from node.testing.processes import Cluster, all_connected, eventually, guardian, roster_block  # noqa: E402

from bench.manifest import bench_manifest  # noqa: E402

PHASES = ("keys", "echo", "shares", "check", "complaints", "result", "complete")
POLL = 0.05
NETWORK = {"heartbeat_seconds": 5.0, "redial_initial_seconds": 0.1, "redial_max_seconds": 1.0}
CONTROL_TIMEOUT = 120.0     # a busy node answers late; a client that gives up must not be the one to hang up


def make_cluster(n: int, prefix: str = "g") -> Cluster:
    """n nodes from `guardian init`, one roster from their `guardian roster entry` (in parallel, 2 at a time)."""
    cluster = Cluster()
    names = [f"{prefix}{i}" for i in range(1, n + 1)]
    with ThreadPoolExecutor(2) as pool:
        nodes = list(pool.map(lambda name: cluster.init_node(name, **NETWORK), names))
    cluster.nodes = list(nodes)

    def entry(pair):
        sequence, node = pair
        node.sequence = sequence
        result = guardian("roster", "entry", "--config", node.config, "--sequence", sequence)
        assert result.returncode == 0, result.stderr
        return roster_block(result.stdout)

    with ThreadPoolExecutor(2) as pool:
        blocks = list(pool.map(entry, enumerate(nodes, 1)))
    text = "\n".join(blocks)
    for node in nodes:
        (node.dir / "roster.toml").write_text(text)
    return cluster


def write_election(directory: Path, quorum: int, timeout: float, manifest: Path | None = None) -> Path:
    manifest = bench_manifest(manifest)
    path = directory / f"election-k{quorum}.toml"
    path.write_text(f'election = "Benchmark election"\nmanifest = "{manifest}"\nquorum = {quorum}\n'
                    f"phase_timeout_seconds = {timeout}\n")
    return path


def _entry(statuses: list[dict], session: str) -> dict | None:
    for entry in statuses:
        if entry["session"] == session:
            return entry
    return None


async def _ask(node, cmd: str, **fields):
    if not node.alive:
        raise RuntimeError(f"node {node.name} exited:\n{node.output()[-3000:]}")
    return await control_request(node.socket, {"cmd": cmd, **fields}, timeout=CONTROL_TIMEOUT)


async def _run(n: int, k: int, timeout: float, manifest: Path) -> dict:
    setup = time.perf_counter()
    cluster = await trio.to_thread.run_sync(make_cluster, n)
    try:
        nodes = cluster.nodes
        await cluster.start(*nodes)
        await all_connected(nodes, 60 + 3 * n)
        setup = time.perf_counter() - setup
        election = load_election_file(write_election(cluster.base, k, timeout, manifest))
        session = (await _ask(nodes[0], "ceremony-propose", election=election))["session"]

        async def proposed():
            for node in nodes:
                entry = _entry(await _ask(node, "ceremony-status"), session)
                assert entry is not None and entry["status"] == "proposed", node.name
        await eventually(proposed, 30, "every node has the proposal")
        for node in nodes[:-1]:
            await _ask(node, "ceremony-accept", session=session)

        async def votes_in():
            for node in nodes:
                entry = _entry(await _ask(node, "ceremony-status"), session)
                assert len(entry["votes"]) == n - 1, node.name
        await eventually(votes_in, 30, "every node has n-1 accepts")

        seen: dict[str, dict[str, float]] = {node.name: {} for node in nodes}
        done: dict[str, float] = {}
        failed: dict[str, dict] = {}
        start = time.perf_counter()
        await _ask(nodes[-1], "ceremony-accept", session=session)

        async def watch(node):
            while node.name not in done:
                entry = _entry(await _ask(node, "ceremony-status"), session)
                now = time.perf_counter() - start
                phase = entry.get("phase") or ("complete" if entry["status"] == "complete" else None)
                if phase is not None:
                    seen[node.name].setdefault(phase, now)
                if entry["status"] == "complete":
                    done[node.name] = now
                elif entry["status"] == "aborted":
                    failed[node.name] = entry["outcome"]
                    return
                await trio.sleep(POLL)

        with trio.fail_after(6 * timeout):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(watch, node)
        if failed:
            raise RuntimeError(f"the ceremony aborted: {failed}")
        total = max(done.values())

        h_e = set()
        for node in nodes:
            h_e.add(_entry(await _ask(node, "ceremony-status"), session)["outcome"]["h_e"])
        if len(h_e) != 1:
            raise RuntimeError(f"the nodes disagree on H_E: {h_e}")
    finally:
        cluster.stop()

    phase_seconds, phase_reached = {}, {}
    for i, phase in enumerate(PHASES[:-1]):
        spans, reached = [], []
        for name, times in seen.items():
            later = [times[p] for p in PHASES[i + 1:] if p in times]
            if phase in times and later:
                spans.append(min(later) - times[phase])
            at = times.get(phase, min(later) if later else None)
            if at is not None:
                reached.append(at)
        if not any(phase in times for times in seen.values()):
            continue                        # no node was seen in it (complaints, when nobody complains)
        if spans:
            phase_seconds[phase] = round(statistics.median(spans), 2)
        if reached:
            phase_reached[phase] = round(max(reached), 2)
    return {
        "benchmark": "ceremony", "nodes": n, "quorum": k, "manifest": manifest.name,
        "ceremony_seconds": round(total, 2),
        "first_complete_seconds": round(min(done.values()), 2),
        "phase_seconds": phase_seconds,
        "phase_reached_seconds": phase_reached,
        "setup_seconds": round(setup, 1),
        "poll_seconds": POLL,
        "h_e": h_e.pop(),
        "note": f"{n} guardian run processes on loopback sharing this machine's cores; standard 4096-bit group",
    }


def bench_ceremony(nodes: int, quorum: int, phase_timeout: float | None = None,
                   manifest: Path | None = None) -> dict:
    """phase_timeout: the election's phase_timeout_seconds (default: the node's default, 30 + 6 n)."""
    if not 1 <= quorum <= nodes:
        raise ValueError("need 1 <= quorum <= nodes")
    return trio.run(_run, nodes, quorum, phase_timeout or default_phase_timeout(nodes), bench_manifest(manifest))
