"""The record's commands: `guardian election|record|encrypt|ballots|tally|verify`.

    guardian election create-local   in-process key ceremony -> public election directory (+ test-only secrets)
    guardian record init             a node's ceremony export (with its certificate) -> a new election record
    guardian encrypt                 plaintext ballots (JSON lines) -> encrypted, signed ballots
    guardian ballots submit          the ballot box: verify, then accept durably into the record
    guardian tally                   close the box: the encrypted tally
    guardian election decrypt-local  in-process decryption of the tally and the challenged ballots
    guardian verify                  the independent verifier (design spec section 6)
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Sequence, TextIO

from node.cli.args import add_config_option, add_scheduler_option, guardian_list, positive_float, positive_int
from node.compute import scheduler_address
from node.crypto.errors import InputError

from node.record import codec, layout

PROGRESS_EVERY = 2.0          # seconds between progress lines on long runs
GATE = ("Refused unless the record carries its ceremony certificate, signed by every guardian once each has "
        "exported, confirmed and verified its key backup (`guardian record init`), or with --rehearsal.")
REHEARSAL_HELP = ("go on although the record carries no ceremony certificate that holds (a rehearsal: warned on "
                  "stderr and noted in the record's rehearsal.json, which the verifier reports)")
DECRYPTION_STEPS = ("10", "11", "13", "14")    # do not apply to a record before its decryption


# --------------------------------------------------------------------------- argument types


def register(sub) -> dict:
    handlers: dict = {}

    election = sub.add_parser(
        "election", help="create an election or decrypt it in process (local stand-ins for the guardians' nodes)",
        description="Local stand-ins for the guardians' nodes, for tests and demonstrations: the key ceremony and "
                    "the decryption run in this one process, with every guardian's secrets in one place. Use them "
                    "until the ceremony and decryption across nodes are available; never for a real election.")
    actions = election.add_subparsers(dest="action", metavar="ACTION")
    create = actions.add_parser(
        "create-local", help="in-process key ceremony; writes the public election directory (TEST-ONLY secrets)",
        description="Runs the whole key ceremony (spec 3.2) in this process and writes the public election "
                    "directory: election_parameters.json, election_manifest.json, hashes.json, the guardians' "
                    "public keys, joint_election_public_key.json, hashes_ext.json and index.json. Every guardian's "
                    "secret key shares go to a separate --secrets directory marked TEST ONLY: this is the stand-in "
                    "until the ceremony across the guardians' nodes is available. With no key custody to certify, "
                    "the record is a rehearsal from the start (rehearsal.json): the commands on it say so.")
    create.add_argument("--manifest", type=Path, default=None,
                        help="ElectionGuard 2.1 manifest (JSON); default: the embedded 8-contest demo manifest")
    create.add_argument("--guardians", "-n", type=positive_int, required=True, help="number of guardians n")
    create.add_argument("--quorum", "-k", type=positive_int, required=True, help="guardians needed to decrypt, k")
    create.add_argument("--out", type=Path, required=True, help="the election directory to create (the record)")
    create.add_argument("--secrets", type=Path, required=True,
                        help="where the TEST-ONLY guardian secrets go; must be outside --out")
    create.add_argument("--info", default=None, help="description of the election (default: the manifest label)")
    create.add_argument("--date", default=None, help="date of the election (default: today)")
    create.add_argument("--ballot-chaining", choices=codec.CHAINING_POLICIES, default="Allowed",
                        help="whether devices may, must not or must chain their ballots (default Allowed)")
    decrypt = actions.add_parser(
        "decrypt-local", help="in-process decryption of the tally and challenged ballots (TEST-ONLY secrets)",
        description="Decrypts the encrypted tally and every challenged ballot of a record with the present "
                    "guardians' TEST-ONLY secrets from `election create-local`, and writes decrypted_tally.json "
                    "and challenged/<ballot id>.json with every guardian's share and proof. This is the stand-in "
                    "until decryption across the guardians' nodes is available.")
    decrypt.add_argument("--record", type=Path, required=True, help="the record directory")
    decrypt.add_argument("--secrets", type=Path, required=True, help="the TEST-ONLY secrets directory")
    decrypt.add_argument("--missing", type=guardian_list, default=(),
                         help="guardians absent at decryption, e.g. 2,5 (default: none)")
    decrypt.add_argument("--compensated", action="store_true",
                         help="the present guardians reconstruct each missing guardian's share (seed 002 form)")
    handlers["election"] = {"create-local": run_create_local, "decrypt-local": run_decrypt_local}

    record = sub.add_parser("record", help="start an election record from a completed key ceremony",
                            description="The election record of a key ceremony run by the guardians' nodes.")
    r_actions = record.add_subparsers(dest="action", metavar="ACTION")
    init = r_actions.add_parser(
        "init", help="copy a ceremony's export (with its certificate) from the node's data directory into a new record",
        description="Starts an election record from the export a node wrote when the key ceremony completed "
                    "(DATA_DIR/ceremonies/<hash>/ of the node.toml's data directory): the election files, the "
                    "guardians' public keys, the election config, every guardian's signed result, the ceremony "
                    "certificate and the index, each checked against the index. Refused unless the certificate "
                    "holds (every guardian exported, confirmed and verified its key backup, and all signed), and "
                    "for a superseded ceremony. The node need not be running.")
    init.add_argument("--ceremony", required=True, metavar="HASH", help="the ceremony's hash or a prefix of it")
    init.add_argument("--out", type=Path, required=True, help="the new record directory (must not exist or be empty)")
    add_config_option(init)
    init.add_argument("--rehearsal", action="store_true",
                      help="start it although custody is not certified (the record then is a rehearsal, and says so)")
    follow = r_actions.add_parser(
        "follow", help="check the record's ballots ahead, as the ballot box accepts them, into the node's database",
        description="Keeps checking the ballots the record's ballot box accepts (every proof, code and signature, "
                    "and the product of the cast ones), while voting is open, and keeps what it found in the node's "
                    "database (the verification cache of DATA_DIR/node.sqlite3, keyed by each file's SHA-256, the "
                    "election's H_E and the verifier's version). When the guardians decrypt, the node then checks "
                    "only the ballots it has not checked before. Runs until Ctrl-C, or once with --once. The node "
                    "need not be running.")
    follow.add_argument("--record", type=Path, required=True, help="the record directory (its ballot box)")
    add_config_option(follow)
    follow.add_argument("--once", action="store_true", help="check what is there now, then stop")
    follow.add_argument("--interval", type=positive_float, default=5.0, metavar="SECONDS",
                        help="how often to look for new ballots (default 5)")
    follow.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: every core)")
    add_scheduler_option(follow)
    handlers["record"] = {"init": run_record_init, "follow": run_record_follow}

    enc = sub.add_parser(
        "encrypt", help="encrypt plaintext ballots with every proof, confirmation code and signature",
        description="Reads plaintext ballots, one JSON object per line: "
                    '{"id": "b-1", "ballot_style": "STYLE LABEL", "contests": {"CONTEST LABEL": ["OPTION LABEL"]}} '
                    "(an option list, or {OPTION LABEL: value}). Each becomes an encrypted ballot (spec 3.3) with "
                    "its proofs, confirmation code (3.4) and one-time Ed25519 signature (seed 003), written to "
                    "--out as <id>.json. An invalid ballot is refused with its id and the reason; the others go on. "
                    "Uses every core. " + GATE)
    enc.add_argument("--election", type=Path, required=True, help="the election (or record) directory")
    enc.add_argument("--ballots", type=Path, required=True, help="plaintext ballots, JSON lines ('-' for stdin)")
    enc.add_argument("--device", required=True, help="the encrypting device's name (S_device of eq 72)")
    enc.add_argument("--out", type=Path, required=True, help="directory for the encrypted ballots")
    enc.add_argument("--chaining", action="store_true",
                     help="simple ballot chaining on this device (spec 3.4.4); its state is kept in --out")
    enc.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: every core)")
    add_scheduler_option(enc)
    enc.add_argument("--rehearsal", action="store_true", help=REHEARSAL_HELP)
    handlers["encrypt"] = run_encrypt

    ballots = sub.add_parser("ballots", help="the ballot box", description="The ballot box of a record.")
    b_actions = ballots.add_subparsers(dest="action", metavar="ACTION")
    submit = b_actions.add_parser(
        "submit", help="verify ballots and accept them durably, as cast or challenged",
        description="Verifies each encrypted ballot (election, duplicates, signature, every proof, confirmation "
                    "code, chaining) and accepts it durably into the record: an accepted ballot survives a crash. "
                    "A refused ballot is named with the reason; the others go on. Directories stand for their "
                    "*.json files. " + GATE)
    submit.add_argument("--record", type=Path, required=True, help="the record directory")
    submit.add_argument("--cast", type=Path, nargs="+", default=[], metavar="FILE", help="ballots to cast")
    submit.add_argument("--challenge", type=Path, nargs="+", default=[], metavar="FILE",
                        help="ballots to challenge (they will be decrypted and published)")
    submit.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: every core)")
    submit.add_argument("--rehearsal", action="store_true", help=REHEARSAL_HELP)
    handlers["ballots"] = {"submit": run_submit}

    tally = sub.add_parser("tally", help="close the ballot box: the encrypted tally of the cast ballots",
                           description="Computes the encrypted tally, the homomorphic aggregate of the cast "
                                       "ballots (spec 3.5), and writes encrypted_tally.json. The box then accepts "
                                       "no more ballots. " + GATE)
    tally.add_argument("--record", type=Path, required=True, help="the record directory")
    tally.add_argument("--rehearsal", action="store_true", help=REHEARSAL_HELP)
    tally.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: every core)")
    add_scheduler_option(tally)
    handlers["tally"] = run_tally

    verify = sub.add_parser(
        "verify", help="verify an election record (every step of spec section 6)",
        description="The independent verifier: runs every applicable verification step of the ElectionGuard 2.1 "
                    "design spec, section 6, plus the ballot signatures and the record index, on every core. "
                    "Prints a table (step, result, items, time) or --json; exits 1 on any failure, naming the step "
                    "and the object.")
    verify.add_argument("record", type=Path, help="the record directory")
    verify.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    verify.add_argument("--workers", type=positive_int, default=None, help="processes to use (default: every core)")
    add_scheduler_option(verify)
    verify.add_argument("--cache", type=Path, default=None, metavar="FILE",
                        help="an SQLite file of what earlier runs found on each ballot file (created if missing): "
                             "a ballot file checked before, for this election by this verifier, is not checked again")
    handlers["verify"] = run_verify
    return handlers


# --------------------------------------------------------------------------- messages


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _once(message: str) -> str:
    """The message without a subject said twice: 'refused line 9: line 9: not valid JSON' says 'line 9' once.

    A part between ': ' separators is dropped when an earlier part is it, or ends with it; the last part, the
    reason itself, always stays.
    """
    parts = message.split(": ")
    kept: list[str] = []
    for i, part in enumerate(parts):
        if i < len(parts) - 1 and any(k == part or k.endswith(" " + part) for k in kept):
            continue
        kept.append(part)
    return ": ".join(kept)


# --------------------------------------------------------------------------- the custody gate


def _custody_gate(root: Path, command: str, rehearsal: bool):
    """Refuse a record whose ceremony certificate does not hold, unless this is a rehearsal; `.note()` the
    rehearsal once the command's own checks have passed."""
    from node.record.custody_gate import gate

    return gate(root, command, rehearsal)


