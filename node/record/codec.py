"""The election record's objects as JSON, both ways. Pure: parsed JSON in, dataclasses out, and back.

Writers produce dicts whose property order is the canonical order (see RECORD.md);
`canonical_bytes` turns one into the canonical JSON of the serialization spec
(UTF-8, no whitespace, no trailing newline). Big integers are uppercase hex of
fixed width: l_p bytes for elements of Z_p, l_q bytes for Z_q, 32 for hashes.

Readers check types, lengths and small-integer ranges, and refuse unknown or
repeated properties, raising EncodingError (an InputError) that names the field
path, e.g. "ballot 'b-7' contest 2 option 3 proof challenge 1". Whether a value
lies in Z_p^r or Z_q is a verification step (2.A, 6.A-6.C, ...) and is left to
the verifier, so that a record with a bad value is reported by the right step.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping

from gmpy2 import mpz

from node.crypto.ballot import (
    EncryptedBallot, EncryptedContest, EncryptedNonce, EncryptedSelection, PlaintextBallot,
)
from node.crypto.ballot_signature import BallotSignature
from node.crypto.decryption import ThresholdKey
from node.crypto.elgamal import Ciphertext
from node.crypto.encoding import from_hex, to_hex
from node.crypto.errors import EncodingError
from node.crypto.keys import GuardianPublicKey, KeyProof
from node.crypto.manifest import canonical_json
from node.crypto.params import GROUPS, Group
from node.crypto.range_proof import MAX_RANGE, RangeProof
from node.crypto.tally import EncryptedTally

SMALL_MAX = 2**31 - 1          # small integers (serialization spec "Small integers")
MEDIUM_MAX = 2**53 - 1         # vote totals (serialization spec "Medium integers")
HASH_BYTES = 32
CHAINING_FIELD_BYTES = 36      # B_C (spec 3.4.2)
MAX_ITEMS = 100_000            # no list in a record is longer; a guard against absurd input

SPEC_VERSION = (2, 1)          # design specification 2.1 (Verification 1.A)
STANDARD_GENERATION = {        # spec 3.1.1: how the standard p and q were generated
    "q_bits_total": 256,
    "p_bits_total": 4096,
    "p_bits_msb_fixed_1": 256,
    "p_middle_bits_source": "ln_2",
    "p_bits_lsb_fixed_1": 256,
}
CHAINING_POLICIES = ("Prohibited", "Allowed", "Required")
ENCRYPTED = "VoterSelectionsEncrypted"
CAST = "Cast"
CHALLENGED = "Challenged"
BALLOT_STATES = (ENCRYPTED, CAST, CHALLENGED)
FORMS = ("standard", "compensated")
CHAINING_MODES = ("none", "simple")


# --------------------------------------------------------------------------- JSON text


def canonical_bytes(obj: Any) -> bytes:
    """The canonical JSON of the serialization spec: what is written and what index.json hashes."""
    return canonical_json(obj)


class _Object(dict):
    __slots__ = ("duplicates",)


def _pairs(pairs: list) -> _Object:
    obj = _Object()
    dups = []
    for key, value in pairs:
        if key in obj:
            dups.append(key)
        obj[key] = value
    obj.duplicates = dups
    return obj


def _no_constant(name: str):
    raise EncodingError(f"{name} is not a JSON value")


def load_json(data: bytes, what: str) -> Any:
    """Parse a record file: UTF-8 without BOM, RFC 8259 JSON, no repeated property names."""
    if not isinstance(data, (bytes, bytearray)):
        raise EncodingError(f"{what}: expected bytes")
    if data.startswith(b"\xef\xbb\xbf"):
        raise EncodingError(f"{what}: starts with a byte order mark")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise EncodingError(f"{what}: not valid UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant,
                           parse_float=lambda s: _no_float(s, what))
    except json.JSONDecodeError as e:
        raise EncodingError(f"{what}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise EncodingError(f"{what}: nested too deeply") from None
    except EncodingError as e:
        raise EncodingError(f"{what}: {e}") from None
    return value


def _no_float(text: str, what: str):
    raise EncodingError(f"non-integer number {text} (the record has only integers)")


# --------------------------------------------------------------------------- field readers


def _obj(value: object, where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    if not isinstance(value, dict):
        raise EncodingError(f"{where}: expected a JSON object")
    dups = getattr(value, "duplicates", ())
    if dups:
        raise EncodingError(f"{where}: property {dups[0]!r} appears more than once")
    for key in value:
        if key not in required and key not in optional:
            raise EncodingError(f"{where}: unknown property {key!r}")
    for key in required:
        if key not in value:
            raise EncodingError(f"{where}: missing property {key!r}")
    return value


def _list(value: object, where: str, min_len: int = 0, max_len: int = MAX_ITEMS) -> list:
    if not isinstance(value, list):
        raise EncodingError(f"{where}: expected a JSON array")
    if not min_len <= len(value) <= max_len:
        raise EncodingError(f"{where}: expected {min_len}..{max_len} entries, got {len(value)}")
    return value


def _int(value: object, where: str, minimum: int = 0, maximum: int = SMALL_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EncodingError(f"{where}: expected an integer")
    if not minimum <= value <= maximum:
        raise EncodingError(f"{where}: {value} is outside {minimum}..{maximum}")
    return value


def _text(value: object, where: str, max_len: int = 10_000) -> str:
    if not isinstance(value, str):
        raise EncodingError(f"{where}: expected a string")
    if not value:
        raise EncodingError(f"{where}: must not be empty")
    if len(value) > max_len:
        raise EncodingError(f"{where}: longer than {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EncodingError(f"{where}: contains a lone surrogate") from None
    return value


def _choice(value: object, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise EncodingError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _p(group: Group, value: object, where: str) -> mpz:
    return from_hex(value, group.p_bytes, where)


def _q(group: Group, value: object, where: str) -> mpz:
    return from_hex(value, group.q_bytes, where)


def _bytes(value: object, length: int, where: str) -> bytes:
    return int(from_hex(value, length, where)).to_bytes(length, "big")


def _hash(value: object, where: str) -> bytes:
    return _bytes(value, HASH_BYTES, where)


def hex_hash(data: bytes) -> str:
    """A 32-byte hash as 64 uppercase hex digits (serialization spec "Hash values")."""
    return data.hex().upper()


def _hp(group: Group, x: int) -> str:
    return to_hex(x, group.p_bytes)


def _hq(group: Group, x: int) -> str:
    return to_hex(x, group.q_bytes)


# --------------------------------------------------------------------------- election parameters


@dataclass(frozen=True)
class RecordParameters:
    """election_parameters.json: the group, n, k and the election's descriptive data."""

    group: Group
    n: int
    k: int
    info: str
    date: str | None = None
    ballot_chaining: str = "Allowed"
    version: tuple[int, ...] = SPEC_VERSION
    generation: Mapping[str, object] | None = None   # as read; None means "as for the standard group"


