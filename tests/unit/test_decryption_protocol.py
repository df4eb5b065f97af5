"""The threshold decryption protocol across guardian nodes (node/protocol/decryption.py) and the policy a
node applies to its copy of the record before it decrypts anything (node/decryption_policy.py).

The protocol runs here on the toy group (TOY_64, n = 5, k = 3) through `Net`, a small in-memory network:
one (DecryptionTranscript, DecryptionGuardian) per running guardian, a fake clock, every Send delivered
to every running node (its sender included) in the order it was sent, or in a random interleaving that
keeps each sender's messages in order. A guardian can be killed (it stops acting and receiving) and
restarted exactly as the node runtime does it (node/decryptions.py): its transcript is rebuilt from the
messages it had accepted, its DecryptionGuardian from a copy of the state it last persisted (the state is
persisted after every act() that sends, before the messages go out) plus note_sent() of its own messages;
the messages it missed while down then arrive as its peers' outboxes catch up. Messages from a guardian
can be altered or dropped at the source, and held back from given nodes.

The statements are the option totals of a few random ballots on the small manifest plus the ballot nonce
of one challenged ballot; decrypted values are checked against the plaintexts (T = B * M^-1, discrete log)
and every proof with the verifier's own functions.

The policy tests build one small record on the standard parameters in-process (ceremony, encrypted and
signed ballots through the ballot box, tally), run the real verifier on it once, then refuse tampered
copies of it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import shutil
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import expected_sums, expected_values, random_ballot
from node.crypto.ballot import PlaintextBallot, decrypt_ballot_nonce, encrypt_ballot, nonce_for_selection
from node.crypto.challenged import nonce_statement
from node.crypto.decryption import (
    NonceStatement, TallyStatement, ThresholdKey, check_joint, plan_parts, t_power_from_m, verify_nonce_decryption,
    verify_tally_decryption,
)
from node.crypto.dlog import discrete_log
from node.crypto.elgamal import power_of_key_from_nonce
from node.crypto.errors import InputError
from node.crypto.tally import tally_ballots
from node.protocol.decryption import (
    DecryptionContext, DecryptionGuardian, DecryptionRequest, DecryptionTranscript, Item, MalformedMessage,
    parse_request, statements_digest,
)
from node.protocol.waiting import LinkView
from node.services.decryption_policy import REQUIRED_STEPS, PolicyRefusal, check_record
from node.record import codec, layout
from node.record.ballot_box import BallotBox
from node.record.encrypt import encrypt_records
from node.record.decrypted import (
    JointResult, challenged_record, quorum, tally_record, tally_statements, write_decryptions,
)
from node.record.local import write_election
from node.verifier import verify_record

N, K = 5, 3
ALL = tuple(range(1, N + 1))
TIMEOUT = 10.0
CHALLENGED_ID = "spoiled-1"


# --- the election and the statements ---------------------------------------------------------------

@dataclass
class Env:
    election: object
    manifest: object
    plains: list
    challenged_plain: PlaintextBallot
    challenged_ballot: object
    items: tuple
    dctx: DecryptionContext
    truth: dict

    @property
    def ctx(self):
        return self.election.context

    def keys(self, i: int) -> dict:
        k = self.election.guardian_keys[i]
        return {"vote": k.vote, "data": k.data}


@pytest.fixture(scope="module")
def env(toy_election, small_manifest) -> Env:
    ctx = toy_election.context
    rng = random.Random(20250301)
    plains = [random_ballot(small_manifest, rng, f"cast-{i}") for i in range(4)]
    plains.append(PlaintextBallot("cast-dave", "North", {"Council": {"Dave": 2}, "Mayor": {"Alice": 1}}))
    encrypted = [encrypt_ballot(ctx, p, "toy-device", rng=rng) for p in plains]
    tally = tally_ballots(ctx, encrypted)
    challenged_plain = PlaintextBallot(CHALLENGED_ID, "North",
                                       {"Mayor": {"Write-in": 1}, "Council": {"Carol": 1, "Dave": 1}})
    challenged_ballot = encrypt_ballot(ctx, challenged_plain, "toy-device", rng=rng)
    items = tuple(Item(f"option {s.contest_index}.{s.option_index}", s) for s in tally_statements(ctx, tally))
    items += (Item(f"challenged ballot {CHALLENGED_ID!r}", nonce_statement(ctx, challenged_ballot)),)
    dctx = DecryptionContext(ctx.group, ctx.g_table, N, K, items, {"vote": ctx.k_table, "data": ctx.k_hat_table},
                             {"vote": toy_election.vote_publics(), "data": toy_election.data_publics()})
    truth = expected_sums(small_manifest, plains)
    assert any(truth.values())
    return Env(toy_election, small_manifest, plains, challenged_plain, challenged_ballot, items, dctx, truth)


def make_request(env: Env, *, compensated: bool = False, coordinator: int = 1, timeout: float = TIMEOUT,
                 nonce: str = "test") -> DecryptionRequest:
    return DecryptionRequest(b"\x01" * 32, env.ctx.h_e, b"\x02" * 32, b"\x03" * 32,
                             ((CHALLENGED_ID, b"\x04" * 32),), compensated, coordinator, float(timeout), nonce)


def check_decryption(env: Env, rnd, compensated: bool = False) -> None:
    """Every statement of a complete round: the value is the plaintext's and the proof verifies."""
    ctx, group = env.ctx, env.ctx.group
    assert rnd is not None and rnd.step == "complete" and not rnd.culprits
    missing = [j for j in ALL if j not in rnd.present]
    per_guardian = 1 + len(missing) if compensated else 1
    solver = discrete_log(group, ctx.joint_key, 32)
    assert len(rnd.results) == len(env.items)
    for item, (m, c, v, parts) in zip(env.items, rnd.results):
        s = item.statement
        assert len(parts) == len(rnd.present) * per_guardian
        assert sorted({share.part.guardian for share, _ in parts}) == list(rnd.present)
        table = ctx.k_table if isinstance(s, TallyStatement) else ctx.k_hat_table
        assert check_joint(group, ctx.g_table, table, s, m, c, v, [share for share, _ in parts])
        assert v == sum(int(v_i) for _, v_i in parts) % group.q                 # eq 93
        if isinstance(s, TallyStatement):
            t_power = t_power_from_m(group, s.b, m)                               # T = B M^-1
            value = solver.solve(t_power)
            assert value == env.truth[(s.contest_index, s.option_index)], item.label
            verify_tally_decryption(group, ctx.g_table, ctx.k_table, s, value, t_power, c, v, item.label)
        else:
            assert isinstance(s, NonceStatement)
            verify_nonce_decryption(group, ctx.g_table, ctx.k_hat_table, s, m, c, v, item.label)
            ballot = env.challenged_ballot
            xi_b = decrypt_ballot_nonce(ctx, s.h_i, ballot.encrypted_nonce, m)
            want = expected_values(env.manifest, env.challenged_plain)
            opened = {}
            for ec in ballot.contests:
                for sel in ec.selections:
                    xi = nonce_for_selection(ctx, ballot, xi_b, ec.contest_index, sel.option_index)
                    opened[(ec.contest_index, sel.option_index)] = solver.solve(
                        power_of_key_from_nonce(group, ctx.k_table, sel.ciphertext, xi))
            assert opened == want


# --- the in-memory network --------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    seq: int
    sender: int
    type: str
    body: dict


@dataclass
class Node:
    me: int
    t: DecryptionTranscript
    g: DecryptionGuardian
    log: list = field(default_factory=list)          # what it accepted, in order (its own messages too)
    delivered: set = field(default_factory=set)
    faults: list = field(default_factory=list)       # (sender, type, MalformedMessage text)


def linked(*guardians: int) -> dict[int, LinkView]:
    """The coordinator's links: to these guardians (itself among them), none to the others."""
    return {i: LinkView(True) for i in guardians}


def _persist(state: dict) -> dict:
    return json.loads(json.dumps(state))             # what the runtime seals: JSON


