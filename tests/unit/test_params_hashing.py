"""Tests for node.crypto.params, encoding and hashing against spec 3.1.1, 3.1.2 and 5.

The hash-layout tests wrap H / H_q where the calling module looks them up, capture
the (B0, B1) pair handed to HMAC, and compare it with the tables of spec 5.5
(standard parameters, l_p = 512, l_q = 32).
"""

from __future__ import annotations

import hashlib
import hmac
import random
from decimal import Decimal, getcontext

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

import node.crypto.hashing as hashing_mod
import node.crypto.keys as keys_mod
from node.crypto.encoding import b, from_hex, length_prefixed, small, to_hex
from node.crypto.errors import EncodingError, InputError, ParameterError
from node.crypto.fixed_base import FixedBase
from node.crypto.hashing import (
    VERSION,
    H,
    H_q,
    election_base_hash,
    extended_base_hash,
    guardian_record_hash,
    kdf_counter_mode,
    parameter_base_hash,
)
from node.crypto.keys import decrypt_share, encrypt_share, generate_guardian_key
from node.crypto.params import STANDARD, STANDARD_DELTA, TOY_16, TOY_32, TOY_64, TOY_128, Group, validate_group

TOYS = (TOY_16, TOY_32, TOY_64, TOY_128)

# r = (p - 1)/q exactly as printed in spec 3.1.1 (page 15), one printed line per string.
SPEC_R_HEX = (
    "0100000000000000000000000000000000000000000000000000000000000000BC"
    "B17217F7D1CF79ABC9E3B39803F2F6AF40F343267298B62D8A0D175B8BAB857A"
    "E8F428165418806C62B0EA36355A3A73E0C741985BF6A0E3130179BF2F0B43E3"
    "3AD862923861B8C9F768C4169519600BAD06093F964B27E02D86831231A9160D"
    "E48F4DA53D8AB5E69E386B694BEC1AE722D47579249D5424767C5C33B9151E07"
    "C5C11D106AC446D330B47DB59D352E47A53157DE04461900F6FE360DB897DF53"
    "16D87C94AE71DAD0BE84B647C4BCF818C23A2D4EBB53C702A5C8062D19F5E9B5"
    "033A94F7FF732F54129712869D97B8C96C412921A9D8679770F499A041C297CF"
    "F79D4C9149EB6CAF67B9EA3DC563D965F3AAD1377FF22DE9C3E62068DD0ED615"
    "1C37B4F74634C2BD09DA912FD599F4333A8D2CC005627DCA37BAD43E64A39631"
    "19C0BFE34810A21EE7CFC421D53398CBC7A95B3BF585E5A04B790E2FE1FE9BC2"
    "64FDA8109F6454A082F5EFB2F37EA237AA29DF320D6EA860C41A9054CCD24876"
    "C6253F667BFB0139B5531FF30189961202FD2B0D55A75272C7FD73343F7899BC"
    "A0B36A4C470A64A009244C84E77CEBC92417D5BB13BF18167D8033EB6C4DD787"
    "9FD4A7F529FD4A7F529FD4A7F529FD4A7F529FD4A7F529FD4A7F529FD4A7F52A"
)
SPEC_R_FIRST_LINE = "01" + "00000000" * 7 + "000000BC"
SPEC_R_LAST_LINE = "9FD4A7F5 29FD4A7F 529FD4A7 F529FD4A 7F529FD4 A7F529FD 4A7F529F D4A7F52A".replace(" ", "")
# first and last printed lines of g (spec 3.1.1)
SPEC_G_FIRST_LINE = "36036FED214F3B50DC566D3A312FE4131FEE1C2BCE6D02EA39B477AC05F7F885"
SPEC_G_LAST_LINE = "E7EBA151BA486094D68722B054633FEC51CA3F29B31E77E317B178B6B9D8AE0F"
# the second printed line of p: the first 256 bits of ln 2
SPEC_P_SECOND_LINE = "B17217F7D1CF79ABC9E3B39803F2F6AF40F343267298B62D8A0D175B8BAAFA2B"


