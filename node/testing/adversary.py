"""Misbehaving guardians for rehearsals and tests, plugged in through the services' guardian factories.

Each is the honest machine (node/protocol/ceremony.py, node/protocol/decryption.py) with one
behaviour changed, so the honest nodes meet a real adversary on the wire: correctly signed
messages with wrong content. Use them with node.app.build(..., guardians=Guardians(...)), in a
node process (node/testing/adversary_node.py) or in-process (node/testing/inprocess.py):

  bad_share(victim, reveal)   the key ceremony share for `victim` does not match the commitments;
                              when accused, it reveals the share it sent ("sent") or the true one ("true")
  bad_proof()                 its public key carries an invalid Schnorr proof (Verification 2)
  false_complaint(accused)    its share check complains about an honest guardian
  equivocate(message, after, outbox)
                              its keys message (or share check) shows another version to the peers
                              numbered above `after`: in a second envelope, or with a TwoFacedOutbox
                              under the same sequence number
  hold_back(phase, opened, then)
                              sends nothing in `phase` until `opened` is set (then behaves as `then`)
  only_in(sessions, factory)  `factory` in the ceremonies named, the honest guardian in any other
  wrong_decryption(first_only)
                              partial decryptions that are not A^z_i, with matching commitment
                              hashes (eq 88 holds, eqs 94-95 fail)
and, below the guardians, frames sent straight onto a node's links: send_on_links, replay_session.
"""

from __future__ import annotations

from typing import Container, Iterable, Protocol

from gmpy2 import mpz

from node.crypto.decryption import PartShare, commitment_digest
from node.crypto.keys import encrypt_share, evaluate_polynomial, generate_guardian_key
from node.daemon.node import LINK_CLOSED, Node
from node.protocol.ceremony import Guardian, Send, Transcript, encode_public_key, encode_share
from node.protocol.decryption import DecryptionGuardian, DecryptionTranscript
from node.protocol.envelope import seal_envelope
from node.services.ceremonies import GuardianFactory, honest_guardian
from node.services.port import Port


def _q(guardian: Guardian, value: int) -> bytes:
    return int(value % guardian.group.q).to_bytes(guardian.group.q_bytes, "big")


class BadShareGuardian(Guardian):
    def __init__(self, transcript: Transcript, me: int, state: dict | None, victim: int, reveal: str) -> None:
        super().__init__(transcript, me, state)
        self.victim, self.reveal = victim, reveal

    def act(self):
        out = super().act()
        for s in out:
            if s.type == "shares":
                t, secret, victim = self.t, self._secret(), self.victim
                nonce = mpz(self.state["share_nonces"][str(victim)], 16)
                share = evaluate_polynomial(t.group, secret.coefficients, victim)
                data = evaluate_polynomial(t.group, secret.data_coefficients, victim)
                bad = encrypt_share(t.group, t.parameters.g_table, t.parameters.h_p, self.index, victim,
                                    t.keys[victim].communication_key, (share + 1) % t.group.q, data, nonce=nonce)
                s.body["shares"] = [encode_share(t.group, bad) if item["to"] == victim else item
                                    for item in s.body["shares"]]
            if s.type == "reveal" and self.reveal == "sent":
                s.body["share"] = _q(self, int.from_bytes(s.body["share"], "big") + 1)
        return out


class BadProofGuardian(Guardian):
    def act(self):
        out = super().act()
        for s in out:
            if s.type == "keys":
                proof = list(s.body["public_key"]["proof"])
                proof[1] = _q(self, int.from_bytes(proof[1], "big") + 1)
                s.body["public_key"]["proof"] = proof
        return out


class FalseComplaintGuardian(Guardian):
    def __init__(self, transcript: Transcript, me: int, state: dict | None, accused: int) -> None:
        super().__init__(transcript, me, state)
        self.accused = accused

    def act(self):
        out = super().act()
        for s in out:
            if s.type == "share-check":
                s.body["complaints"] = [self.accused]
        return out


class TwoFacedOutbox:
    """What some peers' links stream in place of the stored envelope, for some sequence numbers: one slot
    of the outbox, two signed messages. The in-process node's links read their outbox rows through it
    (InProcessNode.start(outbox=...)); an EquivocatingGuardian fills it."""

    def __init__(self) -> None:
        self._second: dict[tuple[bytes, int], bytes] = {}

    def swap(self, seq: int, envelope: bytes, peers: Iterable[bytes]) -> None:
        for peer in peers:
            self._second[peer, seq] = envelope

    def __call__(self, peer: bytes, seq: int, envelope: bytes) -> bytes:
        return self._second.get((peer, seq), envelope)


