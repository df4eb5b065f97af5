"""Optional TLS: two real node processes connect over wss:// with certificates from a test CA."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import trio
import trustme

from node.config import roster_entry_toml
from node.daemon.node import control_request
from node.identity import encode_public_key, fingerprint, load_public_key

PASSPHRASE_ENV = "GN_TLS_TEST_PASSPHRASE"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def guardian(*args, env=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          env=env, timeout=120, **kwargs)


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tls_nodes():
    root = Path(tempfile.mkdtemp(prefix="gntls", dir="/tmp"))
    env = {**os.environ, PASSPHRASE_ENV: "tls test passphrase"}
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports, 1):
        d = root / f"n{i}"
        result = guardian("init", str(d), "--name", f"tls{i}", "--listen", f"127.0.0.1:{port}",
                          "--advertise", f"wss://127.0.0.1:{port}", "--passphrase-env", PASSPHRASE_ENV, env=env)
        assert result.returncode == 0, result.stderr
        cert.private_key_pem.write_to_path(str(d / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        text = (d / "node.toml").read_text()
        text = text.replace('cert = ""', 'cert = "cert.pem"').replace('key = ""', 'key = "key.pem"')
        text = text.replace('ca = ""', f'ca = "{root / "ca.pem"}"')
        text = text.replace("heartbeat_seconds = 5.0", "heartbeat_seconds = 0.5")
        (d / "node.toml").write_text(text)
    roster = "".join(
        roster_entry_toml(i, f"tls{i}", encode_public_key(load_public_key(root / f"n{i}")),
                          f"wss://127.0.0.1:{port}", fingerprint(load_public_key(root / f"n{i}"))) + "\n"
        for i, port in enumerate(ports, 1))
    procs = []
    for i in (1, 2):
        (root / f"n{i}" / "roster.toml").write_text(roster)
        procs.append(subprocess.Popen([sys.executable, "-m", "node", "run", "--config", str(root / f"n{i}/node.toml")],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    yield root, procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def status(root: Path, i: int) -> dict:
    return trio.run(control_request, root / f"n{i}" / "control.sock", {"cmd": "status"})


def test_nodes_link_over_wss(tls_nodes):
    root, procs = tls_nodes
    wait_for(lambda: all(p["state"] == "connected" for i in (1, 2) for p in status(root, i)["peers"]),
             what="both nodes connected over wss")
    trio.run(control_request, root / "n1" / "control.sock", {"cmd": "send", "to": "tls2", "type": "note",
                                                               "body": "over tls"})
    wait_for(lambda: trio.run(control_request, root / "n2" / "control.sock", {"cmd": "inbox"}),
             what="the note to arrive")
    inbox = trio.run(control_request, root / "n2" / "control.sock", {"cmd": "inbox"})
    assert [(m["from"], m["body"]) for m in inbox] == [("tls1", "over tls")]
    # the dialler reached the listener through TLS: its link carried the note and no refusal was counted
    assert status(root, 2)["other_refusals"] == {}
