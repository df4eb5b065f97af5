"""A misbehaving guardian for the simulator: `python -m simulate.adversary --config node.toml --behaviour B`.

It is not the node guardians run: it is that node's code with one guardian's behaviour changed,
so that the honest nodes (unchanged `guardian run` processes) meet a real adversary on the wire:
correctly signed messages with wrong content. Behaviours:

  bad-share         in the key ceremony, sends --victim an encrypted share that does not match its
                    commitments, and when accused reveals that same share (the ceremony must abort
                    naming it)
  equivocate        shows its keys message to the higher-numbered peers with other keys than to the
                    lower-numbered ones (the echo of H_G must catch it; the ceremony aborts naming it)
  bad-proof         publishes a key with an invalid Schnorr proof (Verification 2 fails; abort naming it)
  wrong-decryption  takes part in decryption with partial decryptions that are not A^z_i (eqs 94-95
                    must name it; the decryption completes without it if k honest guardians remain)
  replay            every few seconds sends one of its old messages again (refused as a replay)
  garbage-frames    every few seconds sends an undecodable envelope inside its authenticated link
                    (refused as malformed)
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio
from gmpy2 import mpz

from node.config import load_node_config, load_roster
from node.crypto.decryption import PartShare, commitment_digest
from node.crypto.keys import encrypt_share, evaluate_polynomial, generate_guardian_key
from node.daemon.node import LINK_CLOSED, Node
from node.identity import Identity
from node.cli.passphrase import read_passphrase, source_from_args
from node.protocol.ceremony import encode_public_key, encode_share
from node.protocol.decryption import DecryptionGuardian
from node.storage.db import NodeDatabase

log = logging.getLogger("guardian.adversary")


def _q(guardian, value) -> bytes:
    return int(value % guardian.group.q).to_bytes(guardian.group.q_bytes, "big")


def _on_guardians(node: Node, patch) -> None:
    """Call patch(guardian) on each ceremony's Guardian once, before it first acts."""
    ceremonies = node.ceremonies
    real_step = ceremonies.step
    done: set[bytes] = set()

    def step(session: bytes) -> None:
        if session not in done:
            done.add(session)
            patch(ceremonies.running[session].guardian)
        real_step(session)
    ceremonies.step = step


def bad_share(victim: int):
    def patch(guardian):
        real = guardian.act

        def act():
            out = real()
            for s in out:
                if s.type == "shares":
                    t, secret = guardian.t, guardian._secret()
                    nonce = mpz(guardian.state["share_nonces"][str(victim)], 16)
                    share = evaluate_polynomial(t.group, secret.coefficients, victim)
                    data = evaluate_polynomial(t.group, secret.data_coefficients, victim)
                    bad = encrypt_share(t.group, t.parameters.g_table, t.parameters.h_p, guardian.index, victim,
                                        t.keys[victim].communication_key, (share + 1) % t.group.q, data, nonce=nonce)
                    s.body["shares"] = [encode_share(t.group, bad) if item["to"] == victim else item
                                        for item in s.body["shares"]]
                if s.type == "reveal":
                    s.body["share"] = _q(guardian, int.from_bytes(s.body["share"], "big") + 1)
            return out
        guardian.act = act
    return patch


def bad_proof(guardian):
    real = guardian.act

    def act():
        out = real()
        for s in out:
            if s.type == "keys":
                proof = list(s.body["public_key"]["proof"])
                proof[1] = _q(guardian, int.from_bytes(proof[1], "big") + 1)
                s.body["public_key"]["proof"] = proof
        return out
    guardian.act = act


def equivocate(node: Node):
    later = {p.entry.public_key for p in node.peers.values() if p.entry.sequence > node.me.sequence + 1}

    def patch(guardian):
        real = guardian.act

        def act():
            out = real()
            for i, s in enumerate(out):
                if s.type == "keys":
                    t = guardian.t
                    _, other = generate_guardian_key(t.group, t.parameters.g_table, t.parameters.h_p, guardian.index,
                                                     t.k, t.config.guardians[guardian.index - 1].name)
                    for peer in node.peers.values():
                        body = {"public_key": encode_public_key(t.group, other)} \
                            if peer.entry.public_key in later else s.body
                        node.send("keys", body, to=peer.entry.public_key, session=guardian.t.config.session)
                    return out[:i] + out[i + 1:]
            return out
        guardian.act = act
    return patch


def wrong_decryption() -> None:
    """Every partial decryption M is multiplied by g before it is hashed and sent: eq 88 holds, eqs 94-95 fail."""
    real = DecryptionGuardian._shares

    def shares(self, r):
        send = real(self, r)
        g = self.t.ctx.group
        a_rows, b_rows = self._pairs[r.number]
        for s_index, item in enumerate(self.t.ctx.items):
            for c_index, part in enumerate(r.parts[self.me]):
                m = int.from_bytes(send.body["values"][s_index][c_index], "big") * int(g.g) % int(g.p)
                send.body["values"][s_index][c_index] = m.to_bytes(g.p_bytes, "big")
                share = PartShare(part, mpz(m), mpz(int.from_bytes(a_rows[s_index][c_index], "big")),
                                  mpz(int.from_bytes(b_rows[s_index][c_index], "big")))
                send.body["digests"][s_index][c_index] = commitment_digest(g, item.statement, share, r.present)
        return send
    DecryptionGuardian._shares = shares


async def resend_old(node: Node, kind: str) -> None:
    """Every 2 s: an old envelope of ours again (replay), or bytes that are no envelope (garbage)."""
    while True:
        await trio.sleep(2)
        rows = node.db.outbox_for(node.identity.public_key, 0)
        frame = rows[0][1] if kind == "replay" and rows else b"\x93not an envelope"
        for peer in node.peers.values():
            if peer.connection is not None:
                try:
                    await peer.connection.send("env", frame)
                except LINK_CLOSED:
                    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulate.adversary", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--behaviour", required=True,
                        choices=("bad-share", "equivocate", "bad-proof", "wrong-decryption", "replay", "garbage-frames"))
    parser.add_argument("--victim", type=int, default=None)
    parser.add_argument("--passphrase-env")
    parser.add_argument("--passphrase-file")
    args = parser.parse_args(argv)
    config = load_node_config(args.config)
    roster = load_roster(config.roster_file)
    identity = Identity.load(config.data_dir, read_passphrase(source_from_args(args, config.passphrase_source)))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db = NodeDatabase(config.data_dir)
    node = Node(config, roster, identity, db)
    log.warning("this guardian misbehaves on purpose: %s", args.behaviour)
    if args.behaviour == "bad-share":
        _on_guardians(node, bad_share(args.victim or (1 if node.me.sequence != 1 else 2)))
    elif args.behaviour == "bad-proof":
        _on_guardians(node, bad_proof)
    elif args.behaviour == "equivocate":
        _on_guardians(node, equivocate(node))
    elif args.behaviour == "wrong-decryption":
        wrong_decryption()

    async def run():
        async with trio.open_nursery() as nursery:
            if args.behaviour in ("replay", "garbage-frames"):
                nursery.start_soon(resend_old, node, "replay" if args.behaviour == "replay" else "garbage")
            await node.run()
            nursery.cancel_scope.cancel()
    try:
        trio.run(run)
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
