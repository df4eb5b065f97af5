"""Election records for tests and benchmarks, built in one process on the standard parameters.

`build_record` makes a local election (every secret in one place: test-only),
encrypts random ballots, puts them through the ballot box, closes it with the
tally and, if asked, decrypts. A small manifest keeps a ballot cheap; the
benchmarks pass the 68-option one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

from node.cli.demo_in_process import random_ballots
from node.crypto.ballot import PlaintextBallot
from node.crypto.election import ElectionContext
from node.crypto.manifest import Manifest, parse_manifest
from node.crypto.params import STANDARD
from node.record import codec
from node.record.ballot_box import BallotBox, Submission
from node.record.encrypt import encrypt_records
from node.record.local import create_local_election, decrypt_local

SMALL_MANIFEST = {
    "label": "Small record",
    "contests": [
        {"label": "Mayor", "options": [{"label": "Ada"}, {"label": "Grace"}]},
        {"label": "Council", "selection_limit": 2,
         "options": [{"label": "Alan"}, {"label": "Barbara"}, {"label": "Claude"}]},
    ],
    "ballot_styles": [{"label": "all", "contests": [1, 2]}],
}


def small_manifest() -> Manifest:
    return parse_manifest(SMALL_MANIFEST)


def random_plaintexts(manifest: Manifest, count: int, rng: random.Random, prefix: str = "b",
                      start: int = 1) -> list[PlaintextBallot]:
    """The demo's voters, with ids PREFIX-0000001 and on."""
    return random_ballots(manifest, count, rng, prefix, 7, start)


def encrypted_submissions(ctx: ElectionContext, plaintexts, challenged: set[str], workers: int | None = None,
                          device: str = "booth-1") -> Iterator[Submission]:
    for plain, rec in encrypt_records(ctx, list(plaintexts), device, None, workers=workers):
        if isinstance(rec, str):
            raise RuntimeError(f"ballot {plain.ballot_id}: {rec}")
        state = codec.CHALLENGED if rec.ballot_id in challenged else codec.CAST
        yield Submission(rec.ballot_id, codec.canonical_bytes(codec.ballot_to_json(STANDARD, rec)), state)


def build_record(root: Path, secrets: Path, ballots: int = 6, challenged: int = 1, manifest: Manifest | None = None,
                 decrypt: bool = False, close: bool = True, seed: int = 1, workers: int | None = None,
                 chunk: int = 256) -> ElectionContext:
    """A record at `root` (3 guardians, quorum 2) with `ballots` ballots, the first `challenged` of them
    challenged; tallied when `close`, decrypted by guardians 1 and 3 when `decrypt`."""
    manifest = manifest or small_manifest()
    create_local_election(root, secrets, manifest, 3, 2, manifest.label, "2025-01-01")
    with BallotBox.open(root) as box:
        ctx = box.ctx
        add_ballots(box, ballots, challenged, random.Random(seed), workers, chunk)
        if close:
            box.tally()
    if decrypt:
        decrypt_local(root, secrets, missing=[2], compensated=False)
    return ctx


def add_ballots(box: BallotBox, count: int, challenged: int = 0, rng: random.Random | None = None,
                workers: int | None = None, chunk: int = 256, start: int = 1) -> None:
    """Encrypt and submit `count` more ballots, `chunk` at a time (memory stays flat)."""
    rng = rng or random.Random(1)
    names = {f"b-{n:07d}" for n in range(start, start + challenged)}
    for first in range(start, start + count, chunk):
        plains = list(random_plaintexts(box.ctx.manifest, min(chunk, start + count - first), rng, start=first))
        outcomes = box.submit(list(encrypted_submissions(box.ctx, plains, names, workers)), workers)
        refused = [o for o in outcomes if not o.accepted]
        if refused:
            raise RuntimeError(f"{refused[0].ballot_id}: {refused[0].reason}")
