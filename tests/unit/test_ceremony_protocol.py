"""Adversarial tests of the key ceremony state machine (node.protocol.ceremony, spec 3.2).

The in-memory network of node.testing.network drives n Transcript/Guardian pairs:
every message a guardian sends goes to every transcript, its sender's included, in
a seeded random order. A test can alter, drop or duplicate a message per (sender,
recipient) (`intercept`), play a malicious guardian by rewriting what it sends
(`rewrite`), silence a guardian's messages of one type (`muted`), relay keys
messages between honest guardians, and restart a guardian from its persisted
state. Every transcript exception other than CeremonyFault escapes the network
and fails the test.

Most cases run on TOY_64 (same algebra, much faster); the happy path also runs
on the STANDARD group.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import random

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crypto.ballot import PlaintextBallot, encrypt_ballot
from node.crypto.decryption import Part, PublicShares
from node.crypto.election import ElectionContext
from node.crypto.keys import encrypt_share, evaluate_polynomial, generate_guardian_key, lagrange_coefficient
from node.crypto.manifest import parse_manifest
from node.crypto.params import STANDARD, TOY_64
from node.crypto.tally import decrypt_tally, tally_ballots, verify_tally
from node.protocol.ceremony import CeremonyFault, Guardian, Transcript, encode_public_key, encode_share
from node.protocol.election_config import ConfigGuardian, ElectionConfig
from node.testing import network
from node.testing.network import message_digest

MANIFEST = parse_manifest({
    "label": "Ceremony test election",
    "contests": [
        {"label": "Mayor", "options": [{"label": "Alice"}, {"label": "Bob"}, {"label": "Carol"}]},
        {"label": "Measure", "options": [{"label": "Yes"}, {"label": "No"}]},
    ],
    "ballot_styles": [{"label": "All", "contests": [1, 2]}],
})

TYPES = ("keys", "echo", "shares", "share-check", "reveal", "result")
PHASE_OF_TYPE = {"keys": "keys", "echo": "echo", "shares": "shares", "share-check": "check",
                 "reveal": "complaints", "result": "result"}


def make_config(n: int, k: int) -> ElectionConfig:
    guardians = tuple(ConfigGuardian(i, f"Guardian {i}", bytes([i]) * 32) for i in range(1, n + 1))
    return ElectionConfig("ceremony-test", k, guardians, MANIFEST, 60.0, "0" * 32)


class Network(network.Network):
    """n guardians of one ceremony on the in-memory network, with what the tests check of them."""

    def __init__(self, n: int, k: int, *, group=TOY_64, seed: int = 0, key_seed=None, order: str = "random",
                 relay_keys: bool | str = False) -> None:
        self.k, self.group = k, group
        self.config = make_config(n, k)
        machines = network.CeremonyMachines(self.config, group, seed if key_seed is None else key_seed,
                                            relay_keys=bool(relay_keys))
        # relay_keys=True: a relayed keys message reaches the others at once; "async": through the queue
        super().__init__(machines, n, seed=seed, order=order, relay_at_once=relay_keys is True)

    def timeout_all(self) -> dict[int, CeremonyFault | None]:
        """Every transcript's deadline passes: what each one names."""
        named = {}
        for i in self.everyone:
            try:
                self.ts[i].timeout()
                named[i] = None
            except CeremonyFault as e:
                named[i] = e
        return named

    # --- helpers for tests -----------------------------------------------------------------------

    def outcomes(self, who=None) -> dict:
        return {i: self.ts[i].outcome for i in (self.everyone if who is None else who)}

    def assert_complete(self) -> dict:
        for i in self.everyone:
            assert self.ts[i].outcome is not None, f"transcript {i} stuck in {self.ts[i].phase}"
            assert self.ts[i].outcome.status == "complete", (i, self.ts[i].outcome)
        results = [self.ts[i].expected_result() for i in self.everyone]
        assert all(r == results[0] for r in results)
        return results[0]

    def assert_aborted(self, culprits, who=None, reason: str | None = None) -> None:
        for i in (self.honest if who is None else who):
            outcome = self.ts[i].outcome
            assert outcome is not None and outcome.status == "aborted", (i, self.ts[i].phase, outcome)
            assert outcome.culprits == sorted(culprits), (i, outcome)
            if reason is not None:
                assert reason in outcome.reason, (i, outcome)

    def secret(self, i: int):
        return self.gs[i]._secret()

    def q_bytes(self, x: int) -> bytes:
        return int(x).to_bytes(self.group.q_bytes, "big")

    def p_bytes(self, x: int) -> bytes:
        return int(x).to_bytes(self.group.p_bytes, "big")


# --- checking the keys a completed ceremony produced -------------------------------------------------

def check_decryption_keys(net: Network, tally_subsets=None) -> None:
    """Each z_i is consistent with the public commitments, every k guardians reconstruct both joint
    secrets, and a ballot tally decrypts verifiably with the given k-subsets."""
    group, q, p, g = net.group, net.group.q, net.group.p, net.group.g
    t = net.ts[net.honest[0]]
    k_joint, k_hat = t.joint_keys
    keys = {i: net.gs[i].decryption_keys() for i in net.everyone}
    # Every received share is P_j(i) of the sender's polynomial.
    for i in net.everyone:
        for j in net.everyone:
            assert keys[i][0].received[j] % q == evaluate_polynomial(group, net.secret(j).coefficients, i)
            assert keys[i][1].received[j] % q == evaluate_polynomial(group, net.secret(j).data_coefficients, i)
    for which, attr, joint in ((0, "commitments", k_joint), (1, "data_commitments", k_hat)):
        publics = PublicShares(group, {j: getattr(t.keys[j], attr) for j in net.everyone})
        for i in net.everyone:
            z = keys[i][which].share % q
            assert gmpy2.powmod(g, z, p) == publics.public(Part(i, None, mpz(1)), False)   # g^z_i (eq 94)
        for subset in itertools.combinations(net.everyone, net.k):
            s = sum(lagrange_coefficient(group, i, subset) * keys[i][which].share for i in subset) % q
            assert gmpy2.powmod(g, s, p) == joint
    ctx = ElectionContext(t.parameters, k_joint, k_hat)
    publics = PublicShares(group, {j: t.keys[j].commitments for j in net.everyone})
    rng = random.Random(99)
    ballots = [PlaintextBallot("b1", "All", {"Mayor": {"Bob": 1}, "Measure": {"Yes": 1}}),
               PlaintextBallot("b2", "All", {"Mayor": {"Bob": 1}, "Measure": {"No": 1}}),
               PlaintextBallot("b3", "All", {"Mayor": {"Carol": 1}})]
    encrypted = [encrypt_ballot(ctx, b, "device", rng=rng) for b in ballots]
    tally = tally_ballots(ctx, encrypted)
    expected = {(1, 1): 0, (1, 2): 2, (1, 3): 1, (2, 1): 1, (2, 2): 1}
    for subset in tally_subsets or [tuple(net.everyone)[-net.k:]]:
        decrypted = decrypt_tally(ctx, publics, {i: keys[i][0] for i in subset}, tally, rng=rng)
        verify_tally(ctx, encrypted, tally, decrypted)
        assert {key: o.value for key, o in decrypted.options.items()} == expected


