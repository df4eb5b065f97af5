"""The example configs shipped in configs/ parse with the same code the node uses."""

from pathlib import Path

from node.config import load_node_config, load_roster
from node.crypto.manifest import parse_manifest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_example_node_toml_parses():
    config = load_node_config(CONFIGS / "node.toml")
    assert config.name == "Alice Example"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 7401)
    assert config.roster_file == (CONFIGS / "roster.toml").resolve()
    assert config.passphrase_source == "prompt"


def test_example_roster_parses_and_its_fingerprint_matches():
    roster = load_roster(CONFIGS / "roster.toml")
    assert [e.sequence for e in roster.entries] == [1, 2, 3]
    assert roster.entries[2].address.startswith("wss://")


def test_demo_manifest_copy_is_the_packaged_one():
    packaged = Path(__file__).resolve().parents[2] / "node" / "data" / "demo-manifest.json"
    assert parse_manifest((CONFIGS / "demo-manifest.json").read_bytes()).canonical_bytes() == \
        parse_manifest(packaged.read_bytes()).canonical_bytes()
