"""All n guardians of a key ceremony in one process: for the demo, tests and benchmarks.

The guardian nodes run exactly these steps as a protocol, each with only its
own secrets; here one function plays every guardian so the arithmetic can be
exercised end to end without a network.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from node.crypto.decryption import PublicShares, ThresholdKey
from node.crypto.election import ElectionContext, ElectionParameters
from node.crypto.errors import ShareError
from node.crypto.hashing import guardian_record_hash
from node.crypto.keys import (
    GuardianPublicKey, GuardianSecretKey, decrypt_share, encrypt_share, evaluate_polynomial,
    generate_guardian_key, joint_key, verify_guardian_public_key, verify_share,
)


@dataclass(frozen=True)
class GuardianKeys:
    """One guardian's result of the ceremony: its decryption key shares for K and K-hat."""

    index: int
    vote: ThresholdKey
    data: ThresholdKey


@dataclass(frozen=True)
class CeremonyResult:
    context: ElectionContext
    public_keys: tuple[GuardianPublicKey, ...]
    guardian_keys: dict[int, GuardianKeys]
    record_hash: bytes                      # H_G (eq 27)

    def vote_publics(self) -> PublicShares:
        return PublicShares(self.context.group, {pk.index: pk.commitments for pk in self.public_keys})

    def data_publics(self) -> PublicShares:
        return PublicShares(self.context.group, {pk.index: pk.data_commitments for pk in self.public_keys})


def run_local_ceremony(parameters: ElectionParameters, rng=None) -> CeremonyResult:
    """Spec 3.2 for all n guardians: keys, proofs, encrypted shares, every check, joint keys, H_G."""
    rng = rng or secrets.SystemRandom()
    group, g_table, h_p, n, k = parameters.group, parameters.g_table, parameters.h_p, parameters.n, parameters.k
    secrets_: dict[int, GuardianSecretKey] = {}
    publics: dict[int, GuardianPublicKey] = {}
    for i in range(1, n + 1):
        secrets_[i], publics[i] = generate_guardian_key(group, g_table, h_p, i, k, rng=rng)
    for pk in publics.values():
        verify_guardian_public_key(group, g_table, h_p, pk, k)                  # Verification 2
    received: dict[int, dict[int, tuple]] = {l: {} for l in publics}
    for i, sk in secrets_.items():
        for l, pk_l in publics.items():
            share = evaluate_polynomial(group, sk.coefficients, l)              # P_i(l)
            data_share = evaluate_polynomial(group, sk.data_coefficients, l)
            if l == i:
                received[l][i] = (share, data_share)
                continue
            enc = encrypt_share(group, g_table, h_p, i, l, pk_l.communication_key, share, data_share, rng)
            received[l][i] = decrypt_share(group, g_table, h_p, secrets_[l], pk_l.communication_key, enc)
    for l, shares in received.items():
        for i, (share, data_share) in shares.items():                           # eqs 28, 29
            if not verify_share(group, g_table, publics[i].commitments, l, share):
                raise ShareError(f"guardian {i}'s share for guardian {l} does not match its commitments")
            if not verify_share(group, g_table, publics[i].data_commitments, l, data_share):
                raise ShareError(f"guardian {i}'s data share for guardian {l} does not match its commitments")
    k_joint = joint_key(group, [pk.key for pk in publics.values()])            # eq 25
    k_hat = joint_key(group, [pk.data_key for pk in publics.values()])         # eq 26
    ordered = [publics[i] for i in sorted(publics)]
    record_hash = guardian_record_hash(
        group, parameters.h_b, k_joint, k_hat, [pk.commitments for pk in ordered],
        [pk.data_commitments for pk in ordered], [pk.communication_key for pk in ordered])
    keys = {
        l: GuardianKeys(
            l,
            ThresholdKey(l, secrets_[l].coefficients[0], {i: s[0] for i, s in received[l].items()}),
            ThresholdKey(l, secrets_[l].data_coefficients[0], {i: s[1] for i, s in received[l].items()}),
        )
        for l in publics
    }
    context = ElectionContext(parameters, k_joint, k_hat)
    return CeremonyResult(context, tuple(ordered), keys, record_hash)