class Net:
    def __init__(self, env: Env, running=ALL, *, request: DecryptionRequest | None = None,
                 compensated: bool = False, coordinator: int = 1, rng: random.Random | None = None,
                 cls: dict | None = None, keys: dict | None = None, ctxs: dict | None = None) -> None:
        self.env = env
        self.request = request or make_request(env, compensated=compensated, coordinator=coordinator)
        self.clock = 0.0
        self.log: list[Entry] = []
        self.nodes: dict[int, Node] = {}
        self.dead: dict[int, Node] = {}
        self.persisted: dict[int, dict | None] = {}
        self.states: dict[int, list[dict]] = defaultdict(list)
        self.alter: dict[int, Callable] = {}
        self.held: set[tuple[int, int]] = set()      # (sender, receiver): held back, in order
        self.rng = rng
        self.links = None                            # the coordinator's links, when set (default: to all)
        self.cls = dict(cls or {})
        self.keys = dict(keys or {})
        self.ctxs = dict(ctxs or {})
        for i in running:
            self.start(i)

    # --- guardians ---

    def start(self, i: int) -> Node:
        """Start guardian i, or restart it as the runtime does after a crash."""
        assert i not in self.nodes
        old = self.dead.pop(i, None)
        transcript = DecryptionTranscript(self.request, self.ctxs.get(i, self.env.dctx), self.clock)
        saved = self.persisted.get(i)
        guardian = self.cls.get(i, DecryptionGuardian)(transcript, i, self.keys.get(i) or self.env.keys(i),
                                                         _persist(saved) if saved is not None else None)
        node = Node(i, transcript, guardian)
        for e in self.log:
            if e.sender == i:
                guardian.note_sent(e.type, e.body)
        for e in old.log if old else ():
            self._receive(node, e)
        self.nodes[i] = node
        return node

    def kill(self, *guardians: int) -> None:
        for i in guardians:
            self.dead[i] = self.nodes.pop(i)

    def restart(self, i: int) -> Node:
        if i in self.nodes:
            self.kill(i)
        return self.start(i)

    # --- messages ---

    def inject(self, sender: int, type_: str, body: dict) -> None:
        self.log.append(Entry(len(self.log), sender, type_, body))

    def _receive(self, node: Node, e: Entry) -> None:
        node.delivered.add(e.seq)
        node.log.append(e)
        try:
            node.t.receive(e.sender, e.type, e.body, self.clock)
        except MalformedMessage as x:
            node.faults.append((e.sender, e.type, str(x)))

    def _act(self) -> bool:
        acted = False
        for i in sorted(self.nodes):
            node = self.nodes[i]
            sends = node.g.act(self.clock, self.links)
            if not sends:
                continue
            acted = True
            self.persisted[i] = _persist(node.g.state)       # sealed with the outbox, before sending
            self.states[i].append(self.persisted[i])
            for s in sends:
                body = self.alter[i](s.type, s.body) if i in self.alter else s.body
                if body is not None:
                    self.inject(i, s.type, body)
        return acted

    def pending(self, node: Node) -> list[Entry]:
        return [e for e in self.log if e.seq not in node.delivered and (e.sender, node.me) not in self.held]

    def _deliver(self) -> bool:
        delivered = False
        for i in sorted(self.nodes):
            node = self.nodes.get(i)
            if node is None:
                continue
            pending = self.pending(node)
            if self.rng is not None and pending:
                queues: dict[int, list[Entry]] = defaultdict(list)
                for e in pending:
                    queues[e.sender].append(e)
                pending = []
                for _ in range(self.rng.randint(1, sum(map(len, queues.values())))):
                    sender = self.rng.choice(sorted(s for s, q in queues.items() if q))
                    pending.append(queues[sender].pop(0))
            for e in pending:
                self._receive(node, e)
                delivered = True
        return delivered

    def pump(self, until: Callable[["Net"], bool] | None = None, limit: int = 1000) -> bool:
        """Act and deliver until nothing moves (False) or `until` holds (True); the clock stands still."""
        for _ in range(limit):
            if until and until(self):
                return True
            acted = self._act()
            if until and until(self):
                return True
            if not self._deliver() and not acted:
                return bool(until and until(self))
        raise AssertionError("the network never went quiet")

    def run(self, until: Callable[["Net"], bool] | None = None, timeouts: int = 6) -> bool:
        """pump(); when everything is quiet, let a timeout pass; up to `timeouts` times."""
        until = until or (lambda net: bool(net.nodes) and all(n.t.result is not None for n in net.nodes.values()))
        for _ in range(timeouts + 1):
            if self.pump(until):
                return True
            self.clock += self.request.timeout + 1
        return False

    # --- facts ---

    @property
    def coord(self) -> DecryptionTranscript:
        return self.nodes[self.request.coordinator].t

    def sent(self, i: int, type_: str, round_: int | None = None) -> list[dict]:
        return [e.body for e in self.log if e.sender == i and e.type == type_
                and (round_ is None or e.body.get("round") == round_)]


def summary(t: DecryptionTranscript):
    result = None
    if t.result is not None:
        result = [(int(m), int(c), int(v), [(s.part.guardian, s.part.missing, int(s.value), int(v_i))
                                            for s, v_i in parts]) for m, c, v, parts in t.result.results]
    # A round given up on (a later one opened) stopped at whatever step this node had seen: local, not compared.
    last = len(t.rounds)
    return ([(r.number, r.present, sorted(r.culprits), r.missing, r.step if r.number == last or r.culprits else "-")
             for r in t.rounds], sorted(t.excluded), sorted(t.refused), result)


def assert_agree(net: Net, nodes=None) -> None:
    nodes = nodes or sorted(net.nodes)
    first = summary(net.nodes[nodes[0]].t)
    for i in nodes[1:]:
        assert summary(net.nodes[i].t) == first, f"guardian {i}'s transcript differs from guardian {nodes[0]}'s"


def assert_no_nonce_reuse(net: Net) -> None:
    """Each guardian sent each step of a round at most once, so it answered at most one challenge per round."""
    seen = set()
    for e in net.log:
        if e.type in ("decrypt-round", "decrypt-shares", "decrypt-commitments", "decrypt-responses"):
            key = (e.sender, e.type, e.body.get("round"))
            assert key not in seen, f"guardian {e.sender} sent {e.type} for round {e.body.get('round')} twice"
            seen.add(key)


def no_faults(net: Net) -> None:
    for node in list(net.nodes.values()) + list(net.dead.values()):
        assert node.faults == [], (node.me, node.faults)


# --- guardians that misbehave -----------------------------------------------------------------------

def wrong_value_guardian(statement: int = 0, rounds=(1,)):
    """A guardian whose M for one statement is multiplied by g, its eq 88 hash computed over the wrong M."""

    class WrongValue(DecryptionGuardian):
        def _shares(self, r):
            if r.number in rounds:
                ctx, group = self.t.ctx, self.t.ctx.group
                item = ctx.items[statement]
                part = r.parts[self.me][0]
                m = pow(item.statement.base, self._secret(item, part), group.p)
                self._m_cache[(statement, part.missing, self.t.request.compensated)] = m * group.g % group.p
            else:
                self._m_cache.clear()
            return super()._shares(r)

    return WrongValue


def wrong_key(env: Env, i: int, j: int) -> dict:
    """Guardian i's keys with a wrong P_j(i) in its vote key: every vote part it sends is wrong, consistently."""
    keys = env.keys(i)
    vote = keys["vote"]
    received = dict(vote.received)
    received[j] = (received[j] + 1) % env.ctx.group.q
    return {"vote": ThresholdKey(vote.index, vote.own_secret, received), "data": keys["data"]}


def tamper(type_: str, fn: Callable[[dict], None], rounds=(1,)):
    def alter(t: str, body: dict):
        if t == type_ and body.get("round") in rounds:
            body = copy.deepcopy(body)
            fn(body)
        return body
    return alter


# === 1. all five present ==============================================================================

def test_all_five_one_round_correct_and_agreed(env):
    net = Net(env)
    assert net.run()
    t = net.coord
    assert len(t.rounds) == 1 and t.rounds[0].present == ALL and t.rounds[0].missing == ()
    assert t.rounds[0].started == 0.0                                 # nobody waited for a timeout
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)
    assert t.excluded == {} and t.refused == {} and t.missing_in == {}
    assert t.available() == list(ALL) and t.absent() == []
    for i in ALL:
        assert len(net.sent(i, "decrypt-ready")) == 1
        assert net.sent(i, "decrypt-ready")[0]["statements"] == env.dctx.digest
        assert net.nodes[i].g.state["rounds"] == {"1": {"answered": True}}   # the nonces are forgotten
        assert repr(net.nodes[i].g) == f"DecryptionGuardian({i}, <secret>)"
    assert [e.sender for e in net.log if e.type == "decrypt-round"] == [1]
    # finished: nothing more to say, no new round
    assert net.coord.next_round(net.clock + 1000) is None
    assert all(n.g.act(net.clock + 1000) == [] for n in net.nodes.values())