def _hex(x: int, nbytes: int) -> str:
    return int(x).to_bytes(nbytes, "big").hex().upper()


# --------------------------------------------------------------------------- parameters (3.1.1)


def test_standard_q_is_2_256_minus_189():
    assert STANDARD.q == 2**256 - 189
    assert _hex(STANDARD.q, 32) == "F" * 62 + "43"


def test_standard_p_hex_layout():
    h = _hex(STANDARD.p, 512)
    assert len(h) == 1024
    assert h.startswith("F" * 64)
    assert h.endswith("F" * 64)
    assert h[64] != "F" and h[-65] != "F"
    assert h[64:128] == SPEC_P_SECOND_LINE
    assert int(STANDARD.p).bit_length() == 4096
    assert STANDARD.p_bytes == 512 and STANDARD.q_bytes == 32


def test_standard_p_follows_from_ln2_and_delta_independently():
    # floor(2^3584 ln 2) with the decimal module (independent of the gmpy2/mpfr path in params)
    getcontext().prec = 1200
    ln2 = Decimal(2).ln()
    middle = int((ln2 * (Decimal(2) ** 3584)).to_integral_value(rounding="ROUND_FLOOR"))
    expected = 2**4096 - 2**3840 + 2**256 * (middle + STANDARD_DELTA) + (2**256 - 1)
    assert STANDARD.p == expected


def test_standard_r_matches_spec():
    assert STANDARD.r == (STANDARD.p - 1) // STANDARD.q
    assert STANDARD.r * STANDARD.q == STANDARD.p - 1
    r_hex = "%X" % int(STANDARD.r)
    assert ("0" + r_hex).startswith(SPEC_R_FIRST_LINE)
    assert r_hex.endswith(SPEC_R_LAST_LINE)
    assert STANDARD.r == int(SPEC_R_HEX, 16)


def test_standard_g_is_2_to_the_r():
    assert STANDARD.g == gmpy2.powmod(2, STANDARD.r, STANDARD.p)
    g_hex = _hex(STANDARD.g, 512)
    assert g_hex.startswith(SPEC_G_FIRST_LINE)
    assert g_hex.endswith(SPEC_G_LAST_LINE)


def test_validate_standard_passes():
    validate_group(STANDARD)
    assert STANDARD.is_standard


@pytest.mark.parametrize("group", TOYS, ids=lambda g: g.name)
def test_validate_toy_groups(group):
    validate_group(group)
    assert not group.is_standard
    assert group.r * group.q == group.p - 1
    assert gmpy2.powmod(group.g, group.q, group.p) == 1 and group.g != 1


def _next_prime_not_dividing(q, p):
    c = gmpy2.next_prime(q)
    while (p - 1) % c == 0:
        c = gmpy2.next_prime(c)
    return c


@pytest.mark.parametrize("group", TOYS + (STANDARD,), ids=lambda g: g.name)
def test_validate_rejects_corrupted_groups(group):
    p, q, g = group.p, group.q, group.g
    # g that is not of order q: 2 is not in the order-q subgroup (checked here first)
    non_member = next(x for x in range(2, 100) if gmpy2.powmod(x, q, p) != 1)
    bad = {
        "p+2": Group("bad", p + 2, q, g),
        "g=1": Group("bad", p, q, mpz(1)),
        "g=0": Group("bad", p, q, mpz(0)),
        "g=p": Group("bad", p, q, p),
        "g not order q": Group("bad", p, q, mpz(non_member)),
        "g=p-1": Group("bad", p, q, p - 1),
        "q does not divide p-1": Group("bad", p, _next_prime_not_dividing(q, p), g),
        "q composite": Group("bad", p, q + 2 if not gmpy2.is_prime(q + 2) else q + 4, g),
    }
    for label, grp in bad.items():
        with pytest.raises(ParameterError) as exc:
            validate_group(grp)
        assert str(exc.value), label
        assert "bad" in str(exc.value), label


