"""One streaming pass over the ballot files of a record: every ballot's checks, and the aggregate of the cast.

The files are cut into batches; `check_batch` is the task, run on this machine's
process pool or on a Dask cluster (node.compute.executor): it reads its files
itself (workers must see the record's path), checks each ballot
(node.verifier.ballot_checks), and returns a small Summary per ballot (what the
record-wide steps need: id, state, device, chaining field, codes) and the
partial tally of its cast ballots (eq 79). The partial tallies meet in a tree
(node.compute.tree_reduce). Nothing holds every ballot: memory grows only by
the summaries.

With a BallotCache (node/storage/ballot_cache.py), a file checked before (same
SHA-256, as the record's index gives it, same election, same verifier version)
is not checked again, and a batch of cast files multiplied before is not
multiplied again; a cached file outside such a batch is only read and
multiplied. The record index step checks every file against the index's
digest, so a file changed behind the index fails the record there.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgpack
from gmpy2 import mpz

from node.cluster import ClusterUnavailable
from node.compute import Executor, tree_reduce
from node.crypto.election import ElectionContext
from node.crypto.elgamal import Ciphertext
from node.crypto.errors import GuardianError, InputError
from node.crypto.params import STANDARD
from node.crypto.tally import EncryptedTally, combine_tallies, partial_tally
from node.record import codec, layout
from node.storage.ballot_cache import BallotCache
from node.verifier.ballot_checks import Found, check_ballot

MAX_BATCH = 64              # ballots per task at most: about half a minute of one core on a long ballot
PRODUCT_MEMBERS = 1024      # cast files per stored product: about 70 bytes of it per file on 68 options
TASKS_PER_WORKER = 4        # at least this many tasks per worker, so the last ones do not leave cores idle
STORE_EVERY = 256           # summaries per cache transaction

# What decides what a ballot's checks find: every module of these packages and files, and these libraries.
# A change to any of them changes the version, so no result outlives the code that computed it.
_VERSIONED_CODE = ("crypto", "verifier", "record/codec.py", "record/layout.py", "record/election.py", "compute.py")
_VERSIONED_LIBRARIES = ("gmpy2", "pynacl", "cryptography", "msgpack", "borsh-construct")


@cache
def verifier_version() -> str:
    """The package's release and a digest of its checking code and of the libraries' versions."""
    package = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for part in _VERSIONED_CODE:
        path = package / part
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.relative_to(package).as_posix().encode() + b"\x00" + f.read_bytes())
    for name in _VERSIONED_LIBRARIES:
        try:
            h.update(f"{name}={metadata.version(name)}".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name}=absent".encode())
    try:
        release = metadata.version("guardian-node")
    except metadata.PackageNotFoundError:
        release = "unreleased"
    return f"{release}+{h.hexdigest()[:16]}"


def cache_scope(h_e: bytes) -> bytes:
    """What every cache key of one election and one verifier version starts from."""
    return hashlib.sha256(b"guardian-node ballot checks\x00" + h_e + verifier_version().encode()).digest()


def check_key(scope: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(scope + digest).digest()


@dataclass(slots=True)
class Summary:
    """What the record-wide steps need of one ballot, and what its own checks found."""

    rel: str
    digest: bytes                   # the file's SHA-256
    ballot_id: str
    state: str
    h_e: bytes
    selection_identifier: int
    device: str
    chaining_field: bytes
    confirmation_code: bytes
    contests: tuple[int, ...]
    found: dict[str, Found] | None           # None once the pass has counted it and it held no failure

    def to_bytes(self) -> bytes:
        return msgpack.packb([self.ballot_id, self.state, self.h_e, int(self.selection_identifier).to_bytes(32, "big"),
                              self.device, self.chaining_field, self.confirmation_code, list(self.contests),
                              [[name, *found] for name, found in self.found.items()]], use_bin_type=True)

    @classmethod
    def from_bytes(cls, data: bytes, rel: str, digest: bytes) -> "Summary":
        bid, state, h_e, sid, device, chaining, code, contests, found = msgpack.unpackb(data, raw=False)
        return cls(rel, digest, bid, state, h_e, int.from_bytes(sid, "big"), device, chaining, code, tuple(contests),
                   {name: (items, list(failures), 0.0) for name, items, failures, _ in found})


@dataclass(frozen=True)
class BallotFile:
    rel: str
    check: bool          # run its checks (else its summary is known from the cache)
    multiply: bool       # multiply it into the batch's tally if it is cast


@dataclass
class BatchResult:
    summaries: list[Summary]
    errors: list[tuple[str, str]]            # (rel, why) for a file that could not be read as a ballot
    tally: EncryptedTally | None             # of the cast ballots multiplied in
    members: list[bytes]                     # their files' SHA-256s, in the order multiplied
    seconds: float = 0.0
    version: str = ""                        # the verifier that ran the task


def _summary(rec: codec.BallotRecord, rel: str, digest: bytes, found: dict[str, Found]) -> Summary:
    b = rec.ballot
    return Summary(rel, digest, b.ballot_id, rec.state, rec.h_e, int(b.selection_identifier), b.device,
                   b.chaining_field, b.confirmation_code, tuple(c.contest_index for c in b.contests), found)


def check_batch(ctx: ElectionContext, task: tuple[str, tuple[BallotFile, ...]]) -> BatchResult:
    """The task: read, check and multiply the files of one batch. Never raises for a bad file."""
    start = time.perf_counter()
    root, files = task
    record = layout.Record(Path(root))
    summaries, errors, cast, members = [], [], [], []
    for f in files:
        try:
            data = record.read(f.rel)
            rec = codec.ballot_from_json(STANDARD, codec.load_json(data, f.rel), f.rel)
        except GuardianError as e:
            why = str(e)
            errors.append((f.rel, why if why.startswith(f.rel) else f"{f.rel}: {why}"))
            continue
        digest = hashlib.sha256(data).digest()
        if f.check:
            summaries.append(_summary(rec, f.rel, digest, check_ballot(ctx, rec)))
        if f.multiply and rec.state == codec.CAST:
            cast.append(rec)
            members.append(digest)
    tally = partial_tally(ctx.group, (rec.ballot for rec in cast)) if cast else None
    return BatchResult(summaries, errors, tally, members, time.perf_counter() - start, verifier_version())


@dataclass
class Pass:
    """What the pass over every ballot file found."""

    summaries: dict[str, Summary]                       # by ballot id; a second file for an id is an error
    errors: dict[str, str]                              # by path
    tally: EncryptedTally | None                        # of every cast ballot
    cast: int
    wall: float
    cached: int = 0                                      # ballots whose checks came from the cache
    files: int = 0
    cpu: float = field(default=0.0)
    totals: dict[str, list] = field(default_factory=dict)    # check -> [items, seconds] over every ballot
    failing: list[Summary] = field(default_factory=list)     # the ballots whose checks failed somewhere

    def count(self, s: Summary) -> None:
        """Add one ballot's findings to the totals; keep them only if one failed (most ballots hold none, and
        memory then grows by the few fields the record-wide steps need)."""
        failed = False
        for name, (items, failures, seconds) in s.found.items():
            t = self.totals.setdefault(name, [0, 0.0])
            t[0] += items
            t[1] += seconds
            failed = failed or bool(failures)
        if failed:
            self.failing.append(s)
        else:
            s.found = None

    def report(self, check: Callable, acc) -> None:
        """Add the findings of `check` on every ballot, its failures in file order, and its share of the wall
        time."""
        items, share = self.totals.get(check.__name__, (0, 0.0))
        acc.items += items
        for s in sorted(self.failing, key=lambda s: s.rel):
            for f in s.found.get(check.__name__, (0, [], 0.0))[1]:
                acc.fail(f)
        acc.seconds += self.wall * share / self.cpu if self.cpu > 0 else share

    def note(self) -> str:
        return (f"{self.cached} of {self.files} ballots checked before (verification cache)" if self.cached else "")


def batch_size(files: int, workers: int) -> int:
    return max(1, min(MAX_BATCH, files // (TASKS_PER_WORKER * max(1, workers)) or 1))


def _batches(root: str, files: list[BallotFile], size: int) -> Iterator[tuple[str, tuple[BallotFile, ...]]]:
    for start in range(0, len(files), size):
        yield root, tuple(files[start:start + size])


def tally_to_bytes(tally: EncryptedTally) -> bytes:
    return msgpack.packb([tally.ballot_count, [[c, o, int(ct.alpha).to_bytes(512, "big"), int(ct.beta).to_bytes(512, "big")]
                                               for (c, o), ct in sorted(tally.totals.items())]], use_bin_type=True)


def tally_from_bytes(data: bytes) -> EncryptedTally:
    count, totals = msgpack.unpackb(data, raw=False)
    return EncryptedTally({(c, o): Ciphertext(mpz(int.from_bytes(a, "big")), mpz(int.from_bytes(b, "big")))
                           for c, o, a, b in totals}, count)


def run_pass(ctx: ElectionContext, record: layout.Record, executor: Executor, cache: BallotCache | None = None,
             progress: Callable[[int, int], None] | None = None) -> Pass:
    """Check every ballot file of `record` (those the cache knows excepted) and multiply the cast ones."""
    start = time.perf_counter()
    rels = record.list_dir(layout.BALLOTS)
    try:
        index = record.read_index()
    except GuardianError:
        index = {}                          # the record index step says why
    digests = {rel: bytes.fromhex(index[rel]) for rel in rels if rel in index}
    indexed = set(digests.values())
    known: dict[str, Summary] = {}
    covered: list[int] = []                  # the stored batches that stand for some cast files
    scope = cache_scope(ctx.h_e)
    version = verifier_version()
    if cache is not None:
        keys = {check_key(scope, d): rel for rel, d in digests.items()}
        for key, found in cache.found(keys).items():
            rel = keys[key]
            known[rel] = Summary.from_bytes(found, rel, digests[rel])
        covered_rels = _cover(cache, scope, known, digests, covered)
    else:
        covered_rels = set()
    # A file checked before is still read to be multiplied if it is cast and no stored batch covers it.
    files = [BallotFile(rel, rel not in known, rel not in covered_rels and (rel not in known or
                                                                            known[rel].state == codec.CAST))
             for rel in rels]
    files = [f for f in files if f.check or f.multiply]
    size = batch_size(sum(f.check for f in files), executor.workers)
    results = executor.imap(check_batch, _batches(str(record.root), files, size))

    out = Pass({}, {}, None, 0, 0.0, files=len(rels), cached=len(known))
    for summary in known.values():
        out.count(summary)
    fresh: list[tuple[bytes, bytes]] = []
    product = _Products(ctx, scope)
    done = 0

    def tallies() -> Iterator[EncryptedTally]:
        nonlocal done
        for rowid in covered:
            data = cache.product(rowid)
            if data is None:
                raise InputError(f"{cache.path}: a stored product of cast ballots can no longer be read; "
                                 f"verify again without --cache")
            yield tally_from_bytes(data)
        for r in results:
            _same_version(r, version)
            out.cpu += r.seconds
            for s in r.summaries:
                known[s.rel] = s
                if cache is not None and s.digest == digests.get(s.rel):
                    fresh.append((check_key(scope, s.digest), s.to_bytes()))
                out.count(s)
            for rel, why in r.errors:
                out.errors[rel] = why
            if r.tally is not None:
                if cache is not None and all(d in indexed for d in r.members):
                    product.add(r.tally, r.members)
                yield r.tally
            done += len(r.summaries) + len(r.errors)
            if cache is not None and (len(fresh) >= STORE_EVERY or product.full()):
                cache.store(fresh, product.take())
                fresh.clear()
            if progress:
                progress(min(done + out.cached, len(rels)), len(rels))

    out.tally = tree_reduce(lambda a, b: combine_tallies(ctx, a, b), tallies())
    if cache is not None:
        cache.store(fresh, product.take())
    out.cast = out.tally.ballot_count if out.tally else 0
    for s in sorted(known.values(), key=lambda s: s.rel):
        first = out.summaries.get(s.ballot_id)
        if first is not None:     # multiplied in all the same: the aggregation fails too, as it should
            out.errors[s.rel] = f"{s.rel}: ballot {s.ballot_id!r} is also in {first.rel}"
        else:
            out.summaries[s.ballot_id] = s
    out.wall = time.perf_counter() - start
    return out


class _Products:
    """Partial tallies of cast files gathered into one stored product per PRODUCT_MEMBERS files: few rows,
    each small beside the files it stands for."""

    def __init__(self, ctx: ElectionContext, scope: bytes) -> None:
        self.ctx, self.scope = ctx, scope
        self.tally: EncryptedTally | None = None
        self.members: list[bytes] = []

    def add(self, tally: EncryptedTally, members: list[bytes]) -> None:
        self.tally = tally if self.tally is None else combine_tallies(self.ctx, self.tally, tally)
        self.members += members

    def full(self) -> bool:
        return len(self.members) >= PRODUCT_MEMBERS

    def take(self) -> list[tuple[bytes, bytes, bytes]]:
        """The (scope, members, product) row to store, if any, and start again."""
        if self.tally is None or len(set(self.members)) != len(self.members):
            rows = []
        else:
            rows = [(self.scope, b"".join(self.members), tally_to_bytes(self.tally))]
        self.tally, self.members = None, []
        return rows


def _same_version(result: BatchResult, version: str) -> None:
    """A worker with other code would store its findings under this version's key: refuse it."""
    if result.version != version:
        raise ClusterUnavailable(f"a worker runs verifier {result.version}, this machine {version}: install "
                                 f"the same guardian-node on every worker")


