"""Encryption of plaintext ballots into signed ballot records, on every core, and a device's chaining state.

The chaining field enters only the confirmation code (eq 71), so the ballots
are encrypted in parallel (node.compute) and chained afterwards, in order.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from node.compute import map_tasks
from node.crypto.ballot import (
    BallotChain, EncryptedBallot, PlaintextBallot, confirmation_code, election_id, encrypt_ballot,
    identifier_hash, signature_content,
)
from node.crypto.ballot_signature import sign_ballot
from node.crypto.election import ElectionContext
from node.crypto.errors import GuardianError, InputError

from node.record import codec, layout

CHAIN_STATE = ".device-chains.json"
BULK_WINDOW_FROM = 64         # ballots per worker from which 12-bit fixed-base tables pay for themselves


def bulk_context(ctx: ElectionContext, ballots: int, workers: int) -> ElectionContext:
    """The context to encrypt `ballots` ballots on `workers` processes with: 12-bit tables for long runs."""
    if ballots / workers >= BULK_WINDOW_FROM:
        return ElectionContext(ctx.parameters, ctx.joint_key, ctx.joint_data_key, window=12)
    return ctx


def _encrypt_one(ctx: ElectionContext, task: tuple[PlaintextBallot, str]) -> EncryptedBallot | str:
    try:
        return encrypt_ballot(ctx, task[0], task[1])
    except GuardianError as e:
        return str(e)


def encrypt_many(ctx: ElectionContext, plaintexts: Sequence[PlaintextBallot], device: str,
                 workers: int | None = None, progress: Callable[[int, int], None] | None = None,
                 scheduler: str | None = None) -> Iterator[EncryptedBallot | str]:
    """Encrypt on every core (or on the Dask cluster of `scheduler`), in input order; each result is a ballot
    (unchained) or the refusal's reason."""
    return map_tasks(ctx, _encrypt_one, [(b, device) for b in plaintexts], workers, progress, scheduler)


def read_plaintexts(lines: Iterator[str]) -> tuple[list[PlaintextBallot], list[tuple[str, str]]]:
    """Parse JSON lines into plaintext ballots; bad lines become (what, reason) refusals."""
    ballots, refused, seen = [], [], {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        what = f"line {number}"
        try:
            obj = codec.load_json(line.encode("utf-8", "surrogatepass"), what)
            ballot = codec.plaintext_from_json(obj, what)
        except GuardianError as e:
            refused.append((what, str(e)))
            continue
        except UnicodeEncodeError:
            refused.append((what, "not valid UTF-8"))
            continue
        what = f"ballot {ballot.ballot_id!r} (line {number})"
        try:
            layout.check_ballot_id(ballot.ballot_id)
        except InputError as e:
            refused.append((what, str(e)))
            continue
        folded = ballot.ballot_id.lower()
        if folded in seen:
            refused.append((what, f"duplicate ballot id: the same as line {seen[folded]}"))
            continue
        seen[folded] = number
        ballots.append(ballot)
    return ballots, refused


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def encrypt_records(ctx: ElectionContext, plaintexts: Sequence[PlaintextBallot], device: str,
                    chain: BallotChain | None = None, workers: int | None = None,
                    progress: Callable[[int, int], None] | None = None, scheduler: str | None = None
                    ) -> Iterator[tuple[PlaintextBallot, codec.BallotRecord | str]]:
    """Encrypt, chain (when `chain` is given, advancing it) and sign; yield (plaintext, record or refusal)."""
    for plain, result in zip(plaintexts, encrypt_many(ctx, plaintexts, device, workers, progress, scheduler)):
        if isinstance(result, str):
            prefix = f"ballot {plain.ballot_id!r}: "
            yield plain, result[len(prefix):] if result.startswith(prefix) else result
            continue
        ballot = result
        h_i = identifier_hash(ctx.h_e, ballot.selection_identifier)                            # eq 32
        if chain is not None:
            field = chain.next_field()                                                          # eq 76
            code = confirmation_code(h_i, [c.contest_hash for c in ballot.contests], field)     # eq 71
            ballot = replace(ballot, chaining_field=field, confirmation_code=code)
            chain.advance(code)
        created = utc_now()
        signature = sign_ballot(ballot.ballot_id, election_id(ctx), signature_content(ctx, ballot, created))
        yield plain, codec.BallotRecord(ballot, codec.ENCRYPTED, ctx.h_e, created, h_i, signature)


def encrypt_into(out: Path, ctx: ElectionContext, plaintexts: Sequence[PlaintextBallot], device: str,
                 chain: BallotChain | None = None, workers: int | None = None,
                 progress: Callable[[int, int], None] | None = None, scheduler: str | None = None
                 ) -> Iterator[tuple[PlaintextBallot, codec.BallotRecord | str]]:
    """encrypt_records, each ballot written to out/<id>.json before it is yielded, with the chain's state."""
    for plain, rec in encrypt_records(ctx, plaintexts, device, chain, workers, progress, scheduler):
        if not isinstance(rec, str):
            layout.atomic_write(out / f"{rec.ballot_id}.json",
                                codec.canonical_bytes(codec.ballot_to_json(ctx.group, rec)))
            if chain is not None:      # saved after the ballot, so the state never runs ahead of the files
                save_chain(out, ctx, chain)
        yield plain, rec


def load_chain(out: Path, ctx: ElectionContext, device: str) -> BallotChain:
    """The chain of `device` as the ballots already encrypted into `out` left it (spec 3.4.4)."""
    path = out / CHAIN_STATE
    chain = BallotChain(ctx.h_e, device)
    if path.exists():
        state = codec.load_json(path.read_bytes(), str(path))
        if not isinstance(state, dict) or state.get("h_e") != codec.hex_hash(ctx.h_e):
            raise InputError(f"{path}: chaining state of another election; use another --out directory")
        last = state.get("devices", {}).get(device)
        if last is not None:
            chain.last = bytes.fromhex(last)
    return chain


def save_chain(out: Path, ctx: ElectionContext, chain: BallotChain) -> None:
    path = out / CHAIN_STATE
    state = {"h_e": codec.hex_hash(ctx.h_e), "devices": {}}
    if path.exists():
        state = json.loads(path.read_bytes())
    state["devices"][chain.device] = chain.last.hex().upper()
    layout.atomic_write(path, codec.canonical_bytes(state))
