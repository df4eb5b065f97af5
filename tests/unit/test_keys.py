"""Tests for node.crypto.keys (spec 3.2) and node.crypto.local_ceremony."""

from __future__ import annotations

import dataclasses
import itertools
import random
from pathlib import Path

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.decryption import Part
from node.crypto.election import ElectionParameters, generator_table
from node.crypto.errors import GroupMembershipError, InputError, ProofError, ShareError
from node.crypto.hashing import extended_base_hash, guardian_record_hash, parameter_base_hash
from node.crypto.keys import (
    KeyProof,
    commitment_at,
    decrypt_share,
    encrypt_share,
    evaluate_polynomial,
    generate_guardian_key,
    joint_key,
    lagrange_coefficient,
    verify_guardian_public_key,
    verify_share,
)
from node.crypto.local_ceremony import run_local_ceremony
from node.crypto.manifest import parse_manifest
from node.crypto.params import STANDARD, TOY_16, TOY_32, TOY_64, TOY_128

TOYS = (TOY_16, TOY_32, TOY_64, TOY_128)
DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "node" / "data" / "demo-manifest.json"
# Tamper tests need a q large enough that a tampered challenge cannot collide by chance
# and a (p-1)/2q large enough for the batched membership check: TOY_128 has both.
TAMPER_GROUP = TOY_128


def setup(group, n=5, k=3):
    return generator_table(group), parameter_base_hash(group, n, k)


# --------------------------------------------------------------------------- key generation and Verification 2


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(TOYS), st.integers(1, 6), st.integers(1, 2**31 - 1), st.integers(0, 2**32))
def test_generate_and_verify_round_trip_toy(group, k, index, seed):
    g_table, h_p = setup(group)
    sk, pk = generate_guardian_key(group, g_table, h_p, index, k, rng=random.Random(seed))
    verify_guardian_public_key(group, g_table, h_p, pk, k)
    assert pk.index == sk.index == index
    assert len(pk.commitments) == len(pk.data_commitments) == k
    assert len(pk.proof.responses) == len(pk.data_proof.responses) == k + 1
    # eq 8, eq 9
    assert list(pk.commitments) == [gmpy2.powmod(group.g, a, group.p) for a in sk.coefficients]
    assert list(pk.data_commitments) == [gmpy2.powmod(group.g, a, group.p) for a in sk.data_coefficients]
    assert pk.communication_key == gmpy2.powmod(group.g, sk.communication_secret, group.p)
    assert pk.key == pk.commitments[0] and pk.data_key == pk.data_commitments[0]
    assert all(0 <= a < group.q for a in sk.coefficients + sk.data_coefficients)
    assert repr(sk) == f"GuardianSecretKey(index={index}, <secret>)"


def test_generate_and_verify_standard():
    g_table, h_p = setup(STANDARD, 3, 2)
    sk, pk = generate_guardian_key(STANDARD, g_table, h_p, 2, 2, name="Alice")
    verify_guardian_public_key(STANDARD, g_table, h_p, pk, 2)
    assert pk.name == "Alice"
    assert pk.key == gmpy2.powmod(STANDARD.g, sk.coefficients[0], STANDARD.p)
    # a proof made under one H_P does not verify under another (n, k are bound into H_P)
    with pytest.raises(ProofError, match="Alice"):
        verify_guardian_public_key(STANDARD, g_table, parameter_base_hash(STANDARD, 3, 3), pk, 2)


def test_generate_rejects_bad_index_and_k():
    g_table, h_p = setup(TOY_64)
    for index, k in ((0, 2), (-1, 2), (2**31, 2), (1, 0), (1, -3), (1, 2**31)):
        with pytest.raises(InputError):
            generate_guardian_key(TOY_64, g_table, h_p, index, k)


@pytest.fixture
def tamper_key():
    group = TAMPER_GROUP
    g_table, h_p = setup(group)
    sk, pk = generate_guardian_key(group, g_table, h_p, 2, 3, name="Bob", rng=random.Random(42))
    verify_guardian_public_key(group, g_table, h_p, pk, 3)
    return group, g_table, h_p, sk, pk


def _other_member(group, x):
    return x * group.g % group.p


