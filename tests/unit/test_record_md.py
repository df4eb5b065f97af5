"""node/record/RECORD.md against the code: every hash it documents has the code's key, domain separator and label.

RECORD.md is what an outside verifier is built from, so a separator or a label it
gets wrong makes every such verifier fail. The test reads each `H(key; 0xNN, ...)`
and `H_q(key; 0xNN, "label", ...)` of the page, runs the functions that compute
those hashes with a spy on H and H_q, and checks that some call has that key, that
first byte of B1 and, right after it, that label's bytes; and that every hash the
spied functions compute is documented.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest

from node.crypto import hashing
from node.crypto.ballot import (
    NO_CHAINING, SIMPLE_CHAINING, BallotChain, confirmation_code, contest_hash, encrypt_ballot_nonce,
    identifier_hash, selection_nonce, unchained_field,
)
from node.crypto.decryption import NonceStatement, TallyStatement
from node.crypto.election import ElectionContext, ElectionParameters, generator_table
from node.crypto.elgamal import encrypt
from node.crypto.keys import generate_guardian_key
from node.crypto.manifest import parse_manifest
from node.crypto.params import TOY_64
from node.crypto.range_proof import contest_prefix, prove_range, selection_prefix

RECORD_MD = Path(__file__).resolve().parents[2] / "node" / "record" / "RECORD.md"

# H(key; 0xNN, "label", ...) or H_q(...): the key, the separator and an optional quoted label
HASH = re.compile(r'\b(H_q|H)\((ver|H_P|H_B|H_E|H_I); (0x[0-9A-Fa-f]{2})(?:, "([^"]*)")?')
# a 4-byte chaining mode identifier followed by what it prefixes
MODE = re.compile(r"(0x[0-9A-F]{8}) \|\| (H_DI|H_\(j-1\)|H\()")

# distinct keys, so that each captured call names the hash it was keyed with
KEYS = {hashing.VERSION: "ver", b"P" * 32: "H_P", b"B" * 32: "H_B", b"E" * 32: "H_E", b"I" * 32: "H_I"}
P, B, E, I = (k for k, name in KEYS.items() if name != "ver")


def documented() -> set[tuple[str, str, int, str]]:
    """(function, key, separator, label) of every hash RECORD.md writes out."""
    text = RECORD_MD.read_text(encoding="utf-8")
    found = {(fn, key, int(sep, 16), label or "") for fn, key, sep, label in HASH.findall(text)}
    assert len(found) >= 15, "RECORD.md documents fewer hashes than expected: is the pattern still right?"
    return found


@pytest.fixture(scope="module")
def captured() -> list[tuple[str, str, bytes]]:
    """(function, key name, B1) of every H and H_q the record's hashes are computed with."""
    calls: list[tuple[str, bytes, bytes]] = []
    original_h, original_hq = hashing.H, hashing.H_q
    inside_hq = [0]

    def spy_h(key, data):
        if not inside_hq[0]:
            calls.append(("H", key, data))
        return original_h(key, data)

    def spy_hq(group, key, data):
        calls.append(("H_q", key, data))
        inside_hq[0] += 1
        try:
            return original_hq(group, key, data)
        finally:
            inside_hq[0] -= 1

    patched = []
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith("node."):
            continue
        for name, original, spy in (("H", original_h, spy_h), ("H_q", original_hq, spy_hq)):
            if getattr(module, name, None) is original:
                setattr(module, name, spy)
                patched.append((module, name, original))
    try:
        _compute_every_documented_hash()
    finally:
        for module, name, original in patched:
            setattr(module, name, original)
    return [(fn, KEYS.get(key, "?"), data) for fn, key, data in calls]


