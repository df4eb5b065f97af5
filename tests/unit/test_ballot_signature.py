"""Tests of the one-time Ed25519 ballot signature (seed 003).

Known answers come from outside the code under test: Ed25519 vectors from
RFC 8032 section 7.1, Borsh and payload bytes derived by hand from the format
rules, DER prefixes derived by hand from the ASN.1 structure.
"""

from __future__ import annotations

import base64
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from node.crypto.ballot_signature import (
    BallotContent,
    BallotSignature,
    content_from_borsh,
    sign_ballot,
    signing_payload,
    verify_ballot_signature,
)
from node.crypto.errors import InputError, SignatureError

# --- RFC 8032 section 7.1 test vectors (Ed25519) ---------------------------

RFC8032_VECTORS = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555"
        "fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST 1 (empty message)",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST 2 (one byte 72)",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="TEST 3 (two bytes af82)",
    ),
]

RFC_TEST1_SECRET = bytes.fromhex(
    "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
)
RFC_TEST1_PUBLIC = bytes.fromhex(
    "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
)

# SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 (id-Ed25519) } BIT STRING(33, 0 unused bits) }
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


@pytest.mark.parametrize("secret_hex, public_hex, message_hex, signature_hex", RFC8032_VECTORS)
def test_rfc8032_known_answers(secret_hex, public_hex, message_hex, signature_hex):
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public == bytes.fromhex(public_hex)
    signature = key.sign(bytes.fromhex(message_hex))
    assert signature == bytes.fromhex(signature_hex)
    Ed25519PublicKey.from_public_bytes(public).verify(signature, bytes.fromhex(message_hex))


def test_spki_prefix_matches_hand_derived_der():
    key = Ed25519PrivateKey.from_private_bytes(RFC_TEST1_SECRET)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert der == ED25519_SPKI_PREFIX + RFC_TEST1_PUBLIC
    assert base64.b64encode(ED25519_SPKI_PREFIX) == b"MCowBQYDK2VwAyEA"


# --- Borsh known answers -----------------------------------------------------

EXAMPLE = BallotContent(
    version=1,
    issue_date="2024-01-01",
    contests=("a", "bc"),
    config="cfg",
    ballot_style_hash="h",
)
EXAMPLE_BORSH_HEX = (
    "01000000"  # version: u32 1
    "0a000000" "323032342d30312d3031"  # issue_date: len 10, "2024-01-01"
    "02000000"  # contests: 2 elements
    "01000000" "61"  # "a"
    "02000000" "6263"  # "bc"
    "03000000" "636667"  # config: "cfg"
    "01000000" "68"  # ballot_style_hash: "h"
)

NON_ASCII = BallotContent(
    version=258,
    issue_date="\u00e9",  # é: 2 UTF-8 bytes, 1 character
    contests=(),
    config="\u20ac",  # €: 3 UTF-8 bytes, 1 character
    ballot_style_hash="",
)
NON_ASCII_BORSH_HEX = (
    "02010000"  # version: 258 = 0x0102 little-endian
    "02000000" "c3a9"  # issue_date: byte length 2
    "00000000"  # contests: empty Vec is just a zero count
    "03000000" "e282ac"  # config: byte length 3
    "00000000"  # ballot_style_hash: empty string
)


def test_borsh_known_answer():
    assert EXAMPLE.to_borsh() == bytes.fromhex(EXAMPLE_BORSH_HEX)
    assert len(EXAMPLE.to_borsh()) == 45


def test_borsh_empty_vec_and_non_ascii():
    assert NON_ASCII.to_borsh() == bytes.fromhex(NON_ASCII_BORSH_HEX)


def test_borsh_max_version():
    content = BallotContent(2**32 - 1, "", (), "", "")
    assert content.to_borsh() == bytes.fromhex("ffffffff" + "00000000" * 4)


def test_borsh_vec_of_empty_strings():
    content = BallotContent(0, "", ("", ""), "", "")
    assert content.to_borsh() == bytes.fromhex(
        "00000000" "00000000" "02000000" "00000000" "00000000" "00000000" "00000000"
    )


