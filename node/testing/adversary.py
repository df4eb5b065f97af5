"""Misbehaving guardians for rehearsals and tests, plugged in through the services' guardian factories.

Each is the honest machine (node/protocol/ceremony.py, node/protocol/decryption.py) with one
behaviour changed, so the honest nodes meet a real adversary on the wire: correctly signed
messages with wrong content. Use them with node.app.build(..., guardians=Guardians(...)):

  bad_share(victim, reveal)   the key ceremony share for `victim` does not match the commitments;
                              when accused, it reveals the share it sent ("sent") or the true one ("true")
  bad_proof()                 its public key carries an invalid Schnorr proof (Verification 2)
  false_complaint(accused)    its share check complains about an honest guardian
  equivocate()                its keys message shows other keys to the higher-numbered peers
  wrong_decryption(first_only)
                              partial decryptions that are not A^z_i, with matching commitment
                              hashes (eq 88 holds, eqs 94-95 fail)
"""

from __future__ import annotations

from gmpy2 import mpz

from node.crypto.decryption import PartShare, commitment_digest
from node.crypto.keys import encrypt_share, evaluate_polynomial, generate_guardian_key
from node.protocol.ceremony import Guardian, Transcript, encode_public_key, encode_share
from node.protocol.decryption import DecryptionGuardian, DecryptionTranscript
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


class EquivocatingGuardian(Guardian):
    """Sends its keys message itself, one peer at a time: the later peers get other, equally valid keys."""

    def __init__(self, port: Port, transcript: Transcript, me: int, state: dict | None) -> None:
        super().__init__(transcript, me, state)
        self.port = port

    def act(self):
        out = super().act()
        for i, s in enumerate(out):
            if s.type == "keys":
                t = self.t
                _, other = generate_guardian_key(t.group, t.parameters.g_table, t.parameters.h_p, self.index,
                                                 t.k, t.config.guardians[self.index - 1].name)
                for entry in self.port.roster.entries:
                    if entry.sequence == self.index:
                        continue
                    body = {"public_key": encode_public_key(t.group, other)} \
                        if entry.sequence > self.index + 1 else s.body
                    self.port.send("keys", body, to=entry.public_key, session=t.config.session)
                return out[:i] + out[i + 1:]
        return out


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


def equivocate():
    return lambda port, t, me, state: EquivocatingGuardian(port, t, me, state)


def wrong_decryption(first_only: bool = False):
    return lambda port, t, me, keys, state: WrongDecryptionGuardian(t, me, keys, state, first_only)
