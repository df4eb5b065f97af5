"""Known answers from electionguard-kotlin-multiplatform (tests/vectors/electionguard-kotlin-multiplatform/).

The vectors were computed for spec 1.9 / 2.0. Each is recomputed here with this
project's own functions; where a hash differs from 2.1 only in its header (the
version string, the key, the domain separator and what follows it), the test
hands the older header in and the maths under it is this project's. Each test
has a negative control: one altered value is refused or gives a different answer.

In these files `"missing": true` marks a guardian that is present (see the README).
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from gmpy2 import mpz

from node.crypto.ballot import PlaintextBallot
from node.crypto.decryption import (
    DecryptionSession, PublicShares, TallyStatement, ThresholdKey, plan_parts, t_power_from_m, tally_from_power,
    verify_tally_decryption,
)
from node.crypto.election import generator_table
from node.crypto.elgamal import Ciphertext, aggregate, encrypt, power_of_key_from_nonce
from node.crypto.errors import DecryptionError, ManifestError, ProofError
from node.crypto.fixed_base import FixedBase
from node.crypto.hashing import H, H_q, election_base_hash, elements, kdf_counter_mode, xor_bytes
from node.crypto.keys import evaluate_polynomial, joint_key, verify_share
from node.crypto.manifest import canonical_json, parse_manifest
from node.crypto.params import STANDARD, encode_p, encode_q
from node.crypto.range_proof import RangeProof, prove_range, selection_prefix, verify_range

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "electionguard-kotlin-multiplatform"
G = STANDARD


def vector(name: str) -> dict:
    return json.loads((VECTORS / "testvectors" / f"{name}.json").read_bytes())


def hexint(text: str) -> mpz:
    return mpz(text, 16)


def ciphertext(obj: dict) -> Ciphertext:
    return Ciphertext(hexint(obj["pad"]), hexint(obj["data"]))


@pytest.fixture(scope="module")
def g_table() -> FixedBase:
    return generator_table(G)


def parameter_base_hash_1_9(version: bytes) -> bytes:
    """H_P = H(ver; 0x00, p, q, g): the header of 1.9 / 2.0; 2.1 (eq 4) appends n and k."""
    return H(version + bytes(32 - len(version)), b"\x00" + encode_p(G, G.p) + encode_q(G, G.q) + encode_p(G, G.g))


# --------------------------------------------------------------------------- parameters


def test_parameter_base_hash():
    v = vector("ParametersTestVector")["parameter_base_hash"]
    primes = v["primes"]
    assert (hexint(primes["large_prime"]), hexint(primes["small_prime"]), hexint(primes["generator"])) == \
        (G.p, G.q, G.g)
    assert v["protocolVersion"] == "v2.0"
    assert parameter_base_hash_1_9(b"v2.0").hex().upper() == v["expected"]
    # negative control: another version string is another H_P
    assert parameter_base_hash_1_9(b"v2.0.0").hex().upper() != v["expected"]


# --------------------------------------------------------------------------- ballot encryption


class ReplayNonces:
    """The rng of prove_range, handing out a proof's published nonces in the order it draws them.

    prove_range draws u_0..u_R first, then the simulated challenges c_j for j != l in
    increasing j (eqs 57, 58); the vector publishes u_j and c_j for every j (its c_l is unused).
    """

    def __init__(self, us: list[mpz], cs: list[mpz], value: int) -> None:
        self.values = list(us) + [c for j, c in enumerate(cs) if j != value]

    def randrange(self, bound: int) -> int:
        assert bound == G.q, "prove_range draws its nonces from Z_q"
        assert self.values, "prove_range drew more nonces than the vector publishes"
        return int(self.values.pop(0))


def range_header_1_9(joint: int) -> bytes:
    """B1 of the 1.9 range proof: 0x21 || b(K, 512); 2.1 has 0x24 || ind_c [|| ind_o] (eqs 59, 62)."""
    return b"\x21" + encode_p(G, joint)


def replay_range_proof(g_table, k_table, h_e, ct, nonce, value, published) -> RangeProof:
    us = [hexint(x["u_nonce"]) for x in published]
    cs = [hexint(x["c_nonce"]) for x in published]
    rng = ReplayNonces(us, cs, value)
    proof = prove_range(G, g_table, k_table, h_e, range_header_1_9(k_table.base), ct, nonce, value,
                        len(published) - 1, rng)
    assert not rng.values, "prove_range left published nonces unused"
    return proof


def published_proof(published) -> RangeProof:
    return RangeProof(tuple(hexint(x["expected_challenge"]) for x in published),
                      tuple(hexint(x["expected_response"]) for x in published))


@pytest.fixture(scope="module")
def encryption():
    v = vector("BallotEncryptionTestVector")
    k = hexint(v["joint_public_key"])
    return v, FixedBase(G, k), bytes.fromhex(v["extended_base_hash"])


def _selections(v):
    for ballot, expected in zip(v["ballots"], v["expected_encrypted_ballots"], strict=True):
        assert ballot["ballot_id"] == expected["ballotId"]
        for contest, econtest in zip(ballot["contests"], expected["contests"], strict=True):
            yield contest, econtest


def test_elgamal_encryption_with_the_given_nonce(g_table, encryption):
    """(alpha, beta) = (g^xi, K^(sigma + xi)) (eq 31) and K^sigma = beta K^-xi (eq 109)."""
    v, k_table, _ = encryption
    count = 0
    for contest, econtest in _selections(v):
        for sel, esel in zip(contest["selections"], econtest["selections"], strict=True):
            xi = hexint(esel["expected_selection_nonce"])
            ct = encrypt(g_table, k_table, sel["vote"], xi)
            assert ct == ciphertext(esel["expected_encrypted_vote"]), sel["selection_id"]
            assert power_of_key_from_nonce(G, k_table, ct, xi) == k_table.pow(sel["vote"])
            # negative controls: another vote or another nonce is another ciphertext
            assert encrypt(g_table, k_table, sel["vote"] + 1, xi) != ct
            assert encrypt(g_table, k_table, sel["vote"], xi + 1) != ct
            count += 1
    assert count == 3


def test_selection_range_proofs_replay(g_table, encryption):
    """Replaying each selection's nonces reproduces its challenges and responses (eqs 57-61, key H_E, 1.9 B1)."""
    v, k_table, h_e = encryption
    header = range_header_1_9(k_table.base)
    for contest, econtest in _selections(v):
        for sel, esel in zip(contest["selections"], econtest["selections"], strict=True):
            ct = ciphertext(esel["expected_encrypted_vote"])
            xi = hexint(esel["expected_selection_nonce"])
            published = esel["expected_proof"]["proofs"]
            proof = replay_range_proof(g_table, k_table, h_e, ct, xi, sel["vote"], published)
            assert proof == published_proof(published), sel["selection_id"]
            verify_range(G, g_table, k_table, h_e, header, ct, proof, len(published) - 1, sel["selection_id"])
            # negative controls: one response altered, or the 2.1 header, and Verification 6 refuses
            bad = RangeProof(proof.challenges, (proof.responses[0] + 1,) + proof.responses[1:])
            with pytest.raises(ProofError):
                verify_range(G, g_table, k_table, h_e, header, ct, bad, len(published) - 1, "altered")
            with pytest.raises(ProofError):
                verify_range(G, g_table, k_table, h_e, selection_prefix(1, sel["sequence_order"] + 1), ct, proof,
                             len(published) - 1, "2.1 header")


