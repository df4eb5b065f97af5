"""Tests for node.crypto.group (membership checks), fixed_base (FixedBase, multi_exp) and dlog."""

from __future__ import annotations

import random

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.dlog import DiscreteLog, discrete_log
from node.crypto.errors import DecryptionError, GroupMembershipError
from node.crypto.fixed_base import FixedBase, multi_exp
from node.crypto.group import check_element, check_elements, check_scalar, check_scalars
from node.crypto.params import STANDARD, TOY_16, TOY_32, TOY_64, TOY_128

TOYS = (TOY_16, TOY_32, TOY_64, TOY_128)
# Groups where (p-1)/2q is large enough that a random-weight batch check cannot be fooled by chance
# in a test run (TOY_16 and TOY_32 are tested separately below).
BATCH_SOUND_TOYS = (TOY_64, TOY_128)

_TABLES: dict = {}


def table(group) -> FixedBase:
    t = _TABLES.get(group)
    if t is None:
        t = _TABLES[group] = FixedBase(group, group.g)
    return t


def member(group, rnd: random.Random) -> mpz:
    return table(group).pow(rnd.randrange(int(group.q)))


def qr_outside_subgroup(group, rnd: random.Random) -> mpz:
    """A quadratic residue (Legendre symbol 1) that is not in the order-q subgroup."""
    p, q = group.p, group.q
    while True:
        h = rnd.randrange(2, int(p) - 1)
        x = h * h % p
        if gmpy2.powmod(x, q, p) != 1:
            assert gmpy2.legendre(x, p) == 1
            return mpz(x)


def small_order_qr(group, rnd: random.Random) -> mpz:
    """An element of order (p-1)/2q: a QR with no order-q component at all."""
    p, q = group.p, group.q
    while True:
        y = gmpy2.powmod(rnd.randrange(2, int(p) - 1), 2 * q, p)
        if y != 1:
            return y


def non_residue(group, rnd: random.Random) -> mpz:
    p = group.p
    while True:
        h = mpz(rnd.randrange(2, int(p) - 1))
        if gmpy2.legendre(h, p) == -1:
            return h


def bad_values(group, rnd: random.Random) -> list:
    p = group.p
    return [
        mpz(0), p, p + 1, p - 1, -1, -member(group, rnd), member(group, rnd) + p,
        qr_outside_subgroup(group, rnd), small_order_qr(group, rnd), non_residue(group, rnd),
        True, False, "5", 1.0, None, str(int(group.g)),
    ]


# --------------------------------------------------------------------------- check_element / check_scalar


@pytest.mark.parametrize("group", TOYS + (STANDARD,), ids=lambda g: g.name)
def test_check_element_accepts_members(group):
    rnd = random.Random(1)
    for x in [mpz(1), group.g, int(group.g), member(group, rnd), member(group, rnd)]:
        assert check_element(group, x, "x") == x
        assert isinstance(check_element(group, x, "x"), type(mpz(0)))


@pytest.mark.parametrize("group", TOYS + (STANDARD,), ids=lambda g: g.name)
def test_check_element_rejects_non_members(group):
    rnd = random.Random(2)
    for x in bad_values(group, rnd):
        with pytest.raises(GroupMembershipError, match="the thing called Zed"):
            check_element(group, x, "the thing called Zed")


