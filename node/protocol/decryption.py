"""Threshold decryption across guardian nodes as a sans-I/O state machine (spec 3.6.3-3.6.5).

Like the ceremony, two objects, so that no guardian gets special treatment:

  DecryptionTranscript  the public part. Every message, ours included, goes through
                        receive(), which checks it as it would a peer's. It knows no
                        secret. The coordinator's choice of rounds is made from it
                        too, from public facts only (who is ready, who answered in
                        time), by the waiting rule of node/protocol/waiting.py.
  DecryptionGuardian    one guardian's secrets: after each change, act() says what to
                        send; its state (the round nonces u) is persisted before sending.

The request names the record, the tally and the challenged ballots by hash. Each
node checks its policy on its own copy of the record (the I/O layer does that:
it is slow) and then says `decrypt-ready` with the digest of the statements it
derived, or `decrypt-refuse` with its reason. The coordinator (the node the
request came from) then opens rounds. A round fixes the set U of present
guardians and runs the three steps of 3.6.5 for every statement at once:

  shares       each i in U sends its partial decryptions M_i (eq 84) and the
               commitment hashes d_i (eq 88) over fresh (a_i, b_i) (eq 87)
  commitments  only after every d_j of U has arrived, each i sends (a_i, b_i);
               everyone checks eq 88 for every j and computes c (eqs 89, 90)
  responses    each i sends v_i = u_i - c w_i z_i (eqs 91, 92); everyone adds them
               up (eq 93) and checks the proof against the joint key; when it
               fails, eqs 94-95 name the guardian whose part is wrong

A step too large for one frame (a tally of many options, the compensated form's
parts) goes out in chunks, each one signed envelope under the node's frame size
(`frame_bytes`, from [network] max_frame_bytes): the body says it is chunk i of
`chunks` and holds the rows of consecutive statements from `first`. A guardian
sends all the chunks of a step at once, committed with the state they depend on,
so a restart resends none and never cuts a step anew. Each chunk is checked as
it arrives (its shape, group membership, eq 88 for its statements); a step counts
once all its chunks are in, in any order among themselves (a sender's steps keep
theirs, as over its link), covering every statement once. A copy
of a chunk is ignored; a chunk that contradicts the others (another count, another
body under its number, a gap or an overlap) is malformed, like any message, and
a chunk that never comes leaves its guardian missing for that step. A step that
fits in a frame is one message without those fields.

A guardian whose message is malformed, whose values are not in the group, whose
eq 88 fails or whose part is wrong is excluded for good. A guardian that does
not answer a step before the timeout is named missing for that round. Either
way the coordinator opens a new round without them, as long as at least k
guardians are available; otherwise the session waits, and resumes when enough
guardians say they are ready again. Each round has its own nonces, and a
guardian answers at most one challenge per round: a nonce is never used twice.

In the compensated form (seed 002 "Missing Guardians") each guardian of U also
contributes the parts of every guardian not in U; the proof is the same.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import msgpack
from gmpy2 import mpz

from node.crypto.decryption import (
    NonceStatement, Part, PartShare, PublicShares, TallyStatement, ThresholdKey, check_joint,
    check_joints_batched, combine_responses, combine_values, commitment_digest, describe_part, part_secret, plan_parts, wrong_parts,
)
from node.crypto.errors import GroupMembershipError, InputError
from node.crypto.fixed_base import FixedBase
from node.crypto.group import check_elements
from node.crypto.params import Group
from node.crypto.hashing import elements
from node.protocol.waiting import (
    DEFAULT_HEARTBEAT_SECONDS, STEPS, Decision, LinkView, RoundView, SessionView,
    WaitingPolicy, all_linked, decide,
)

REQUEST_TYPE = "decrypt-request"
MESSAGE_TYPES = frozenset({"decrypt-ready", "decrypt-refuse", "decrypt-round", "decrypt-shares",
                           "decrypt-commitments", "decrypt-responses"})
MAX_CHALLENGED = 10_000
DEFAULT_FRAME_BYTES = 2**20          # [network] max_frame_bytes
# Each step's per-statement matrices, cut by rows (statements) when the step exceeds a frame.
CHUNKED = {"decrypt-shares": ("values", "digests"), "decrypt-commitments": ("a", "b"), "decrypt-responses": ("v",)}
# A chunk's bytes besides its rows: the envelope's fields (about 210 with the longest type) and the body's
# keys and numbers (about 80), with room to spare.
CHUNK_OVERHEAD = 512


class MalformedMessage(InputError):
    """A decryption message body does not have the expected shape."""


# --- the request ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecryptionRequest:
    """What to decrypt, named by hash; its canonical JSON's SHA-256 is the session id."""

    ceremony: bytes                              # the key ceremony whose keys decrypt
    h_e: bytes                                   # the election (extended base hash)
    record: bytes                                # SHA-256 of the record's index.json
    tally: bytes | None                          # SHA-256 of encrypted_tally.json, or None
    challenged: tuple[tuple[str, bytes], ...]    # (ballot id, SHA-256 of its ballot file)
    compensated: bool
    coordinator: int                             # the requesting guardian's sequence number
    timeout: float                               # seconds each step may take
    nonce: str                                   # makes two requests for the same record distinct
    # A rehearsal: the key custody of the ceremony is not certified; only nodes that allow rehearsals
    # ([decryption] allow_rehearsal) take part.
    rehearsal: bool = False

    def to_json_dict(self) -> dict:
        return {"ceremony": self.ceremony.hex(), "h_e": self.h_e.hex(), "record": self.record.hex(),
                "tally": self.tally.hex() if self.tally else None,
                "challenged": [[b, d.hex()] for b, d in self.challenged], "compensated": self.compensated,
                "coordinator": self.coordinator, "timeout": self.timeout, "nonce": self.nonce,
                "rehearsal": self.rehearsal}

    def canonical_bytes(self) -> bytes:
        return json.dumps(self.to_json_dict(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def session(self) -> bytes:
        return hashlib.sha256(b"guardian-node decryption\x00" + self.canonical_bytes()).digest()


def parse_request(data: object, n: int) -> DecryptionRequest:
    """Parse and check a request; InputError names what is wrong. The bytes must be canonical."""
    if not isinstance(data, bytes) or len(data) > 4 * 2**20:
        raise InputError("decryption request: not a byte string of at most 4 MiB")
    try:
        obj = json.loads(data)
    except ValueError:
        raise InputError("decryption request: not JSON") from None
    keys = {"ceremony", "h_e", "record", "tally", "challenged", "compensated", "coordinator", "timeout", "nonce",
            "rehearsal"}
    if not isinstance(obj, dict) or set(obj) != keys:
        raise InputError(f"decryption request: fields must be exactly {sorted(keys)}")

    def digest(value, what):
        try:
            raw = bytes.fromhex(value) if isinstance(value, str) else None
        except ValueError:
            raw = None
        if raw is None or len(raw) != 32:
            raise InputError(f"decryption request: {what} must be 64 hex digits")
        return raw

    challenged = obj["challenged"]
    if not isinstance(challenged, list) or len(challenged) > MAX_CHALLENGED:
        raise InputError(f"decryption request: challenged must be a list of at most {MAX_CHALLENGED}")
    pairs = []
    for pos, item in enumerate(challenged):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and 0 < len(item[0]) <= 256):
            raise InputError(f"decryption request: challenged #{pos + 1} must be [ballot id, digest]")
        pairs.append((item[0], digest(item[1], f"challenged ballot {item[0]!r} digest")))
    if len({b for b, _ in pairs}) != len(pairs):
        raise InputError("decryption request: a ballot is named twice")
    coordinator, timeout = obj["coordinator"], obj["timeout"]
    if isinstance(coordinator, bool) or not isinstance(coordinator, int) or not 1 <= coordinator <= n:
        raise InputError(f"decryption request: coordinator must be a guardian number in 1..{n}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 1 <= timeout <= 86400:
        raise InputError("decryption request: timeout must be between 1 and 86400 seconds")
    if not isinstance(obj["compensated"], bool) or not isinstance(obj["nonce"], str) or len(obj["nonce"]) > 64:
        raise InputError("decryption request: compensated must be a boolean and nonce a short string")
    if not isinstance(obj["rehearsal"], bool):
        raise InputError("decryption request: rehearsal must be a boolean")
    if obj["tally"] is None and not pairs:
        raise InputError("decryption request: nothing to decrypt (no tally, no challenged ballot)")
    request = DecryptionRequest(digest(obj["ceremony"], "ceremony"), digest(obj["h_e"], "h_e"),
                                digest(obj["record"], "record"),
                                None if obj["tally"] is None else digest(obj["tally"], "tally"),
                                tuple(pairs), obj["compensated"], coordinator, float(timeout), obj["nonce"],
                                obj["rehearsal"])
    if request.canonical_bytes() != data:
        raise InputError("decryption request: not in canonical form")
    return request


# --- what is decrypted ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    """One statement: an option total of the tally (vote key) or a challenged ballot's nonce (data key)."""

    label: str
    statement: TallyStatement | NonceStatement

    @property
    def key(self) -> str:
        return "vote" if isinstance(self.statement, TallyStatement) else "data"


def statements_digest(group: Group, items: Sequence[Item]) -> bytes:
    """Binds a guardian's `ready` to exactly the ciphertexts it will decrypt."""
    h = hashlib.sha256(b"guardian-node statements\x00")
    for item in items:
        s = item.statement
        if isinstance(s, TallyStatement):
            h.update(b"T" + s.h_e + s.contest_index.to_bytes(4, "big") + s.option_index.to_bytes(4, "big")
                     + elements(group, (s.a, s.b)))
        else:
            h.update(b"N" + s.h_i + elements(group, (s.c0,)) + s.c1 + s.c2)
    return h.digest()


@dataclass(frozen=True)
class DecryptionContext:
    """The public values every node needs to check the others: from its own ceremony and record copy."""

    group: Group
    g_table: FixedBase
    n: int
    k: int
    items: tuple[Item, ...]
    joint_tables: Mapping[str, FixedBase]        # "vote": K, "data": K-hat
    publics: Mapping[str, PublicShares]          # from the vote and the data commitments

    @property
    def digest(self) -> bytes:
        return statements_digest(self.group, self.items)


# --- message bodies ---------------------------------------------------------------------------------

def _p(group: Group, x) -> bytes:
    return int(x).to_bytes(group.p_bytes, "big")


def _q(group: Group, x) -> bytes:
    return int(x).to_bytes(group.q_bytes, "big")


def _round_number(body: dict, what: str) -> int:
    r = body.get("round")
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 10_000:
        raise MalformedMessage(f"{what}: round must be a number from 1")
    return r


def _matrix(value, rows: int, cols: int, length: int, what: str) -> list[list[mpz]]:
    """rows x cols fixed-length big-endian integers: one row per statement, one column per part."""
    if not isinstance(value, list) or len(value) != rows:
        raise MalformedMessage(f"{what}: expected {rows} rows, one per statement")
    out = []
    for r, row in enumerate(value):
        if not isinstance(row, list) or len(row) != cols:
            raise MalformedMessage(f"{what}: row {r + 1} must have {cols} values, one per part")
        for x in row:
            if not isinstance(x, bytes) or len(x) != length:
                raise MalformedMessage(f"{what}: row {r + 1} holds a value that is not {length} bytes")
        out.append([mpz(int.from_bytes(x, "big")) for x in row])
    return out


def chunk_message(type_: str, body: dict, frame_bytes: int) -> list[dict]:
    """A step's body as it goes out: whole if it fits in a frame, else cut into chunks of consecutive
    statements, each with (chunk, chunks, first) and at most `frame_bytes` long as an envelope (a single
    statement larger than that is one chunk, which the node then refuses to send)."""
    keys = CHUNKED[type_]
    budget = frame_bytes - CHUNK_OVERHEAD
    rows = len(body[keys[0]])
    sizes = [sum(len(msgpack.packb(body[k][s], use_bin_type=True)) for k in keys) for s in range(rows)]
    if sum(sizes) <= budget:
        return [body]
    slices, first, size = [], 0, 0
    for s, n in enumerate(sizes):
        if s > first and size + n > budget:
            slices.append((first, s))
            first, size = s, 0
        size += n
    slices.append((first, rows))
    return [{"round": body["round"], "chunk": c, "chunks": len(slices), "first": a, **{k: body[k][a:b] for k in keys}}
            for c, (a, b) in enumerate(slices, 1)]


def _is_count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _slice(body: dict, key: str, rows: int, what: str) -> tuple[int, int, int, int]:
    """(chunk, chunks, first statement, rows) of a step message: the whole step unless it says it is a chunk."""
    if not any(k in body for k in ("chunk", "chunks", "first")):
        return 1, 1, 0, rows
    chunk, count, first = body.get("chunk"), body.get("chunks"), body.get("first")
    if not (_is_count(count) and 1 <= count <= rows and _is_count(chunk) and 1 <= chunk <= count
            and _is_count(first) and 0 <= first < rows):
        raise MalformedMessage(f"{what}: a chunk needs chunks in 1..{rows}, chunk in 1..chunks and first in "
                               f"0..{rows - 1}")
    value = body.get(key)
    if not isinstance(value, list) or not 1 <= len(value) <= rows - first:
        raise MalformedMessage(f"{what}: chunk {chunk} of {count} must hold 1 to {rows - first} rows "
                               f"from statement {first}")
    return chunk, count, first, len(value)


@dataclass
class Chunks:
    """What one guardian sent of one step so far: chunk number -> (first statement, end, body, its rows)."""

    count: int
    got: dict[int, tuple[int, int, dict, list]] = field(default_factory=dict)


# --- the public transcript --------------------------------------------------------------------------

@dataclass
class Round:
    number: int
    present: tuple[int, ...]
    parts: dict[int, list[Part]]                 # guardian -> its parts, in plan order
    started: float
    step_started: float
    values: dict[int, list[list[mpz]]] = field(default_factory=dict)        # M per statement per part
    digests: dict[int, list[list[bytes]]] = field(default_factory=dict)     # d per statement per part
    shares: dict[int, list[list[PartShare]]] = field(default_factory=dict)  # once (a, b) arrived and eq 88 held
    responses: dict[int, list[list[mpz]]] = field(default_factory=dict)
    challenges: list[mpz] | None = None
    combined: list[mpz] | None = None
    culprits: dict[int, str] = field(default_factory=dict)
    missing: tuple[int, ...] = ()                # named when the coordinator gave up on this round
    results: list | None = None                  # per statement: (M, c, v, [(PartShare, v_i)])
    chunks: dict[tuple[str, int], Chunks] = field(default_factory=dict)   # (type, guardian): a step not all in

    @property
    def step(self) -> str:
        if self.culprits:
            return "failed"
        if self.results is not None:
            return "complete"
        if len(self.shares) == len(self.present):
            return "responses"
        if len(self.values) == len(self.present):
            return "commitments"
        return "shares"

    def waiting_for(self) -> list[int]:
        have = {"shares": self.values, "commitments": self.shares, "responses": self.responses}.get(self.step, {})
        return [i for i in self.present if i not in have] if self.step in STEPS else []


class DecryptionTranscript:
    """The public state of one decryption session, identical on every honest node."""

    def __init__(self, request: DecryptionRequest, ctx: DecryptionContext, now: float, *,
                 heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS, frame_bytes: int = DEFAULT_FRAME_BYTES) -> None:
        self.request, self.ctx = request, ctx
        self.started = now
        self.frame_bytes = frame_bytes             # this node's largest envelope: its guardian's steps are cut to fit
        self.policy = WaitingPolicy(request.timeout, heartbeat_seconds)
        self.ready: dict[int, int] = {}            # guardian -> the round count it was ready after
        self.refused: dict[int, str] = {}
        self.excluded: dict[int, str] = {}         # culprits: never in a round again
        self.missing_in: dict[int, int] = {}       # guardian -> the last round it was named missing in
        self.rounds: list[Round] = []
        self._early: list[tuple[int, str, dict]] = []   # a peer's round message before the round itself
        self.fatal: str | None = None              # no round can succeed (the keys do not fit)

    # --- facts ---------------------------------------------------------------------------------

    @property
    def current(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    @property
    def result(self) -> Round | None:
        r = self.current
        return r if r is not None and r.step == "complete" else None

    def available(self) -> list[int]:
        """Guardians that said they are ready since they were last named missing, and are not excluded."""
        return sorted(i for i, after in self.ready.items()
                      if i not in self.excluded and i not in self.refused and after >= self.missing_in.get(i, 0))

    def unreachable(self) -> bool:
        """Fewer than k guardians are left that could ever take part: the session can only fail."""
        return self.ctx.n - len(set(self.excluded) | set(self.refused)) < self.ctx.k

    def absent(self) -> list[int]:
        """Who the session is waiting for: neither available, refused nor excluded."""
        available = set(self.available())
        return [i for i in range(1, self.ctx.n + 1)
                if i not in available and i not in self.refused and i not in self.excluded]

    # --- messages ------------------------------------------------------------------------------

    def receive(self, sender: int, type_: str, body, now: float) -> None:
        """Take one message; MalformedMessage for a body of the wrong shape outside a round."""
        if not isinstance(body, dict):
            raise MalformedMessage(f"{type_} from guardian {sender}: body must be a map")
        if type_ == "decrypt-ready":
            if body.get("statements") != self.ctx.digest:
                self.refused[sender] = "it derived other statements from the record than this node did"
                return
            after = body.get("after_round")
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                raise MalformedMessage(f"decrypt-ready from guardian {sender}: after_round must be a count")
            # A round count from the future (one this node has not seen opened) counts as the present one.
            self.ready[sender] = max(min(after, len(self.rounds)), self.ready.get(sender, 0))
        elif type_ == "decrypt-refuse":
            why = body.get("reason")
            self.refused[sender] = why[:500] if isinstance(why, str) else "no reason given"
            if sender == self.request.coordinator:     # only the coordinator opens rounds
                self.fatal = f"the requesting guardian refused its own request: {self.refused[sender]}"
        elif type_ == "decrypt-round":
            self._open_round(sender, body, now)
        elif type_ in ("decrypt-shares", "decrypt-commitments", "decrypt-responses"):
            r = _round_number(body, f"{type_} from guardian {sender}")
            if r > len(self.rounds):
                self._early.append((sender, type_, body))   # its round message has not reached us yet
                return
            self._step_message(self.rounds[r - 1], sender, type_, body, now)
        else:
            raise MalformedMessage(f"unknown decryption message type {type_!r}")

    def _open_round(self, sender: int, body: dict, now: float) -> None:
        if sender != self.request.coordinator:
            raise MalformedMessage(f"decrypt-round from guardian {sender}, who is not the coordinator")
        r = _round_number(body, "decrypt-round")
        present = body.get("present")
        if r != len(self.rounds) + 1:
            raise MalformedMessage(f"decrypt-round {r} out of order (expected {len(self.rounds) + 1})")
        if not (isinstance(present, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in present)
                and present == sorted(set(present)) and all(1 <= i <= self.ctx.n for i in present)
                and len(present) >= self.ctx.k):
            raise MalformedMessage(f"decrypt-round {r}: present must be at least {self.ctx.k} distinct "
                                   f"guardian numbers in increasing order")
        previous = self.current
        missing = body.get("missing", [])
        if not (isinstance(missing, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in missing)
                and (previous is not None or not missing) and set(missing) <= set(previous.present if previous else ())):
            raise MalformedMessage(f"decrypt-round {r}: missing must list guardians of the round before")
        if previous is not None and previous.step in STEPS:
            # The coordinator gave up on it, naming who had not answered its step (its view is the one that
            # counts, so that every node names the same guardians).
            previous.missing = tuple(sorted(set(missing)))
            for i in previous.missing:
                self.missing_in[i] = previous.number
        plan = plan_parts(self.ctx.group, self.ctx.n, present, self.request.compensated)
        parts = {i: [p for p in plan if p.guardian == i] for i in present}
        self.rounds.append(Round(r, tuple(present), parts, now, now))
        early, self._early = self._early, []
        for sender_, type_, body_ in early:
            self.receive(sender_, type_, body_, now)

    def _step_message(self, rnd: Round, sender: int, type_: str, body: dict, now: float) -> None:
        if rnd is not self.current or rnd.step not in STEPS or sender not in rnd.present:
            return     # a round given up on, finished, or one the sender is not part of: nothing to do
        before = rnd.step
        try:
            if type_ == "decrypt-shares":
                self._shares(rnd, sender, body)
            elif type_ == "decrypt-commitments":
                self._commitments(rnd, sender, body)
            else:
                self._responses(rnd, sender, body)
        except (MalformedMessage, GroupMembershipError) as e:
            self._blame(rnd, sender, str(e))
            return
        if rnd.step == "responses" and rnd.challenges is None:
            self._challenges(rnd)
        if rnd.step == "responses" and len(rnd.responses) == len(rnd.present):
            self._combine(rnd)
        if rnd.step != before:
            rnd.step_started = now

    def _blame(self, rnd: Round, guardian: int, reason: str) -> None:
        rnd.culprits[guardian] = reason
        self.excluded[guardian] = f"round {rnd.number}: {reason}"

    def _shares(self, rnd: Round, i: int, body: dict) -> None:
        if i in rnd.values:
            return
        rows, cols, g = len(self.ctx.items), len(rnd.parts[i]), self.ctx.group
        what = f"guardian {i}'s partial decryptions"
        chunk, count, first, n = _slice(body, "values", rows, what)
        if self._again(rnd, i, "decrypt-shares", chunk, body):
            return
        values = _matrix(body.get("values"), n, cols, g.p_bytes, what)
        digests = body.get("digests")
        if not isinstance(digests, list) or len(digests) != n or any(
                not isinstance(row, list) or len(row) != cols or
                any(not isinstance(d, bytes) or len(d) != 32 for d in row) for row in digests):
            raise MalformedMessage(f"guardian {i}'s commitment hashes: expected {n} rows of {cols} 32-byte hashes")
        check_elements(g, [(x, f"guardian {i}'s partial decryption for {self.ctx.items[first + s].label}")
                           for s, row in enumerate(values) for x in row])
        whole = self._collect(rnd, i, "decrypt-shares", chunk, count, first, body, list(zip(values, digests)))
        if whole is not None:
            rnd.values[i], rnd.digests[i] = [v for v, _ in whole], [d for _, d in whole]

    def _commitments(self, rnd: Round, i: int, body: dict) -> None:
        if i in rnd.shares or i not in rnd.values:
            if i not in rnd.values:     # commitments before shares: the sender broke the order of 3.6.5
                raise MalformedMessage(f"guardian {i} sent its commitments before its commitment hashes")
            return
        rows, cols, g = len(self.ctx.items), len(rnd.parts[i]), self.ctx.group
        chunk, count, first, n = _slice(body, "a", rows, f"guardian {i}'s commitments")
        if self._again(rnd, i, "decrypt-commitments", chunk, body):
            return
        a = _matrix(body.get("a"), n, cols, g.p_bytes, f"guardian {i}'s commitments a")
        b = _matrix(body.get("b"), n, cols, g.p_bytes, f"guardian {i}'s commitments b")
        items = self.ctx.items[first:first + n]
        check_elements(g, [(x, f"guardian {i}'s commitment for {items[s].label}")
                           for s in range(n) for x in a[s] + b[s]])
        shares = []
        for s, item in enumerate(items):
            row = []
            for c, part in enumerate(rnd.parts[i]):
                share = PartShare(part, rnd.values[i][first + s][c], a[s][c], b[s][c])
                if commitment_digest(g, item.statement, share, rnd.present) != rnd.digests[i][first + s][c]:  # eq 88
                    raise MalformedMessage(f"{describe_part(part)}'s commitment for {item.label} does not match "
                                           f"its commitment hash (eq 88)")
                row.append(share)
            shares.append(row)
        whole = self._collect(rnd, i, "decrypt-commitments", chunk, count, first, body, shares)
        if whole is not None:
            rnd.shares[i] = whole

    def _challenges(self, rnd: Round) -> None:
        """M (eq 86) and c (eqs 89, 90) for every statement, from every part of U."""
        g = self.ctx.group
        rnd.combined, rnd.challenges = [], []
        for s, item in enumerate(self.ctx.items):
            parts = [share for i in rnd.present for share in rnd.shares[i][s]]
            a = b = mpz(1)
            for share in parts:
                a, b = a * share.commitment_a % g.p, b * share.commitment_b % g.p
            m = combine_values(g, parts)
            rnd.combined.append(m)
            rnd.challenges.append(item.statement.challenge(g, a, b, m))

    def _responses(self, rnd: Round, i: int, body: dict) -> None:
        if i in rnd.responses:
            return
        if i not in rnd.shares:     # its own commitments first (3.6.5); others' may still be on their way to us
            raise MalformedMessage(f"guardian {i} answered before sending its commitments")
        rows, cols, g = len(self.ctx.items), len(rnd.parts[i]), self.ctx.group
        chunk, count, first, n = _slice(body, "v", rows, f"guardian {i}'s responses")
        if self._again(rnd, i, "decrypt-responses", chunk, body):
            return
        v = _matrix(body.get("v"), n, cols, g.q_bytes, f"guardian {i}'s responses")
        if any(x >= g.q for row in v for x in row):
            raise MalformedMessage(f"guardian {i}'s responses are not all in Z_q")
        whole = self._collect(rnd, i, "decrypt-responses", chunk, count, first, body, v)
        if whole is not None:
            rnd.responses[i] = whole

    @staticmethod
    def _again(rnd: Round, i: int, type_: str, chunk: int, body: dict) -> bool:
        """The very chunk guardian i already sent (a copy): nothing to do."""
        kept = rnd.chunks.get((type_, i))
        return kept is not None and chunk in kept.got and kept.got[chunk][2] == body

    def _collect(self, rnd: Round, i: int, type_: str, chunk: int, count: int, first: int, body: dict,
                 rows: list) -> list | None:
        """Keep one checked chunk of guardian i's step; the step's rows, in statement order, once all are in.
        A chunk that contradicts the others (another count, another body under its number, a gap or an
        overlap) is malformed: its sender is named."""
        kept = rnd.chunks.setdefault((type_, i), Chunks(count))
        end, total = first + len(rows), len(self.ctx.items)
        what = f"guardian {i}'s {type_} of round {rnd.number}: chunk {chunk} of {count} (statements {first}..{end - 1})"
        if count != kept.count:
            raise MalformedMessage(f"{what} contradicts its chunks of {kept.count}")
        if chunk in kept.got:
            raise MalformedMessage(f"{what} differs from its chunk {chunk} received before")
        # Every chunk holds a statement at least: chunk c starts at c - 1 or later and leaves room after it.
        fits = (first == 0 if chunk == 1 else first >= chunk - 1) and \
            (end == total if chunk == count else end <= total - (count - chunk))
        for j, (f, e, _, _) in kept.got.items():
            fits = fits and (e + (chunk - j - 1) <= first if j < chunk else end + (j - chunk - 1) <= f)
            fits = fits and (j != chunk - 1 or e == first) and (j != chunk + 1 or end == f)
        if not fits:
            raise MalformedMessage(f"{what} leaves a gap or overlaps its other chunks")
        kept.got[chunk] = (first, end, body, rows)
        if len(kept.got) < count:
            return None
        del rnd.chunks[(type_, i)]
        return [row for c in range(1, count + 1) for row in kept.got[c][3]]

    def _combine(self, rnd: Round) -> None:
        """v (eq 93) and the accumulated proof for every statement; eqs 94-95 name a wrong part."""
        ctx, g = self.ctx, self.ctx.group
        results, entries = [], []
        for s, item in enumerate(ctx.items):
            shares = [share for i in rnd.present for share in rnd.shares[i][s]]
            responses = [v for i in rnd.present for v in rnd.responses[i][s]]
            c, m = rnd.challenges[s], rnd.combined[s]
            v = combine_responses(g, responses)
            a = b = mpz(1)
            for share in shares:
                a, b = a * share.commitment_a % g.p, b * share.commitment_b % g.p      # eq 89
            entries.append((item.statement, ctx.joint_tables[item.key], m, c, v, a, b))
            results.append((m, c, v, list(zip(shares, responses))))
        if check_joints_batched(g, ctx.g_table, entries):
            rnd.results = results
            return
        for s, item in enumerate(ctx.items):          # find the statements, then the parts, at fault
            m, c, v, parts = results[s]
            shares = [share for share, _ in parts]
            if check_joint(g, ctx.g_table, ctx.joint_tables[item.key], item.statement, m, c, v, shares):
                continue
            wrong = wrong_parts(g, ctx.g_table, ctx.publics[item.key], item.statement, shares,
                                [r for _, r in parts], c, self.request.compensated)
            for part in wrong:
                self._blame(rnd, part.guardian, f"{describe_part(part)} sent a wrong partial decryption "
                                                f"for {item.label} (eqs 94-95)")
            if not wrong:
                self.fatal = f"the proof for {item.label} fails though every part checks: inconsistent keys"
                rnd.culprits[0] = self.fatal
        if not rnd.culprits:
            self.fatal = "the batched proof check fails though every statement checks alone"
            rnd.culprits[0] = self.fatal

    # --- the coordinator's choices ------------------------------------------------------------------

    def view(self) -> SessionView:
        """The facts the waiting rule (node/protocol/waiting.py) decides on."""
        r = self.current
        current = None if r is None else RoundView(r.step, r.step_started, frozenset(r.waiting_for()))
        ready = frozenset(i for i, after in self.ready.items() if after >= self.missing_in.get(i, 0))
        return SessionView(self.ctx.n, self.ctx.k, self.started, ready, frozenset(self.refused),
                           frozenset(self.excluded), current, self.fatal is not None)

    def decide(self, now: float, links: Mapping[int, LinkView] | None = None) -> Decision:
        """The waiting rule on this transcript; `links` default to every guardian linked."""
        return decide(now, all_linked(self.ctx.n) if links is None else links, self.view(), self.policy)

    def next_round(self, now: float, links: Mapping[int, LinkView] | None = None) -> list[int] | None:
        """The coordinator's rule: the set U of a new round to open now, or None."""
        present = self.decide(now, links).present
        return None if present is None else list(present)

    def stalled(self, now: float, links: Mapping[int, LinkView] | None = None) -> list[int] | None:
        """Who is missing when the session cannot go on without someone coming back; else None."""
        stalled = self.decide(now, links).stalled
        return None if stalled is None else list(stalled)

    def deadline(self, now: float, links: Mapping[int, LinkView] | None = None) -> float | None:
        """After `now`, when the decision may change without a new message."""
        return self.decide(now, links).wake


# --- the guardian ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Send:
    type: str
    body: dict


class DecryptionGuardian:
    """One guardian's side: its key shares, and its per-round nonces in `state` (persisted before sending)."""

    def __init__(self, transcript: DecryptionTranscript, me: int, keys: Mapping[str, ThresholdKey],
                 state: dict | None = None, rng=None) -> None:
        self.t, self.me, self.keys = transcript, me, keys
        self.state = state if state is not None else {"ready": [], "rounds": {}, "sent": []}
        self.rng = rng or secrets.SystemRandom()
        self._m_cache: dict[tuple, mpz] = {}
        self._pairs: dict[int, tuple[list, list]] = {}    # round -> its (a, b) rows, until they are sent

    def __repr__(self) -> str:
        return f"DecryptionGuardian({self.me}, <secret>)"

    def note_sent(self, type_: str, body) -> None:
        """Our own message, read back from the log after a restart: never send it again."""
        if type_ == "decrypt-ready":
            self.state["ready"].append(body.get("after_round", 0))
        elif type_ in ("decrypt-shares", "decrypt-commitments", "decrypt-responses", "decrypt-round"):
            tag = f"{type_}:{body.get('round')}"
            if tag not in self.state["sent"]:
                self.state["sent"].append(tag)

    def act(self, now: float, links: Mapping[int, LinkView] | None = None) -> list[Send]:
        """What to send now; `links` are the coordinator's (see DecryptionTranscript.decide)."""
        sends = []
        t, me = self.t, self.me
        if t.result is not None or me in t.excluded:
            return sends
        rounds_seen = len(t.rounds)
        r = t.current
        if not self.state["ready"] or (r is not None and me not in r.present
                                       and max(self.state["ready"]) < rounds_seen):
            self.state["ready"].append(rounds_seen)
            sends.append(Send("decrypt-ready", {"statements": t.ctx.digest, "after_round": rounds_seen}))
        if me == t.request.coordinator:
            decision = t.decide(now, links)
            if decision.present is not None and f"decrypt-round:{rounds_seen + 1}" not in self.state["sent"]:
                self._sent("decrypt-round", rounds_seen + 1)
                sends.append(Send("decrypt-round", {"round": rounds_seen + 1, "present": list(decision.present),
                                                    "missing": list(decision.missing)}))
                return sends      # the round opens when our own message comes back through the transcript
        if r is None or me not in r.present or r.step not in STEPS:
            return sends
        # A step goes out whole, or as all its chunks at once: they are committed together with the state.
        if not self._did("decrypt-shares", r.number):
            sends += self._cut(self._shares(r))
        elif r.step == "commitments" or r.step == "responses":
            if not self._did("decrypt-commitments", r.number):
                sends += self._cut(self._commitments(r))
            elif r.step == "responses" and r.challenges is not None and not self._did("decrypt-responses", r.number):
                sends += self._cut(self._responses(r))
        return sends

    def _cut(self, send: Send) -> list[Send]:
        return [Send(send.type, body) for body in chunk_message(send.type, send.body, self.t.frame_bytes)]

    # --- the three steps ---------------------------------------------------------------------------

    def _did(self, type_: str, number: int) -> bool:
        return f"{type_}:{number}" in self.state["sent"]

    def _sent(self, type_: str, number: int) -> None:
        self.state["sent"].append(f"{type_}:{number}")

    def _secret(self, item: Item, part: Part) -> mpz:
        return part_secret(self.t.ctx.group, self.keys[item.key], part, self.t.request.compensated)

    def _shares(self, r: Round) -> Send:
        """M for each part (eq 84; the same in every round, so computed once) and d over a fresh (a, b) (eqs 87-88)."""
        ctx, g = self.t.ctx, self.t.ctx.group
        mine = r.parts[self.me]
        nonces, values, digests, a_rows, b_rows = [], [], [], [], []
        for s, item in enumerate(ctx.items):
            u_row, m_row, d_row, a_row, b_row = [], [], [], [], []
            for part in mine:
                key = (s, part.missing, self.t.request.compensated)
                m = self._m_cache.get(key)
                if m is None:
                    m = self._m_cache[key] = pow(item.statement.base, self._secret(item, part), g.p)
                u = mpz(self.rng.randrange(1, int(g.q)))
                share = PartShare(part, m, ctx.g_table.pow(u), pow(item.statement.base, u, g.p))
                u_row.append(_q(g, u).hex())
                m_row.append(_p(g, m))
                d_row.append(commitment_digest(g, item.statement, share, r.present))
                a_row.append(_p(g, share.commitment_a))
                b_row.append(_p(g, share.commitment_b))
            nonces.append(u_row)
            values.append(m_row)
            digests.append(d_row)
            a_rows.append(a_row)
            b_rows.append(b_row)
        self.state["rounds"][str(r.number)] = {"u": nonces}
        self._pairs[r.number] = (a_rows, b_rows)
        self._sent("decrypt-shares", r.number)
        return Send("decrypt-shares", {"round": r.number, "values": values, "digests": digests})

    def _nonces(self, r: Round) -> list[list[mpz]]:
        return [[mpz(int(u, 16)) for u in row] for row in self.state["rounds"][str(r.number)]["u"]]

    def _commitments(self, r: Round) -> Send:
        """(a, b) (eq 87): kept from the shares step, or recomputed from the sealed nonces after a restart."""
        ctx, g = self.t.ctx, self.t.ctx.group
        if r.number in self._pairs:
            a, b = self._pairs.pop(r.number)
        else:
            nonces = self._nonces(r)
            a = [[_p(g, ctx.g_table.pow(u)) for u in row] for row in nonces]
            b = [[_p(g, pow(item.statement.base, u, g.p)) for u in row] for item, row in zip(ctx.items, nonces)]
        self._sent("decrypt-commitments", r.number)
        return Send("decrypt-commitments", {"round": r.number, "a": a, "b": b})

    def _responses(self, r: Round) -> Send:
        """v = u - (c w) x mod q for each part (eqs 91, 92); the nonces of this round are then forgotten."""
        ctx, g = self.t.ctx, self.t.ctx.group
        nonces = self._nonces(r)
        v = []
        for s, item in enumerate(ctx.items):
            c = r.challenges[s]
            v.append([_q(g, (u - c * part.weight * self._secret(item, part)) % g.q)
                      for u, part in zip(nonces[s], r.parts[self.me])])
        self.state["rounds"][str(r.number)] = {"answered": True}
        self._sent("decrypt-responses", r.number)
        return Send("decrypt-responses", {"round": r.number, "v": v})
