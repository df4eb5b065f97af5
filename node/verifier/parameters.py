"""Verifications 1-4: the election itself (parameters, guardians' keys, K and K-hat, H_E).

The checks are those of node.record.election, which also opens an election for
the ballot box, encryption and decryption; here they are steps of the report,
and step 4 also checks that every object of the record names this election.
"""

from __future__ import annotations

from node.record.election import ELECTION_KEY, EXTENDED_HASH, GUARDIAN_KEYS, PARAMETERS, Verification
from node.verifier.ballots import every_ballot
from node.verifier.registry import Accumulator, Run, keys_known, parameters_known, step


def _declare(v: Verification, **needs):
    """Verification v of node.record.election as a step: its number and name, its check, what it needs."""
    @step(v.number, v.name, **needs)
    def check(run: Run, acc: Accumulator) -> None:
        v.check(run.data, run.election, acc)
    return check


parameters = _declare(PARAMETERS)
guardian_keys = _declare(GUARDIAN_KEYS, needs=parameters_known,
                         unmet="cannot check the guardians' keys without valid parameters (step 1)")
election_key = _declare(ELECTION_KEY, needs=parameters_known,
                        unmet="cannot compute K without valid parameters (step 1)")


@step(EXTENDED_HASH.number, EXTENDED_HASH.name, needs=keys_known,
      unmet="cannot compute H_E without K and K-hat (step 3)")
def extended_hash(run: Run, acc: Accumulator) -> None:
    """(4.A), and every ballot, decryption, tally and device list is for the election of H_E."""
    EXTENDED_HASH.check(run.data, run.election, acc)
    data, h_e = run.data, run.election.h_e
    named = [(f"ballot {bid!r}", b.h_e) for bid, b in sorted(every_ballot(run).summaries.items())]
    named += [(f"challenged ballot {bid!r}", c.h_e) for bid, (_, c) in sorted(data.challenged.items())]
    if data.encrypted_tally is not None:
        named.append(("encrypted tally", data.encrypted_tally[0]))
    if data.decrypted_tally is not None:
        named.append(("decrypted tally", data.decrypted_tally.h_e))
    if data.devices is not None:
        named.append(("devices", data.devices[0]))
    for who, value in named:
        acc.items += 1
        if value != h_e:
            acc.fail(f"{who}: belongs to another election (its h_e is not this election's H_E)")
