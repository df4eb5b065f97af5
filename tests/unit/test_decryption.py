"""Tally aggregation and threshold decryption (spec 3.5, 3.6; Verifications 9-11, 13, 14).

The quorum sweeps and tampering run on the toy group; two tally decryptions and
two challenged-ballot decryptions use the STANDARD parameters.
"""

from __future__ import annotations

import hashlib
import hmac
import random
from dataclasses import replace
from itertools import combinations

import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import expected_sums, expected_values, random_ballot
from node.crypto.ballot import PlaintextBallot, confirmation_code, encrypt_ballot, identifier_hash, verify_ballot
from node.crypto.challenged import decrypt_challenged_ballot, verify_challenged_ballot
from node.crypto.decryption import (
    DecryptionSession,
    PublicShares,
    TallyStatement,
    ThresholdKey,
    check_part,
    combine_responses,
    combine_values,
    compute_shares,
    joint_challenge,
    part_secret,
    plan_parts,
    respond,
)
from node.crypto.elgamal import Ciphertext
from node.crypto.errors import BallotError, DecryptionError, GroupMembershipError, InputError, ProofError
from node.crypto.fixed_base import FixedBase
from node.crypto.keys import evaluate_polynomial, lagrange_coefficient
from node.crypto.params import TOY_64
from node.crypto.tally import EncryptedTally, decrypt_tally, tally_ballots, verify_tally

N, K = 5, 3


def vote_keys(ceremony, members):
    return {i: ceremony.guardian_keys[i].vote for i in members}


def data_keys(ceremony, members):
    return {i: ceremony.guardian_keys[i].data for i in members}


def values_of(decrypted) -> dict:
    return {key: opt.value for key, opt in decrypted.options.items()}


def bump(x, q):
    return mpz((int(x) + 1) % int(q))


# --- the toy election: ten cast ballots and their tally -----------------------------------------

@pytest.fixture(scope="module")
def toy_cast(toy_election, small_manifest):
    ctx = toy_election.context
    rng = random.Random(31)
    plain = [random_ballot(small_manifest, rng, f"cast-{i}") for i in range(10)]
    # make sure the R = 2 option and the second style are exercised
    plain.append(PlaintextBallot("cast-dave", "North", {"Council": {"Dave": 2}, "Mayor": {"Alice": 1}}))
    plain.append(PlaintextBallot("cast-south", "South", {"Measure 1": {"Yes": 1}, "Mayor": {"Bob": 1}}))
    encrypted = [encrypt_ballot(ctx, b, "toy-device", rng=rng) for b in plain]
    return plain, encrypted, tally_ballots(ctx, encrypted)


@pytest.fixture(scope="module")
def toy_decrypted(toy_election, toy_cast):
    _, _, tally = toy_cast
    return decrypt_tally(toy_election.context, toy_election.vote_publics(), vote_keys(toy_election, (1, 2, 4)),
                         tally)


def test_tally_is_the_product_of_the_cast_ballots(toy_election, toy_cast):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    p = int(ctx.group.p)
    assert tally.ballot_count == len(encrypted)
    assert set(tally.totals) == {(c.index, o.index) for c in ctx.manifest.contests for o in c.options}
    for (ci, oi), ct in tally.totals.items():
        a, b = 1, 1
        for ballot in encrypted:
            for ec in ballot.contests:
                for s in ec.selections:
                    if (ec.contest_index, s.option_index) == (ci, oi):
                        a, b = a * int(s.ciphertext.alpha) % p, b * int(s.ciphertext.beta) % p
        assert (ct.alpha, ct.beta) == (a, b)


def test_every_quorum_decrypts_the_toy_tally(toy_election, toy_cast, small_manifest):
    ctx = toy_election.context
    plain, encrypted, tally = toy_cast
    truth = expected_sums(small_manifest, plain)
    assert truth[(2, 2)] >= 2 and any(truth.values())
    subsets = [s for size in range(K, N + 1) for s in combinations(range(1, N + 1), size)]
    assert len(subsets) == 16
    for members in subsets:
        dec = decrypt_tally(ctx, toy_election.vote_publics(), vote_keys(toy_election, members), tally)
        assert values_of(dec) == truth, members
        assert dec.present == members
        assert dec.missing == tuple(j for j in range(1, N + 1) if j not in members)
        assert not dec.compensated
        verify_tally(ctx, encrypted, tally, dec)


