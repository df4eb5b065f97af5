"""Key custody: backups, custodians' shares, restore, the audit trail and the ceremony certificate.

    guardian backup export --out FILE   (running node) this guardian's key backup, sealed under a passphrase
    guardian backup confirm --copies N  (running node) N separate copies of it exist
    guardian backup verify FILE         (running node) it opens and restores exactly this guardian
    guardian backup split FILE     the backup key of FILE into M custodian shares, any T of which recover it
    guardian backup recover SHARE  T shares give the backup key back; it opens the backup, which is written
                                   anew under a new passphrase (and a new backup key: see backup_recover)
    guardian restore FILE --dir DIR     a new machine becomes that guardian's node again
    guardian audit verify          the node database's hash-chained audit trail, entry by entry
    guardian certificate           the ceremony certificate, signed by every guardian (from the data directory)
    guardian certificate verify FILE    every signature, and that it matches the election record
"""

from __future__ import annotations

import argparse
from pathlib import Path

from node.cli.args import add_config_option, config_help, default_config, positive_int
from node.config import load_node_config
from node.crypto.errors import InputError
from node.crypto.sealing import check_passphrase
from node.custody.audit_chain import AuditChainError, verify_data_dir
from node.custody.backup_file import read_backup, write_backup
from node.custody.shamir import check_parameters
from node.custody.share_files import check_label, make_shares, recover_from, share_file_names, write_share_files
from node.cli.passphrase import add_passphrase_options, read_passphrase, source_from_args



