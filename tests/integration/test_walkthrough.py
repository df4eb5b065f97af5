"""The README's guardian checklist, run as written on three real nodes on loopback.

The commands are read from the fenced block of the README's "A guardian's checklist" section, so this test
fails when the README drifts from what the commands do: each command runs as the line says (on one node or
on every node, in that guardian's own working directory, passphrases typed at the prompt through a
terminal), and its output must show the line's `# done:` text. Status commands are run again until they do
(the ceremony and the certificate take their time). Only HASH, the ceremony's hash, is filled in, and the
example files the block names (an election file like configs/election.toml, ballots like
configs/ballots.jsonl) are put in place.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import shlex
import shutil
import subprocess
import sys
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from decryption_harness import set_decryption
from node.testing.processes import PROJECT, node_env
from test_ceremony_nodes import make_cluster, start_cluster

README = PROJECT / "README.md"
SECTION = "## A guardian's checklist"
PASSPHRASE = "a backup passphrase typed at the prompt"
PROMPT = re.compile(rb"passphrase: $", re.I)
WAIT = 240               # seconds a status command is given to show that its step is done
STEPS = ["propose", "accept", "ceremony", "custody", "certificate", "record", "encrypt", "tally", "decrypt", "verify"]


@dataclass
class Command:
    step: str            # the comment that heads it
    every_node: bool
    words: list[str]
    done: str

    @property
    def repeats(self) -> bool:
        """A command that shows a state (run again until the state is reached)."""
        return self.words[1:3] in (["ceremony", "status"], ["certificate", "show"])


def checklist() -> list[Command]:
    text = README.read_text(encoding="utf-8")
    assert text.count(SECTION) == 1, f"the README has no (single) {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "the checklist has no ```sh block"
    commands, step, every = [], None, False
    for line in block.group(1).splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            step = line.lstrip("# ").strip()
            assert re.match(r"\d+\. ", step), f"a step heading is numbered: {line!r}"
            every = "(on every node" in step
            continue
        command, sep, done = line.partition("# done: ")
        assert sep and done.strip(), f"every command says what it shows when done: {line!r}"
        words = shlex.split(command)
        assert words[0] == "guardian" and step is not None, line
        commands.append(Command(step, every, words, done.strip()))
    return commands


def test_the_checklist_goes_through_a_guardians_steps_in_order():
    commands = checklist()
    order = [" ".join(c.words[1:3]) for c in commands]
    assert order == ["ceremony propose", "ceremony show", "ceremony accept", "ceremony status", "backup export",
                     "backup confirm", "backup verify", "ceremony status", "certificate show", "record init",
                     "encrypt --election", "ballots submit", "tally --record", "decrypt --record", "verify record"]
    steps = [c.step for c in commands]
    assert [s.split(". ", 1)[1].split(" ")[0] for s in dict.fromkeys(steps)] == STEPS, steps
    assert {" ".join(c.words[1:3]) for c in commands if c.every_node} == {
        "ceremony show", "ceremony accept", "backup export", "backup confirm", "backup verify"}


# --- running it ---------------------------------------------------------------------------------------------


def typed(argv: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command with a terminal as its controlling tty, answering each passphrase prompt as a guardian
    would type it; stdout and stderr apart, as a shell shows them."""
    master, slave = os.openpty()

    def controlling_tty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    with open(cwd / ".out", "w+b") as out, open(cwd / ".err", "w+b") as err:
        proc = subprocess.Popen(argv, stdin=slave, stdout=out, stderr=err, env=env, cwd=cwd,
                                preexec_fn=controlling_tty)
        os.close(slave)
        seen, deadline = b"", time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"{argv[3:]} took more than {timeout} s")
                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    try:
                        seen += os.read(master, 4096)
                    except OSError:          # the command closed its terminal
                        continue
                    if PROMPT.search(seen):
                        os.write(master, PASSPHRASE.encode() + b"\n")
                        seen = b""
        finally:
            os.close(master)
        proc.wait()
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(), err.read().decode())


@pytest.fixture(scope="module")
def guardians():
    cluster, nodes = make_cluster(["g1", "g2", "g3"])
    with cluster:
        for node in nodes:
            set_decryption(node, timeout_seconds=10, verify_workers=1)
        start_cluster(cluster, nodes)
        for node in nodes:
            work = cluster.base / f"{node.name}-work"
            work.mkdir()
            node.work = work
        # the example files the checklist names, where the first guardian (and the election office) runs
        work = nodes[0].work
        shutil.copy(PROJECT / "configs" / "election.toml", work / "election.toml")
        shutil.copy(PROJECT / "configs" / "demo-manifest.json", work / "demo-manifest.json")
        shutil.copy(PROJECT / "configs" / "ballots.jsonl", work / "ballots.jsonl")
        yield cluster, nodes


def test_the_readme_walkthrough_runs_as_written(guardians):
    cluster, nodes = guardians
    fill = {}

    def run(command: Command, node) -> str:
        words = [fill.get(w, w) for w in command.words]
        env = node_env(GUARDIAN_CONFIG=str(node.config))
        deadline = time.monotonic() + WAIT
        while True:
            r = typed([sys.executable, "-m", "node", *words[1:]], env, node.work)
            shown = r.stdout + r.stderr
            if r.returncode == 0 and command.done in r.stdout:
                return r.stdout
            if not command.repeats or time.monotonic() > deadline or r.returncode != 0:
                raise AssertionError(f"{node.name}: {' '.join(words)} (step {command.step!r}) did not show "
                                     f"{command.done!r}; exit {r.returncode}:\n{shown[-3000:]}\n"
                                     f"{cluster.diagnostics()}")
            time.sleep(1)

    commands = checklist()
    i = 0
    while i < len(commands):
        group = [commands[i]]
        while i + len(group) < len(commands) and commands[i + len(group)].step == group[0].step:
            group.append(commands[i + len(group)])
        i += len(group)
        if group[0].every_node:
            # each guardian on its own machine, at the same time; its commands in order
            with ThreadPoolExecutor(len(nodes)) as pool:
                list(pool.map(lambda node: [run(c, node) for c in group], nodes))
        else:
            for command in group:
                out = run(command, nodes[0])
                found = re.search(r"proposed ceremony ([0-9a-f]{64})", out)
                if found:
                    fill["HASH"] = found.group(1)[:16]
    work = nodes[0].work
    assert (work / "record" / "decrypted_tally.json").is_file()
    assert (work / "record" / "certificate.json").is_file() and not (work / "record" / "rehearsal.json").exists()
    for node in nodes:
        assert (node.work / "key.backup").is_file(), node.name