@pytest.mark.parametrize("content", [EXAMPLE, NON_ASCII])
def test_borsh_known_answers_parse_back(content):
    assert content_from_borsh(content.to_borsh()) == content


# --- Payload known answers ---------------------------------------------------


def test_payload_known_answer():
    expected = bytes.fromhex(
        "0200000000000000" "6231"  # ballot_id "b1"
        "0100000000000000" "65"  # election_id "e"
        "2d00000000000000" + EXAMPLE_BORSH_HEX  # 45 bytes of Borsh content
    )
    assert signing_payload("b1", "e", EXAMPLE) == expected


def test_payload_non_ascii_id_and_empty_election():
    expected = bytes.fromhex(
        "0200000000000000" "c3a9"  # ballot_id "é": UTF-8 byte length 2
        "0000000000000000"  # election_id "": zero length, no bytes
        "1900000000000000" + NON_ASCII_BORSH_HEX  # 25 bytes of Borsh content
    )
    assert signing_payload("\u00e9", "", NON_ASCII) == expected


def test_payload_boundaries_are_unambiguous():
    assert signing_payload("ab", "c", EXAMPLE) != signing_payload("a", "bc", EXAMPLE)


# --- Signing and verification ------------------------------------------------


def test_sign_with_rfc_key_is_deterministic_and_matches_hand_built_payload():
    key = Ed25519PrivateKey.from_private_bytes(RFC_TEST1_SECRET)
    sig = sign_ballot("b1", "e", EXAMPLE, private_key=key)
    assert sig.voter_signing_pk == base64.b64encode(
        ED25519_SPKI_PREFIX + RFC_TEST1_PUBLIC
    ).decode()
    raw = base64.b64decode(sig.voter_ballot_signature)
    assert len(raw) == 64
    hand_payload = bytes.fromhex(
        "0200000000000000" "6231" "0100000000000000" "65" "2d00000000000000"
        + EXAMPLE_BORSH_HEX
    )
    # Independent check: the raw RFC public key verifies the signature over the hand-built bytes.
    Ed25519PublicKey.from_public_bytes(RFC_TEST1_PUBLIC).verify(raw, hand_payload)
    assert sign_ballot("b1", "e", EXAMPLE, private_key=key) == sig


def test_public_key_string_form():
    sig = sign_ballot("ballot-1", "election-1", EXAMPLE)
    assert sig.voter_signing_pk.startswith("MCowBQYDK2VwAyEA")
    assert len(base64.b64decode(sig.voter_signing_pk, validate=True)) == 44
    assert len(base64.b64decode(sig.voter_ballot_signature, validate=True)) == 64


def test_round_trip():
    sig = sign_ballot("ballot-1", "election-1", EXAMPLE)
    assert verify_ballot_signature("ballot-1", "election-1", EXAMPLE, sig) is None


def test_fresh_key_per_signature():
    first = sign_ballot("ballot-1", "election-1", EXAMPLE)
    second = sign_ballot("ballot-1", "election-1", EXAMPLE)
    assert first.voter_signing_pk != second.voter_signing_pk
    assert first.voter_ballot_signature != second.voter_ballot_signature
    verify_ballot_signature("ballot-1", "election-1", EXAMPLE, first)
    verify_ballot_signature("ballot-1", "election-1", EXAMPLE, second)