def test_contest_range_proof_replays(g_table, encryption):
    """The contest limit proof over the product of the selections, nonce the sum of theirs (spec 3.3.8)."""
    v, k_table, h_e = encryption
    for contest, econtest in _selections(v):
        cts = [ciphertext(s["expected_encrypted_vote"]) for s in econtest["selections"]]
        nonce = sum(hexint(s["expected_selection_nonce"]) for s in econtest["selections"]) % G.q
        total = sum(s["vote"] for s in contest["selections"])
        published = econtest["expected_proof"]["proofs"]
        assert len(published) - 1 == contest["votes_allowed"]
        ct = aggregate(G, cts)
        proof = replay_range_proof(g_table, k_table, h_e, ct, nonce, total, published)
        assert proof == published_proof(published)
        verify_range(G, g_table, k_table, h_e, range_header_1_9(k_table.base), ct, proof, len(published) - 1,
                     "contest")
        # negative control: one u_j altered gives other challenges
        altered = [dict(published[0], u_nonce=f"{hexint(published[0]['u_nonce']) + 1:064X}")] + published[1:]
        assert replay_range_proof(g_table, k_table, h_e, ct, nonce, total, altered) != proof


# --------------------------------------------------------------------------- aggregation


def test_ballot_aggregation():
    """(A, B) = (prod alpha_j, prod beta_j) over the cast ballots (eq 79)."""
    v = vector("BallotAggregationTestVector")
    expected = v["expected_encrypted_tally"]
    assert expected["cast_ballot_ids"] == [b["ballotId"] for b in v["encrypted_ballots"]]
    columns: dict[tuple[str, str], list[Ciphertext]] = {}
    for ballot in v["encrypted_ballots"]:
        for contest in ballot["contests"]:
            for sel in contest["selections"]:
                columns.setdefault((contest["contestId"], sel["selectionId"]), []).append(
                    ciphertext(sel["encrypted_vote"]))
    checked = 0
    for contest in expected["contests"]:
        for sel in contest["selections"]:
            cts = columns[(contest["contest_id"], sel["selection_id"])]
            assert len(cts) == 11
            assert aggregate(G, cts) == ciphertext(sel["encrypted_vote"])
            # negative controls: one ballot left out, or one alpha altered, is another aggregate
            assert aggregate(G, cts[:-1]) != ciphertext(sel["encrypted_vote"])
            assert aggregate(G, [Ciphertext(cts[0].alpha + 1, cts[0].beta)] + cts[1:]) != \
                ciphertext(sel["encrypted_vote"])
            checked += 1
    assert checked == 3


