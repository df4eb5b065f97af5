"""Decryption steps larger than a frame (node/protocol/decryption.py): each guardian's shares, commitments and
responses go out as chunks of consecutive statements, and every transcript takes a step only once all its
chunks are in and agree.

The members run on the in-memory network of node/testing/network.py (toy group, n = 5, k = 3, the statements
of test_decryption_protocol.py) with a frame so small that every step of every guardian is cut into several
chunks. Each test checks the decrypted values and proofs, that every member's transcript agrees, and that no
guardian sent a chunk twice.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from collections import Counter

import nacl.signing
import pytest

from node.config import NodeConfig
from node.protocol.decryption import (
    CHUNK_OVERHEAD, CHUNKED, DecryptionTranscript, chunk_message,
)
from node.protocol.envelope import seal_envelope
from node.protocol.quota import Limits, Quota
from node.testing.network import DecryptionMachines, Network
from test_decryption_protocol import ALL, TIMEOUT, check_decryption, env, make_request  # noqa: F401 (env: a fixture)

STEPS = tuple(CHUNKED)
# Rows on the toy group: a shares row is 46 bytes with one part (134 with three), a commitments row 22 (62), a
# responses row 6 (16). These budgets cut shares to one statement a chunk, commitments to two, responses to eight.
BUDGET = {False: 50, True: 140}


def network(env, *, compensated: bool = False, running=ALL, seed: int = 0, frame_bytes: int | None = None,
            order: str = "random") -> Network:
    frame = frame_bytes or CHUNK_OVERHEAD + BUDGET[compensated]
    machines = DecryptionMachines(make_request(env, compensated=compensated), env.dctx, env.keys,
                                  frame_bytes=frame)
    return Network(machines, 5, running=running, seed=seed, order=order)


def done(net: Network) -> bool:
    return bool(net.ts) and all(t.result is not None for t in net.ts.values())


def settle(net: Network) -> None:
    assert net.settle(TIMEOUT + 1, done), {i: (t.current and (t.current.number, t.current.step,
                                                              t.current.waiting_for())) for i, t in net.ts.items()}


def chunks_of(net: Network, sender: int, type_: str, round_: int) -> list[dict]:
    return [m.body for m in net.wire if m.sender == sender and m.type == type_ and m.body.get("round") == round_]


def summary(t: DecryptionTranscript):
    """What every member must agree on. Not the culprits: a member that takes the coordinator's next round before
    the culprit's bad chunk (another sender: no order between them) leaves that round without naming anyone."""
    result = [(int(m), int(c), int(v)) for m, c, v, _ in t.result.results] if t.result else None
    return [(r.number, r.present, r.missing) for r in t.rounds], result


def agreed(net: Network) -> DecryptionTranscript:
    """Every running member's transcript says the same as the coordinator's; the coordinator's."""
    first = summary(net.ts[1])
    for i, t in net.ts.items():
        assert summary(t) == first, f"member {i} differs from member 1"
    return net.ts[1]


def each_chunk_sent_once(net: Network) -> None:
    """No guardian sent a chunk of a step twice in a round (nor a step twice): no nonce answers two challenges."""
    seen = Counter((m.sender, m.type, m.body.get("round"), m.body.get("chunk")) for m in net.wire
                   if m.type in STEPS or m.type == "decrypt-round")
    assert [k for k, n in seen.items() if n > 1] == []


def envelope_size(type_: str, body: dict) -> int:
    key = nacl.signing.SigningKey(bytes(32))
    return len(seal_envelope(key, type_, bytes(32), 2**62, body).encode())


