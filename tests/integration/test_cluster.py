"""The verifier, the tally and bulk encryption on a real Dask cluster: a scheduler and two workers on loopback.

Each runs the same task functions as the local pool: the reports match step for
step (times aside), a tampered ballot is named the same way, and the tally and
the encrypted ballots are the same files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.crypto.params import STANDARD
from node.record import codec, layout
from node.testing.records import build_record
from node.verifier import verify_record

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and two `dask worker` processes, one thread each; the scheduler's address."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    common = ["--no-dashboard"]
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                               *common], stdout=open(logs / "scheduler.log", "wb"), stderr=subprocess.STDOUT)]
    try:
        for i in range(2):
            procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--host",
                                           "127.0.0.1", "--name", f"w{i}", *common],
                                          stdout=open(logs / f"worker{i}.log", "wb"), stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while True:
            try:
                with Client(address, timeout=5) as client:
                    if len(client.nthreads()) == 2:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the Dask cluster did not start: " + (logs / "scheduler.log").read_text()[-500:])
            time.sleep(0.5)
        yield address
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("cluster-record")
    build_record(base / "record", base / "secrets", ballots=10, challenged=1, decrypt=True, workers=2)
    return base / "record"


def comparable(report) -> list[dict]:
    out = []
    for r in report:
        d = r.to_json()
        d.pop("seconds")
        out.append(d)
    return out


def guardian(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "guardian"), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_the_cluster_verifies_a_record_as_the_local_pool_does(scheduler, record):
    local = verify_record(record, workers=2)
    remote = verify_record(record, scheduler=scheduler)
    assert comparable(local) == comparable(remote)
    assert all(r.ok is not False for r in remote), [(r.step, r.failures) for r in remote if r.ok is False]
    assert {r.step: r.items for r in remote}["selection identifiers"] == 10


def test_a_tampered_ballot_is_named_on_the_cluster(scheduler, record, tmp_path):
    copy = tmp_path / "record"
    shutil.copytree(record, copy)
    rel = layout.ballot_file("b-0000004")
    ballot = json.loads((copy / rel).read_bytes())
    pair = ballot["contest_fields_ciphertexts"][0]["proofs_correctness"][0][1]
    pair["c"] = format((int(pair["c"], 16) + 1) % int(STANDARD.q), "X").zfill(64)
    (copy / rel).write_bytes(codec.canonical_bytes(ballot))
    # the command line, with the scheduler named by the environment's convention
    done = guardian("verify", str(copy), "--json", env={"DASK_SCHEDULER_ADDRESS": scheduler})
    assert done.returncode == 1, done.stderr
    steps = {s["step"]: s for s in json.loads(done.stdout)["steps"]}
    assert steps["selection well-formedness"]["result"] == "FAIL"
    assert "ballot 'b-0000004' contest 1 option 1" in steps["selection well-formedness"]["failures"][0]
    local = {r.step: r for r in verify_record(copy, workers=2)}
    assert local["selection well-formedness"].failures == steps["selection well-formedness"]["failures"]


def test_tally_and_encrypt_on_the_cluster_write_what_the_local_pool_writes(scheduler, tmp_path):
    build_record(tmp_path / "a", tmp_path / "secrets", ballots=6, challenged=0, close=False, workers=2)
    for name in ("b", "open"):
        shutil.copytree(tmp_path / "a", tmp_path / name)
    assert guardian("tally", "--record", str(tmp_path / "a"), "--rehearsal").returncode == 0
    done = guardian("tally", "--record", str(tmp_path / "b"), "--rehearsal", "--scheduler", scheduler)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / layout.ENCRYPTED_TALLY).read_bytes() == (tmp_path / "b" / layout.ENCRYPTED_TALLY).read_bytes()

    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"id": f"x-{i}", "ballot_style": "all", "contests": {"Mayor": ["Ada"]}}) + "\n"
                             for i in range(4)))
    done = guardian("encrypt", "--election", str(tmp_path / "open"), "--ballots", str(plain), "--device", "d-1",
                    "--out", str(tmp_path / "enc"), "--rehearsal", "--scheduler", scheduler)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "enc").glob("x-*.json")) == [f"x-{i}.json" for i in range(4)]
    done = guardian("ballots", "submit", "--record", str(tmp_path / "open"), "--cast", str(tmp_path / "enc"),
                    "--rehearsal")
    assert done.returncode == 0 and "4 accepted, 0 refused" in done.stdout, done.stdout + done.stderr
