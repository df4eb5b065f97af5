"""`guardian init`, `guardian roster entry|show`, `guardian run`, `guardian status`."""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
from pathlib import Path

from node.config import (
    NODE_TOML, check_address, check_name, default_advertise, load_node_config, load_roster, parse_listen,
    roster_entry_toml,
)
from node.crypto.errors import InputError
from node.identity import Identity, encode_public_key, fingerprint, load_public_key
from node.cli.passphrase import add_passphrase_options, read_passphrase, source_from_args

DEFAULT_CONFIG = os.environ.get("GUARDIAN_CONFIG", "node.toml")


def register(sub) -> dict:
    init = sub.add_parser("init", help="make a new node: identity key, node.toml, data directory",
                          description="Create a node data directory with a new Ed25519 identity sealed under a "
                                      "passphrase (Argon2id + XSalsa20-Poly1305) and a commented node.toml.")
    init.add_argument("dir", type=Path, help="the new data directory (must not exist, or be empty)")
    init.add_argument("--name", required=True, help="the guardian's name as it will appear in the roster")
    init.add_argument("--listen", required=True, help="HOST:PORT to listen on for peers")
    init.add_argument("--advertise", help="the ws:// or wss:// address peers dial (default: ws://LISTEN)")
    add_passphrase_options(init)

    roster = sub.add_parser("roster", help="this node's roster entry; the roster with fingerprints")
    roster_sub = roster.add_subparsers(dest="action", metavar="ACTION")
    entry = roster_sub.add_parser("entry", help="print this node's roster entry and fingerprint")
    entry.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    entry.add_argument("--sequence", type=int, default=None, help="fill in the sequence number, if known")
    show = roster_sub.add_parser("show", help="print the roster with every guardian's fingerprint")
    show.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))

    run = sub.add_parser("run", help="run the node daemon (Ctrl-C or SIGTERM stops it)")
    run.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_passphrase_options(run)

    status = sub.add_parser("status", help="ask the running node for its peers and sessions")
    status.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    status.add_argument("--json", action="store_true", help="machine-readable output")

    ceremony = sub.add_parser("ceremony", help="the key ceremony: propose, show, accept, reject, status")
    actions = ceremony.add_subparsers(dest="action", metavar="ACTION")
    propose = actions.add_parser("propose", help="propose an election config to every guardian")
    propose.add_argument("--election", type=Path, required=True,
                         help="election file (TOML): election, manifest, quorum, phase_timeout_seconds")
    propose.add_argument("--replaces", metavar="HASH", default=None,
                         help="rotate keys: a new ceremony for the same election whose keys supersede those of "
                              "this completed ceremony (before voting; e.g. when a key may be compromised)")
    show_c = actions.add_parser("show", help="print a proposed election config and its hash")
    accept = actions.add_parser("accept", help="sign the proposal's hash: this guardian agrees")
    reject = actions.add_parser("reject", help="refuse the proposal, saying why")
    reject.add_argument("--why", required=True, help="the reason, shown to every guardian")
    status_c = actions.add_parser("status", help="phase, who has done what, who is awaited and for how long")
    status_c.add_argument("--json", action="store_true")
    for p in (propose, show_c, accept, reject, status_c):
        p.add_argument("--config", type=Path, default=Path(DEFAULT_CONFIG))
    for p in (show_c, accept, reject):
        p.add_argument("session", nargs="?", default=None, help="the ceremony's hash or a prefix of it")
    return {"init": init_node, "roster": {"entry": roster_entry, "show": roster_show}, "run": run_node,
            "status": node_status,
            "ceremony": {"propose": ceremony_propose, "show": ceremony_show, "accept": ceremony_accept,
                         "reject": ceremony_reject, "status": ceremony_status}}