def test_signature_record_holds_no_private_material():
    names = [f.name for f in dataclasses.fields(BallotSignature)]
    assert names == ["voter_signing_pk", "voter_ballot_signature"]
    sig = sign_ballot("ballot-1", "election-1", EXAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sig.voter_signing_pk = "x"  # type: ignore[misc]


# --- Tampering ---------------------------------------------------------------

SIGNED = sign_ballot("ballot-7", "election-1", EXAMPLE)


@pytest.mark.parametrize(
    "ballot_id, election_id, content",
    [
        pytest.param("ballot-8", "election-1", EXAMPLE, id="ballot_id"),
        pytest.param("ballot-7", "election-2", EXAMPLE, id="election_id"),
        pytest.param("ballot-7", "election-1", dataclasses.replace(EXAMPLE, version=2), id="version"),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, issue_date="2024-01-02"),
            id="issue_date",
        ),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, contests=("a", "bd")),
            id="contest",
        ),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, contests=("bc", "a")),
            id="contest order",
        ),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, contests=("a",)),
            id="contest removed",
        ),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, config="cfh"), id="config"
        ),
        pytest.param(
            "ballot-7", "election-1", dataclasses.replace(EXAMPLE, ballot_style_hash="i"),
            id="ballot_style_hash",
        ),
    ],
)
def test_tampered_field_is_detected(ballot_id, election_id, content):
    with pytest.raises(SignatureError, match="does not verify") as info:
        verify_ballot_signature(ballot_id, election_id, content, SIGNED)
    assert ballot_id in str(info.value)


def test_flipped_signature_bit_is_detected():
    raw = bytearray(base64.b64decode(SIGNED.voter_ballot_signature))
    raw[10] ^= 0x01
    bad = dataclasses.replace(SIGNED, voter_ballot_signature=base64.b64encode(raw).decode())
    with pytest.raises(SignatureError):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, bad)


def test_other_ballots_key_is_detected():
    other = sign_ballot("ballot-8", "election-1", EXAMPLE)
    swapped = dataclasses.replace(SIGNED, voter_signing_pk=other.voter_signing_pk)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, swapped)


# Small alphabets make near-misses (one character off, shifted boundaries) likely.
_text = st.text(alphabet=st.sampled_from("ab\u00e9\u20ac\U0001f600\x00"), max_size=6) | st.text(
    max_size=12
)
_contents = st.builds(
    BallotContent,
    version=st.integers(0, 2**32 - 1),
    issue_date=_text,
    contests=st.lists(_text, max_size=4).map(tuple),
    config=_text,
    ballot_style_hash=_text,
)
_FIXED_KEY = Ed25519PrivateKey.from_private_bytes(RFC_TEST1_SECRET)
_FIELDS = [
    "ballot_id",
    "election_id",
    "version",
    "issue_date",
    "contests",
    "config",
    "ballot_style_hash",
]


@settings(max_examples=200, deadline=None)
@given(ballot_id=_text, election_id=_text, content=_contents, field=st.sampled_from(_FIELDS), data=st.data())
def test_any_change_of_any_field_is_detected(ballot_id, election_id, content, field, data):
    sig = sign_ballot(ballot_id, election_id, content, private_key=_FIXED_KEY)
    verify_ballot_signature(ballot_id, election_id, content, sig)
    if field == "ballot_id":
        ballot_id = data.draw(_text.filter(lambda v: v != ballot_id))
    elif field == "election_id":
        election_id = data.draw(_text.filter(lambda v: v != election_id))
    elif field == "version":
        old = content.version
        content = dataclasses.replace(
            content, version=data.draw(st.integers(0, 2**32 - 1).filter(lambda v: v != old))
        )
    elif field == "contests":
        old = content.contests
        new = data.draw(st.lists(_text, max_size=4).map(tuple).filter(lambda v: v != old))
        content = dataclasses.replace(content, contests=new)
    else:
        old = getattr(content, field)
        content = dataclasses.replace(content, **{field: data.draw(_text.filter(lambda v: v != old))})
    with pytest.raises(SignatureError):
        verify_ballot_signature(ballot_id, election_id, content, sig)


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, 64 * 8 - 1))
def test_any_flipped_signature_bit_is_detected(bit):
    raw = bytearray(base64.b64decode(SIGNED.voter_ballot_signature))
    raw[bit // 8] ^= 1 << (bit % 8)
    bad = dataclasses.replace(SIGNED, voter_ballot_signature=base64.b64encode(raw).decode())
    with pytest.raises(SignatureError):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, bad)