def test_toy_groups_have_room_for_qrs_outside_the_subgroup():
    # sanity for the constructions above: (p-1)/2q > 1 in every toy group
    for group in TOYS:
        assert group.r // 2 > 1
        rnd = random.Random(3)
        y = small_order_qr(group, rnd)
        assert gmpy2.powmod(y, group.r // 2, group.p) == 1
        assert gmpy2.powmod(y, group.q, group.p) != 1


@pytest.mark.parametrize("group", TOYS + (STANDARD,), ids=lambda g: g.name)
def test_check_scalar(group):
    q = group.q
    for x in (0, 1, q - 1, int(q - 1), mpz(5)):
        assert check_scalar(group, x, "v") == x
    for x in (-1, q, q + 1, 2 * q, -q, True, False, "1", 1.5, None):
        with pytest.raises(GroupMembershipError, match="response v_3"):
            check_scalar(group, x, "response v_3")
    assert check_scalars(group, [(0, "a"), (q - 1, "b")]) == [0, q - 1]
    with pytest.raises(GroupMembershipError, match="second"):
        check_scalars(group, [(0, "first"), (q, "second")])


# --------------------------------------------------------------------------- check_elements (batched)


def _tag(i: int) -> str:
    return f"<item {i}>"


@st.composite
def mixes(draw, groups):
    group = draw(st.sampled_from(groups))
    seed = draw(st.integers(0, 2**32))
    rnd = random.Random(seed)
    n = draw(st.integers(0, 12))
    n_bad = draw(st.integers(0, min(n, 2)))
    kinds = draw(st.lists(st.integers(0, 15), min_size=n_bad, max_size=n_bad))
    bad_pos = rnd.sample(range(n), n_bad) if n else []
    values = [member(group, rnd) for _ in range(n)]
    for pos, kind in zip(bad_pos, kinds):
        values[pos] = bad_values(group, rnd)[kind]
    return group, values, set(bad_pos), seed


def _single_verdicts(group, values):
    bad = set()
    for i, v in enumerate(values):
        try:
            check_element(group, v, _tag(i))
        except GroupMembershipError:
            bad.add(i)
    return bad


def _check_batch_agrees(group, values, bad_pos, seed):
    assert _single_verdicts(group, values) == bad_pos
    items = [(v, _tag(i)) for i, v in enumerate(values)]
    if not bad_pos:
        assert check_elements(group, items, rng=random.Random(seed)) == values
        return
    with pytest.raises(GroupMembershipError) as exc:
        check_elements(group, items, rng=random.Random(seed))
    named = [i for i in range(len(values)) if _tag(i) in str(exc.value)]
    assert len(named) == 1
    assert named[0] in bad_pos
    if len(bad_pos) == 1:
        assert named == sorted(bad_pos)


@settings(max_examples=200, deadline=None)
@given(mixes(BATCH_SOUND_TOYS))
def test_check_elements_agrees_with_check_element_toy(mix):
    _check_batch_agrees(*mix)


@settings(max_examples=12, deadline=None)
@given(mixes((STANDARD,)))
def test_check_elements_agrees_with_check_element_standard(mix):
    _check_batch_agrees(*mix)


@pytest.mark.parametrize("group", BATCH_SOUND_TOYS + (STANDARD,), ids=lambda g: g.name)
@pytest.mark.parametrize("maker", [qr_outside_subgroup, small_order_qr, non_residue])
def test_check_elements_names_the_bad_element_in_a_long_batch(group, maker):
    rnd = random.Random(4)
    n = 10 if group is STANDARD else 30
    for pos in (0, n // 2, n - 1):
        values = [member(group, rnd) for _ in range(n)]
        values[pos] = maker(group, rnd)
        with pytest.raises(GroupMembershipError) as exc:
            check_elements(group, [(v, _tag(i)) for i, v in enumerate(values)])
        assert [i for i in range(n) if _tag(i) in str(exc.value)] == [pos]


def test_check_elements_returns_mpz_values_and_accepts_empty():
    rnd = random.Random(5)
    assert check_elements(TOY_64, []) == []
    values = [int(member(TOY_64, rnd)) for _ in range(6)]
    out = check_elements(TOY_64, [(v, "v") for v in values])
    assert out == values and all(isinstance(v, type(mpz(0))) for v in out)


@pytest.mark.parametrize("group", (TOY_16, TOY_32), ids=lambda g: g.name)
def test_check_elements_is_sound_on_small_cofactor_toy_groups(group):
    """The batched check must give check_element's verdict on every group it is used with.

    With weights drawn at random, a QR outside the subgroup passes the combined test whenever its
    weight is a multiple of (p-1)/2q: 233 for TOY_16 and 32159 for TOY_32. Seeded rngs make the
    outcome reproducible.
    """
    rnd = random.Random(6)
    bad = small_order_qr(group, rnd)
    good = [member(group, rnd) for _ in range(3)]
    items = [(good[0], "good 0"), (bad, "the bad one"), (good[1], "good 1"), (good[2], "good 2")]
    with pytest.raises(GroupMembershipError):
        check_element(group, bad, "the bad one")
    accepted = []
    for seed in range(2000):
        try:
            check_elements(group, items, rng=random.Random(seed))
            accepted.append(seed)
        except GroupMembershipError as e:
            assert "the bad one" in str(e)
    assert accepted == []


# --------------------------------------------------------------------------- FixedBase.pow


SPECIAL_EXPONENTS = ("0", "1", "q-1", "q", "q+1", "q+5", "2q", "2^256-1", "256", "255", "65536")


def _special(group, name):
    q = int(group.q)
    return {"0": 0, "1": 1, "q-1": q - 1, "q": q, "q+1": q + 1, "q+5": q + 5, "2q": 2 * q,
            "2^256-1": 2**256 - 1, "256": 256, "255": 255, "65536": 65536}[name]


@pytest.mark.parametrize("group", TOYS + (STANDARD,), ids=lambda g: g.name)
def test_fixed_base_special_exponents(group):
    t = table(group)
    for name in SPECIAL_EXPONENTS:
        e = _special(group, name)
        assert t.pow(e) == gmpy2.powmod(group.g, e, group.p), name
    assert t.pow(0) == 1 and t.pow(group.q) == 1 and t.pow(1) == group.g


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TOYS), st.integers(0, 2**300), st.integers(0, 2**64))
def test_fixed_base_pow_equals_powmod_toy(group, e, s):
    base = table(group).pow(s + 2)  # an arbitrary subgroup element as the base
    fb = FixedBase(group, base) if s % 4 == 0 else None
    assert table(group).pow(e) == gmpy2.powmod(group.g, e, group.p)
    if fb is not None:
        assert fb.pow(e) == gmpy2.powmod(base, e, group.p)


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 2**256 - 1))
def test_fixed_base_pow_equals_powmod_standard(e):
    assert table(STANDARD).pow(e) == gmpy2.powmod(STANDARD.g, e, STANDARD.p)


