"""Shamir secret sharing (node/custody/shamir.py): any T of M shares recover; T - 1 say nothing."""

from __future__ import annotations

import collections
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.errors import InputError
from node.custody.shamir import (
    MAX_SECRET_BYTES, PRIME, Share, SharingError, check_parameters, evaluate_at, recover, recover_int, split,
    split_int,
)


@st.composite
def splits(draw):
    count = draw(st.integers(2, 9))
    threshold = draw(st.integers(2, count))
    secret = draw(st.binary(min_size=1, max_size=MAX_SECRET_BYTES))
    seed = draw(st.integers(0, 2**32))
    return secret, threshold, count, random.Random(seed)


@settings(max_examples=60, deadline=None)
@given(splits(), st.randoms(use_true_random=False))
def test_any_t_of_m_shares_recover_the_secret(case, chooser):
    secret, threshold, count, rng = case
    shares = split(secret, threshold, count, rng.randrange)
    assert len(shares) == count and [s.x for s in shares] == list(range(1, count + 1))
    subset = chooser.sample(shares, threshold)
    assert recover(subset) == secret


@settings(max_examples=30, deadline=None)
@given(splits(), st.randoms(use_true_random=False))
def test_fewer_than_t_shares_are_refused(case, chooser):
    secret, threshold, count, rng = case
    shares = split(secret, threshold, count, rng.randrange)
    with pytest.raises(SharingError, match="too few"):
        recover(chooser.sample(shares, threshold - 1))


def test_every_subset_of_a_small_split_recovers():
    secret = b"\x00\x00leading zeros are kept"
    shares = split(secret, 3, 5)
    for subset in itertools.permutations(shares, 3):
        assert recover(list(subset)) == secret
    for subset in itertools.combinations(shares, 4):          # more points of the same polynomial agree
        assert recover(list(subset)) == secret


def test_a_full_size_secret_and_the_largest_split():
    secret = bytes(range(MAX_SECRET_BYTES))
    shares = split(secret, 255, 255)
    assert recover(shares) == secret
    assert all(0 <= s.y < PRIME for s in shares)


def test_an_extra_share_agrees_with_the_polynomial():
    shares = split(b"k" * 32, 3, 5)
    assert evaluate_at(shares[:3], 4) == shares[3].y
    assert evaluate_at(shares[:3], 5) == shares[4].y


def test_a_share_value_never_shows_in_its_repr():
    share = split(b"k" * 32, 2, 2)[0]
    assert str(share.y) not in repr(share) and repr(share) == "Share(x=1)"


# --- T - 1 shares are independent of the secret (toy fields, every polynomial enumerated) ------------


@pytest.mark.parametrize("prime, threshold, count", [(257, 2, 3), (17, 3, 4), (7, 4, 5)])
def test_t_minus_1_shares_are_consistent_with_every_secret_equally(prime, threshold, count):
    """For every set of T - 1 share positions and every value those shares can take, each candidate secret
    arises from exactly the same number of polynomials: seeing the shares changes nothing about the secret."""
    tallies: dict = collections.defaultdict(collections.Counter)
    positions = list(itertools.combinations(range(count), threshold - 1))
    for secret in range(prime):
        for coefficients in itertools.product(range(prime), repeat=threshold - 1):
            draws = iter(coefficients)
            shares = split_int(secret, threshold, count, lambda n: next(draws), prime=prime)
            for chosen in positions:
                tallies[(chosen, tuple(shares[i].y for i in chosen))][secret] += 1
    assert len(tallies) == len(positions) * prime ** (threshold - 1)     # every value of T - 1 shares occurs
    for counts in tallies.values():
        assert set(counts) == set(range(prime))                        # ... with every secret
        assert len(set(counts.values())) == 1                          # ... equally often


def test_toy_field_recovery():
    rng = random.Random(5)
    for secret in range(17):
        shares = split_int(secret, 3, 16, rng.randrange, prime=17)
        assert recover_int(rng.sample(shares, 3), prime=17) == secret


# --- refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold, count, words", [
    (1, 3, "at least 2"),
    (0, 3, "at least 2"),
    (-2, 3, "at least 2"),
    (4, 3, "smaller than the threshold"),
    (2, 256, "at most 255"),
    (2.0, 3, "whole number"),
    (True, 3, "whole number"),
    (2, "3", "whole number"),
    (2, None, "whole number"),
])
def test_bad_parameters_are_refused(threshold, count, words):
    with pytest.raises(SharingError, match=words):
        check_parameters(threshold, count)
    with pytest.raises(SharingError, match=words):
        split(b"secret", threshold, count)


def test_a_toy_field_limits_the_number_of_shares():
    with pytest.raises(SharingError, match="at most 16"):
        split_int(3, 2, 17, prime=17)
    with pytest.raises(SharingError, match="in the field"):
        split_int(17, 2, 3, prime=17)
    with pytest.raises(SharingError, match="in the field"):
        split_int(-1, 2, 3, prime=17)


@pytest.mark.parametrize("secret", [b"", bytes(MAX_SECRET_BYTES + 1), "text", 5, None])
def test_bad_secrets_are_refused(secret):
    with pytest.raises(SharingError, match="secret must be"):
        split(secret, 2, 3)


def test_a_random_source_out_of_range_is_refused():
    with pytest.raises(SharingError, match="random number source"):
        split(b"secret", 2, 3, lambda n: n)
    with pytest.raises(SharingError, match="random number source"):
        split(b"secret", 2, 3, lambda n: -1)


def test_bad_shares_are_refused():
    shares = split(b"secret", 2, 3)
    cases = [
        ([], "no shares"),
        ([shares[0], shares[0]], "share number 1 is given twice"),
        ([shares[0], Share(1, shares[1].y)], "share number 1 is given twice"),
        ([shares[0], Share(0, shares[1].y)], "share 2 has the number 0"),
        ([Share(256, 1), shares[1]], "share 1 has the number 256"),
        ([shares[0], Share(2, PRIME)], "share 2 .number 2. has a value outside the field"),
        ([shares[0], Share(2, -1)], "outside the field"),
        ([shares[0], Share("2", 5)], "share 2 has the number '2'"),
        ([shares[0], (2, shares[1].y)], "share 2 is not a share"),
    ]
    for given_shares, words in cases:
        with pytest.raises(SharingError, match=words):
            recover(given_shares)


def test_an_altered_share_does_not_yield_a_wrong_secret():
    shares = split(b"k" * 32, 2, 3)
    with pytest.raises(SharingError, match="altered"):
        recover([shares[0], Share(2, (shares[1].y + 1) % PRIME)])


def test_shares_of_different_splits_do_not_yield_a_wrong_secret():
    a, b = split(b"k" * 32, 2, 3), split(b"k" * 32, 2, 3)
    with pytest.raises(SharingError, match="different splits"):
        recover([a[0], b[1]])


def test_sharing_errors_are_input_errors():
    assert issubclass(SharingError, InputError)