# --------------------------------------------------------------------------- tally and ballot decryption


@dataclass(frozen=True)
class Trustees:
    n: int
    k: int
    coefficients: dict[int, list[mpz]]
    present: list[int]
    keys: dict[int, ThresholdKey]


def trustees(v: dict, k: int) -> Trustees:
    """The guardians of a decryption vector, their secrets as ThresholdKeys, and who is present."""
    coefficients = {t["xCoordinate"]: [hexint(a) for a in t["polynomial_coefficients"]] for t in v["trustees"]}
    assert all(len(c) == k for c in coefficients.values())
    keys = {i: ThresholdKey(i, c[0], {j: evaluate_polynomial(G, coefficients[j], i) for j in coefficients})
            for i, c in coefficients.items()}
    present = sorted(t["xCoordinate"] for t in v["trustees"] if t["missing"])   # "missing": true = present
    return Trustees(len(coefficients), k, coefficients, present, keys)


def check_key_shares(g_table, v: dict, ts: Trustees) -> FixedBase:
    """z_i = sum_j P_j(i) (eq 24) against `keyShare`, and K = prod g^a_i,0 (eq 25); returns K's table."""
    for t in v["trustees"]:
        assert ts.keys[t["xCoordinate"]].share % G.q == hexint(t["keyShare"]), t["id"]
    k = hexint(v["joint_public_key"])
    assert joint_key(G, [g_table.pow(c[0]) for c in ts.coefficients.values()]) == k
    return FixedBase(G, k)


def decrypt_power(g_table, k_table, ts: Trustees, statement, compensated: bool, keys=None) -> mpz:
    """T = B M^-1 (eq 82) with M from the present guardians' parts, and this project's proof verified."""
    publics = PublicShares(G, {i: [g_table.pow(a) for a in c] for i, c in ts.coefficients.items()})
    parts = plan_parts(G, ts.n, ts.present, compensated)
    session = DecryptionSession(G, g_table, k_table, publics, statement, parts, compensated)
    joint, _ = session.run({i: (keys or ts.keys)[i] for i in ts.present})
    return t_power_from_m(G, statement.b, joint.m), joint


