"""What a guardian's node checks before it computes anything with its key share (spec 3.6.1).

The node decrypts only what it has recomputed itself: the aggregate of the cast
ballots whose proofs and signatures verify (Verifications 1-9 and the ballot
signatures, run on its own copy of the record) and ballots the record marks
challenged. The election in the record must be the one this node's key
ceremony made, and that ceremony's key custody must be certified: the
certificate beside the node's own export, signed by every guardian, checked
against that export and the ceremony's config (seed 000: only after every
guardian has exported, confirmed and verified its key backup can the election
proceed). A rehearsal request goes without it, on a node whose node.toml allows
rehearsals. Anything else is refused with the reason, which the node signs and
sends to its peers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from node.crypto.decryption import PublicShares
from node.crypto.election import ElectionContext
from node.crypto.errors import GuardianError
from node.crypto.tally import EncryptedTally
from node.custody.certificate import (
    CERTIFICATE_JSON, CustodyError, missing_steps, read_certificate, superseded_by, verify_certificate,
)
from node.protocol.decryption import DecryptionRequest, Item
from node.protocol.election_config import parse_election_config
from node.record import codec, layout
from node.record.decrypted import challenged_statement, tally_statements
from node.record.election import open_election
from node.verifier import STEP_NUMBER

# Steps that must pass before any decryption; the decryption steps must not apply yet.
REQUIRED_STEPS = ("parameters", "guardian public keys", "election public key", "extended base hash",
                  "selection identifiers", "selection well-formedness", "vote limits", "confirmation codes",
                  "aggregation", "ballot signatures", "record index")
DECRYPTION_STEPS = ("tally decryption", "tally contents", "challenged ballot decryption",
                    "challenged ballot contents")


class PolicyRefusal(GuardianError):
    """This node will not decrypt what it was asked to; the message says why."""


@dataclass(frozen=True)
class Checked:
    """A record this node has verified, and the statements it agrees to decrypt, in request order."""

    ctx: ElectionContext
    tally: EncryptedTally | None
    challenged: tuple[codec.BallotRecord, ...]
    items: tuple[Item, ...]
    vote_publics: PublicShares
    data_publics: PublicShares


def custody_refusal(db, ceremony: dict, rehearsal: bool, allow_rehearsal: bool) -> str | None:
    """Why this node must not use its key of `ceremony` (a database row) for a decryption; None when it may.

    `db` is the node's database: its custody table names the guardians whose steps are missing."""
    session = ceremony["session"]
    if rehearsal:
        if not allow_rehearsal:
            return ("the request is a rehearsal (custody not certified) and this guardian's node takes no part in "
                    "rehearsals ([decryption] allow_rehearsal is false in its node.toml)")
        return None
    try:
        config = parse_election_config(ceremony["config"])
        export = Path(ceremony["outcome"]["export"])
    except (GuardianError, KeyError, TypeError):
        return f"this node cannot read its own record of ceremony {session.hex()[:16]}"
    path = export / CERTIFICATE_JSON
    if path.is_file():
        try:
            certificate = read_certificate(path)
            verify_certificate(certificate, export, config)
        except CustodyError as e:
            return f"the certificate of ceremony {session.hex()[:16]} does not hold: {e}"
        newer = superseded_by(certificate)
        if newer is not None:
            return f"the keys of ceremony {session.hex()[:16]} are superseded by ceremony {newer[:16]}"
        return None
    missing = missing_steps(config.guardians, db.custody_steps(session))
    if missing:
        who = "; ".join(missing)
        return (f"the key custody of ceremony {session.hex()[:16]} is not complete, so this guardian does not use "
                f"its key: waiting for {who} (`guardian ceremony status`)")
    unsigned = [g.name for g in config.guardians if g.name not in db.certificate_signatures(session)]
    return (f"the certificate of ceremony {session.hex()[:16]} is not signed by every guardian yet"
            + (f": waiting for {', '.join(unsigned)}" if unsigned else ""))