def init_node(args: argparse.Namespace) -> int:
    name = check_name(args.name, "--name")
    host, port = parse_listen(args.listen, "--listen")
    advertise = check_address(args.advertise or default_advertise(host, port), "--advertise")
    directory: Path = args.dir
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InputError(f"{directory} exists and is not an empty directory: refusing to overwrite a node")
    source = source_from_args(args)
    passphrase = read_passphrase(source, confirm=True)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    identity = Identity.generate()
    identity.save(directory, passphrase)
    text = NODE_TOML.format(name=name, listen=args.listen, advertise=advertise)
    if source != "prompt":
        text = text.replace('source = "prompt"', f'source = "{source}"')
    (directory / "node.toml").write_text(text)
    print(f"Created node {name!r} in {directory}")
    print(f"  identity   {encode_public_key(identity.public_key)}")
    print(f"  fingerprint {identity.fingerprint}")
    print("Next: `guardian roster entry --config DIR/node.toml`, exchange entries with the other guardians,")
    print("      put them all in DIR/roster.toml, then `guardian run --config DIR/node.toml`.")
    return 0


def roster_entry(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    key = load_public_key(config.data_dir)
    print(f"# roster entry of {config.name}: send it to the other guardians; read the fingerprint aloud")
    print(roster_entry_toml(args.sequence, config.name, encode_public_key(key), config.advertise,
                            fingerprint(key)), end="")
    print(f"\nFingerprint: {fingerprint(key)}")
    return 0


def roster_show(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    roster = load_roster(config.roster_file)
    own = load_public_key(config.data_dir)
    for e in roster.entries:
        mark = "  (this node)" if e.public_key == own else ""
        print(f"{e.sequence:>3}  {e.name:<20} {e.fingerprint}  {e.address}{mark}")
    if roster.by_key(own) is None:
        raise InputError(f"this node's key {fingerprint(own)} is not in {config.roster_file}")
    return 0


def run_node(args: argparse.Namespace) -> int:
    import trio

    from node.app import build
    from node.storage.db import NodeDatabase

    config = load_node_config(args.config)
    roster = load_roster(config.roster_file)
    identity = Identity.load(config.data_dir, read_passphrase(source_from_args(args, config.passphrase_source)))
    _setup_logging(config.data_dir / "node.log", args.log_level)
    db = NodeDatabase(config.data_dir)
    try:
        trio.run(build(config, roster, identity, db).run)
    finally:
        db.close()
    return 0


def node_status(args: argparse.Namespace) -> int:
    import trio

    from node.daemon.control import control_request

    config = load_node_config(args.config)
    status = trio.run(control_request, config.control_socket, {"cmd": "status"})
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"node {status['name']} (guardian {status['sequence']} of {status['guardians']})  "
          f"fingerprint {status['fingerprint']}")
    print(f"listening on {status['listen']}, up {status['uptime_seconds']} s; "
          f"inbox {status['inbox']}, outbox {status['outbox']}")
    print("peers:")
    for p in status["peers"]:
        seen = "never" if p["last_seen_seconds_ago"] is None else f"{p['last_seen_seconds_ago']} s ago"
        refusals = ", ".join(f"{r} {n}" for r, n in p["refusals"].items()) or "none"
        print(f"  {p['sequence']:>3} {p['name']:<16} {p['state']:<13} last seen {seen:<12} refusals: {refusals}")
    for who, reasons in status["other_refusals"].items():
        print(f"  refused {who}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    print("sessions: " + ", ".join(f"{s['kind']} {s['id'][:16]}" for s in status["sessions"]))
    return 0


def _setup_logging(path: Path, level: str) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("guardian")
    root.setLevel(level)
    for handler in (logging.FileHandler(path), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(formatter)
        root.addHandler(handler)


def _control(args, request: dict, timeout: float = 10.0):
    import trio

    from node.daemon.control import control_request

    return trio.run(control_request, load_node_config(args.config).control_socket, request, timeout)


def load_election_file(path: Path) -> dict:
    """The operator's election file: the election's name, the manifest file, the quorum, the phase timeout."""
    import tomllib

    try:
        doc = tomllib.loads(path.read_text())
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{path}: not valid TOML: {e}") from None
    unknown = set(doc) - {"election", "manifest", "quorum", "phase_timeout_seconds"}
    if unknown or "manifest" not in doc or "quorum" not in doc:
        raise InputError(f"{path}: needs manifest and quorum (and optionally election, phase_timeout_seconds); "
                         f"unknown keys {sorted(unknown)}")
    manifest = (path.parent / doc["manifest"])
    try:
        doc["manifest"] = json.loads(manifest.read_bytes())
    except OSError as e:
        raise InputError(f"cannot read the manifest {manifest}: {e.strerror}") from None
    except ValueError:
        raise InputError(f"the manifest {manifest} is not JSON") from None
    return doc


def ceremony_propose(args: argparse.Namespace) -> int:
    election = load_election_file(args.election)
    if args.replaces:
        election["replaces"] = args.replaces
    result = _control(args, {"cmd": "ceremony-propose", "election": election})
    print(f"proposed ceremony {result['session']}" + (f", replacing {args.replaces}" if args.replaces else ""))
    print("every guardian now runs `guardian ceremony show` and `guardian ceremony accept` (or reject --why)")
    return 0


def ceremony_show(args: argparse.Namespace) -> int:
    result = _control(args, {"cmd": "ceremony-show", "session": args.session})
    config = result["config"]
    print(f"ceremony {result['session']}  ({result['status']}, proposed by {result['proposer']})")
    print(f"  election  {config['election']}")
    print(f"  guardians n={config['n']}, quorum k={config['k']}; phase timeout {config['phase_timeout_seconds']} s")
    for g in config["guardians"]:
        print(f"    {g['sequence']:>3} {g['name']:<20} {fingerprint(base64.b64decode(g['public_key']))}")
    contests = config["manifest"]["contests"]
    print(f"  manifest  {config['manifest']['label']!r}: {len(contests)} contests, "
          f"{sum(len(c['options']) for c in contests)} options")
    for name, (vote, why) in result["votes"].items():
        print(f"  {name}: {vote}" + (f" ({why})" if why else ""))
    print(f"To agree: guardian ceremony accept {result['session'][:16]}")
    return 0


def ceremony_accept(args: argparse.Namespace) -> int:
    _control(args, {"cmd": "ceremony-accept", "session": args.session})
    print("accepted; the ceremony starts when every guardian has accepted")
    return 0


def ceremony_reject(args: argparse.Namespace) -> int:
    _control(args, {"cmd": "ceremony-reject", "session": args.session, "why": args.why})
    print("rejected")
    return 0


def ceremony_status(args: argparse.Namespace) -> int:
    result = _control(args, {"cmd": "ceremony-status"})
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if not result:
        print("no ceremonies")
    for c in result:
        print(f"ceremony {c['session'][:16]}  {c['status']}" + (f", phase {c['phase']} for {c['phase_seconds']} s"
                                                                 if "phase" in c else ""))
        if c.get("waiting_for"):
            print(f"  waiting for: {', '.join(c['waiting_for'])}")
        for name, steps in c.get("done", {}).items():
            print(f"  {name:<20} {' '.join(steps) or '-'}")
        if c["outcome"]:
            print(f"  outcome: {json.dumps(c['outcome'])}")
        if "custody" in c:
            _print_custody(c)
    return 0


def _print_custody(c: dict) -> None:
    """The seed 000 table: every guardian and its key steps; the election proceeds only when all verified."""
    steps = ("generated", "downloaded", "backed-up", "verified")
    print(f"  key custody      {'  '.join(f'{s:<10}' for s in steps)}")
    for name, done in c["custody"].items():
        marks = "  ".join(f"{'yes' if done[s] else '-':<10}" for s in steps)
        print(f"    {name:<14} {marks}")
    if c["status"] == "superseded":
        print("  these keys are SUPERSEDED: " + c["outcome"].get("superseded_by", ""))
    elif c.get("custody_complete"):
        print("  custody complete: every guardian verified its backup; the election may proceed"
              + ("; certificate signed by all (guardian certificate)" if c.get("certificate") else
                 "; the certificate is being signed"))
    else:
        print("  custody NOT complete: the election must not proceed until every guardian has exported, "
              "backed up and verified its key (guardian backup export | confirm | verify)")