@pytest.mark.parametrize("name, n, k, present", [
    ("TallyDecryptionTestVector", 3, 3, [1, 2, 3]),
    ("TallyPartialDecryptionTestVector", 4, 3, [2, 3, 4]),
])
@pytest.mark.parametrize("compensated", [False, True], ids=["standard", "compensated"])
def test_tally_decryption(g_table, name, n, k, present, compensated):
    v = vector(name)
    ts = trustees(v, k)
    assert (ts.n, ts.present) == (n, present)
    k_table = check_key_shares(g_table, v, ts)
    h_e = bytes.fromhex(v["extended_base_hash"])
    bound = len(v["encrypted_tally"]["cast_ballot_ids"])
    checked = 0
    for contest, econtest in zip(v["encrypted_tally"]["contests"], v["expected_decrypted_tally"]["contests"],
                                 strict=True):
        for j, (sel, esel) in enumerate(zip(contest["selections"], econtest["selections"], strict=True), start=1):
            ct = ciphertext(sel["encrypted_vote"])
            statement = TallyStatement(h_e, contest["sequence_order"] + 1, j, ct.alpha, ct.beta)
            t_power, joint = decrypt_power(g_table, k_table, ts, statement, compensated)
            t = tally_from_power(G, k_table.base, t_power, bound)
            assert t == esel["expected_decrypted_vote"], sel["selection_id"]
            verify_tally_decryption(G, g_table, k_table, statement, t, t_power, joint.challenge, joint.response,
                                    sel["selection_id"])
            checked += 1
    assert checked == 3
    # negative control: a present guardian with one secret off by one (its share z_i in the standard
    # form, its s_i in the compensated form) is named and refused
    culprit = present[-1]
    wrong = dict(ts.keys)
    received = dict(wrong[culprit].received)
    received[culprit] = (received[culprit] + 1) % G.q
    wrong[culprit] = ThresholdKey(culprit, (wrong[culprit].own_secret + 1) % G.q, received)
    ct = ciphertext(v["encrypted_tally"]["contests"][0]["selections"][0]["encrypted_vote"])
    with pytest.raises(DecryptionError, match=f"guardian {culprit}"):
        decrypt_power(g_table, k_table, ts, TallyStatement(h_e, 1, 1, ct.alpha, ct.beta), compensated, keys=wrong)


def test_tally_key_share_negative_control(g_table):
    """One coefficient altered is another key share and another joint key."""
    v = vector("TallyPartialDecryptionTestVector")
    ts = trustees(v, 3)
    ts.coefficients[1][0] += 1
    altered = {i: ThresholdKey(i, c[0], {j: evaluate_polynomial(G, ts.coefficients[j], i) for j in ts.coefficients})
               for i, c in ts.coefficients.items()}
    assert altered[2].share % G.q != hexint(v["trustees"][1]["keyShare"])
    assert joint_key(G, [g_table.pow(c[0]) for c in ts.coefficients.values()]) != hexint(v["joint_public_key"])


@dataclass(frozen=True)
class TallyStatement19(TallyStatement):
    """The decryption statement with the 1.9 challenge header, for a proof computed to 1.9."""

    joint: mpz = mpz(0)

    def challenge(self, group, a, b, m) -> mpz:
        # c = H_q(H_E; 0x30, K, A, B, a, b, M) (1.9); 2.1 eq 90 has 0x31, ind_c, ind_o in place of 0x30, K
        return H_q(group, self.h_e, b"\x30" + elements(group, (self.joint, self.a, self.b, a, b, m)))


@pytest.mark.parametrize("compensated", [False, True], ids=["standard", "compensated"])
def test_ballot_decryption(g_table, compensated):
    """4 of 4 guardians: T = K^t from both forms, and the library's proofs pass Verification 10."""
    v = vector("DecryptBallotTestVector")
    ts = trustees(v, 4)
    ts = Trustees(ts.n, ts.k, ts.coefficients, [1, 2, 3, 4], ts.keys)   # quorum 4 of 4: all are present
    k_table = check_key_shares(g_table, v, ts)
    h_e = bytes.fromhex(v["extended_base_hash"])
    checked = 0
    for contest, econtest in zip(v["encrypted_ballot"]["contests"], v["expected_decrypted_ballot"]["contests"],
                                 strict=True):
        for j, (sel, esel) in enumerate(zip(contest["selections"], econtest["selections"], strict=True), start=1):
            ct = ciphertext(sel["encrypted_vote"])
            assert ciphertext(esel["encrypted_vote"]) == ct
            statement = TallyStatement19(h_e, contest["sequence_order"] + 1, j, ct.alpha, ct.beta, k_table.base)
            t_power, _ = decrypt_power(g_table, k_table, ts, statement, compensated)
            assert t_power == hexint(esel["b_over_m"]), sel["selection_id"]
            assert tally_from_power(G, k_table.base, t_power, 1) == esel["tally"]
            c, r = hexint(esel["proof"]["challenge"]), hexint(esel["proof"]["response"])
            verify_tally_decryption(G, g_table, k_table, statement, esel["tally"], t_power, c, r, sel["selection_id"])
            # negative controls: an altered response, another tally, or the 2.1 header is refused
            with pytest.raises(ProofError, match="10.B"):
                verify_tally_decryption(G, g_table, k_table, statement, esel["tally"], t_power, c, r + 1, "altered")
            with pytest.raises(ProofError, match="10.C"):
                verify_tally_decryption(G, g_table, k_table, statement, esel["tally"] + 1, t_power, c, r, "altered")
            with pytest.raises(ProofError, match="10.B"):
                verify_tally_decryption(G, g_table, k_table, TallyStatement(h_e, 1, j, ct.alpha, ct.beta),
                                        esel["tally"], t_power, c, r, "2.1 header")
            checked += 1
    assert checked == 3


