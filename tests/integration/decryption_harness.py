"""Helpers for the decryption tests across guardian nodes (test_decryption_nodes.py).

One cluster of real `guardian run` processes, its key ceremony with every guardian's key custody done
(so the certificate lets the election proceed), and a record prepared once from the ceremony's export
(`guardian record init`, encrypt, submit, tally) that every test copies before it decrypts it; or, for a
test about rehearsals, a record prepared as one. Waits poll the control sockets against deadlines.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import trio

from node.testing import processes
from node.testing.processes import PASS_ENV, NodeProc, eventually, guardian
from test_ceremony_nodes import accept, ask, completes, propose, write_election
from test_record_flow import VALID, plaintext_line

DECRYPT_WAIT = 150        # deadline for one decryption session to end on a busy 2-core machine


# --- the cluster -----------------------------------------------------------------------------------


def set_decryption(node: NodeProc, timeout_seconds: float = 10.0, verify_workers: int = 1,
                   allow_rehearsal: bool = False) -> None:
    """Edit the [decryption] section `guardian init` wrote into node.toml."""
    assert re.search(r"(?m)^\[decryption\]$", node.config.read_text()), "node.toml has no [decryption] section"
    node.set_config(timeout_seconds=float(timeout_seconds), verify_workers=int(verify_workers),
                    allow_rehearsal="true" if allow_rehearsal else "false")


def ceremony_export(nodes: list[NodeProc], quorum: int = 3, custody: bool = True) -> Path:
    """Run a key ceremony on every node (from g1), then (with `custody`) every guardian's key custody steps
    until the certificate is signed by all; the path of g1's export."""
    async def go():
        session = await propose(nodes[0], write_election(nodes[0].dir.parent, quorum))
        await accept(nodes, session)
        await completes(nodes, session)
        if custody:
            await custody_steps(nodes, session)
        entry = next(e for e in await ask(nodes[0], "ceremony-status") if e["session"] == session)
        return Path(entry["outcome"]["export"])
    return trio.run(go)


async def custody_steps(nodes: list[NodeProc], session: str) -> None:
    """Each guardian exports its key backup, confirms two copies and verifies one (together); then wait for
    the certificate on every node."""
    async def one(node: NodeProc) -> None:
        backup = node.dir.parent / f"{node.name}-{session[:8]}.backup"
        for args in (("export", "--out", backup, "--passphrase-env", PASS_ENV), ("confirm", "--copies", 2),
                     ("verify", backup, "--passphrase-env", PASS_ENV)):
            r = await processes.cli("backup", *args, "--ceremony", session, "--config", node.config, timeout=120)
            assert r.returncode == 0, (node.name, args[0], r.stderr)
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(one, node)

    async def certified():
        for node in nodes:
            e = next(e for e in await ask(node, "ceremony-status") if e["session"] == session)
            assert e.get("certificate") is True, (node.name, e.get("custody"))
    await eventually(certified, 60, "the certificate signed by every guardian")


def prepare_record(base: Path, export: Path, ballots=VALID, rehearsal: bool = False,
                   name: str = "record-template") -> Path:
    """The ceremony's export as a record (`guardian record init` from g1's data directory), with the ballots
    encrypted, submitted (the ones whose id ends in "challenged" challenged, the others cast) and tallied: ready
    to decrypt. Never decrypted itself. With `rehearsal`, every command runs with --rehearsal (the export need
    carry no certificate)."""
    rec = base / name
    flag = ("--rehearsal",) if rehearsal else ()
    r = guardian("record", "init", "--ceremony", export.name, "--out", rec, "--config",
                 export.parent.parent / "node.toml", *flag)
    assert r.returncode == 0, r.stderr
    plain, encrypted = base / f"{name}-plain.jsonl", base / f"{name}-encrypted"
    plain.write_text("\n".join(plaintext_line(i, p) for i, p in ballots) + "\n")
    r = guardian("encrypt", "--election", rec, "--ballots", plain, "--device", "booth-1", "--out", encrypted, *flag,
                 timeout=300)
    assert r.returncode == 0, r.stderr
    cast = [encrypted / f"{i}.json" for i, _ in ballots if not i.endswith("challenged")]
    challenged = [encrypted / f"{i}.json" for i, _ in ballots if i.endswith("challenged")]
    r = guardian("ballots", "submit", "--record", rec, "--cast", *cast, *(["--challenge", *challenged]
                                                                          if challenged else []), *flag, timeout=300)
    assert r.returncode == 0, r.stderr
    r = guardian("tally", "--record", rec, *flag, timeout=300)
    assert r.returncode == 0, r.stderr
    return rec


def expected_tally(ballots=VALID) -> dict[tuple[int, int], int]:
    """(contest index, option index) -> the sum of the cast plaintexts, for the options anyone chose."""
    out: dict[tuple[int, int], int] = {}
    for ballot_id, picks in ballots:
        if ballot_id.endswith("challenged"):
            continue
        for c, options in picks.items():
            for o in options:
                out[(c, o)] = out.get((c, o), 0) + 1
    return out


# --- decryption sessions -----------------------------------------------------------------------------


async def cli(*args, timeout: float = DECRYPT_WAIT + 60) -> subprocess.CompletedProcess:
    return await processes.cli(*args, timeout=timeout)


async def entry(member, session: str) -> dict:
    for e in await ask(member, "decrypt-status"):
        if e["session"] == session:
            return e
    raise AssertionError(f"{member.name} has no decryption session {session[:16]}")


async def request(member, record: Path, **fields) -> str:
    return (await ask(member, "decrypt-request", record=str(record), **fields))["session"]


async def final(members, session: str, timeout: float = DECRYPT_WAIT) -> dict[str, dict]:
    """Wait until the session has ended (complete, failed, refused, invalid) on every member."""
    async def check():
        out = {}
        for m in members:
            e = await entry(m, session)
            assert e["status"] in ("complete", "failed", "refused", "invalid"), \
                (m.name, e["status"], {k: e.get(k) for k in ("round", "step", "waiting_for", "available", "absent",
                                                              "excluded", "refused", "stalled")})
            out[m.name] = e
        return out
    return await eventually(check, timeout, f"decryption {session[:16]} ends on {[m.name for m in members]}",
                            interval=0.25)


async def completes_on(members, session: str, timeout: float = DECRYPT_WAIT) -> dict[str, dict]:
    entries = await final(members, session, timeout)
    assert {n: e["status"] for n, e in entries.items()} == {m.name: "complete" for m in members}, \
        {n: (e["status"], e["outcome"]) for n, e in entries.items()}
    return entries


def verify(record: Path) -> dict:
    """`guardian verify --json`: must pass; its steps by name."""
    r = guardian("verify", record, "--json", timeout=300)
    report = json.loads(r.stdout) if r.stdout.strip().startswith("{") else None
    assert r.returncode == 0 and report and report["ok"] is True, (record, r.stdout[-3000:], r.stderr[-2000:])
    return {s["step"]: s for s in report["steps"]}


def decrypted(record: Path) -> dict:
    return json.loads((record / "decrypted_tally.json").read_bytes())


def tally_values(record: Path) -> dict[tuple[int, int], int]:
    tally = decrypted(record)
    return {(c["contest_ix"], o["option_ix"]): o["tally"] for c in tally["contests"] for o in c["options"]}


def no_traceback(node) -> None:
    for text in (node.output(), node.log()):
        assert "Traceback" not in text and "internal error" not in text, text[-4000:]
