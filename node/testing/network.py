"""An in-memory network of the sans-I/O guardian machines, on a fake clock: no sockets, no database, no trio.

Members 1..n are each a transcript (the public record it has seen) and a guardian (what it sends),
made by a `Machines`: CeremonyMachines (node/protocol/ceremony.py) or DecryptionMachines
(node/protocol/decryption.py). Every message a guardian sends goes to every member, its sender
included, as a node's outbox does, and waits in a queue until it is delivered:
  run()      one message at a time, in seeded random order (or "fifo", "lifo"); its recipient acts at once
  rounds()   every member acts, then gets all that is queued for it ("random": a random part, each
             sender's messages in their order, as over one link); again, until nothing moves
  settle()   rounds(); whenever all is quiet, the clock moves a timeout on; again
A test plays the network and the adversaries through its hooks: `rewrite` what a guardian sends,
`intercept` each copy on its way to one recipient, `muted` senders, `held` links, `send` a message of
its own; `kill` a member and `join` it again as a node restarts: its transcript from the messages it had
received, its guardian from the state persisted with its last messages, told what it sent. The machines'
own faults (Machines.faults) are recorded; any other exception escapes and fails the test.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Callable, Mapping, NamedTuple, Protocol

import msgpack

from node.crypto.group import Group
from node.crypto.params import STANDARD
from node.protocol.ceremony import CeremonyFault, Guardian, Transcript
from node.protocol.decryption import DEFAULT_FRAME_BYTES, DecryptionGuardian, DecryptionTranscript, MalformedMessage
from node.protocol.election_config import ElectionConfig


class Clock:
    """Time that passes only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Message(NamedTuple):
    sender: int
    type: str
    body: Any
    digest: bytes