def _replace_at(seq, j, value):
    out = list(seq)
    out[j] = value
    return tuple(out)


def _tamperings(group, pk):
    q, p = group.q, group.p
    proof, dproof = pk.proof, pk.data_proof
    rep = dataclasses.replace
    out = {}
    for j in range(len(pk.commitments)):
        out[f"commitment {j}"] = rep(pk, commitments=_replace_at(pk.commitments, j, _other_member(group, pk.commitments[j])))
        out[f"data commitment {j}"] = rep(
            pk, data_commitments=_replace_at(pk.data_commitments, j, _other_member(group, pk.data_commitments[j])))
    out["commitment outside group"] = rep(pk, commitments=_replace_at(pk.commitments, 1, p - 1))
    out["data commitment outside group"] = rep(pk, data_commitments=_replace_at(pk.data_commitments, 0, mpz(0)))
    out["kappa"] = rep(pk, communication_key=_other_member(group, pk.communication_key))
    out["kappa outside group"] = rep(pk, communication_key=p - pk.communication_key)
    out["challenge +1"] = rep(pk, proof=KeyProof((proof.challenge + 1) % q, proof.responses))
    out["data challenge +1"] = rep(pk, data_proof=KeyProof((dproof.challenge + 1) % q, dproof.responses))
    out["challenge = q"] = rep(pk, proof=KeyProof(q, proof.responses))
    for j in range(len(proof.responses)):
        out[f"response {j}"] = rep(pk, proof=KeyProof(proof.challenge, _replace_at(proof.responses, j, (proof.responses[j] + 1) % q)))
        out[f"data response {j}"] = rep(
            pk, data_proof=KeyProof(dproof.challenge, _replace_at(dproof.responses, j, (dproof.responses[j] - 1) % q)))
    out["response = q"] = rep(pk, proof=KeyProof(proof.challenge, _replace_at(proof.responses, 0, q)))
    out["response negative"] = rep(pk, proof=KeyProof(proof.challenge, _replace_at(proof.responses, 0, -1)))
    out["missing response"] = rep(pk, proof=KeyProof(proof.challenge, proof.responses[:-1]))
    out["extra response"] = rep(pk, proof=KeyProof(proof.challenge, proof.responses + (mpz(0),)))
    out["index"] = rep(pk, index=pk.index + 1)
    out["swapped proofs"] = rep(pk, proof=dproof, data_proof=proof)
    out["swapped commitments"] = rep(pk, commitments=pk.data_commitments, data_commitments=pk.commitments)
    out["commitments reordered"] = rep(pk, commitments=tuple(reversed(pk.commitments)))
    return out


def test_every_tampering_is_rejected_naming_the_guardian(tamper_key):
    group, g_table, h_p, _, pk = tamper_key
    tamperings = _tamperings(group, pk)
    assert len(tamperings) > 20
    for what, bad in tamperings.items():
        with pytest.raises((ProofError, GroupMembershipError)) as exc:
            verify_guardian_public_key(group, g_table, h_p, bad, 3)
        assert "Bob" in str(exc.value), what
        assert f"guardian {bad.index}" in str(exc.value), what


def test_tampering_error_kinds(tamper_key):
    group, g_table, h_p, _, pk = tamper_key
    t = _tamperings(group, pk)
    for what in ("commitment 1", "data commitment 2", "kappa", "challenge +1", "response 3", "index",
                 "swapped proofs"):
        with pytest.raises(ProofError):
            verify_guardian_public_key(group, g_table, h_p, t[what], 3)
    for what in ("commitment outside group", "data commitment outside group", "kappa outside group",
                 "challenge = q", "response = q"):
        with pytest.raises(GroupMembershipError):
            verify_guardian_public_key(group, g_table, h_p, t[what], 3)
    # the vote proof is checked separately from the data proof
    with pytest.raises(ProofError, match="data key proof"):
        verify_guardian_public_key(group, g_table, h_p, t["data response 0"], 3)
    with pytest.raises(ProofError, match="vote key proof"):
        verify_guardian_public_key(group, g_table, h_p, t["response 0"], 3)


