"""The link handshake and SecureLink, sans-I/O: two Handshake objects talk through lists of frames.

No sockets: the tests play the network, including a man in the middle and a
peer that sends garbage.
"""

from __future__ import annotations

import hashlib

import msgpack
import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.protocol.handshake import (
    _AUTH_DOMAIN,
    _TRANSCRIPT_DOMAIN,
    DIALER,
    HANDSHAKE_VERSION,
    LISTENER,
    MAGIC_AUTH,
    MAGIC_HELLO,
    MAGIC_REFUSE,
    MAX_HANDSHAKE_FRAME,
    Handshake,
    HandshakeError,
    LinkError,
    SecureLink,
)

ALICE = nacl.signing.SigningKey(bytes(range(32)))
BOB = nacl.signing.SigningKey(bytes(range(1, 33)))
MALLORY = nacl.signing.SigningKey(bytes(range(2, 34)))
ROSTER = {bytes(ALICE.verify_key), bytes(BOB.verify_key)}


def in_roster(key: bytes) -> bool:
    return key in ROSTER


def pair(dialer_key=ALICE, listener_key=BOB, accept=in_roster):
    return Handshake(dialer_key, DIALER, accept), Handshake(listener_key, LISTENER, accept)


def complete(a: Handshake, b: Handshake) -> None:
    """Both sides send HELLO at once, then each answers the other's frames."""
    auth_from_a = a.receive(b.hello())
    auth_from_b = b.receive(a.hello())
    assert len(auth_from_a) == 1 and len(auth_from_b) == 1
    assert a.receive(auth_from_b[0]) == []
    assert b.receive(auth_from_a[0]) == []


def refused(handshake: Handshake, frame) -> HandshakeError:
    with pytest.raises(HandshakeError) as info:
        handshake.receive(frame)
    return info.value


def packed(*items) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


def hello_fields(hello: bytes) -> list:
    return msgpack.unpackb(hello, raw=False)


# --- the happy path ----------------------------------------------------------------------------


def test_two_handshakes_complete_and_links_interoperate_both_ways():
    a, b = pair()
    assert not a.done and not b.done
    complete(a, b)
    assert a.done and b.done
    assert a.peer_key == bytes(BOB.verify_key) and b.peer_key == bytes(ALICE.verify_key)
    for i in range(5):
        message = f"frame {i}".encode() * (i + 1)
        assert b.link.open(a.link.seal(message)) == message
        assert a.link.open(b.link.seal(message + b"!")) == message + b"!"
    assert b.link.open(a.link.seal(b"")) == b""


def test_the_order_of_delivery_does_not_matter():
    """The dialer may see the listener's AUTH right after its HELLO, before it sends its own AUTH."""
    a, b = pair()
    from_b = b.receive(a.hello())
    from_a = a.receive(b.hello())
    a.receive(from_b[0])
    b.receive(from_a[0])
    assert b.link.open(a.link.seal(b"x")) == b"x"


def test_fresh_keys_every_time():
    a1, b1 = pair()
    a2, b2 = pair()
    assert a1.hello() != a2.hello()
    complete(a1, b1)
    complete(a2, b2)
    sealed = a1.link.seal(b"same")
    assert sealed != a2.link.seal(b"same")
    with pytest.raises(LinkError):
        b2.link.open(sealed)                          # a frame of one link does not open on another


def test_hello_carries_role_and_identity():
    a, _ = pair()
    magic, version, role, identity, ephemeral, nonce = hello_fields(a.hello())
    assert (magic, version, role, identity) == (MAGIC_HELLO, HANDSHAKE_VERSION, DIALER, bytes(ALICE.verify_key))
    assert len(ephemeral) == 32 and len(nonce) == 32


def test_role_must_be_dialer_or_listener():
    with pytest.raises(ValueError):
        Handshake(ALICE, "observer", in_roster)


# --- refusals ---------------------------------------------------------------------------------


def test_unknown_key_is_refused_and_the_refused_side_is_told():
    mallory = Handshake(MALLORY, DIALER, lambda key: True)
    bob = Handshake(BOB, LISTENER, in_roster)
    error = refused(bob, mallory.hello())
    assert error.reason == "unknown key"
    assert error.peer_key == bytes(MALLORY.verify_key)
    assert not bob.done
    # no AUTH is sent to a stranger: Bob answers with a refusal frame only
    answer = bob.refusal(error.reason)
    assert msgpack.unpackb(answer) == [MAGIC_REFUSE, "unknown key"]
    told = refused(mallory, answer)
    assert told.reason == "refused by peer"
    assert "unknown key" in str(told)


def test_refusal_without_reason_and_after_hello():
    a, b = pair()
    a.receive(b.hello())                              # a has seen the hello, waits for AUTH
    assert refused(a, packed(MAGIC_REFUSE)).reason == "refused by peer"
    assert refused(Handshake(ALICE, DIALER, in_roster), packed(MAGIC_REFUSE, 5)).reason == "refused by peer"