# --------------------------------------------------------------------------- share encryption


SHARE_LABEL = b"share_enc_keys"
SHARE_CONTEXT = b"share_encrypt"


def two(x: int) -> bytes:
    """b(x, 2): the width of a guardian index in the 1.9 share-encryption hashes (2.1: 4 bytes)."""
    return x.to_bytes(2, "big")


def encrypt_share_1_9(g_table, h_p: bytes, i: int, l: int, recipient_key: int, share: int, nonce: int,
                      index=two) -> tuple[mpz, bytes, bytes]:
    """(C0, C1, C2) of 1.9: the 2.1 construction of eqs 15-21 under the 1.9 header, with a MAC for C2."""
    alpha_beta = encrypt(g_table, FixedBase(G, recipient_key), 0, nonce)          # (g^xi, K_l^xi), eq 15
    # k_i,l = H(H_P; 0x11, i, l, K_l, alpha, beta) (eq 16 with 2-byte indices and K_l in place of kappa_l)
    key = H(h_p, b"\x11" + index(i) + index(l) + elements(G, (recipient_key, alpha_beta.alpha, alpha_beta.beta)))
    context = SHARE_CONTEXT + index(i) + index(l)
    k0 = kdf_counter_mode(key, b"\x01", SHARE_LABEL, context, b"\x02\x00")     # eq 17
    k1 = kdf_counter_mode(key, b"\x02", SHARE_LABEL, context, b"\x02\x00")     # eq 18
    c1 = xor_bytes(encode_q(G, share), k1)                                     # eq 21, one share of 32 bytes
    c2 = H(k0, encode_p(G, alpha_beta.alpha) + c1)                             # 1.9: HMAC(k0, C0 || C1)
    return alpha_beta.alpha, c1, c2


def test_share_encryption(g_table):
    v = vector("ShareEncryptionTestVector")
    h_p = parameter_base_hash_1_9(b"v2.0")
    assert h_p.hex().upper() == vector("ParametersTestVector")["parameter_base_hash"]["expected"]
    guardians = {g["name"]: (g["coordinate"], [hexint(a) for a in g["polynomial_coefficients"]])
                 for g in v["guardians"]}
    commitments = {name: [g_table.pow(a) for a in coeffs] for name, (_, coeffs) in guardians.items()}
    nonces = {s["name"]: s["share_nonces"] for s in v["expected_guardian_shares"]}
    checked = 0
    for mine in v["expected_guardian_shares"]:
        recipient = mine["name"]
        l, _ = guardians[recipient]
        for expected in mine["expected_shares"]:
            assert expected["secretShareFor"] == recipient
            sender = expected["polynomialOwner"]
            i, coefficients = guardians[sender]
            assert expected["ownerXcoord"] == i
            share = evaluate_polynomial(G, coefficients, l)                        # P_i(l) (eq 7)
            assert share == hexint(expected["yCoordinate"]), (sender, recipient)
            assert verify_share(G, g_table, commitments[sender], l, share)        # eq 28
            nonce = hexint(nonces[sender][recipient])
            c0, c1, c2 = encrypt_share_1_9(g_table, h_p, i, l, commitments[recipient][0], share, nonce)
            enc = expected["encryptedCoordinate"]
            assert enc["numBytes"] == 32
            assert (c0, c1.hex().upper(), c2.hex().upper()) == (hexint(enc["c0"]), enc["c1"].upper(), enc["c2"])
            # negative controls: another nonce, another share, or 2.1's 4-byte indices give another C1
            assert encrypt_share_1_9(g_table, h_p, i, l, commitments[recipient][0], share, nonce + 1)[1] != c1
            assert encrypt_share_1_9(g_table, h_p, i, l, commitments[recipient][0], share + 1, nonce)[1] != c1
            assert encrypt_share_1_9(g_table, h_p, i, l, commitments[recipient][0], share, nonce,
                                     index=lambda x: x.to_bytes(4, "big"))[1] != c1
            assert not verify_share(G, g_table, commitments[sender], l, (share + 1) % G.q)
            checked += 1
        z = sum(evaluate_polynomial(G, coeffs, l) for _, coeffs in guardians.values()) % G.q   # eq 24
        assert z == hexint(mine["expected_my_share_of_secret"])
        assert (z + 1) % G.q != hexint(mine["expected_my_share_of_secret"])
    assert checked == 6


