"""Known answers from electionguard-rust (tests/vectors/electionguard-rust/, see its README).

Each value that implementation computed is recomputed here with this project's own
functions, and each test has a negative control: one altered value is refused or
gives a different answer. The example artifacts were written by 2.0-era code;
where a 2.0 hash differs from 2.1 only in its header (the version string, the
domain separator, what follows it), the test builds that header and the rest is
this project's encoding and hashing.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import pytest
from gmpy2 import mpz

from node.crypto.ballot import PlaintextBallot
from node.crypto.decryption import Part, PublicShares
from node.crypto.election import generator_table
from node.crypto.errors import GroupMembershipError, ManifestError
from node.crypto.group import check_elements
from node.crypto.hashing import VERSION, H, parameter_base_hash
from node.crypto.keys import evaluate_polynomial, joint_key, lagrange_coefficient, verify_share
from node.crypto.manifest import canonical_json, parse_manifest
from node.crypto.params import STANDARD, encode_p, encode_q

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "electionguard-rust"
PUBLIC = VECTORS / "example_artifacts" / "public"
N, K = 5, 3
GUARDIANS = range(1, N + 1)

# ver of the 2.0 spec: b("v2.0.0") || b(0, 26), as in 2.1's spec 3.1.2 with the older string
VERSION_2_0 = b"v2.0.0" + bytes(26)


def load(path: Path):
    return json.loads(path.read_bytes())


def hexint(text: str) -> mpz:
    return mpz(text, 16)


@pytest.fixture(scope="module")
def g_table():
    return generator_table(STANDARD)


@pytest.fixture(scope="module")
def secrets() -> dict[int, list[mpz]]:
    """a_i,0 .. a_i,k-1 of each guardian, from its SECRET file."""
    out = {}
    for i in GUARDIANS:
        obj = load(VECTORS / "example_artifacts" / f"SECRET_for_guardian_{i}" / f"guardian_{i}.SECRET_key.json")
        assert obj["i"] == i
        out[i] = [hexint(a) for a in obj["secret_coefficients"]]
        assert len(out[i]) == K
    return out


@pytest.fixture(scope="module")
def commitments() -> dict[int, list[mpz]]:
    """K_i,0 .. K_i,k-1 of each guardian, from its public key file."""
    return {i: [hexint(c) for c in load(PUBLIC / f"guardian_{i}.public_key.json")["coefficient_commitments"]]
            for i in GUARDIANS}


def parameter_base_hash_2_0(p: int = STANDARD.p, q: int = STANDARD.q, g: int = STANDARD.g) -> bytes:
    """H_P of spec 2.0: H(ver; 0x00, p, q, g); 2.1 appends n and k (eq 4)."""
    return H(VERSION_2_0, b"\x00" + encode_p(STANDARD, p) + encode_q(STANDARD, q) + encode_p(STANDARD, g))


# --------------------------------------------------------------------------- parameters and H_P


def test_parameters_are_the_standard_ones():
    """The file's p, q, g are those of node.crypto.params, and its 2.0 H_P is over them."""
    group = load(PUBLIC / "election_parameters.json")["fixed_parameters"]["group"]
    p, q, g = hexint(group["p"]), hexint(group["q"]), hexint(group["g"])
    assert (p, q, g) == (STANDARD.p, STANDARD.q, STANDARD.g)
    h_p = load(PUBLIC / "hashes.json")["h_p"]
    assert parameter_base_hash_2_0(p, q, g).hex().upper() == h_p
    # negative control: g altered by one is another H_P
    assert parameter_base_hash_2_0(p, q, g + 1).hex().upper() != h_p


def test_parameter_base_hash_spec_2_1():
    """H_P = H(ver; 0x00, p, q, g, n, k) (eq 4), the one value the repository computed for 2.1."""
    vector = load(VECTORS / "spec_2_1_values.json")["parameter_base_hash"]
    assert (vector["n"], vector["k"]) == (N, K)
    assert parameter_base_hash(STANDARD, N, K).hex().upper() == vector["h_p"]
    # negative control: another quorum is another H_P
    assert parameter_base_hash(STANDARD, N, K - 1).hex().upper() != vector["h_p"]
    assert parameter_base_hash(STANDARD, N + 1, K).hex().upper() != vector["h_p"]


def test_parameter_base_hash_spec_2_0():
    """The 2.0 H_P of hashes.json: the same encodings of p, q, g under the older header."""
    hashes = load(PUBLIC / "hashes.json")
    assert parameter_base_hash_2_0().hex().upper() == hashes["h_p"]
    # negative control: the 2.1 version string under the same data gives another hash
    g = STANDARD
    other = H(VERSION, b"\x00" + encode_p(g, g.p) + encode_q(g, g.q) + encode_p(g, g.g))
    assert other.hex().upper() != hashes["h_p"]


# --------------------------------------------------------------------------- the manifest