@pytest.mark.parametrize("members", [(1, 2, 3), (2, 4, 5), (1, 3, 5), (1, 2, 3, 5), (1, 2, 3, 4, 5)])
def test_compensated_quorums_decrypt_the_toy_tally(toy_election, toy_cast, small_manifest, members):
    ctx = toy_election.context
    plain, encrypted, tally = toy_cast
    dec = decrypt_tally(ctx, toy_election.vote_publics(), vote_keys(toy_election, members), tally,
                        compensated=True)
    assert values_of(dec) == expected_sums(small_manifest, plain)
    assert dec.compensated and dec.present == members
    assert dec.missing == tuple(j for j in range(1, N + 1) if j not in members)
    missing = len(dec.missing)
    assert all(len(o.shares) == len(members) * (1 + missing) for o in dec.options.values())
    verify_tally(ctx, encrypted, tally, dec)


@pytest.mark.parametrize("members", [(), (1,), (2, 5), (4, 3)])
def test_fewer_than_k_guardians_refused(toy_election, toy_cast, members):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    for compensated in (False, True):
        with pytest.raises(DecryptionError, match="needed"):
            decrypt_tally(ctx, toy_election.vote_publics(), vote_keys(toy_election, members), tally,
                          compensated=compensated)
        with pytest.raises(DecryptionError, match="needed"):
            decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, members),
                                      encrypted[0], compensated=compensated)


def test_empty_tally_decrypts_to_zeros(toy_election):
    ctx = toy_election.context
    tally = tally_ballots(ctx, [])
    assert tally.ballot_count == 0 and all(ct == Ciphertext(1, 1) for ct in tally.totals.values())
    dec = decrypt_tally(ctx, toy_election.vote_publics(), vote_keys(toy_election, (3, 4, 5)), tally)
    assert set(values_of(dec).values()) == {0}
    verify_tally(ctx, [], tally, dec)


def test_decryption_proof_follows_verification_10(toy_election, toy_cast, toy_decrypted):
    """Recompute (10.1)-(10.3) and (10.B) with pow() and hmac for every option."""
    ctx = toy_election.context
    group = ctx.group
    p, q, g, K_ = int(group.p), int(group.q), int(group.g), int(ctx.joint_key)
    _, _, tally = toy_cast

    def bp(x):
        return int(x).to_bytes(group.p_bytes, "big")

    for (ci, oi), ct in tally.totals.items():
        d = toy_decrypted.options[(ci, oi)]
        A, B, T, c, v = int(ct.alpha), int(ct.beta), int(d.t_power), int(d.challenge), int(d.response)
        assert T == pow(K_, d.value, p)                                      # (10.C)
        M = B * pow(T, -1, p) % p
        a = pow(g, v, p) * pow(K_, c, p) % p
        b = pow(A, v, p) * pow(M, c, p) % p
        data = b"\x31" + ci.to_bytes(4, "big") + oi.to_bytes(4, "big") + b"".join(map(bp, (A, B, a, b, M)))
        assert int.from_bytes(hmac.new(ctx.h_e, data, hashlib.sha256).digest(), "big") % q == c   # (10.B)


# --- the STANDARD election -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standard_cast(standard_election, standard_ballots, standard_plaintexts):
    cast = standard_ballots[:3]
    return cast, tally_ballots(standard_election.context, cast), expected_sums(
        standard_election.context.manifest, standard_plaintexts[:3])


def test_standard_tally_with_two_guardians_missing(standard_election, standard_cast):
    ctx = standard_election.context
    cast, tally, truth = standard_cast
    dec = decrypt_tally(ctx, standard_election.vote_publics(), vote_keys(standard_election, (1, 3, 5)), tally)
    assert values_of(dec) == truth
    assert truth[(5, 1)] == 1 and truth[(6, 1)] == 2          # County Commission, School Board
    assert (dec.present, dec.missing, dec.compensated) == ((1, 3, 5), (2, 4), False)
    verify_tally(ctx, cast, tally, dec)


