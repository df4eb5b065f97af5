"""The node's store under damage, on real processes: a full disk loses no message and says so in one
line; a truncated WAL, a changed row and a damaged page each stop the node with one line naming the file.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import trio

from node.storage.db import DB_FILE
from node.testing.processes import all_connected, eventually, node_env
from test_ceremony_nodes import entry_of, make_cluster, propose, wait_status, write_election

pytestmark = pytest.mark.slow


def one_line_exit(node, match: str, timeout: float = 60) -> str:
    """The node refuses to run: exit 1, one line on its output naming what is wrong, no traceback."""
    node.proc.wait(timeout=timeout)
    out = node.output().strip().splitlines()
    assert node.proc.returncode == 1, (node.proc.returncode, out[-20:])
    errors = [line for line in out if line.startswith("guardian run: error: ")]
    assert errors and match in errors[-1], out[-20:]
    assert "Traceback" not in node.output(), node.output()[-3000:]
    return errors[-1]


def fresh_output(node) -> None:
    (node.dir / "output.txt").unlink(missing_ok=True)


async def proposed_on_both(tmp_path, alice, bob, name: str) -> str:
    session = await propose(alice, write_election(tmp_path, 2, name=name))
    await wait_status([alice, bob], session, "proposed")
    return session


# --- damage found at start --------------------------------------------------------------------------------


async def test_a_changed_row_a_damaged_page_and_a_truncated_wal_each_stop_the_node_in_one_line(tmp_path):
    cluster, nodes = make_cluster(["alice", "bob"])
    with cluster:
        alice, bob = nodes
        await cluster.start(alice, bob)
        await all_connected(nodes, 60)
        session = await proposed_on_both(tmp_path, alice, bob, "Damage test election")
        bob.stop()
        db = bob.dir / DB_FILE
        pristine = tmp_path / "pristine.sqlite3"
        shutil.copy(db, pristine)

        # (1) One byte of the stored election config changed (the election's name): named, not shown.
        with sqlite3.connect(db) as c:
            (config,) = c.execute("SELECT config FROM ceremonies WHERE session = ?", (bytes.fromhex(session),)).fetchone()
            flipped = bytearray(config)
            at = bytes(config).index(b"Damage test")
            flipped[at] ^= 0x01
            c.execute("UPDATE ceremonies SET config = ? WHERE session = ?", (bytes(flipped), bytes.fromhex(session)))
        fresh_output(bob)
        bob.start()
        line = one_line_exit(bob, f"ceremony {session[:16]} no longer matches its seal")
        assert str(db) in line

        # (2) A page of the file overwritten: quick_check at open says so.
        shutil.copy(pristine, db)
        size = db.stat().st_size
        with open(db, "r+b") as f:
            f.seek(2 * 4096)
            f.write(os.urandom(4096) if size > 3 * 4096 else b"\xff" * 100)
        fresh_output(bob)
        bob.start()
        line = one_line_exit(bob, "is damaged")
        assert str(db) in line

        # (3) Killed with messages in its WAL, which is then cut to 60%: the peers hold messages of
        # bob's the database no longer has. Bob stops rather than reuse their numbers.
        shutil.copy(pristine, db)
        bob.start()
        await all_connected(nodes, 60)
        for i in range(12):
            await bob.send_note("alice", {"n": i})

        async def alice_has_them():
            got = [e for e in await alice.inbox() if e["type"] == "note"]
            assert len(got) == 12, len(got)
        await eventually(alice_has_them, 20, "alice holds bob's 12 notes")
        bob.kill()
        wal = db.with_name(DB_FILE + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        with open(wal, "r+b") as f:
            f.truncate(int(wal.stat().st_size * 0.6))
        fresh_output(bob)
        bob.start()
        line = one_line_exit(bob, "is behind its peers")
        assert "alice holds this node's message" in line and str(db) in line
        assert alice.alive


# --- a full disk -------------------------------------------------------------------------------------------


def mount_tmpfs(directory: Path, size: str) -> None:
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): run the tests as root to include this one")


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (65536, 1):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


async def test_a_full_disk_loses_no_message_and_says_so_in_one_line(tmp_path):
    cluster, nodes = make_cluster(["alice", "bob"])
    with cluster:
        alice, bob = nodes
        # bob's data directory on a small tmpfs of its own
        saved = tmp_path / "bob-saved"
        shutil.copytree(bob.dir, saved)
        mount_tmpfs(bob.dir, "8m")
        try:
            shutil.copytree(saved, bob.dir, dirs_exist_ok=True)
            await cluster.start(alice, bob)
            await all_connected(nodes, 60)
            sent = [await alice.send_note("bob", {"n": i, "pad": "x" * 2000}) for i in range(20)]
            filler = await trio.to_thread.run_sync(fill, bob.dir)
            sent += [await alice.send_note("bob", {"n": i, "pad": "x" * 2000}) for i in range(20, 200)]

            async def says_full():
                status = await bob.status()
                assert status["disk_full"] and "is full" in status["disk_full"], status["disk_full"]
                return status["disk_full"]
            line = await eventually(says_full, 30, "bob says its disk is full")
            assert str(bob.dir) in line and "\n" not in line
            # new work is refused while the disk is full, in the same one line
            with pytest.raises(Exception, match="is full"):
                await bob.send_note("alice", {"during": "full"})

            filler.unlink()

            async def all_arrived():
                seqs = sorted(e["seq"] for e in await bob.inbox() if e["type"] == "note")
                assert seqs == sorted(sent), (len(seqs), len(sent))
            await eventually(all_arrived, 60, "every note reaches bob once space returns")
            assert (await bob.status())["disk_full"] is None
            peer = await bob.peer("alice")
            assert "replay" not in peer["refusals"], peer["refusals"]

            # after a restart too, and no honest peer is charged a refusal
            bob.stop()
            bob.start()
            await all_connected(nodes, 60)
            await all_arrived()
            assert (await bob.peer("alice"))["refusals"] == {}

            # restarting with a full disk: one line
            bob.stop()
            filler = await trio.to_thread.run_sync(fill, bob.dir)
            # (its usual output file is on the full disk too: read what it says directly)
            r = await trio.to_thread.run_sync(lambda: subprocess.run(
                bob.command(), env=node_env(), cwd=bob.dir, capture_output=True, text=True, timeout=60))
            assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
            assert r.stderr.strip().splitlines()[-1].startswith("guardian run: error: ") and \
                "is full" in r.stderr.strip().splitlines()[-1], r.stderr[-3000:]
            filler.unlink()
        finally:
            cluster.stop()
            subprocess.run(["umount", "-l", str(bob.dir)], capture_output=True)
