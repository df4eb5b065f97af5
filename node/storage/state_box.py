"""The guardian's secrets at rest in the node database (sealed state of ceremonies and decryptions).

The key never leaves memory: it is derived from the node's identity seed, itself sealed under the
passphrase, so a restored identity opens the same state again.
"""

from __future__ import annotations

import json

import nacl.encoding
import nacl.hash
import nacl.secret


class StateBox:
    def __init__(self, identity_seed: bytes) -> None:
        key = nacl.hash.blake2b(identity_seed, digest_size=32, person=b"gn-storage-key",
                                encoder=nacl.encoding.RawEncoder)
        self._box = nacl.secret.SecretBox(key)
        # The key of the HMACs over the database rows that matter (node/storage/db.py: SEALED_ROWS).
        self.row_key = nacl.hash.blake2b(identity_seed, digest_size=32, person=b"gn-row-mac",
                                         encoder=nacl.encoding.RawEncoder)

    def __repr__(self) -> str:
        return "StateBox(<secret>)"

    def seal(self, state: dict) -> bytes:
        return bytes(self._box.encrypt(json.dumps(state).encode()))

    def open(self, sealed: bytes) -> dict:
        return json.loads(self._box.decrypt(sealed))