def test_standard_tally_compensated(standard_election, standard_cast):
    ctx = standard_election.context
    cast, tally, truth = standard_cast
    dec = decrypt_tally(ctx, standard_election.vote_publics(), vote_keys(standard_election, (2, 3, 4)), tally,
                        compensated=True)
    assert values_of(dec) == truth
    assert (dec.present, dec.missing, dec.compensated) == ((2, 3, 4), (1, 5), True)
    verify_tally(ctx, cast, tally, dec)


@pytest.mark.parametrize("members, compensated", [((1, 2, 4), False), ((3, 4, 5), True)])
def test_standard_challenged_ballot(standard_election, standard_ballots, standard_plaintexts, members,
                                    compensated):
    ctx = standard_election.context
    ballot, plain = standard_ballots[3], standard_plaintexts[3]
    dec = decrypt_challenged_ballot(ctx, standard_election.data_publics(), data_keys(standard_election, members),
                                    ballot, compensated=compensated)
    got = {(ci, s.option_index): s.value for ci, sels in dec.contests.items() for s in sels}
    assert got == expected_values(ctx.manifest, plain)
    assert dec.ballot_id == "std-challenged"
    verify_challenged_ballot(ctx, ballot, dec)
    bad = replace(dec, contests={**dec.contests, 5: tuple(
        replace(s, value=1 - s.value) if s.option_index == 1 else s for s in dec.contests[5])})
    with pytest.raises(ProofError, match="std-challenged"):
        verify_challenged_ballot(ctx, ballot, bad)


# --- a wrong share is named -------------------------------------------------------------------------

def _session(election, members, compensated, ct):
    ctx = election.context
    statement = TallyStatement(ctx.h_e, 1, 1, ct.alpha, ct.beta)
    parts = plan_parts(ctx.group, N, members, compensated)
    return DecryptionSession(ctx.group, ctx.g_table, ctx.k_table, election.vote_publics(), statement, parts,
                             compensated)


def _with_wrong_received(key: ThresholdKey, j: int, q) -> ThresholdKey:
    received = dict(key.received)
    received[j] = (received[j] + 1) % q
    return replace(key, received=received)


def test_honest_session_runs(toy_election, toy_cast):
    _, _, tally = toy_cast
    for compensated in (False, True):
        session = _session(toy_election, (1, 3, 4), compensated, tally.totals[(1, 1)])
        joint, shares = session.run(vote_keys(toy_election, (1, 3, 4)))
        assert joint.m == combine_values(toy_election.context.group, shares)


@pytest.mark.parametrize("members, culprit, wrong_from", [
    ((1, 2, 3), 2, 1), ((1, 2, 3), 3, 3), ((2, 4, 5), 5, 1), ((1, 3, 4, 5), 1, 2)])
def test_wrong_share_named_standard_form(toy_election, toy_cast, members, culprit, wrong_from):
    q = toy_election.context.group.q
    _, _, tally = toy_cast
    keys = vote_keys(toy_election, members)
    keys[culprit] = _with_wrong_received(keys[culprit], wrong_from, q)
    session = _session(toy_election, members, False, tally.totals[(2, 2)])
    with pytest.raises(DecryptionError) as info:
        session.run(keys)
    assert f"guardian {culprit} " in str(info.value)
    assert "missing" not in str(info.value)
    with pytest.raises(DecryptionError, match=f"guardian {culprit} "):
        decrypt_tally(toy_election.context, toy_election.vote_publics(), keys, tally)


@pytest.mark.parametrize("members, culprit, missing", [((2, 3, 4), 3, 1), ((2, 3, 4), 2, 5), ((1, 2, 5), 5, 4)])
def test_wrong_share_named_compensated_form(toy_election, toy_cast, members, culprit, missing):
    q = toy_election.context.group.q
    _, _, tally = toy_cast
    keys = vote_keys(toy_election, members)
    keys[culprit] = _with_wrong_received(keys[culprit], missing, q)
    session = _session(toy_election, members, True, tally.totals[(1, 2)])
    with pytest.raises(DecryptionError) as info:
        session.run(keys)
    assert f"guardian {culprit} " in str(info.value)
    assert f"missing guardian {missing}" in str(info.value)