# --- malicious behaviours ----------------------------------------------------------------------------

def false_complaint(net: Network, complainer: int, accused: int) -> None:
    """`complainer` complains about a correct share and, as a real complainer would, has not kept it."""
    def rewrite(type_, body):
        if type_ == "share-check":
            del net.gs[complainer].state["received"][str(accused)]
            return [(type_, {"complaints": sorted(set(body["complaints"]) | {accused})})]
        return [(type_, body)]
    net.rewrite[complainer] = rewrite


def wrong_share_rewrite(net: Network, cheater: int, victim: int, then=None):
    """The cheater encrypts P(victim) + 1 to the victim: a valid ciphertext and nonce proof of a wrong value.

    It uses the nonce it keeps in its state, so its (honest) reveal code opens the ciphertext's nonce."""
    group = net.group

    def rewrite(type_, body):
        if type_ == "shares":
            g, t = net.gs[cheater], net.ts[cheater]
            secret, params = g._secret(), t.parameters
            nonce = int(g.state["share_nonces"][str(victim)], 16)
            wrong = (evaluate_polynomial(group, secret.coefficients, victim) + 1) % group.q
            data = evaluate_polynomial(group, secret.data_coefficients, victim)
            enc = encrypt_share(group, params.g_table, params.h_p, cheater, victim,
                                t.keys[victim].communication_key, wrong, data, random.Random(5), nonce)
            body = {"shares": [encode_share(group, enc) if item["to"] == victim else item
                               for item in body["shares"]]}
        if then is not None:
            return then(type_, body)
        return [(type_, body)]
    net.malicious.add(cheater)
    net.rewrite[cheater] = rewrite


def second_keys_body(net: Network, who: int, index: int | None = None, seed: int = 77) -> dict:
    """A freshly generated, validly proven keys body for guardian `index` (default `who`)."""
    params = net.ts[who].parameters
    index = who if index is None else index
    _, public = generate_guardian_key(net.group, params.g_table, params.h_p, index, net.k,
                                      f"Guardian {index}", random.Random(seed))
    return {"public_key": encode_public_key(net.group, public)}


# =====================================================================================================
# Happy paths
# =====================================================================================================

@pytest.mark.parametrize("n,k", [(2, 2), (3, 2), (5, 3), (3, 1)])
def test_happy_path_toy(n, k):
    net = Network(n, k, seed=n * 10 + k)
    net.run()
    result = net.assert_complete()
    assert not net.faults
    # the transcripts are guardian-agnostic: every one holds the same public record
    for i in net.everyone:
        t, t1 = net.ts[i], net.ts[1]
        assert (t.keys, t.shares, t.checks, t.echoes, t.results, t.record_hash) == \
            (t1.keys, t1.shares, t1.checks, t1.echoes, t1.results, t1.record_hash)
        assert t.results[i] == result
    assert all(net.ts[i].phase == "complete" and net.ts[i].waiting_for() == [] for i in net.everyone)
    assert result["joint_key"] == net.p_bytes(net.ts[1].joint_keys[0])
    # each guardian sent exactly one message of each type except reveal
    for i in net.everyone:
        assert [ty for ty, _ in net.sent[i]] == ["keys", "echo", "shares", "share-check", "result"]
    all_subsets = list(itertools.combinations(net.everyone, k))
    check_decryption_keys(net, tally_subsets=all_subsets[:3])


def test_happy_path_standard():
    net = Network(3, 2, group=STANDARD, seed=1)
    net.run()
    result = net.assert_complete()
    t = net.ts[1]
    assert len(result["joint_key"]) == 512 and len(result["h_e"]) == 32
    assert result["h_e"] == ElectionContext(t.parameters, *t.joint_keys).h_e
    check_decryption_keys(net, tally_subsets=[(1, 3)])


def test_false_complaint_standard():
    net = Network(3, 2, group=STANDARD, seed=2)
    false_complaint(net, 1, 3)
    net.run()
    net.assert_complete()
    assert net.ts[2].complaints() == [(3, 1)]
    assert len(net.sent[3][4][1]["share"]) == 32
    check_decryption_keys(net, tally_subsets=[(1, 2)])


def test_wrong_share_standard():
    net = Network(3, 2, group=STANDARD, seed=3)
    wrong_share_rewrite(net, 1, 2)
    net.run()
    net.assert_aborted([1], who=net.everyone, reason="complaint by guardian 2 upheld")


def test_happy_path_n1_k1():
    net = Network(1, 1, seed=3)
    net.run()
    net.assert_complete()
    check_decryption_keys(net)


# =====================================================================================================
# Delivery order, duplicates, own messages
# =====================================================================================================

def test_delivery_order_does_not_matter():
    runs = []
    for seed, order in [(s, "random") for s in range(6)] + [(0, "fifo"), (0, "lifo")]:
        net = Network(4, 3, seed=seed, key_seed=1234, order=order)
        net.run()
        runs.append((net.assert_complete(), {i: net.gs[i].decryption_keys()[0].share for i in net.everyone}))
    assert all(r == runs[0] for r in runs)


def _duplicate_everything(net: Network, copies: int = 3):
    def intercept(sender, recipient, type_, body):
        return [body] * (1 + net.rng.randrange(copies))
    net.intercept = intercept


def test_duplicates_change_nothing():
    plain = Network(3, 2, seed=5)
    plain.run()
    dup = Network(3, 2, seed=5)
    _duplicate_everything(dup)
    dup.run()
    assert dup.assert_complete() == plain.assert_complete()
    assert not dup.faults


