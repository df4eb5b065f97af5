"""`guardian decrypt`: ask the guardians' nodes to decrypt a record, and follow the session."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from node.cli.args import positive_float
from node.crypto.errors import InputError
from node.cli.node import DEFAULT_CONFIG, _control

POLL_SECONDS = 0.5
FINAL = ("complete", "failed", "refused", "invalid")


def register(sub) -> dict:
    p = sub.add_parser(
        "decrypt", help="decrypt a record's tally and challenged ballots with the guardians' nodes",
        description="Opens a decryption session on this node for the tally and every challenged ballot of the "
                    "record (or only --ballot ones). Every guardian's node fetches the record, verifies it, and "
                    "decrypts only what its policy allows; any k of the n guardians are enough. The result goes "
                    "into the record. Exits 0 when the record holds the verified decryption, 1 otherwise.")
    p.add_argument("--record", type=Path, help="the record directory (after `guardian tally`)")
    p.add_argument("--session", help="follow an existing session instead (its hash or a prefix)")
    p.add_argument("--compensated", action="store_true",
                   help="the present guardians also reconstruct each missing guardian's partial decryption")
    p.add_argument("--ballot", action="append", default=[], metavar="ID",
                   help="decrypt only this challenged ballot (repeatable); the tally is then not decrypted")
    p.add_argument("--timeout", type=positive_float, default=None,
                   help="seconds each step may take before the silent guardians are named missing "
                        "(default: the node's [decryption] timeout_seconds)")
    p.add_argument("--wait", type=positive_float, default=None,
                   help="give up following after this many seconds (default: until the session ends; a new "
                        "request also stops when it stalls for want of guardians)")
    p.add_argument("--json", action="store_true", help="print the session status as JSON")
    p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    return {"decrypt": run_decrypt}


def run_decrypt(args: argparse.Namespace) -> int:
    if (args.record is None) == (args.session is None):
        raise InputError("give either --record DIR (a new session) or --session HASH (follow one)")
    if args.record is not None:
        result = _control(args, {"cmd": "decrypt-request", "record": str(args.record.resolve()),
                                 "compensated": args.compensated, "ballots": args.ballot, "timeout": args.timeout})
        session = result["session"]
        if not args.json:
            print(f"decryption session {session[:16]} opened; the guardians' nodes fetch and verify the record")
    else:
        session = _find(args, args.session)
    # A new request reports a stall at once; following a session waits through one (guardians are returning).
    entry = _follow(args, session, stop_on_stall=args.record is not None)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        _print(entry)
    return 0 if entry["status"] == "complete" else 1


def _find(args, prefix: str) -> str:
    sessions = [d["session"] for d in _control(args, {"cmd": "decrypt-status"})
                if d["session"].startswith(prefix.lower())]
    if len(sessions) != 1:
        raise InputError(f"{len(sessions)} decryption sessions match {prefix!r}; give more of the hash")
    return sessions[0]


def _follow(args, session: str, stop_on_stall: bool) -> dict:
    """Poll the node until the session ends (or stalls for want of guardians), or --wait runs out."""
    started = time.monotonic()
    while True:
        entry = next(d for d in _control(args, {"cmd": "decrypt-status"}) if d["session"] == session)
        if entry["status"] in FINAL or (stop_on_stall and entry.get("stalled")):
            return entry
        if args.wait is not None and time.monotonic() - started > args.wait:
            entry["gave_up_waiting"] = True
            return entry
        time.sleep(POLL_SECONDS)


def _print(entry: dict) -> None:
    session, status, outcome = entry["session"], entry["status"], entry.get("outcome") or {}
    if status == "complete":
        print(f"decrypted ({outcome.get('form')} form) by {', '.join(outcome.get('present', []))}"
              + (f"; missing: {', '.join(outcome['missing'])}" if outcome.get("missing") else "")
              + f"; {outcome.get('rounds')} round(s)")
        for name, why in (outcome.get("excluded") or {}).items():
            print(f"  excluded {name}: {why}")
        for name, why in (outcome.get("refused") or {}).items():
            print(f"  refused by {name}: {why}")
        for contest, options in (outcome.get("tally") or {}).items():
            print(f"  {contest}")
            for option, value in options.items():
                print(f"    {option:<40}{value:>8}")
        if outcome.get("challenged"):
            print(f"  challenged ballots opened: {', '.join(outcome['challenged'])}")
        for where in outcome.get("written", []):
            print(f"written to {where}; check it with: guardian verify {where}")
        return
    if entry.get("stalled"):
        print(f"decryption {session[:16]} cannot go on: {len(entry.get('available', []))} of the "
              f"{entry.get('quorum')} guardians needed are available ({', '.join(entry.get('available', [])) or 'none'});"
              f" missing: {', '.join(entry.get('absent', [])) or 'none'}")
        for name, why in (entry.get("refused") or {}).items():
            print(f"  refused by {name}: {why}")
        for name, why in (entry.get("excluded") or {}).items():
            print(f"  excluded {name}: {why}")
        print(f"The session stays open and resumes by itself when enough guardians return; follow it with: "
              f"guardian decrypt --session {session[:16]}")
        return
    if entry.get("gave_up_waiting"):
        print(f"decryption {session[:16]} still {status} "
              f"(round {entry.get('round', 0)}, step {entry.get('step', '-')}, waiting for "
              f"{', '.join(entry.get('waiting_for', [])) or 'nobody'}); follow it with: "
              f"guardian decrypt --session {session[:16]}")
        return
    print(f"decryption {session[:16]} {status}: {outcome.get('reason', 'no reason given')}")