# === 2. exactly k present ===========================================================================

def test_exactly_k_present_wait_for_the_gather_timeout(env):
    net = Net(env, running=(1, 2, 3))
    assert not net.pump(lambda n: bool(n.coord.rounds))          # no round before the timeout
    t = net.coord
    assert t.available() == [1, 2, 3] and t.absent() == [4, 5]
    assert t.next_round(TIMEOUT - 0.01) is None
    assert t.next_round(TIMEOUT) == [1, 2, 3]
    assert t.deadline(net.clock) == TIMEOUT
    net.clock = TIMEOUT
    assert net.run()
    t = net.coord
    assert len(t.rounds) == 1 and t.rounds[0].present == (1, 2, 3)
    assert t.rounds[0].missing == ()                              # nobody was given up on in the round
    assert t.absent() == [4, 5]
    assert quorum(N, t.result.present, False).missing == (4, 5)
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)


# === 3. k - 1 present ================================================================================

def test_k_minus_one_never_opens_a_round_until_a_third_joins(env):
    net = Net(env, running=(1, 2))
    assert not net.run(lambda n: bool(n.coord.rounds), timeouts=3)
    t = net.coord
    assert t.rounds == [] and net.sent(1, "decrypt-round") == []
    assert t.next_round(net.clock) is None and t.next_round(net.clock + 10**6) is None
    assert t.available() == [1, 2] and t.absent() == [3, 4, 5]
    assert not t.unreachable()
    assert net.nodes[2].t.absent() == [3, 4, 5]
    net.start(4)                                                  # joins late: the log replays to it
    assert net.run()
    t = net.coord
    assert len(t.rounds) == 1 and t.rounds[0].present == (1, 2, 4)
    assert t.absent() == [3, 5]
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)


def test_stalled_names_who_is_missing_once_the_gather_timeout_is_past(env):
    net = Net(env, running=(1, 2))
    assert not net.pump()
    t = net.coord
    assert t.stalled(TIMEOUT - 1, linked(1, 2)) is None
    assert t.stalled(TIMEOUT, linked(1, 2)) == [3, 4, 5]
    net.start(3)
    net.pump()
    assert t.stalled(TIMEOUT, linked(1, 2, 3)) is None           # three are enough to go on


def test_guardians_linked_but_still_verifying_are_not_a_stall(env):
    """Before the first round, connected guardians that have not said ready are still checking the record:
    no stall while they could make k, for up to ten timeouts; guardians with no link count as missing."""
    net = Net(env, running=(1, 2))
    assert not net.pump()
    t = net.coord
    assert t.stalled(TIMEOUT, linked(1, 2, 3)) is None             # 3 is linked: verifying, presumably
    assert t.stalled(10 * TIMEOUT, linked(1, 2, 3)) == [3, 4, 5]
    assert t.stalled(TIMEOUT, linked(1, 2)) == [3, 4, 5]             # nobody else to wait for


def test_coordinator_waits_only_for_the_guardians_it_has_links_to(env):
    net = Net(env, running=(1, 2, 3))
    net.links = linked(1, 2, 3)
    assert net.run(timeouts=0)                                    # no gather timeout
    assert net.clock == 0.0 and net.coord.rounds[0].present == (1, 2, 3)
    check_decryption(env, net.coord.result)
    t = DecryptionTranscript(net.request, env.dctx, 0.0)
    for i in (1, 2):
        t.receive(i, "decrypt-ready", {"statements": env.dctx.digest, "after_round": 0}, 0.0)
    assert t.next_round(0.0, linked(1, 2)) is None               # fewer than k ready
    assert t.next_round(0.0, linked(1, 2, 4)) is None            # 4 is linked and not ready yet
    t.receive(4, "decrypt-refuse", {"reason": "no"}, 0.0)
    assert t.next_round(0.0, linked(1, 2, 4)) is None and t.next_round(TIMEOUT, linked(1, 2, 4)) is None
    t.receive(3, "decrypt-ready", {"statements": env.dctx.digest, "after_round": 0}, 0.0)
    assert t.next_round(0.0, linked(1, 2, 3, 4)) == [1, 2, 3]   # the refusing one is not waited for


def test_without_the_coordinator_no_round_opens(env):
    net = Net(env, running=(2, 3, 4, 5))
    assert not net.run(lambda n: any(node.t.rounds for node in n.nodes.values()), timeouts=3)
    assert all(node.t.available() == [2, 3, 4, 5] and node.t.absent() == [1] for node in net.nodes.values())
    net.start(1)
    assert net.run()
    assert net.coord.rounds[0].present == (1, 2, 3, 4, 5)
    check_decryption(env, net.coord.result)


# === 4. guardians killed mid-round =====================================================================

def _kill_two_after_shares(env, step="commitments", **kw) -> Net:
    """4 and 5 die once every share of round 1 is in (step commitments) or every commitment (step responses)."""
    have = {"commitments": "values", "responses": "shares"}[step]
    net = Net(env, **kw)
    assert net.pump(lambda n: n.coord.rounds and len(getattr(n.coord.rounds[0], have)) == N)
    net.kill(4, 5)
    assert not net.pump()                                         # 1-3 go on, then wait for 4 and 5
    r1 = net.coord.rounds[0]
    assert r1.step == step and r1.waiting_for() == [4, 5]
    assert net.coord.next_round(net.clock) is None
    assert net.coord.deadline(net.clock) == r1.step_started + TIMEOUT
    net.clock += TIMEOUT + 1
    assert net.pump(lambda n: len(n.coord.rounds) == 2)
    return net


@pytest.mark.parametrize("step", ["commitments", "responses"])
def test_two_guardians_silent_after_shares_round_two_without_them(env, step):
    net = _kill_two_after_shares(env, step)
    t = net.coord
    r1, r2 = t.rounds
    assert r1.missing == (4, 5) and r2.present == (1, 2, 3)
    assert t.missing_in == {4: 1, 5: 1}
    assert t.available() == [1, 2, 3] and t.absent() == [4, 5]
    assert net.run()
    t = net.coord
    assert len(t.rounds) == 2 and t.result is t.rounds[1]
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)


def test_silenced_guardian_returns_and_is_available_again(env):
    net = _kill_two_after_shares(env)
    node = net.restart(4)                                         # comes back while round 2 runs
    assert net.pump(lambda n: 4 in n.coord.available())
    readies = net.sent(4, "decrypt-ready")
    assert len(readies) == 2 and readies[-1]["after_round"] >= net.coord.missing_in[4] == 1
    # it may still send the commitments of round 1 (its own log stops there), but they are ignored and it
    # never answers a round given up on
    assert 4 not in net.coord.rounds[0].shares and net.sent(4, "decrypt-responses") == []
    assert net.coord.absent() == [5]
    assert net.run()
    assert node.t.result is not None and net.coord.result.present == (1, 2, 3)
    check_decryption(env, net.coord.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)


def test_returned_guardian_takes_part_in_a_later_round(env):
    net = _kill_two_after_shares(env, cls={3: wrong_value_guardian(rounds=(2,))})
    net.restart(4)
    assert net.run()
    t = net.coord
    assert [r.present for r in t.rounds] == [ALL, (1, 2, 3), (1, 2, 4)]
    assert list(t.rounds[1].culprits) == [3] and "wrong partial decryption" in t.rounds[1].culprits[3]
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)


# === 5. a wrong partial decryption ========================================================================

@pytest.mark.parametrize("how", ["M times g, eq 88 over the wrong M", "wrong key share"])
def test_wrong_partial_decryption_named_and_excluded(env, how):
    if how.startswith("M"):
        net = Net(env, cls={2: wrong_value_guardian(statement=3)})
    else:
        net = Net(env, keys={2: wrong_key(env, 2, 4)})
    assert net.run()
    t = net.coord
    r1, r2 = t.rounds
    assert list(r1.culprits) == [2] and r1.step == "failed"
    assert "wrong partial decryption" in r1.culprits[2] and "eqs 94-95" in r1.culprits[2]
    assert "wrong partial decryption" in t.excluded[2] and t.excluded[2].startswith("round 1")
    if how.startswith("M"):
        assert env.items[3].label in r1.culprits[2]
    assert r1.missing == () and t.missing_in == {}
    assert r2.present == (1, 3, 4, 5)
    assert t.available() == [1, 3, 4, 5] and t.absent() == []
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)
    assert net.sent(2, "decrypt-shares", 2) == []                 # the culprit stays out