def test_duplicates_with_relayed_keys_change_nothing():
    plain = Network(4, 2, seed=8)
    plain.run()
    net = Network(4, 2, seed=8, relay_keys=True)
    _duplicate_everything(net)
    net.run()
    assert net.assert_complete() == plain.assert_complete()


def test_duplicated_reveal_changes_nothing():
    """A complaint answered in public, with every message (the reveal too) delivered several times."""
    for seed in range(4):
        net = Network(3, 2, seed=seed)
        false_complaint(net, 3, 2)
        _duplicate_everything(net)
        net.run()
        assert {i: net.faults.get(i) for i in net.everyone} == {1: None, 2: None, 3: None}, seed
        net.assert_complete()


def test_reveal_redelivered_after_the_complaints_phase():
    """Minimal form: a second copy of a reveal reaches a transcript that already moved to the result phase."""
    net = Network(3, 2, seed=1)
    false_complaint(net, 3, 2)
    net.run()
    net.assert_complete()
    reveal = next(m for m in net.log[1] if m[1] == "reveal")
    t = Transcript(net.config, group=net.group)
    for m in net.log[1]:
        if m[1] != "result":
            t.receive(*m)
    assert t.phase == "result"
    t.receive(*reveal)          # the network delivers the same signed reveal again
    assert t.outcome is None


def test_own_keys_message_is_checked_like_any_other():
    # Only the copy guardian 2 gets of its own keys message is broken: its own transcript must reject it.
    def intercept(sender, recipient, type_, body):
        if sender == recipient == 2 and type_ == "keys":
            body = copy.deepcopy(body)
            proof = body["public_key"]["proof"]
            proof[1] = net.q_bytes((int.from_bytes(proof[1], "big") + 1) % net.group.q)
        return [body]
    net = Network(3, 2, seed=2)
    net.intercept = intercept
    net.run()
    assert net.faults[2].culprits == [2]
    assert "invalid key proof" in net.faults[2].reason
    net.assert_aborted([2], who=net.everyone)


def test_own_message_missing_is_waited_for():
    def intercept(sender, recipient, type_, body):
        return [] if (sender == recipient == 1 and type_ == "echo") else [body]
    net = Network(3, 2, seed=2)
    net.intercept = intercept
    net.run()
    assert net.ts[1].phase == "echo" and net.ts[1].waiting_for() == [1]
    assert all(net.ts[i].phase == "shares" for i in (2, 3))
    named = net.timeout_all()
    assert named[1].culprits == [1]


def test_own_shares_are_checked():
    # Guardian 2 sees a version of its own shares message with a broken nonce proof.
    def intercept(sender, recipient, type_, body):
        if sender == recipient == 2 and type_ == "shares":
            body = copy.deepcopy(body)
            item = body["shares"][0]
            item["v"] = net.q_bytes((int.from_bytes(item["v"], "big") + 1) % net.group.q)
        return [body]
    net = Network(3, 2, seed=4)
    net.intercept = intercept
    net.run()
    assert net.faults[2].culprits == [2] and "nonce proof" in net.faults[2].reason
    net.assert_aborted([2], who=net.everyone)


# =====================================================================================================
# Invalid key proofs
# =====================================================================================================

def _alter_key(what: str, net: Network):
    group = net.group

    def alter(pk):
        q_add = lambda b: net.q_bytes((int.from_bytes(b, "big") + 1) % group.q)  # noqa: E731
        if what == "response":
            pk["proof"][2] = q_add(pk["proof"][2])
        elif what == "last-response":
            pk["proof"][-1] = q_add(pk["proof"][-1])
        elif what == "challenge":
            pk["proof"][0] = q_add(pk["proof"][0])
        elif what == "data-response":
            pk["data_proof"][1] = q_add(pk["data_proof"][1])
        elif what == "commitment":       # another group element: passes membership, fails the proof
            pk["commitments"][1] = net.p_bytes(int.from_bytes(pk["commitments"][1], "big") * group.g % group.p)
        elif what == "data-commitment":
            pk["data_commitments"][0] = net.p_bytes(
                int.from_bytes(pk["data_commitments"][0], "big") * group.g % group.p)
        elif what == "kappa":
            pk["kappa"] = net.p_bytes(int.from_bytes(pk["kappa"], "big") * group.g % group.p)
        elif what == "non-member-commitment":
            pk["commitments"][0] = net.p_bytes(group.p - 1)
        elif what == "response-out-of-range":
            pk["proof"][1] = net.q_bytes(group.q + 1)
        elif what == "swapped-proofs":
            pk["proof"], pk["data_proof"] = pk["data_proof"], pk["proof"]
        else:
            raise AssertionError(what)
    return alter


@pytest.mark.parametrize("what", ["response", "last-response", "challenge", "data-response", "commitment",
                                  "data-commitment", "kappa", "non-member-commitment", "response-out-of-range",
                                  "swapped-proofs"])
def test_invalid_key_proof_names_exactly_the_sender(what):
    net = Network(4, 3, seed=31)
    alter = _alter_key(what, net)

    def rewrite(type_, body):
        if type_ == "keys":
            body = copy.deepcopy(body)
            alter(body["public_key"])
        return [(type_, body)]
    net.rewrite[3] = rewrite
    net.malicious.add(3)
    net.run()
    net.assert_aborted([3], who=net.everyone)
    for i in net.everyone:
        assert net.ts[i].phase == "aborted"
        assert 3 not in net.ts[i].keys
    # every transcript found the fault itself or took it from an abort result naming guardian 3
    assert any("invalid key proof or commitment" in f.reason for f in net.faults.values())


# =====================================================================================================
# Equivocation on the keys message
# =====================================================================================================

def _equivocate_keys(net: Network, cheater: int, fooled: set[int]):
    other = None

    def intercept(sender, recipient, type_, body):
        nonlocal other
        if sender == cheater and type_ == "keys" and recipient in fooled:
            if other is None:
                other = second_keys_body(net, cheater)
            return [other]
        return [body]
    net.malicious.add(cheater)
    net.intercept = intercept


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cheater,fooled", [(4, {2, 3}), (1, {2}), (3, {1, 3})])
def test_equivocation_with_relaying_names_the_equivocator(seed, cheater, fooled):
    net = Network(4, 2, seed=seed, relay_keys=True)
    _equivocate_keys(net, cheater, fooled)
    net.run()
    net.assert_aborted([cheater])
    assert any("equivocation" in net.faults[i].reason for i in net.honest if i in net.faults)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cheater,fooled", [(4, {2, 3}), (1, {2}), (3, {1, 3})])