def test_validate_rejects_composite_cofactor_half():
    # q prime, p = 2 q m + 1 prime, g of order q, but m = (p-1)/2q composite
    q = mpz(127)
    m = 2
    while True:
        m += 1
        if gmpy2.is_prime(m):
            continue
        p = 2 * q * m + 1
        if gmpy2.is_prime(p):
            break
    g = next(gmpy2.powmod(h, 2 * m, p) for h in range(2, 1000) if gmpy2.powmod(h, 2 * m, p) != 1)
    assert gmpy2.powmod(g, q, p) == 1
    with pytest.raises(ParameterError, match="not prime"):
        validate_group(Group("composite-cofactor", p, q, g))


# --------------------------------------------------------------------------- encodings (5.1)


def test_b_examples_from_spec():
    assert b(0, 512) == bytes(512)
    b15 = b(15, 512)
    assert len(b15) == 512 and b15[-1] == 0x0F and b15[:-1] == bytes(511)
    b857 = b(8572345, 512)
    assert len(b857) == 512 and b857[-3:] == bytes.fromhex("82CDB9") and b857[:-3] == bytes(509)
    assert b(0, 32).hex() == "00" * 32
    assert b(16, 32).hex().upper() == "00" * 31 + "10"
    assert b(STANDARD.q - 1, 32).hex().upper() == "F" * 62 + "42"
    assert b(STANDARD.p - 1, 512).hex().upper().endswith("F" * 62 + "FE")
    assert b(5, 4) == bytes.fromhex("00000005")
    assert b(3, 4) == bytes.fromhex("00000003")
    assert b(0x1FFF, 3) == b"\x00\x1f\xff"


def test_b_rejects_out_of_range():
    with pytest.raises(EncodingError):
        b(-1, 4)
    with pytest.raises(EncodingError):
        b(256, 1)
    with pytest.raises(EncodingError):
        b(STANDARD.p, 511)
    assert b(255, 1) == b"\xff"


def test_small():
    assert small(0) == bytes(4)
    assert small(5) == bytes.fromhex("00000005")
    assert small(2**31 - 1) == bytes.fromhex("7FFFFFFF")
    for bad in (-1, 2**31, 2**32, True, False, 1.0, "5", None):
        with pytest.raises(EncodingError):
            small(bad)


def test_length_prefixed():
    assert length_prefixed(b"") == bytes(4)
    assert length_prefixed(b"ElectionGuard") == bytes.fromhex("0000000D") + b"ElectionGuard"
    assert b"ElectionGuard".hex().upper() == "456C656374696F6E4775617264"


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=64).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(min_value=0, max_value=2 ** (8 * n) - 1))))
def test_hex_round_trip(args):
    length, value = args
    text = to_hex(value, length)
    assert len(text) == 2 * length and text == text.upper()
    assert from_hex(text, length, "field") == value
    assert b(value, length) == bytes.fromhex(text)


@pytest.mark.parametrize("text", [
    "0a", "0A0", "0", "", "GG", "0x0A", " 0A", "0A ", "+1", "０Ａ",
])
def test_from_hex_rejects_bad_text(text):
    with pytest.raises(EncodingError, match="my_field"):
        from_hex(text, 1, "my_field")


@pytest.mark.parametrize("value", [10, b"0A", None, 1.0, ["0A"]])
def test_from_hex_rejects_non_str(value):
    with pytest.raises(EncodingError, match="the key K"):
        from_hex(value, 1, "the key K")


def test_from_hex_lowercase_of_valid_value():
    text = to_hex(STANDARD.g, 512)
    assert from_hex(text, 512, "g") == STANDARD.g
    with pytest.raises(EncodingError, match="g"):
        from_hex(text.lower(), 512, "g")
    with pytest.raises(EncodingError, match="g"):
        from_hex(text[2:], 512, "g")
    with pytest.raises(EncodingError, match="g"):
        from_hex(text, 511, "g")