def message_digest(sender: int, type_: str, body) -> bytes:
    """sha256 of the packed (sender, type, body): what the signed envelope's digest stands for."""
    try:
        raw = msgpack.packb([sender, type_, body], use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        raw = repr((sender, type_, body)).encode()
    return hashlib.sha256(raw).digest()


class Machines(Protocol):
    """How members of one kind are made and driven."""

    faults: tuple[type[Exception], ...]          # what a transcript raises on a message it refuses

    def transcript(self, i: int, now: float) -> Any: ...

    def guardian(self, i: int, transcript: Any, state: dict | None, restarted: bool) -> Any: ...

    def receive(self, transcript: Any, message: Message, now: float) -> bool:
        """Take the message; True when the member passes it on to the others (as a node relays)."""

    def act(self, guardian: Any, now: float, links: Mapping | None) -> list: ...


class CeremonyMachines:
    """Key ceremony members. relay_keys: each keys message a member accepts is passed on to the others."""

    faults = (CeremonyFault,)

    def __init__(self, config: ElectionConfig, group: Group = STANDARD, seed: int | str = 0,
                 relay_keys: bool = False) -> None:
        self.config, self.group, self.seed, self.relay_keys = config, group, seed, relay_keys

    def transcript(self, i: int, now: float) -> Transcript:
        return Transcript(self.config, group=self.group)

    def guardian(self, i: int, transcript: Transcript, state: dict | None, restarted: bool) -> Guardian:
        rng = random.Random(f"restarted/{i}" if restarted else f"{self.seed}/{i}")
        return Guardian(transcript, i, state, rng=rng)

    def receive(self, t: Transcript, m: Message, now: float) -> bool:
        new = self.relay_keys and m.type == "keys" and m.digest not in t.key_digests.get(m.sender, ()) \
            and t.outcome is None
        t.receive(m.sender, m.type, m.body, m.digest)
        return new and t.outcome is None

    def act(self, guardian: Guardian, now: float, links: Mapping | None) -> list:
        return guardian.act()


class DecryptionMachines:
    """Decryption members: each with `keys(i)`, and another guardian class or context where `classes` or
    `contexts` name one; `frame_bytes` is every member's max_frame_bytes (small: the steps go out in chunks)."""

    faults = (MalformedMessage,)

    def __init__(self, request, context, keys: Callable[[int], Mapping], classes: Mapping[int, type] | None = None,
                 contexts: Mapping[int, Any] | None = None, frame_bytes: int = DEFAULT_FRAME_BYTES) -> None:
        self.request, self.context, self.keys = request, context, keys
        self.classes, self.contexts = dict(classes or {}), dict(contexts or {})
        self.frame_bytes = frame_bytes

    def transcript(self, i: int, now: float) -> DecryptionTranscript:
        return DecryptionTranscript(self.request, self.contexts.get(i, self.context), now,
                                    frame_bytes=self.frame_bytes)

    def guardian(self, i: int, transcript: DecryptionTranscript, state: dict | None, restarted: bool):
        return self.classes.get(i, DecryptionGuardian)(transcript, i, self.keys(i), state)

    def receive(self, t: DecryptionTranscript, m: Message, now: float) -> bool:
        t.receive(m.sender, m.type, m.body, now)
        return False

    def act(self, guardian: DecryptionGuardian, now: float, links: Mapping | None) -> list:
        return guardian.act(now, links)


def _persisted(state: dict) -> dict:
    return json.loads(json.dumps(state))             # what a node seals: JSON


class Network:
    """n members of one session; those in `running` (default: all) start at once, the others on join()."""

    def __init__(self, machines: Machines, n: int, *, running=None, seed: int = 0, rng: random.Random | None = None,
                 order: str = "random", relay_at_once: bool = False, clock: Clock | None = None) -> None:
        self.machines, self.n, self.order, self.relay_at_once = machines, n, order, relay_at_once
        self.everyone = range(1, n + 1)
        self.clock = clock or Clock()
        self.rng = rng or random.Random(seed)
        self.ts: dict[int, Any] = {}                 # the running members' transcripts
        self.gs: dict[int, Any] = {}                 # and guardians
        self.queue: list[tuple[int, Message]] = []   # (recipient, message), in the order sent
        self.log = {i: [] for i in self.everyone}    # the messages delivered to member i, in order
        self.sent = {i: [] for i in self.everyone}   # (type, body) as guardian i's act() returned them
        self.wire: list[Message] = []                # every message as it went out, after `rewrite`
        self.persisted: dict[int, dict] = {}         # each guardian's state as of its last messages
        self.states = {i: [] for i in self.everyone}  # ... and every one before
        self.faults: dict[int, Exception] = {}       # recipient -> the first fault its transcript raised
        self.refusals: list[tuple[int, Message, Exception]] = []   # every fault: (recipient, message, fault)
        # A malicious guardian: sender -> fn(type, body) -> [(type, body), ...] actually sent to everyone.
        self.rewrite: dict[int, Callable] = {}
        # The network / per-recipient equivocation: fn(sender, recipient, type, body) -> [body, ...] delivered.
        self.intercept: Callable | None = None
        self.muted: set[tuple[int, str | None]] = set()   # (sender, type) never sent; type None: nothing
        self.held: set[tuple[int, int]] = set()           # (sender, recipient): waits in the queue meanwhile
        self.malicious: set[int] = set()                   # never passes anything on
        self.links: Mapping | None = None                  # what the guardians are told of their links
        self.begun = False
        self._joined: set[int] = set()
        for i in self.everyone if running is None else running:
            self.join(i)

    @property
    def honest(self) -> list[int]:
        return [i for i in self.everyone if i not in self.malicious]

    # --- members -----------------------------------------------------------------------------------

    def join(self, i: int) -> None:
        """Start member i; after a kill, as a node restarts from what it stored."""
        assert i not in self.gs, f"member {i} is running"
        restarted = i in self._joined
        self._joined.add(i)
        t = self.machines.transcript(i, self.clock.now)
        for m in self.log[i]:
            try:
                self.machines.receive(t, m, self.clock.now)
            except self.machines.faults:
                pass                                  # recorded when it was first delivered
        saved = self.persisted.get(i)
        g = self.machines.guardian(i, t, _persisted(saved) if saved is not None else None, restarted)
        for type_, body in self.sent[i]:
            g.note_sent(type_, body)
        self.ts[i], self.gs[i] = t, g

    def kill(self, *members: int) -> None:
        for i in members:
            del self.ts[i], self.gs[i]

    def restart(self, i: int) -> None:
        if i in self.gs:
            self.kill(i)
        self.join(i)

    # --- sending and delivering ----------------------------------------------------------------------

    def act(self, i: int) -> bool:
        """Member i acts; what it sends goes out to everyone. Whether it sent anything."""
        guardian = self.gs.get(i)
        if guardian is None:
            return False
        sends = self.machines.act(guardian, self.clock.now, self.links)
        for s in sends:
            self.sent[i].append((s.type, s.body))
            outgoing = self.rewrite[i](s.type, s.body) if i in self.rewrite else [(s.type, s.body)]
            for type_, body in outgoing:
                if (i, type_) not in self.muted and (i, None) not in self.muted:
                    self.send(i, type_, body)
        if sends:
            self.persisted[i] = _persisted(guardian.state)   # committed with its messages, before delivery
            self.states[i].append(self.persisted[i])
        return bool(sends)

    def send(self, sender: int, type_: str, body) -> None:
        """A message from `sender` to every member, each copy through `intercept`, into the queue."""
        self.wire.append(Message(sender, type_, body, message_digest(sender, type_, body)))
        for j in self.everyone:
            for b in self.intercept(sender, j, type_, body) if self.intercept else [body]:
                self.queue.append((j, Message(sender, type_, b, message_digest(sender, type_, b))))

    def deliver(self, j: int, m: Message) -> None:
        """Member j takes the message, and acts on it."""
        self._take(j, m)
        self.act(j)

    def _take(self, j: int, m: Message) -> None:
        self.log[j].append(m)
        try:
            passes_on = self.machines.receive(self.ts[j], m, self.clock.now)
        except self.machines.faults as e:
            self.faults.setdefault(j, e)
            self.refusals.append((j, m, e))
            return
        if passes_on and j not in self.malicious:
            for other in self.everyone:
                if other == j:
                    continue
                if self.relay_at_once and other in self.gs:
                    self.deliver(other, m)
                else:
                    self.queue.append((other, m))

    def _deliverable(self, entry: tuple[int, Message]) -> bool:
        recipient, m = entry
        return recipient in self.gs and (m.sender, recipient) not in self.held

    # --- driving ------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Every member acts once: what each sends at the start."""
        if not self.begun:
            self.begun = True
            for i in self.everyone:
                self.act(i)

    def run(self, until: Callable[["Network"], bool] | None = None) -> None:
        """Deliver one message at a time until none is left to deliver (or `until(self)` holds between two)."""
        self.begin()
        while True:
            ready = [k for k, entry in enumerate(self.queue) if self._deliverable(entry)]
            if not ready or (until is not None and until(self)):
                return
            if self.order == "fifo":
                pick = ready[0]
            elif self.order == "lifo":
                pick = ready[-1]
            else:
                pick = ready[self.rng.randrange(len(ready))]
            self.deliver(*self.queue.pop(pick))

    def rounds(self, until: Callable[["Network"], bool] | None = None, limit: int = 1000) -> bool:
        """Every member acts, then each (in number order) takes what is queued for it; again, until nothing
        moves (False) or `until(self)` holds (True). The clock stands still."""
        def done() -> bool:
            return until is not None and until(self)
        for _ in range(limit):
            if done():
                return True
            acted = [self.act(i) for i in sorted(self.gs)]
            if done():
                return True
            taken = [self._take_queued(j) for j in sorted(self.gs)]
            if not any(acted) and not any(taken):
                return done()
        raise AssertionError("the network never went quiet")

    def settle(self, step: float, until: Callable[["Network"], bool] | None = None, timeouts: int = 6) -> bool:
        """rounds(); whenever all is quiet, the clock moves `step` seconds on; up to `timeouts` times."""
        for _ in range(timeouts + 1):
            if self.rounds(until):
                return True
            self.clock.advance(step)
        return False

    def _take_queued(self, j: int) -> bool:
        mine = [k for k, entry in enumerate(self.queue) if entry[0] == j and self._deliverable(entry)]
        if self.order == "random":
            mine = self._as_over_links(mine)
        batch = [self.queue[k][1] for k in mine]
        gone = set(mine)
        self.queue = [entry for k, entry in enumerate(self.queue) if k not in gone]
        for m in batch:
            self._take(j, m)
        return bool(batch)

    def _as_over_links(self, positions: list[int]) -> list[int]:
        """A random number of the queued messages, senders interleaved at random, each sender's kept in order."""
        by_sender: dict[int, list[int]] = {}
        for k in positions:
            by_sender.setdefault(self.queue[k][1].sender, []).append(k)
        chosen = []
        for _ in range(self.rng.randint(1, len(positions)) if positions else 0):
            sender = self.rng.choice(sorted(s for s, left in by_sender.items() if left))
            chosen.append(by_sender[sender].pop(0))
        return chosen