def group_from_values(p: mpz, q: mpz, g: mpz) -> Group:
    """The named group with these values, or an unnamed one (which Verification 1 refuses)."""
    for known in GROUPS.values():
        if known.p == p and known.q == q and known.g == g:
            return known
    return Group("unnamed", p, q, g)


def _generation(group: Group) -> dict:
    if group.is_standard:
        return dict(STANDARD_GENERATION)
    return {"q_bits_total": int(group.q).bit_length(), "p_bits_total": int(group.p).bit_length(),
            "p_bits_msb_fixed_1": 0, "p_middle_bits_source": "none", "p_bits_lsb_fixed_1": 0}


def parameters_to_json(params: RecordParameters) -> dict:
    group = params.group
    varying: dict[str, Any] = {"n": params.n, "k": params.k, "info": params.info}
    if params.date:
        varying["date"] = params.date
    varying["ballot_chaining"] = params.ballot_chaining
    return {
        "fixed_parameters": {
            "ElectionGuard_Design_Specification_version": {"number": list(params.version)},
            "generation_parameters": dict(params.generation or _generation(group)),
            "field": {"q": _hq(group, group.q)},
            "group": {"p": _hp(group, group.p), "g": _hp(group, group.g), "q": _hq(group, group.q)},
        },
        "varying_parameters": varying,
    }