def test_wrong_part_for_a_missing_guardian_named_in_compensated_form(env):
    net = Net(env, running=(1, 2, 3), compensated=True, keys={2: wrong_key(env, 2, 4)})
    net.clock = TIMEOUT
    assert not net.run(timeouts=1)
    t = net.coord
    r1 = t.rounds[0]
    assert list(r1.culprits) == [2] and "guardian 2 (for missing guardian 4) sent a wrong partial decryption" \
        in r1.culprits[2]
    net.start(5)
    assert net.run()
    assert [r.present for r in t.rounds] == [(1, 2, 3), (1, 3, 5)]
    check_decryption(env, t.result, compensated=True)
    assert_agree(net)


def test_keys_that_do_not_fit_are_fatal_and_blame_nobody(env):
    swapped = replace(env.dctx, joint_tables={"vote": env.ctx.k_hat_table, "data": env.ctx.k_table})
    net = Net(env, ctxs={i: swapped for i in ALL})
    assert not net.run(timeouts=2)
    t = net.coord
    assert len(t.rounds) == 1 and t.excluded == {}
    assert "inconsistent keys" in t.fatal and t.rounds[0].culprits == {0: t.fatal}
    assert t.result is None and t.next_round(net.clock + 10**6) is None
    assert_agree(net)


def test_two_cheaters_in_one_round_are_both_named(env):
    net = Net(env, cls={2: wrong_value_guardian(statement=0), 4: wrong_value_guardian(statement=8)})
    assert net.run()
    t = net.coord
    assert sorted(t.rounds[0].culprits) == [2, 4] and sorted(t.excluded) == [2, 4]
    assert env.items[8].label in t.excluded[4]
    assert [r.present for r in t.rounds] == [ALL, (1, 3, 5)]
    check_decryption(env, t.result)
    assert_agree(net)


def test_only_k_present_and_one_cheats_the_session_stalls(env):
    net = Net(env, running=(1, 2, 3), cls={3: wrong_value_guardian()})
    assert not net.run(timeouts=4)
    t = net.coord
    assert len(t.rounds) == 1 and list(t.rounds[0].culprits) == [3]
    assert t.result is None and t.fatal is None
    assert t.available() == [1, 2] and t.absent() == [4, 5]
    assert t.next_round(net.clock + 10**6) is None
    assert not t.unreachable()                                    # 4 and 5 could still come
    net.inject(5, "decrypt-refuse", {"reason": "not today"})
    net.pump()
    assert t.refused == {5: "not today"} and not t.unreachable()
    net.inject(4, "decrypt-refuse", {"reason": 7})
    net.pump()
    assert t.refused[4] == "no reason given"
    assert t.unreachable() and t.next_round(net.clock + 10**6) is None
    assert all(node.t.unreachable() for node in net.nodes.values())




def test_stalled_after_a_culprit_leaves_fewer_than_k(env):
    net = Net(env, running=(1, 2, 3), cls={3: wrong_value_guardian()})
    assert not net.run(timeouts=2)
    t = net.coord
    assert t.rounds[-1].step == "failed" and t.available() == [1, 2]
    assert t.stalled(net.clock + 10**6) == [4, 5]


def test_stalled_session_resumes_when_a_guardian_comes(env):
    net = Net(env, running=(1, 2, 3), cls={3: wrong_value_guardian()})
    assert not net.run(timeouts=2)
    net.start(5)
    assert net.run()
    t = net.coord
    assert [r.present for r in t.rounds] == [(1, 2, 3), (1, 2, 5)]
    check_decryption(env, t.result)


# === 6. malformed round messages: the sender is blamed ====================================================

def _p_bytes(env, x) -> bytes:
    return int(x).to_bytes(env.ctx.group.p_bytes, "big")


def _non_member_residue(group) -> int:
    x = 2
    while not (gmpy2.legendre(x, group.p) == 1 and pow(x, int(group.q), int(group.p)) != 1):
        x += 1
    return x


def _set(path, value_fn):
    """body[key][row][col] = value_fn(env, old)"""
    def fn(env):
        def change(body):
            key, row, col = path
            body[key][row][col] = value_fn(env, body[key][row][col])
        return change
    return fn


def _mul_g(env, old):
    g = env.ctx.group
    return _p_bytes(env, int.from_bytes(old, "big") * int(g.g) % int(g.p))


BLAMED = {
    # name: (message type, change(env) -> body mutator, what the culprit's reason says)
    "shares: a row too few": ("decrypt-shares", lambda env: lambda b: b["values"].pop(), "rows, one per statement"),
    "shares: a value too many": ("decrypt-shares", lambda env: lambda b: b["values"][2].append(b["values"][2][0]),
                                 "row 3 must have 1 values"),
    "shares: a value one byte short": ("decrypt-shares", _set(("values", 0, 0), lambda env, old: old[1:]),
                                       "not 8 bytes"),
    "shares: a value given as hex": ("decrypt-shares", _set(("values", 0, 0), lambda env, old: old.hex()),
                                     "not 8 bytes"),
    "shares: no values": ("decrypt-shares", lambda env: lambda b: b.pop("values"), "rows, one per statement"),
    "shares: value p - 1": ("decrypt-shares", _set(("values", 1, 0), lambda env, old: _p_bytes(env, env.ctx.group.p - 1)),
                            "not in the order-q subgroup"),
    "shares: value 0": ("decrypt-shares", _set(("values", 1, 0), lambda env, old: bytes(len(old))),
                        "not in the order-q subgroup"),
    "shares: value p": ("decrypt-shares", _set(("values", 1, 0), lambda env, old: _p_bytes(env, env.ctx.group.p)),
                        "not in the order-q subgroup"),
    "shares: a residue outside the subgroup": (
        "decrypt-shares", _set(("values", 8, 0), lambda env, old: _p_bytes(env, _non_member_residue(env.ctx.group))),
        "not in the order-q subgroup"),
    "shares: no digests": ("decrypt-shares", lambda env: lambda b: b.pop("digests"), "commitment hashes"),
    "shares: a digest of 31 bytes": ("decrypt-shares", _set(("digests", 0, 0), lambda env, old: old[:31]),
                                     "commitment hashes"),
    "shares: a digest that is not the hash": ("decrypt-shares",
                                              _set(("digests", 4, 0), lambda env, old: bytes([old[0] ^ 1]) + old[1:]),
                                              "eq 88"),
    "commitments: a != its hash": ("decrypt-commitments", _set(("a", 0, 0), _mul_g), "eq 88"),
    "commitments: b != its hash": ("decrypt-commitments", _set(("b", 8, 0), _mul_g), "eq 88"),
    "commitments: a = p - 1": ("decrypt-commitments",
                               _set(("a", 0, 0), lambda env, old: _p_bytes(env, env.ctx.group.p - 1)),
                               "not in the order-q subgroup"),
    "commitments: b = 0": ("decrypt-commitments", _set(("b", 2, 0), lambda env, old: bytes(len(old))),
                           "not in the order-q subgroup"),
    "commitments: no b": ("decrypt-commitments", lambda env: lambda b: b.pop("b"), "commitments b"),
    "commitments: a row too many": ("decrypt-commitments", lambda env: lambda b: b["a"].append(b["a"][0]),
                                    "rows, one per statement"),
    "responses: v = q": ("decrypt-responses",
                         _set(("v", 0, 0), lambda env, old: int(env.ctx.group.q).to_bytes(len(old), "big")),
                         "not all in Z_q"),
    "responses: v of p's length": ("decrypt-responses", _set(("v", 0, 0), lambda env, old: bytes(8)),
                                   "not 3 bytes"),
    "responses: no v": ("decrypt-responses", lambda env: lambda b: b.pop("v"), "rows, one per statement"),
    "responses: v + 1": ("decrypt-responses",
                         _set(("v", 5, 0), lambda env, old: ((int.from_bytes(old, "big") + 1) % int(env.ctx.group.q))
                              .to_bytes(len(old), "big")),
                         "wrong partial decryption"),
}