# --- every step in chunks -------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["random", "fifo", "lifo"])
@pytest.mark.parametrize("compensated", [False, True], ids=["direct", "compensated"])
def test_every_step_in_chunks_decrypts_and_agrees(env, compensated, order):
    # compensated: 4 and 5 never start, so each of 1-3 also sends their parts (three per statement)
    net = network(env, compensated=compensated, running=(1, 2, 3) if compensated else ALL, order=order)
    settle(net)
    t = agreed(net)
    assert len(t.rounds) == 1 and not t.excluded and net.faults == {}
    check_decryption(env, t.result, compensated)
    frame = net.machines.frame_bytes
    for i in t.result.present:
        counts = {type_: len(chunks_of(net, i, type_, 1)) for type_ in STEPS}
        assert counts == {"decrypt-shares": 9, "decrypt-commitments": 5, "decrypt-responses": 2}, (i, counts)
        for type_ in STEPS:
            for body in chunks_of(net, i, type_, 1):
                assert envelope_size(type_, body) <= frame - 200          # well under the frame
    assert not any(r.chunks for tr in net.ts.values() for r in tr.rounds)   # nothing left half-assembled
    each_chunk_sent_once(net)


def test_a_step_that_fits_goes_out_whole_as_before(env):
    net = network(env, frame_bytes=2**20)
    settle(net)
    for m in net.wire:
        if m.type in STEPS:
            assert not {"chunk", "chunks", "first"} & set(m.body), m.body
    check_decryption(env, agreed(net).result)


def test_chunk_message_cuts_at_statement_boundaries_within_the_budget():
    body = {"round": 3, "values": [[bytes([s]) * 500] * 2 for s in range(10)], "digests": [[bytes(32)] * 2] * 10}
    frame = CHUNK_OVERHEAD + 2 * 1100
    chunks = chunk_message("decrypt-shares", body, frame)
    assert [(c["chunk"], c["chunks"], c["first"], len(c["values"])) for c in chunks] == \
        [(1, 5, 0, 2), (2, 5, 2, 2), (3, 5, 4, 2), (4, 5, 6, 2), (5, 5, 8, 2)]
    assert [row for c in chunks for row in c["values"]] == body["values"]
    assert all(envelope_size("decrypt-shares", c) <= frame for c in chunks)
    assert chunk_message("decrypt-shares", body, 2**20) == [body]


# --- a chunk that never comes -----------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS)
def test_a_missing_chunk_names_its_guardian_missing_at_the_timeout(env, step):
    net = network(env)
    net.rewrite[4] = lambda type_, body: [] if type_ == step and body.get("chunk") == 2 else [(type_, body)]
    assert not net.rounds(done)                  # everyone else is in; round 1 waits for 4's chunk 2
    r1 = net.ts[1].rounds[0]
    assert r1.step == step[len("decrypt-"):] and r1.waiting_for() == [4]
    assert net.ts[1].deadline(net.clock.now) == r1.step_started + TIMEOUT
    settle(net)
    t = agreed(net)
    assert t.rounds[0].missing == (4,) and t.rounds[0].culprits == {} and 4 not in t.excluded
    assert t.result is t.rounds[1] and t.result.present == (1, 2, 3, 5)
    check_decryption(env, t.result)
    assert net.faults == {}


# --- a chunk twice -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("step", STEPS)
def test_a_duplicated_chunk_is_taken_once(env, step):
    net = network(env)

    def twice(type_, body):
        if type_ != step:
            return [(type_, body)]
        again = [(type_, copy.deepcopy(body))] if body["chunk"] in (1, 2) else []
        return [(type_, body)] + again                        # chunks 1 and 2 twice, back to back

    net.rewrite[2] = twice
    net.intercept = lambda sender, recipient, type_, body: \
        [body, body] if sender == 3 and type_ == step and body.get("chunk") == 1 else [body]
    settle(net)
    t = agreed(net)
    assert len(t.rounds) == 1 and not t.excluded and net.faults == {}
    check_decryption(env, t.result)


# --- a chunk that contradicts the others -----------------------------------------------------------------------

def _shift(by):
    def change(body):
        if body.get("chunk") == 2:
            body["first"] += by
    return change


def _count(body):
    if body.get("chunk") == 2:
        body["chunks"] += 1