@settings(max_examples=200, deadline=None)
@given(bit=st.integers(0, 44 * 8 - 1))
def test_any_flipped_public_key_bit_is_detected(bit):
    raw = bytearray(base64.b64decode(SIGNED.voter_signing_pk))
    raw[bit // 8] ^= 1 << (bit % 8)
    bad = dataclasses.replace(SIGNED, voter_signing_pk=base64.b64encode(raw).decode())
    with pytest.raises(SignatureError):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, bad)


@settings(max_examples=200, deadline=None)
@given(a=st.tuples(_text, _text, _contents), b=st.tuples(_text, _text, _contents))
def test_payload_is_injective(a, b):
    assume(a != b)
    assert signing_payload(*a) != signing_payload(*b)


@settings(max_examples=200, deadline=None)
@given(content=_contents)
def test_borsh_round_trip(content):
    assert content_from_borsh(content.to_borsh()) == content


# --- Malformed inputs --------------------------------------------------------


def _with(**fields) -> BallotSignature:
    return dataclasses.replace(SIGNED, **fields)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "pk",
    [
        pytest.param("not base64!", id="bad characters"),
        pytest.param(SIGNED.voter_signing_pk[:-1], id="bad length"),
        pytest.param(SIGNED.voter_signing_pk + "\n", id="trailing newline"),
        pytest.param("\u00e9" + SIGNED.voter_signing_pk[1:], id="non-ascii"),
        pytest.param("", id="empty"),
        pytest.param("MCowBQYDK2VwAyEA", id="truncated DER"),
        pytest.param(_b64(ED25519_SPKI_PREFIX + RFC_TEST1_PUBLIC + b"\x00"), id="trailing DER byte"),
        pytest.param(_b64(RFC_TEST1_PUBLIC), id="raw key, not SPKI"),
    ],
)
def test_malformed_public_key(pk):
    with pytest.raises(SignatureError, match="ballot-7.*voter_signing_pk"):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, _with(voter_signing_pk=pk))


def _spki(public_key) -> str:
    return _b64(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


@pytest.mark.parametrize(
    "make_public",
    [
        pytest.param(lambda: ec.generate_private_key(ec.SECP256R1()).public_key(), id="EC P-256"),
        pytest.param(lambda: x25519.X25519PrivateKey.generate().public_key(), id="X25519"),
        pytest.param(lambda: ed448.Ed448PrivateKey.generate().public_key(), id="Ed448"),
    ],
)
def test_other_algorithm_key_is_refused(make_public):
    bad = _with(voter_signing_pk=_spki(make_public()))
    with pytest.raises(SignatureError, match="not an Ed25519 key"):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, bad)


@pytest.mark.parametrize(
    "sig, reason",
    [
        pytest.param("not base64!", "not valid base64", id="bad characters"),
        pytest.param(SIGNED.voter_ballot_signature.rstrip("="), "not valid base64", id="no padding"),
        pytest.param(_b64(bytes(63)), "wrong length", id="63 bytes"),
        pytest.param(_b64(bytes(65)), "wrong length", id="65 bytes"),
        pytest.param("", "wrong length", id="empty"),
    ],
)
def test_malformed_signature(sig, reason):
    with pytest.raises(SignatureError, match=f"ballot-7.*{reason}"):
        verify_ballot_signature("ballot-7", "election-1", EXAMPLE, _with(voter_ballot_signature=sig))


def test_non_canonical_base64_is_refused():
    good = SIGNED.voter_ballot_signature
    assert good.endswith("==")  # 64 bytes: the last data character carries 4 padding bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(good[-3])
    assert last & 0b1111 == 0  # canonical: the padding bits are zero
    non_canonical = good[:-3] + alphabet[last | 0b0001] + "=="
    # Same bytes under a lenient decoder, a different string.
    assert base64.b64decode(non_canonical) == base64.b64decode(good)
    with pytest.raises(SignatureError, match="non-canonical"):
        verify_ballot_signature(
            "ballot-7", "election-1", EXAMPLE, _with(voter_ballot_signature=non_canonical)
        )


