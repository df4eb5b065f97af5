"""Verifications 13 and 14: every challenged ballot, its decrypted nonce and its decrypted contents."""

from __future__ import annotations

from node.crypto.ballot import (
    confirmation_code, contest_hash, decrypt_ballot_nonce, identifier_hash, nonce_for_selection,
)
from node.crypto.challenged import nonce_statement
from node.crypto.decryption import PublicShares
from node.crypto.elgamal import encrypt
from node.crypto.errors import GuardianError
from node.crypto.manifest import Manifest
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.verifier.ballots import every_ballot
from node.verifier.decryptions import Decryption, check_decryptions, quorum_failures
from node.verifier.registry import Accumulator, Run, every_key_verified, step


def _challenged(run: Run) -> list[tuple[str, codec.BallotRecord, codec.ChallengedRecord | None]]:
    """Every ballot the record marks challenged, in id order, with its decryption when the record has one.

    Challenged ballots are few: these are read again whole (the pass kept only their summaries)."""
    data = run.data
    out = []
    for bid, s in sorted(every_ballot(run).summaries.items()):
        if s.state == codec.CHALLENGED:
            rec = codec.ballot_from_json(STANDARD, data.record.read_json(s.rel), s.rel)
            out.append((bid, rec, data.challenged[bid][1] if bid in data.challenged else None))
    return out


def _quorum_failures(run: Run, opened: codec.ChallengedRecord) -> list[str]:
    params = run.election.parameters
    return quorum_failures(opened.quorum, params.n, params.k, f"challenged ballot {opened.ballot_id!r}")


def _contents_failures(manifest: Manifest, ballot, opened: codec.ChallengedRecord, who: str) -> list[str]:
    """Verification 14 for one challenged ballot; none when the openings line up with the ballot."""
    try:
        style = manifest.ballot_style(ballot.style_index)
    except GuardianError:
        return [f"{who}: unknown ballot style {ballot.style_index}"]
    have = [c.contest_index for c in opened.contests]
    if have != sorted(style.contests) or have != [c.contest_index for c in ballot.contests]:   # (14.A), (14.B)
        return [f"{who}: decrypted contests {have} are not those of ballot style {style.label!r} "
                f"({sorted(style.contests)}) (14.A, 14.B)"]
    failures = []
    for oc in opened.contests:
        contest = manifest.contest(oc.contest_index)
        where = f"{who} contest {contest.index}"
        if oc.label != contest.label:
            failures.append(f"{where}: label {oc.label!r} is not the manifest's {contest.label!r} (14.A)")
        if [s.option_index for s in oc.selections] != [o.index for o in contest.options]:   # (14.C), (14.D)
            failures.append(f"{where}: options {[s.option_index for s in oc.selections]} are not the manifest's "
                            f"(14.C, 14.D)")
            continue
        for s, option in zip(oc.selections, contest.options):
            if s.label != option.label:
                failures.append(f"{where} option {option.index}: label {s.label!r} is not the manifest's "
                                f"{option.label!r} (14.C)")
            if not 0 <= s.selection <= option.selection_limit:                               # (14.E)
                failures.append(f"{where} option {option.index}: selection {s.selection} is not in "
                                f"0..{option.selection_limit} (14.E)")
        total = sum(s.selection for s in oc.selections)
        if total > contest.selection_limit:                                                  # (14.F)
            failures.append(f"{where}: {total} selections exceed the contest's limit {contest.selection_limit} "
                            f"(14.F)")
    return failures


@step("13", "challenged ballot decryption", needs=every_key_verified,
      unmet="cannot check decryptions without every guardian's verified key (steps 1-3)", of_decryptions=True)