def test_equivocation_without_relaying_is_caught_by_the_echo(seed, cheater, fooled):
    net = Network(4, 2, seed=seed)
    _equivocate_keys(net, cheater, fooled)
    net.run()
    for i in net.honest:
        outcome = net.ts[i].outcome
        assert outcome is not None and outcome.status == "aborted", (i, net.ts[i].phase)
        assert cheater in outcome.culprits, (i, outcome)
        assert not net.ts[i].shares           # nobody got as far as sending shares to a doubtful key
    assert any("H_G echo mismatch" in f.reason for f in net.faults.values())


@pytest.mark.parametrize("seed", range(4))
def test_equivocation_with_relays_through_the_network(seed):
    # Relayed copies take their chance in the queue like any message: the equivocation or the echo
    # mismatch catches it, whichever comes first, and the equivocator is always named.
    net = Network(4, 2, seed=seed, relay_keys="async")
    _equivocate_keys(net, 2, {3, 4})
    net.run()
    for i in net.honest:
        outcome = net.ts[i].outcome
        assert outcome is not None and outcome.status == "aborted" and 2 in outcome.culprits, (i, outcome)


def test_a_lying_echo_names_the_liar():
    net = Network(3, 2, seed=6)

    def rewrite(type_, body):
        if type_ == "echo":
            body = {"h_g": body["h_g"], "digests": [body["digests"][0], b"\x55" * 32, body["digests"][2]]}
        return [(type_, body)]
    net.rewrite[3] = rewrite
    net.malicious.add(3)
    net.run()
    for i in net.everyone:
        assert net.ts[i].outcome.status == "aborted" and 3 in net.ts[i].outcome.culprits


def test_two_different_echoes_are_equivocation():
    net = Network(3, 2, seed=6)

    def intercept(sender, recipient, type_, body):
        if sender == 2 and type_ == "echo":
            return [body, {"h_g": b"\x01" * 32, "digests": body["digests"]}]
        return [body]
    net.intercept = intercept
    net.malicious.add(2)
    net.run()
    net.assert_aborted([2], who=net.everyone)


# =====================================================================================================
# Bad shares and complaints
# =====================================================================================================

def test_false_complaint_is_resolved_and_the_complainer_adopts_the_revealed_share():
    net = Network(3, 2, seed=12)
    false_complaint(net, 3, 2)
    net.run()
    net.assert_complete()
    for i in net.everyone:
        assert net.ts[i].complaints() == [(2, 3)]
        assert (2, 3) in net.ts[i].reveals
    assert [ty for ty, _ in net.sent[2]] == ["keys", "echo", "shares", "share-check", "reveal", "result"]
    share, data_share = net.ts[1].revealed_share(2, 3)
    assert share == evaluate_polynomial(net.group, net.secret(2).coefficients, 3)
    assert data_share == evaluate_polynomial(net.group, net.secret(2).data_coefficients, 3)
    assert net.gs[3].state["received"]["2"] == [format(int(share), "x"), format(int(data_share), "x")]
    check_decryption_keys(net, tally_subsets=[(1, 3), (2, 3)])


def test_several_false_complaints_are_resolved():
    net = Network(5, 3, seed=13)
    net.rewrite[5] = _compose_complaints(net, 5, [1, 2])
    net.rewrite[4] = _compose_complaints(net, 4, [1])
    net.run()
    net.assert_complete()
    assert net.ts[1].complaints() == [(1, 4), (1, 5), (2, 5)]
    check_decryption_keys(net, tally_subsets=[(3, 4, 5)])


def _compose_complaints(net: Network, complainer: int, accused: list[int]):
    def rewrite(type_, body):
        if type_ == "share-check":
            for a in accused:
                del net.gs[complainer].state["received"][str(a)]
            return [(type_, {"complaints": sorted(accused)})]
        return [(type_, body)]
    return rewrite


def test_wrong_share_is_complained_about():
    net = Network(3, 2, seed=14)
    wrong_share_rewrite(net, 2, 3)
    net.run()
    # the honest recipient's own check found the bad share
    assert net.ts[1].checks[3] == (2,)
    assert net.ts[1].checks[1] == () and net.ts[1].checks[2] == ()


def test_wrong_share_then_reveal_of_the_true_share_is_upheld():
    # The cheater's honest reveal code opens the nonce with the TRUE share: it does not match the ciphertext.
    net = Network(3, 2, seed=14)
    wrong_share_rewrite(net, 2, 3)
    net.run()
    net.assert_aborted([2], who=net.everyone, reason="complaint by guardian 3 upheld")
    assert any("does not match the published ciphertext" in f.reason for f in net.faults.values())


def test_wrong_share_then_reveal_of_the_wrong_share_is_upheld():
    net = Network(4, 2, seed=15)

    def then(type_, body):
        if type_ == "reveal":
            body = dict(body)
            body["share"] = net.q_bytes((int.from_bytes(body["share"], "big") + 1) % net.group.q)
        return [(type_, body)]
    wrong_share_rewrite(net, 2, 4, then)
    net.run()
    net.assert_aborted([2], who=net.everyone, reason="complaint by guardian 4 upheld")
    assert any("does not match the commitments" in f.reason for f in net.faults.values())


def test_wrong_share_and_no_reveal_times_out_naming_the_accused():
    net = Network(4, 2, seed=16)
    wrong_share_rewrite(net, 2, 4)
    net.muted.add((2, "reveal"))
    net.run()
    for i in net.everyone:
        assert net.ts[i].phase == "complaints" and net.ts[i].waiting_for() == [2]
    named = net.timeout_all()
    for i in net.everyone:
        assert named[i].culprits == [2] and "complaints phase" in named[i].reason
    # the aborts the guardians now send agree
    for i in net.everyone:
        net.act(i)
    net.run()
    net.assert_aborted([2], who=net.everyone)