def test_own_key_is_refused():
    a = Handshake(ALICE, DIALER, in_roster)
    mirror = Handshake(ALICE, LISTENER, in_roster)
    error = refused(mirror, a.hello())
    assert error.reason == "own key"


def test_reflected_hello_is_refused():
    a = Handshake(ALICE, DIALER, in_roster)
    error = refused(a, a.hello())                    # our own HELLO bounced back
    assert error.reason in ("own key", "malformed")


def test_two_dialers_are_refused():
    a = Handshake(ALICE, DIALER, in_roster)
    b = Handshake(BOB, DIALER, in_roster)
    assert refused(a, b.hello()).reason == "malformed"
    assert refused(b, a.hello()).reason == "malformed"


def test_two_listeners_are_refused():
    a = Handshake(ALICE, LISTENER, in_roster)
    b = Handshake(BOB, LISTENER, in_roster)
    assert refused(a, b.hello()).reason == "malformed"


def test_unsupported_handshake_version():
    a, b = pair()
    fields = hello_fields(a.hello())
    fields[1] = HANDSHAKE_VERSION + 1
    assert refused(b, packed(*fields)).reason == "unsupported version"


def test_tampered_auth_signature_is_refused():
    a, b = pair()
    auth_from_a = a.receive(b.hello())[0]
    b.receive(a.hello())
    magic, signature = msgpack.unpackb(auth_from_a)
    for index, bit in ((0, 1), (31, 0x10), (63, 0x80)):
        forged = bytearray(signature)
        forged[index] ^= bit
        error = refused(b, packed(magic, bytes(forged)))
        assert error.reason == "bad signature"
        assert error.peer_key == bytes(ALICE.verify_key)
        assert not b.done


def test_auth_signed_by_another_roster_member_is_refused():
    """Bob signs Alice's transcript: an AUTH from a different key than the HELLO named."""
    a, b = pair()
    a.receive(b.hello())
    b.receive(a.hello())
    transcript = hashlib.sha256(_TRANSCRIPT_DOMAIN + len(a.hello()).to_bytes(4, "big") + a.hello()
                                + len(b.hello()).to_bytes(4, "big") + b.hello()).digest()
    forged = BOB.sign(_AUTH_DOMAIN + DIALER.encode() + transcript).signature
    assert refused(b, packed(MAGIC_AUTH, forged)).reason == "bad signature"


def test_auth_for_the_other_role_is_refused():
    """An AUTH is bound to its role: the listener's own AUTH reflected back to it does not verify."""
    a, b = pair()
    a.receive(b.hello())
    auth_from_b = b.receive(a.hello())[0]
    assert refused(b, auth_from_b).reason == "bad signature"


def test_auth_replayed_from_an_earlier_handshake_is_refused():
    a1, b1 = pair()
    old_auth_from_a = a1.receive(b1.hello())[0]
    b1.receive(a1.hello())
    b1.receive(old_auth_from_a)
    # Mallory recorded Alice's HELLO and AUTH, and replays them to Bob later
    b2 = Handshake(BOB, LISTENER, in_roster)
    b2.receive(a1.hello())
    assert refused(b2, old_auth_from_a).reason == "bad signature"


def test_man_in_the_middle_swapping_the_ephemeral_key_fails():
    a, b = pair()
    mallory = Handshake(MALLORY, DIALER, lambda key: True)
    fields = hello_fields(a.hello())
    fields[4] = hello_fields(mallory.hello())[4]     # Mallory's ephemeral key in Alice's hello
    hello_to_b = packed(*fields)
    fields_b = hello_fields(b.hello())
    fields_b[4] = hello_fields(mallory.hello())[4]
    hello_to_a = packed(*fields_b)
    auth_from_a = a.receive(hello_to_a)[0]
    auth_from_b = b.receive(hello_to_b)[0]
    assert refused(b, auth_from_a).reason == "bad signature"
    assert refused(a, auth_from_b).reason == "bad signature"
    assert not a.done and not b.done


def test_man_in_the_middle_swapping_one_ephemeral_key_fails():
    a, b = pair()
    fields = hello_fields(a.hello())
    fields[4] = bytes(MALLORY.verify_key.to_curve25519_public_key())
    auth_from_a = a.receive(b.hello())[0]
    b.receive(packed(*fields))
    assert refused(b, auth_from_a).reason == "bad signature"


def test_man_in_the_middle_swapping_the_nonce_fails():
    a, b = pair()
    fields = hello_fields(a.hello())
    fields[5] = bytes(32)
    auth_from_a = a.receive(b.hello())[0]
    b.receive(packed(*fields))
    assert refused(b, auth_from_a).reason == "bad signature"