@pytest.mark.parametrize("name", sorted(BLAMED))
def test_malformed_round_message_blames_its_sender(env, name):
    type_, change, says = BLAMED[name]
    assert env.ctx.group.p_bytes == 8 and env.ctx.group.q_bytes == 3 and len(env.items) == 9
    net = Net(env)
    net.alter[3] = tamper(type_, change(env))
    assert net.run()
    t = net.coord
    r1 = t.rounds[0]
    assert list(r1.culprits) == [3], r1.culprits
    assert says in r1.culprits[3], r1.culprits[3]
    assert t.excluded[3] == f"round 1: {r1.culprits[3]}"
    assert [r.present for r in t.rounds] == [ALL, (1, 2, 4, 5)]
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)                     # blamed inside the round, not thrown out as a malformed message


# --- malformed messages outside a round: MalformedMessage ------------------------------------------------

@pytest.fixture
def fresh(env):
    return DecryptionTranscript(make_request(env), env.dctx, 0.0)


@pytest.mark.parametrize("body", [
    {"statements": None, "after_round": 0},
    {"after_round": 0},
])
def test_ready_for_other_statements_is_refused(env, fresh, body):
    if body.get("statements", 1) is None:
        body = {**body, "statements": statements_digest(env.ctx.group, env.items[:-1])}
    fresh.receive(4, "decrypt-ready", body, 0.0)
    assert "other statements" in fresh.refused[4]
    assert 4 not in fresh.available() and 4 not in fresh.absent()


@pytest.mark.parametrize("after", [-1, "1", True, None, 1.0])
def test_ready_with_a_bad_round_count_raises(env, fresh, after):
    with pytest.raises(MalformedMessage, match="after_round"):
        fresh.receive(2, "decrypt-ready", {"statements": env.dctx.digest, "after_round": after}, 0.0)
    assert fresh.ready == {} and fresh.refused == {}


@pytest.mark.parametrize("type_", ["decrypt-ready", "decrypt-refuse", "decrypt-round", "decrypt-shares",
                                   "decrypt-commitments", "decrypt-responses", "decrypt-other"])
def test_non_map_body_or_unknown_type_raises(fresh, type_):
    with pytest.raises(MalformedMessage):
        fresh.receive(1, type_, ["round", 1], 0.0)
    if type_ == "decrypt-other":
        with pytest.raises(MalformedMessage, match="unknown"):
            fresh.receive(1, type_, {"round": 1}, 0.0)


def test_round_from_a_non_coordinator_raises(fresh):
    with pytest.raises(MalformedMessage, match="not the coordinator"):
        fresh.receive(2, "decrypt-round", {"round": 1, "present": [1, 2, 3]}, 0.0)
    assert fresh.rounds == []


@pytest.mark.parametrize("present", [[1, 2], [3, 2, 1], [1, 2, 2, 3], [0, 1, 2], [1, 2, 6], [1, True, 3],
                                     [1, 2, "3"], None, "1,2,3"])
def test_round_with_a_bad_present_set_raises(fresh, present):
    with pytest.raises(MalformedMessage, match="present"):
        fresh.receive(1, "decrypt-round", {"round": 1, "present": present}, 0.0)
    assert fresh.rounds == []


def test_round_numbers_out_of_order_raise(fresh):
    with pytest.raises(MalformedMessage, match="out of order"):
        fresh.receive(1, "decrypt-round", {"round": 2, "present": [1, 2, 3]}, 0.0)
    fresh.receive(1, "decrypt-round", {"round": 1, "present": [1, 2, 3]}, 0.0)
    for r in (1, 3):
        with pytest.raises(MalformedMessage, match="out of order"):
            fresh.receive(1, "decrypt-round", {"round": r, "present": [1, 2, 3]}, 0.0)
    for r in (0, -1, "1", True, None, 10_001):
        with pytest.raises(MalformedMessage, match="round must be"):
            fresh.receive(1, "decrypt-round", {"round": r, "present": [1, 2, 3]}, 0.0)
        with pytest.raises(MalformedMessage, match="round must be"):
            fresh.receive(2, "decrypt-shares", {"round": r, "values": [], "digests": []}, 0.0)
    assert len(fresh.rounds) == 1


def test_commitments_before_own_shares_blame_the_sender(env, fresh):
    fresh.receive(1, "decrypt-round", {"round": 1, "present": [1, 2, 3]}, 0.0)
    fresh.receive(2, "decrypt-commitments", {"round": 1, "a": [], "b": []}, 0.0)
    assert 2 in fresh.rounds[0].culprits and "before its commitment hashes" in fresh.excluded[2]
    assert fresh.rounds[0].step == "failed"


def test_messages_from_outside_the_round_are_ignored(env):
    net = Net(env, running=(1, 2, 3))
    net.clock = TIMEOUT
    assert net.run()
    good = summary(net.coord)
    values = net.sent(1, "decrypt-shares", 1)[0]
    net.inject(5, "decrypt-shares", values)                       # not in the round (and a copy)
    net.inject(2, "decrypt-shares", {"round": 1, "values": "junk"})   # a second, late message
    net.pump()
    assert summary(net.coord) == good
    no_faults(net)


# === 7. restarts ===========================================================================================

RESTART_POINTS = ["decrypt-ready", "decrypt-round", "decrypt-shares", "decrypt-commitments", "decrypt-responses"]


@pytest.mark.parametrize("guardian, point", [(i, p) for i in (1, 3) for p in RESTART_POINTS
                                             if p != "decrypt-round" or i == 1])
def test_restart_right_after_sending_resends_nothing(env, guardian, point):
    net = Net(env)
    # crash right after the message is committed (in the log), before anything is delivered
    assert net.pump(lambda n: bool(n.sent(guardian, point)))
    net.kill(guardian)
    net.pump()
    net.restart(guardian)
    assert net.run()
    t = net.coord
    assert len(t.rounds) == 1 and t.rounds[0].present == ALL
    check_decryption(env, t.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)
    assert len(net.sent(guardian, "decrypt-ready")) == 1


def test_restart_after_shares_commits_with_the_persisted_nonces(env):
    net = Net(env)
    assert net.pump(lambda n: bool(n.sent(2, "decrypt-shares")))
    kept = net.persisted[2]
    nonces = kept["rounds"]["1"]["u"]
    assert "decrypt-shares:1" in kept["sent"] and len(nonces) == len(env.items)
    net.kill(2)
    assert not net.pump()
    net.restart(2)
    net.restart(2)                                               # twice: the replay is idempotent
    assert net.pump(lambda n: bool(n.sent(2, "decrypt-commitments")))
    a = net.sent(2, "decrypt-commitments")[0]["a"]
    assert [[int.from_bytes(x, "big") for x in row] for row in a] == \
        [[int(env.ctx.g_table.pow(int(u, 16))) for u in row] for row in nonces]
    assert net.run()
    check_decryption(env, net.coord.result)
    assert len(net.coord.rounds) == 1
    assert_no_nonce_reuse(net)
    assert net.persisted[2]["rounds"]["1"] == {"answered": True}


def test_restart_while_round_runs_from_an_old_log_copy(env):
    """A guardian down for a whole step catches up from its peers and still answers once."""
    net = Net(env)
    assert net.pump(lambda n: n.coord.rounds and n.coord.rounds[0].step == "commitments")
    net.kill(4)
    assert not net.pump()                     # the others send commitments and wait for 4's
    assert net.coord.rounds[0].waiting_for() == [4]
    net.restart(4)
    assert net.run()
    assert len(net.coord.rounds) == 1
    check_decryption(env, net.coord.result)
    assert_agree(net)
    assert_no_nonce_reuse(net)


def test_nonces_are_fresh_in_every_round(env):
    net = Net(env, cls={5: wrong_value_guardian()})
    assert net.run()
    t = net.coord
    assert [r.present for r in t.rounds] == [ALL, (1, 2, 3, 4)]
    for i in (1, 2, 3, 4):
        per_round = defaultdict(set)
        for state in net.states[i]:
            for number, kept in state["rounds"].items():
                for row in kept.get("u", []):
                    per_round[number].update(row)
        assert set(per_round) == {"1", "2"}
        assert not per_round["1"] & per_round["2"], f"guardian {i} drew a nonce twice"
        for s in range(len(env.items)):
            a1 = t.rounds[0].shares[i][s][0].commitment_a
            a2 = t.rounds[1].shares[i][s][0].commitment_a
            assert a1 != a2
        assert net.nodes[i].g.state["rounds"] == {"1": {"answered": True}, "2": {"answered": True}}
    assert_no_nonce_reuse(net)
    check_decryption(env, t.result)