def test_reveal_with_a_wrong_nonce_is_upheld():
    net = Network(3, 2, seed=17)
    false_complaint(net, 3, 2)
    honest_rewrite = net.rewrite.get(2)
    assert honest_rewrite is None

    def rewrite(type_, body):
        if type_ == "reveal":
            body = dict(body, nonce=net.q_bytes((int.from_bytes(body["nonce"], "big") + 1) % net.group.q))
        return [(type_, body)]
    net.rewrite[2] = rewrite
    net.malicious.add(2)
    net.run()
    net.assert_aborted([2], reason="complaint by guardian 3 upheld")


@pytest.mark.parametrize("seed", [0, 4])    # 0: guardian 4 aborts alone, silently; 4: it aborts everyone
def test_share_check_equivocation_does_not_blame_the_honest_accused(seed):
    """Guardian 3 complains about guardian 2 to guardians 1, 2, 3 and shows guardian 4 an empty check.

    Guardian 2 answers the complaint it saw, as it must. Guardian 4 must not then name guardian 2 (alone)
    for a reveal it did not expect, and the honest guardians must end the ceremony the same way."""
    net = Network(4, 2, seed=seed)
    net.rewrite[3] = lambda ty, body: [(ty, {"complaints": [2]} if ty == "share-check" else body)]
    net.intercept = lambda sender, recipient, ty, body: \
        [{"complaints": []}] if (sender, recipient, ty) == (3, 4, "share-check") else [body]
    net.malicious.add(3)
    net.run()
    outcomes = {i: net.ts[i].outcome for i in net.honest}
    assert all(o is not None for o in outcomes.values()), outcomes
    for i, o in outcomes.items():
        assert o.status == "complete" or 3 in o.culprits, (i, o)
    assert len({o.status for o in outcomes.values()}) == 1, outcomes


def test_unsolicited_reveal_is_ignored():
    # Revealing one's own share when nobody complained harms only the revealer: no fault, no effect.
    net = Network(3, 2, seed=18)

    def rewrite(type_, body):
        out = [(type_, body)]
        if type_ == "share-check":
            g = net.gs[1]
            out.append(("reveal", g._reveal(2)))
        return out
    net.rewrite[1] = rewrite
    net.malicious.add(1)
    net.run()
    net.assert_complete()


@pytest.mark.parametrize("to", ["nobody who complained", "itself"])
def test_a_reveal_to_the_wrong_guardian_leaves_the_complaint_open(to):
    net = Network(3, 2, seed=61)
    false_complaint(net, 3, 2)
    wrong = 1 if to == "nobody who complained" else 2
    net.rewrite[2] = lambda ty, body: [(ty, {**body, "to": wrong} if ty == "reveal" else body)]
    net.malicious.add(2)
    net.run()
    assert all(net.ts[i].phase == "complaints" for i in net.everyone)
    for i in (1, 3):   # the deadline names the accused who never answered the real complaint
        with pytest.raises(CeremonyFault) as e:
            net.ts[i].timeout()
        assert e.value.culprits == [2]


# =====================================================================================================
# Invalid shares messages
# =====================================================================================================

def _shares_mutation(what: str, net: Network, sender: int):
    group = net.group

    def mutate(body):
        items = copy.deepcopy(body["shares"])
        if what == "nonce-proof-response":
            items[0]["v"] = net.q_bytes((int.from_bytes(items[0]["v"], "big") + 1) % group.q)
        elif what == "nonce-proof-challenge":
            items[-1]["c"] = net.q_bytes((int.from_bytes(items[-1]["c"], "big") + 1) % group.q)
        elif what == "c1-bit-flip":
            items[0]["c1"] = bytes([items[0]["c1"][0] ^ 1]) + items[0]["c1"][1:]
        elif what == "c0-other-element":
            items[0]["c0"] = net.p_bytes(int.from_bytes(items[0]["c0"], "big") * group.g % group.p)
        elif what == "c0-not-in-group":
            items[0]["c0"] = net.p_bytes(group.p - 1)
        elif what == "v-out-of-range":
            items[0]["v"] = net.q_bytes(group.q)
        elif what == "missing-recipient":
            items = items[1:]
        elif what == "share-to-itself":
            items.append(dict(items[0], to=sender))
        elif what == "repeated-recipient":
            items.append(items[0])
        elif what == "unknown-recipient":
            items.append(dict(items[0], to=net.n + 1))
        elif what == "share-swapped-recipients":
            items[0]["to"], items[1]["to"] = items[1]["to"], items[0]["to"]
        else:
            raise AssertionError(what)
        return {"shares": items}
    return mutate


@pytest.mark.parametrize("what", ["nonce-proof-response", "nonce-proof-challenge", "c1-bit-flip", "c0-other-element",
                                  "c0-not-in-group", "v-out-of-range", "missing-recipient", "share-to-itself",
                                  "repeated-recipient", "unknown-recipient", "share-swapped-recipients"])
def test_invalid_shares_message_names_the_sender(what):
    net = Network(4, 2, seed=21)
    mutate = _shares_mutation(what, net, 3)
    net.rewrite[3] = lambda ty, body: [(ty, mutate(body) if ty == "shares" else body)]
    net.malicious.add(3)
    net.run()
    net.assert_aborted([3], who=net.everyone)
    if what.startswith("nonce-proof") or what in ("c1-bit-flip", "c0-other-element", "share-swapped-recipients"):
        assert any("invalid nonce proof (eq 22)" in f.reason for f in net.faults.values())
    # nobody complained: the fault was found in public before any share was decrypted
    assert all(not net.ts[i].checks for i in net.everyone)


def test_two_different_valid_shares_messages_are_equivocation():
    net = Network(3, 2, seed=22)

    def intercept(sender, recipient, type_, body):
        if sender == 1 and type_ == "shares":
            g, t = net.gs[1], net.ts[1]
            secret = g._secret()
            items = []
            for l in (2, 3):
                enc = encrypt_share(net.group, t.parameters.g_table, t.parameters.h_p, 1, l,
                                    t.keys[l].communication_key,
                                    evaluate_polynomial(net.group, secret.coefficients, l),
                                    evaluate_polynomial(net.group, secret.data_coefficients, l), random.Random(l))
                items.append(encode_share(net.group, enc))
            return [body, {"shares": items}]
        return [body]
    net.intercept = intercept
    net.malicious.add(1)
    net.run()
    net.assert_aborted([1], who=net.everyone, reason="equivocation")