def test_wrong_own_secret_named_compensated_form(toy_election, toy_cast):
    q = toy_election.context.group.q
    _, _, tally = toy_cast
    keys = vote_keys(toy_election, (1, 2, 3))
    keys[2] = replace(keys[2], own_secret=(keys[2].own_secret + 1) % q)
    with pytest.raises(DecryptionError) as info:
        _session(toy_election, (1, 2, 3), True, tally.totals[(3, 1)]).run(keys)
    assert "guardian 2 " in str(info.value) and "missing" not in str(info.value)
    # the standard form does not use s_i, so the same keys decrypt correctly there
    _session(toy_election, (1, 2, 3), False, tally.totals[(3, 1)]).run(keys)


def test_wrong_data_share_named_for_challenged_ballot(toy_election, toy_cast):
    q = toy_election.context.group.q
    _, encrypted, _ = toy_cast
    keys = data_keys(toy_election, (1, 4, 5))
    keys[4] = _with_wrong_received(keys[4], 2, q)
    with pytest.raises(DecryptionError, match="guardian 4 .*missing guardian 2"):
        decrypt_challenged_ballot(toy_election.context, toy_election.data_publics(), keys, encrypted[0],
                                  compensated=True)
    with pytest.raises(DecryptionError, match="guardian 4 "):
        decrypt_challenged_ballot(toy_election.context, toy_election.data_publics(), keys, encrypted[0])


# --- Verification 9-11 tampering ------------------------------------------------------------------

def _with_option(decrypted, key, **changes):
    return replace(decrypted, options={**decrypted.options, key: replace(decrypted.options[key], **changes)})


def _tally_tampers(ctx, decrypted):
    group = ctx.group
    p, q, g, K_ = group.p, group.q, group.g, ctx.joint_key
    key = (2, 2)
    d = decrypted.options[key]
    return {
        "value": (_with_option(decrypted, key, value=d.value + 1), ProofError),
        "value minus one": (_with_option(decrypted, key, value=d.value - 1), ProofError),
        "value negative": (_with_option(decrypted, key, value=-1), ProofError),
        "value bool": (_with_option(decrypted, key, value=bool(d.value)), ProofError),
        "T": (_with_option(decrypted, key, t_power=d.t_power * g % p), ProofError),
        "value and T consistent": (_with_option(decrypted, key, value=d.value + 1, t_power=d.t_power * K_ % p),
                                   ProofError),
        "challenge": (_with_option(decrypted, key, challenge=bump(d.challenge, q)), ProofError),
        "response": (_with_option(decrypted, key, response=bump(d.response, q)), ProofError),
        "T non-member": (_with_option(decrypted, key, t_power=p - 1), GroupMembershipError),
        "response >= q": (_with_option(decrypted, key, response=d.response + q), GroupMembershipError),
        "proof of another option": (_with_option(decrypted, key, challenge=decrypted.options[(2, 1)].challenge,
                                                 response=decrypted.options[(2, 1)].response), ProofError),
    }


_TALLY_TAMPERS = ["value", "value minus one", "value negative", "value bool", "T", "value and T consistent",
                  "challenge", "response", "T non-member", "response >= q", "proof of another option"]


@pytest.mark.parametrize("name", _TALLY_TAMPERS)
def test_tampered_decryption_refused(toy_election, toy_cast, toy_decrypted, name):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    verify_tally(ctx, encrypted, tally, toy_decrypted)
    tampers = _tally_tampers(ctx, toy_decrypted)
    assert sorted(tampers) == sorted(_TALLY_TAMPERS)
    bad, exc = tampers[name]
    with pytest.raises(exc) as info:
        verify_tally(ctx, encrypted, tally, bad)
    assert "contest 2 option 2" in str(info.value)


def test_tally_value_off_by_q_refused(toy_election, toy_cast, toy_decrypted):
    """T = K^t only fixes t mod q: t + q satisfies (10.C) literally but is not the tally.

    verify_tally knows the cast ballots, so it can and should refuse a value
    larger than (number of cast ballots) x (option limit).
    """
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    d = toy_decrypted.options[(1, 1)]
    bad = _with_option(toy_decrypted, (1, 1), value=d.value + int(ctx.group.q))
    with pytest.raises(ProofError) as info:
        verify_tally(ctx, encrypted, tally, bad)
    assert "contest 1 option 1" in str(info.value)


