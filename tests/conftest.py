"""Shared fixtures for the ballot, tally and decryption tests, and the node processes' `cluster`.

The key ceremonies are session-scoped: the STANDARD one costs about half a
second plus its fixed-base tables, and every test of a file reuses it. Most
property tests run on TOY_64, whose arithmetic is a few thousand times faster
and whose algebra is the same.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Mapping

import pytest

from node.crypto.ballot import EncryptedBallot, PlaintextBallot, encrypt_ballot
from node.crypto.election import ElectionParameters
from node.crypto.local_ceremony import CeremonyResult, run_local_ceremony
from node.crypto.manifest import Manifest, parse_manifest
from node.crypto.params import STANDARD, TOY_64
from node.testing.processes import Cluster

DEMO_MANIFEST_PATH = Path(__file__).resolve().parent.parent / "node" / "data" / "demo-manifest.json"

# Three contests, two ballot styles that differ (and list their contests out of
# order), a contest with selection limit 2 and an option with limit 2 (R = 2).
SMALL_MANIFEST = {
    "label": "Small test election",
    "contests": [
        {"label": "Mayor", "options": [{"label": "Alice"}, {"label": "Bob"}, {"label": "Write-in"}]},
        {
            "label": "Council",
            "selection_limit": 2,
            "options": [{"label": "Carol"}, {"label": "Dave", "selection_limit": 2}, {"label": "Erin"}],
        },
        {"label": "Measure 1", "options": [{"label": "Yes"}, {"label": "No"}]},
    ],
    "ballot_styles": [
        {"label": "North", "contests": [1, 2, 3]},
        {"label": "South", "contests": [3, 1]},
    ],
}


@pytest.fixture(scope="session")
def demo_manifest() -> Manifest:
    return parse_manifest(DEMO_MANIFEST_PATH.read_bytes())


@pytest.fixture(scope="session")
def small_manifest() -> Manifest:
    return parse_manifest(SMALL_MANIFEST)


@pytest.fixture(scope="session")
def toy_election(small_manifest) -> CeremonyResult:
    return run_local_ceremony(ElectionParameters(TOY_64, 5, 3, small_manifest), rng=random.Random(7))


@pytest.fixture(scope="session")
def standard_election(demo_manifest) -> CeremonyResult:
    return run_local_ceremony(ElectionParameters(STANDARD, 5, 3, demo_manifest))


# --- plaintext ballots -----------------------------------------------------------------------------


def random_ballot(manifest: Manifest, rng: random.Random, ballot_id: str = "ballot",
                  style: str | None = None) -> PlaintextBallot:
    """A random valid plaintext ballot: some contests left out, others filled up to their limits."""
    style_obj = manifest.ballot_style_by_label(style) if style else rng.choice(manifest.ballot_styles)
    choices: dict[str, dict[str, int]] = {}
    for index in style_obj.contests:
        contest = manifest.contest(index)
        if rng.random() < 0.2:
            continue                                   # contest left off: an undervote by omission
        budget = rng.randint(0, contest.selection_limit)
        values = {o.label: 0 for o in contest.options}
        for _ in range(budget):
            room = [o for o in contest.options if values[o.label] < o.selection_limit]
            if not room:
                break
            values[rng.choice(room).label] += 1
        # Explicit zeros are valid too; drop some of them so both forms occur.
        choices[contest.label] = {k: v for k, v in values.items() if v or rng.random() < 0.5}
    return PlaintextBallot(ballot_id, style_obj.label, choices)


def expected_values(manifest: Manifest, ballot: PlaintextBallot) -> dict[tuple[int, int], int]:
    """(contest index, option index) -> value for every option of every contest on the ballot's style."""
    style = manifest.ballot_style_by_label(ballot.style)
    out = {}
    for index in style.contests:
        contest = manifest.contest(index)
        given: Mapping[str, int] = ballot.choices.get(contest.label, {})
        for option in contest.options:
            out[(contest.index, option.index)] = given.get(option.label, 0)
    return out


def expected_sums(manifest: Manifest, ballots) -> dict[tuple[int, int], int]:
    """The true tally: every option of the manifest, zero where no ballot gives it anything."""
    sums = {(c.index, o.index): 0 for c in manifest.contests for o in c.options}
    for ballot in ballots:
        for key, v in expected_values(manifest, ballot).items():
            sums[key] += v
    return sums


@pytest.fixture(scope="session")
def ballot_factory():
    """random_ballot as a fixture, for tests that prefer not to import conftest."""
    return random_ballot


# --- a few STANDARD ballots, encrypted once --------------------------------------------------------


@pytest.fixture(scope="session")
def standard_plaintexts(demo_manifest) -> list[PlaintextBallot]:
    style = demo_manifest.ballot_styles[0].label
    return [
        # County Commission (limit 3) with one pick, School Board (limit 2) with two, Measure B left out.
        PlaintextBallot("std-1", style, {
            "Governor": {"Governor option 3": 1},
            "Congress District": {"Congress District option 27": 1},
            "State Senate": {},
            "State House": {"State House option 1": 1, "State House option 2": 0},
            "County Commission": {"County Commission option 4": 1},
            "School Board": {"School Board option 1": 1, "School Board option 8": 1},
            "Measure A": {"Measure A option 2": 1},
        }),
        # A full undervote: nothing chosen anywhere.
        PlaintextBallot("std-2", style, {}),
        # Every contest at its limit.
        PlaintextBallot("std-3", style, {
            "Governor": {"Governor option 1": 1},
            "Congress District": {"Congress District option 1": 1},
            "State Senate": {"State Senate option 6": 1},
            "State House": {"State House option 3": 1},
            "County Commission": {"County Commission option 1": 1, "County Commission option 2": 1,
                                  "County Commission option 10": 1},
            "School Board": {"School Board option 1": 1, "School Board option 2": 1},
            "Measure A": {"Measure A option 1": 1},
            "Measure B": {"Measure B option 2": 1},
        }),
        # The ballot to be challenged.
        PlaintextBallot("std-challenged", style, {
            "Governor": {"Governor option 7": 1},
            "County Commission": {"County Commission option 5": 1, "County Commission option 6": 1},
            "School Board": {"School Board option 3": 1},
            "Measure B": {"Measure B option 1": 1},
        }),
    ]


@pytest.fixture(scope="session")
def standard_ballots(standard_election, standard_plaintexts) -> list[EncryptedBallot]:
    ctx = standard_election.context
    rng = random.Random(2024)
    return [encrypt_ballot(ctx, b, "device-std", rng=rng) for b in standard_plaintexts]


# --- guardian nodes as processes (node.testing.processes) ------------------------------------------


@pytest.fixture
def cluster():
    """An empty Cluster; every node it made is killed at the end."""
    with Cluster() as c:
        yield c
        print(c.diagnostics())            # shown by pytest only when the test fails