# =====================================================================================================
# Timeouts and aborts
# =====================================================================================================

@pytest.mark.parametrize("silent", [(2,), (1, 4), (1, 2, 3, 4)])
@pytest.mark.parametrize("type_", ["keys", "echo", "shares", "share-check", "result"])
def test_timeout_names_exactly_the_silent_guardians(type_, silent):
    net = Network(4, 2, seed=41)
    for i in silent:
        net.muted.add((i, type_))
    net.run()
    phase = PHASE_OF_TYPE[type_]
    for i in net.everyone:
        assert net.ts[i].phase == phase and net.ts[i].outcome is None, (i, net.ts[i].phase)
        assert net.ts[i].waiting_for() == list(silent)
    assert not net.faults
    named = net.timeout_all()
    for i in net.everyone:
        assert named[i] is not None and named[i].culprits == list(silent), (i, named[i])
        assert f"in the {phase} phase" in named[i].reason
        assert net.ts[i].outcome.status == "aborted" and net.ts[i].outcome.culprits == list(silent)


def test_timeout_before_anything_names_everyone_not_heard_from():
    net = Network(3, 2, seed=42)
    net.muted.update({(1, None), (3, None)})
    net.run()
    named = net.timeout_all()
    assert all(named[i].culprits == [1, 3] for i in net.everyone)


def test_timeout_with_nothing_missing_does_nothing():
    net = Network(3, 2, seed=43)
    net.run()
    net.assert_complete()
    named = net.timeout_all()
    assert named == {1: None, 2: None, 3: None}
    net.assert_complete()


@pytest.mark.parametrize("instead_of", ["keys", "echo", "shares", "share-check", "result"])
def test_an_abort_result_from_a_peer_aborts_every_transcript(instead_of):
    net = Network(4, 2, seed=44)
    abort = {"status": "abort", "culprits": [2], "reason": "the operator pressed stop"}
    net.rewrite[2] = lambda ty, body: [("result", abort)] if ty == instead_of else [(ty, body)]
    net.run()
    net.assert_aborted([2], who=net.everyone)
    for i in net.everyone:
        assert "guardian 2 aborted the ceremony" in net.ts[i].outcome.reason
        assert net.ts[i].phase == "aborted"
    # every honest guardian sends one result only: its own abort, unless it had already signed success
    for i in (1, 3, 4):
        assert [ty for ty, body in net.sent[i]].count("result") == 1
        assert net.sent[i][-1][1]["status"] == ("success" if instead_of == "result" else "abort")


def test_abort_culprits_are_guardian_indices():
    """An abort naming non-guardians (0, 99), a bool or a str is malformed: it must not put them in the outcome."""
    t = Transcript(make_config(3, 2), group=TOY_64)
    body = {"status": "abort", "culprits": [0, 99, True, "x"], "reason": "x"}
    with pytest.raises(CeremonyFault):
        t.receive(2, "result", body, message_digest(2, "result", body))
    assert all(type(c) is int and 1 <= c <= 3 for c in t.outcome.culprits), t.outcome


def test_an_abort_arriving_after_completion_changes_nothing():
    net = Network(3, 2, seed=45)
    net.run()
    result = net.assert_complete()
    abort = {"status": "abort", "culprits": [1], "reason": "late"}
    for i in net.everyone:
        net.ts[i].receive(2, "result", abort, message_digest(2, "result", abort))
    assert net.assert_complete() == result


# =====================================================================================================
# Restart from persisted state
# =====================================================================================================

@functools.lru_cache(maxsize=None)
def _restart_reference(seed: int):
    net = Network(3, 2, seed=seed)
    false_complaint(net, 3, 2)
    net.run()
    return net.assert_complete()