# --------------------------------------------------------------------------- H and H_q (5.2, 5.4)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_H_is_hmac_sha256(key, data):
    assert H(key, data) == hmac.new(key, data, hashlib.sha256).digest()
    assert len(H(key, data)) == 32


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=300))
def test_H_q_is_H_mod_q(key, data):
    for group in (STANDARD, TOY_16, TOY_128):
        value = H_q(group, key, data)
        assert value == int.from_bytes(H(key, data), "big") % group.q
        assert 0 <= value < group.q


def test_H_known_vector():
    # RFC 4231-style check of HMAC-SHA-256 with a 32-byte key, computed independently via hashlib
    key = bytes(range(32))
    data = b"ElectionGuard"
    ipad = bytes((x ^ 0x36) for x in key + bytes(32))
    opad = bytes((x ^ 0x5C) for x in key + bytes(32))
    expected = hashlib.sha256(opad + hashlib.sha256(ipad + data).digest()).digest()
    assert H(key, data) == expected


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_H_rejects_key_not_32_bytes(length):
    with pytest.raises(InputError, match="32"):
        H(bytes(length), b"data")


def test_version_bytes():
    assert VERSION == bytes.fromhex("76322E312E30") + bytes(26)
    assert len(VERSION) == 32


# --------------------------------------------------------------------------- base hashes (5.5.1, 5.5.2)


class Recorder:
    """Wraps a hash function and records the (B0, B1) of every call."""

    def __init__(self, fn, with_group: bool = False):
        self.fn = fn
        self.with_group = with_group
        self.calls: list[tuple[bytes, bytes]] = []

    def __call__(self, *args):
        if self.with_group:
            _, key, data = args
        else:
            key, data = args
        self.calls.append((bytes(key), bytes(data)))
        return self.fn(*args)


@pytest.fixture
def capture_hashing(monkeypatch):
    rec = Recorder(hashing_mod.H)
    monkeypatch.setattr(hashing_mod, "H", rec)
    return rec


def _spec_h_p(n: int, k: int) -> bytes:
    """H_P computed from the spec's description alone (eq 4, 5.3)."""
    p, q, g = int(STANDARD.p), int(STANDARD.q), int(STANDARD.g)
    b0 = "v2.1.0".encode("utf-8") + b"\x00" * 26
    b1 = (b"\x00" + p.to_bytes(512, "big") + q.to_bytes(32, "big") + g.to_bytes(512, "big")
          + n.to_bytes(4, "big") + k.to_bytes(4, "big"))
    assert len(b1) == 1065
    return hmac.new(b0, b1, hashlib.sha256).digest()


def test_parameter_base_hash_independent_recomputation():
    assert parameter_base_hash(STANDARD, 5, 3) == _spec_h_p(5, 3)
    assert parameter_base_hash(STANDARD, 3, 2) == _spec_h_p(3, 2)
    assert parameter_base_hash(STANDARD, 5, 3) != parameter_base_hash(STANDARD, 5, 2)
    assert parameter_base_hash(STANDARD, 5, 3) != parameter_base_hash(STANDARD, 6, 3)
    assert parameter_base_hash(STANDARD, 5, 3) != parameter_base_hash(TOY_128, 5, 3)


def test_parameter_base_hash_layout(capture_hashing):
    parameter_base_hash(STANDARD, 5, 3)
    assert len(capture_hashing.calls) == 1
    b0, b1 = capture_hashing.calls[0]
    assert b0 == b"v2.1.0" + bytes(26)
    assert len(b1) == 1065
    assert b1[0] == 0x00
    assert b1[1:513] == int(STANDARD.p).to_bytes(512, "big")
    assert b1[513:545] == int(STANDARD.q).to_bytes(32, "big")
    assert b1[545:1057] == int(STANDARD.g).to_bytes(512, "big")
    assert b1[1057:1061] == bytes.fromhex("00000005")
    assert b1[1061:1065] == bytes.fromhex("00000003")