def _warn(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- progress


class Progress:
    """Progress lines on stderr for long runs: at most one every PROGRESS_EVERY seconds."""

    def __init__(self, what: str, stream: TextIO | None = None) -> None:
        self.what, self.stream = what, stream or sys.stderr
        self.start = self.last = time.perf_counter()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if now - self.last < PROGRESS_EVERY and not (self.shown and done == total):
            return
        self.last, self.shown = now, True
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if rate else 0
        self.stream.write(f"{self.what}: {done}/{total} ({rate:.1f}/s, {eta:.0f}s left)\n")
        self.stream.flush()


# --------------------------------------------------------------------------- election create-local / decrypt-local


def run_create_local(args: argparse.Namespace) -> int:
    from node.crypto.manifest import parse_manifest

    from node.record.local import create_local_election

    if args.manifest is None:
        from node.cli.demo_in_process import load_demo_manifest
        manifest = load_demo_manifest()
    else:
        try:
            manifest = parse_manifest(args.manifest.read_bytes())
        except OSError as e:
            raise InputError(f"cannot read manifest {args.manifest}: {e.strerror}") from None
    if args.quorum > args.guardians:
        raise InputError(f"quorum {args.quorum} is larger than the number of guardians {args.guardians}")
    date = args.date or datetime.date.today().isoformat()
    ceremony = create_local_election(args.out, args.secrets, manifest, args.guardians, args.quorum,
                                     args.info or manifest.label, date, args.ballot_chaining)
    print(f"election created in {args.out}: {args.guardians} guardians, quorum {args.quorum}, "
          f"H_E {ceremony.context.h_e.hex().upper()}")
    print(f"TEST-ONLY guardian secrets in {args.secrets} (not part of the record; never for a real election)")
    return 0


def run_decrypt_local(args: argparse.Namespace) -> int:
    from node.record.local import decrypt_local

    decrypted = decrypt_local(args.record, args.secrets, args.missing, args.compensated,
                              say=lambda text: print(text, file=sys.stderr))
    q = decrypted.quorum
    print(f"tally decrypted by guardians {', '.join(map(str, q.present))} ({q.form} form)"
          + (f"; missing: {', '.join(map(str, q.missing))}" if q.missing else ""))
    for contest in decrypted.contests:
        print(f"  {contest.label}")
        for o in contest.options:
            print(f"    {o.label:<40}{o.tally:>8}")
    return 0


# --------------------------------------------------------------------------- record init


def run_record_init(args: argparse.Namespace) -> int:
    from node.config import load_node_config
    from node.record.start import start_record

    ceremonies = load_node_config(args.config).data_dir / "ceremonies"
    started = start_record(ceremonies, args.ceremony, args.out, args.rehearsal,
                           lambda text: print(text, file=sys.stderr, flush=True))
    config = started.config
    print(f"record started in {args.out} from ceremony {started.session[:16]} ({config.election}: n={config.n}, "
          f"k={config.k}), H_E {started.h_e}; {_count(started.files, 'file')} copied and checked against the index")
    if started.certified:
        print(f"  the ceremony certificate is signed by all {config.n} guardians and is this record's: custody "
              f"complete, the election may proceed")
    else:
        print("  REHEARSAL: no ceremony certificate; every command on this record will say so")
    print(f"Next: guardian encrypt --election {args.out} --ballots FILE --device ID --out DIR   "
          f"(plaintext ballots, one JSON object a line: see configs/ballots.jsonl)")
    return 0


def run_record_follow(args: argparse.Namespace) -> int:
    from node.compute import executor
    from node.config import load_node_config
    from node.record.ballot_box import journal_tail
    from node.record.election import open_election
    from node.storage.ballot_cache import BallotCache
    from node.storage.db import DB_FILE
    from node.verifier.ballot_pass import check_ahead

    config = load_node_config(args.config)
    election = open_election(args.record)
    record = election.record
    cache_path = config.data_dir / DB_FILE
    if not cache_path.exists():
        raise InputError(f"{cache_path}: no node database there (is {args.config} this guardian's node.toml, "
                         f"and has the node run?)")
    scheduler = scheduler_address(args.scheduler) or config.compute_scheduler
    print(f"following {args.record} (H_E {election.context.h_e.hex().upper()[:16]}...) into {cache_path}"
          + (f", on the Dask cluster at {scheduler}" if scheduler else ""), flush=True)
    seen, offset, failed = 0, 0, 0
    with BallotCache(cache_path) as cache, executor(election.context, scheduler, args.workers) as pool:
        try:
            while True:
                entries, offset = journal_tail(record, offset, seen)
                files = [(layout.ballot_file(e.ballot_id), bytes.fromhex(e.sha256)) for e in entries]
                if files:
                    done = check_ahead(election.context, record, files, pool, cache, Progress("follow: ballots"))
                    seen += len(entries)
                    failed += len(done.failures)
                    for f in done.failures:
                        print(_once(f"FAILED {f}"), file=sys.stderr, flush=True)
                    print(f"{_count(done.checked, 'ballot')} checked, {done.known} checked before; "
                          f"{_count(seen, 'ballot')} in the box; {_count(failed, 'failure')} so far", flush=True)
                if args.once:
                    break
                time.sleep(args.interval)
        except KeyboardInterrupt:
            print(f"stopped: {_count(seen, 'ballot')} of the box checked", flush=True)
    return 1 if failed else 0


# --------------------------------------------------------------------------- encrypt


def run_encrypt(args: argparse.Namespace) -> int:
    from node.compute import worker_count
    from node.record.election import open_election
    from node.record.encrypt import bulk_context, encrypt_into, load_chain, read_plaintexts

    args.scheduler = scheduler_address(args.scheduler)     # a bad address stops here, before any work

    election = open_election(args.election)
    ctx = election.context
    passed = _custody_gate(args.election, "guardian encrypt", args.rehearsal)
    if args.chaining and election.parameters.ballot_chaining == "Prohibited":
        raise InputError("this election prohibits ballot chaining; run without --chaining")
    if not args.chaining and election.parameters.ballot_chaining == "Required":
        raise InputError("this election requires ballot chaining; run with --chaining")
    if not args.device.strip():
        raise InputError("--device must name the device")
    try:
        text = sys.stdin.read() if str(args.ballots) == "-" else args.ballots.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot read {args.ballots}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise InputError(f"{args.ballots}: not valid UTF-8") from None
    plaintexts, refused = read_plaintexts(iter(text.splitlines()))
    if not plaintexts and not refused:
        raise InputError(f"{args.ballots}: no ballots in it (one JSON object per line, as in configs/ballots.jsonl)")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    fresh = []
    for ballot in plaintexts:
        if (out / f"{ballot.ballot_id}.json").exists():
            refused.append((f"ballot {ballot.ballot_id!r}", f"already encrypted into {out}"))
        else:
            fresh.append(ballot)
    for what, reason in refused:
        print(_once(f"refused {what}: {reason}"), file=sys.stderr)
    refused_count = len(refused)
    passed.note(_warn)
    ctx = bulk_context(ctx, len(fresh), args.workers or worker_count())
    chain = load_chain(out, ctx, args.device) if args.chaining else None
    encrypted = 0
    for plain, rec in encrypt_into(out, ctx, fresh, args.device, chain, args.workers, Progress("encrypt"),
                                   args.scheduler):
        if isinstance(rec, str):
            print(_once(f"refused ballot {plain.ballot_id!r}: {rec}"), file=sys.stderr)
            refused_count += 1
            continue
        encrypted += 1
        print(f"encrypted {rec.ballot_id}  confirmation code {rec.ballot.confirmation_code.hex().upper()}", flush=True)
    print(f"{_count(encrypted, 'ballot')} encrypted into {out}"
          + (f", {refused_count} refused" if refused_count else ""))
    return 1 if refused_count else 0


# --------------------------------------------------------------------------- ballots submit, tally


def _expand(paths: Sequence[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(x for x in p.iterdir() if x.suffix == ".json" and not x.name.startswith("."))
            if not found:
                raise InputError(f"{p}: no ballot files (*.json) in this directory")
            out += found
        else:
            out.append(p)
    return out


SUBMIT_CHUNK = 512         # ballot files read, checked and accepted at a time: memory stays flat


def run_submit(args: argparse.Namespace) -> int:
    from node.record.ballot_box import BallotBox, read_submission

    if not args.cast and not args.challenge:
        raise InputError("nothing to submit: give ballot files with --cast and/or --challenge")
    paths = [(p, codec.CAST) for p in _expand(args.cast)] + [(p, codec.CHALLENGED) for p in _expand(args.challenge)]
    counts = {"accepted": 0, "refused": 0}
    progress = Progress("submit: ballots")

    def report(o) -> None:
        progress(counts["accepted"] + counts["refused"] + 1, len(paths))
        if o.accepted:
            counts["accepted"] += 1
            state = "cast" if o.state == codec.CAST else "challenged"
            print(f"accepted {o.ballot_id} as {state}, confirmation code {o.confirmation_code}", flush=True)
        else:
            counts["refused"] += 1
            who = f"ballot {o.ballot_id!r} ({o.source})" if o.ballot_id else o.source
            print(_once(f"refused {who}: {o.reason}"), file=sys.stderr, flush=True)

    with BallotBox.open(args.record) as box:
        for note in box.recovery_notes:
            print(f"recovered: {note}", file=sys.stderr)
        passed = _custody_gate(args.record, "guardian ballots submit", args.rehearsal)
        if not box.closed:                     # a closed box refuses on its own: the record stays as it is
            passed.note(_warn)
        carried: list = []                     # chained ballots waiting for their predecessor: kept as paths
        try:
            for start in range(0, len(paths), SUBMIT_CHUNK):
                waiting = [(Path(sub.source), sub.state) for sub in carried]
                chunk = [read_submission(p, state) for p, state in waiting + paths[start:start + SUBMIT_CHUNK]]
                carried = []
                box.submit(chunk, args.workers, report, carry=carried, derive=False)
            if carried:                        # chained ballots that never found their place: refused now
                box.submit([read_submission(Path(sub.source), sub.state) for sub in carried], args.workers, report,
                           derive=False)
        finally:
            box.write_derived()
    print(f"{counts['accepted']} accepted, {counts['refused']} refused")
    return 1 if counts["refused"] else 0


def run_tally(args: argparse.Namespace) -> int:
    from node.record.ballot_box import BallotBox

    args.scheduler = scheduler_address(args.scheduler)     # a bad address stops here, before any work

    with BallotBox.open(args.record) as box:
        for note in box.recovery_notes:
            print(f"recovered: {note}", file=sys.stderr)
        passed = _custody_gate(args.record, "guardian tally", args.rehearsal)
        if not box.closed:
            passed.note(_warn)
        tally = box.tally(args.workers, args.scheduler)
    print(f"encrypted tally of {_count(tally.ballot_count, 'cast ballot')} written to "
          f"{args.record / layout.ENCRYPTED_TALLY}")
    return 0


# --------------------------------------------------------------------------- verify


def run_verify(args: argparse.Namespace) -> int:
    from node.verifier import format_table, passed, results_to_json, verify_record

    start = time.perf_counter()
    results = verify_record(args.record, args.workers, Progress("verify: ballots"), args.scheduler, args.cache)
    seconds = time.perf_counter() - start
    for r in results:
        r.failures = [_once(f) for f in r.failures]
    if args.json:
        print(json.dumps(results_to_json(args.record, results, seconds, results.warnings)))
    else:
        print(format_table(results, seconds, warnings=results.warnings))
        bad = [r for r in results if r.ok is False]
        skipped = [r.number for r in results if r.ok is None and r.number in DECRYPTION_STEPS]
        if bad:
            print(f"\nthe record does NOT verify: {_count(len(bad), 'step')} failed, first: step "
                  f"{(bad[0].number + ' ' + bad[0].step).strip()}: {bad[0].failure}")
        elif skipped:
            print(f"\nthe record verifies so far: every applicable step passed; it holds no decryptions yet, so "
                  f"steps {', '.join(skipped)} do not apply (run `guardian decrypt`, then verify again)")
        else:
            print("\nthe record verifies: every applicable step passed")
    return 0 if passed(results) else 1