def register(sub) -> dict:
    backup = sub.add_parser("backup", help="share the key backup among custodians; recover it from their shares",
                            description="Key custody. `export`, `confirm` and `verify` are this guardian's steps "
                                        "after the key ceremony (through the running node; shared with the other "
                                        "guardians). The backup file holds the secrets under a random backup key, "
                                        "itself sealed under the passphrase: `split` shares that backup key among "
                                        "custodians; `recover` gets it back from enough of their shares.")
    actions = backup.add_subparsers(dest="action", metavar="ACTION")
    split = actions.add_parser(
        "split", help="split FILE's backup key into shares for M custodians, any T of which recover it",
        description="Opens FILE's backup key with the passphrase and splits it (Shamir, any T of M). For each "
                    "custodian i, writes share_i.json, share_i.txt (the typed form), share_i.svg (a page to "
                    "print, with a QR code) and share_i.png (the QR code) into --out.")
    split.add_argument("file", type=Path, help="the guardian's key backup file")
    split.add_argument("--custodians", "-m", type=positive_int, required=True, help="number of shares M (2-255)")
    split.add_argument("--threshold", "-t", type=positive_int, required=True,
                       help="shares needed to recover, T (2-M)")
    split.add_argument("--out", type=Path, required=True, help="directory for the share files (new or empty)")
    split.add_argument("--label", default=None,
                       help="what the shares are for, printed on each (default: guardian, election, backup)")
    add_passphrase_options(split)

    recover = actions.add_parser(
        "recover", help="recover the backup from custodians' shares and write it under a new passphrase",
        description="Recovers the backup key from T shares (share_i.json files, or .txt files with the typed "
                    "lines), opens --backup with it, and writes a new backup file --out with the same contents "
                    "under a new passphrase and a new backup key. The old shares do not open the new file: "
                    "split it again for the custodians.")
    recover.add_argument("shares", nargs="+", type=Path, metavar="SHARE", help="share files (.json or typed .txt)")
    recover.add_argument("--backup", type=Path, required=True, help="the backup file the shares belong to")
    recover.add_argument("--out", type=Path, required=True, help="the new backup file (must not exist)")
    add_passphrase_options(recover)

    export = actions.add_parser(
        "export", help="write this guardian's key backup file (running node), sealed under a new passphrase",
        description="Asks the running node for everything needed to decrypt later on another machine (the node "
                    "identity, the ceremony, this guardian's key shares), sealed with Argon2id + "
                    "XSalsa20-Poly1305 under a passphrase you choose, and prints the file's fingerprint to read "
                    "aloud. Recorded as this guardian's 'downloaded' step and sent to the other guardians.")
    export.add_argument("--out", type=Path, required=True, help="the backup file to write (must not exist)")
    confirm = actions.add_parser("confirm", help="state that N separate copies of the backup exist")
    confirm.add_argument("--copies", type=positive_int, required=True, help="how many separate copies (2 or more)")
    check = actions.add_parser(
        "verify", help="check a backup file restores exactly this guardian; record the success",
        description="Opens FILE with its passphrase and checks that it restores this node's identity and "
                    "exactly this guardian's key shares and commitments in the ceremony, and that its "
                    "fingerprint is the one exported. Recorded as the 'verified' step and sent to the others.")
    check.add_argument("file", type=Path, help="the backup file")
    for p in (export, confirm, check):
        p.add_argument("--ceremony", default=None, help="the ceremony's hash or a prefix (default: the latest)")
        add_config_option(p)
    for p in (export, check):
        add_passphrase_options(p)

    restore = sub.add_parser(
        "restore", help="make a new node directory from a key backup: that guardian's node again",
        description="Opens the backup (with its passphrase, or with --shares from the custodians) and creates "
                    "DIR: the same identity sealed under a new node passphrase, node.toml and roster.toml, the "
                    "ceremony and its export, and the key shares. Then `guardian run --config DIR/node.toml`.")
    restore.add_argument("file", type=Path, help="the key backup file")
    restore.add_argument("--dir", type=Path, required=True, help="the new node data directory (new or empty)")
    restore.add_argument("--listen", default=None, help="HOST:PORT to listen on (default: the backed-up node's)")
    restore.add_argument("--advertise", default=None, help="the ws:// address peers dial (default: from --listen "
                                                           "or the backed-up node's)")
    restore.add_argument("--shares", nargs="+", type=Path, default=None, metavar="SHARE",
                         help="open the backup with custodians' shares instead of its passphrase")
    restore.add_argument("--backup-passphrase-file", type=Path, metavar="FILE",
                         help="the backup's passphrase, from FILE")
    restore.add_argument("--backup-passphrase-env", metavar="VARIABLE", help="the backup's passphrase, from VARIABLE")
    add_passphrase_options(restore)

    cert = sub.add_parser("certificate", help="the ceremony certificate; `certificate verify FILE` checks one",
                          description="Without an action: the same as `certificate show`.")
    _certificate_options(cert)
    cert_actions = cert.add_subparsers(dest="action", metavar="ACTION")
    show = cert_actions.add_parser(
        "show", help="print (or --out) the certificate of a ceremony",
        description="The ceremony certificate: election, n, k, the guardians with their identity keys and key "
                    "fingerprints, each custody step with its time, signed by every guardian's identity key. "
                    "Available once every guardian has verified its backup. Read from the ceremony's export in "
                    "the node's data directory (and checked against it), so the node need not be running; "
                    "before the certificate exists, the running node says who is missing.")
    _certificate_options(show)
    cverify = cert_actions.add_parser(
        "verify", help="check every signature of a certificate, and that it matches an election record",
        description="Checks the certificate's hash, that each of the n guardians signed it with the identity key "
                    "it lists and completed every custody step, and with --record that the record's H_E and "
                    "guardian public key files are the certified ones. Exit 1 naming the first failure.")
    cverify.add_argument("file", type=Path, help="certificate.json")
    cverify.add_argument("--record", type=Path, default=None, help="the election record (or election directory)")

    audit = sub.add_parser("audit", help="check the node's hash-chained audit trail")
    audit_actions = audit.add_subparsers(dest="action", metavar="ACTION")
    verify = audit_actions.add_parser(
        "verify", help="verify every entry of the audit trail; name the first one altered, removed or moved",
        description="Opens the node database read-only and checks every audit entry against its hash and its "
                    "link to the entry before. Exit 1 naming the first bad entry.")
    where = verify.add_mutually_exclusive_group()
    where.add_argument("--config", type=Path, default=None, metavar="FILE", help=config_help(" without --dir"))
    where.add_argument("--dir", type=Path, default=None, help="the node's data directory")
    return {"backup": {"split": backup_split, "recover": backup_recover, "export": backup_export,
                       "confirm": backup_confirm, "verify": backup_verify},
            "restore": restore_node, "audit": {"verify": audit_verify},
            "certificate": {None: certificate_show, "show": certificate_show, "verify": certificate_verify}}


def _certificate_options(parser) -> None:
    parser.add_argument("--ceremony", default=None, help="the ceremony's hash or a prefix (default: the latest)")
    add_config_option(parser)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here (and the text beside it)")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the text")


# --- through the running node ---------------------------------------------------------------------------

