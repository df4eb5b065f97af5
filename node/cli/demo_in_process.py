"""`guardian demo`: a whole election in one process, on the standard parameters.

Five guardians make the election key (any three can decrypt), voters' ballots
are encrypted with every proof and signed, two are challenged, the cast ones are
tallied, and the tally and the challenged ballots are decrypted with two
guardians missing. Every proof is checked on the way, and the decrypted tally is
compared with the plaintext ballots the demo made up.
"""

from __future__ import annotations

import datetime
import importlib.resources
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from node.crypto.ballot import PlaintextBallot, election_id, encrypt_ballot, signature_content
from node.crypto.ballot_signature import sign_ballot, verify_ballot_signature
from node.crypto.challenged import decrypt_challenged_ballot, verify_challenged_ballot
from node.crypto.election import ElectionContext, ElectionParameters
from node.crypto.errors import GuardianError
from node.crypto.local_ceremony import run_local_ceremony
from node.crypto.manifest import Manifest, parse_manifest
from node.crypto.params import STANDARD, validate_group
from node.crypto.tally import decrypt_tally, tally_ballots, verify_tally
from node.compute import verify_ballots


def load_demo_manifest() -> Manifest:
    """The embedded demo manifest (8 contests, 68 options), shipped with the package."""
    data = importlib.resources.files("node").joinpath("data/demo-manifest.json").read_bytes()
    return parse_manifest(data)


def random_ballots(manifest: Manifest, count: int, rng: random.Random, prefix: str = "ballot", digits: int = 3,
                   start: int = 1) -> list[PlaintextBallot]:
    """Plausible voters: each contest gets between none and the limit of distinct options; ids PREFIX-NNN."""
    ballots = []
    for number in range(start, start + count):
        style = rng.choice(manifest.ballot_styles)
        choices = {}
        for index in style.contests:
            contest = manifest.contest(index)
            picks = rng.sample(contest.options, rng.randint(0, min(contest.selection_limit, len(contest.options))))
            if picks:
                choices[contest.label] = {o.label: 1 for o in picks}
        ballots.append(PlaintextBallot(f"{prefix}-{number:0{digits}d}", style.label, choices))
    return ballots


@dataclass
class DemoOptions:
    n: int = 5
    k: int = 3
    ballots: int = 20
    challenged: int = 2
    missing: tuple[int, ...] | None = None   # None: pick n - k at random
    compensated: bool = False
    seed: int | None = None
    manifest: Manifest | None = None
    record: Path | None = None               # also write the complete election record here
    out: TextIO = field(default=sys.stdout)


class _Narrator:
    def __init__(self, out: TextIO) -> None:
        self.out, self.start = out, time.perf_counter()

    def say(self, text: str) -> None:
        self.out.write(f"[{time.perf_counter() - self.start:6.1f}s] {text}\n")
        self.out.flush()