def _cover(cache: BallotCache, scope: bytes, known: dict[str, Summary], digests: dict[str, bytes],
           covered: list[int]) -> set[str]:
    """The cast files whose product the cache holds, in disjoint batches chosen by their members alone; the
    batches' ids appended to `covered` (their products are read one at a time, as the tally needs them)."""
    cast = {digests[rel]: rel for rel, s in known.items() if s.state == codec.CAST}
    taken: set[bytes] = set()
    for rowid, members in cache.batches(scope):
        ds = [members[i:i + 32] for i in range(0, len(members), 32)]
        if ds and len(set(ds)) == len(ds) and all(d in cast and d not in taken for d in ds):
            taken.update(ds)
            covered.append(rowid)
    return {cast[d] for d in taken}


@dataclass
class Followed:
    """One round of checking ahead: the ballots newly checked, and the failures they showed."""

    checked: int
    failures: list[str]
    known: int                   # ballots of this round's list the cache already had


def check_ahead(ctx: ElectionContext, record: layout.Record, files: list[tuple[str, bytes]], executor: Executor,
                cache: BallotCache, progress: Callable[[int, int], None] | None = None) -> Followed:
    """Check the ballot files (rel, SHA-256 the ballot box's journal names) the cache does not know yet, and
    store what they showed and the products of their cast batches, for the verifier to find later."""
    scope = cache_scope(ctx.h_e)
    digests = dict(files)
    known = cache.found(check_key(scope, d) for _, d in files)
    todo = [BallotFile(rel, True, True) for rel, d in files if check_key(scope, d) not in known]
    out = Followed(0, [], len(files) - len(todo))
    size = batch_size(len(todo), executor.workers)
    product = _Products(ctx, scope)
    version = verifier_version()
    for r in executor.imap(check_batch, _batches(str(record.root), todo, size)):
        _same_version(r, version)
        fresh = [(check_key(scope, s.digest), s.to_bytes()) for s in r.summaries if s.digest == digests.get(s.rel)]
        if r.tally is not None:
            product.add(r.tally, r.members)
        cache.store(fresh, product.take() if product.full() else [])
        for s in r.summaries:
            if s.digest != digests.get(s.rel):
                out.failures.append(f"{s.rel}: is not the file the ballot box accepted (its SHA-256 differs)")
            for _, failures, _ in s.found.values():
                out.failures += failures
        out.failures += [why for _, why in r.errors]
        out.checked += len(r.summaries)
        if progress:
            progress(out.checked, len(todo))
    cache.store([], product.take())          # the round's cast ballots: one product
    return out