def test_truncated_borsh_is_refused():
    data = EXAMPLE.to_borsh()
    for cut in range(len(data)):
        with pytest.raises(InputError):
            content_from_borsh(data[:cut])


@pytest.mark.parametrize("extra", [b"\x00", b"xx", bytes(4)])
def test_borsh_trailing_bytes_are_refused(extra):
    with pytest.raises(InputError, match="trailing"):
        content_from_borsh(EXAMPLE.to_borsh() + extra)


def test_borsh_invalid_utf8_is_refused():
    data = bytearray(EXAMPLE.to_borsh())
    data[data.index(b"cfg")] = 0xFF
    with pytest.raises(InputError, match="UTF-8"):
        content_from_borsh(bytes(data))


def test_borsh_huge_length_prefix_is_refused():
    with pytest.raises(InputError):
        content_from_borsh(bytes.fromhex("01000000" "ffffffff") + b"x")
    with pytest.raises(InputError):
        content_from_borsh(bytes.fromhex("01000000" "00000000" "ffffffff"))


def test_content_from_borsh_wants_bytes():
    with pytest.raises(InputError, match="data"):
        content_from_borsh(EXAMPLE_BORSH_HEX)  # type: ignore[arg-type]


# --- Argument validation -----------------------------------------------------


@pytest.mark.parametrize("version", [-1, 2**32, True, "1", 1.0, None])
def test_bad_version(version):
    with pytest.raises(InputError, match="version"):
        dataclasses.replace(EXAMPLE, version=version)


@pytest.mark.parametrize("field", ["issue_date", "config", "ballot_style_hash"])
@pytest.mark.parametrize("value", [None, b"bytes", 3, "\ud800"])
def test_bad_string_field(field, value):
    with pytest.raises(InputError, match=field):
        dataclasses.replace(EXAMPLE, **{field: value})


@pytest.mark.parametrize(
    "contests, name",
    [("ab", "contests"), (None, "contests"), (("a", 3), r"contests\[1\]"), (("\ud800",), r"contests\[0\]")],
)
def test_bad_contests(contests, name):
    with pytest.raises(InputError, match=name):
        dataclasses.replace(EXAMPLE, contests=contests)


def test_contests_list_becomes_tuple():
    content = dataclasses.replace(EXAMPLE, contests=["a", "bc"])
    assert content.contests == ("a", "bc")
    assert content == EXAMPLE
    hash(content)


@pytest.mark.parametrize("value", [None, b"ballot", 7, "\udfff"])
def test_bad_ids(value):
    with pytest.raises(InputError, match="ballot_id"):
        signing_payload(value, "election-1", EXAMPLE)
    with pytest.raises(InputError, match="election_id"):
        signing_payload("ballot-7", value, EXAMPLE)
    with pytest.raises(InputError, match="ballot_id"):
        sign_ballot(value, "election-1", EXAMPLE)
    with pytest.raises(InputError, match="election_id"):
        verify_ballot_signature("ballot-7", value, EXAMPLE, SIGNED)


def test_bad_content_argument():
    with pytest.raises(InputError, match="content"):
        signing_payload("ballot-7", "election-1", EXAMPLE.to_borsh())  # type: ignore[arg-type]


def test_bad_private_key_argument():
    other = ed448.Ed448PrivateKey.generate()
    with pytest.raises(InputError, match="private_key"):
        sign_ballot("ballot-7", "election-1", EXAMPLE, private_key=other)  # type: ignore[arg-type]


def test_bad_signature_argument():
    with pytest.raises(InputError, match="signature"):
        verify_ballot_signature(
            "ballot-7", "election-1", EXAMPLE, dataclasses.asdict(SIGNED)  # type: ignore[arg-type]
        )
    with pytest.raises(InputError, match="voter_ballot_signature"):
        verify_ballot_signature(
            "ballot-7", "election-1", EXAMPLE, _with(voter_ballot_signature=None)
        )