def test_degenerate_ephemeral_key_is_refused():
    """A roster member that signs a transcript with an all-zero ephemeral key gets "malformed"."""
    b = Handshake(BOB, LISTENER, in_roster)
    hello = packed(MAGIC_HELLO, HANDSHAKE_VERSION, DIALER, bytes(ALICE.verify_key), bytes(32), bytes(32))
    b.receive(hello)
    transcript = hashlib.sha256(_TRANSCRIPT_DOMAIN + len(hello).to_bytes(4, "big") + hello
                                + len(b.hello()).to_bytes(4, "big") + b.hello()).digest()
    auth = packed(MAGIC_AUTH, ALICE.sign(_AUTH_DOMAIN + DIALER.encode() + transcript).signature)
    error = refused(b, auth)
    assert error.reason == "malformed"
    assert not b.done


def test_a_second_hello_instead_of_auth_is_malformed():
    a, b = pair()
    b.receive(a.hello())
    assert refused(b, a.hello()).reason == "malformed"


def test_frames_after_the_handshake_are_refused():
    a, b = pair()
    complete(a, b)
    error = refused(a, b.hello())
    assert isinstance(error, HandshakeError)


# --- garbage handshake frames -----------------------------------------------------------------

GARBAGE = {
    "empty": b"",
    "not msgpack": b"\xc1\xc1",
    "trailing data": packed(MAGIC_HELLO) + b"\x00",
    "text frame": "gn-hello",
    "none": None,
    "a map": msgpack.packb({"magic": MAGIC_HELLO}),
    "an int": msgpack.packb(7),
    "empty array": packed(),
    "kind not a string": packed(1, 2, 3),
    "unknown kind": packed("gn-bye"),
    "hello too short": packed(MAGIC_HELLO, 1, DIALER),
    "hello too long": packed(MAGIC_HELLO, 1, DIALER, bytes(32), bytes(32), bytes(32), 0),
    "identity 31 bytes": packed(MAGIC_HELLO, 1, DIALER, bytes(31), bytes(32), bytes(32)),
    "ephemeral a string": packed(MAGIC_HELLO, 1, DIALER, bytes(ALICE.verify_key), "e" * 32, bytes(32)),
    "nonce missing": packed(MAGIC_HELLO, 1, DIALER, bytes(ALICE.verify_key), bytes(32), None),
    "role unknown": packed(MAGIC_HELLO, 1, "observer", bytes(ALICE.verify_key), bytes(32), bytes(32)),
    "ext type": msgpack.packb([MAGIC_HELLO, msgpack.ExtType(1, b"x")]),
    "int map key": msgpack.packb([MAGIC_HELLO, {1: 2}]),
    "auth before hello": packed(MAGIC_AUTH, bytes(64)),
    "oversized": packed(MAGIC_HELLO, 1, DIALER, bytes(ALICE.verify_key), bytes(32), bytes(32), b"x" * 600),
    "oversized garbage": b"\x00" * (MAX_HANDSHAKE_FRAME + 1),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_garbage_hello_is_malformed(name):
    error = refused(Handshake(BOB, LISTENER, in_roster), GARBAGE[name])
    assert error.reason == "malformed", error


@pytest.mark.parametrize("cut", [1, 5, 40, -1])
def test_truncated_hello_is_malformed(cut):
    a, b = pair()
    assert refused(b, a.hello()[:cut]).reason == "malformed"


@pytest.mark.parametrize("frame", [
    b"", b"\xc1", packed(MAGIC_AUTH), packed(MAGIC_AUTH, "signature"), packed(MAGIC_AUTH, bytes(64), 1),
    packed(MAGIC_AUTH, None), packed("gn-other", bytes(64)), b"\x00" * (MAX_HANDSHAKE_FRAME + 1),
], ids=["empty", "not-msgpack", "no-signature", "str-signature", "extra-field", "nil-signature", "wrong-kind",
        "oversized"])
def test_garbage_auth_is_malformed(frame):
    a, b = pair()
    b.receive(a.hello())
    assert refused(b, frame).reason == "malformed"


def test_truncated_auth_is_refused():
    a, b = pair()
    auth = a.receive(b.hello())[0]
    b.receive(a.hello())
    for cut in (1, 10, len(auth) - 1):
        assert refused(b, auth[:cut]).reason in ("malformed", "bad signature")
    assert refused(b, packed(MAGIC_AUTH, msgpack.unpackb(auth)[1][:63])).reason in ("malformed", "bad signature")


# --- SecureLink -----------------------------------------------------------------------------------


@pytest.fixture
def links():
    a, b = pair()
    complete(a, b)
    return a.link, b.link


def test_link_refuses_a_replayed_frame(links):
    a, b = links
    frame = a.seal(b"once")
    assert b.open(frame) == b"once"
    with pytest.raises(LinkError):
        b.open(frame)


def test_link_refuses_reordered_frames(links):
    a, b = links
    first, second = a.seal(b"1"), a.seal(b"2")
    with pytest.raises(LinkError):
        b.open(second)
    assert b.open(first) == b"1"                     # the refused frame did not advance the counter
    assert b.open(second) == b"2"


def test_link_refuses_a_dropped_frame(links):
    a, b = links
    a.seal(b"lost")
    with pytest.raises(LinkError):
        b.open(a.seal(b"after the lost one"))


@pytest.mark.parametrize("cut", [0, 1, 15, 16, -1])
def test_link_refuses_a_truncated_frame(links, cut):
    a, b = links
    frame = a.seal(b"a frame with some content")
    with pytest.raises(LinkError):
        b.open(frame[:cut])


def test_link_refuses_every_single_bit_flip(links):
    a, b = links
    frame = a.seal(b"payload")
    for i in range(len(frame)):
        for bit in (1, 0x80):
            tampered = bytearray(frame)
            tampered[i] ^= bit
            with pytest.raises(LinkError):
                b.open(bytes(tampered))
    assert b.open(frame) == b"payload"


def test_link_refuses_a_reflected_frame(links):
    a, _ = links
    with pytest.raises(LinkError):
        a.open(a.seal(b"to myself"))


@pytest.mark.parametrize("frame", ["text", None, 5, b"\x00" * 100])
def test_link_refuses_non_frames(links, frame):
    _, b = links
    with pytest.raises(LinkError):
        b.open(frame)


def test_link_with_known_keys():
    a, b = SecureLink(bytes(32), bytes([1]) * 32), SecureLink(bytes([1]) * 32, bytes(32))
    assert a.open(b.seal(b"x")) == b"x" and b.open(a.seal(b"y")) == b"y"


# --- fuzz: nothing but HandshakeError leaves Handshake.receive --------------------------------

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(),
                    st.text(max_size=12), st.binary(max_size=40))
