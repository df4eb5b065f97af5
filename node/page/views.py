"""What each page shows, gathered through the node's control commands (what `guardian status`,
`guardian ceremony status`, `guardian decrypt status` ... print), plus what is expected of this guardian now.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from node.crypto.errors import GuardianError
from node.custody.audit_chain import verify_data_dir
from node.custody.certificate import STEPS, certificate_text
from node.identity import fingerprint

Control = Callable[[dict], Any]
CUSTODY_COLUMNS = ("generated",) + STEPS
AUDIT_SHOWN = 200                  # the newest entries; the check covers all of them


def spoken(hex_hash: str) -> str:
    """A hash in groups of four, to read aloud and compare."""
    return " ".join(hex_hash[i:i + 4] for i in range(0, len(hex_hash), 4))


def gather(control: Control) -> dict:
    """Everything every page may show: the node, its ceremonies, custody, decryptions, what is expected now."""
    status = control({"cmd": "status"})
    ceremonies = ceremony_list(control)
    custody = custody_view(control)
    decryptions = control({"cmd": "decrypt-status"})
    return {"status": status, "me": status["name"], "ceremonies": ceremonies, "custody": custody,
            "mine": my_steps(custody, status["name"]) if custody else {}, "decryptions": decryptions,
            "expected": expected(status["name"], ceremonies, custody, decryptions),
            "stage": stage(status["name"], ceremonies, custody)}


def ceremony_list(control: Control) -> list[dict]:
    """Every ceremony, newest first; a proposal with its config and each guardian's fingerprint to compare."""
    out = []
    for entry in reversed(control({"cmd": "ceremony-status"})):
        shown = control({"cmd": "ceremony-show", "session": entry["session"]})
        config = shown["config"]
        guardians = [{"sequence": g["sequence"], "name": g["name"],
                      "fingerprint": fingerprint(base64.b64decode(g["public_key"]))} for g in config["guardians"]]
        entry = {**entry, "config": config, "guardians": guardians, "spoken": spoken(entry["session"]),
                 "config_json": json.dumps(config, indent=1, sort_keys=True)}
        out.append(entry)
    return out


def custody_view(control: Control) -> dict | None:
    """The custody of the latest completed ceremony (None when none completed), with its certificate if any."""
    try:
        custody = control({"cmd": "custody-status"})
    except GuardianError:
        return None
    certificate = control({"cmd": "certificate", "ceremony": custody["ceremony"]}) if custody["certificate"] else None
    return {**custody, "spoken": spoken(custody["ceremony"]), "columns": CUSTODY_COLUMNS,
            "certificate_doc": certificate,
            "certificate_text": certificate_text(certificate) if certificate else None}


def my_steps(custody: dict, me: str) -> dict:
    return custody["steps"].get(me, {})


def audit_view(data_dir: Path, entries: list[tuple]) -> dict:
    """The newest entries of the audit trail and the check of all of it (`guardian audit verify`)."""
    shown = [{"id": e[0], "at": e[1], "event": e[2], "detail": e[3], "hash": bytes(e[5]).hex()[:16]}
             for e in entries[-AUDIT_SHOWN:]]
    return {"entries": list(reversed(shown)), "count": len(entries), "check": verify_data_dir(data_dir)}


def expected(me: str, ceremonies: list[dict], custody: dict | None, decryptions: list[dict]) -> list[dict]:
    """What this guardian should do now, most urgent first: each a line and the page where to do it."""
    todo = []
    for c in ceremonies:
        if c["status"] == "proposed" and me not in c["votes"]:
            todo.append({"text": f"A key ceremony for {c['config']['election']!r} awaits your vote: read the proposal "
                                 f"and accept or reject it.", "href": "/ceremony", "urgent": True})
        elif c["status"] == "running":
            todo.append({"text": f"The key ceremony for {c['config']['election']!r} is running (phase {c.get('phase')}): "
                                 f"keep this node running.", "href": "/ceremony", "urgent": False})
    if custody is not None and custody["status"] == "complete":
        done = my_steps(custody, me)
        step = next((s for s in STEPS if s not in done), None)
        if step is not None:
            text = {"downloaded": "Download your encrypted key backup.",
                    "backed-up": "Make at least two separate copies of your key backup, then confirm them.",
                    "verified": "Verify one copy of your key backup by dropping it on the page."}[step]
            todo.append({"text": text, "href": "/custody", "urgent": True})
        elif not custody["complete"]:
            waiting = [name for name, row in custody["table"].items() if not row["verified"]]
            todo.append({"text": f"Your backup is verified. Waiting for {', '.join(waiting)} to verify theirs.",
                         "href": "/custody", "urgent": False})
        elif custody["certificate"]:
            todo.append({"text": "Key custody is complete: every guardian verified a backup. Download the "
                                 "certificate.", "href": "/custody", "urgent": False})
    for d in decryptions:
        if d["status"] in ("fetching", "checking", "ready"):
            todo.append({"text": f"A decryption requested by {d['requester']} is under way ({d['status']}): keep this "
                                 f"node running.", "href": "/decryption", "urgent": False})
    return todo


def stage(me: str, ceremonies: list[dict], custody: dict | None) -> str:
    """A digest of what changes the forms a page offers: when it changes, the page's script reloads it.
    The rest (phases, every guardian's marks, the certificate, decryptions) is swapped in part by part."""
    state = [[(c["session"], c["status"], sorted(c["votes"])) for c in ceremonies],
             custody and (custody["ceremony"], custody["status"], sorted(my_steps(custody, me)))]
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()[:16]