def test_fixed_base_other_base_standard():
    base = gmpy2.powmod(STANDARD.g, 987654321, STANDARD.p)
    fb = FixedBase(STANDARD, base)
    for e in (0, 1, 2**255 + 12345, int(STANDARD.q) - 1):
        assert fb.pow(e) == gmpy2.powmod(base, e, STANDARD.p)


def test_fixed_base_negative_exponent_is_inverse():
    # pow reduces mod q, so for a subgroup base a negative exponent gives the inverse power
    for group in (TOY_64, STANDARD):
        t = table(group)
        x = t.pow(-1)
        assert x * group.g % group.p == 1


# --------------------------------------------------------------------------- multi_exp


@st.composite
def multi_exp_inputs(draw):
    group = draw(st.sampled_from(TOYS))
    n = draw(st.integers(0, 40))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    bases = []
    for _ in range(n):
        kind = rnd.randrange(3)
        if kind == 0:
            bases.append(member(group, rnd))
        elif kind == 1:
            bases.append(mpz(rnd.randrange(1, int(group.p))))  # any unit, not only subgroup elements
        else:
            bases.append(rnd.randrange(1, int(group.p)))       # plain ints
    exps = draw(st.lists(
        st.one_of(st.just(0), st.integers(0, 3), st.integers(0, 2**64), st.integers(0, 2**256)),
        min_size=n, max_size=n))
    return group, bases, exps


def _naive(group, bases, exps):
    result = mpz(1)
    for b, e in zip(bases, exps):
        result = result * gmpy2.powmod(b, e, group.p) % group.p
    return result


