"""`guardian restore`: a key backup becomes a node data directory again, ready to decrypt.

The new directory holds the same identity (sealed under a new node passphrase), the node.toml
and roster.toml of the backed-up node (listen address and passphrase source as given), the
ceremony as completed (its config, outcome and public export files) and the guardian's key
shares sealed with the storage key (derived from the identity, as on the original node).

Message numbers: peers remember every (sender, sequence number) they have seen, and a number
signed twice with different content is equivocation. The restored node has no outbox, so it
numbers its messages from a floor above anything the old node can have used (microseconds
since 1970 at the time of the restore).

Custody: the restored database holds no custody steps, not even this guardian's own (a peer never sends
a node its own messages again). The node's custody sync brings them back when its links come up: each
peer hands over the signed steps and certificate signatures it keeps (node/services/custody.py), and
once they are all in, the node writes the certificate beside its export again.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from pathlib import Path

import nacl.signing

from node.config import check_address, default_advertise, load_node_config, load_roster, parse_listen
from node.custody.backup_file import BackupMeta
from node.custody.certificate import CustodyError
from node.services.custody import check_state_restores, parse_payload
from node.crypto.errors import InputError
from node.identity import Identity
from node.protocol.election_config import parse_election_config
from node.record import layout
from node.storage.db import NodeDatabase
from node.storage.state_box import StateBox

SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*")


def _set(text: str, section: str, key: str, value: str) -> str:
    """Set `key = "value"` in a TOML section of the node.toml text (added if absent), keeping the comments."""
    pattern = re.compile(rf"(?ms)^(\[{re.escape(section)}\]\n)(.*?)(?=^\[|\Z)")
    match = pattern.search(text)
    line = f'{key} = "{value}"'
    if match is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{line}\n"
    body = match.group(2)
    if re.search(rf"(?m)^{re.escape(key)}\s*=", body):
        body = re.sub(rf"(?m)^{re.escape(key)}\s*=.*$", line, body)
    else:
        body = line + "\n" + body
    return text[:match.start(2)] + body + text[match.end(2):]


def restore(payload: bytes, meta: BackupMeta, fingerprint: str, directory: Path, passphrase: str,
            listen: str | None, advertise: str | None, passphrase_source: str) -> dict:
    doc = parse_payload(payload)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(f"{directory} exists and is not an empty directory: refusing to overwrite a node")
    try:
        seed = bytes.fromhex(doc["identity_seed"])
        identity = Identity(nacl.signing.SigningKey(seed))
        ceremony = doc["ceremony"]
        session = bytes.fromhex(ceremony["session"])
        config_bytes = base64.b64decode(ceremony["config"], validate=True)
        export = {rel: base64.b64decode(data, validate=True) for rel, data in ceremony["export"].items()}
        node_toml, roster_toml = doc["node"]["node_toml"], doc["node"]["roster_toml"]
    except (KeyError, TypeError, ValueError) as e:
        raise CustodyError(f"the backup's contents are incomplete ({type(e).__name__})") from None
    if identity.public_key.hex() != meta.public_key or session.hex() != meta.session:
        raise CustodyError("the backup's contents do not match its label (identity or ceremony)")
    config = parse_election_config(config_bytes)
    if config.session != session:
        raise CustodyError("the backup's election config is not the ceremony it names")
    me = config.guardian_by_key(identity.public_key)
    if me is None:
        raise CustodyError("the backup's identity is not a guardian of its ceremony")
    if any(not SAFE.fullmatch(rel) for rel in export):
        raise CustodyError("the backup's export names an unsafe path")
    check_state_restores(config, me.sequence, ceremony["state"], public_files=export)

    # The node directory, as `guardian init` makes it, with the backed-up settings.
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    identity.save(directory, passphrase)
    if listen:
        host, port = parse_listen(listen, "--listen")
        node_toml = _set(node_toml, "node", "listen", listen)
        node_toml = _set(node_toml, "node", "advertise", check_address(advertise or default_advertise(host, port),
                                                                       "--advertise"))
    elif advertise:
        node_toml = _set(node_toml, "node", "advertise", check_address(advertise, "--advertise"))
    node_toml = _set(node_toml, "node", "data_dir", ".")
    node_toml = _set(node_toml, "roster", "file", "roster.toml")
    node_toml = _set(node_toml, "passphrase", "source", passphrase_source)
    (directory / "node.toml").write_text(node_toml)
    (directory / "roster.toml").write_text(roster_toml)
    node_config = load_node_config(directory / "node.toml")
    roster = load_roster(node_config.roster_file)
    if roster.by_key(identity.public_key) is None:
        raise CustodyError("the backed-up roster does not list this guardian's identity")

    ceremony_dir = directory / "ceremonies" / session.hex()
    for rel, data in export.items():
        path = ceremony_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        layout.atomic_write(path, data)
    outcome = dict(ceremony.get("outcome") or {})
    outcome["export"] = str(ceremony_dir.resolve())
    db = NodeDatabase(directory)
    try:
        db.add_ceremony(session, config_bytes, str(ceremony.get("proposer", "?")), "complete", outcome)
        sealed = StateBox(seed).seal(ceremony["state"])
        db.append_outbox_with_state([], session, bytes(sealed))
        db.set_seq_floor(int(time.time() * 1_000_000))
        db.audit("restored from backup", {"fingerprint": fingerprint, "ceremony": session.hex(),
                                          "guardian": me.name})
    finally:
        db.close()
    return {"name": me.name, "sequence": me.sequence, "fingerprint": identity.fingerprint,
            "ceremony": session.hex(), "listen": f"{node_config.listen_host}:{node_config.listen_port}"}