def test_manifest_is_refused_strictly():
    """What this project writes or accepts from a peer follows the MUST rules: this file does not."""
    with pytest.raises(ManifestError, match="contest_options"):
        parse_manifest((PUBLIC / "election_manifest.json").read_bytes())


def test_manifest_parses_leniently_to_its_canonical_bytes():
    canonical = (PUBLIC / "election_manifest_canonical.bin").read_bytes()
    pretty = parse_manifest((PUBLIC / "election_manifest.json").read_bytes(), strict=False)
    assert pretty.canonical_bytes() == canonical
    from_canonical = parse_manifest(canonical, strict=False)
    assert from_canonical.canonical_bytes() == canonical
    assert from_canonical == pretty
    assert len(from_canonical.contests) == 11 and len(from_canonical.ballot_styles) == 17
    # every deviation is named, none is an error
    devs = from_canonical.deviations
    assert "contests[0] uses 'contest_options' where 2.1 says 'options'" in devs
    assert "contests[0].contest_options[0].label contains a line break (U+000A)" in devs
    assert "contests[5].label contains a line break (U+000A)" in devs
    assert sum("uses 'contest_options'" in d for d in devs) == 11
    assert not any("not in canonical form" in d for d in devs)
    assert any("not in canonical form" in d for d in pretty.deviations)
    # the effective limits of the 2.0-era manifest: contest 10 states 2147483647 and CONTEST_LIMIT
    librarian = from_canonical.contest(10)
    assert librarian.selection_limit == 2**31 - 1
    assert [o.selection_limit for o in librarian.options] == [2**31 - 1, 2**31 - 1]
    # negative control: one altered byte is another manifest with other canonical bytes
    altered = canonical.replace("Imaginaria".encode(), "Imaginarja".encode(), 1)
    assert parse_manifest(altered, strict=False).canonical_bytes() != canonical


def test_manifest_hash_h_m_spec_2_0():
    """H_M = H(H_P; 0x01, manifest) of 2.0 (eq 5 of 2.1 adds the length prefix) over the canonical bytes."""
    hashes = load(PUBLIC / "hashes.json")
    manifest = parse_manifest((PUBLIC / "election_manifest.json").read_bytes(), strict=False)
    h_p = parameter_base_hash_2_0()
    assert H(h_p, b"\x01" + manifest.canonical_bytes()).hex().upper() == hashes["h_m"]
    # negative control: this project's own canonical form of the same manifest hashes differently
    ours = canonical_json(manifest.to_json_dict())
    assert ours != manifest.canonical_bytes()
    assert H(h_p, b"\x01" + ours).hex().upper() != hashes["h_m"]


# --------------------------------------------------------------------------- guardian public keys


@pytest.mark.parametrize("i", GUARDIANS)
def test_guardian_public_key_canonical_json(i):
    pretty = load(PUBLIC / f"guardian_{i}.public_key.json")
    canonical = (PUBLIC / f"guardian_{i}.public_key_canonical.bin").read_bytes()
    assert canonical_json(pretty) == canonical
    assert json.loads(canonical) == pretty
    # negative control: one property moved is other bytes
    moved = {k: pretty[k] for k in reversed(list(pretty))}
    assert canonical_json(moved) != canonical


def test_guardian_commitments_are_in_the_group(commitments):
    """Verification 2.A over every K_i,j."""
    items = [(c, f"K_{i},{j}") for i in GUARDIANS for j, c in enumerate(commitments[i])]
    check_elements(STANDARD, items)
    # negative control: one commitment plus 1 is not in Z_p^r
    bad = list(items)
    bad[4] = (bad[4][0] + 1, bad[4][1])
    with pytest.raises(GroupMembershipError, match=bad[4][1]):
        check_elements(STANDARD, bad)


def test_joint_key(commitments):
    """K = prod K_i (eq 25)."""
    expected = hexint(load(PUBLIC / "joint_election_public_key.json")["joint_election_public_key"])
    assert joint_key(STANDARD, [commitments[i][0] for i in GUARDIANS]) == expected
    # negative control: without guardian 5, or with one key altered, another K
    assert joint_key(STANDARD, [commitments[i][0] for i in GUARDIANS if i != 5]) != expected
    assert joint_key(STANDARD, [commitments[1][1]] + [commitments[i][0] for i in GUARDIANS if i != 1]) != expected


# --------------------------------------------------------------------------- the secret coefficients


def test_commitments_from_secret_coefficients(g_table, secrets, commitments):
    """K_i,j = g^a_i,j (eq 8), and the SECRET files repeat the public commitments."""
    for i in GUARDIANS:
        secret_file = load(VECTORS / "example_artifacts" / f"SECRET_for_guardian_{i}" / f"guardian_{i}.SECRET_key.json")
        assert [hexint(c) for c in secret_file["coefficient_commitments"]] == commitments[i]
        assert [g_table.pow(a) for a in secrets[i]] == commitments[i]
    # negative control: a_1,1 + 1 does not open K_1,1
    assert g_table.pow(secrets[1][1] + 1) != commitments[1][1]