def test_wrong_k_is_rejected(tamper_key):
    group, g_table, h_p, _, pk = tamper_key
    for k in (1, 2, 4):
        with pytest.raises(ProofError, match="Bob"):
            verify_guardian_public_key(group, g_table, h_p, pk, k)


def test_other_guardians_proof_does_not_transfer(tamper_key):
    group, g_table, h_p, _, pk = tamper_key
    _, other = generate_guardian_key(group, g_table, h_p, 3, 3, name="Carol", rng=random.Random(43))
    mixed = dataclasses.replace(pk, proof=other.proof)
    with pytest.raises(ProofError, match="Bob"):
        verify_guardian_public_key(group, g_table, h_p, mixed, 3)


# --------------------------------------------------------------------------- polynomials and shares (eqs 7, 14, 28)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TOYS), st.integers(1, 8), st.integers(0, 2**40), st.integers(0, 2**32))
def test_evaluate_polynomial_and_verify_share(group, k, x, seed):
    rnd = random.Random(seed)
    q = int(group.q)
    coefficients = [mpz(rnd.randrange(q)) for _ in range(k)]
    direct = sum(int(a) * x**j for j, a in enumerate(coefficients)) % q
    share = evaluate_polynomial(group, coefficients, x)
    assert share == direct
    g_table = generator_table(group)
    commitments = [g_table.pow(a) for a in coefficients]
    assert commitment_at(group, commitments, x) == gmpy2.powmod(group.g, direct, group.p)
    assert verify_share(group, g_table, commitments, x, share)
    assert not verify_share(group, g_table, commitments, x, share + 1)
    assert not verify_share(group, g_table, commitments, x, (share + 1) % q)
    assert verify_share(group, g_table, commitments, x + 1, share) == \
        (evaluate_polynomial(group, coefficients, x + 1) == share)


def test_evaluate_polynomial_edge_cases():
    assert evaluate_polynomial(TOY_16, [], 5) == 0
    assert evaluate_polynomial(TOY_16, [7], 100) == 7
    assert evaluate_polynomial(TOY_16, [1, 2, 3], 0) == 1
    assert evaluate_polynomial(TOY_16, [1, 2, 3], 1) == 6
    q = TOY_16.q
    assert evaluate_polynomial(TOY_16, [q - 1, q - 1], 2) == (3 * (q - 1)) % q


def test_joint_key():
    rnd = random.Random(12)
    for group in (TOY_64, STANDARD):
        keys = [generator_table(group).pow(rnd.randrange(int(group.q))) for _ in range(5)]
        expected = mpz(1)
        for key in keys:
            expected = expected * key % group.p
        assert joint_key(group, keys) == expected
    assert joint_key(TOY_64, []) == 1


# --------------------------------------------------------------------------- share encryption (eqs 15-23)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(TOYS), st.integers(1, 50), st.integers(1, 50), st.integers(0, 2**32))
def test_encrypt_decrypt_share_round_trip_toy(group, sender, recipient, seed):
    rnd = random.Random(seed)
    g_table, h_p = setup(group)
    sk_l, pk_l = generate_guardian_key(group, g_table, h_p, recipient, 2, rng=rnd)
    share, data_share = mpz(rnd.randrange(int(group.q))), mpz(rnd.randrange(int(group.q)))
    enc = encrypt_share(group, g_table, h_p, sender, recipient, pk_l.communication_key, share, data_share, rnd)
    assert enc.sender == sender and enc.recipient == recipient
    assert len(enc.c1) == 2 * group.q_bytes
    assert gmpy2.powmod(enc.c0, group.q, group.p) == 1
    assert decrypt_share(group, g_table, h_p, sk_l, pk_l.communication_key, enc) == (share, data_share)


def test_encrypt_decrypt_share_standard():
    g_table, h_p = setup(STANDARD)
    rnd = random.Random(13)
    sk_l, pk_l = generate_guardian_key(STANDARD, g_table, h_p, 3, 2, rng=rnd)
    for share, data_share in ((mpz(0), STANDARD.q - 1), (mpz(rnd.randrange(int(STANDARD.q))), mpz(1))):
        enc = encrypt_share(STANDARD, g_table, h_p, 1, 3, pk_l.communication_key, share, data_share)
        assert len(enc.c1) == 64
        assert decrypt_share(STANDARD, g_table, h_p, sk_l, pk_l.communication_key, enc) == (share, data_share)


