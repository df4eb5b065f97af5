"""`guardian init`, `guardian roster entry|show`, `guardian run`, `guardian status`, `guardian page`."""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import logging
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from node.cli.args import add_config_option, default_config, positive_float
from node.config import (
    NODE_TOML, NodeConfig, check_address, check_name, default_advertise, load_node_config, load_roster,
    parse_listen, roster_entry_toml,
)
from node.crypto.errors import GuardianError, InputError
from node.identity import Identity, encode_public_key, fingerprint, load_public_key
from node.cli.passphrase import add_passphrase_options, read_passphrase, source_from_args

DEFAULT_CONFIG = str(default_config())
PID_FILE = "node.pid"          # in the data directory: the pid of the running node, locked while it runs
WATCH_SECONDS = 2.0


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
    entry = roster_sub.add_parser(
        "entry", help="print this node's roster entry (TOML, with its fingerprint)",
        description="Prints this node's [[guardian]] entry as TOML, its fingerprint as a comment and as a key "
                    "the roster checks. Each guardian sends theirs to the others and reads the fingerprint aloud; "
                    "the entries, each with its own --sequence 1..n, concatenated make roster.toml: "
                    "`cat alice.toml bob.toml carol.toml > roster.toml`.")
    add_config_option(entry)
    entry.add_argument("--sequence", type=int, default=None,
                       help="this guardian's number in the roster, 1..n (agreed by the guardians)")
    show = roster_sub.add_parser("show", help="print the roster with every guardian's fingerprint")
    add_config_option(show)

    run = sub.add_parser("run", help="run the node daemon (Ctrl-C or SIGTERM stops it)")
    add_config_option(run)
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                     help="what goes to node.log and stderr (default INFO)")
    add_passphrase_options(run)

    status = sub.add_parser("status", help="ask the running node for its peers and sessions")
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    _add_watch_option(status)

    page = sub.add_parser("page", help="a one-time login link to the guardian's page on the running node",
                          description="Prints a link that logs this machine's browser into the guardian's page "
                                      "served by the running node ([page] in node.toml). The link works once.")
    add_config_option(page)
    page.add_argument("--open", action="store_true", help="open the link in the default browser")

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
    status_c.add_argument("--json", action="store_true", help="machine-readable output")
    _add_watch_option(status_c)
    for p in (propose, show_c, accept, reject, status_c):
        add_config_option(p)
    for p in (show_c, accept, reject):
        p.add_argument("session", nargs="?", default=None, help="the ceremony's hash or a prefix of it")
    return {"init": init_node, "roster": {"entry": roster_entry, "show": roster_show}, "run": run_node,
            "status": node_status, "page": node_page,
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
    config, roster_file = shlex.quote(str(directory / "node.toml")), shlex.quote(str(directory / "roster.toml"))
    print(f"Created node {name!r} in {directory}")
    print(f"  identity    {encode_public_key(identity.public_key)}")
    print(f"  fingerprint {identity.fingerprint}")
    print(f"Next: `guardian roster entry --config {config} --sequence N`, exchange entries with the other")
    print(f"      guardians, concatenate them all into {roster_file}, then `guardian run --config {config}`.")
    return 0


def roster_entry(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    key = load_public_key(config.data_dir)
    if args.sequence is not None and args.sequence < 1:
        raise InputError(f"--sequence: guardians are numbered from 1, got {args.sequence}")
    # Valid TOML as printed: the entries of all guardians, concatenated, are the roster file.
    print(f"# roster entry of {config.name}: send it to the other guardians; read the fingerprint aloud")
    print(f"# Fingerprint: {fingerprint(key)}")
    print(roster_entry_toml(args.sequence, config.name, encode_public_key(key), config.advertise,
                            fingerprint(key)), end="")
    return 0


def roster_show(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    roster = load_roster(config.roster_file)
    own = load_public_key(config.data_dir)
    width = max(len(e.name) for e in roster.entries)
    print(f"roster {config.roster_file}: {_count(len(roster), 'guardian')}")
    print(f"{'#':>3}  {'name':<{width}}  {'fingerprint':<{len(roster.entries[0].fingerprint)}}  address")
    for e in roster.entries:
        mark = "  (this node)" if e.public_key == own else ""
        print(f"{e.sequence:>3}  {e.name:<{width}}  {e.fingerprint}  {e.address}{mark}")
    if roster.by_key(own) is None:
        raise InputError(f"this node's key {fingerprint(own)} is not in {config.roster_file}")
    return 0


def run_node(args: argparse.Namespace) -> int:
    import trio

    from node.app import build
    from node.storage.db import NodeDatabase

    config = load_node_config(args.config)
    roster = load_roster(config.roster_file)
    lock = _lock_node(config)          # before the passphrase prompt: a second run stops at once
    try:
        identity = Identity.load(config.data_dir,
                                 read_passphrase(source_from_args(args, config.passphrase_source)))
        _setup_logging(config.data_dir / "node.log", args.log_level)
        db = NodeDatabase(config.data_dir)
        try:
            trio.run(build(config, roster, identity, db).run)
        except BaseExceptionGroup as group:
            # The nursery wraps a refusal to start (an address in use, a bad certificate): say it in one line.
            error = _guardian_error(group)
            if error is None:
                raise
            raise error from None
        finally:
            db.close()
    finally:
        lock.close()
    return 0


def _lock_node(config: NodeConfig):
    """DATA_DIR/node.pid, locked (flock) for as long as this process runs the node; held open by the caller.

    The lock goes with the process, however it ends, so a stale file never blocks a start.
    """
    import fcntl

    path = config.data_dir / PID_FILE
    try:
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    except OSError as e:
        raise InputError(f"cannot open {path}: {e.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise InputError(f"node {config.name!r} is already running (pid {pid}) on {_listen(config)} with the "
                         f"data directory {config.data_dir}: stop that one first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _listen(config: NodeConfig) -> str:
    host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
    return f"{host}:{config.listen_port}"


def _guardian_error(error: BaseException) -> GuardianError | None:
    """The first GuardianError among the leaves of an exception group."""
    if isinstance(error, GuardianError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _guardian_error(inner)
            if found is not None:
                return found
    return None


# --- status, once or --watch ------------------------------------------------------------------------------


def _add_watch_option(parser) -> None:
    parser.add_argument("--watch", nargs="?", type=positive_float, const=WATCH_SECONDS, default=None,
                        metavar="SECONDS",
                        help=f"redraw every SECONDS (default {WATCH_SECONDS:g}) until Ctrl-C")


def _repeat(args: argparse.Namespace, show: Callable[[], None]) -> int:
    """show() once, or with --watch every SECONDS until Ctrl-C (exit 0); a node that does not answer is
    shown as such, and the watch goes on (the node may be restarting)."""
    if args.watch is None:
        show()
        return 0
    stop: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
    clear = sys.stdout.isatty()
    try:
        frames = 0
        while not stop:
            frame = io.StringIO()
            with contextlib.redirect_stdout(frame):
                if not args.json:        # with --json, each frame is one JSON document and nothing else
                    print(f"{time.strftime('%H:%M:%S')}  every {args.watch:g} s; Ctrl-C to stop")
                try:
                    show()
                except GuardianError as e:
                    print(f"error: {e}")
            # The whole frame at once: a terminal is cleared and redrawn, a pipe gets frames one after another.
            sys.stdout.write(("\x1b[H\x1b[2J" if clear else "\n" if frames else "") + frame.getvalue())
            sys.stdout.flush()
            frames += 1
            deadline = time.monotonic() + args.watch
            while not stop and time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        signal.signal(signal.SIGINT, previous)
    return 0


def node_status(args: argparse.Namespace) -> int:
    return _repeat(args, lambda: _show(args, "status", _show_status))


def node_page(args: argparse.Namespace) -> int:
    config = load_node_config(args.config)
    if not config.page_enabled:
        raise InputError(f"{config.path} [page]: enabled = false; set it to true and restart the node")
    url = _control(args, {"cmd": "page-login"})["url"]
    print(url)
    print("This link logs you in once, from this machine; `guardian page` again gives a new one.", file=sys.stderr)
    if args.open:
        import webbrowser

        if not webbrowser.open(url):
            raise InputError("no browser could be started here: open the link above by hand")
    return 0


def _show(args: argparse.Namespace, command: str, as_text) -> None:
    """One frame of a status command: the node's answer as JSON, or as text for a person."""
    result = _control(args, {"cmd": command})
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        as_text(args, result)


def _show_status(args: argparse.Namespace, status: dict) -> None:
    print(f"node {status['name']}, guardian {status['sequence']} of {status['guardians']}, "
          f"fingerprint {status['fingerprint']}")
    print(f"listening on {status['listen']}; up {_duration(status['uptime_seconds'])}; "
          f"inbox {_count(status['inbox'], 'message')}, outbox {_count(status['outbox'], 'message')}")
    for name, where in status["serving"].items():
        print(f"{name} at {where}" + ("  (log in with `guardian page`)" if name == "page" else ""))
    print()
    peers = status["peers"]
    width = max([len(p["name"]) for p in peers] + [4])
    print(f"  {'#':>2}  {'peer':<{width}}  {'state':<12}  {'last seen':<14}  {'links':>5}  refused frames")
    for p in peers:
        seen = "never" if p["last_seen_seconds_ago"] is None else f"{_duration(p['last_seen_seconds_ago'])} ago"
        refusals = ", ".join(f"{r} {n}" for r, n in p["refusals"].items()) or "none"
        print(f"  {p['sequence']:>2}  {p['name']:<{width}}  {p['state']:<12}  {seen:<14}  {p['connections']:>5}  "
              f"{refusals}")
    if not peers:
        print("  (no peers: this node is the only guardian of its roster)")
    if status["other_refusals"]:
        print("refused, from outside the roster:")
        for who, reasons in status["other_refusals"].items():
            print(f"  {who}: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    print()
    _print_sessions(args, [s for s in status["sessions"] if s["kind"] != "node"])


def _print_sessions(args: argparse.Namespace, sessions: list[dict]) -> None:
    """The ceremonies and decryptions the node follows, with each one's election and state."""
    if not sessions:
        print("sessions: none (no ceremony or decryption under way)")
        return
    ceremonies = _by_session(args, "ceremony-status") if any(s["kind"] == "ceremony" for s in sessions) else {}
    decryptions = _by_session(args, "decrypt-status") if any(s["kind"] == "decryption" for s in sessions) else {}
    rows = []
    for s in sessions:
        election, state = "-", s["phase"] or "-"
        if s["id"] in ceremonies:
            c = ceremonies[s["id"]]
            election = c.get("election", "-")
            state = c["status"] + (f", phase {c['phase']}" if c["status"] == "running" and c.get("phase") else "")
        elif s["id"] in decryptions:
            d = decryptions[s["id"]]
            state = d["status"] + (", stalled" if d.get("stalled") else "") + f", requested by {d['requester']}"
        rows.append((s["kind"], s["id"][:16], state, election))
    widths = [max(len(r[i]) for r in rows + [("kind", "session", "state", "")]) for i in range(3)]
    print("sessions:")
    print(f"  {'kind':<{widths[0]}}  {'session':<{widths[1]}}  {'state':<{widths[2]}}  election")
    for kind, session, state, election in rows:
        print(f"  {kind:<{widths[0]}}  {session:<{widths[1]}}  {state:<{widths[2]}}  {election}")


def _by_session(args: argparse.Namespace, command: str) -> dict[str, dict]:
    try:
        return {entry["session"]: entry for entry in _control(args, {"cmd": command})}
    except GuardianError:
        return {}


def _duration(seconds: float) -> str:
    """3.2 s, 4 min 12 s, 2 h 5 min, 3 d 4 h."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "min", 60), ("min", 60, "s", 1)):
        if whole >= size:
            return f"{whole // size} {unit} {whole % size // sub_size} {sub}"
    return f"{whole} s"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _setup_logging(path: Path, level: str) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger("guardian")
    root.setLevel(level)
    # A line the log file cannot take (its disk full) is lost, not printed as a traceback: the node
    # says the disk is full on its own, in one line, on stderr and in status.
    logging.raiseExceptions = False
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
    print(f"  manifest  {config['manifest']['label']!r}: {_count(len(contests), 'contest')}, "
          f"{_count(sum(len(c['options']) for c in contests), 'option')}")
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
    return _repeat(args, lambda: _show(args, "ceremony-status", _show_ceremonies))


def _show_ceremonies(args: argparse.Namespace, result: list) -> None:
    if not result:
        print("no ceremonies: propose one with `guardian ceremony propose --election FILE`")
    names = _roster_names(args)
    for i, c in enumerate(result):
        if i:
            print()
        _print_ceremony(c, names)


def _roster_names(args: argparse.Namespace) -> dict[int, str]:
    """Every guardian's name by sequence number, from this node's roster (the ceremony's guardians)."""
    try:
        return {e.sequence: e.name for e in load_roster(load_node_config(args.config).roster_file).entries}
    except GuardianError:
        return {}


def _print_ceremony(c: dict, names: dict[int, str]) -> None:
    status, session, outcome = c["status"], c["session"], c.get("outcome") or {}
    votes = c.get("votes", {})
    head = f"ceremony {session[:16]}  {status}"
    if status == "running" and "phase" in c:
        head += f", phase {c['phase']} for {_duration(c['phase_seconds'])}"
    elif status == "proposed":
        accepted = sum(v["vote"] == "accept" for v in votes.values())
        head += f", {accepted} of {_count(c.get('n', len(names)), 'guardian')} accepted"
    print(head)
    if status == "running" and c.get("waiting_for"):
        print(f"  waiting for: {', '.join(c['waiting_for'])}")
    awaited = [name for _, name in sorted(names.items()) if name not in votes]
    if status == "proposed" and awaited:
        print(f"  waiting for: {', '.join(awaited)} to accept (guardian ceremony accept {session[:16]}) or reject")
    if "election" in c:
        print(f"  election   {c['election']}: n={c['n']}, quorum k={c['k']}; proposed by {c['proposer']}")
    else:
        print(f"  proposed by {c['proposer']}")
    if status in ("proposed", "rejected"):
        width = max([len(n) for n in names.values()] + [len(n) for n in votes] + [8])
        print(f"  {'guardian':<{width}}  vote")
        for name in [n for _, n in sorted(names.items())] + sorted(set(votes) - set(names.values())):
            v = votes.get(name)
            if v is None:
                vote = "awaited" if status == "proposed" else "-"
            else:
                vote = "accepted" if v["vote"] == "accept" else f"rejected: {v['why']}"
            print(f"  {name:<{width}}  {vote}")
    if status == "running":
        done = c.get("done", {})
        width = max([len(n) for n in done] + [8])
        print(f"  {'guardian':<{width}}  done")
        for name, steps in done.items():
            print(f"  {name:<{width}}  {' '.join(steps) or '-'}")
    _print_outcome(status, outcome, names)
    if "custody" in c:
        _print_custody(c)


def _print_outcome(status: str, outcome: dict, names: dict[int, str]) -> None:
    if status in ("complete", "superseded"):
        for label, key in (("joint key", "joint_key_sha256"), ("H_E", "h_e"), ("export", "export"),
                           ("replaces", "replaces")):
            if outcome.get(key):
                print(f"  {label:<10} " + ("SHA-256 " if key == "joint_key_sha256" else "") + str(outcome[key]))
        return
    if status == "aborted":
        culprits = [names.get(i, f"guardian {i}") if isinstance(i, int) else str(i)
                    for i in outcome.get("culprits") or []]
        print(f"  aborted: {outcome.get('reason') or 'no reason given'}")
        if culprits:
            print(f"  culprit{'s' if len(culprits) > 1 else ''}: {', '.join(culprits)}")
        return
    if status == "rejected":
        print(f"  rejected by {outcome.get('by', '?')}: {outcome.get('why') or 'no reason given'}")
        return
    if status == "invalid":
        print(f"  invalid here: {outcome.get('reason') or 'no reason given'}")
        return
    if status == "finished-elsewhere":
        print(f"  {outcome.get('why') or 'finished without this node'}")
        return
    for key, value in outcome.items():
        print(f"  {key}: {value}")


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