def check_record(root: Path, request: DecryptionRequest, own_h_e: bytes, own_joint_keys: tuple[int, int],
                 steps: dict[str, dict]) -> Checked:
    """Derive the statements from the node's copy of the record; PolicyRefusal says why not.

    `steps` are the verifier's results on that copy (`guardian verify --json`, run by
    the node in a child process so that its event loop never waits on it), by step name.
    """
    try:
        election = open_election(root)
    except GuardianError as e:
        raise PolicyRefusal(f"the record's election does not verify: {e}") from None
    ctx = election.context
    if ctx.h_e != own_h_e or (ctx.joint_key, ctx.joint_data_key) != tuple(own_joint_keys):
        raise PolicyRefusal("the record's election is not the one this guardian's key ceremony made "
                            "(H_E or the joint keys differ)")
    if ctx.h_e != request.h_e:
        raise PolicyRefusal("the request names another election than its record holds")
    record = layout.Record(root)
    if layout.sha256_file(record.path(layout.INDEX)) != request.record.hex().upper():
        raise PolicyRefusal("the record's index is not the one the request names")
    index = record.read_index()
    if record.exists(layout.DECRYPTED_TALLY) or record.list_dir(layout.CHALLENGED):
        raise PolicyRefusal("the record already holds decryptions")

    for name in REQUIRED_STEPS:
        r = steps.get(name) or {}
        if r.get("result") != "pass" and not (name == "aggregation" and request.tally is None):
            failures = r.get("failures") or ["it did not run"]
            raise PolicyRefusal(f"verification step {STEP_NUMBER[name] or ''} {name} fails on the record: "
                                f"{failures[0]}".replace("  ", " "))

    tally = None
    items: list[Item] = []
    if request.tally is not None:
        if _digest(index, layout.ENCRYPTED_TALLY) != request.tally:
            raise PolicyRefusal("the requested tally is not the record's encrypted_tally.json")
        # Verification 9 passed on this copy, in this node's own verifier: the published tally is the
        # aggregate of the cast ballots it recomputed (eq 79), each of which it checked (or had checked before).
        data = record.read(layout.ENCRYPTED_TALLY)
        if layout.sha256_hex(data) != index[layout.ENCRYPTED_TALLY]:
            raise PolicyRefusal("the record's encrypted_tally.json is not the file its index names")
        _, tally = codec.encrypted_tally_from_json(ctx.group, codec.load_json(data, layout.ENCRYPTED_TALLY))
        for s in tally_statements(ctx, tally):
            items.append(Item(f"contest {s.contest_index} option {s.option_index}", s))

    challenged = []
    for ballot_id, digest in request.challenged:
        try:
            rel = layout.ballot_file(layout.check_ballot_id(ballot_id))
        except GuardianError:
            raise PolicyRefusal(f"ballot {ballot_id[:80]!r}: not a ballot id this record can hold") from None
        if not record.exists(rel):
            raise PolicyRefusal(f"ballot {ballot_id!r} is not in the record")
        if _digest(index, rel) != digest:
            raise PolicyRefusal(f"ballot {ballot_id!r}: the requested file is not the record's {rel}")
        # Step 5 passed: each ballot is in the file its id names.
        data = record.read(rel)
        if layout.sha256_hex(data) != index[rel]:
            raise PolicyRefusal(f"ballot {ballot_id!r}: {rel} is not the file the record's index names")
        rec = codec.ballot_from_json(ctx.group, codec.load_json(data, rel), rel)
        if rec.state != codec.CHALLENGED:
            raise PolicyRefusal(f"ballot {ballot_id!r} is {rec.state.lower()}, not challenged: a cast ballot is "
                                f"never decrypted on its own")
        challenged.append(rec)
        items.append(Item(f"challenged ballot {ballot_id!r}", challenged_statement(ctx, rec)))

    keys = {pk.index: pk for pk in election.keys}
    return Checked(ctx, tally, tuple(challenged), tuple(items),
                   PublicShares(ctx.group, {i: pk.commitments for i, pk in keys.items()}),
                   PublicShares(ctx.group, {i: pk.data_commitments for i, pk in keys.items()}))


def _digest(index: dict[str, str], rel: str) -> bytes | None:
    return bytes.fromhex(index[rel]) if rel in index else None
