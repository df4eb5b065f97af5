"""`python bench/run.py flood`: the honest round trip between two nodes, idle and while a third guardian
floods one of them.

Nodes a and b run in this process under one trio loop, as in bench/links.py (a ping note from a, b's pong
back). The flooder is a roster member (guardian 1, its own key) played by a child process, this file run
with --flooder: it dials b, authenticates, and sends as fast as its link takes them signed envelopes b
has never seen, of its own sequence numbers: notes just under b's max_frame_bytes, each followed by
SMALL short notes. b's quota stores a burst of them and refuses the rest. Once the flooder has sent
twice b's burst of bytes (the flood's steady state), the round trips are measured in BLOCKS blocks of
each kind, idle and flooded in turn (the flooder pauses between), so that a change in the machine's
other load falls on both alike.

Measured:
  idle_round_trip_ms    median round trip a -> b -> a, nothing else on the wire (`rounds` of them)
  flood_round_trip_ms   the same while the flood runs (`rounds` of them)
  ratio                 flood_round_trip_ms / idle_round_trip_ms
  offered_mb_per_second what the flooder sent a second while it flowed (offered_envelopes, offered_bytes
                        in all)
  stored_bytes          of the flood, what b committed to its inbox
  refused               b's refusals of the flooder, by reason
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing
import trio
import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.links import echo_nodes, free_port, median_ms, round_trips  # noqa: E402
from node.identity import Identity  # noqa: E402
from node.testing.peer import HarnessLink, HarnessPeer  # noqa: E402

SMALL = 8                 # short notes after each large one
BLOCKS = 5                # idle and flooded blocks of round trips, in turn
FRAME_ROOM = 1024         # a note's body is this much below max_frame_bytes: the envelope's own fields


async def _measure(rounds: int, root: Path) -> dict:
    flooder, a_id, b_id = Identity.generate(), Identity.generate(), Identity.generate()
    port = await free_port()
    # The flooder (1) and a (2) dial b (3).
    (a, b), stores = echo_nodes(root, [(1, "flooder", flooder, None), (2, "a", a_id, "127.0.0.1:0"),
                                       (3, "b", b_id, f"127.0.0.1:{port}")])
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await nursery.start(a.run)
            waiting = a.arrival
            a.send("note", "ping warm-up", to=b_id.public_key)
            with trio.fail_after(30):
                await waiting.wait()
            idle, flooded = [], []
            block = max(1, rounds // BLOCKS)
            order = {"seed": bytes(flooder.signing_key).hex(), "address": f"ws://127.0.0.1:{port}",
                     "roster": [i.public_key.hex() for i in (flooder, a_id, b_id)],
                     "body": b.config.max_frame_bytes - FRAME_ROOM, "warm_up": 2 * b.config.peer_burst_bytes}
            child = subprocess.Popen([sys.executable, __file__, "--flooder"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                child.stdin.write(json.dumps(order) + "\n")
                child.stdin.flush()
                started = await trio.to_thread.run_sync(child.stdout.readline)
                if started.strip() != "flooding":
                    raise RuntimeError(f"the flooder did not start: {started!r}")
                while len(flooded) < rounds:
                    flooded += await round_trips(a, b_id.public_key, min(block, rounds - len(flooded)))
                    await _tell(child, "pause")
                    idle += await round_trips(a, b_id.public_key, min(block, rounds - len(idle)))
                    await _tell(child, "go")
                child.stdin.close()          # the flooder stops and reports what it sent
                sent = json.loads(await trio.to_thread.run_sync(child.stdout.readline))
            finally:
                if child.poll() is None:
                    child.kill()
                child.wait()
            nursery.cancel_scope.cancel()
        b_db = stores[1]
        refused = b_db.refusal_counts().get("flooder", {})
    finally:
        for store in stores:
            store.close()
    db = sqlite3.connect(f"file:{root / 'b' / 'node.sqlite3'}?mode=ro", uri=True)
    try:
        stored = db.execute("SELECT COALESCE(SUM(length(envelope)), 0) FROM inbox WHERE sender = ?",
                            (flooder.public_key,)).fetchone()[0]
    finally:
        db.close()
    return {"benchmark": "flood", "rounds": rounds, "idle_round_trip_ms": median_ms(idle),
            "flood_round_trip_ms": median_ms(flooded), "ratio": round(median_ms(flooded) / median_ms(idle), 2),
            "offered_mb_per_second": round(sent["bytes"] / max(sent["seconds"], 1e-9) / 2**20, 1),
            "offered_envelopes": sent["envelopes"], "offered_bytes": sent["bytes"], "stored_bytes": stored,
            "refused": refused,
            "note": "a and b in one process on one core, the flooder in another; b's quotas at their defaults"}


async def _tell(child: subprocess.Popen, word: str) -> None:
    """Pause or resume the flooder; it answers once it has."""
    child.stdin.write(word + "\n")
    child.stdin.flush()
    answer = await trio.to_thread.run_sync(child.stdout.readline)
    if answer.strip() != word:
        raise RuntimeError(f"the flooder answered {answer!r} to {word!r}")


def bench_flood(rounds: int = 50) -> dict:
    root = Path(tempfile.mkdtemp(prefix="gn-bench-", dir="/tmp"))
    try:
        return trio.run(_measure, rounds, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the flooder: a child process -------------------------------------------------------------------


async def _flood(order: dict) -> dict:
    peer = HarnessPeer("flooder", port=1)
    peer.identity = Identity(nacl.signing.SigningKey(bytes.fromhex(order["seed"])))
    keys = {bytes.fromhex(k) for k in order["roster"]}
    sent = {"envelopes": 0, "bytes": 0, "seconds": 0.0}
    async with trio.open_nursery() as nursery:
        ws = await trio_websocket.connect_websocket_url(nursery, order["address"], None,
                                                        max_message_size=4 * order["body"])
        link = await HarnessLink.connect(ws, peer, keys)
        nursery.start_soon(link.pump)
        await link.send("sync", {"since": 0})

        flowing = trio.Event()
        flowing.set()
        since = time.perf_counter()          # flowing since then

        async def told() -> None:
            nonlocal flowing, since
            while True:
                word = (await trio.to_thread.run_sync(sys.stdin.readline)).strip()
                if flowing.is_set() and word != "go":
                    sent["seconds"] += time.perf_counter() - since
                if word == "pause":
                    flowing = trio.Event()
                elif word == "go":
                    flowing.set()
                    since = time.perf_counter()
                else:                  # '' when the parent closes stdin: the end
                    nursery.cancel_scope.cancel()
                    return
                await trio.sleep(0.05)     # what is in flight on the link has arrived
                print(word, flush=True)
        nursery.start_soon(told)
        blob = os.urandom(order["body"])
        while True:
            frames = [peer.envelope({"blob": blob}).encode()]
            frames += [peer.envelope({"n": sent["envelopes"] + i}).encode() for i in range(SMALL)]
            if sent["bytes"] < order["warm_up"] <= sent["bytes"] + sum(map(len, frames)):
                print("flooding", flush=True)
            for frame in frames:
                await flowing.wait()
                await link.send("env", frame)
                sent["envelopes"] += 1
                sent["bytes"] += len(frame)
    return sent


def flooder() -> int:
    order = json.loads(sys.stdin.readline())
    print(json.dumps(trio.run(_flood, order)), flush=True)
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--flooder"]:
    sys.exit(flooder())
