"""The election config the guardians agree on before a key ceremony (docs/ARCHITECTURE.md "A key ceremony").

Its canonical JSON bytes are what every guardian signs (by accepting) and its
SHA-256 is the ceremony's session id, so messages of one ceremony can never be
replayed into another.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from node.crypto.errors import InputError
from node.crypto.manifest import Manifest, canonical_json, parse_manifest

FORMAT = "guardian-node election v1"
MIN_TIMEOUT, MAX_TIMEOUT = 1.0, 86400.0


def default_phase_timeout(n: int) -> float:
    """Seconds a phase may take before the silent guardians are named: grows with n."""
    return 30.0 + 6.0 * n


@dataclass(frozen=True)
class ConfigGuardian:
    sequence: int
    name: str
    public_key: bytes


@dataclass(frozen=True)
class ElectionConfig:
    election: str
    k: int
    guardians: tuple[ConfigGuardian, ...]
    manifest: Manifest
    phase_timeout: float
    nonce: str
    replaces: bytes | None = None     # a ceremony of this election whose keys this one supersedes

    @property
    def n(self) -> int:
        return len(self.guardians)

    def to_json_dict(self) -> dict:
        return {
            "format": FORMAT, "election": self.election, "parameters": "standard", "n": self.n, "k": self.k,
            "guardians": [{"sequence": g.sequence, "name": g.name,
                           "public_key": base64.b64encode(g.public_key).decode()} for g in self.guardians],
            "manifest": self.manifest.to_json_dict(),
            "phase_timeout_seconds": self.phase_timeout, "nonce": self.nonce,
            **({"replaces": self.replaces.hex()} if self.replaces else {}),
        }

    def canonical_bytes(self) -> bytes:
        return canonical_json(self.to_json_dict())

    @property
    def session(self) -> bytes:
        return hashlib.sha256(self.canonical_bytes()).digest()

    def guardian_by_key(self, key: bytes) -> ConfigGuardian | None:
        for g in self.guardians:
            if g.public_key == key:
                return g
        return None


def parse_election_config(data: bytes) -> ElectionConfig:
    """Parse and check a proposed config; InputError names what is wrong. The bytes must be canonical."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise InputError("election config: not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise InputError(f"election config: format must be {FORMAT!r}")
    expected = {"format", "election", "parameters", "n", "k", "guardians", "manifest", "phase_timeout_seconds",
                "nonce"}
    if set(doc) - {"replaces"} != expected:
        raise InputError(f"election config: properties must be exactly {sorted(expected)} (and optionally "
                         f"'replaces')")
    replaces = None
    if "replaces" in doc:
        try:
            replaces = bytes.fromhex(doc["replaces"]) if isinstance(doc["replaces"], str) else b""
        except ValueError:
            replaces = b""
        if len(replaces) != 32:
            raise InputError("election config: 'replaces' must be the 64-hex-digit session of a ceremony")
    if doc["parameters"] != "standard":
        raise InputError("election config: only the standard parameters are allowed")
    election = doc["election"]
    if not isinstance(election, str) or not 1 <= len(election) <= 200:
        raise InputError("election config: 'election' must be a name of 1-200 characters")
    guardians = doc["guardians"]
    if not isinstance(guardians, list) or not 1 <= len(guardians) <= 1000:
        raise InputError("election config: 'guardians' must be a list of 1-1000 guardians")
    parsed = []
    for i, g in enumerate(guardians, 1):
        if not isinstance(g, dict) or set(g) != {"sequence", "name", "public_key"}:
            raise InputError(f"election config: guardian {i} must have sequence, name and public_key")
        try:
            key = base64.b64decode(g["public_key"], validate=True)
        except (ValueError, TypeError):
            key = b""
        if len(key) != 32 or not isinstance(g["name"], str) or g["sequence"] != i:
            raise InputError(f"election config: guardian {i} has a bad key, name or sequence (must be {i})")
        parsed.append(ConfigGuardian(i, g["name"], key))
    n, k = doc["n"], doc["k"]
    if n != len(parsed) or isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise InputError(f"election config: need n = number of guardians and 1 <= k <= n, got n={n!r}, k={k!r}")
    if len({g.public_key for g in parsed}) != n:
        raise InputError("election config: two guardians share a key")
    timeout = doc["phase_timeout_seconds"]
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not MIN_TIMEOUT <= timeout <= MAX_TIMEOUT:
        raise InputError(f"election config: phase_timeout_seconds must be {MIN_TIMEOUT}..{MAX_TIMEOUT}")
    nonce = doc["nonce"]
    if not isinstance(nonce, str) or len(nonce) != 32:
        raise InputError("election config: nonce must be 32 hex characters")
    config = ElectionConfig(election, k, tuple(parsed), parse_manifest(doc["manifest"]), float(timeout), nonce,
                            replaces)
    if config.canonical_bytes() != bytes(data):
        raise InputError("election config: not in canonical form")
    return config