def challenged_ballot_decryption(run: Run, acc: Accumulator) -> None:
    """The joint proofs of the ballot nonces (batched), and the nonces reproduce the ballots' encryptions."""
    data, el = run.data, run.election
    ctx = el.context
    for err in data.errors_in(layout.CHALLENGED):
        acc.fail(err)
    marked = _challenged(run)
    challenged = {bid for bid, _, _ in marked}
    for bid in sorted(set(data.challenged) - challenged):
        if bid in every_ballot(run).summaries:
            acc.fail(f"ballot {bid!r}: a cast ballot has been decrypted ({layout.challenged_file(bid)}); "
                     f"cast ballots must not be")
        else:
            acc.fail(f"challenged ballot {bid!r}: decrypted, but the record has no such ballot")
    publics = PublicShares(STANDARD, {i: pk.data_commitments for i, pk in el.keys.items()})
    pairs, decryptions, elements = [], [], {}
    for bid, rec, opened in marked:
        acc.items += 1
        who = f"challenged ballot {bid!r}"
        if opened is None:
            acc.fail(f"{who}: has no decryption in the record ({layout.challenged_file(bid)})")
            continue
        bad_quorum = _quorum_failures(run, opened)
        for f in bad_quorum:
            acc.fail(f)
        if bad_quorum:
            continue
        elements[who] = [(opened.beta, f"{who} nonce beta"), (rec.ballot.encrypted_nonce.c0, f"{who} nonce C0")]
        decryptions.append(Decryption(f"{who} nonce", nonce_statement(ctx, rec.ballot), rec.ballot.encrypted_nonce.c0,
                                      "K-hat", opened.beta, opened.challenge, opened.response, opened.shares))
        pairs.append((rec, opened))
    failed: set[str] = set()
    for quorum in dict.fromkeys(o.quorum for _, o in pairs):    # usually one: every decryption by the same guardians
        group = [(d, o) for d, (_, o) in zip(decryptions, pairs) if o.quorum == quorum]
        group_elements = [e for _, o in group for e in elements[f"challenged ballot {o.ballot_id!r}"]]
        failed |= check_decryptions(ctx, publics, quorum, [d for d, _ in group], group_elements, acc)
    for rec, opened in pairs:
        b = rec.ballot
        who = f"challenged ballot {b.ballot_id!r}"
        if f"{who} nonce" in failed or _contents_failures(ctx.manifest, b, opened, who):
            continue
        h_i = identifier_hash(ctx.h_e, b.selection_identifier)                          # eq 32
        xi_b = decrypt_ballot_nonce(ctx, h_i, b.encrypted_nonce, opened.beta)           # eqs 35-37
        hashes = []
        for ec, oc in zip(b.contests, opened.contests):
            recomputed = []
            for s, o in zip(ec.selections, oc.selections):
                where = f"{who} contest {ec.contest_index} option {s.option_index}"
                if nonce_for_selection(ctx, b, xi_b, ec.contest_index, s.option_index) != o.nonce:   # eq 33
                    acc.fail(f"{where}: the nonce is not the one derived from the decrypted ballot nonce (eq 33)")
                ct = encrypt(ctx.g_table, ctx.k_table, o.selection, o.nonce)             # (13.1), (13.2)
                if ct != s.ciphertext:
                    acc.fail(f"{where}: selection {o.selection} with the published nonce does not reproduce "
                             f"the encryption (13.1, 13.2)")
                recomputed.append(ct)
            hashes.append(contest_hash(ctx, h_i, ec.contest_index, recomputed))         # (13.3)
        if confirmation_code(h_i, hashes, b.chaining_field) != b.confirmation_code:     # (13.B)
            acc.fail(f"{who}: the confirmation code does not follow from the decrypted selections (13.B)")


@step("14", "challenged ballot contents", needs=every_key_verified,
      unmet="cannot check challenged ballots without the election (steps 1-4)", of_decryptions=True)
def challenged_ballot_contents(run: Run, acc: Accumulator) -> None:
    """The decrypted contests and options are the ballot style's, with selections within their limits."""
    for bid, rec, opened in _challenged(run):
        acc.items += 1
        if opened is None:
            acc.fail(f"challenged ballot {bid!r}: has no decryption in the record, so no contents to check")
            continue
        if _quorum_failures(run, opened):
            continue                                    # reported by step 13: the decryption itself is invalid
        for f in _contents_failures(run.election.context.manifest, rec.ballot, opened, f"challenged ballot {bid!r}"):
            acc.fail(f)