@pytest.fixture
def share_setup():
    group = TAMPER_GROUP
    g_table, h_p = setup(group)
    rnd = random.Random(14)
    keys = {i: generate_guardian_key(group, g_table, h_p, i, 2, rng=rnd) for i in (1, 2, 3)}
    share, data_share = mpz(rnd.randrange(int(group.q))), mpz(rnd.randrange(int(group.q)))
    enc = encrypt_share(group, g_table, h_p, 1, 2, keys[2][1].communication_key, share, data_share, rnd)
    assert decrypt_share(group, g_table, h_p, keys[2][0], keys[2][1].communication_key, enc) == (share, data_share)
    return group, g_table, h_p, keys, enc


def _names_sender_and_recipient(exc, sender=1, recipient=2):
    text = str(exc.value)
    assert f"guardian {sender}" in text and f"guardian {recipient}" in text, text


def test_decrypt_share_wrong_recipient(share_setup):
    group, g_table, h_p, keys, enc = share_setup
    sk3, pk3 = keys[3]
    with pytest.raises(ShareError) as exc:
        decrypt_share(group, g_table, h_p, sk3, pk3.communication_key, enc)
    _names_sender_and_recipient(exc)
    # readdressing the ciphertext to guardian 3 breaks the proof, which binds l (eq 22)
    readdressed = dataclasses.replace(enc, recipient=3)
    with pytest.raises(ShareError) as exc:
        decrypt_share(group, g_table, h_p, sk3, pk3.communication_key, readdressed)
    _names_sender_and_recipient(exc, 1, 3)
    # so does claiming another sender (eq 22 binds i)
    resent = dataclasses.replace(enc, sender=3)
    with pytest.raises(ShareError) as exc:
        decrypt_share(group, g_table, h_p, keys[2][0], keys[2][1].communication_key, resent)
    _names_sender_and_recipient(exc, 3, 2)


def test_decrypt_share_tampered_ciphertext(share_setup):
    group, g_table, h_p, keys, enc = share_setup
    sk2, pk2 = keys[2]
    q, p = group.q, group.p
    share_errors = {}
    for bit in range(8 * len(enc.c1)):
        c1 = bytearray(enc.c1)
        c1[bit // 8] ^= 1 << (bit % 8)
        share_errors[f"C1 bit {bit}"] = dataclasses.replace(enc, c1=bytes(c1))
    share_errors["challenge +1"] = dataclasses.replace(enc, challenge=(enc.challenge + 1) % q)
    share_errors["response +1"] = dataclasses.replace(enc, response=(enc.response + 1) % q)
    share_errors["C0 other member"] = dataclasses.replace(enc, c0=enc.c0 * group.g % p)
    share_errors["C1 short"] = dataclasses.replace(enc, c1=enc.c1[:-1])
    share_errors["C1 long"] = dataclasses.replace(enc, c1=enc.c1 + b"\x00")
    for what, bad in share_errors.items():
        with pytest.raises(ShareError) as exc:
            decrypt_share(group, g_table, h_p, sk2, pk2.communication_key, bad)
        _names_sender_and_recipient(exc)
    membership_errors = {
        "C0 = p-1": dataclasses.replace(enc, c0=p - 1),
        "C0 = 0": dataclasses.replace(enc, c0=mpz(0)),
        "C0 = p": dataclasses.replace(enc, c0=p),
        "C0 = -C0": dataclasses.replace(enc, c0=p - enc.c0),
        "challenge = q": dataclasses.replace(enc, challenge=q),
        "response = q": dataclasses.replace(enc, response=q + enc.response),
        "response negative": dataclasses.replace(enc, response=-1),
    }
    for what, bad in membership_errors.items():
        with pytest.raises(GroupMembershipError) as exc:
            decrypt_share(group, g_table, h_p, sk2, pk2.communication_key, bad)
        _names_sender_and_recipient(exc)


def test_decrypt_share_wrong_h_p(share_setup):
    group, g_table, _, keys, enc = share_setup
    with pytest.raises(ShareError):
        decrypt_share(group, g_table, parameter_base_hash(group, 5, 2), keys[2][0], keys[2][1].communication_key, enc)


# --------------------------------------------------------------------------- Lagrange coefficients (eq 85)


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(TOYS), st.integers(1, 6).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))),
       st.integers(0, 2**32))