@settings(max_examples=200, deadline=None)
@given(multi_exp_inputs())
def test_multi_exp_equals_product_of_powmods(inp):
    group, bases, exps = inp
    assert multi_exp(group, bases, exps) == _naive(group, bases, exps)


def test_multi_exp_edge_cases():
    rnd = random.Random(8)
    for group in TOYS:
        bases = [member(group, rnd) for _ in range(10)]
        assert multi_exp(group, [], []) == 1
        assert multi_exp(group, bases, [0] * 10) == 1
        assert multi_exp(group, bases, [1] * 10) == _naive(group, bases, [1] * 10)
        one_hot = [0] * 10
        one_hot[7] = 2**200 + 3
        assert multi_exp(group, bases, one_hot) == gmpy2.powmod(bases[7], 2**200 + 3, group.p)
        same = [bases[0]] * 8
        exps = [rnd.randrange(2**128) for _ in range(8)]
        assert multi_exp(group, same, exps) == gmpy2.powmod(bases[0], sum(exps), group.p)
    with pytest.raises(ValueError):
        multi_exp(TOY_64, [TOY_64.g, TOY_64.g], [1])
    with pytest.raises(ValueError):
        multi_exp(TOY_64, [TOY_64.g] * 5, [1, 2, 3, 4, -1])


def test_multi_exp_standard():
    rnd = random.Random(9)
    bases = [member(STANDARD, rnd) for _ in range(6)]
    exps = [0, 1, rnd.randrange(2**256), rnd.randrange(2**128), 0, int(STANDARD.q) - 1]
    assert multi_exp(STANDARD, bases, exps) == _naive(STANDARD, bases, exps)


# --------------------------------------------------------------------------- discrete log


@pytest.fixture(scope="module")
def toy_key():
    return gmpy2.powmod(TOY_128.g, 123456789, TOY_128.p)


@pytest.mark.parametrize("bound", [0, 1, 2, 3, 99, 100, 101, 1000, 12345])
def test_discrete_log_small_values(toy_key, bound):
    dl = DiscreteLog(TOY_128, toy_key, bound)
    rnd = random.Random(bound)
    for t in {0, 1, bound, bound // 2, rnd.randrange(bound + 1), max(bound - 1, 0)}:
        if t > bound:
            continue
        assert dl.solve(gmpy2.powmod(toy_key, t, TOY_128.p)) == t
    for t in (bound + 1, bound + 2, 2 * bound + 7, 10 * bound + 11):
        with pytest.raises(DecryptionError):
            dl.solve(gmpy2.powmod(toy_key, t, TOY_128.p))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6))
def test_discrete_log_random(t):
    key = gmpy2.powmod(TOY_128.g, 987654321, TOY_128.p)
    dl = discrete_log(TOY_128, key, 10**6)
    assert dl.solve(gmpy2.powmod(key, t, TOY_128.p)) == t


def test_discrete_log_not_a_power(toy_key):
    dl = DiscreteLog(TOY_128, toy_key, 1000)
    p = TOY_128.p
    rnd = random.Random(10)
    for value in (0, p - 1, qr_outside_subgroup(TOY_128, rnd), non_residue(TOY_128, rnd),
                  gmpy2.powmod(toy_key, TOY_128.q - 1, p), gmpy2.powmod(toy_key, 10**6, p)):
        with pytest.raises(DecryptionError):
            dl.solve(value)


def test_discrete_log_standard():
    key = gmpy2.powmod(STANDARD.g, 2**200 + 17, STANDARD.p)
    dl = discrete_log(STANDARD, key, 10000)
    for t in (0, 1, 9999, 10000, 4321):
        assert dl.solve(gmpy2.powmod(key, t, STANDARD.p)) == t
    with pytest.raises(DecryptionError):
        dl.solve(gmpy2.powmod(key, 10001, STANDARD.p))
    assert discrete_log(STANDARD, key, 10000) is dl