class EquivocatingGuardian(Guardian):
    """Shows the peers numbered up to `after` one version of its `message` ("keys" or "share-check") and
    those above it another, equally well signed: each version in its own envelope, sent one peer at a
    time; or, with an `outbox`, one sequence number signed twice (the outbox holds the first version,
    the later peers' links stream the second)."""

    def __init__(self, port: Port, transcript: Transcript, me: int, state: dict | None, message: str = "keys",
                 after: int | None = None, outbox: TwoFacedOutbox | None = None) -> None:
        super().__init__(transcript, me, state)
        self.port, self.message, self.outbox = port, message, outbox
        self.after = me + 1 if after is None else after

    def other_version(self) -> dict:
        t = self.t
        if self.message == "keys":
            _, other = generate_guardian_key(t.group, t.parameters.g_table, t.parameters.h_p, self.index,
                                             t.k, t.config.guardians[self.index - 1].name)
            return {"public_key": encode_public_key(t.group, other)}
        return {"complaints": [self.after + 1]}          # an accusation of the first peer shown it

    def act(self):
        out = super().act()
        for i, s in enumerate(out):
            if s.type == self.message:
                return self._two_faced(out, i, s)
        return out

    def _two_faced(self, out: list[Send], i: int, s: Send) -> list[Send]:
        session, other = self.t.config.session, self.other_version()
        peers = [e for e in self.port.roster.entries if e.sequence != self.index]
        if self.outbox is not None:
            seq = self.port.db.next_seq() + i            # the number commit_and_send gives this message
            envelope = seal_envelope(self.port.identity.signing_key, s.type, session, seq, other).encode()
            self.outbox.swap(seq, envelope, [e.public_key for e in peers if e.sequence > self.after])
            return out
        for entry in peers:
            self.port.send(s.type, other if entry.sequence > self.after else s.body, to=entry.public_key,
                           session=session)
        return out[:i] + out[i + 1:]


class Gate(Protocol):
    def is_set(self) -> bool: ...


class HeldBack:
    """Another guardian that sends nothing in `phase` until `opened` is set: the others wait for it there.
    Opening does not wake it; step its ceremony then (Ceremonies.step)."""

    def __init__(self, guardian: Guardian, phase: str, opened: Gate) -> None:
        self.guardian, self.phase, self.opened = guardian, phase, opened
        self.t = guardian.t

    @property
    def state(self) -> dict:
        return self.guardian.state

    def note_sent(self, type_: str, body) -> None:
        self.guardian.note_sent(type_, body)

    def act(self):
        if not self.opened.is_set() and self.t.outcome is None and self.t.phase == self.phase:
            return []
        return self.guardian.act()


class WrongDecryptionGuardian(DecryptionGuardian):
    """Every partial decryption M (or only the first statement's) is off by a factor g; its commitment hash
    is computed over that M, so eq 88 holds and eqs 94-95 name this guardian."""

    def __init__(self, transcript: DecryptionTranscript, me: int, keys, state: dict | None,
                 first_only: bool = False) -> None:
        super().__init__(transcript, me, keys, state)
        self.first_only = first_only

    def _shares(self, r):
        send = super()._shares(r)
        g = self.t.ctx.group
        a_rows, b_rows = self._pairs[r.number]
        for s_index, item in enumerate(self.t.ctx.items):
            if self.first_only and s_index:
                break
            for c_index, part in enumerate(r.parts[self.me]):
                m = int.from_bytes(send.body["values"][s_index][c_index], "big") * int(g.g) % int(g.p)
                send.body["values"][s_index][c_index] = m.to_bytes(g.p_bytes, "big")
                share = PartShare(part, mpz(m), mpz(int.from_bytes(a_rows[s_index][c_index], "big")),
                                  mpz(int.from_bytes(b_rows[s_index][c_index], "big")))
                send.body["digests"][s_index][c_index] = commitment_digest(g, item.statement, share, r.present)
        return send


# --- factories, in the form node.app.Guardians takes -------------------------------------------------------


def bad_share(victim: int, reveal: str = "sent"):
    return lambda port, t, me, state: BadShareGuardian(t, me, state, victim, reveal)


def bad_proof():
    return lambda port, t, me, state: BadProofGuardian(t, me, state)


def false_complaint(accused: int):
    return lambda port, t, me, state: FalseComplaintGuardian(t, me, state, accused)


def equivocate(message: str = "keys", after: int | None = None, outbox: TwoFacedOutbox | None = None):
    return lambda port, t, me, state: EquivocatingGuardian(port, t, me, state, message, after, outbox)


def hold_back(phase: str, opened: Gate, then: GuardianFactory = honest_guardian):
    return lambda port, t, me, state: HeldBack(then(port, t, me, state), phase, opened)


def only_in(sessions: Container[str], factory: GuardianFactory):
    """`factory`'s guardian in the ceremonies whose session (hex) is in `sessions` when they start."""
    return lambda port, t, me, state: \
        (factory if t.config.session.hex() in sessions else honest_guardian)(port, t, me, state)


def wrong_decryption(first_only: bool = False):
    return lambda port, t, me, keys, state: WrongDecryptionGuardian(t, me, keys, state, first_only)



# --- frames straight onto the links, beside the outbox ------------------------------------------------------


async def send_on_links(node: Node, kind: str, frame: bytes) -> None:
    """One frame on every live link of `node`, as it is: what a replaying or garbling guardian sends."""
    for peer in node.peers.values():
        if peer.connection is not None:
            try:
                await peer.connection.send(kind, frame)
            except LINK_CLOSED:
                pass


async def replay_session(node: Node, session: bytes) -> int:
    """Pass on every message this node sent in `session` so far again, newest first: duplicated, reordered,
    late. How many."""
    own = [raw for raw, mine in node.db.session_log(session) if mine]
    for raw in reversed(own):
        await send_on_links(node, "relay", raw)
    return len(own)
