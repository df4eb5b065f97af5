"""A misbehaving guardian's node for the simulator: `python -m node.testing.adversary_node --config node.toml
--behaviour B`.

It is the node guardians run (node.app) with one guardian's behaviour swapped in through the services'
guardian factories (node/testing/adversary.py), so the honest nodes (unchanged `guardian run`
processes) meet a real adversary on the wire: correctly signed messages with wrong content. Behaviours:

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
  flood             once linked to every peer, sends FLOOD notes just under max_frame_bytes at once, more
                    than a peer's quota stores (the excess refused as quota); then takes part honestly
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from node.app import Guardians, build
from node.cli.passphrase import read_passphrase, source_from_args
from node.config import load_node_config, load_roster
from node.daemon.node import Node
from node.identity import Identity
from node.storage.db import NodeDatabase
from node.testing import adversary

log = logging.getLogger("guardian.adversary")
BEHAVIOURS = ("bad-share", "equivocate", "bad-proof", "wrong-decryption", "replay", "garbage-frames", "flood")
FLOOD = 40          # notes of max_frame_bytes: more than twice the default peer_burst_bytes


def guardians_for(behaviour: str, victim: int | None, me: int) -> Guardians:
    if behaviour == "bad-share":
        return Guardians(ceremony=adversary.bad_share(victim or (1 if me != 1 else 2)))
    if behaviour == "bad-proof":
        return Guardians(ceremony=adversary.bad_proof())
    if behaviour == "equivocate":
        return Guardians(ceremony=adversary.equivocate())
    if behaviour == "wrong-decryption":
        return Guardians(decryption=adversary.wrong_decryption())
    return Guardians()


async def resend_old(node: Node, kind: str) -> None:
    """Every 2 s: an old envelope of ours again (replay), or bytes that are no envelope (garbage)."""
    while True:
        await trio.sleep(2)
        rows = node.db.outbox_for(node.identity.public_key, 0)
        await adversary.send_on_links(node, "env", rows[0][1] if kind == "replay" and rows else b"\x93not an envelope")


async def flood(node: Node) -> None:
    """Once every peer is linked: FLOOD signed notes just under max_frame_bytes, to every peer at once."""
    while any(peer.connection is None for peer in node.peers.values()):
        await trio.sleep(0.2)
    body = {"blob": os.urandom(node.config.max_frame_bytes - 1024)}
    for _ in range(FLOOD):
        node.send("note", body)
        await trio.sleep(0)
    log.warning("flooded every peer with %d notes of %d bytes", FLOOD, node.config.max_frame_bytes - 1024)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.testing.adversary_node", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--behaviour", required=True, choices=BEHAVIOURS)
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
    me = roster.by_key(identity.public_key)
    app = build(config, roster, identity, db, guardians_for(args.behaviour, args.victim, me.sequence if me else 0))
    log.warning("this guardian misbehaves on purpose: %s", args.behaviour)

    async def run():
        async with trio.open_nursery() as nursery:
            if args.behaviour in ("replay", "garbage-frames"):
                nursery.start_soon(resend_old, app.node, "replay" if args.behaviour == "replay" else "garbage")
            elif args.behaviour == "flood":
                nursery.start_soon(flood, app.node)
            await app.run()
            nursery.cancel_scope.cancel()
    try:
        trio.run(run)
    finally:
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