def test_tampered_encrypted_tally_refused(toy_election, toy_cast, toy_decrypted):
    ctx = toy_election.context
    p, g = ctx.group.p, ctx.group.g
    _, encrypted, tally = toy_cast
    ct = tally.totals[(3, 2)]
    for bad_ct in (Ciphertext(ct.alpha * g % p, ct.beta), Ciphertext(ct.alpha, ct.beta * g % p)):
        bad = EncryptedTally({**tally.totals, (3, 2): bad_ct}, tally.ballot_count)
        with pytest.raises(ProofError) as info:
            verify_tally(ctx, encrypted, bad, toy_decrypted)
        assert "Verification 9" in str(info.value) and "contest 3 option 2" in str(info.value)


def test_dropped_or_added_cast_ballot_refused(toy_election, toy_cast, toy_decrypted, small_manifest):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    for cast in (encrypted[:-1], encrypted[1:], encrypted[:5] + encrypted[6:]):
        with pytest.raises(ProofError, match="Verification 9"):
            verify_tally(ctx, cast, tally, toy_decrypted)
    extra = encrypt_ballot(ctx, random_ballot(small_manifest, random.Random(4), "extra", style="North"), "d",
                           rng=random.Random(4))
    with pytest.raises(ProofError, match="Verification 9"):
        verify_tally(ctx, encrypted + [extra], tally, toy_decrypted)


def test_tally_missing_an_option_refused(toy_election, toy_cast, toy_decrypted):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    options = dict(toy_decrypted.options)
    del options[(1, 3)]
    with pytest.raises(ProofError, match="Verification 11"):
        verify_tally(ctx, encrypted, tally, replace(toy_decrypted, options=options))
    totals = dict(tally.totals)
    del totals[(1, 3)]
    with pytest.raises(ProofError, match="Verification 11"):
        verify_tally(ctx, encrypted, EncryptedTally(totals, tally.ballot_count), toy_decrypted)


def test_decryption_of_another_tally_refused(toy_election, toy_cast):
    ctx = toy_election.context
    _, encrypted, tally = toy_cast
    smaller = tally_ballots(ctx, encrypted[:4])
    dec = decrypt_tally(ctx, toy_election.vote_publics(), vote_keys(toy_election, (1, 2, 3)), smaller)
    verify_tally(ctx, encrypted[:4], smaller, dec)
    with pytest.raises(ProofError):
        verify_tally(ctx, encrypted, tally, dec)


# --- challenged ballots on the toy group ----------------------------------------------------------

@pytest.fixture(scope="module")
def toy_challenged(toy_election):
    ctx = toy_election.context
    plain = PlaintextBallot("spoiled-7", "North", {"Mayor": {"Write-in": 1}, "Council": {"Carol": 1, "Dave": 1}})
    ballot = encrypt_ballot(ctx, plain, "toy-device", rng=random.Random(77))
    dec = decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, (1, 3, 5)), ballot)
    return plain, ballot, dec


def test_toy_challenged_ballot_round_trip(toy_election, toy_challenged, small_manifest):
    ctx = toy_election.context
    plain, ballot, dec = toy_challenged
    verify_challenged_ballot(ctx, ballot, dec)
    got = {(ci, s.option_index): s.value for ci, sels in dec.contests.items() for s in sels}
    assert got == expected_values(small_manifest, plain)
    for members in combinations(range(1, 6), 3):
        for compensated in (False, True):
            again = decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, members),
                                              ballot, compensated=compensated)
            assert again.beta == dec.beta and again.contests == dec.contests
            verify_challenged_ballot(ctx, ballot, again)


def _challenged_tampers(ctx, dec, other_dec):
    group = ctx.group
    p, q, g = group.p, group.q, group.g

    def sel(ci, oi, **changes):
        return replace(dec, contests={**dec.contests, ci: tuple(
            replace(s, **changes) if s.option_index == oi else s for s in dec.contests[ci])})

    council = dec.contests[2]
    return {
        "value 0 -> 1": (sel(3, 1, value=1), ProofError),
        "value 1 -> 0": (sel(1, 3, value=0), ProofError),
        "value over option limit": (sel(2, 2, value=5), ProofError),
        "values swapped": (replace(dec, contests={**dec.contests, 2: (
            replace(council[0], value=council[1].value, nonce=council[1].nonce),
            replace(council[1], value=council[0].value, nonce=council[0].nonce), council[2])}), ProofError),
        "nonce": (sel(2, 3, nonce=bump(council[2].nonce, q)), ProofError),
        "beta": (replace(dec, beta=dec.beta * g % p), ProofError),
        "beta non-member": (replace(dec, beta=p - 1), GroupMembershipError),
        "challenge": (replace(dec, challenge=bump(dec.challenge, q)), ProofError),
        "response": (replace(dec, response=bump(dec.response, q)), ProofError),
        "proof of another ballot": (replace(dec, beta=other_dec.beta, challenge=other_dec.challenge,
                                            response=other_dec.response), ProofError),
        "contest dropped": (replace(dec, contests={k: v for k, v in dec.contests.items() if k != 3}), ProofError),
        "selection dropped": (replace(dec, contests={**dec.contests, 2: council[:2]}), ProofError),
    }