def test_election_base_hash_layout(capture_hashing):
    h_p = parameter_base_hash(STANDARD, 5, 3)
    capture_hashing.calls.clear()
    for manifest in (b"", b"{}", "{\"label\":\"Élection\"}".encode("utf-8"), bytes(range(256)) * 3):
        out = election_base_hash(h_p, manifest)
        b0, b1 = capture_hashing.calls[-1]
        assert b0 == h_p
        assert len(b1) == 5 + len(manifest)
        assert b1 == b"\x01" + len(manifest).to_bytes(4, "big") + manifest
        assert out == hmac.new(h_p, b1, hashlib.sha256).digest()
    assert election_base_hash(h_p, b"{}") != election_base_hash(h_p, b"{} ")


def test_extended_base_hash_layout(capture_hashing):
    h_b = bytes(range(32))
    k_joint = gmpy2.powmod(STANDARD.g, 12345, STANDARD.p)
    k_hat = gmpy2.powmod(STANDARD.g, 67890, STANDARD.p)
    out = extended_base_hash(STANDARD, h_b, k_joint, k_hat)
    b0, b1 = capture_hashing.calls[-1]
    assert b0 == h_b
    assert len(b1) == 1025
    assert b1 == b"\x14" + int(k_joint).to_bytes(512, "big") + int(k_hat).to_bytes(512, "big")
    assert out == hmac.new(h_b, b1, hashlib.sha256).digest()


@pytest.mark.parametrize("n,k", [(1, 1), (3, 2), (5, 3)])
def test_guardian_record_hash_layout(capture_hashing, n, k):
    rnd = random.Random(n * 10 + k)
    p = int(STANDARD.p)
    # any integers below p encode the same way; no exponentiation needed for a layout test
    commitments = [[rnd.randrange(1, p) for _ in range(k)] for _ in range(n)]
    data_commitments = [[rnd.randrange(1, p) for _ in range(k)] for _ in range(n)]
    kappas = [rnd.randrange(1, p) for _ in range(n)]
    k_joint, k_hat = rnd.randrange(1, p), rnd.randrange(1, p)
    h_b = bytes(reversed(range(32)))
    out = guardian_record_hash(STANDARD, h_b, k_joint, k_hat, commitments, data_commitments, kappas)
    b0, b1 = capture_hashing.calls[-1]
    assert b0 == h_b
    assert len(b1) == 1 + (2 + 2 * n * k + n) * 512
    enc = [k_joint, k_hat] + [x for row in commitments for x in row] + [x for row in data_commitments for x in row] + kappas
    assert b1 == b"\x13" + b"".join(x.to_bytes(512, "big") for x in enc)
    assert out == hmac.new(h_b, b1, hashlib.sha256).digest()


# --------------------------------------------------------------------------- key-generation hashes (5.5.2)


@pytest.fixture(scope="module")
def std_table():
    return FixedBase(STANDARD, STANDARD.g)


def _capture_key_proof(monkeypatch, std_table, k, index):
    rec = Recorder(keys_mod.H_q, with_group=True)
    monkeypatch.setattr(keys_mod, "H_q", rec)
    h_p = parameter_base_hash(STANDARD, 5, 3)
    _, pk = generate_guardian_key(STANDARD, std_table, h_p, index, k, rng=random.Random(7))
    return h_p, pk, rec.calls


