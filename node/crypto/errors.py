"""Typed errors for bad input and failed checks.

Every refusal says what was wrong and, where there is one, which object was at
fault, so a caller can show one readable line to a person. Checks of received
values never use `assert`: assertions vanish under `python -O`.
"""


class GuardianError(Exception):
    """Base of every error this package raises on purpose."""


class InputError(GuardianError, ValueError):
    """A value given to us is malformed: wrong type, length, range or shape."""


class ParameterError(InputError):
    """Group parameters are not the ElectionGuard 2.1 standard ones, or are inconsistent."""


class EncodingError(InputError):
    """A byte string or hex string does not decode to the value it should."""


class GroupMembershipError(InputError):
    """A received integer is not in the group it must belong to (Z_p^r or Z_q)."""


class ManifestError(InputError):
    """The election manifest is malformed or violates a MUST of the serialization spec."""


class BallotError(InputError):
    """A plaintext ballot is invalid for the manifest (unknown contest, over a limit, wrong style)."""


class ProofError(GuardianError):
    """A zero-knowledge proof does not verify."""


class ShareError(GuardianError):
    """A guardian's key share does not match its commitments, or cannot be decrypted."""


class DecryptionError(GuardianError):
    """A decryption cannot be completed: too few guardians, a bad share, a tally out of range."""


class SignatureError(GuardianError):
    """A signature is malformed or does not verify."""