def parameters_from_json(obj: object) -> RecordParameters:
    where = "election_parameters"
    top = _obj(obj, where, ("fixed_parameters", "varying_parameters"))
    fixed = _obj(top["fixed_parameters"], f"{where} fixed_parameters",
                 ("ElectionGuard_Design_Specification_version", "generation_parameters", "field", "group"))
    ver = _obj(fixed["ElectionGuard_Design_Specification_version"],
               f"{where} ElectionGuard_Design_Specification_version", ("number",))
    version = tuple(_int(x, f"{where} version number {i}") for i, x in
                    enumerate(_list(ver["number"], f"{where} version number", 1, 4)))
    gen_where = f"{where} generation_parameters"
    gen = _obj(fixed["generation_parameters"], gen_where, tuple(STANDARD_GENERATION))
    generation = {key: (_text(gen[key], f"{gen_where} {key}", 64) if key == "p_middle_bits_source"
                        else _int(gen[key], f"{gen_where} {key}")) for key in STANDARD_GENERATION}
    grp = _obj(fixed["group"], f"{where} group", ("p", "g", "q"))
    p_text = grp["p"]
    if not isinstance(p_text, str) or len(p_text) % 2:
        raise EncodingError(f"{where} group p: expected an even number of uppercase hex digits")
    p_bytes = len(p_text) // 2
    p = from_hex(p_text, p_bytes, f"{where} group p")
    q_text = grp["q"]
    if not isinstance(q_text, str) or len(q_text) % 2:
        raise EncodingError(f"{where} group q: expected an even number of uppercase hex digits")
    q = from_hex(q_text, len(q_text) // 2, f"{where} group q")
    g = from_hex(grp["g"], p_bytes, f"{where} group g")
    field = _obj(fixed["field"], f"{where} field", ("q",))
    if from_hex(field["q"], len(q_text) // 2, f"{where} field q") != q:
        raise EncodingError(f"{where}: field q and group q differ")
    if q < 2 or p <= q:
        raise EncodingError(f"{where} group: need 2 <= q < p")
    group = group_from_values(p, q, g)
    if group.p_bytes != p_bytes or group.q_bytes != len(q_text) // 2:
        raise EncodingError(f"{where} group: p and q must be written with exactly l_p and l_q bytes")
    var_where = f"{where} varying_parameters"
    var = _obj(top["varying_parameters"], var_where, ("n", "k", "info"), ("date", "ballot_chaining"))
    n = _int(var["n"], f"{var_where} n", 1)
    k = _int(var["k"], f"{var_where} k", 1)
    if k > n:
        raise EncodingError(f"{var_where}: k = {k} is larger than n = {n}")
    date = _text(var["date"], f"{var_where} date", 100) if "date" in var else None
    chaining = _choice(var.get("ballot_chaining", "Allowed"), f"{var_where} ballot_chaining", CHAINING_POLICIES)
    return RecordParameters(group, n, k, _text(var["info"], f"{var_where} info"), date, chaining, version,
                            generation)


# --------------------------------------------------------------------------- hashes and keys


@dataclass(frozen=True)
class Hashes:
    h_p: bytes
    h_b: bytes


def hashes_to_json(h: Hashes) -> dict:
    return {"h_p": hex_hash(h.h_p), "h_b": hex_hash(h.h_b)}


def hashes_from_json(obj: object) -> Hashes:
    d = _obj(obj, "hashes", ("h_p", "h_b"))
    return Hashes(_hash(d["h_p"], "hashes h_p"), _hash(d["h_b"], "hashes h_b"))


def hashes_ext_to_json(h_e: bytes) -> dict:
    return {"h_e": hex_hash(h_e)}


def hashes_ext_from_json(obj: object) -> bytes:
    return _hash(_obj(obj, "hashes_ext", ("h_e",))["h_e"], "hashes_ext h_e")


@dataclass(frozen=True)
class JointKeys:
    joint_key: mpz          # K (eq 25)
    joint_data_key: mpz     # K-hat (eq 26)


def joint_keys_to_json(group: Group, keys: JointKeys) -> dict:
    return {"joint_election_public_key": _hp(group, keys.joint_key),
            "joint_ballot_data_public_key": _hp(group, keys.joint_data_key)}


def joint_keys_from_json(group: Group, obj: object) -> JointKeys:
    where = "joint_election_public_key"
    d = _obj(obj, where, ("joint_election_public_key", "joint_ballot_data_public_key"))
    return JointKeys(_p(group, d["joint_election_public_key"], f"{where} K"),
                     _p(group, d["joint_ballot_data_public_key"], f"{where} K-hat"))


def ceremony_to_json(h_g: bytes, method: str) -> dict:
    return {"h_g": hex_hash(h_g), "method": method}


def ceremony_from_json(obj: object) -> tuple[bytes, str]:
    d = _obj(obj, "key_ceremony", ("h_g", "method"))
    return _hash(d["h_g"], "key_ceremony h_g"), _text(d["method"], "key_ceremony method", 200)


def _key_proof_to_json(group: Group, proof: KeyProof) -> dict:
    return {"challenge": _hq(group, proof.challenge), "responses": [_hq(group, v) for v in proof.responses]}


def _key_proof_from_json(group: Group, obj: object, where: str) -> KeyProof:
    d = _obj(obj, where, ("challenge", "responses"))
    responses = tuple(_q(group, v, f"{where} response {j}")
                      for j, v in enumerate(_list(d["responses"], f"{where} responses", 2)))
    return KeyProof(_q(group, d["challenge"], f"{where} challenge"), responses)


def guardian_key_to_json(group: Group, key: GuardianPublicKey) -> dict:
    return {
        "i": key.index,
        "name": key.name,
        "coefficient_commitments": [_hp(group, x) for x in key.commitments],
        "coefficient_proof": _key_proof_to_json(group, key.proof),
        "data_coefficient_commitments": [_hp(group, x) for x in key.data_commitments],
        "data_coefficient_proof": _key_proof_to_json(group, key.data_proof),
        "communication_public_key": _hp(group, key.communication_key),
    }


def guardian_key_from_json(group: Group, obj: object, what: str = "guardian public key") -> GuardianPublicKey:
    d = _obj(obj, what, ("i", "name", "coefficient_commitments", "coefficient_proof",
                         "data_coefficient_commitments", "data_coefficient_proof", "communication_public_key"))
    i = _int(d["i"], f"{what} i", 1)
    who = f"guardian {i}"
    commitments = tuple(_p(group, x, f"{who} commitment {j}")
                        for j, x in enumerate(_list(d["coefficient_commitments"], f"{who} coefficient_commitments", 1)))
    data_commitments = tuple(
        _p(group, x, f"{who} data commitment {j}")
        for j, x in enumerate(_list(d["data_coefficient_commitments"], f"{who} data_coefficient_commitments", 1)))
    return GuardianPublicKey(
        index=i,
        name=_text(d["name"], f"{who} name", 200),
        commitments=commitments,
        data_commitments=data_commitments,
        communication_key=_p(group, d["communication_public_key"], f"{who} communication_public_key"),
        proof=_key_proof_from_json(group, d["coefficient_proof"], f"{who} coefficient_proof"),
        data_proof=_key_proof_from_json(group, d["data_coefficient_proof"], f"{who} data_coefficient_proof"),
    )


# --------------------------------------------------------------------------- guardian secrets (tests only)


def threshold_key_to_json(group: Group, key: ThresholdKey) -> dict:
    return {"own_secret": _hq(group, key.own_secret),
            "received": [{"from": j, "share": _hq(group, key.received[j])} for j in sorted(key.received)]}


def threshold_key_from_json(group: Group, index: int, obj: object, where: str) -> ThresholdKey:
    d = _obj(obj, where, ("own_secret", "received"))
    received = {}
    for pos, entry in enumerate(_list(d["received"], f"{where} received", 1)):
        e = _obj(entry, f"{where} received {pos}", ("from", "share"))
        j = _int(e["from"], f"{where} received {pos} from", 1)
        if j in received:
            raise EncodingError(f"{where}: two shares from guardian {j}")
        received[j] = _q(group, e["share"], f"{where} share from guardian {j}")
    return ThresholdKey(index, _q(group, d["own_secret"], f"{where} own_secret"), received)


# --------------------------------------------------------------------------- plaintext ballots


def plaintext_from_json(obj: object, where: str) -> PlaintextBallot:
    """One line of `guardian encrypt --ballots`: {"id", "ballot_style", "contests": {label: choices}}.

    A contest's choices are {option label: value} or a list of option labels (each
    worth 1). Whether the labels and values fit the manifest is checked at encryption.
    """
    d = _obj(obj, where, ("id", "ballot_style"), ("contests",))
    ballot_id = _text(d["id"], f"{where} id", 200)
    where = f"ballot {ballot_id!r}"
    style = _text(d["ballot_style"], f"{where} ballot_style", 1000)
    contests_obj = d.get("contests", {})
    if not isinstance(contests_obj, dict):
        raise EncodingError(f"{where} contests: expected an object mapping contest labels to choices")
    if getattr(contests_obj, "duplicates", ()):
        raise EncodingError(f"{where} contests: contest {contests_obj.duplicates[0]!r} appears more than once")
    choices: dict[str, dict[str, int]] = {}
    for label, value in contests_obj.items():
        here = f"{where} contest {label!r}"
        if isinstance(value, list):
            picked: dict[str, int] = {}
            for option in value:
                option = _text(option, f"{here} option")
                if option in picked:
                    raise EncodingError(f"{here}: option {option!r} is listed twice")
                picked[option] = 1
            choices[label] = picked
        elif isinstance(value, dict):
            if getattr(value, "duplicates", ()):
                raise EncodingError(f"{here}: option {value.duplicates[0]!r} appears more than once")
            choices[label] = {str(o): _int(v, f"{here} option {o!r}") for o, v in value.items()}
        else:
            raise EncodingError(f"{here}: expected a list of option labels or an object of option values")
    return PlaintextBallot(ballot_id, style, choices)


# --------------------------------------------------------------------------- ballots


@dataclass(frozen=True)
class BallotRecord:
    """An encrypted ballot with what the record adds: state, H_E, date, H_I and the seed 003 signature."""

    ballot: EncryptedBallot
    state: str
    h_e: bytes
    creation_date: str
    identifier_hash: bytes                 # H_I (eq 32), published so that 5.B can be checked
    signature: BallotSignature | None

    @property
    def ballot_id(self) -> str:
        return self.ballot.ballot_id


def _range_proof_to_json(group: Group, proof: RangeProof) -> list:
    return [{"c": _hq(group, c), "v": _hq(group, v)} for c, v in zip(proof.challenges, proof.responses)]


def _range_proof_from_json(group: Group, value: object, where: str) -> RangeProof:
    pairs = _list(value, where, 1, MAX_RANGE + 1)
    cs, vs = [], []
    for j, pair in enumerate(pairs):
        d = _obj(pair, f"{where} {j}", ("c", "v"))
        cs.append(_q(group, d["c"], f"{where} challenge {j}"))
        vs.append(_q(group, d["v"], f"{where} response {j}"))
    return RangeProof(tuple(cs), tuple(vs))


def ballot_to_json(group: Group, record: BallotRecord) -> dict:
    b = record.ballot
    enc = b.encrypted_nonce
    d: dict[str, Any] = {
        "id": b.ballot_id,
        "ballot_state": record.state,
        "ballot_style": b.style_index,
        "device": b.device,
        "creation_date": record.creation_date,
        "h_e": hex_hash(record.h_e),
        "selection_encryption_identifier": to_hex(b.selection_identifier, 32),
        "selection_encryption_identifier_hash": hex_hash(record.identifier_hash),
        "contest_fields_ciphertexts": [
            {
                "contest_ix": c.contest_index,
                "fields_ciphertexts": [{"alpha": _hp(group, s.ciphertext.alpha), "beta": _hp(group, s.ciphertext.beta)}
                                       for s in c.selections],
                "proofs_correctness": [_range_proof_to_json(group, s.proof) for s in c.selections],
                "proof_selection_limit": _range_proof_to_json(group, c.proof),
                "contest_hash": hex_hash(c.contest_hash),
            }
            for c in b.contests
        ],
        "encrypted_ballot_nonce": {"c0": _hp(group, enc.c0), "c1": enc.c1.hex().upper(),
                                   "c": _hq(group, enc.challenge), "v": _hq(group, enc.response)},
        "chaining_field": b.chaining_field.hex().upper(),
        "confirmation_code": hex_hash(b.confirmation_code),
    }
    if record.signature is not None:
        d["voter_signing_pk"] = record.signature.voter_signing_pk
        d["voter_ballot_signature"] = record.signature.voter_ballot_signature
    return d


_BALLOT_REQUIRED = ("id", "ballot_state", "ballot_style", "device", "creation_date", "h_e",
                    "selection_encryption_identifier", "selection_encryption_identifier_hash",
                    "contest_fields_ciphertexts", "encrypted_ballot_nonce", "chaining_field", "confirmation_code")
_BALLOT_OPTIONAL = ("voter_signing_pk", "voter_ballot_signature")


def ballot_from_json(group: Group, obj: object, what: str = "ballot") -> BallotRecord:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        what = f"ballot {obj['id']!r}"
    d = _obj(obj, what, _BALLOT_REQUIRED, _BALLOT_OPTIONAL)
    ballot_id = _text(d["id"], f"{what} id", 200)
    who = f"ballot {ballot_id!r}"
    contests = []
    for pos, c in enumerate(_list(d["contest_fields_ciphertexts"], f"{who} contest_fields_ciphertexts", 1)):
        ci = c.get("contest_ix") if isinstance(c, dict) else None
        here = f"{who} contest {ci}" if isinstance(ci, int) and not isinstance(ci, bool) else f"{who} contest #{pos + 1}"
        c = _obj(c, here, ("contest_ix", "fields_ciphertexts", "proofs_correctness", "proof_selection_limit",
                           "contest_hash"))
        index = _int(c["contest_ix"], f"{here} contest_ix", 1)
        fields = _list(c["fields_ciphertexts"], f"{here} fields_ciphertexts", 1)
        proofs = _list(c["proofs_correctness"], f"{here} proofs_correctness", 1)
        if len(proofs) != len(fields):
            raise EncodingError(f"{here}: {len(fields)} ciphertexts but {len(proofs)} proofs_correctness")
        selections = []
        for j, (field, proof) in enumerate(zip(fields, proofs), start=1):
            opt = f"{here} option {j}"
            ct = _obj(field, opt, ("alpha", "beta"))
            selections.append(EncryptedSelection(
                j, Ciphertext(_p(group, ct["alpha"], f"{opt} alpha"), _p(group, ct["beta"], f"{opt} beta")),
                _range_proof_from_json(group, proof, f"{opt} proof")))
        contests.append(EncryptedContest(
            index, tuple(selections),
            _range_proof_from_json(group, c["proof_selection_limit"], f"{here} selection limit proof"),
            _hash(c["contest_hash"], f"{here} contest_hash")))
    n = _obj(d["encrypted_ballot_nonce"], f"{who} encrypted_ballot_nonce", ("c0", "c1", "c", "v"))
    nonce = EncryptedNonce(_p(group, n["c0"], f"{who} encrypted_ballot_nonce c0"),
                           _bytes(n["c1"], 32, f"{who} encrypted_ballot_nonce c1"),
                           _q(group, n["c"], f"{who} encrypted_ballot_nonce c"),
                           _q(group, n["v"], f"{who} encrypted_ballot_nonce v"))
    signature = None
    if "voter_signing_pk" in d or "voter_ballot_signature" in d:
        if not ("voter_signing_pk" in d and "voter_ballot_signature" in d):
            raise EncodingError(f"{who}: voter_signing_pk and voter_ballot_signature come together")
        signature = BallotSignature(_text(d["voter_signing_pk"], f"{who} voter_signing_pk", 1000),
                                    _text(d["voter_ballot_signature"], f"{who} voter_ballot_signature", 1000))
    selection_identifier = from_hex(d["selection_encryption_identifier"], 32,
                                    f"{who} selection_encryption_identifier")
    ballot = EncryptedBallot(
        ballot_id=ballot_id,
        style_index=_int(d["ballot_style"], f"{who} ballot_style", 1),
        device=_text(d["device"], f"{who} device", 1000),
        selection_identifier=selection_identifier,
        contests=tuple(contests),
        encrypted_nonce=nonce,
        chaining_field=_bytes(d["chaining_field"], CHAINING_FIELD_BYTES, f"{who} chaining_field"),
        confirmation_code=_hash(d["confirmation_code"], f"{who} confirmation_code"),
    )
    return BallotRecord(ballot, _choice(d["ballot_state"], f"{who} ballot_state", BALLOT_STATES),
                        _hash(d["h_e"], f"{who} h_e"), _text(d["creation_date"], f"{who} creation_date", 100),
                        _hash(d["selection_encryption_identifier_hash"], f"{who} selection_encryption_identifier_hash"),
                        signature)


# --------------------------------------------------------------------------- devices and the ballot box journal


@dataclass(frozen=True)
class DeviceRecord:
    """The ordered ballots of one device (spec 3.7) and, for simple chaining, its closing hash (eq 78)."""

    device: str
    chaining: str                  # "none" or "simple"
    ballots: tuple[str, ...]
    closing_hash: bytes | None     # H of eq 78; simple chaining only


def devices_to_json(h_e: bytes, devices: list[DeviceRecord]) -> dict:
    out = []
    for dev in devices:
        d: dict[str, Any] = {"device": dev.device, "chaining": dev.chaining, "ballots": list(dev.ballots)}
        if dev.closing_hash is not None:
            d["closing_hash"] = hex_hash(dev.closing_hash)
        out.append(d)
    return {"h_e": hex_hash(h_e), "devices": out}


def devices_from_json(obj: object) -> tuple[bytes, list[DeviceRecord]]:
    d = _obj(obj, "devices", ("h_e", "devices"))
    devices = []
    seen = set()
    for pos, entry in enumerate(_list(d["devices"], "devices devices")):
        e = _obj(entry, f"devices entry {pos + 1}", ("device", "chaining", "ballots"), ("closing_hash",))
        name = _text(e["device"], f"devices entry {pos + 1} device", 1000)
        where = f"device {name!r}"
        if name in seen:
            raise EncodingError(f"{where} is listed twice")
        seen.add(name)
        chaining = _choice(e["chaining"], f"{where} chaining", CHAINING_MODES)
        ballots = tuple(_text(b, f"{where} ballot {j + 1}", 200)
                        for j, b in enumerate(_list(e["ballots"], f"{where} ballots", 1)))
        closing = _hash(e["closing_hash"], f"{where} closing_hash") if "closing_hash" in e else None
        if (closing is None) != (chaining == "none"):
            raise EncodingError(f"{where}: closing_hash is required with simple chaining and only then")
        devices.append(DeviceRecord(name, chaining, ballots, closing))
    return _hash(d["h_e"], "devices h_e"), devices


@dataclass(frozen=True)
class JournalEntry:
    """One accepted ballot, in the order of acceptance: the ballot box's commit record."""

    seq: int
    ballot_id: str
    state: str
    device: str
    chaining: str
    selection_identifier: mpz
    confirmation_code: bytes
    sha256: str                    # of the ballot file as written

    def to_json(self) -> dict:
        return {"seq": self.seq, "id": self.ballot_id, "state": self.state, "device": self.device,
                "chaining": self.chaining, "selection_encryption_identifier": to_hex(self.selection_identifier, 32),
                "confirmation_code": hex_hash(self.confirmation_code), "sha256": self.sha256}


_SHA256 = re.compile(r"[0-9A-F]{64}")


def journal_entry_from_json(obj: object, where: str) -> JournalEntry:
    d = _obj(obj, where, ("seq", "id", "state", "device", "chaining", "selection_encryption_identifier",
                          "confirmation_code", "sha256"))
    digest = d["sha256"]
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise EncodingError(f"{where} sha256: expected 64 uppercase hex digits")
    return JournalEntry(_int(d["seq"], f"{where} seq", 1), _text(d["id"], f"{where} id", 200),
                        _choice(d["state"], f"{where} state", (CAST, CHALLENGED)),
                        _text(d["device"], f"{where} device", 1000),
                        _choice(d["chaining"], f"{where} chaining", CHAINING_MODES),
                        from_hex(d["selection_encryption_identifier"], 32, f"{where} selection_encryption_identifier"),
                        _hash(d["confirmation_code"], f"{where} confirmation_code"), digest)


# --------------------------------------------------------------------------- index


def index_to_json(files: Mapping[str, str]) -> dict:
    return {"hash_algorithm": "SHA-256", "files": {path: files[path] for path in sorted(files)}}


def index_from_json(obj: object) -> dict[str, str]:
    d = _obj(obj, "index", ("hash_algorithm", "files"))
    if d["hash_algorithm"] != "SHA-256":
        raise EncodingError("index hash_algorithm: only SHA-256 is used")
    files = d["files"]
    if not isinstance(files, dict):
        raise EncodingError("index files: expected an object mapping paths to SHA-256 digests")
    if getattr(files, "duplicates", ()):
        raise EncodingError(f"index files: {files.duplicates[0]!r} is listed twice")
    for path, digest in files.items():
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise EncodingError(f"index entry {path!r}: expected 64 uppercase hex digits")
    return dict(files)


# --------------------------------------------------------------------------- tallies and decryptions


def encrypted_tally_to_json(group: Group, h_e: bytes, tally: EncryptedTally) -> dict:
    contests: dict[int, list] = {}
    for (ci, oi) in sorted(tally.totals):
        ct = tally.totals[(ci, oi)]
        contests.setdefault(ci, []).append({"option_ix": oi, "alpha": _hp(group, ct.alpha),
                                            "beta": _hp(group, ct.beta)})
    return {"h_e": hex_hash(h_e), "ballot_count": tally.ballot_count,
            "contests": [{"contest_ix": ci, "options": opts} for ci, opts in contests.items()]}


def encrypted_tally_from_json(group: Group, obj: object) -> tuple[bytes, EncryptedTally]:
    where = "encrypted tally"
    d = _obj(obj, where, ("h_e", "ballot_count", "contests"))
    totals: dict = {}
    for pos, c in enumerate(_list(d["contests"], f"{where} contests", 1)):
        c = _obj(c, f"{where} contest #{pos + 1}", ("contest_ix", "options"))
        ci = _int(c["contest_ix"], f"{where} contest #{pos + 1} contest_ix", 1)
        for o in _list(c["options"], f"{where} contest {ci} options", 1):
            o = _obj(o, f"{where} contest {ci} option", ("option_ix", "alpha", "beta"))
            oi = _int(o["option_ix"], f"{where} contest {ci} option_ix", 1)
            here = f"{where} contest {ci} option {oi}"
            if (ci, oi) in totals:
                raise EncodingError(f"{here} appears twice")
            totals[(ci, oi)] = Ciphertext(_p(group, o["alpha"], f"{here} alpha"), _p(group, o["beta"], f"{here} beta"))
    return _hash(d["h_e"], f"{where} h_e"), EncryptedTally(totals, _int(d["ballot_count"], f"{where} ballot_count",
                                                                        0, MEDIUM_MAX))


@dataclass(frozen=True)
class ShareRecord:
    """One part of a joint decryption (spec 3.6.5): Y = base^x, its commitment (a, b) and response v."""

    guardian: int
    missing: int | None          # the missing guardian this part stands in for (compensated form)
    share: mpz                   # M_i (eq 84) or A^P_j(i)
    commitment_a: mpz            # a_i = g^u_i (eq 87)
    commitment_b: mpz            # b_i = base^u_i
    response: mpz                # v_i (eqs 91, 92)

    @property
    def name(self) -> str:
        return f"guardian {self.guardian}" + (f" for missing guardian {self.missing}" if self.missing else "")


def _shares_to_json(group: Group, shares) -> list:
    out = []
    for s in shares:
        d: dict[str, Any] = {"guardian": s.guardian}
        if s.missing is not None:
            d["missing_guardian"] = s.missing
        d.update({"share": _hp(group, s.share), "commitment_a": _hp(group, s.commitment_a),
                  "commitment_b": _hp(group, s.commitment_b), "response": _hq(group, s.response)})
        out.append(d)
    return out


def _shares_from_json(group: Group, value: object, where: str) -> tuple[ShareRecord, ...]:
    out = []
    for pos, s in enumerate(_list(value, f"{where} shares", 1)):
        s = _obj(s, f"{where} share #{pos + 1}", ("guardian", "share", "commitment_a", "commitment_b", "response"),
                 ("missing_guardian",))
        i = _int(s["guardian"], f"{where} share #{pos + 1} guardian", 1)
        j = _int(s["missing_guardian"], f"{where} share #{pos + 1} missing_guardian", 1) \
            if "missing_guardian" in s else None
        here = f"{where} guardian {i}" + (f" for missing guardian {j}" if j else "")
        out.append(ShareRecord(i, j, _p(group, s["share"], f"{here} share"),
                               _p(group, s["commitment_a"], f"{here} commitment_a"),
                               _p(group, s["commitment_b"], f"{here} commitment_b"),
                               _q(group, s["response"], f"{here} response")))
    return tuple(out)


@dataclass(frozen=True)
class TallyOptionRecord:
    option_index: int
    label: str
    tally: int                   # t
    decrypted_value: mpz         # T = K^t (eq 82)
    challenge: mpz               # c (eq 90)
    response: mpz                # v (eq 93)
    shares: tuple[ShareRecord, ...]


@dataclass(frozen=True)
class TallyContestRecord:
    contest_index: int
    label: str
    options: tuple[TallyOptionRecord, ...]


@dataclass(frozen=True)
class Quorum:
    """Who decrypted: the present guardians U, the missing ones, and the form of decryption."""

    form: str
    present: tuple[int, ...]
    missing: tuple[int, ...]


def _quorum_to_json(q: Quorum) -> dict:
    return {"decryption_form": q.form, "guardians_present": list(q.present), "guardians_missing": list(q.missing)}


def _quorum_from_json(d: dict, where: str) -> Quorum:
    present = tuple(_int(x, f"{where} guardians_present", 1) for x in _list(d["guardians_present"],
                                                                               f"{where} guardians_present", 1))
    missing = tuple(_int(x, f"{where} guardians_missing", 1) for x in _list(d["guardians_missing"],
                                                                               f"{where} guardians_missing"))
    return Quorum(_choice(d["decryption_form"], f"{where} decryption_form", FORMS), present, missing)


@dataclass(frozen=True)
class DecryptedTallyRecord:
    h_e: bytes
    ballot_count: int
    quorum: Quorum
    contests: tuple[TallyContestRecord, ...]

    def option(self, contest_index: int, option_index: int) -> TallyOptionRecord | None:
        for c in self.contests:
            if c.contest_index == contest_index:
                for o in c.options:
                    if o.option_index == option_index:
                        return o
        return None


def decrypted_tally_to_json(group: Group, rec: DecryptedTallyRecord) -> dict:
    d: dict[str, Any] = {"h_e": hex_hash(rec.h_e), "ballot_count": rec.ballot_count}
    d.update(_quorum_to_json(rec.quorum))
    d["contests"] = [
        {"contest_ix": c.contest_index, "label": c.label, "options": [
            {"option_ix": o.option_index, "label": o.label, "tally": o.tally,
             "decrypted_value": _hp(group, o.decrypted_value),
             "proof": {"c": _hq(group, o.challenge), "v": _hq(group, o.response)},
             "shares": _shares_to_json(group, o.shares)}
            for o in c.options]}
        for c in rec.contests]
    return d


def decrypted_tally_from_json(group: Group, obj: object) -> DecryptedTallyRecord:
    where = "decrypted tally"
    d = _obj(obj, where, ("h_e", "ballot_count", "decryption_form", "guardians_present", "guardians_missing",
                          "contests"))
    contests = []
    for pos, c in enumerate(_list(d["contests"], f"{where} contests", 1)):
        c = _obj(c, f"{where} contest #{pos + 1}", ("contest_ix", "label", "options"))
        ci = _int(c["contest_ix"], f"{where} contest #{pos + 1} contest_ix", 1)
        here = f"{where} contest {ci}"
        options = []
        for o in _list(c["options"], f"{here} options", 1):
            o = _obj(o, f"{here} option", ("option_ix", "label", "tally", "decrypted_value", "proof", "shares"))
            oi = _int(o["option_ix"], f"{here} option_ix", 1)
            there = f"{here} option {oi}"
            proof = _obj(o["proof"], f"{there} proof", ("c", "v"))
            options.append(TallyOptionRecord(
                oi, _text(o["label"], f"{there} label", 1000), _int(o["tally"], f"{there} tally", 0, MEDIUM_MAX),
                _p(group, o["decrypted_value"], f"{there} decrypted_value"),
                _q(group, proof["c"], f"{there} proof c"), _q(group, proof["v"], f"{there} proof v"),
                _shares_from_json(group, o["shares"], there)))
        contests.append(TallyContestRecord(ci, _text(c["label"], f"{here} label", 1000), tuple(options)))
    return DecryptedTallyRecord(_hash(d["h_e"], f"{where} h_e"),
                                _int(d["ballot_count"], f"{where} ballot_count", 0, MEDIUM_MAX),
                                _quorum_from_json(d, where), tuple(contests))


@dataclass(frozen=True)
class OpenedSelection:
    option_index: int
    label: str
    selection: int               # sigma
    nonce: mpz                   # xi_i,j (eq 33)


@dataclass(frozen=True)
class OpenedContest:
    contest_index: int
    label: str
    selections: tuple[OpenedSelection, ...]


@dataclass(frozen=True)
class ChallengedRecord:
    """The decryption of one challenged ballot (spec 3.6.7): beta_B with its joint proof, and the openings."""

    ballot_id: str
    h_e: bytes
    quorum: Quorum
    beta: mpz                    # beta_B = C0^s-hat
    challenge: mpz
    response: mpz
    shares: tuple[ShareRecord, ...]
    contests: tuple[OpenedContest, ...]


def challenged_to_json(group: Group, rec: ChallengedRecord) -> dict:
    d: dict[str, Any] = {"id": rec.ballot_id, "h_e": hex_hash(rec.h_e)}
    d.update(_quorum_to_json(rec.quorum))
    d["ballot_nonce_decryption"] = {"beta": _hp(group, rec.beta),
                                    "proof": {"c": _hq(group, rec.challenge), "v": _hq(group, rec.response)},
                                    "shares": _shares_to_json(group, rec.shares)}
    d["contests"] = [
        {"contest_ix": c.contest_index, "label": c.label, "options": [
            {"option_ix": s.option_index, "label": s.label, "selection": s.selection, "nonce": _hq(group, s.nonce)}
            for s in c.selections]}
        for c in rec.contests]
    return d


def challenged_from_json(group: Group, obj: object, what: str = "challenged ballot") -> ChallengedRecord:
    if isinstance(obj, dict) and isinstance(obj.get("id"), str):
        what = f"challenged ballot {obj['id']!r}"
    d = _obj(obj, what, ("id", "h_e", "decryption_form", "guardians_present", "guardians_missing",
                         "ballot_nonce_decryption", "contests"))
    ballot_id = _text(d["id"], f"{what} id", 200)
    who = f"challenged ballot {ballot_id!r}"
    dec = _obj(d["ballot_nonce_decryption"], f"{who} ballot_nonce_decryption", ("beta", "proof", "shares"))
    proof = _obj(dec["proof"], f"{who} nonce proof", ("c", "v"))
    contests = []
    for pos, c in enumerate(_list(d["contests"], f"{who} contests", 1)):
        c = _obj(c, f"{who} contest #{pos + 1}", ("contest_ix", "label", "options"))
        ci = _int(c["contest_ix"], f"{who} contest #{pos + 1} contest_ix", 1)
        here = f"{who} contest {ci}"
        selections = []
        for o in _list(c["options"], f"{here} options", 1):
            o = _obj(o, f"{here} option", ("option_ix", "label", "selection", "nonce"))
            oi = _int(o["option_ix"], f"{here} option_ix", 1)
            there = f"{here} option {oi}"
            selections.append(OpenedSelection(oi, _text(o["label"], f"{there} label", 1000),
                                              _int(o["selection"], f"{there} selection"),
                                              _q(group, o["nonce"], f"{there} nonce")))
        contests.append(OpenedContest(ci, _text(c["label"], f"{here} label", 1000), tuple(selections)))
    return ChallengedRecord(ballot_id, _hash(d["h_e"], f"{who} h_e"), _quorum_from_json(d, who),
                            _p(group, dec["beta"], f"{who} nonce beta"),
                            _q(group, proof["c"], f"{who} nonce proof c"), _q(group, proof["v"], f"{who} nonce proof v"),
                            _shares_from_json(group, dec["shares"], f"{who} nonce"), tuple(contests))
