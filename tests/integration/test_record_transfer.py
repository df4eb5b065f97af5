"""A decryption's record reaches every node at any size: in chunks over the links, across a node killed
mid-file (the receiver, then the sender), and from record locations (an http URL a request names, paths in
node.toml), a wrong file at a location coming from the links instead.

Two real nodes (n=2, k=2) with max_frame_bytes = 80 KiB: the decryption messages fit (the largest, the
commitments, is some 70 KB), the ballot files (about 167 KB) and the encrypted tally (142 KB) do not. Each
test prepares its own record (fresh encryptions: ballot and tally files g2 has never seen; the election
files g2 copies from its earlier sessions). A node kills itself at a crash point (node/daemon/crash_points.py)
right after the first chunk that does not end its file, so the kill always lands mid-file. The module
takes about a minute.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import signal
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from decryption_harness import ceremony_export, cli, completes_on, prepare_record, request, set_decryption
from node.protocol.link import chunk_bytes
from node.testing.processes import all_connected, eventually
from test_ceremony_nodes import make_cluster, start_cluster
from test_record_flow import VALID

MAX_FRAME = 81920
BALLOTS = [b for b in VALID if b[0] in ("v-1", "v-3", "v-challenged")]
BIG = ("ballots/v-1.json", "ballots/v-3.json", "ballots/v-challenged.json", "encrypted_tally.json")


@pytest.fixture(scope="module")
def pair():
    cluster, nodes = make_cluster(["g1", "g2"])
    with cluster:
        for node in nodes:
            set_decryption(node, timeout_seconds=10, verify_workers=1)
            node.set_config(max_frame_bytes=MAX_FRAME)
        start_cluster(cluster, nodes)
        export = ceremony_export(nodes, quorum=2)
        yield cluster, nodes, export
        for node in nodes:
            text = node.log()
            assert "Traceback" not in text and "internal error" not in text, text[-4000:]


def fresh_record(cluster, export, name: str) -> Path:
    record = prepare_record(cluster.base, export, BALLOTS, name=name)
    for rel in BIG:
        assert (record / rel).stat().st_size > MAX_FRAME, rel
    return record


def check_copy(node, session: str, record: Path) -> None:
    """The node's copy holds every file of the record's index, byte for byte; no partial file is left."""
    own = node.dir / "decryptions" / session / "record"
    index = (record / "index.json").read_bytes()
    assert (own / "index.json").read_bytes() == index
    for rel in json.loads(index)["files"]:
        assert (own / rel).read_bytes() == (record / rel).read_bytes(), rel
    assert not list((node.dir / "decryptions" / "incoming").glob("*")), "partial files left"


async def killed(node) -> None:
    async def dead():
        assert node.proc.poll() is not None, f"{node.name} still running"
    await eventually(dead, 60, f"{node.name} killed at its crash point", interval=0.02)
    assert node.proc.returncode == -signal.SIGKILL, node.output()[-2000:]


async def restart(node, peers, crash_at: str | None = None) -> None:
    node.stop()
    node.start(env={"GUARDIAN_CRASH_AT": crash_at} if crash_at else None)
    await node.wait_ready(60)
    await all_connected([node, *peers], 60)


def partials(node) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (node.dir / "decryptions" / "incoming").glob("*.part")}


# --- in chunks over the links, across a kill mid-file -------------------------------------------------


async def test_the_receiver_killed_mid_file_resumes_from_its_partial_file(pair):
    cluster, (g1, g2), export = pair
    record = fresh_record(cluster, export, "rec-receiver")
    await restart(g2, [g1], "blob-in:part")
    session = await request(g1, record, timeout=10)
    await killed(g2)
    held = {name: size for name, size in partials(g2).items() if size}     # the others not begun yet
    assert held and all(size % chunk_bytes(MAX_FRAME) == 0 for size in held.values()), partials(g2)
    mark = len(g2.log())
    g2.start()
    await g2.wait_ready(60)
    await completes_on([g1, g2], session)
    resumed = re.findall(r"record file ([0-9a-f]{16}) resumed at byte (\d+)", g2.log()[mark:])
    assert {(d, int(n)) for d, n in resumed} == {(name[:16], size) for name, size in held.items()}, (resumed, held)
    check_copy(g2, session, record)


async def test_the_sender_killed_mid_file_the_receiver_goes_on_from_the_bytes_it_holds(pair):
    cluster, (g1, g2), export = pair
    record = fresh_record(cluster, export, "rec-sender")
    await restart(g1, [g2], "blob-out:part")
    mark = len(g2.log())
    session = await request(g1, record, timeout=10)
    await killed(g1)
    held = {name: size for name, size in partials(g2).items() if size}
    g1.start()
    await g1.wait_ready(60)
    await completes_on([g1, g2], session)
    log = g2.log()[mark:]
    assert "link to g1 closed" in log
    went_on = re.findall(r"record file ([0-9a-f]{16}): going on from byte (\d+), from guardian 1", log)
    # The chunk g1 sent last may die with its socket; any bytes g2 held of a file, it went on from.
    print("g2 held at the kill:", held, "went on:", went_on)
    assert {(name[:16], size) for name, size in held.items()} <= {(d, int(n)) for d, n in went_on}, (held, went_on)
    assert "resumed at byte" not in log           # g2 never restarted: nothing read back from disk
    check_copy(g2, session, record)


# --- record locations ------------------------------------------------------------------------------------


@contextmanager
def serving(directory: Path):
    """`directory` over http on a loopback port; yields (URL, the paths asked for)."""
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            asked.append(self.path.lstrip("/"))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/record", asked
    finally:
        server.shutdown()
        server.server_close()


def published(record: Path, base: Path, name: str) -> Path:
    """A copy of the record as published (before its decryption), under base/name/record."""
    target = base / name / "record"
    shutil.copytree(record, target)
    return target


async def test_an_http_location_the_request_names_gives_every_file_and_a_wrong_one_comes_from_the_links(pair):
    cluster, (g1, g2), export = pair
    record = fresh_record(cluster, export, "rec-http")
    good = published(record, cluster.base, "web-good")
    with serving(good.parent) as (url, asked):
        mark = len(g2.log())
        r = await cli("decrypt", "--record", record, "--source", url, "--config", g1.config, "--timeout", 10)
        assert r.returncode == 0, (r.stdout, r.stderr)
    session = json.loads((record / "decryption_session.json").read_bytes())["session"]
    log = g2.log()[mark:]
    assert re.search(rf"decryption {session[:16]}: \d+ record file\(s\) read from {re.escape(url)}", log), log[-3000:]
    assert {"record/index.json", *(f"record/{rel}" for rel in BIG)} <= set(asked), asked
    assert "does not match" not in log
    check_copy(g2, session, record)

    record = fresh_record(cluster, export, "rec-tampered")
    bad = published(record, cluster.base, "web-bad")
    data = bytearray((bad / "ballots" / "v-3.json").read_bytes())
    data[-20] ^= 1
    (bad / "ballots" / "v-3.json").write_bytes(bytes(data))
    with serving(bad.parent) as (url, asked):
        mark = len(g2.log())
        session = await request(g1, record, timeout=10, sources=[url])
        await completes_on([g1, g2], session)
    log = g2.log()[mark:]
    assert (f"record location {url}, ballots/v-3.json: a file whose SHA-256 does not match the index; "
            f"it comes from the peers") in log, log[-3000:]
    assert "record/ballots/v-3.json" in asked and "record/ballots/v-1.json" in asked, asked
    check_copy(g2, session, record)          # v-3 as the index has it, from g1


async def test_paths_in_node_toml_a_missing_one_is_passed_over(pair):
    cluster, (g1, g2), export = pair
    record = fresh_record(cluster, export, "rec-path")
    where = published(record, cluster.base, "shared-drive")
    missing = cluster.base / "no-such-record"
    g2.set_config(record_sources=json.dumps([str(missing), str(where)]))
    try:
        await restart(g2, [g1])
        mark = len(g2.log())
        session = await request(g1, record, timeout=10)
        await completes_on([g1, g2], session)
        log = g2.log()[mark:]
        assert re.search(rf"record location {re.escape(str(missing))}, \S+: .*No such file.*; trying the next "
                         rf"location", log), log[-3000:]
        assert f"record location {missing} failed 3 times in a row; not tried again for this session" in log
        assert re.search(rf"decryption {session[:16]}: \d+ record file\(s\) read from {re.escape(str(where))}", log)
        check_copy(g2, session, record)
    finally:
        g2.set_config(record_sources="[]")
        await restart(g2, [g1])
