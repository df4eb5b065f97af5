"""Ballot encryption, Verifications 5-8, chaining, and range proofs (spec 3.3, 3.4).

Most tests run on the toy group with the small manifest; a few encrypt and
verify real ballots under the STANDARD parameters. Hash values the code
computes are also recomputed here from the spec's equations with hmac and
plain pow, so that a mistake shared by encryptor and verifier shows up.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import replace
from types import SimpleNamespace

import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import expected_values, random_ballot
from node.crypto.ballot import (
    NO_CHAINING,
    SIMPLE_CHAINING,
    BallotChain,
    EncryptedBallot,
    PlaintextBallot,
    ballot_values,
    confirmation_code,
    device_hash,
    encrypt_ballot,
    identifier_hash,
    unchained_field,
    verify_ballot,
    verify_chain,
)
from node.crypto.challenged import decrypt_challenged_ballot
from node.crypto.elgamal import Ciphertext, aggregate, encrypt, power_of_key_from_nonce
from node.crypto.errors import BallotError, GroupMembershipError, InputError, ProofError
from node.crypto.params import TOY_64
from node.crypto.range_proof import RangeProof, contest_prefix, prove_range, selection_prefix, verify_range

REFUSALS = (ProofError, BallotError, GroupMembershipError)


# --- independent spec arithmetic -----------------------------------------------------------------

def _h(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _hq(group, key: bytes, data: bytes) -> int:
    return int.from_bytes(_h(key, data), "big") % int(group.q)


def _bp(group, x) -> bytes:
    return int(x).to_bytes(group.p_bytes, "big")


def _b4(i: int) -> bytes:
    return i.to_bytes(4, "big")


def _spec_range_ok(group, K, h_i, prefix, ct, proof) -> bool:
    """Verification 6 / 7 computed straight from (6.1)-(6.3) with pow()."""
    p, q, g = int(group.p), int(group.q), int(group.g)
    data = prefix + _bp(group, ct.alpha) + _bp(group, ct.beta)
    for j, (c, v) in enumerate(zip(proof.challenges, proof.responses)):
        c, v = int(c), int(v)
        a = pow(g, v, p) * pow(int(ct.alpha), c, p) % p
        b = pow(int(K), (v - j * c) % q, p) * pow(int(ct.beta), c, p) % p
        data += _bp(group, a) + _bp(group, b)
    return _hq(group, h_i, data) == sum(int(c) for c in proof.challenges) % q


# --- helpers ----------------------------------------------------------------------------------------

def keys_of(ceremony, members, kind="data"):
    return {i: getattr(ceremony.guardian_keys[i], kind) for i in members}


def decrypted_values(ceremony, ballot, members, compensated=False) -> dict:
    ctx = ceremony.context
    dec = decrypt_challenged_ballot(ctx, ceremony.data_publics(), keys_of(ceremony, members), ballot,
                                    compensated=compensated)
    return {(ci, s.option_index): s.value for ci, sels in dec.contests.items() for s in sels}


def with_contest(ballot: EncryptedBallot, ci: int, **changes) -> EncryptedBallot:
    contests = tuple(replace(c, **changes) if c.contest_index == ci else c for c in ballot.contests)
    return replace(ballot, contests=contests)


def with_selection(ballot: EncryptedBallot, ci: int, oi: int, **changes) -> EncryptedBallot:
    contest = ballot.contest(ci)
    sels = tuple(replace(s, **changes) if s.option_index == oi else s for s in contest.selections)
    return with_contest(ballot, ci, selections=sels)


def selection(ballot, ci, oi):
    return next(s for s in ballot.contest(ci).selections if s.option_index == oi)


def bump(x, q):
    return mpz((int(x) + 1) % int(q))


def flip_first_byte(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# --- STANDARD parameters ------------------------------------------------------------------------

def test_standard_ballots_verify(standard_election, standard_ballots, demo_manifest):
    ctx = standard_election.context
    for ballot in standard_ballots[:3]:
        verify_ballot(ctx, ballot)
        assert [c.contest_index for c in ballot.contests] == list(range(1, 9))
        assert sum(len(c.selections) for c in ballot.contests) == 68
        assert ballot.chaining_field == unchained_field(ctx.h_e, "device-std")


def test_standard_ballot_decrypts_to_its_choices(standard_election, standard_ballots, standard_plaintexts,
                                                 demo_manifest):
    # std-1 has an undervoted contest, an omitted one and School Board with two selections.
    got = decrypted_values(standard_election, standard_ballots[0], (1, 2, 4))
    want = expected_values(demo_manifest, standard_plaintexts[0])
    assert got == want
    assert want[(6, 1)] == want[(6, 8)] == 1 and sum(v for (c, _), v in want.items() if c == 6) == 2
    assert all(v == 0 for (c, _), v in want.items() if c == 8)


def test_standard_tampered_ballots_refused(standard_election, standard_ballots):
    ctx, ballot = standard_election.context, standard_ballots[0]
    p = ctx.group.p
    s = selection(ballot, 5, 4)
    bad = with_selection(ballot, 5, 4, ciphertext=Ciphertext(p - 1, s.ciphertext.beta))
    with pytest.raises(GroupMembershipError) as info:
        verify_ballot(ctx, bad)
    assert "'std-1'" in str(info.value) and "contest 5 option 4" in str(info.value)
    bad = with_contest(ballot, 6, contest_hash=flip_first_byte(ballot.contest(6).contest_hash))
    with pytest.raises(BallotError) as info:
        verify_ballot(ctx, bad)
    assert "'std-1'" in str(info.value) and "contest 6" in str(info.value)


# --- toy group: encryption round trips -----------------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_toy_ballots_verify_and_decrypt(toy_election, small_manifest, seed):
    rng = random.Random(seed)
    ctx = toy_election.context
    plain = random_ballot(small_manifest, rng, f"toy-{seed}")
    ballot = encrypt_ballot(ctx, plain, "device-toy", rng=rng)
    verify_ballot(ctx, ballot)
    members = sorted(rng.sample(range(1, 6), rng.randint(3, 5)))
    assert decrypted_values(toy_election, ballot, members, compensated=rng.random() < 0.5) == \
        expected_values(small_manifest, plain)


def test_every_value_of_a_range_two_option(toy_election, small_manifest):
    ctx = toy_election.context
    cases = [{"Dave": 2}, {"Dave": 1, "Carol": 1}, {"Carol": 1, "Erin": 1}, {"Dave": 0}, {}]
    for i, council in enumerate(cases):
        plain = PlaintextBallot(f"council-{i}", "North", {"Council": council})
        ballot = encrypt_ballot(ctx, plain, "d", rng=random.Random(i))
        verify_ballot(ctx, ballot)
        dave = selection(ballot, 2, 2)
        assert len(dave.proof.challenges) == 3           # R = 2
        assert len(ballot.contest(2).proof.challenges) == 3  # L = 2
        assert len(ballot.contest(1).proof.challenges) == 2
        assert decrypted_values(toy_election, ballot, (2, 3, 5)) == expected_values(small_manifest, plain)


def test_style_without_a_contest_encrypts_only_its_contests(toy_election, small_manifest):
    ctx = toy_election.context
    plain = PlaintextBallot("south-1", "South", {"Measure 1": {"No": 1}, "Mayor": {"Bob": 1}})
    ballot = encrypt_ballot(ctx, plain, "d", rng=random.Random(3))
    assert ballot.style_index == 2
    assert [c.contest_index for c in ballot.contests] == [1, 3]   # manifest order, not the style's [3, 1]
    verify_ballot(ctx, ballot)
    assert decrypted_values(toy_election, ballot, (1, 4, 5)) == {
        (1, 1): 0, (1, 2): 1, (1, 3): 0, (3, 1): 0, (3, 2): 1}


def test_hashes_follow_the_spec_equations(toy_election):
    """H_I (eq 32), chi (eq 70), H_C (eq 71), H_DI (eq 72), B_C (eq 73), the proofs (eqs 38, 59, 62)."""
    ctx = toy_election.context
    group, p = ctx.group, int(ctx.group.p)
    plain = PlaintextBallot("spec-1", "North", {"Mayor": {"Alice": 1}, "Council": {"Dave": 2}})
    device = "Urne é-7"
    ballot = encrypt_ballot(ctx, plain, device, rng=random.Random(11))
    h_i = _h(ctx.h_e, b"\x20" + int(ballot.selection_identifier).to_bytes(32, "big"))
    assert h_i == identifier_hash(ctx.h_e, ballot.selection_identifier)
    chis = []
    for ec in ballot.contests:
        data = b"\x28" + _b4(ec.contest_index)
        for s in ec.selections:
            data += _bp(group, s.ciphertext.alpha) + _bp(group, s.ciphertext.beta)
            assert _spec_range_ok(group, ctx.joint_key, h_i,
                                  b"\x24" + _b4(ec.contest_index) + _b4(s.option_index), s.ciphertext, s.proof)
        assert _h(h_i, data) == ec.contest_hash
        chis.append(ec.contest_hash)
        total = aggregate(group, (s.ciphertext for s in ec.selections))
        assert _spec_range_ok(group, ctx.joint_key, h_i, b"\x24" + _b4(ec.contest_index), total, ec.proof)
    encoded = device.encode("utf-8")
    h_di = _h(ctx.h_e, b"\x2a" + len(encoded).to_bytes(4, "big") + encoded)
    assert h_di == device_hash(ctx.h_e, device)
    assert ballot.chaining_field == b"\x00\x00\x00\x00" + h_di
    assert ballot.confirmation_code == _h(h_i, b"\x29" + b"".join(chis) + ballot.chaining_field)
    en = ballot.encrypted_nonce
    a_b = pow(int(group.g), int(en.response), p) * pow(int(en.c0), int(en.challenge), p) % p
    assert _hq(group, h_i, b"\x23" + _bp(group, a_b) + _bp(group, en.c0) + en.c1) == en.challenge


def test_encryptions_are_fresh(toy_election):
    ctx = toy_election.context
    plain = PlaintextBallot("same", "North", {"Mayor": {"Alice": 1}})
    a = encrypt_ballot(ctx, plain, "d")
    b = encrypt_ballot(ctx, plain, "d")
    assert a.selection_identifier != b.selection_identifier
    assert a.confirmation_code != b.confirmation_code
    assert selection(a, 1, 1).ciphertext != selection(b, 1, 1).ciphertext


# --- plaintext validation -------------------------------------------------------------------------

BAD_PLAINTEXTS = [
    pytest.param("East", {}, "East", id="unknown style"),
    pytest.param("North", {"Sheriff": {"Ann": 1}}, "Sheriff", id="unknown contest"),
    pytest.param("North", {"Mayor": {"Zed": 1}}, "Zed", id="unknown option"),
    pytest.param("South", {"Council": {"Carol": 1}}, "Council", id="contest not on style"),
    pytest.param("North", {"Mayor": {"Alice": 2}}, "Alice", id="over option limit 1"),
    pytest.param("North", {"Council": {"Dave": 3}}, "Dave", id="over option limit 2"),
    pytest.param("North", {"Council": {"Carol": 1, "Dave": 1, "Erin": 1}}, "Council", id="overvote"),
    pytest.param("North", {"Council": {"Dave": 2, "Erin": 1}}, "Council", id="overvote with R=2"),
    pytest.param("North", {"Mayor": {"Alice": 1, "Bob": 1}}, "Mayor", id="overvote limit 1"),
    pytest.param("North", {"Mayor": {"Bob": -1}}, "Bob", id="negative"),
    pytest.param("North", {"Mayor": {"Bob": True}}, "Bob", id="bool"),
    pytest.param("North", {"Mayor": {"Bob": 1.0}}, "Bob", id="float"),
    pytest.param("North", {"Mayor": {"Bob": "1"}}, "Bob", id="string"),
    pytest.param("North", {"Mayor": {"Bob": None}}, "Bob", id="None"),
    pytest.param("North", {"Mayor": ["Bob"]}, "Mayor", id="options not a mapping"),
]


@pytest.mark.parametrize("style, choices, label", BAD_PLAINTEXTS)
def test_invalid_plaintext_refused(toy_election, style, choices, label):
    ctx = toy_election.context
    plain = PlaintextBallot("bad-ballot-17", style, choices)
    for call in (lambda: ballot_values(ctx, plain), lambda: encrypt_ballot(ctx, plain, "d")):
        with pytest.raises(BallotError) as info:
            call()
        assert "bad-ballot-17" in str(info.value)
        assert label in str(info.value)


def test_choices_not_a_mapping_refused(toy_election):
    with pytest.raises(BallotError, match="bad-ballot-18"):
        encrypt_ballot(toy_election.context, PlaintextBallot("bad-ballot-18", "North", [("Mayor", {})]), "d")


def test_valid_edge_plaintexts_accepted(toy_election):
    ctx = toy_election.context
    for choices in ({}, {"Council": {"Dave": 2}}, {"Council": {"Carol": 0, "Dave": 0, "Erin": 0}},
                    {"Mayor": {}, "Council": {"Dave": 1, "Erin": 1}, "Measure 1": {"Yes": 1}}):
        style, values = ballot_values(ctx, PlaintextBallot("ok", "North", choices))
        assert style == 1 and sorted(values) == [1, 2, 3]


# --- tampering ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_ballot(toy_election):
    plain = PlaintextBallot("tamper-me", "North", {"Mayor": {"Bob": 1}, "Council": {"Dave": 2},
                                                    "Measure 1": {"No": 1}})
    ballot = encrypt_ballot(toy_election.context, plain, "device-T", rng=random.Random(99))
    verify_ballot(toy_election.context, ballot)
    return ballot


@pytest.fixture(scope="module")
def other_toy_ballot(toy_election):
    plain = PlaintextBallot("other", "North", {"Mayor": {"Alice": 1}, "Council": {"Dave": 2}})
    return encrypt_ballot(toy_election.context, plain, "device-T", rng=random.Random(98))


def _non_member_square(group):
    for s in range(2, 1000):
        if pow(s * s, int(group.q), int(group.p)) != 1:
            return mpz(s * s)
    raise AssertionError("no small square outside the subgroup")


def _tampers(ctx, other):
    """(name, function ballot -> tampered ballot, exception, fragments the message must hold)."""
    group = ctx.group
    p, q, g = group.p, group.q, group.g

    def sel_ct(b, ci, oi, alpha=None, beta=None):
        ct = selection(b, ci, oi).ciphertext
        return with_selection(b, ci, oi, ciphertext=Ciphertext(ct.alpha if alpha is None else alpha,
                                                               ct.beta if beta is None else beta))

    def sel_proof(b, ci, oi, which, j):
        proof = selection(b, ci, oi).proof
        vals = list(getattr(proof, which))
        vals[j] = bump(vals[j], q)
        return with_selection(b, ci, oi, proof=replace(proof, **{which: tuple(vals)}))

    def contest_proof(b, ci, which, j):
        proof = b.contest(ci).proof
        vals = list(getattr(proof, which))
        vals[j] = bump(vals[j], q)
        return with_contest(b, ci, proof=replace(proof, **{which: tuple(vals)}))

    def swap_ciphertexts(b):
        s1, s2 = selection(b, 2, 1), selection(b, 2, 2)
        b = with_selection(b, 2, 1, ciphertext=s2.ciphertext)
        return with_selection(b, 2, 2, ciphertext=s1.ciphertext)

    def swap_selections(b):
        sels = b.contest(2).selections
        return with_contest(b, 2, selections=(sels[1], sels[0], sels[2]))

    def nonce(b, **changes):
        return replace(b, encrypted_nonce=replace(b.encrypted_nonce, **changes))

    def rechained(b, field):
        # An attacker may recompute the code for any chaining field: H_I is public.
        h_i = identifier_hash(ctx.h_e, b.selection_identifier)
        code = confirmation_code(h_i, [c.contest_hash for c in b.contests], field)
        return replace(b, chaining_field=field, confirmation_code=code)

    def replay(b):
        return with_selection(b, 2, 2, ciphertext=selection(other, 2, 2).ciphertext,
                              proof=selection(other, 2, 2).proof)

    en = lambda b: b.encrypted_nonce  # noqa: E731
    return [
        ("alpha", lambda b: sel_ct(b, 2, 2, alpha=selection(b, 2, 2).ciphertext.alpha * g % p),
         ProofError, ["contest 2 option 2"]),
        ("beta", lambda b: sel_ct(b, 2, 2, beta=selection(b, 2, 2).ciphertext.beta * g % p),
         ProofError, ["contest 2 option 2"]),
        ("alpha p-1", lambda b: sel_ct(b, 1, 3, alpha=p - 1), GroupMembershipError, ["contest 1 option 3", "alpha"]),
        ("beta zero", lambda b: sel_ct(b, 3, 1, beta=mpz(0)), GroupMembershipError, ["contest 3 option 1", "beta"]),
        ("alpha p", lambda b: sel_ct(b, 1, 1, alpha=p), GroupMembershipError, ["contest 1 option 1"]),
        ("beta square non-member", lambda b: sel_ct(b, 2, 3, beta=_non_member_square(group)),
         GroupMembershipError, ["contest 2 option 3", "beta"]),
        ("selection challenge", lambda b: sel_proof(b, 2, 2, "challenges", 1), ProofError, ["contest 2 option 2"]),
        ("selection challenge last", lambda b: sel_proof(b, 2, 2, "challenges", 2), ProofError,
         ["contest 2 option 2"]),
        ("selection response", lambda b: sel_proof(b, 1, 2, "responses", 0), ProofError, ["contest 1 option 2"]),
        ("selection response >= q",
         lambda b: with_selection(b, 3, 2, proof=replace(selection(b, 3, 2).proof, responses=(
             selection(b, 3, 2).proof.responses[0] + q, selection(b, 3, 2).proof.responses[1]))),
         GroupMembershipError, ["contest 3 option 2"]),
        ("selection proof truncated",
         lambda b: with_selection(b, 2, 2, proof=RangeProof(selection(b, 2, 2).proof.challenges[:2],
                                                            selection(b, 2, 2).proof.responses[:2])),
         ProofError, ["contest 2 option 2"]),
        ("contest proof challenge", lambda b: contest_proof(b, 2, "challenges", 0), ProofError,
         ["contest 2 selection limit"]),
        ("contest proof response", lambda b: contest_proof(b, 3, "responses", 1), ProofError,
         ["contest 3 selection limit"]),
        ("contest proof from other contest", lambda b: with_contest(b, 3, proof=b.contest(1).proof),
         ProofError, ["contest 3"]),
        ("swap ciphertexts", swap_ciphertexts, ProofError, ["contest 2 option 1"]),
        ("swap selections", swap_selections, BallotError, ["contest 2"]),
        ("replayed selection from another ballot", replay, ProofError, ["contest 2 option 2"]),
        ("confirmation code", lambda b: replace(b, confirmation_code=flip_first_byte(b.confirmation_code)),
         BallotError, ["confirmation code"]),
        ("selection identifier", lambda b: replace(b, selection_identifier=b.selection_identifier ^ 1),
         REFUSALS, []),
        ("selection identifier too big", lambda b: replace(b, selection_identifier=mpz(2) ** 256), BallotError, []),
        ("selection identifier negative", lambda b: replace(b, selection_identifier=mpz(-1)), BallotError, []),
        ("contest hash", lambda b: with_contest(b, 3, contest_hash=flip_first_byte(b.contest(3).contest_hash)),
         BallotError, ["contest 3"]),
        ("drop contest", lambda b: replace(b, contests=b.contests[:2]), BallotError, ["[1, 2]"]),
        ("contests reordered", lambda b: replace(b, contests=b.contests[::-1]), BallotError, ["[3, 2, 1]"]),
        ("duplicate contest", lambda b: replace(b, contests=b.contests[:2] + b.contests[1:2]), BallotError, []),
        ("drop selection", lambda b: with_contest(b, 2, selections=b.contest(2).selections[:2]), BallotError,
         ["contest 2"]),
        ("other style", lambda b: replace(b, style_index=2), BallotError, ["South"]),
        ("unknown style", lambda b: replace(b, style_index=9), BallotError, ["9"]),
        ("device", lambda b: replace(b, device="device-U"), BallotError, ["device-U"]),
        ("device rechained", lambda b: rechained(replace(b, device="device-U"), unchained_field(ctx.h_e, "device-T")),
         BallotError, ["device-U"]),
        ("unknown chaining mode", lambda b: rechained(b, b"\x00\x00\x00\x02" + b.chaining_field[4:]), BallotError,
         ["00000002"]),
        ("nonce C1", lambda b: nonce(b, c1=flip_first_byte(en(b).c1)), ProofError, ["nonce"]),
        ("nonce C1 short", lambda b: nonce(b, c1=en(b).c1[:31]), ProofError, ["nonce"]),
        ("nonce C0", lambda b: nonce(b, c0=en(b).c0 * g % p), ProofError, ["nonce"]),
        ("nonce C0 non-member", lambda b: nonce(b, c0=p - 1), GroupMembershipError, ["nonce"]),
        ("nonce challenge", lambda b: nonce(b, challenge=bump(en(b).challenge, q)), ProofError, ["nonce"]),
        ("nonce response", lambda b: nonce(b, response=bump(en(b).response, q)), ProofError, ["nonce"]),
        ("nonce of another ballot", lambda b: replace(b, encrypted_nonce=other.encrypted_nonce), ProofError,
         ["nonce"]),
    ]


# The names, for parametrize: building the list evaluates no tamper, so any group will do.
_TAMPER_NAMES = [t[0] for t in _tampers(SimpleNamespace(group=TOY_64, h_e=bytes(32)), None)]


@pytest.mark.parametrize("name", _TAMPER_NAMES)
def test_tampered_ballot_refused(toy_election, toy_ballot, other_toy_ballot, name):
    ctx = toy_election.context
    _, tamper, exc, fragments = next(t for t in _tampers(ctx, other_toy_ballot) if t[0] == name)
    bad = tamper(toy_ballot)
    with pytest.raises(exc) as info:
        verify_ballot(ctx, bad)
    message = str(info.value)
    assert "'tamper-me'" in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_truncated_chaining_field_refused_naming_ballot(toy_election, toy_ballot):
    """verify_ballot promises BallotError/ProofError/GroupMembershipError naming the ballot."""
    bad = replace(toy_ballot, chaining_field=toy_ballot.chaining_field[:35])
    with pytest.raises(REFUSALS) as info:
        verify_ballot(toy_election.context, bad)
    assert "'tamper-me'" in str(info.value)


# --- chaining -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chained(toy_election, small_manifest):
    ctx = toy_election.context
    rng = random.Random(5)
    chain = BallotChain(ctx.h_e, "kiosk-1")
    ballots = []
    for i in range(3):
        plain = random_ballot(small_manifest, rng, f"chain-{i}")
        ballot = encrypt_ballot(ctx, plain, "kiosk-1", chaining_field=chain.next_field(), rng=rng)
        chain.advance(ballot.confirmation_code)
        ballots.append(ballot)
    return chain, ballots


def test_chain_verifies_and_closes(toy_election, chained):
    ctx = toy_election.context
    chain, ballots = chained
    for b in ballots:
        verify_ballot(ctx, b)
    encoded = b"kiosk-1"
    h_di = _h(ctx.h_e, b"\x2a" + len(encoded).to_bytes(4, "big") + encoded)
    b_c0 = b"\x00\x00\x00\x01" + h_di
    h_0 = _h(ctx.h_e, b"\x29" + b_c0)                                        # eq 74
    assert chain.initial_field == b_c0 and chain.initial_code == h_0
    assert ballots[0].chaining_field == SIMPLE_CHAINING + h_0                  # eq 76, j = 1
    assert ballots[1].chaining_field == SIMPLE_CHAINING + ballots[0].confirmation_code
    assert ballots[2].chaining_field == SIMPLE_CHAINING + ballots[1].confirmation_code
    closing = _h(ctx.h_e, b"\x29" + b"\x00\x00\x00\x01"
                 + _h(ctx.h_e, b"\x2b" + ballots[2].confirmation_code + b_c0))  # eqs 77, 78
    assert verify_chain(ctx, "kiosk-1", ballots) == closing == chain.closing_hash()


def test_empty_chain_closes_on_initial_code(toy_election):
    ctx = toy_election.context
    chain = BallotChain(ctx.h_e, "kiosk-9")
    assert verify_chain(ctx, "kiosk-9", []) == chain.closing_hash()


@pytest.mark.parametrize("edit, culprit", [
    (lambda bs, x: [bs[0], bs[2]], "chain-2"),                 # removed from the middle
    (lambda bs, x: [bs[1], bs[0], bs[2]], "chain-1"),          # reordered
    (lambda bs, x: [bs[0], bs[2], bs[1]], "chain-2"),
    (lambda bs, x: [bs[0], x, bs[1], bs[2]], "intruder"),       # inserted
    (lambda bs, x: [bs[1], bs[2]], "chain-1"),                 # first removed
    (lambda bs, x: [bs[0], bs[0], bs[1], bs[2]], "chain-0"),    # duplicated
])
def test_broken_chain_names_the_ballot(toy_election, small_manifest, chained, edit, culprit):
    ctx = toy_election.context
    _, ballots = chained
    intruder = encrypt_ballot(ctx, random_ballot(small_manifest, random.Random(8), "intruder"), "kiosk-1",
                              chaining_field=SIMPLE_CHAINING + ballots[0].confirmation_code[::-1],
                              rng=random.Random(8))
    with pytest.raises(BallotError) as info:
        verify_chain(ctx, "kiosk-1", edit(ballots, intruder))
    assert f"'{culprit}'" in str(info.value)


def test_chain_refuses_other_device_and_unchained(toy_election, small_manifest, chained):
    ctx = toy_election.context
    _, ballots = chained
    with pytest.raises(BallotError, match="chain-0"):
        verify_chain(ctx, "kiosk-2", ballots)
    plain = random_ballot(small_manifest, random.Random(1), "loose")
    loose = encrypt_ballot(ctx, plain, "kiosk-1", rng=random.Random(1))
    with pytest.raises(BallotError, match="'loose'"):
        verify_chain(ctx, "kiosk-1", [loose])


def test_dropping_the_last_ballot_changes_the_closing_hash(toy_election, chained):
    ctx = toy_election.context
    chain, ballots = chained
    assert verify_chain(ctx, "kiosk-1", ballots[:2]) != chain.closing_hash()


def test_no_chaining_field(toy_election):
    ctx = toy_election.context
    for device in ("d", "kiosk-1", "bureau de vote n° 12", ""):
        encoded = device.encode("utf-8")
        h_di = _h(ctx.h_e, b"\x2a" + len(encoded).to_bytes(4, "big") + encoded)
        assert unchained_field(ctx.h_e, device) == b"\x00\x00\x00\x00" + h_di
        assert NO_CHAINING == b"\x00\x00\x00\x00"
    assert unchained_field(ctx.h_e, "a") != unchained_field(ctx.h_e, "b")


# --- homomorphism and range proofs ----------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 16777212)), min_size=1, max_size=10))
def test_aggregate_decrypts_to_the_sum(toy_election, votes):
    ctx = toy_election.context
    group = ctx.group
    cts = [encrypt(ctx.g_table, ctx.k_table, sigma, xi) for sigma, xi in votes]
    total = aggregate(group, cts)
    xi = sum(x for _, x in votes) % int(group.q)
    sigma = sum(s for s, _ in votes)
    assert total.alpha == pow(int(group.g), xi, int(group.p))
    assert power_of_key_from_nonce(group, ctx.k_table, total, xi) == pow(int(ctx.joint_key), sigma, int(group.p))
    # and each ciphertext alone decrypts with its own nonce
    for ct, (s, x) in zip(cts, votes):
        assert power_of_key_from_nonce(group, ctx.k_table, ct, x) == pow(int(ctx.joint_key), s, int(group.p))


def test_aggregate_of_nothing_is_the_identity(toy_election):
    assert aggregate(toy_election.context.group, []) == Ciphertext(1, 1)


@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_range_proofs(toy_election, limit):
    ctx = toy_election.context
    group, q = ctx.group, ctx.group.q
    rng = random.Random(limit)
    h_i = bytes(rng.getrandbits(8) for _ in range(32))
    for prefix in (selection_prefix(2, 3), contest_prefix(2)):
        for value in range(limit + 1):
            nonce = rng.randrange(int(q))
            ct = encrypt(ctx.g_table, ctx.k_table, value, nonce)
            proof = prove_range(group, ctx.g_table, ctx.k_table, h_i, prefix, ct, nonce, value, limit, rng)
            verify_range(group, ctx.g_table, ctx.k_table, h_i, prefix, ct, proof, limit, "ok")
            assert _spec_range_ok(group, ctx.joint_key, h_i, prefix, ct, proof)
            # the same proof against an encryption of limit + 1 (same nonce) fails
            over = encrypt(ctx.g_table, ctx.k_table, limit + 1, nonce)
            with pytest.raises(ProofError, match="over-limit"):
                verify_range(group, ctx.g_table, ctx.k_table, h_i, prefix, over, proof, limit, "over-limit")
            # any single altered challenge or response fails
            for which in ("challenges", "responses"):
                for j in range(limit + 1):
                    vals = list(getattr(proof, which))
                    vals[j] = bump(vals[j], q)
                    bad = replace(proof, **{which: tuple(vals)})
                    with pytest.raises(ProofError, match=f"{which}-{j}"):
                        verify_range(group, ctx.g_table, ctx.k_table, h_i, prefix, ct, bad, limit,
                                     f"{which}-{j}")
            # the proof is bound to its prefix, its H_I and its stated limit
            with pytest.raises(ProofError):
                verify_range(group, ctx.g_table, ctx.k_table, h_i, selection_prefix(9, 9), ct, proof, limit, "x")
            with pytest.raises(ProofError):
                verify_range(group, ctx.g_table, ctx.k_table, bytes(32), prefix, ct, proof, limit, "x")
            with pytest.raises(ProofError):
                verify_range(group, ctx.g_table, ctx.k_table, h_i, prefix, ct, proof, limit + 1, "x")
        with pytest.raises(InputError):
            prove_range(group, ctx.g_table, ctx.k_table, h_i, prefix, over, nonce, limit + 1, limit, rng)
        with pytest.raises(InputError):
            prove_range(group, ctx.g_table, ctx.k_table, h_i, prefix, ct, nonce, -1, limit, rng)


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(1, 4), data=st.data())
def test_range_proof_of_any_value_outside_fails(toy_election, limit, data):
    """A proof made for a value in range never verifies for a ciphertext encrypting a value outside it."""
    ctx = toy_election.context
    group, q = ctx.group, int(ctx.group.q)
    value = data.draw(st.integers(0, limit))
    nonce = data.draw(st.integers(0, q - 1))
    outside = data.draw(st.integers(limit + 1, limit + 20))
    h_i = bytes(32)
    ct = encrypt(ctx.g_table, ctx.k_table, value, nonce)
    proof = prove_range(group, ctx.g_table, ctx.k_table, h_i, b"\x24", ct, nonce, value, limit)
    bad_ct = encrypt(ctx.g_table, ctx.k_table, outside, data.draw(st.sampled_from([nonce, (nonce + 1) % q])))
    with pytest.raises(ProofError):
        verify_range(group, ctx.g_table, ctx.k_table, h_i, b"\x24", bad_ct, proof, limit, "outside")
