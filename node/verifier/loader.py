"""The record as the verifier reads it: every object parsed but the ballots, and for each that could not be, the reason.

A file that cannot be read is not an error of the loader: it fails the step
that needed it, with the reason recorded here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from node.crypto.errors import GuardianError
from node.crypto.params import STANDARD
from node.record import codec, layout
from node.record.custody_gate import custody_warnings
from node.record.election import ElectionFiles


@dataclass
class Loaded(ElectionFiles):
    """The election's files and everything voted, tallied and decrypted in the record."""

    devices: tuple[bytes, list[codec.DeviceRecord]] | None = None
    encrypted_tally: tuple | None = None
    decrypted_tally: codec.DecryptedTallyRecord | None = None
    challenged: dict[str, tuple[str, codec.ChallengedRecord]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)      # worth reporting, but no step fails for them

    def errors_in(self, folder: str) -> list[str]:
        """Why files of `folder` could not be read, in the order of their paths."""
        return [err for rel, err in sorted(self.errors.items()) if rel.startswith(folder + "/")]

    def holds_decryptions(self) -> bool:
        """Whether the record holds a decryption (the tally's or a challenged ballot's, as a file or in the index)."""
        if self.record.exists(layout.DECRYPTED_TALLY) or self.record.list_dir(layout.CHALLENGED):
            return True
        try:
            index = self.record.read_index()
        except GuardianError:
            return False           # the record index step says why
        return any(rel == layout.DECRYPTED_TALLY or rel.startswith(layout.CHALLENGED + "/") for rel in index)


def load(root: Path) -> Loaded:
    group = STANDARD      # the verifier's own parameters (Verification 1 may hard-code them)
    data = Loaded(layout.Record(root))
    data.read_election()
    if data.manifest is not None:     # a manifest another tool wrote: what deviates from 2.1 is named, not failed
        data.warnings += [f"{layout.MANIFEST}: {d}" for d in data.manifest.deviations]
    # Custody is outside spec section 6: a rehearsal, or a certificate that does not hold, is said, not failed.
    data.warnings += custody_warnings(data.record)
    # The ballots are not loaded here: one streaming pass checks them (node/verifier/ballot_pass.py).
    if data.record.exists(layout.DEVICES):
        data.devices = data.read(layout.DEVICES, codec.devices_from_json)
    data.encrypted_tally = data.read(layout.ENCRYPTED_TALLY, lambda o: codec.encrypted_tally_from_json(group, o))
    data.decrypted_tally = data.read(layout.DECRYPTED_TALLY, lambda o: codec.decrypted_tally_from_json(group, o))
    data.challenged = _by_ballot(data, layout.CHALLENGED, lambda o, rel: codec.challenged_from_json(group, o, rel))
    return data


def _by_ballot(data: Loaded, folder: str, parse) -> dict:
    """Every file of `folder`, by the ballot id inside it: {id: (path, object)}; a second file for an id is an error."""
    found: dict = {}
    for rel in data.record.list_dir(folder):
        obj = data.read(rel, lambda o, rel=rel: parse(o, rel))
        if obj is not None:
            if obj.ballot_id in found:
                data.errors[rel] = f"{rel}: ballot {obj.ballot_id!r} is also in {found[obj.ballot_id][0]}"
            else:
                found[obj.ballot_id] = (rel, obj)
    return found