def test_lagrange_reconstructs_constant_term_for_every_quorum(group, nk, seed):
    n, k = nk
    rnd = random.Random(seed)
    q = int(group.q)
    coefficients = [rnd.randrange(q) for _ in range(k)]
    values = {i: evaluate_polynomial(group, coefficients, i) for i in range(1, n + 1)}
    for size in range(k, n + 1):
        for subset in itertools.combinations(range(1, n + 1), size):
            present = list(subset)
            rnd.shuffle(present)
            weights = {i: lagrange_coefficient(group, i, present) for i in subset}
            assert all(0 <= w < q for w in weights.values())
            assert sum(weights[i] * values[i] for i in subset) % q == coefficients[0]
            if size == k:
                # eq 85 directly
                for i in subset:
                    expected = 1
                    for l in subset:
                        if l != i:
                            expected = expected * l * pow(l - i, -1, q) % q
                    assert weights[i] == expected


def test_lagrange_in_the_exponent():
    # M = prod M_i^w_i (eq 86) with M_i = A^P(i)
    group = TOY_128
    rnd = random.Random(15)
    q = int(group.q)
    coefficients = [rnd.randrange(q) for _ in range(3)]
    a = generator_table(group).pow(rnd.randrange(q))
    present = [1, 3, 5]
    m = mpz(1)
    for i in present:
        m_i = gmpy2.powmod(a, evaluate_polynomial(group, coefficients, i), group.p)
        m = m * gmpy2.powmod(m_i, lagrange_coefficient(group, i, present), group.p) % group.p
    assert m == gmpy2.powmod(a, coefficients[0], group.p)


def test_lagrange_coefficient_rejects_bad_sets():
    with pytest.raises(InputError):
        lagrange_coefficient(TOY_64, 4, [1, 2, 3])
    with pytest.raises(InputError):
        lagrange_coefficient(TOY_64, 1, [1, 2, 2])
    with pytest.raises(InputError):
        lagrange_coefficient(TOY_64, 1, [1, 1])
    with pytest.raises(InputError):
        lagrange_coefficient(TOY_64, 1, [])
    assert lagrange_coefficient(TOY_64, 1, [1]) == 1
    # w_1 for U = {1, 2} is 2/(2-1) = 2; w_2 = 1/(1-2) = -1
    assert lagrange_coefficient(TOY_64, 1, [1, 2]) == 2
    assert lagrange_coefficient(TOY_64, 2, [1, 2]) == TOY_64.q - 1


# --------------------------------------------------------------------------- local ceremony


@pytest.fixture(scope="module")
def manifest():
    return parse_manifest(DEMO_MANIFEST.read_bytes())


@pytest.fixture(scope="module", params=[(3, 2), (4, 3), (1, 1), (5, 5)], ids=lambda nk: f"n{nk[0]}k{nk[1]}")
def ceremony(request, manifest):
    n, k = request.param
    params = ElectionParameters(TOY_64, n, k, manifest)
    return params, run_local_ceremony(params, rng=random.Random(n * 100 + k))


def test_ceremony_joint_keys(ceremony):
    params, result = ceremony
    group = params.group
    assert [pk.index for pk in result.public_keys] == list(range(1, params.n + 1))
    k_expected, k_hat_expected = mpz(1), mpz(1)
    for pk in result.public_keys:
        k_expected = k_expected * pk.key % group.p
        k_hat_expected = k_hat_expected * pk.data_key % group.p
    assert result.context.joint_key == k_expected
    assert result.context.joint_data_key == k_hat_expected
    assert result.context.h_e == extended_base_hash(group, params.h_b, k_expected, k_hat_expected)
    for pk in result.public_keys:
        verify_guardian_public_key(group, params.g_table, params.h_p, pk, params.k)