_CHALLENGED_TAMPERS = ["value 0 -> 1", "value 1 -> 0", "value over option limit", "values swapped", "nonce",
                       "beta", "beta non-member", "challenge", "response", "proof of another ballot",
                       "contest dropped", "selection dropped"]


@pytest.mark.parametrize("name", _CHALLENGED_TAMPERS)
def test_tampered_challenged_decryption_refused(toy_election, toy_challenged, toy_cast, name):
    ctx = toy_election.context
    _, ballot, dec = toy_challenged
    _, encrypted, _ = toy_cast
    other = decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, (2, 3, 4)),
                                      encrypted[0])
    tampers = _challenged_tampers(ctx, dec, other)
    assert sorted(tampers) == sorted(_CHALLENGED_TAMPERS)
    bad, exc = tampers[name]
    with pytest.raises(exc) as info:
        verify_challenged_ballot(ctx, ballot, bad)
    assert "'spoiled-7'" in str(info.value)


def test_decryption_checked_against_another_ballot_refused(toy_election, toy_challenged, toy_cast):
    ctx = toy_election.context
    _, _, dec = toy_challenged
    _, encrypted, _ = toy_cast
    with pytest.raises(ProofError):
        verify_challenged_ballot(ctx, encrypted[0], dec)


def test_guardians_refuse_a_ballot_whose_nonce_proof_fails(toy_election, toy_challenged):
    ctx = toy_election.context
    _, ballot, _ = toy_challenged
    bad = replace(ballot, encrypted_nonce=replace(ballot.encrypted_nonce,
                                                  challenge=bump(ballot.encrypted_nonce.challenge, ctx.group.q)))
    with pytest.raises(ProofError, match="spoiled-7"):
        decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, (1, 2, 3)), bad)


@pytest.mark.parametrize("case", ["claims another style", "contest dropped, code recomputed"])
def test_challenged_ballot_checked_against_its_style(toy_election, toy_challenged, case):
    """Verification 14.A/14.B compare the decrypted contests with the ballot style in the manifest.

    Two records that do not match their style: the ballot claims style South
    (contests 1, 3) but holds contest 2; or contest 3 of style North was dropped
    and the confirmation code recomputed (H_I is public). verify_ballot refuses
    both (Verification 8), and so must verify_challenged_ballot (14.A, 14.B).
    """
    ctx = toy_election.context
    _, ballot, dec = toy_challenged
    wrong_style = replace(ballot, style_index=2)
    h_i = identifier_hash(ctx.h_e, ballot.selection_identifier)
    kept = ballot.contests[:2]
    dropped = replace(ballot, contests=kept,
                      confirmation_code=confirmation_code(h_i, [c.contest_hash for c in kept], ballot.chaining_field))
    bad = wrong_style if case == "claims another style" else dropped
    with pytest.raises(BallotError):
        verify_ballot(ctx, bad)
    bad_dec = decrypt_challenged_ballot(ctx, toy_election.data_publics(), data_keys(toy_election, (1, 2, 3)), bad)
    with pytest.raises(ProofError, match="spoiled-7"):
        verify_challenged_ballot(ctx, bad, bad_dec)


# --- the decryption algebra on the toy group -------------------------------------------------------