# --------------------------------------------------------------------------- the manifest kept for eg-rust records


MANIFEST_DIR = VECTORS / "egrust-manifest"


def unwrap(text: str) -> str:
    """The Kotlin library writes a hash as H(hex)."""
    assert text.startswith("H(") and text.endswith(")")
    return text[2:-1]


def test_manifest_is_refused_strictly():
    with pytest.raises(ManifestError, match="line break"):
        parse_manifest((MANIFEST_DIR / "election_manifest_canonical.bin").read_bytes())


def test_manifest_parses_leniently_and_hashes_as_written():
    canonical = (MANIFEST_DIR / "election_manifest_canonical.bin").read_bytes()
    manifest = parse_manifest(canonical, strict=False)
    assert manifest.canonical_bytes() == canonical
    pretty = parse_manifest((MANIFEST_DIR / "election_manifest_pretty.json").read_bytes(), strict=False)
    assert pretty.canonical_bytes() == canonical and pretty == manifest
    assert "contests[0].selection_limit is 1, the default, which canonical form omits" in manifest.deviations
    assert "contests[0].options[0].label contains a line break (U+000A)" in manifest.deviations
    assert len(manifest.contests) == 11
    # H_B of eq 5 (manifest length-prefixed) under the 2.0 H_P is the Kotlin library's h_m
    hashes = json.loads((MANIFEST_DIR / "hashes.json").read_bytes())
    h_p = parameter_base_hash_1_9(b"v2.0.0")
    assert h_p.hex().upper() == unwrap(hashes["h_p"])
    assert election_base_hash(h_p, manifest.canonical_bytes()).hex().upper() == unwrap(hashes["h_m"])
    # negative control: this project's canonical form (the default limits omitted) hashes differently
    ours = canonical_json(manifest.to_json_dict())
    assert ours != canonical
    assert election_base_hash(h_p, ours).hex().upper() != unwrap(hashes["h_m"])


def test_guardian_verify_warns_on_the_kotlin_manifest(tmp_path):
    """A record with the manifest the Kotlin library keeps for eg-rust records verifies, with warnings.

    `guardian verify` reads the record's manifest leniently: every step passes, H_B is over the
    manifest's bytes as written, and each of Manifest.deviations is in the report's "warnings".
    """
    from node.cli.main import main
    from node.record import codec
    from node.record.encrypt import encrypt_records
    from node.record.ballot_box import BallotBox, Submission
    from node.record.local import create_local_election, decrypt_local

    canonical = (MANIFEST_DIR / "election_manifest_canonical.bin").read_bytes()
    manifest = parse_manifest(canonical, strict=False)
    root, secrets_dir = tmp_path / "record", tmp_path / "secrets"
    ctx = create_local_election(root, secrets_dir, manifest, 3, 2, "known answers", "2025-01-01").context
    style = manifest.ballot_style(1)
    contest = manifest.contest(style.contests[0])
    plain = PlaintextBallot("b-1", style.label, {contest.label: {contest.option(2).label: 1}})
    subs = []
    for _, rec in encrypt_records(ctx, [plain], "booth-1", None, workers=1):
        assert not isinstance(rec, str), rec
        subs.append(Submission(rec.ballot_id, codec.canonical_bytes(codec.ballot_to_json(G, rec)), codec.CAST))
    with BallotBox.open(root) as box:
        outcomes = box.submit(subs, workers=1)
        assert all(o.accepted for o in outcomes), [o.reason for o in outcomes]
        box.tally()
    decrypt_local(root, secrets_dir, missing=[], compensated=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["verify", str(root), "--json", "--workers", "1"])
    report = json.loads(out.getvalue())
    assert report["ok"] is True, [(s["step"], s["failures"]) for s in report["steps"] if s["result"] == "FAIL"]
    assert (root / "election_manifest.json").read_bytes() == canonical
    for deviation in manifest.deviations:
        assert any(deviation in w for w in report["warnings"]), deviation
