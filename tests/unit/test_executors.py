"""The executors: the streaming map keeps a few items in flight, the tree reduction is the fold in order,
partial tallies combine to the whole in any tree, and a scheduler that cannot be used is one clear error."""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

import node.cluster as cluster
from node.compute import IN_FLIGHT_PER_WORKER, Pool, check_scheduler_address, scheduler_address, tree_reduce
from node.config import ConfigError, load_node_config
from node.crypto.elgamal import Ciphertext
from node.crypto.errors import InputError
from node.crypto.params import TOY_64
from node.crypto.tally import EncryptedTally, combine_tallies
from node.testing.records import build_record
from node.verifier import verify_record


@given(st.lists(st.text(max_size=3), max_size=70))
def test_the_tree_reduction_is_the_fold_in_order(parts):
    # concatenation is associative but not commutative: the order of the items must be kept
    expected = "".join(parts) if parts else None
    assert tree_reduce(lambda a, b: a + b, iter(parts)) == expected


def test_the_tree_reduction_holds_a_logarithm_of_partials():
    held = []

    def items():
        for i in range(1000):
            yield [i]

    def combine(a, b):
        held.append(len(a) + len(b))
        return a + b
    assert tree_reduce(combine, items()) == list(range(1000))
    assert len(held) == 999


def _double(ctx, x):
    return 2 * x


def test_the_streaming_map_keeps_order_and_pulls_only_a_window_ahead(toy_election):
    pulled = []

    def items():
        for i in range(40):
            pulled.append(i)
            yield i
    with Pool(toy_election.context, 2) as pool:
        results = pool.imap(_double, items())
        first = next(results)
        assert first == 0 and len(pulled) <= IN_FLIGHT_PER_WORKER * 2 + 1
        assert [first, *results] == [2 * i for i in range(40)]


P = int(TOY_64.p)
elements = st.integers(min_value=1, max_value=P - 1)
tallies = st.dictionaries(st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(elements, elements),
                          max_size=9).map(lambda d: EncryptedTally({k: Ciphertext(mpz(a), mpz(b)) for k, (a, b) in d.items()},
                                                                   len(d)))
CTX = SimpleNamespace(group=TOY_64)


@settings(max_examples=60)
@given(st.lists(tallies, min_size=1, max_size=12))
def test_partial_tallies_combine_to_the_same_tally_in_any_tree(parts):
    """Eq 79 over the union is the option-wise product of the parts' (A, B), whichever way they are grouped."""
    combine = functools.partial(combine_tallies, CTX)
    left = functools.reduce(combine, parts)
    assert tree_reduce(combine, iter(parts)) == left
    assert functools.reduce(combine, reversed(parts)) == left
    for key, ct in left.totals.items():
        alpha = beta = 1
        for p in parts:
            if key in p.totals:
                alpha, beta = alpha * int(p.totals[key].alpha) % P, beta * int(p.totals[key].beta) % P
        assert (int(ct.alpha), int(ct.beta)) == (alpha, beta)
    assert left.ballot_count == sum(p.ballot_count for p in parts)


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.example.org:8786",
                                     "tcp://[::1]:8786"])
def test_scheduler_addresses_dask_accepts(address):
    assert check_scheduler_address(address, "x") == address


@pytest.mark.parametrize("address", ["nonsense", "tcp://host", "http://host:8786", "tcp://a b:1", "tcp://h:8786/x"])
def test_a_scheduler_address_that_is_none_is_refused_naming_where_it_came_from(address, monkeypatch):
    with pytest.raises(InputError, match="--scheduler: .* is not a Dask scheduler address like tcp://HOST:8786"):
        scheduler_address(address)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with pytest.raises(InputError, match=r"\$DASK_SCHEDULER_ADDRESS: "):
        scheduler_address(None)


def test_the_environment_names_the_scheduler_when_no_option_does(monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert scheduler_address(None) is None
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://127.0.0.1:8786")
    assert scheduler_address(None) == "tcp://127.0.0.1:8786"
    assert scheduler_address("tcp://10.1.1.1:1") == "tcp://10.1.1.1:1"


CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_node_toml_names_the_guardians_own_scheduler_or_is_refused(tmp_path):
    text = (CONFIGS / "node.toml").read_text()
    assert load_node_config(CONFIGS / "node.toml").compute_scheduler is None
    for value, ok in (("tcp://10.0.0.5:8786", True), ("10.0.0.5", False), ("tcp://x:1 ; rm", False)):
        path = tmp_path / "node.toml"
        path.write_text(text.replace('[compute]\n', '[compute]\n').replace('scheduler = ""', f'scheduler = "{value}"'))
        for name in ("roster.toml",):
            if (CONFIGS / name).exists():
                (tmp_path / name).write_text((CONFIGS / name).read_text())
        if ok:
            assert load_node_config(path).compute_scheduler == value
        else:
            with pytest.raises(ConfigError, match=r"\[compute\]: scheduler .* is not a Dask scheduler address"):
                load_node_config(path)


def test_an_unreachable_scheduler_stops_the_verifier_with_one_line(tmp_path, monkeypatch):
    build_record(tmp_path / "r", tmp_path / "s", ballots=2, challenged=0, workers=1)
    monkeypatch.setattr(cluster, "CONNECT_SECONDS", 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # bound, never listening: nothing answers there
        with pytest.raises(cluster.ClusterUnavailable, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
            verify_record(tmp_path / "r", scheduler=f"tcp://127.0.0.1:{port}")
    with pytest.raises(InputError, match="'nonsense' is not a Dask scheduler address"):
        verify_record(tmp_path / "r", scheduler="nonsense")
    with pytest.raises(InputError, match="cannot use it as a verification cache"):
        verify_record(tmp_path / "r", cache=tmp_path / "no" / "such" / "dir" / "cache.sqlite3")
