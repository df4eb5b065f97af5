"""The key ceremony as a sans-I/O state machine (spec 3.2; docs/ARCHITECTURE.md "A key ceremony").

Two objects, so that no guardian gets special treatment:

  Transcript  the public part. Every message of the ceremony, ours included, goes
              through Transcript.receive, which checks it as it would a peer's and
              moves the phase on. It knows no secret and not which guardian it runs for.
  Guardian    the local part: the one guardian's secrets. After each transcript
              change, Guardian.act says what to send and what to persist first.

Phases, each with a deadline (the config's phase timeout):
  keys        every guardian publishes commitments, kappa and proofs (Verification 2)
  echo        every guardian publishes H_G (eq 27) and the digest of each keys message it
              got; a guardian who showed different keys to different peers is caught here
              (two signed keys messages from one guardian, relayed by the honest ones)
  shares      every guardian publishes its shares encrypted to each other guardian (eqs 15-22)
  check       every guardian decrypts its shares, checks them (eqs 28, 29), and publishes
              the list of guardians it complains about (empty when all is well)
  complaints  an accused guardian reveals the disputed share and its encryption nonce in
              public; everyone checks it against the ciphertext and the commitments
  result      every guardian signs K, K-hat, H_E and H_G; all n equal results end it
A fault ends the ceremony with an abort that names the culprit and the reason;
a phase deadline that passes names the guardians that did not answer.

Message bodies use msgpack-friendly values: integers mod p or q as fixed-length bytes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field

from gmpy2 import mpz

from node.crypto.election import ElectionParameters
from node.crypto.errors import GuardianError, InputError, ShareError
from node.crypto.hashing import guardian_record_hash, extended_base_hash
from node.crypto.keys import (
    EncryptedShare, GuardianPublicKey, GuardianSecretKey, KeyProof, check_revealed_share, decrypt_share,
    encrypt_share, evaluate_polynomial, generate_guardian_key, joint_key, verify_guardian_public_key, verify_share,
    verify_share_encryption,
)
from node.crypto.params import STANDARD, Group
from node.protocol.election_config import ElectionConfig

PHASES = ("keys", "echo", "shares", "check", "complaints", "result", "complete", "aborted")
_PHASE_OF = {"keys": "keys", "echo": "echo", "shares": "shares", "share-check": "check", "reveal": "complaints",
             "result": "result"}
MESSAGE_TYPES = frozenset(_PHASE_OF)


class CeremonyFault(GuardianError):
    """A guardian broke the protocol: the ceremony aborts naming it."""

    def __init__(self, culprits: list[int], reason: str) -> None:
        super().__init__(f"guardian(s) {culprits}: {reason}")
        self.culprits, self.reason = sorted(set(culprits)), reason


class MalformedMessage(InputError):
    """A ceremony message body does not have the expected shape."""


# --- body codecs: fixed-length bytes for group elements and scalars --------------------------------

def _p(group: Group, x) -> bytes:
    return int(x).to_bytes(group.p_bytes, "big")


def _q(group: Group, x) -> bytes:
    return int(x).to_bytes(group.q_bytes, "big")


def _int(value, length: int, what: str) -> mpz:
    if not isinstance(value, bytes) or len(value) != length:
        raise MalformedMessage(f"{what} must be {length} bytes")
    return mpz(int.from_bytes(value, "big"))


def _field(body, name: str, kind, what: str):
    if not isinstance(body, dict) or name not in body or not isinstance(body[name], kind) \
            or (kind is int and isinstance(body[name], bool)):
        raise MalformedMessage(f"{what}: missing or malformed {name!r}")
    return body[name]


def encode_public_key(group: Group, pk: GuardianPublicKey) -> dict:
    return {"index": pk.index, "name": pk.name,
            "commitments": [_p(group, x) for x in pk.commitments],
            "data_commitments": [_p(group, x) for x in pk.data_commitments],
            "kappa": _p(group, pk.communication_key),
            "proof": [_q(group, pk.proof.challenge)] + [_q(group, v) for v in pk.proof.responses],
            "data_proof": [_q(group, pk.data_proof.challenge)] + [_q(group, v) for v in pk.data_proof.responses]}


def decode_public_key(group: Group, body, k: int, what: str) -> GuardianPublicKey:
    index = _field(body, "index", int, what)
    name = _field(body, "name", str, what)
    lists = {}
    for key, size, count in (("commitments", group.p_bytes, k), ("data_commitments", group.p_bytes, k),
                             ("proof", group.q_bytes, k + 2), ("data_proof", group.q_bytes, k + 2)):
        values = _field(body, key, list, what)
        if len(values) != count:
            raise MalformedMessage(f"{what}: {key} must have {count} entries")
        lists[key] = tuple(_int(v, size, f"{what} {key}") for v in values)
    kappa = _int(_field(body, "kappa", bytes, what), group.p_bytes, f"{what} kappa")
    return GuardianPublicKey(index, name, lists["commitments"], lists["data_commitments"], kappa,
                             KeyProof(lists["proof"][0], lists["proof"][1:]),
                             KeyProof(lists["data_proof"][0], lists["data_proof"][1:]))


def encode_share(group: Group, s: EncryptedShare) -> dict:
    return {"to": s.recipient, "c0": _p(group, s.c0), "c1": s.c1, "c": _q(group, s.challenge),
            "v": _q(group, s.response)}


def decode_share(group: Group, sender: int, body, what: str) -> EncryptedShare:
    to = _field(body, "to", int, what)
    c1 = _field(body, "c1", bytes, what)
    if len(c1) != 2 * group.q_bytes:
        raise MalformedMessage(f"{what}: c1 must be {2 * group.q_bytes} bytes")
    return EncryptedShare(sender, to, _int(_field(body, "c0", bytes, what), group.p_bytes, f"{what} c0"), c1,
                          _int(_field(body, "c", bytes, what), group.q_bytes, f"{what} c"),
                          _int(_field(body, "v", bytes, what), group.q_bytes, f"{what} v"))


# --- the public transcript ------------------------------------------------------------------------

@dataclass
class Outcome:
    status: str                       # "complete" or "aborted"
    culprits: list[int] = field(default_factory=list)
    reason: str = ""


class Transcript:
    """Everything public about one ceremony, checked as it arrives. Deterministic: no clock, no randomness."""

    def __init__(self, config: ElectionConfig, group: Group = STANDARD) -> None:
        self.config, self.group = config, group
        self.parameters = ElectionParameters(group, config.n, config.k, config.manifest)
        self.n, self.k = config.n, config.k
        self.phase = "keys"
        self.keys: dict[int, GuardianPublicKey] = {}
        self.key_digests: dict[int, set[bytes]] = {}
        self.echoes: dict[int, tuple[bytes, tuple[bytes, ...]]] = {}
        self.shares: dict[int, dict[int, EncryptedShare]] = {}
        self.checks: dict[int, tuple[int, ...]] = {}
        self.reveals: dict[tuple[int, int], tuple[mpz, mpz]] = {}     # (accused, complainer) -> shares
        self.results: dict[int, dict] = {}
        self.outcome: Outcome | None = None
        self._pending: list[tuple] = []
        self.record_hash: bytes | None = None
        self.joint_keys: tuple[mpz, mpz] | None = None

    @property
    def everyone(self) -> range:
        return range(1, self.n + 1)

    def waiting_for(self) -> list[int]:
        """The guardians whose message the current phase still needs."""
        have = {"keys": self.keys, "echo": self.echoes, "shares": self.shares, "check": self.checks,
                "result": self.results}.get(self.phase)
        if have is not None:
            return [i for i in self.everyone if i not in have]
        if self.phase == "complaints":
            return sorted({j for (j, l) in self.complaints() if (j, l) not in self.reveals})
        return []

    def complaints(self) -> list[tuple[int, int]]:
        """(accused, complainer) pairs."""
        return sorted((j, l) for l, accused in self.checks.items() for j in accused)

    # --- input ------------------------------------------------------------------------------------

    def receive(self, sender: int, type_: str, body, digest: bytes) -> None:
        """Take one accepted, signed message of guardian `sender`. Raises CeremonyFault to abort.

        Guardians reach each phase at slightly different times, so a message of a later
        phase is kept and taken when this transcript gets there, never held against its sender.
        """
        if self.outcome is not None:
            return
        if type_ not in MESSAGE_TYPES or sender not in self.everyone:
            self._fault([sender] if sender in self.everyone else [], f"unknown ceremony message {type_!r}")
        aborting = type_ == "result" and isinstance(body, dict) and body.get("status") == "abort"
        if not aborting and PHASES.index(self.phase) < PHASES.index(_PHASE_OF[type_]):
            self._pending.append((sender, type_, body, digest))
            return
        self._take(sender, type_, body, digest)
        self._advance()

    def _take(self, sender: int, type_: str, body, digest: bytes) -> None:
        what = f"{type_} from guardian {sender}"
        try:
            getattr(self, "_on_" + type_.replace("-", "_"))(sender, body, digest, what)
        except MalformedMessage as e:
            self._fault([sender], f"malformed message: {e}")

    def timeout(self) -> None:
        """The current phase's deadline passed: name who we are still waiting for."""
        if self.outcome is None and self.phase in ("keys", "echo", "shares", "check", "complaints", "result"):
            missing = self.waiting_for()
            if missing:
                self._fault(missing, f"did not answer in the {self.phase} phase before its deadline")

    def _fault(self, culprits: list[int], reason: str) -> None:
        self.outcome = Outcome("aborted", sorted(set(culprits)), reason)
        self.phase = "aborted"
        raise CeremonyFault(culprits, reason)

    # --- per message ------------------------------------------------------------------------------

    def _on_keys(self, sender, body, digest, what):
        digests = self.key_digests.setdefault(sender, set())
        if digest in digests:
            return
        digests.add(digest)
        if len(digests) > 1:
            self._fault([sender], "equivocation: two different signed keys messages")
        if self.phase != "keys":
            # A second version arriving late (relayed) is caught above; anything else is out of turn.
            self._fault([sender], "keys message after the keys phase")
        pk = decode_public_key(self.group, _field(body, "public_key", dict, what), self.k, what)
        if pk.index != sender:
            self._fault([sender], f"keys message claims index {pk.index}")
        try:
            verify_guardian_public_key(self.group, self.parameters.g_table, self.parameters.h_p, pk, self.k)
        except GuardianError as e:
            self._fault([sender], f"invalid key proof or commitment: {e}")
        self.keys[sender] = pk

    def _on_echo(self, sender, body, digest, what):
        self._expect("echo", sender, what)
        h_g = _field(body, "h_g", bytes, what)
        seen = _field(body, "digests", list, what)
        if len(h_g) != 32 or len(seen) != self.n or not all(isinstance(d, bytes) and len(d) == 32 for d in seen):
            raise MalformedMessage(f"{what}: needs a 32-byte h_g and {self.n} 32-byte digests")
        if sender in self.echoes and self.echoes[sender] != (h_g, tuple(seen)):
            self._fault([sender], "equivocation: two different echoes")
        self.echoes[sender] = (h_g, tuple(seen))

    def _on_shares(self, sender, body, digest, what):
        self._expect("shares", sender, what)
        items = _field(body, "shares", list, what)
        shares = {}
        for item in items:
            share = decode_share(self.group, sender, item, what)
            if share.recipient == sender or share.recipient not in self.everyone or share.recipient in shares:
                raise MalformedMessage(f"{what}: bad or repeated recipient {share.recipient}")
            shares[share.recipient] = share
        if set(shares) != set(self.everyone) - {sender}:
            raise MalformedMessage(f"{what}: needs one share for every other guardian")
        if sender in self.shares:
            if self.shares[sender] != shares:
                self._fault([sender], "equivocation: two different shares messages")
            return
        # The nonce proof of eq 22 is public: everyone checks every share's ciphertext.
        for share in shares.values():
            try:
                verify_share_encryption(self.group, self.parameters.g_table, self.parameters.h_p, share)
            except ShareError:
                self._fault([sender], f"the share to guardian {share.recipient} has an invalid nonce proof (eq 22)")
            except GuardianError as e:
                self._fault([sender], f"invalid share ciphertext: {e}")
        self.shares[sender] = shares

    def _on_share_check(self, sender, body, digest, what):
        self._expect("check", sender, what)
        accused = _field(body, "complaints", list, what)
        if not all(isinstance(j, int) and not isinstance(j, bool) and j in self.everyone and j != sender
                   for j in accused) or len(set(accused)) != len(accused):
            raise MalformedMessage(f"{what}: complaints must name other guardians once each")
        if sender in self.checks and self.checks[sender] != tuple(sorted(accused)):
            self._fault([sender], "equivocation: two different share checks")
        self.checks[sender] = tuple(sorted(accused))

    def _on_reveal(self, sender, body, digest, what):
        l = _field(body, "to", int, what)
        if (sender, l) in self.reveals:
            return                      # a copy of a reveal we already checked
        if (sender, l) not in self.complaints() or self.phase != "complaints":
            # Nobody (that we know of) complained: revealing one's own share harms only oneself, and a
            # guardian may have been shown a complaint we were not (caught by the check views in results).
            return
        share = _int(_field(body, "share", bytes, what), self.group.q_bytes, what)
        data_share = _int(_field(body, "data_share", bytes, what), self.group.q_bytes, what)
        nonce = _int(_field(body, "nonce", bytes, what), self.group.q_bytes, what)
        encrypted = self.shares[sender][l]
        problem = check_revealed_share(self.group, self.parameters.g_table, self.parameters.h_p, encrypted,
                                       self.keys[l].communication_key, share, data_share, nonce)
        g_table = self.parameters.g_table
        if problem is None and not (verify_share(self.group, g_table, self.keys[sender].commitments, l, share) and
                                    verify_share(self.group, g_table, self.keys[sender].data_commitments, l,
                                                 data_share)):
            problem = "the revealed share does not match the commitments (eqs 28, 29)"
        if problem:
            self._fault([sender], f"complaint by guardian {l} upheld: {problem}")
        self.reveals[(sender, l)] = (share, data_share)

    def _on_result(self, sender, body, digest, what):
        status = _field(body, "status", str, what)
        if status == "abort":
            culprits = _field(body, "culprits", list, what)
            reason = _field(body, "reason", str, what)
            if not all(isinstance(c, int) and not isinstance(c, bool) and c in self.everyone for c in culprits):
                raise MalformedMessage(f"{what}: culprits must be guardian indices")
            self.results[sender] = {"status": "abort"}
            # We cannot check a peer's local verdict; the reason says whose claim it is.
            self._fault(culprits, f"guardian {sender} aborted the ceremony: {reason[:300]}")
        if status != "success":
            raise MalformedMessage(f"{what}: status must be success or abort")
        self._expect("result", sender, what)
        checks = _field(body, "checks", list, what)
        if len(checks) != self.n or not all(
                isinstance(c, list) and all(isinstance(j, int) and not isinstance(j, bool) for j in c)
                for c in checks):
            raise MalformedMessage(f"{what}: checks must list every guardian's complaints")
        mine = self.check_view()
        differing = [i for i in self.everyone if sorted(checks[i - 1]) != mine[i - 1]]
        if differing:
            # A guardian's signed share check reads differently here and at `sender`. Relayed checks
            # normally catch the equivocator in _on_share_check first; without that evidence we cannot
            # tell whether it or `sender` lies, so both are named.
            self._fault(differing + [sender], f"guardian {sender}'s result lists other share checks "
                                              f"than we received from guardian(s) {differing}")
        result = {"status": "success", "h_g": _field(body, "h_g", bytes, what),
                  "h_e": _field(body, "h_e", bytes, what),
                  "joint_key": _field(body, "joint_key", bytes, what),
                  "joint_data_key": _field(body, "joint_data_key", bytes, what), "checks": checks}
        if result != self.expected_result():
            self._fault([sender], "signed a result that differs from the transcript")
        self.results[sender] = result

    def check_view(self) -> list[list[int]]:
        """Every guardian's complaints as this transcript received them: signed into each result."""
        return [list(self.checks.get(i, ())) for i in self.everyone]

    def _expect(self, phase: str, sender: int, what: str) -> None:
        # receive() holds messages of later phases back, so this only guards direct callers.
        if PHASES.index(self.phase) < PHASES.index(phase):
            raise MalformedMessage(f"{what} arrived before the {phase} phase")

    # --- phase changes ------------------------------------------------------------------------------

    def _advance(self) -> None:
        moved = True
        while moved and self.outcome is None:
            moved = False
            ready = [m for m in self._pending if PHASES.index(self.phase) >= PHASES.index(_PHASE_OF[m[1]])]
            if ready:
                self._pending = [m for m in self._pending if m not in ready]
                for m in ready:
                    self._take(*m)
            if self.phase == "keys" and len(self.keys) == self.n:
                ordered = [self.keys[i] for i in self.everyone]
                k_joint = joint_key(self.group, [pk.key for pk in ordered])            # eq 25
                k_hat = joint_key(self.group, [pk.data_key for pk in ordered])         # eq 26
                self.joint_keys = (k_joint, k_hat)
                self.record_hash = guardian_record_hash(                               # eq 27
                    self.group, self.parameters.h_b, k_joint, k_hat, [pk.commitments for pk in ordered],
                    [pk.data_commitments for pk in ordered], [pk.communication_key for pk in ordered])
                self.phase, moved = "echo", True
            elif self.phase == "echo" and len(self.echoes) == self.n:
                mine = (self.record_hash, self.own_digests())
                disagree = [i for i, echo in self.echoes.items() if echo != mine]
                if disagree:
                    self._resolve_echo_dispute(disagree)
                self.phase, moved = "shares", True
            elif self.phase == "shares" and len(self.shares) == self.n:
                self.phase, moved = "check", True
            elif self.phase == "check" and len(self.checks) == self.n:
                self.phase, moved = ("complaints" if self.complaints() else "result"), True
            elif self.phase == "complaints" and all(c in self.reveals for c in self.complaints()):
                self.phase, moved = "result", True
            elif self.phase == "result" and len(self.results) == self.n:
                self.outcome = Outcome("complete")
                self.phase, moved = "complete", True

    def own_digests(self) -> tuple[bytes, ...]:
        return tuple(next(iter(self.key_digests[i])) for i in self.everyone)

    def _resolve_echo_dispute(self, disagree: list[int]) -> None:
        # Who showed different keys to different guardians? The guardian j whose keys digest differs
        # between echoes, when a second signed version of j's keys has reached us (relayed), is the
        # equivocator (caught in _on_keys). Otherwise the echoers that disagree with what we hold
        # are named: their echo claims a keys message nobody can show.
        mine = self.own_digests()
        suspects = set()
        for i in disagree:
            h_g, digests = self.echoes[i]
            suspects |= {j for j in self.everyone if digests[j - 1] != mine[j - 1]}
        self._fault(sorted(set(disagree)) if not suspects else sorted(suspects | set(disagree)),
                    "the guardians' views of the published keys differ (H_G echo mismatch)")

    def expected_result(self) -> dict:
        k_joint, k_hat = self.joint_keys
        h_e = extended_base_hash(self.group, self.parameters.h_b, k_joint, k_hat)     # eq 30
        return {"status": "success", "h_g": self.record_hash, "h_e": h_e,
                "joint_key": _p(self.group, k_joint), "joint_data_key": _p(self.group, k_hat),
                "checks": self.check_view()}

    def revealed_share(self, accused: int, complainer: int):
        return self.reveals.get((accused, complainer))