def _compute_every_documented_hash() -> None:
    group = TOY_64
    g = generator_table(group)
    rng = random.Random(3)
    manifest = parse_manifest({"label": "E", "contests": [{"label": "C", "options": [{"label": "A"}, {"label": "B"}]}],
                               "ballot_styles": [{"label": "S", "contests": [1]}]})
    ctx = ElectionContext(ElectionParameters(group, 3, 2, manifest), g.pow(5), g.pow(7))
    k, k_hat = ctx.joint_key, ctx.joint_data_key
    hashing.parameter_base_hash(group, 3, 2)                                      # eq 4
    hashing.election_base_hash(P, b"{}")                                          # eq 5
    generate_guardian_key(group, g, P, 1, 2, rng=rng)                             # eqs 11, 13
    hashing.guardian_record_hash(group, B, k, k_hat, [[k]], [[k_hat]], [g.pow(9)])  # eq 27
    hashing.extended_base_hash(group, B, k, k_hat)                                # eq 30
    identifier_hash(E, 12345)                                                     # eq 32
    selection_nonce(ctx, I, 1, 2, 99)                                             # eq 33
    ct = encrypt(ctx.g_table, ctx.k_table, 1, 5)
    prove_range(group, g, ctx.k_table, I, selection_prefix(1, 2), ct, 5, 1, 1, rng)   # eq 59
    prove_range(group, g, ctx.k_table, I, contest_prefix(1), ct, 5, 1, 1, rng)        # eq 62
    contest_hash(ctx, I, 1, [ct])                                                 # eq 70
    confirmation_code(I, [bytes(32)], unchained_field(E, "booth"))                # eqs 71-73
    chain = BallotChain(E, "booth")
    chain.advance(bytes(32))
    chain.closing_hash()                                                          # eqs 77, 78
    BallotChain(E, "booth").initial_code                                          # eq 74
    encrypt_ballot_nonce(ctx, I, 77, rng)                                         # eqs 35-38
    TallyStatement(E, 1, 2, ct.alpha, ct.beta).challenge(group, 1, 1, 1)          # eq 90
    NonceStatement(I, ct.alpha, bytes(32), bytes(64)).challenge(group, 1, 1, 1)   # eq 101


def _found(captured, fn: str, key: str, sep: int, label: str) -> bool:
    return any(c_fn == fn and c_key == key and data[:1] == bytes([sep]) and data[1:].startswith(label.encode())
               for c_fn, c_key, data in captured)


def test_every_documented_hash_matches_the_code(captured):
    missing = [(fn, key, f"0x{sep:02X}", label) for fn, key, sep, label in sorted(documented())
               if not _found(captured, fn, key, sep, label)]
    assert not missing, f"RECORD.md documents hashes the code does not compute: {missing}"


def test_every_hash_computed_is_documented(captured):
    doc = {(fn, key, sep) for fn, key, sep, _ in documented()}
    computed = {(fn, key, data[0]) for fn, key, data in captured}
    assert computed <= doc, f"hashes computed but not in RECORD.md: {sorted(computed - doc)}"
    assert {k for k in computed if k[1] == "?"} == set()


def test_key_proof_labels(captured):
    """Check 2.C: the labels are the bytes of pk_vote and pk_data (spec 5.5.2), not 'pk vote'."""
    labels = {label for fn, key, sep, label in documented() if sep == 0x10}
    assert labels == {"pk_vote", "pk_data"}
    assert bytes.fromhex("706B5F766F7465") == b"pk_vote" and bytes.fromhex("706B5F64617461") == b"pk_data"
    for label in labels:
        assert _found(captured, "H_q", "H_P", 0x10, label)
    # negative control: the label with a space, as RECORD.md had it, is not what the code hashes
    assert not _found(captured, "H_q", "H_P", 0x10, "pk vote")
    assert not _found(captured, "H_q", "H_P", 0x10, "pk data")


def test_chaining_mode_identifiers():
    """0x00000000 || H_DI without chaining, 0x00000001 || ... with simple chaining (eqs 73, 75, 76, 78)."""
    text = RECORD_MD.read_text(encoding="utf-8")
    modes = {(bytes.fromhex(mode[2:]), what) for mode, what in MODE.findall(text)}
    chain = BallotChain(E, "booth")
    h_di = unchained_field(E, "booth")[4:]
    assert unchained_field(E, "booth") == NO_CHAINING + h_di
    assert chain.initial_field == SIMPLE_CHAINING + h_di
    chain.advance(b"\x07" * 32)
    assert chain.next_field() == SIMPLE_CHAINING + b"\x07" * 32
    assert modes == {(NO_CHAINING, "H_DI"), (SIMPLE_CHAINING, "H_DI"), (SIMPLE_CHAINING, "H_(j-1)"),
                     (SIMPLE_CHAINING, "H(")}
