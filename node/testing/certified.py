"""A key ceremony's export as a node writes it, custody done and certified, without running nodes.

For tests of the custody gate, `guardian record init` and the certificate checks: the election files of
an in-process ceremony, an election config naming n guardians with fresh identity keys, and the ceremony
certificate signed by each of those keys, in a node data directory's `ceremonies/<hash>/` beside a
node.toml that points at it. Test only: the guardians' identity keys are made here, in one place.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import nacl.signing

from node.crypto.local_ceremony import CeremonyResult
from node.custody.certificate import (
    CERTIFICATE_FORMAT, ELECTION_CONFIG, STEPS, body_digest, certificate_message, utc, write_certificate,
)
from node.identity import fingerprint
from node.protocol.election_config import ConfigGuardian, ElectionConfig
from node.record import layout
from node.record.local import write_election

NODE_TOML = """[node]
name = "g1"
data_dir = "."
listen = "127.0.0.1:7401"
"""


@dataclass
class Certified:
    export: Path
    config: ElectionConfig
    keys: list[nacl.signing.SigningKey]
    certificate: dict

    @property
    def session(self) -> str:
        return self.config.session.hex()


def certified_export(data_dir: Path, ceremony: CeremonyResult, election: str = "Certified test election",
                     certify: bool = True, replaces: bytes | None = None) -> Certified:
    """The export of `ceremony` under data_dir/ceremonies/<hash>/ (and data_dir/node.toml); with `certify`,
    every guardian's custody steps and the certificate signed by all; `replaces` a ceremony's session."""
    params = ceremony.context.parameters
    keys = [nacl.signing.SigningKey.generate() for _ in range(params.n)]
    config = ElectionConfig(election, params.k,
                            tuple(ConfigGuardian(i, f"g{i}", bytes(key.verify_key)) for i, key in enumerate(keys, 1)),
                            params.manifest, 60.0, secrets.token_hex(16), replaces)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "node.toml").write_text(NODE_TOML)
    export = data_dir / "ceremonies" / config.session.hex()
    write_election(export, ceremony, election, method="key ceremony across guardian nodes")
    record = layout.Record(export)
    record.update_index((), {ELECTION_CONFIG: record.write(ELECTION_CONFIG, config.canonical_bytes())})
    certificate = sign_certificate(export, config, keys) if certify else {}
    return Certified(export, config, keys, certificate)


def sign_certificate(export: Path, config: ElectionConfig, keys: list[nacl.signing.SigningKey]) -> dict:
    """The certificate of custody done by every guardian, as the nodes build it, signed by `keys`, written."""
    now = time.time()
    guardians = []
    for g in config.guardians:
        backup = f"TEST-{g.sequence:04d}"
        guardians.append({
            "sequence": g.sequence, "name": g.name, "public_key": g.public_key.hex(),
            "key_fingerprint": fingerprint(g.public_key),
            "commitments_sha256": hashlib.sha256((export / layout.guardian_file(g.sequence)).read_bytes()).hexdigest(),
            "custody": {"downloaded": {"at": utc(now), "fingerprint": backup},
                        "backed-up": {"at": utc(now), "copies": 2, "fingerprint": backup},
                        "verified": {"at": utc(now), "fingerprint": backup}}})
    assert [s for s in guardians[0]["custody"]] == list(STEPS)
    h_e = layout.Record(export).read_json(layout.HASHES_EXT)["h_e"].lower()
    body = {"format": CERTIFICATE_FORMAT, "election": config.election, "ceremony": config.session.hex(),
            "n": config.n, "k": config.k, "h_e": h_e, "joint_key_sha256": "0" * 16,
            "parameters": "ElectionGuard 2.1 standard (4096-bit p, 256-bit q)", "guardians": guardians,
            "verification": "every guardian exported, backed up and verified its key backup", "completed": utc(now)}
    digest = body_digest(body)
    certificate = {"certificate": body, "sha256": digest.hex(),
                   "signatures": [{"sequence": g.sequence, "name": g.name,
                                   "signature": key.sign(certificate_message(digest)).signature.hex()}
                                  for g, key in zip(config.guardians, keys)]}
    write_certificate(export, certificate)
    return certificate