def run_demo(options: DemoOptions) -> int:
    """Run the election; return 0 when every check passed. Raises GuardianError on a failed check."""
    say = _Narrator(options.out).say
    out = options.out
    seed = options.seed if options.seed is not None else secrets.randbits(32)
    voters = random.Random(seed)   # drives only who votes for what and who is missing; keys use the OS RNG
    manifest = options.manifest or load_demo_manifest()
    n, k = options.n, options.k
    if not 1 <= options.challenged <= options.ballots - 1:
        raise GuardianError("need at least one challenged and one cast ballot")
    missing = tuple(sorted(options.missing if options.missing is not None else voters.sample(range(1, n + 1), n - k)))
    present = [i for i in range(1, n + 1) if i not in missing]
    if len(present) < k:
        raise GuardianError(f"only {len(present)} guardians present, the quorum is {k}")

    say(f"Election: {manifest.label!r}, {len(manifest.contests)} contests, "
        f"{sum(len(c.options) for c in manifest.contests)} options (voter seed {seed})")
    validate_group(STANDARD)
    say("Parameters: ElectionGuard 2.1 standard group (4096-bit p, q = 2^256 - 189) validated")
    parameters = ElectionParameters(STANDARD, n, k, manifest)

    say(f"Key ceremony: {n} guardians, any {k} can decrypt")
    ceremony = run_local_ceremony(parameters)
    say(f"  every guardian's key proofs and every share checked; H_G {ceremony.record_hash.hex()[:16]}...")
    ctx = ElectionContext(parameters, ceremony.context.joint_key, ceremony.context.joint_data_key, window=12)
    say(f"  joint key K {int(ctx.joint_key):x}"[:60] + f"...  H_E {ctx.h_e.hex()[:16]}...")

    plaintexts = random_ballots(manifest, options.ballots, voters)
    say(f"Encrypting {len(plaintexts)} ballots with all proofs, confirmation codes and seed-003 signatures")
    issue_date = datetime.date.today().isoformat()
    encrypted, signatures = [], []
    for ballot in plaintexts:
        enc = encrypt_ballot(ctx, ballot, device="demo-device-1")
        encrypted.append(enc)
        signatures.append(sign_ballot(enc.ballot_id, election_id(ctx), signature_content(ctx, enc, issue_date)))
    say(f"  first confirmation code {encrypted[0].confirmation_code.hex()[:24]}...")

    say("Verifying every ballot: proofs of every selection and contest limit, codes, signatures (all cores)")
    failures = verify_ballots(ctx, encrypted)
    for enc, failure in zip(encrypted, failures):
        if failure:
            raise GuardianError(f"ballot {enc.ballot_id} refused: {failure}")
    for enc, sig in zip(encrypted, signatures):
        verify_ballot_signature(enc.ballot_id, election_id(ctx), signature_content(ctx, enc, issue_date), sig)
    say(f"  {len(encrypted)} ballots valid, {len(signatures)} signatures valid")

    challenged_ids = set(b.ballot_id for b in voters.sample(plaintexts, options.challenged))
    cast = [e for e in encrypted if e.ballot_id not in challenged_ids]
    challenged = [e for e in encrypted if e.ballot_id in challenged_ids]
    say(f"Ballot box: {len(cast)} cast, {len(challenged)} challenged ({', '.join(sorted(challenged_ids))})")

    tally = tally_ballots(ctx, cast)
    form = "compensated" if options.compensated else "standard"
    say(f"Decrypting the tally with guardians {present}; missing: {list(missing)} ({form} form)")
    vote_keys = {i: ceremony.guardian_keys[i].vote for i in present}
    decrypted = decrypt_tally(ctx, ceremony.vote_publics(), vote_keys, tally, compensated=options.compensated)
    verify_tally(ctx, cast, tally, decrypted)
    say("  aggregation, every decryption proof and the tally's contents verified (Verifications 9-11)")

    data_keys = {i: ceremony.guardian_keys[i].data for i in present}
    by_id = {b.ballot_id: b for b in plaintexts}
    for enc in challenged:
        opened = decrypt_challenged_ballot(ctx, ceremony.data_publics(), data_keys, enc,
                                           compensated=options.compensated)
        verify_challenged_ballot(ctx, enc, opened)
        if _selections(ctx, opened) != _expected(manifest, [by_id[enc.ballot_id]]):
            raise GuardianError(f"challenged ballot {enc.ballot_id} does not decrypt to what the voter chose")
        say(f"  challenged {enc.ballot_id}: decrypted, verified (Verifications 13-14), matches the voter's choices")

    expected = _expected(manifest, [by_id[e.ballot_id] for e in cast])
    got = {key: d.value for key, d in decrypted.options.items() if d.value}
    if got != expected:
        raise GuardianError("the decrypted tally does not match the plaintext ballots")
    _print_table(out, manifest, decrypted.options, len(cast))
    out.write(f"\nMissing guardians at decryption: {', '.join(f'Guardian {j}' for j in missing) or 'none'}. "
              f"Decrypted by guardians {', '.join(map(str, present))} ({form} form).\n")
    say("Every proof verified; the decrypted tally equals the sum of the cast plaintext ballots.")
    if options.record is not None:
        _write_record(options.record, ceremony, ctx, encrypted, signatures, issue_date, challenged_ids, present,
                      options.compensated, manifest.label, say)
    return 0


def _write_record(root: Path, ceremony, ctx: ElectionContext, encrypted, signatures, issue_date: str,
                  challenged_ids: set, present: list, compensated: bool, info: str, say) -> None:
    from node.crypto.ballot import identifier_hash
    from node.record import codec
    from node.record.local import export_demo_record

    say(f"Writing the election record to {root}")
    ballots = [codec.BallotRecord(enc, codec.ENCRYPTED, ctx.h_e, issue_date,
                                  identifier_hash(ctx.h_e, enc.selection_identifier), sig)
               for enc, sig in zip(encrypted, signatures)]
    export_demo_record(root, ceremony, ballots, challenged_ids, present, compensated, info, issue_date, say)


def _expected(manifest: Manifest, ballots: list[PlaintextBallot]) -> dict:
    totals: dict = {}
    for ballot in ballots:
        for contest_label, options in ballot.choices.items():
            contest = manifest.contest_by_label(contest_label)
            for option_label, value in options.items():
                key = (contest.index, contest.option_by_label(option_label).index)
                totals[key] = totals.get(key, 0) + value
    return {key: v for key, v in totals.items() if v}


def _selections(ctx: ElectionContext, opened) -> dict:
    return {(ci, s.option_index): s.value for ci, sel in opened.contests.items() for s in sel if s.value}


def _print_table(out: TextIO, manifest: Manifest, options: dict, cast_count: int) -> None:
    width = max(len(o.label) for c in manifest.contests for o in c.options) + 2
    out.write(f"\nElection result ({cast_count} cast ballots)\n")
    for contest in manifest.contests:
        out.write(f"\n  {contest.label} (vote for up to {contest.selection_limit})\n")
        total = sum(options[(contest.index, o.index)].value for o in contest.options) or 1
        for option in contest.options:
            votes = options[(contest.index, option.index)].value
            bar = "#" * round(20 * votes / total)
            out.write(f"    {option.label:<{width}}{votes:>5}  {bar}\n")