# --- the local guardian ---------------------------------------------------------------------------

@dataclass
class Send:
    type: str
    body: dict


class Guardian:
    """This node's guardian in one ceremony: its secrets, and what it sends when.

    State that must survive a crash is in `state` (JSON-able, secret): the daemon seals and
    commits it in the same transaction as the messages that depend on it, before sending.
    """

    def __init__(self, transcript: Transcript, index: int, state: dict | None = None, rng=None) -> None:
        self.t, self.index = transcript, index
        self.state = state if state is not None else {}
        self.sent: set[str] = set()
        self.rng = rng or secrets.SystemRandom()

    @property
    def group(self) -> Group:
        return self.t.group

    def _secret(self) -> GuardianSecretKey:
        s = self.state["secret"]
        return GuardianSecretKey(self.index, tuple(mpz(x, 16) for x in s["a"]), tuple(mpz(x, 16) for x in s["a_hat"]),
                                 mpz(s["zeta"], 16))

    def act(self) -> list[Send]:
        """What to send now, given the transcript. The caller persists `state` before sending."""
        t, out = self.t, []
        if t.outcome is not None:
            if t.outcome.status == "aborted" and "result" not in self.sent:
                out.append(Send("result", {"status": "abort", "culprits": t.outcome.culprits,
                                           "reason": t.outcome.reason[:500]}))
            return self._mark(out)
        if "keys" not in self.sent and t.phase == "keys":
            params = t.parameters
            secret, public = generate_guardian_key(self.group, params.g_table, params.h_p, self.index, t.k,
                                                   t.config.guardians[self.index - 1].name, self.rng)
            self.state["secret"] = {"a": [format(int(x), "x") for x in secret.coefficients],
                                    "a_hat": [format(int(x), "x") for x in secret.data_coefficients],
                                    "zeta": format(int(secret.communication_secret), "x")}
            out.append(Send("keys", {"public_key": encode_public_key(self.group, public)}))
        if "echo" not in self.sent and t.phase == "echo":
            out.append(Send("echo", {"h_g": t.record_hash, "digests": list(t.own_digests())}))
        if "shares" not in self.sent and t.phase == "shares":
            out.append(Send("shares", {"shares": self._make_shares()}))
        if "share-check" not in self.sent and t.phase == "check":
            out.append(Send("share-check", {"complaints": self._check_my_shares()}))
        if t.phase == "complaints":
            for accused, complainer in t.complaints():
                tag = f"reveal-{complainer}"
                if accused == self.index and tag not in self.sent:
                    out.append(Send("reveal", self._reveal(complainer)))
                    self.sent.add(tag)
        if "result" not in self.sent and t.phase == "result":
            self._finish()
            out.append(Send("result", t.expected_result()))
        return self._mark(out)

    def _mark(self, out: list[Send]) -> list[Send]:
        for s in out:
            if s.type != "reveal":
                self.sent.add(s.type)
        return out

    def note_sent(self, type_: str, body) -> None:
        """Our own message seen again when the log is replayed after a restart."""
        self.sent.add(f"reveal-{body.get('to')}" if type_ == "reveal" and isinstance(body, dict) else type_)

    def _make_shares(self) -> list[dict]:
        t, secret = self.t, self._secret()
        params, nonces, items = t.parameters, {}, []
        for l in t.everyone:
            if l == self.index:
                continue
            nonce = mpz(self.rng.randrange(int(self.group.q)))
            nonces[str(l)] = format(int(nonce), "x")
            share = encrypt_share(self.group, params.g_table, params.h_p, self.index, l,
                                  t.keys[l].communication_key, evaluate_polynomial(self.group, secret.coefficients, l),
                                  evaluate_polynomial(self.group, secret.data_coefficients, l), self.rng, nonce)
            items.append(encode_share(self.group, share))
        self.state["share_nonces"] = nonces
        return items

    def _check_my_shares(self) -> list[int]:
        t, secret, params = self.t, self._secret(), self.t.parameters
        received, complaints = {}, []
        for j in t.everyone:
            if j == self.index:
                values = (evaluate_polynomial(self.group, secret.coefficients, j),
                          evaluate_polynomial(self.group, secret.data_coefficients, j))
            else:
                try:
                    values = decrypt_share(self.group, params.g_table, params.h_p, secret,
                                           t.keys[self.index].communication_key, t.shares[j][self.index])
                except GuardianError:
                    complaints.append(j)
                    continue
                if not (verify_share(self.group, params.g_table, t.keys[j].commitments, self.index, values[0]) and
                        verify_share(self.group, params.g_table, t.keys[j].data_commitments, self.index, values[1])):
                    complaints.append(j)
                    continue
            received[str(j)] = [format(int(values[0]), "x"), format(int(values[1]), "x")]
        self.state["received"] = received
        return complaints

    def _reveal(self, complainer: int) -> dict:
        secret = self._secret()
        nonce = mpz(self.state["share_nonces"][str(complainer)], 16)
        return {"to": complainer,
                "share": _q(self.group, evaluate_polynomial(self.group, secret.coefficients, complainer)),
                "data_share": _q(self.group, evaluate_polynomial(self.group, secret.data_coefficients, complainer)),
                "nonce": _q(self.group, nonce)}

    def _finish(self) -> None:
        received = self.state["received"]
        for (accused, complainer), values in self.t.reveals.items():
            if complainer == self.index:      # a dismissed complaint: the public reveal is our share
                received[str(accused)] = [format(int(values[0]), "x"), format(int(values[1]), "x")]
        self.state["complete"] = True

    def decryption_keys(self):
        """This guardian's ThresholdKeys for K and K-hat, once the ceremony completed."""
        from node.crypto.decryption import ThresholdKey

        received = {int(j): (mpz(v[0], 16), mpz(v[1], 16)) for j, v in self.state["received"].items()}
        secret = self._secret()
        return (ThresholdKey(self.index, secret.coefficients[0], {j: v[0] for j, v in received.items()}),
                ThresholdKey(self.index, secret.data_coefficients[0], {j: v[1] for j, v in received.items()}))


def digest(envelope_bytes: bytes) -> bytes:
    return hashlib.sha256(envelope_bytes).digest()