def backup_export(args: argparse.Namespace) -> int:
    from node.cli.node import _control

    if args.out.exists():
        raise InputError(f"{args.out} already exists: refusing to overwrite it")
    passphrase = read_passphrase(source_from_args(args), confirm=True, what="backup passphrase")
    check_passphrase(passphrase)
    result = _control(args, {"cmd": "backup-export", "ceremony": args.ceremony, "out": str(args.out.resolve()),
                             "passphrase": passphrase})
    print(f"Wrote the key backup {result['path']} (ceremony {result['ceremony'][:16]})")
    print(f"  fingerprint {result['fingerprint']}   <- read it aloud; write it down with the copies")
    print("Next: make at least two separate copies, then `guardian backup confirm --copies N`,")
    print("then `guardian backup verify FILE` with one of the copies.")
    return 0


def backup_confirm(args: argparse.Namespace) -> int:
    from node.cli.node import _control

    result = _control(args, {"cmd": "backup-confirm", "ceremony": args.ceremony, "copies": args.copies})
    print(f"Recorded: {result['copies']} separate copies of the backup of ceremony {result['ceremony'][:16]}")
    return 0


def backup_verify(args: argparse.Namespace) -> int:
    from node.cli.node import _control

    passphrase = read_passphrase(source_from_args(args), what="backup passphrase")
    result = _control(args, {"cmd": "backup-verify", "ceremony": args.ceremony, "file": str(args.file.resolve()),
                             "passphrase": passphrase}, timeout=60)
    print(f"Verified: {args.file} restores exactly guardian {result['guardian']}'s key "
          f"(fingerprint {result['fingerprint']}); recorded and sent to the other guardians")
    return 0


def certificate_show(args: argparse.Namespace) -> int:
    from node.custody.certificate import CERTIFICATE_TEXT, certificate_bytes, certificate_text

    certificate = _certificate(args)
    data = certificate_bytes(certificate)
    if args.out is not None:
        from node.custody import write_new_file
        write_new_file(args.out, data, 0o644)
        write_new_file(args.out.with_name(args.out.stem + ".txt") if args.out.suffix == ".json"
                       else args.out.with_name(CERTIFICATE_TEXT), certificate_text(certificate).encode(), 0o644)
        print(f"wrote {args.out} and its text form beside it")
    print(data.decode() if args.json else certificate_text(certificate), end="")
    return 0


def _certificate(args: argparse.Namespace) -> dict:
    """The running node's certificate (it knows a custody step newer than the file); without a running node,
    the one beside the ceremony's export in the data directory, checked against that export."""
    from node.cli.node import _control
    from node.custody.certificate import CERTIFICATE_JSON, read_certificate, verify_certificate
    from node.record.start import find_export, latest_export

    config = load_node_config(args.config)
    if _answers(config.control_socket):
        return _control(args, {"cmd": "certificate", "ceremony": args.ceremony})
    ceremonies = config.data_dir / "ceremonies"
    export = find_export(ceremonies, args.ceremony) if args.ceremony else latest_export(ceremonies)
    if export is None:
        raise InputError(f"no completed key ceremony in {ceremonies}")
    if not (export / CERTIFICATE_JSON).is_file():
        raise InputError(f"ceremony {export.name[:16]} has no certificate yet: custody is not complete (see who is "
                         f"missing with `guardian ceremony status` on the running node)")
    certificate = read_certificate(export / CERTIFICATE_JSON)
    verify_certificate(certificate, export)
    return certificate