def test_ceremony_shares_are_points_of_the_joint_polynomial(ceremony):
    params, result = ceremony
    group, g_table = params.group, params.g_table
    vote_publics, data_publics = result.vote_publics(), result.data_publics()
    q = int(group.q)
    for i, keys in result.guardian_keys.items():
        assert keys.index == i
        assert set(keys.vote.received) == set(range(1, params.n + 1))
        z_i, z_hat_i = keys.vote.share % q, keys.data.share % q
        # g^z_i = g^P(i), from the commitments alone (eq 94)
        assert g_table.pow(z_i) == vote_publics.public(Part(i, None, mpz(1)), compensated=False)
        assert g_table.pow(z_hat_i) == data_publics.public(Part(i, None, mpz(1)), compensated=False)
        # each P_j(i) matches guardian j's commitments (eqs 28, 29)
        for j, pk in enumerate(result.public_keys, start=1):
            assert verify_share(group, g_table, pk.commitments, i, keys.vote.received[j])
            assert verify_share(group, g_table, pk.data_commitments, i, keys.data.received[j])
        # own secret s_i = a_i,0 with K_i = g^s_i
        assert g_table.pow(keys.vote.own_secret) == result.public_keys[i - 1].key
    # any k of the z_i reconstruct s = sum s_i, the secret of K (Note 3.6)
    s = sum(int(keys.vote.own_secret) for keys in result.guardian_keys.values()) % q
    assert g_table.pow(s) == result.context.joint_key
    for subset in itertools.combinations(sorted(result.guardian_keys), params.k):
        total = sum(lagrange_coefficient(group, i, subset) * result.guardian_keys[i].vote.share for i in subset) % q
        assert total == s


def test_ceremony_record_hash(ceremony):
    params, result = ceremony
    group = params.group
    pks = result.public_keys

    def record(commitments, data_commitments, kappas, k_joint=None, k_hat=None):
        return guardian_record_hash(
            group, params.h_b,
            result.context.joint_key if k_joint is None else k_joint,
            result.context.joint_data_key if k_hat is None else k_hat,
            commitments, data_commitments, kappas)

    commitments = [list(pk.commitments) for pk in pks]
    data_commitments = [list(pk.data_commitments) for pk in pks]
    kappas = [pk.communication_key for pk in pks]
    assert record(commitments, data_commitments, kappas) == result.record_hash
    seen = {result.record_hash}
    for i in range(len(pks)):
        for j in range(params.k):
            for which in (commitments, data_commitments):
                changed = [list(row) for row in which]
                changed[i][j] = changed[i][j] * group.g % group.p
                h = (record(changed, data_commitments, kappas) if which is commitments
                     else record(commitments, changed, kappas))
                assert h not in seen
                seen.add(h)
        changed_kappas = list(kappas)
        changed_kappas[i] = changed_kappas[i] * group.g % group.p
        h = record(commitments, data_commitments, changed_kappas)
        assert h not in seen
        seen.add(h)
    assert record(commitments, data_commitments, kappas, k_joint=result.context.joint_key * group.g % group.p) not in seen
    # guardians listed in another order give another H_G
    if len(pks) > 1:
        assert record(commitments[::-1], data_commitments[::-1], kappas[::-1]) != result.record_hash


def test_ceremony_record_hash_depends_on_manifest(manifest):
    # the same keys under another manifest (other H_B) hash differently
    params = ElectionParameters(TOY_64, 2, 2, manifest)
    result = run_local_ceremony(params, rng=random.Random(7))
    pks = result.public_keys
    other_h_b = bytes(32)
    assert guardian_record_hash(
        TOY_64, other_h_b, result.context.joint_key, result.context.joint_data_key,
        [pk.commitments for pk in pks], [pk.data_commitments for pk in pks],
        [pk.communication_key for pk in pks]) != result.record_hash


def test_ceremony_standard_small(manifest):
    params = ElectionParameters(STANDARD, 2, 2, manifest)
    result = run_local_ceremony(params, rng=random.Random(8))
    g_table = params.g_table
    q = int(STANDARD.q)
    vote_publics = result.vote_publics()
    for i, keys in result.guardian_keys.items():
        assert g_table.pow(keys.vote.share % q) == vote_publics.public(Part(i, None, mpz(1)), compensated=False)
    assert result.context.joint_key == result.public_keys[0].key * result.public_keys[1].key % STANDARD.p