def _random_sharing(group, n, k, rng):
    """n guardians' polynomials of degree k-1: ThresholdKeys, commitments and the joint secret s."""
    q = int(group.q)
    g_table = FixedBase(group, group.g)
    coefficients = {j: [rng.randrange(q) for _ in range(k)] for j in range(1, n + 1)}
    commitments = {j: [g_table.pow(a) for a in cs] for j, cs in coefficients.items()}
    keys = {i: ThresholdKey(i, mpz(coefficients[i][0]),
                            {j: evaluate_polynomial(group, coefficients[j], i) for j in range(1, n + 1)})
            for i in range(1, n + 1)}
    s = sum(cs[0] for cs in coefficients.values()) % q
    return g_table, keys, PublicShares(group, commitments), s


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_parts_combine_to_the_joint_secret(data):
    group = TOY_64
    q, p = int(group.q), int(group.p)
    n = data.draw(st.integers(1, 7), label="n")
    k = data.draw(st.integers(1, n), label="k")
    present = sorted(data.draw(st.sets(st.integers(1, n), min_size=k, max_size=n), label="present"))
    compensated = data.draw(st.booleans(), label="compensated")
    rng = random.Random(data.draw(st.integers(0, 2**32), label="seed"))
    g_table, keys, publics, s = _random_sharing(group, n, k, rng)

    parts = plan_parts(group, n, present, compensated)
    missing = [j for j in range(1, n + 1) if j not in present]
    if compensated:
        assert len(parts) == len(present) * (1 + len(missing))
        assert all(part.weight == 1 for part in parts if part.missing is None)
        for j in missing:
            assert sum(int(part.weight) for part in parts if part.missing == j) % q == 1
    else:
        assert len(parts) == len(present) and all(part.missing is None for part in parts)
        assert sum(int(part.weight) for part in parts) % q == 1
        for part in parts:
            assert part.weight == lagrange_coefficient(group, part.guardian, present)
    secrets_ = [part_secret(group, keys[part.guardian], part, compensated) for part in parts]
    assert sum(int(part.weight) * int(x) for part, x in zip(parts, secrets_)) % q == s
    for part, x in zip(parts, secrets_):
        assert publics.public(part, compensated) == pow(int(group.g), int(x), p)

    base = pow(int(group.g), rng.randrange(1, q), p)
    shares, nonces = [], []
    for i in present:
        sh, no = compute_shares(group, g_table, keys[i], base, parts, compensated, rng)
        assert all(x.part.guardian == i for x in sh) and len(sh) == len(no)
        shares += sh
        nonces.append((i, no, sh))
    assert combine_values(group, shares) == pow(base, s, p)

    statement = TallyStatement(bytes(32), 1, 1, mpz(base), mpz(base))
    m, c = joint_challenge(group, statement, shares)
    assert m == pow(base, s, p)
    responses = []
    for i, no, sh in nonces:
        vs = respond(group, keys[i], no, c, compensated)
        for share, v in zip(sh, vs):
            public = publics.public(share.part, compensated)
            assert check_part(group, g_table, public, base, share, c, v)
            assert not check_part(group, g_table, public, base, share, c, (v + 1) % q)
            assert not check_part(group, g_table, public, base, replace(share, value=share.value * base % p), c, v)
        responses += vs
    v = int(combine_responses(group, responses))
    # the joint proof of 3.6.5: g^v K^c = prod a_i and base^v M^c = prod b_i, with K = g^s
    a = b = 1
    for share in shares:
        a, b = a * int(share.commitment_a) % p, b * int(share.commitment_b) % p
    assert pow(int(group.g), v, p) * pow(int(group.g), s * int(c), p) % p == a
    assert pow(base, v, p) * pow(int(m), int(c), p) % p == b


def test_lagrange_coefficients_match_exact_fractions():
    from fractions import Fraction

    q = int(TOY_64.q)
    for present in ([1, 2, 3], [2, 4, 5], [1, 3, 4, 6, 7], [5]):
        for i in present:
            exact = Fraction(1)
            for l in present:
                if l != i:
                    exact *= Fraction(l, l - i)
            expected = exact.numerator * pow(exact.denominator, -1, q) % q
            assert lagrange_coefficient(TOY_64, i, present) == expected


@pytest.mark.parametrize("present", [[1, 1, 2], [0, 1, 2], [1, 2, 6]])
def test_plan_parts_refuses_bad_guardian_sets(present):
    for compensated in (False, True):
        with pytest.raises(InputError):
            plan_parts(TOY_64, 5, present, compensated)