def _answers(socket_path: Path) -> bool:
    """Whether a node listens on its control socket."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(str(socket_path))
            return True
        except OSError:
            return False


def certificate_verify(args: argparse.Namespace) -> int:
    import json

    from node.custody.certificate import CustodyError, verify_certificate

    try:
        certificate = json.loads(args.file.read_bytes())
    except OSError as e:
        raise InputError(f"cannot read {args.file}: {e.strerror}") from None
    except ValueError:
        raise CustodyError(f"{args.file} is not JSON") from None
    for line in verify_certificate(certificate, args.record):
        print(f"ok  {line}")
    body = certificate["certificate"]
    print(f"the certificate of ceremony {body['ceremony'][:16]} ({body['election']}, n={body['n']}, k={body['k']}) "
          f"verifies" + (f" and matches {args.record}" if args.record else ""))
    return 0


# --- restore ---------------------------------------------------------------------------------------------

def restore_node(args: argparse.Namespace) -> int:
    from node.custody.backup_file import read_backup
    from node.services.restore import restore

    backup = read_backup(args.file)
    if args.shares:
        key = recover_from(args.shares)
        payload = backup.open_with_key(key)
    else:
        source = ("file:" + str(args.backup_passphrase_file.resolve()) if args.backup_passphrase_file else
                  "env:" + args.backup_passphrase_env if args.backup_passphrase_env else "prompt")
        payload, _ = backup.open(read_passphrase(source, what="backup passphrase"))
    node_passphrase = read_passphrase(source_from_args(args), confirm=True, what="new node passphrase")
    check_passphrase(node_passphrase)
    summary = restore(payload, backup.meta, backup.fingerprint(), args.dir, node_passphrase, args.listen,
                      args.advertise, source_from_args(args))
    print(f"Restored guardian {summary['name']} (guardian {summary['sequence']}) into {args.dir}")
    print(f"  identity fingerprint {summary['fingerprint']}; ceremony {summary['ceremony'][:16]}; "
          f"listening on {summary['listen']}")
    print(f"Next: make sure the roster's address for {summary['name']} reaches this machine, stop the old node if it "
          f"still runs, then `guardian run --config {args.dir / 'node.toml'}`.")
    return 0


def backup_split(args: argparse.Namespace) -> int:
    threshold, count = check_parameters(args.threshold, args.custodians)
    paths = _share_paths(args.out, count)
    backup = read_backup(args.file)
    fingerprint = backup.fingerprint()
    label = check_label(args.label if args.label is not None else _default_label(backup.meta, fingerprint),
                        "--label")
    passphrase = read_passphrase(source_from_args(args))
    _, backup_key = backup.open(passphrase)
    shares = make_shares(backup_key, threshold, count, label)
    _make_directory(args.out)
    for share in shares:
        write_share_files(share, args.out)
    print(f"Split the backup key of {args.file} ({backup.meta.guardian}, fingerprint {fingerprint})")
    print(f"  into {count} shares, any {threshold} of which recover it")
    print(f"  split id {shares[0].split_id.hex()}")
    print(f"  {len(paths)} files in {args.out}: share_1 to share_{count} (.json, .txt, .svg, .png)")
    print(f"Give each custodian their own share_i files or printed page, then delete {args.out}:")
    print("it holds every share, and any T of them open the backup without the passphrase.")
    return 0


def backup_recover(args: argparse.Namespace) -> int:
    """A new file with a new backup key, not the old key under a new passphrase: the old key has just been
    rebuilt from shares that several people handled, so it is retired, and with it the old shares."""
    if args.out.exists():
        raise InputError(f"{args.out} already exists: refusing to overwrite it")
    backup = read_backup(args.backup)
    backup_key = recover_from(args.shares)
    payload = backup.open_with_key(backup_key)
    passphrase = read_passphrase(source_from_args(args), confirm=True, what="new passphrase")
    check_passphrase(passphrase)
    _, fingerprint = write_backup(args.out, payload, backup.meta.restamped(), passphrase)
    print(f"Recovered the backup of {backup.meta.guardian} (guardian {backup.meta.sequence}) from "
          f"{len(args.shares)} shares")
    print(f"  wrote {args.out} under the new passphrase; fingerprint {fingerprint}")
    print(f"The old shares do not open {args.out}: run `guardian backup split {args.out}` for new ones,")
    print("and ask the custodians to destroy the old shares.")
    return 0


def audit_verify(args: argparse.Namespace) -> int:
    data_dir = args.dir if args.dir is not None else load_node_config(args.config or default_config()).data_dir
    result = verify_data_dir(data_dir)
    if not result.ok:
        raise AuditChainError(str(result))
    print(result)
    return 0


def _default_label(meta, fingerprint: str) -> str:
    return (f"{meta.guardian} (guardian {meta.sequence}), election {meta.session[:16]}, "
            f"backup {fingerprint[:9]}")


def _share_paths(directory: Path, count: int) -> list[Path]:
    """Every file the split will write; refused up front if one exists, so a split is never left half done."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"{directory} exists and is not a directory")
    paths = [directory / name for i in range(1, count + 1) for name in share_file_names(i)]
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise InputError(f"{existing[0]} already exists: refusing to overwrite shares")
    return paths


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as e:
        raise InputError(f"cannot create {directory}: {e.strerror}") from None