# === 8. compensated ======================================================================================

def test_compensated_with_two_missing(env):
    net = Net(env, running=(1, 3, 4), compensated=True)
    net.clock = TIMEOUT
    assert net.run()
    t = net.coord
    r = t.result
    assert r.present == (1, 3, 4) and len(t.rounds) == 1
    for i in r.present:
        assert [(p.guardian, p.missing) for p in r.parts[i]] == [(i, None), (i, 2), (i, 5)]
        assert r.parts[i][0].weight == 1
        assert all(len(row) == 3 for row in r.values[i])
        assert all(len(row) == 3 for row in net.sent(i, "decrypt-responses")[0]["v"])
    check_decryption(env, r, compensated=True)
    assert_agree(net)
    assert_no_nonce_reuse(net)


def test_compensated_with_a_guardian_lost_mid_session(env):
    net = _kill_two_after_shares(env, compensated=True)
    assert net.run()
    r = net.coord.result
    assert r.present == (1, 2, 3) and all(len(r.parts[i]) == 3 for i in r.present)
    assert all(len(net.coord.rounds[0].parts[i]) == 1 for i in ALL)      # nobody missing in round 1
    check_decryption(env, r, compensated=True)


# === 9. other statements ===================================================================================

def test_guardian_with_other_statements_is_refused(env):
    other = replace(env.dctx, items=env.items[:-1])           # it derived no challenged ballot
    net = Net(env, ctxs={5: other})
    assert net.run(lambda n: n.coord.result is not None)
    t = net.coord
    assert t.refused == {5: "it derived other statements from the record than this node did"}
    assert t.rounds[0].present == (1, 2, 3, 4) and t.rounds[0].started == 0.0   # no wait for guardian 5
    assert t.absent() == [] and 5 not in t.available()
    check_decryption(env, t.result)
    assert_agree(net, [1, 2, 3, 4])
    assert net.nodes[5].t.result is None and net.nodes[5].t.refused.keys() == {1, 2, 3, 4}


def test_refusal_is_recorded_and_not_waited_for(env):
    net = Net(env, running=(1, 2, 3, 4))
    net.inject(5, "decrypt-refuse", {"reason": "the record's tally is wrong" + "!" * 600})
    assert net.run(lambda n: n.coord.result is not None, timeouts=0)        # every non-refusing one is in
    assert net.coord.refused[5].startswith("the record's tally is wrong") and len(net.coord.refused[5]) == 500
    assert net.coord.rounds[0].present == (1, 2, 3, 4)


# === 10. early messages ======================================================================================

def test_shares_before_their_round_are_buffered(env):
    net = Net(env)
    assert net.pump(lambda n: bool(n.sent(1, "decrypt-round")))
    net.held.add((1, 4))                                     # guardian 4 hears nothing from the coordinator
    net.pump()
    node = net.nodes[4]
    assert node.t.rounds == [] and sorted(s for s, _, _ in node.t._early) == [2, 3, 5]
    assert all(t == "decrypt-shares" for _, t, _ in node.t._early)
    assert net.coord.rounds[0].step == "shares" and net.coord.rounds[0].waiting_for() == [4]
    net.held.clear()
    assert net.run()
    assert node.t._early == [] and len(node.t.rounds) == 1
    check_decryption(env, net.coord.result)
    assert_agree(net)
    no_faults(net)


def test_replay_with_messages_ahead_of_their_round_gives_the_same_transcript(env):
    net = Net(env, cls={5: wrong_value_guardian()})
    assert net.run()
    want = summary(net.coord)
    for first in (2, 3):
        # a node that got the shares and commitments of `first` before the decrypt-round they belong to
        entries = list(net.log)
        rounds = [e for e in entries if e.type == "decrypt-round"]
        for r in rounds:
            moved = [e for e in entries if e.sender == first and e.body.get("round") == r.body["round"]
                     and e.type in ("decrypt-shares", "decrypt-commitments")]
            rest = [e for e in entries if e not in moved]
            at = rest.index(r)
            entries = rest[:at] + moved + rest[at:]
        t = DecryptionTranscript(net.request, env.dctx, 0.0)
        for e in entries:
            t.receive(e.sender, e.type, e.body, 0.0)
        assert summary(t) == want
        assert t._early == []


# === delivery order across senders ============================================================================



def test_response_overtaking_another_guardians_commitments_is_no_fault(env):
    net = Net(env)
    assert net.pump(lambda n: n.coord.rounds and n.coord.rounds[0].step == "commitments")
    net.held.add((5, 1))          # guardian 5's link to the coordinator is slow from here on
    net.pump()                    # everyone else answers; the coordinator hears their answers first
    net.held.clear()
    assert net.run(timeouts=2)
    assert net.coord.excluded == {}
    assert len(net.coord.rounds) == 1
    check_decryption(env, net.coord.result)
    assert_agree(net)


def test_random_delivery_order_per_sender_fifo(env):
    for seed in range(6):
        net = Net(env, rng=random.Random(seed))
        net.run(timeouts=2)
        for node in net.nodes.values():
            assert node.t.excluded == {}, (seed, node.me, node.t.excluded)
        assert len(net.coord.rounds) == 1, seed
        check_decryption(env, net.coord.result)
        assert_agree(net)


def _slow_guardian_five(env) -> Net:
    """Guardian 5's links to the others go slow right after round 1 opens: they give up on it, then it is back."""
    net = Net(env)
    assert net.pump(lambda n: bool(n.coord.rounds))
    net.held.update((5, j) for j in (1, 2, 3, 4))
    assert not net.pump()
    assert [net.nodes[i].t.rounds[0].waiting_for() for i in (1, 2, 3, 4)] == [[5]] * 4
    net.clock += TIMEOUT + 1
    assert net.pump(lambda n: len(n.coord.rounds) == 2)
    net.held.clear()
    assert net.run()
    return net


def test_slow_guardian_is_given_up_on_and_comes_back(env):
    net = _slow_guardian_five(env)
    t = net.coord
    assert [r.present for r in t.rounds] == [ALL, (1, 2, 3, 4)]
    assert t.rounds[0].missing == (5,) and t.missing_in == {5: 1}
    assert t.ready[5] == 2 and t.available() == list(ALL) and t.absent() == []
    check_decryption(env, t.result)
    assert_agree(net, [1, 2, 3, 4])
    assert summary(net.nodes[5].t)[3] == summary(t)[3]            # the same result on the slow node
    assert net.sent(5, "decrypt-responses") == []
    assert_no_nonce_reuse(net)
    no_faults(net)




def test_every_node_names_the_same_missing_guardians(env):
    net = _slow_guardian_five(env)
    slow = net.nodes[5].t
    assert slow.rounds[0].missing == (5,)
    assert slow.absent() == [] and slow.available() == list(ALL)
    assert_agree(net)


# === the property ===============================================================================================

@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(present=st.lists(st.integers(1, N), min_size=K, max_size=N, unique=True), compensated=st.booleans(),
       data=st.data())
def test_any_quorum_completes_in_one_round(env, present, compensated, data):
    present = sorted(present)
    coordinator = data.draw(st.sampled_from(present))
    net = Net(env, running=present, compensated=compensated, coordinator=coordinator)
    if len(present) < N:
        assert not net.pump(lambda n: bool(n.coord.rounds))
        net.clock = TIMEOUT
    assert net.run(timeouts=0)
    t = net.coord
    assert len(t.rounds) == 1 and t.result.present == tuple(present)
    check_decryption(env, t.result, compensated)
    assert_agree(net)
    assert_no_nonce_reuse(net)
    no_faults(net)


# === 11. parse_request ==========================================================================================

def _request_obj(**changes) -> dict:
    obj = {"ceremony": "11" * 32, "h_e": "22" * 32, "record": "33" * 32, "tally": "44" * 32,
           "challenged": [["b-1", "55" * 32], ["b-2", "66" * 32]], "compensated": False, "coordinator": 2,
           "timeout": 30.0, "nonce": "abc", "rehearsal": False}
    obj.update(changes)
    return obj


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def test_request_round_trip():
    for obj in (_request_obj(), _request_obj(tally=None), _request_obj(challenged=[], compensated=True),
                _request_obj(nonce="é" * 3, timeout=86400.0, coordinator=5), _request_obj(timeout=1.5)):
        data = _canonical(obj)
        request = parse_request(data, 5)
        assert request.canonical_bytes() == data
        assert parse_request(request.canonical_bytes(), 5) == request
        assert request.to_json_dict() == obj
        assert len(request.session) == 32
    a = parse_request(_canonical(_request_obj()), 5)
    b = parse_request(_canonical(_request_obj(nonce="abd")), 5)
    assert a.session != b.session
    assert a.challenged == (("b-1", b"\x55" * 32), ("b-2", b"\x66" * 32)) and a.tally == b"\x44" * 32