@pytest.mark.parametrize("after_sends", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("who", [1, 2, 3])
def test_restart_mid_ceremony_computes_nothing_twice(who, after_sends):
    seed = 51
    reference = _restart_reference(seed)
    net = Network(3, 2, seed=seed)
    false_complaint(net, 3, 2)
    net.run(until=lambda net: len(net.sent[who]) >= after_sends)
    sent_before = list(net.sent[who])
    state_before = json.loads(json.dumps(net.gs[who].state))
    phase_before = net.ts[who].phase
    net.restart(who)
    assert net.ts[who].phase == phase_before
    net.act(who)
    assert net.sent[who] == sent_before, "the restarted guardian sent something again"
    assert net.gs[who].state["secret"] == state_before["secret"]
    if "share_nonces" in state_before:
        assert net.gs[who].state["share_nonces"] == state_before["share_nonces"]
    net.run()
    assert net.assert_complete() == reference
    types = [ty for ty, _ in net.sent[who]]
    assert len(types) == len(set(types)), types
    for i in net.everyone:
        assert len(net.ts[i].key_digests[who]) == 1
    check_decryption_keys(net, tally_subsets=[tuple(sorted({who, 3 if who != 3 else 1}))])


def test_restart_of_every_guardian_at_once():
    seed = 52
    reference = Network(4, 3, seed=seed)
    reference.run()
    expected = reference.assert_complete()
    net = Network(4, 3, seed=seed)
    net.run(until=lambda net: net.ts[1].phase == "check")
    for i in net.everyone:
        net.restart(i)
    for i in net.everyone:
        net.act(i)
    net.run()
    assert net.assert_complete() == expected
    check_decryption_keys(net)


def test_restart_before_anything_was_sent_starts_afresh():
    net = Network(3, 2, seed=53)
    net.muted.add((1, None))          # guardian 1 crashes before its first message leaves
    net.begin()
    net.sent[1].clear()               # nothing of it was committed
    del net.persisted[1]
    net.muted.clear()
    net.restart(1)
    net.act(1)
    net.run()
    net.assert_complete()
    check_decryption_keys(net)


# =====================================================================================================
# Malformed bodies
# =====================================================================================================

def _set(path, value):
    def f(body, net):
        body = copy.deepcopy(body)
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(net, target[path[-1]]) if callable(value) else value
        return body
    return f


def _delete(path):
    def f(body, net):
        body = copy.deepcopy(body)
        target = body
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
        return body
    return f


_PK = ("public_key",)
MALFORMED = {
    "keys": {
        "not a dict": lambda body, net: [body],
        "empty": lambda body, net: {},
        "public_key not a dict": _set(_PK, b"\x00" * 8),
        "missing index": _delete(_PK + ("index",)),
        "index is a bool": _set(_PK + ("index",), True),
        "index is a str": _set(_PK + ("index",), "2"),
        "index of another guardian": _set(_PK + ("index",), 3),
        "index negative": _set(_PK + ("index",), -2),
        "index huge": _set(_PK + ("index",), 2**64 - 1),
        "another guardian's valid key": lambda body, net: second_keys_body(net, 2, index=3),
        "name not a str": _set(_PK + ("name",), 7),
        "missing name": _delete(_PK + ("name",)),
        "commitments short": _set(_PK + ("commitments",), lambda net, v: v[:-1]),
        "commitments long": _set(_PK + ("commitments",), lambda net, v: v + v[:1]),
        "commitments not a list": _set(_PK + ("commitments",), lambda net, v: b"".join(v)),
        "commitment truncated": _set(_PK + ("commitments", 0), lambda net, v: v[1:]),
        "commitment as int": _set(_PK + ("commitments", 0), lambda net, v: int.from_bytes(v, "big")),
        "commitment zero": _set(_PK + ("commitments", 0), lambda net, v: bytes(len(v))),
        "data_commitments missing": _delete(_PK + ("data_commitments",)),
        "kappa missing": _delete(_PK + ("kappa",)),
        "kappa long": _set(_PK + ("kappa",), lambda net, v: v + b"\x00"),
        "kappa is one": _set(_PK + ("kappa",), lambda net, v: net.p_bytes(1)),
        "proof short": _set(_PK + ("proof",), lambda net, v: v[:-1]),
        "proof long": _set(_PK + ("proof",), lambda net, v: v + v[:1]),
        "proof entry str": _set(_PK + ("proof", 1), "abc"),
        "data_proof not a list": _set(_PK + ("data_proof",), None),
        "data_proof entry long": _set(_PK + ("data_proof", 0), lambda net, v: v + b"\x01"),
    },
    "echo": {
        "not a dict": lambda body, net: None,
        "missing h_g": _delete(("h_g",)),
        "h_g short": _set(("h_g",), lambda net, v: v[:31]),
        "h_g str": _set(("h_g",), "00" * 32),
        "missing digests": _delete(("digests",)),
        "digests short": _set(("digests",), lambda net, v: v[:-1]),
        "digests long": _set(("digests",), lambda net, v: v + v[:1]),
        "digest not bytes": _set(("digests", 0), 5),
        "digest short": _set(("digests", 1), lambda net, v: v[:16]),
        "digests a dict": _set(("digests",), lambda net, v: dict(enumerate(v))),
    },
    "shares": {
        "not a dict": lambda body, net: "shares",
        "missing shares": _delete(("shares",)),
        "shares not a list": _set(("shares",), lambda net, v: {str(i): x for i, x in enumerate(v)}),
        "empty list": _set(("shares",), []),
        "item not a dict": _set(("shares", 0), b"\x00"),
        "to missing": _delete(("shares", 0, "to")),
        "to a bool": _set(("shares", 0, "to"), True),
        "to a str": _set(("shares", 0, "to"), "1"),
        "to zero": _set(("shares", 0, "to"), 0),
        "c1 short": _set(("shares", 0, "c1"), lambda net, v: v[:-1]),
        "c1 long": _set(("shares", 0, "c1"), lambda net, v: v + b"\x00"),
        "c1 int": _set(("shares", 0, "c1"), 5),
        "c0 short": _set(("shares", 1, "c0"), lambda net, v: v[:-1]),
        "c missing": _delete(("shares", 0, "c")),
        "v a list": _set(("shares", 0, "v"), lambda net, v: [v]),
    },
    "share-check": {
        "not a dict": lambda body, net: [],
        "missing complaints": _delete(("complaints",)),
        "complaints not a list": _set(("complaints",), 1),
        "complaint about itself": _set(("complaints",), [2]),
        "complaint about nobody": _set(("complaints",), [0]),
        "complaint about guardian n+1": _set(("complaints",), [4]),
        "complaint repeated": _set(("complaints",), [1, 1]),
        "complaint a bool": _set(("complaints",), [True]),
        "complaint a str": _set(("complaints",), ["1"]),
        "complaint a list": _set(("complaints",), [[1]]),
    },
    "reveal": {
        "not a dict": lambda body, net: 3,
        "to missing": _delete(("to",)),
        "to a bool": _set(("to",), True),
        "share short": _set(("share",), lambda net, v: v[1:]),
        "share missing": _delete(("share",)),
        "data_share str": _set(("data_share",), "0"),
        "nonce missing": _delete(("nonce",)),
        "nonce out of range": _set(("nonce",), lambda net, v: net.q_bytes(net.group.q)),
        "share out of range": _set(("share",), lambda net, v: net.q_bytes(net.group.q + 2)),
    },
    "result": {
        "not a dict": lambda body, net: ["success"],
        "status missing": _delete(("status",)),
        "status an int": _set(("status",), 1),
        "status unknown": _set(("status",), "maybe"),
        "status empty": _set(("status",), ""),
        "h_g differs": _set(("h_g",), b"\x00" * 32),
        "h_e missing": _delete(("h_e",)),
        "h_e str": _set(("h_e",), lambda net, v: v.hex()),
        "joint_key differs": _set(("joint_key",), lambda net, v: net.p_bytes(int.from_bytes(v, "big") * 2)),
        "joint_data_key missing": _delete(("joint_data_key",)),
        "abort without culprits": lambda body, net: {"status": "abort", "reason": "x"},
        "abort without reason": lambda body, net: {"status": "abort", "culprits": [1]},
        "abort culprits not a list": lambda body, net: {"status": "abort", "culprits": 1, "reason": "x"},
        "abort reason not a str": lambda body, net: {"status": "abort", "culprits": [1], "reason": b"x"},
    },
}


@pytest.mark.parametrize("type_,case", [(t, c) for t, cases in MALFORMED.items() for c in cases])
def test_malformed_body_aborts_naming_the_sender(type_, case):
    net = Network(3, 2, seed=61)
    if type_ == "reveal":
        false_complaint(net, 3, 2)
    mutate = MALFORMED[type_][case]
    net.rewrite[2] = lambda ty, body: [(ty, mutate(body, net) if ty == type_ else body)]
    net.malicious.add(2)
    net.run()
    net.assert_aborted([2], who=net.everyone)
    assert all(net.ts[i].phase == "aborted" for i in net.everyone)


def test_message_of_unknown_type_is_a_fault():
    t = Transcript(make_config(3, 2), group=TOY_64)
    with pytest.raises(CeremonyFault) as e:
        t.receive(2, "gossip", {}, b"\x00" * 32)
    assert e.value.culprits == [2]


# --- hypothesis: random bodies only ever raise CeremonyFault ------------------------------------------

@functools.lru_cache(maxsize=None)
def _reference_messages():
    """One complete n=3 ceremony with a (false) complaint by 3 about 2: one message per (sender, type)."""
    net = Network(3, 2, seed=71)
    false_complaint(net, 3, 2)
    net.run()
    net.assert_complete()
    messages = {}
    for sender, type_, body, d in net.log[1]:
        messages.setdefault((sender, type_), (body, d))
    return net.config, messages


def _prefix_for(target_type: str, target_sender: int):
    """The messages an observer gets before the target one: all earlier phases, then the others' of this type."""
    config, messages = _reference_messages()
    order = sorted(messages, key=lambda m: (TYPES.index(m[1]), m[0]))
    prefix = [m for m in order if TYPES.index(m[1]) < TYPES.index(target_type)]
    prefix += [m for m in order if m[1] == target_type and m[0] != target_sender]
    return config, [(s, ty, *messages[(s, ty)]) for s, ty in prefix], messages[(target_sender, target_type)][0]


FIELD_NAMES = ["public_key", "index", "name", "commitments", "data_commitments", "kappa", "proof", "data_proof",
               "h_g", "digests", "shares", "to", "c0", "c1", "c", "v", "complaints", "share", "data_share",
               "nonce", "status", "h_e", "joint_key", "joint_data_key", "culprits", "reason"]
LEAVES = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.sampled_from([0, 1, 2, 3, 4, -1])
          | st.floats(allow_nan=True) | st.text(max_size=6) | st.binary(max_size=40)
          | st.sampled_from(["success", "abort"]))