def _flip_digest(body):
    body["digests"][0][0] = bytes([body["digests"][0][0][0] ^ 1]) + body["digests"][0][0][1:]


INCONSISTENT = {
    # name: (step, how guardian 3's chunks go out instead, what its culprit reason says)
    "another count": ("decrypt-commitments", lambda chunks: [_apply(c, _count) for c in chunks], "contradicts"),
    "two versions of a chunk": ("decrypt-shares", lambda chunks: chunks[:2] + [_apply(chunks[1], _flip_digest)]
                                + chunks[2:], "differs from its chunk 2"),
    "overlap": ("decrypt-shares", lambda chunks: [_apply(c, _shift(-1)) for c in chunks],
                "gap or overlaps"),
    "gap": ("decrypt-shares", lambda chunks: [_apply(c, _shift(1)) for c in chunks], "gap or overlaps"),
    "the whole step after a chunk": ("decrypt-responses", lambda chunks: chunks[:1] + [_whole(chunks)],
                                     "contradicts its chunks of 2"),
    "chunk 0": ("decrypt-shares", lambda chunks: [_apply(chunks[0], lambda b: b.update(chunk=0))] + chunks[1:],
                "a chunk needs"),
    "an empty chunk": ("decrypt-shares", lambda chunks: [_apply(chunks[0], lambda b: b.update(values=[]))]
                       + chunks[1:], "must hold 1 to"),
    "no first": ("decrypt-responses", lambda chunks: [_apply(chunks[0], lambda b: b.pop("first"))] + chunks[1:],
                 "a chunk needs"),
    "a chunk's hash is wrong (eq 88)": ("decrypt-shares", lambda chunks: chunks[:4] + [_apply(chunks[4], _flip_digest)]
                                        + chunks[5:], "eq 88"),
    "a chunk's response is wrong (eqs 94-95)": (
        "decrypt-responses",
        lambda chunks: [chunks[0], _apply(chunks[1], lambda b: b["v"][0].__setitem__(0, bytes(3)))],
        "wrong partial decryption"),
}


def _apply(body, fn):
    body = copy.deepcopy(body)
    fn(body)
    return body


def _whole(chunks):
    key = CHUNKED["decrypt-responses"][0]
    return {"round": chunks[0]["round"], key: [row for c in chunks for row in c[key]]}


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_an_inconsistent_chunk_names_its_sender(env, name):
    step, change, says = INCONSISTENT[name]
    net = network(env)
    held: list[dict] = []
    total = {}

    def rewrite(type_, body):
        """Guardian 3's chunks of `step` in round 1, changed, all at once when its last is ready."""
        if type_ != step or body["round"] != 1:
            return [(type_, body)]
        held.append(body)
        total.setdefault("n", body["chunks"])
        return [(type_, b) for b in change(held)] if len(held) == total["n"] else []

    net.rewrite[3] = rewrite
    settle(net)
    t = agreed(net)
    r1 = t.rounds[0]
    assert list(r1.culprits) == [3], r1.culprits
    assert says in r1.culprits[3], r1.culprits[3]
    assert t.excluded[3] == f"round 1: {r1.culprits[3]}"
    assert [r.present for r in t.rounds] == [ALL, (1, 2, 4, 5)]
    check_decryption(env, t.result)
    assert net.faults == {}                   # named inside the round, not refused as a malformed message


# --- restarts -----------------------------------------------------------------------------------------------

def _delivered(net: Network, sender: int, type_: str) -> int:
    """How many copies of `sender`'s `type_` messages the members have taken."""
    return sum(1 for j in net.everyone for m in net.log[j] if m.sender == sender and m.type == type_)


