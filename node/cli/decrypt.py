"""`guardian decrypt`: ask the guardians' nodes to decrypt a record, and follow the session."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from node.cli.args import add_config_option, positive_float
from node.crypto.errors import GuardianError, InputError
from node.record import layout
from node.cli.node import _control

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
    p.add_argument("--source", action="append", default=[], metavar="URL_OR_PATH",
                   help="where the guardians' nodes may read the published record first (repeatable): an http(s) URL "
                        "of it, or a directory they can see; every file is checked against the record's index, and "
                        "what a location cannot give comes from the peers")
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
    p.add_argument("--rehearsal", action="store_true",
                   help="decrypt although the ceremony's key custody is not certified (a rehearsal: warned, noted in "
                        "the record's rehearsal.json; only nodes with [decryption] allow_rehearsal = true take part)")
    add_config_option(p)
    return {"decrypt": run_decrypt}


def run_decrypt(args: argparse.Namespace) -> int:
    if (args.record is None) == (args.session is None):
        raise InputError("give either --record DIR (a new session) or --session HASH (follow one)")
    if args.source and args.record is None:
        raise InputError("--source goes with --record DIR (a new session)")
    if args.record is not None:
        sources = [s if "://" in s else str(Path(s).resolve()) for s in args.source]
        result = _control(args, {"cmd": "decrypt-request", "record": str(args.record.resolve()),
                                 "compensated": args.compensated, "ballots": args.ballot, "timeout": args.timeout,
                                 "rehearsal": args.rehearsal, "sources": sources})
        session = result["session"]
        if args.rehearsal:
            print("warning: REHEARSAL: the guardians' nodes decrypt without checking the ceremony certificate; "
                  "the record says so (rehearsal.json)", file=sys.stderr, flush=True)
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
    """Poll the node until the session ends (or stalls for want of guardians), or --wait runs out; the
    session's progress on stderr meanwhile, a line each time something changed."""
    started = time.monotonic()
    shown, last = 0, None
    while True:
        entry = next(d for d in _control(args, {"cmd": "decrypt-status", "session": session})
                     if d["session"] == session)
        for event in entry.get("events", []):
            if event["n"] > shown:
                print(progress_line(event, last), file=sys.stderr, flush=True)
                shown, last = event["n"], event
        if entry["status"] in FINAL or (stop_on_stall and entry.get("stalled")):
            return entry
        if args.wait is not None and time.monotonic() - started > args.wait:
            entry["gave_up_waiting"] = True
            return entry
        time.sleep(POLL_SECONDS)


def progress_line(e: dict, before: dict | None = None) -> str:
    """One progress event of the node's session (node/services/decryptions.py) as a line; who is ready and
    who has no link are said when they differ from the event `before`."""
    at, stage = f"decrypt [{e['seconds']:6.1f} s]", e["stage"]
    if stage == "fetching":
        return f"{at} fetching: this node gets its copy of the record"
    if stage == "checking":
        return f"{at} checking: the verifier on the copy, then this guardian's policy"
    if stage == "complete":
        return (f"{at} complete after {e['rounds']} round(s): decrypted by {_names(e['present'])}"
                + (f"; missing {_names(e['missing'])}" if e["missing"] else ""))
    if stage != "ready":
        return f"{at} {stage}: {e.get('reason', 'no reason given')}"
    if e["round"] == 0:
        where = "gathering for round 1"
    elif e["step"] == "failed":
        where = f"round {e['round']} failed"
    else:
        where = f"round {e['round']} step {e['step']}, present {_names(e['present'])}"
    first = before is None or before["stage"] != "ready"
    out = []
    if first or e["round"] == 0 or e["ready"] != before["ready"]:
        out.append(f"ready {_names(e['ready'])} ({e['quorum']} needed)")
    # before round 1 a guardian whose link dropped moments ago is awaited briefly; a round waits its step out
    dropped = [name for name in e["awaited"] if name in e["dropped"] and e["round"] == 0]
    working = [name for name in e["awaited"] if name not in dropped]
    if working:
        what = " (linked, still fetching or verifying)" if e["round"] == 0 else ""
        longest = max(e["awaited"][name] for name in working)
        out.append(f"awaiting {_names(working)}{what} for {longest:.1f} s (step timeout {e['step_timeout']:g} s)")
    for name in dropped:
        out.append(f"awaiting {name}, whose link dropped {e['dropped'][name]:.1f} s ago, for "
                   f"{e['relink_seconds']:g} s after the drop")
    if first or e["unlinked"] != before["unlinked"]:
        if e["unlinked"]:
            out.append(f"no link to {_names(e['unlinked'])}")
        elif not first:
            out.append("linked to every guardian")
    if e["excluded"]:
        out.append(f"excluded {_names(e['excluded'])}")
    if e["refused"]:
        out.append(f"refused by {_names(e['refused'])}")
    if e["stalled"]:
        out.append(f"stalled: cannot go on without one of {_names(e['absent'])}")
    return f"{at} {where}" + (": " + "; ".join(out) if out else "")


def _names(names) -> str:
    return ", ".join(names) or "nobody"


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
        if outcome.get("tally"):
            _print_tally(outcome["tally"])
        if outcome.get("challenged"):
            print(f"  challenged ballots opened: {', '.join(outcome['challenged'])}")
            _print_challenged(outcome["challenged"], [Path(w) for w in outcome.get("written", [])])
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


def _print_tally(tally: dict[str, dict[str, int]]) -> None:
    """The decrypted tally as a table of contest, option, count: each contest on a row of its own, then its
    options (so that every option's line is its label and its count)."""
    rows = [row for contest, options in tally.items()
            for row in [(contest, "", "")] + [("", option, str(count)) for option, count in options.items()]]
    head = ("contest", "option", "count")
    widths = [max(len(r[c]) for r in rows + [head]) for c in range(3)]
    for row in [head] + rows:
        print(f"  {row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}".rstrip())


def _print_challenged(ballots: list[str], written: list[Path]) -> None:
    """What each opened challenged ballot held, per contest, from its file in the record (challenged/)."""
    for ballot_id in ballots:
        opened, problem = None, "not in the record"
        for root in reversed(written):          # the record given to `guardian decrypt` first
            try:
                opened = json.loads((root / layout.challenged_file(ballot_id)).read_bytes())
                break
            except (OSError, ValueError, GuardianError) as e:
                problem = getattr(e, "strerror", None) or str(e)
        try:
            lines = []
            for contest in opened["contests"]:
                chosen = [o["label"] if o["selection"] == 1 else f"{o['label']} ({o['selection']})"
                          for o in contest["options"] if o["selection"]]
                lines.append(f"    {contest['label']}: {', '.join(chosen) or '(no selection)'}")
        except (KeyError, TypeError):
            print(f"  challenged ballot {ballot_id}: cannot read its decryption "
                  f"({problem if opened is None else 'not the shape of a decrypted ballot'})")
            continue
        print(f"  challenged ballot {ballot_id}:")
        print("\n".join(lines))