def test_key_proof_challenge_layout(monkeypatch, std_table):
    """Eqs 11 and 13: B0 = H_P, len(B1) = 12 + 2(k+1)*512, i, K_i,j, kappa_i, h_i,j at their offsets."""
    k, index = 3, 4
    h_p, pk, calls = _capture_key_proof(monkeypatch, std_table, k, index)
    assert len(calls) == 2
    for (b0, b1), commitments, proof in ((calls[0], pk.commitments, pk.proof),
                                         (calls[1], pk.data_commitments, pk.data_proof)):
        assert b0 == h_p
        assert len(b1) == 12 + 2 * (k + 1) * 512
        assert b1[0] == 0x10
        assert b1[8:12] == index.to_bytes(4, "big")
        for j, c in enumerate(commitments):
            assert b1[12 + 512 * j: 12 + 512 * (j + 1)] == int(c).to_bytes(512, "big")
        assert b1[12 + 512 * k: 12 + 512 * (k + 1)] == int(pk.communication_key).to_bytes(512, "big")
        # the last k+1 blocks are h_0..h_k: check h_k against the proof (eq 10, Verification 2.2)
        h_k = int.from_bytes(b1[-512:], "big")
        p = STANDARD.p
        assert h_k == std_table.pow(proof.responses[k]) * gmpy2.powmod(pk.communication_key, proof.challenge, p) % p
        assert proof.challenge == int.from_bytes(hmac.new(b0, b1, hashlib.sha256).digest(), "big") % STANDARD.q
    # the two proofs differ only in their label (and their random commitments)
    assert calls[0][1][1:8] != calls[1][1][1:8]


def test_key_proof_challenge_labels_match_spec_table(monkeypatch, std_table):
    """Spec 5.5.2 gives the label bytes of eqs 11 and 13 as 706B5F766F7465 and 706B5F64617461,
    i.e. "pk_vote" and "pk_data" (the PDF draws the underscore as a rule, which text extraction
    turns into a space)."""
    _, _, calls = _capture_key_proof(monkeypatch, std_table, 1, 1)
    assert calls[0][1][1:8] == bytes.fromhex("706B5F766F7465") == b"pk_vote"
    assert calls[1][1][1:8] == bytes.fromhex("706B5F64617461") == b"pk_data"


def _capture_share_encryption(monkeypatch, std_table):
    rec_h = Recorder(keys_mod.H)
    rec_hq = Recorder(keys_mod.H_q, with_group=True)
    h_p = parameter_base_hash(STANDARD, 5, 3)
    rng = random.Random(11)
    sk_l, pk_l = generate_guardian_key(STANDARD, std_table, h_p, 2, 2, rng=rng)
    monkeypatch.setattr(keys_mod, "H", rec_h)
    monkeypatch.setattr(keys_mod, "H_q", rec_hq)
    share, data_share = mpz(rng.randrange(STANDARD.q)), mpz(rng.randrange(STANDARD.q))
    enc = encrypt_share(STANDARD, std_table, h_p, 1, 2, pk_l.communication_key, share, data_share, rng)
    return h_p, sk_l, pk_l, share, data_share, enc, rec_h, rec_hq