@pytest.mark.parametrize("step", STEPS)
def test_restart_mid_step_sends_no_chunk_again(env, step):
    """Guardian 3 dies once a few of its chunks of `step` have reached a few members (the rest still in its
    outbox), while its own transcript holds only part of them; it comes back from its log and sealed state."""
    net = network(env, order="fifo")          # run(): one message at a time, each sender's in order, as over links
    net.run(lambda n: _delivered(n, 3, step) >= 3)
    assert sorted(net.ts[3].rounds[0].chunks[(step, 3)].got) == [1]      # its own transcript: chunk 1 only
    net.kill(3)
    net.run()                                  # the others go as far as they can without 3
    net.join(3)
    settle(net)
    t = agreed(net)
    assert len(t.rounds) == 1 and t.result.present == ALL and net.faults == {} and not t.excluded
    check_decryption(env, t.result)
    each_chunk_sent_once(net)
    assert net.persisted[3]["rounds"]["1"] == {"answered": True}


def test_restart_of_every_member_mid_round_reassembles_from_the_logs(env):
    net = network(env, order="fifo")
    net.run(lambda n: n.ts[1].rounds and n.ts[1].rounds[0].step == "commitments"
            and any(n.ts[1].rounds[0].chunks))
    for i in ALL:
        net.restart(i)                         # each transcript from the messages it had taken, some chunks of a step
    settle(net)
    t = agreed(net)
    assert len(t.rounds) == 1
    check_decryption(env, t.result)
    each_chunk_sent_once(net)


def test_chunks_in_any_order_within_a_step_give_the_same_transcript(env):
    """A node replays its session log in the order it stored it: the chunks of one step may come in any order."""
    net = network(env, compensated=True, running=(1, 2, 3))
    settle(net)
    want = summary(net.ts[1])
    rng = random.Random(5)
    messages = list(net.log[1])
    out, k = [], 0
    while k < len(messages):           # shuffle each run of one sender's chunks of one step
        j = k
        while j < len(messages) and (messages[j].sender, messages[j].type) == (messages[k].sender, messages[k].type):
            j += 1
        run = messages[k:j]
        rng.shuffle(run)
        out += run
        k = j
    t = DecryptionTranscript(net.machines.request, env.dctx, 0.0, frame_bytes=net.machines.frame_bytes)
    for m in out:
        t.receive(m.sender, m.type, m.body, net.clock.now)
    assert summary(t) == want


# --- quotas ---------------------------------------------------------------------------------------------------

def _defaults():
    fields = {f.name: f.default for f in dataclasses.fields(NodeConfig)}
    return Limits(fields["peer_burst_bytes"], fields["peer_bytes_per_second"], fields["peer_burst_messages"],
                  fields["peer_messages_per_second"], fields["peer_open_sessions"])


@pytest.mark.parametrize("frame_bytes", [2**20, 16 * 2**10])
def test_a_large_round_of_one_guardian_fits_the_default_quotas(frame_bytes):
    """68 options and 1000 challenged ballots, compensated for two missing (three parts a statement), on the
    standard group (p 512 bytes, q 32): one guardian's three steps, at one instant, within the default quotas
    of every peer (the bytes are what they were unchunked, the envelopes a few per step)."""
    rows, parts, p, q = 68 + 1000, 3, b"\x01" * 512, b"\x02" * 32
    steps = {"decrypt-shares": {"round": 1, "values": [[p] * parts] * rows, "digests": [[q] * parts] * rows},
             "decrypt-commitments": {"round": 1, "a": [[p] * parts] * rows, "b": [[p] * parts] * rows},
             "decrypt-responses": {"round": 1, "v": [[q] * parts] * rows}}
    quota, sender, session = Quota(_defaults()), b"\x07" * 32, b"\x08" * 32
    sizes = [envelope_size(type_, chunk) for type_, body in steps.items()
             for chunk in chunk_message(type_, body, frame_bytes)]
    assert max(sizes) <= frame_bytes
    for size in sizes:
        assert quota.admit(sender, session, size, 0.0, lambda s: True) is None, (len(sizes), sum(sizes))
    assert sum(sizes) < 6 * 2**20 and len(sizes) <= (10 if frame_bytes == 2**20 else 400)
