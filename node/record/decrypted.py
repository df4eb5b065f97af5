"""From joint decryptions to the record's decrypted tally and opened challenged ballots.

Whoever produced the joint decryptions (the guardians' nodes across the
network, or the in-process stand-ins of `node.record.local`), the record gets
the same files: every option's tally value with T, the proof (c, v) and every
part (share, commitment, response); every challenged ballot opened through its
ballot nonce (spec 3.6.7) with the selection nonces that anyone can re-encrypt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from node.crypto.ballot import decrypt_ballot_nonce, nonce_for_selection, verify_encrypted_nonce
from node.crypto.challenged import nonce_statement
from node.crypto.decryption import NonceStatement, TallyStatement, t_power_from_m
from node.crypto.dlog import discrete_log
from node.crypto.election import ElectionContext
from node.crypto.elgamal import power_of_key_from_nonce
from node.crypto.errors import DecryptionError
from node.crypto.tally import EncryptedTally

from node.record import codec, layout


@dataclass(frozen=True)
class JointResult:
    """M = base^s with the proof (c, v) and every part that went into it."""

    m: object
    challenge: object
    response: object
    shares: tuple[codec.ShareRecord, ...]


def quorum(n: int, present: Sequence[int], compensated: bool) -> codec.Quorum:
    present = tuple(sorted(present))
    return codec.Quorum("compensated" if compensated else "standard", present,
                        tuple(j for j in range(1, n + 1) if j not in present))


def tally_statements(ctx: ElectionContext, tally: EncryptedTally) -> list[TallyStatement]:
    """One statement per option, in manifest order: what the guardians decrypt with the vote key."""
    return [TallyStatement(ctx.h_e, contest.index, option.index, *_ab(tally, contest.index, option.index))
            for contest in ctx.manifest.contests for option in contest.options]


def _ab(tally: EncryptedTally, contest: int, option: int):
    ct = tally.totals[(contest, option)]
    return ct.alpha, ct.beta


def challenged_statement(ctx: ElectionContext, rec: codec.BallotRecord) -> NonceStatement:
    """The ballot nonce's statement (decrypted with the data key), after checking its encryption proof."""
    ballot = rec.ballot
    statement = nonce_statement(ctx, ballot)
    verify_encrypted_nonce(ctx, statement.h_i, ballot.encrypted_nonce, f"ballot {ballot.ballot_id!r} nonce")
    return statement


def tally_record(ctx: ElectionContext, tally: EncryptedTally, results: Sequence[JointResult],
                 who: codec.Quorum) -> codec.DecryptedTallyRecord:
    """The decrypted tally from one joint decryption per option (in tally_statements order)."""
    group, manifest = ctx.group, ctx.manifest
    bound = max(1, tally.ballot_count * max(o.selection_limit for c in manifest.contests for o in c.options))
    solver = discrete_log(group, ctx.joint_key, bound)
    contests, pos = [], 0
    for contest in manifest.contests:
        options = []
        for option in contest.options:
            joint = results[pos]
            pos += 1
            t_power = t_power_from_m(group, tally.totals[(contest.index, option.index)].beta, joint.m)   # eq 82
            options.append(codec.TallyOptionRecord(option.index, option.label, solver.solve(t_power), t_power,
                                                   joint.challenge, joint.response, joint.shares))
        contests.append(codec.TallyContestRecord(contest.index, contest.label, tuple(options)))
    return codec.DecryptedTallyRecord(ctx.h_e, tally.ballot_count, who, tuple(contests))


def challenged_record(ctx: ElectionContext, rec: codec.BallotRecord, statement: NonceStatement, joint: JointResult,
                      who: codec.Quorum) -> codec.ChallengedRecord:
    """A challenged ballot opened through its decrypted ballot nonce (spec 3.6.7)."""
    ballot = rec.ballot
    ballot_nonce = decrypt_ballot_nonce(ctx, statement.h_i, ballot.encrypted_nonce, joint.m)      # eqs 35-37
    contests = []
    for ec in ballot.contests:
        contest = ctx.manifest.contest(ec.contest_index)
        solver = discrete_log(ctx.group, ctx.joint_key, max(1, max(o.selection_limit for o in contest.options)))
        opened = []
        for s, option in zip(ec.selections, contest.options):
            xi = nonce_for_selection(ctx, ballot, ballot_nonce, ec.contest_index, s.option_index)   # eq 33
            try:
                value = solver.solve(power_of_key_from_nonce(ctx.group, ctx.k_table, s.ciphertext, xi))  # eq 109
            except DecryptionError:
                raise DecryptionError(f"ballot {ballot.ballot_id!r} contest {ec.contest_index} option "
                                      f"{s.option_index}: the derived nonce does not open the selection") from None
            opened.append(codec.OpenedSelection(option.index, option.label, value, xi))
        contests.append(codec.OpenedContest(contest.index, contest.label, tuple(opened)))
    return codec.ChallengedRecord(ballot.ballot_id, ctx.h_e, who, joint.m, joint.challenge, joint.response,
                                  joint.shares, tuple(contests))


def write_decryptions(record: layout.Record, ctx: ElectionContext, decrypted: codec.DecryptedTallyRecord | None,
                      opened: Sequence[codec.ChallengedRecord], extra: dict[str, bytes] | None = None) -> None:
    """Add the decryptions to the record, ballots first and the tally last, then the index."""
    digests = {}
    for rec in opened:
        rel = layout.challenged_file(rec.ballot_id)
        digests[rel] = record.write_json(rel, codec.challenged_to_json(ctx.group, rec))
    for rel, data in (extra or {}).items():
        digests[rel] = record.write(rel, data)
    if decrypted is not None:
        digests[layout.DECRYPTED_TALLY] = record.write_json(layout.DECRYPTED_TALLY,
                                                            codec.decrypted_tally_to_json(ctx.group, decrypted))
    record.update_index((), digests)