def test_share_encryption_hash_layouts(monkeypatch, std_table):
    h_p, sk_l, pk_l, share, data_share, enc, rec_h, rec_hq = _capture_share_encryption(monkeypatch, std_table)
    sender, recipient = 1, 2

    # eq 16: k_il = H(H_P; 0x11, i, l, kappa_l, alpha, beta), len 1545
    assert len(rec_h.calls) == 1
    b0, b1 = rec_h.calls[0]
    assert b0 == h_p
    assert len(b1) == 1545
    assert b1[0] == 0x11
    assert b1[1:5] == sender.to_bytes(4, "big") and b1[5:9] == recipient.to_bytes(4, "big")
    assert b1[9:521] == int(pk_l.communication_key).to_bytes(512, "big")
    assert b1[521:1033] == int(enc.c0).to_bytes(512, "big")
    beta = gmpy2.powmod(enc.c0, sk_l.communication_secret, STANDARD.p)  # beta = alpha^zeta_l
    assert b1[1033:1545] == int(beta).to_bytes(512, "big")
    eq16_call = (b0, b1)

    # eq 22: c = H_q(H_P; 0x12, i, l, gamma, C0, C1), len 1097
    assert len(rec_hq.calls) == 1
    b0, b1 = rec_hq.calls[0]
    assert b0 == h_p
    assert len(b1) == 1097
    assert b1[0] == 0x12
    assert b1[1:5] == sender.to_bytes(4, "big") and b1[5:9] == recipient.to_bytes(4, "big")
    gamma = std_table.pow(enc.response) * gmpy2.powmod(enc.c0, enc.challenge, STANDARD.p) % STANDARD.p
    assert b1[9:521] == int(gamma).to_bytes(512, "big")
    assert b1[521:1033] == int(enc.c0).to_bytes(512, "big")
    assert b1[1033:] == enc.c1 and len(enc.c1) == 64
    assert enc.challenge == int.from_bytes(hmac.new(b0, b1, hashlib.sha256).digest(), "big") % STANDARD.q

    # the recipient derives the same eq-16 input and decrypts what was encrypted
    rec_h.calls.clear()
    assert decrypt_share(STANDARD, std_table, h_p, sk_l, pk_l.communication_key, enc) == (share, data_share)
    assert rec_h.calls == [eq16_call]


def test_share_encryption_kdf_matches_spec(monkeypatch, std_table):
    """Eqs 17, 18, 21 by hand: Label = b("share_enc_keys", 14), Context = b("share_encrypt", 13) || b(i,4) || b(l,4).

    The PDF of the spec draws the underscores as rules (text extraction shows spaces); footnote 34
    and the byte lengths 14 and 13 fit either reading, the reference implementations use underscores.
    """
    _, _, _, share, data_share, enc, rec_h, _ = _capture_share_encryption(monkeypatch, std_table)
    b0, b1 = rec_h.calls[0]
    k_il = hmac.new(b0, b1, hashlib.sha256).digest()
    label = "share_enc_keys".encode("utf-8")
    context = "share_encrypt".encode("utf-8") + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    assert len(label) == 14 and len(context) == 21
    k1 = hmac.new(k_il, b"\x01" + label + b"\x00" + context + b"\x02\x00", hashlib.sha256).digest()
    k2 = hmac.new(k_il, b"\x02" + label + b"\x00" + context + b"\x02\x00", hashlib.sha256).digest()
    expected_c1 = (bytes(x ^ y for x, y in zip(int(share).to_bytes(32, "big"), k1))
                   + bytes(x ^ y for x, y in zip(int(data_share).to_bytes(32, "big"), k2)))
    assert enc.c1 == expected_c1


# --------------------------------------------------------------------------- KDF (eq 17)


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.integers(1, 2), st.integers(1, 2**31 - 1),
       st.integers(1, 2**31 - 1))
def test_kdf_counter_mode_eq17_layout(key, counter, i, l):
    label = b"share_enc_keys"
    context = b"share_encrypt" + i.to_bytes(4, "big") + l.to_bytes(4, "big")
    got = kdf_counter_mode(key, bytes([counter]), label, context, b"\x02\x00")
    message = bytes([counter]) + b"share_enc_keys" + b"\x00" + b"share_encrypt" + i.to_bytes(4, "big") \
        + l.to_bytes(4, "big") + bytes.fromhex("0200")
    assert len(message) == 1 + 14 + 1 + 21 + 2
    assert got == hmac.new(key, message, hashlib.sha256).digest()


def test_kdf_counters_differ():
    key = bytes(32)
    a = kdf_counter_mode(key, b"\x01", b"L", b"C", b"\x02\x00")
    c = kdf_counter_mode(key, b"\x02", b"L", b"C", b"\x02\x00")
    assert a != c
    # the 0x00 separator sits between label and context
    assert kdf_counter_mode(key, b"\x01", b"AB", b"C", b"") != kdf_counter_mode(key, b"\x01", b"A", b"BC", b"")