values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                   st.dictionaries(st.text(max_size=4), c, max_size=3)),
                      max_leaves=10)
handshake_like = st.one_of(
    st.tuples(st.just(MAGIC_HELLO), st.one_of(st.just(HANDSHAKE_VERSION), values),
              st.one_of(st.sampled_from([DIALER, LISTENER]), values),
              st.one_of(st.sampled_from([bytes(ALICE.verify_key), bytes(BOB.verify_key), bytes(MALLORY.verify_key)]),
                        st.binary(min_size=32, max_size=32), values),
              st.one_of(st.binary(min_size=32, max_size=32), values),
              st.one_of(st.binary(min_size=32, max_size=32), values)),
    st.tuples(st.sampled_from([MAGIC_AUTH, MAGIC_REFUSE]), st.one_of(st.binary(min_size=64, max_size=64), values)),
    st.lists(values, max_size=7),
)


def only_handshake_error(handshake: Handshake, frame) -> None:
    try:
        handshake.receive(frame)
    except HandshakeError as e:
        assert isinstance(e.reason, str) and e.reason
    except Exception as e:  # noqa: BLE001 - that is the point of the test
        pytest.fail(f"{type(e).__name__} escaped Handshake.receive: {e!r} for frame {frame!r}")


def _waiting_for_auth() -> Handshake:
    a, b = pair()
    b.receive(a.hello())
    return b


@FUZZ
@given(st.binary(max_size=700))
def test_fuzz_random_bytes(frame):
    only_handshake_error(Handshake(BOB, LISTENER, in_roster), frame)
    only_handshake_error(Handshake(BOB, DIALER, in_roster), frame)
    only_handshake_error(_waiting_for_auth(), frame)


@FUZZ
@given(handshake_like)
def test_fuzz_handshake_shaped_frames(fields):
    frame = msgpack.packb(list(fields), use_bin_type=True)
    only_handshake_error(Handshake(BOB, LISTENER, in_roster), frame)
    only_handshake_error(_waiting_for_auth(), frame)


@FUZZ
@given(st.lists(st.binary(max_size=120), min_size=1, max_size=4))
def test_fuzz_sequences_of_frames(frames):
    handshake = Handshake(BOB, LISTENER, in_roster)
    for frame in frames:
        only_handshake_error(handshake, frame)


def test_only_a_key_whose_signature_verified_is_marked_verified():
    """A hello may carry any guardian's key: until its signature verifies, the key may not be blamed."""
    mallory = Handshake(MALLORY, DIALER, lambda key: True)
    assert not refused(Handshake(BOB, LISTENER, in_roster), mallory.hello()).key_verified
    a, b = pair()
    auth_from_a = a.receive(b.hello())[0]
    b.receive(a.hello())
    magic, signature = msgpack.unpackb(auth_from_a)
    error = refused(b, packed(magic, bytes(64)))
    assert error.reason == "bad signature" and not error.key_verified