BAD_REQUESTS = {
    "not bytes": ("{}", "byte string"),
    "too big": (b" " * (4 * 2**20 + 1), "byte string"),
    "not JSON": (b"{not json", "not JSON"),
    "a list": (b"[]", "fields must be exactly"),
    "extra key": (_canonical(_request_obj(extra=1)), "fields must be exactly"),
    "missing key": (_canonical({k: v for k, v in _request_obj().items() if k != "nonce"}), "fields must be exactly"),
    "spaces": (json.dumps(_request_obj(), sort_keys=True).encode(), "canonical"),
    "keys out of order": (json.dumps(_request_obj(), separators=(",", ":")).encode(), "canonical"),
    "upper-case hex": (_canonical(_request_obj(record="AB" * 32)), "canonical"),
    "integer timeout": (_canonical(_request_obj(timeout=30)), "canonical"),
    "ceremony not hex": (_canonical(_request_obj(ceremony="zz" * 32)), "ceremony"),
    "h_e too short": (_canonical(_request_obj(h_e="22" * 31)), "h_e"),
    "record a number": (_canonical(_request_obj(record=5)), "record"),
    "tally bad hex": (_canonical(_request_obj(tally="4" * 63)), "tally"),
    "challenged digest bad": (_canonical(_request_obj(challenged=[["b-1", "xyz"]])), "challenged ballot 'b-1'"),
    "challenged not a list": (_canonical(_request_obj(challenged={"b-1": "55" * 32})), "challenged"),
    "challenged item shape": (_canonical(_request_obj(challenged=[["b-1"]])), "challenged #1"),
    "challenged empty id": (_canonical(_request_obj(challenged=[["", "55" * 32]])), "challenged #1"),
    "challenged id not a string": (_canonical(_request_obj(challenged=[[7, "55" * 32]])), "challenged #1"),
    "duplicate ballot": (_canonical(_request_obj(challenged=[["b-1", "55" * 32], ["b-1", "66" * 32]])),
                         "named twice"),
    "coordinator 0": (_canonical(_request_obj(coordinator=0)), "coordinator"),
    "coordinator n + 1": (_canonical(_request_obj(coordinator=6)), "coordinator"),
    "coordinator true": (_canonical(_request_obj(coordinator=True)), "coordinator"),
    "coordinator a string": (_canonical(_request_obj(coordinator="1")), "coordinator"),
    "timeout 0.5": (_canonical(_request_obj(timeout=0.5)), "timeout"),
    "timeout too long": (_canonical(_request_obj(timeout=86401.0)), "timeout"),
    "timeout true": (_canonical(_request_obj(timeout=True)), "timeout"),
    "timeout a string": (_canonical(_request_obj(timeout="30")), "timeout"),
    "compensated 1": (_canonical(_request_obj(compensated=1)), "compensated"),
    "nonce too long": (_canonical(_request_obj(nonce="n" * 65)), "nonce"),
    "nonce a number": (_canonical(_request_obj(nonce=5)), "nonce"),
    "nothing to decrypt": (_canonical(_request_obj(tally=None, challenged=[])), "nothing to decrypt"),
    "timeout NaN": (_canonical(_request_obj(timeout=float("nan"))), "timeout"),
    "timeout Infinity": (_canonical(_request_obj(timeout=float("inf"))), "timeout"),
    "coordinator 1.0": (_canonical(_request_obj(coordinator=1.0)), "coordinator"),
    "a key twice": (_canonical(_request_obj())[:-1] + b',"nonce":"abc"}', "canonical"),
    "rehearsal 0": (_canonical(_request_obj(rehearsal=0)), "rehearsal must be a boolean"),
    "rehearsal a string": (_canonical(_request_obj(rehearsal="yes")), "rehearsal must be a boolean"),
    "challenged id of 257 characters": (_canonical(_request_obj(challenged=[["b" * 257, "55" * 32]])),
                                        "challenged #1"),
    "10001 challenged ballots": (_canonical(_request_obj(challenged=[[f"b{i}", "55" * 32] for i in range(10_001)])),
                                 "at most 10000"),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_request_refused_naming_the_field(name):
    data, says = BAD_REQUESTS[name]
    with pytest.raises(InputError, match=f"decryption request: .*{_re(says)}"):
        parse_request(data, 5)


def _re(s: str) -> str:
    return re.escape(s)


# === 12. the policy on a real record ==============================================================================

@dataclass
class Rec:
    root: object
    election: object
    steps: dict
    plains: dict

    @property
    def ctx(self):
        return self.election.context

    def index(self, root=None) -> dict:
        return layout.Record(root or self.root).read_index()

    def request(self, root=None, *, tally=True, challenged=("ch-1",), h_e=None, **kw) -> DecryptionRequest:
        root = root or self.root
        index = self.index(root)
        return DecryptionRequest(b"\x01" * 32, h_e or self.ctx.h_e,
                                 hashlib.sha256((root / layout.INDEX).read_bytes()).digest(),
                                 bytes.fromhex(index[layout.ENCRYPTED_TALLY]) if tally is True else tally,
                                 tuple((b, bytes.fromhex(index[layout.ballot_file(b)])) for b in challenged),
                                 kw.get("compensated", False), 1, 30.0, "policy")

    def check(self, request=None, root=None, steps=None, own=None):
        ctx = self.ctx
        own_h_e, own_keys = own or (ctx.h_e, (ctx.joint_key, ctx.joint_data_key))
        return check_record(root or self.root, request or self.request(root), own_h_e, own_keys,
                            self.steps if steps is None else steps)


@pytest.fixture(scope="module")
def record(standard_election, demo_manifest, tmp_path_factory) -> Rec:
    root = tmp_path_factory.mktemp("policy") / "record"
    write_election(root, standard_election, "Policy test election", "2025-03-01")
    style = demo_manifest.ballot_styles[0].label
    plains = [PlaintextBallot("c-1", style, {"Governor": {"Governor option 3": 1}, "Measure A": {"Measure A option 2": 1}}),
              PlaintextBallot("c-2", style, {"Governor": {"Governor option 1": 1}}),
              PlaintextBallot("ch-1", style, {"Governor": {"Governor option 7": 1}, "Measure B": {"Measure B option 1": 1}})]
    ctx = standard_election.context
    recs = {p.ballot_id: r for p, r in encrypt_records(ctx, plains, "booth-1", workers=1)}
    assert all(not isinstance(r, str) for r in recs.values()), recs
    with BallotBox.open(root) as box:
        out = box.submit([], workers=1, verified=[(recs["c-1"], codec.CAST), (recs["c-2"], codec.CAST),
                                                  (recs["ch-1"], codec.CHALLENGED)])
        assert all(o.accepted for o in out), out
        box.tally()
    steps = {s.step: s.to_json() for s in verify_record(root)}
    assert all(steps[name]["result"] == "pass" for name in REQUIRED_STEPS), steps
    return Rec(root, standard_election, steps, {p.ballot_id: p for p in plains})


@pytest.fixture
def record_copy(record, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(record.root, dest)
    return dest


def test_policy_accepts_the_right_request(record):
    checked = record.check()
    ctx = record.ctx
    n_options = sum(len(c.options) for c in ctx.manifest.contests)
    assert len(checked.items) == n_options + 1
    assert [type(i.statement) for i in checked.items] == [TallyStatement] * n_options + [NonceStatement]
    assert checked.items[-1].label == "challenged ballot 'ch-1'"
    assert [r.ballot_id for r in checked.challenged] == ["ch-1"]
    assert checked.ctx.h_e == ctx.h_e and checked.tally.ballot_count == 2
    _, published = codec.encrypted_tally_from_json(ctx.group, layout.Record(record.root).read_json(
        layout.ENCRYPTED_TALLY))
    assert checked.tally == published
    # the synthetic form of the verifier's report does as well, and the digest is the same
    synthetic = {name: {"result": "pass"} for name in REQUIRED_STEPS}
    again = record.check(steps=synthetic)
    assert statements_digest(ctx.group, again.items) == statements_digest(ctx.group, checked.items)
    # the public shares the protocol checks parts against are the ceremony's
    for i in ALL:
        part = next(p for p in plan_parts(ctx.group, N, ALL, False) if p.guardian == i)
        assert checked.vote_publics.public(part, False) == record.election.vote_publics().public(part, False)


def test_policy_accepts_challenged_only_without_aggregation(record):
    steps = {k: v for k, v in record.steps.items() if k != "aggregation"}
    checked = record.check(record.request(tally=None), steps=steps)
    assert checked.tally is None and len(checked.items) == 1
    with pytest.raises(PolicyRefusal, match="9 aggregation fails on the record: it did not run"):
        record.check(record.request(), steps=steps)


def test_policy_accepts_tally_only(record):
    checked = record.check(record.request(challenged=()))
    assert all(isinstance(i.statement, TallyStatement) for i in checked.items) and checked.challenged == ()


def test_policy_refuses_a_cast_ballot_named_challenged(record):
    with pytest.raises(PolicyRefusal, match="ballot 'c-1' is cast, not challenged"):
        record.check(record.request(challenged=("ch-1", "c-1")))


def test_policy_refuses_an_unknown_ballot_or_another_file(record):
    req = record.request()
    unknown = replace(req, challenged=(("ch-9", b"\x00" * 32),))
    with pytest.raises(PolicyRefusal, match="'ch-9' is not in the record"):
        record.check(unknown)
    other = replace(req, challenged=(("ch-1", b"\x00" * 32),))
    with pytest.raises(PolicyRefusal, match="ballot 'ch-1': the requested file is not the record's ballots/ch-1.json"):
        record.check(other)


def test_policy_refuses_a_tally_digest_not_the_records(record):
    req = replace(record.request(), tally=hashlib.sha256(b"another tally").digest())
    with pytest.raises(PolicyRefusal, match="requested tally is not the record's encrypted_tally.json"):
        record.check(req)


def test_policy_refuses_an_altered_encrypted_tally(record, record_copy):
    rec = layout.Record(record_copy)
    group = record.ctx.group
    h_e, tally = codec.encrypted_tally_from_json(group, rec.read_json(layout.ENCRYPTED_TALLY))
    totals = dict(tally.totals)
    totals[(1, 1)], totals[(1, 3)] = tally.totals[(1, 3)], tally.totals[(1, 1)]      # Governor options 1 and 3
    assert totals != dict(tally.totals)
    digest = rec.write_json(layout.ENCRYPTED_TALLY,
                            codec.encrypted_tally_to_json(group, h_e, replace(tally, totals=totals)))
    rec.update_index((), {layout.ENCRYPTED_TALLY: digest})
    # The node's own verifier, run on this copy, recomputes the aggregate (Verification 9); the policy refuses
    # on its failure.
    steps = {s.step: s.to_json() for s in verify_record(record_copy)}
    with pytest.raises(PolicyRefusal, match="step 9 aggregation fails on the record: encrypted tally contest 1 "
                                            "option 1: .* is not the product of the cast ballots"):
        record.check(record.request(record_copy), root=record_copy, steps=steps)
    # the old request names the old index and tally, which the record no longer holds
    with pytest.raises(PolicyRefusal, match="index is not the one the request names|requested tally is not"):
        record.check(record.request(), root=record_copy)


@pytest.mark.parametrize("step", ["vote limits", "ballot signatures", "record index", "parameters"])
def test_policy_refuses_when_a_verifier_step_fails(record, step):
    steps = dict(record.steps)
    steps[step] = {"result": "FAIL", "failures": [f"something about ballot 'c-2' in {step}"]}
    with pytest.raises(PolicyRefusal, match=f"{_re(step)} fails on the record: something about ballot 'c-2'"):
        record.check(steps=steps)
    steps[step] = {"result": "n/a", "failures": []}
    with pytest.raises(PolicyRefusal, match=f"{_re(step)} fails on the record: it did not run"):
        record.check(steps=steps)
    del steps[step]
    with pytest.raises(PolicyRefusal, match=f"{_re(step)} fails on the record: it did not run"):
        record.check(steps=steps)


def test_policy_does_not_need_the_decryption_steps(record):
    # the decryption steps do not apply to an undecrypted record: the policy does not look at them
    for name in ("tally decryption", "tally contents", "challenged ballot decryption", "challenged ballot contents"):
        assert record.steps[name]["result"] == "n/a"
    record.check()


def test_policy_refuses_another_election(record, toy_election):
    req = record.request(h_e=hashlib.sha256(b"another election").digest())
    with pytest.raises(PolicyRefusal, match="request names another election"):
        record.check(req)
    ctx = record.ctx
    with pytest.raises(PolicyRefusal, match="not the one this guardian's key ceremony made"):
        record.check(own=(b"\x07" * 32, (ctx.joint_key, ctx.joint_data_key)))
    with pytest.raises(PolicyRefusal, match="not the one this guardian's key ceremony made"):
        record.check(own=(ctx.h_e, (ctx.joint_data_key, ctx.joint_key)))


def test_policy_refuses_a_record_whose_election_does_not_verify(record, record_copy):
    rec = layout.Record(record_copy)
    obj = rec.read_json(layout.HASHES_EXT)
    (record_copy / layout.HASHES_EXT).write_bytes(json.dumps(obj).replace('"', "'").encode())
    with pytest.raises(PolicyRefusal, match="election does not verify"):
        record.check(root=record_copy)


@pytest.mark.parametrize("what", ["decrypted tally", "challenged ballot"])
def test_policy_refuses_a_record_that_already_holds_decryptions(record, record_copy, what):
    rec = layout.Record(record_copy)
    rel = layout.DECRYPTED_TALLY if what == "decrypted tally" else layout.challenged_file("ch-1")
    (record_copy / rel).parent.mkdir(exist_ok=True)
    rec.update_index((), {rel: rec.write(rel, b"{}")})
    with pytest.raises(PolicyRefusal, match="already holds decryptions"):
        record.check(record.request(record_copy), root=record_copy)


def test_policy_items_decrypt_through_the_protocol(record, record_copy):
    """End to end on the standard group: the policy's statements, the protocol with three guardians, the
    record's files, the verifier; and then the policy refuses to decrypt the record again."""
    checked = record.check(record.request(record_copy), root=record_copy)
    ctx = checked.ctx
    election = record.election
    dctx = DecryptionContext(ctx.group, ctx.g_table, N, K, checked.items,
                             {"vote": ctx.k_table, "data": ctx.k_hat_table},
                             {"vote": checked.vote_publics, "data": checked.data_publics})
    env = Env(election, ctx.manifest, [], None, None, checked.items, dctx, {})
    net = Net(env, running=(1, 2, 4), request=record.request(record_copy))
    net.clock = 30.0
    assert net.run(timeouts=0)
    r = net.coord.result
    assert r.present == (1, 2, 4)
    joints = [JointResult(m, c, v, tuple(codec.ShareRecord(s.part.guardian, s.part.missing, s.value,
                                                           s.commitment_a, s.commitment_b, v_i)
                                         for s, v_i in parts)) for m, c, v, parts in r.results]
    who = quorum(N, r.present, False)
    rec = layout.Record(record_copy)
    decrypted = tally_record(ctx, checked.tally, joints[:-1], who)
    opened = [challenged_record(ctx, checked.challenged[0], checked.items[-1].statement, joints[-1], who)]
    write_decryptions(rec, ctx, decrypted, opened)
    steps = {s.step: s for s in verify_record(record_copy)}
    failing = {name: s.failures[:1] for name, s in steps.items() if s.result == "FAIL"}
    assert failing == {}
    cast = [record.plains["c-1"], record.plains["c-2"]]
    truth = expected_sums(ctx.manifest, cast)
    got = {(c.contest_index, o.option_index): o.tally for c in decrypted.contests for o in c.options}
    assert got == truth
    assert {(c.contest_index, s.option_index): s.selection for c in opened[0].contests for s in c.selections} == \
        expected_values(ctx.manifest, record.plains["ch-1"])
    with pytest.raises(PolicyRefusal, match="already holds decryptions"):
        record.check(record.request(record_copy), root=record_copy)