def test_every_share_checks_against_the_commitments(g_table, secrets, commitments):
    """g^P_i(l) = prod_j K_i,j^(l^j) (eq 28) for every sender i and recipient l."""
    for i, l in itertools.product(GUARDIANS, GUARDIANS):
        share = evaluate_polynomial(STANDARD, secrets[i], l)
        assert verify_share(STANDARD, g_table, commitments[i], l, share), (i, l)
    # negative control: a share off by one, or the share of another recipient, is refused
    share = evaluate_polynomial(STANDARD, secrets[2], 4)
    assert not verify_share(STANDARD, g_table, commitments[2], 4, (share + 1) % STANDARD.q)
    assert not verify_share(STANDARD, g_table, commitments[2], 3, share)


def test_every_quorum_gives_the_joint_secret(g_table, secrets, commitments):
    """For each 3-of-5 set U: sum_{l in U} w_l z_l = s = sum_i a_i,0 (eqs 24, 85), and g^s = K (eq 25)."""
    q = STANDARD.q
    expected_k = hexint(load(PUBLIC / "joint_election_public_key.json")["joint_election_public_key"])
    s = sum(secrets[i][0] for i in GUARDIANS) % q
    assert g_table.pow(s) == expected_k
    z = {l: sum(evaluate_polynomial(STANDARD, secrets[i], l) for i in GUARDIANS) % q for l in GUARDIANS}
    quorums = list(itertools.combinations(GUARDIANS, K))
    assert len(quorums) == 10
    for present in quorums:
        combined = sum(lagrange_coefficient(STANDARD, l, present) * z[l] for l in present) % q
        assert combined == s, present
    # g^z_l from the commitments alone (eq 94), as the verifier computes it
    publics = PublicShares(STANDARD, commitments)
    for l in GUARDIANS:
        assert publics.public(Part(l, None, mpz(1)), compensated=False) == g_table.pow(z[l])
    # negative controls: two guardians are not a quorum; weights for another set do not combine
    pair = (1, 2)
    assert sum(lagrange_coefficient(STANDARD, l, pair) * z[l] for l in pair) % q != s
    weights = [lagrange_coefficient(STANDARD, l, (1, 2, 3)) for l in (1, 2, 3)]
    assert sum(w * z[l] for w, l in zip(weights, (1, 2, 4))) % q != s


# --------------------------------------------------------------------------- guardian verify on a record with this manifest


def test_guardian_verify_warns_on_the_rust_manifest(tmp_path):
    """A record whose manifest is electionguard-rust's verifies, each deviation a warning naming its field.

    `guardian verify` reads the record's manifest leniently: every step passes, H_B is over the
    manifest's bytes as written, and each of Manifest.deviations is in the report's "warnings".
    """
    canonical = (PUBLIC / "election_manifest_canonical.bin").read_bytes()
    manifest = parse_manifest(canonical, strict=False)
    report = _verify_record_with(manifest, tmp_path)
    assert report["ok"] is True, [(s["step"], s["failures"]) for s in report["steps"] if s["result"] == "FAIL"]
    assert report["steps"][0]["result"] == "pass"
    assert (tmp_path / "record" / "election_manifest.json").read_bytes() == canonical
    warnings = report["warnings"]
    for deviation in manifest.deviations:
        assert any(deviation in w for w in warnings), deviation
    assert any("contests[0].contest_options[0].label contains a line break" in w for w in warnings)


def _verify_record_with(manifest, tmp_path: Path) -> dict:
    """A small complete record (3 guardians, quorum 2, one ballot, guardian 2 missing) and its verification."""
    from node.cli.main import main
    from node.record import codec
    from node.record.encrypt import encrypt_records
    from node.record.ballot_box import BallotBox, Submission
    from node.record.local import create_local_election, decrypt_local

    root, secrets_dir = tmp_path / "record", tmp_path / "secrets"
    ctx = create_local_election(root, secrets_dir, manifest, 3, 2, "known answers", "2025-01-01").context
    contest = manifest.contest(manifest.ballot_style(1).contests[0])
    plain = PlaintextBallot("b-1", manifest.ballot_style(1).label, {contest.label: {contest.option(1).label: 1}})
    subs = []
    for _, rec in encrypt_records(ctx, [plain], "booth-1", None, workers=1):
        assert not isinstance(rec, str), rec
        subs.append(Submission(rec.ballot_id, codec.canonical_bytes(codec.ballot_to_json(STANDARD, rec)), codec.CAST))
    with BallotBox.open(root) as box:
        outcomes = box.submit(subs, workers=1)
        assert all(o.accepted for o in outcomes), [o.reason for o in outcomes]
        box.tally()
    decrypt_local(root, secrets_dir, missing=[2], compensated=True)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["verify", str(root), "--json", "--workers", "1"])
    return json.loads(out.getvalue())