VALUES = st.recursive(LEAVES, lambda children: st.lists(children, max_size=5)
                      | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), children, max_size=6),
                      max_leaves=25)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, v in value.items():
            yield from _paths(v, prefix + (key,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


def _mutate(data, body):
    """Apply one random structural or value change to a copy of a valid body."""
    body = copy.deepcopy(body)
    path = data.draw(st.sampled_from(list(_paths(body))))
    if not path:
        return data.draw(VALUES)
    parent = body
    for key in path[:-1]:
        parent = parent[key]
    key, old = path[-1], parent[path[-1]]
    ops = ["replace", "delete"]
    if isinstance(old, bytes):
        ops += ["same-length", "same-length", "resize"]
    if isinstance(old, int) and not isinstance(old, bool):
        ops += ["small-int", "small-int"]
    if isinstance(old, list):
        ops += ["append", "truncate"]
    op = data.draw(st.sampled_from(ops))
    if op == "replace":
        parent[key] = data.draw(VALUES)
    elif op == "delete":
        del parent[key]
    elif op == "same-length":
        parent[key] = data.draw(st.binary(min_size=len(old), max_size=len(old)))
    elif op == "resize":
        parent[key] = data.draw(st.binary(max_size=len(old) + 2).filter(lambda b: len(b) != len(old)))
    elif op == "small-int":
        parent[key] = data.draw(st.integers(-2, 6))
    elif op == "append":
        parent[key] = old + [data.draw(st.sampled_from(old) if old else VALUES)]
    elif op == "truncate":
        parent[key] = old[:data.draw(st.integers(0, max(0, len(old) - 1)))]
    return body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("type_", TYPES)
def test_random_bodies_only_raise_ceremony_fault(type_, data):
    sender = 2
    config, prefix, valid = _prefix_for(type_, sender)
    t = Transcript(config, group=TOY_64)
    for m in prefix:
        t.receive(*m)
    how = data.draw(st.sampled_from(["mutate", "mutate", "mutate twice", "random"]))
    if how == "random":
        body = data.draw(VALUES | st.fixed_dictionaries({name: VALUES for name in valid} if isinstance(valid, dict)
                                                        else {}))
    else:
        body = _mutate(data, valid)
        if how == "mutate twice":
            body = _mutate(data, body)
    try:
        t.receive(sender, type_, body, message_digest(sender, type_, body))
    except CeremonyFault as e:
        assert t.outcome is not None and t.outcome.status == "aborted" and t.phase == "aborted"
        if type_ == "result" and isinstance(body, dict) and body.get("status") == "abort":
            assert f"guardian {sender} aborted" in e.reason or e.culprits == [sender]
        elif "H_G echo mismatch" in e.reason or "share checks than we received" in e.reason:
            assert sender in e.culprits      # who lied cannot be told apart: both sides are named
        else:
            assert e.culprits == [sender], e
    else:
        assert t.outcome is None or t.outcome.status == "complete"
        if t.outcome is not None:                 # accepted as a result: it must have been a valid one
            assert body.get("status") == "success", body


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_messages_in_random_phases_only_raise_ceremony_fault(data):
    """Any (sender, type, body) arriving at any point of a ceremony is taken, held or faulted: never a crash."""
    config, messages = _reference_messages()
    order = sorted(messages, key=lambda m: (TYPES.index(m[1]), m[0]))
    cut = data.draw(st.integers(0, len(order)))
    t = Transcript(config, group=TOY_64)
    for s, ty in order[:cut]:
        t.receive(s, ty, *messages[(s, ty)])
    for _ in range(data.draw(st.integers(1, 3))):
        sender = data.draw(st.integers(1, 3))
        type_ = data.draw(st.sampled_from(TYPES))
        base = messages.get((sender, type_), messages[(2, type_)])[0]
        body = _mutate(data, base) if data.draw(st.booleans()) else data.draw(VALUES)
        try:
            t.receive(sender, type_, body, message_digest(sender, type_, body))
        except CeremonyFault:
            assert t.outcome.status == "aborted"
            break
    # whatever happened, the rest of the honest log never raises anything but CeremonyFault
    for s, ty in order[cut:]:
        try:
            t.receive(s, ty, *messages[(s, ty)])
        except CeremonyFault:
            break
