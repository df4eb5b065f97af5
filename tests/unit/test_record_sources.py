"""Record locations: what node.toml and a request may name (node/config.py), and reading one file of a
location checked against its digest (node/services/record_copy.py)."""

from __future__ import annotations

import hashlib
import os

import pytest

from node.config import ConfigError, check_record_sources
from node.crypto.errors import InputError
from node.services.record_copy import LocationError, read_location


def test_urls_and_absolute_paths_are_locations():
    assert check_record_sources(["https://example.org/rec/", "/srv/record", "http://127.0.0.1:8080/r",
                                 "/srv/record"], "x") == ["https://example.org/rec", "/srv/record",
                                                          "http://127.0.0.1:8080/r"]


@pytest.mark.parametrize("value, why", [
    ("https://example.org", "as a list"),
    (["/a"] * 9, "at most 8"),
    (["relative/dir"], "neither an http\\(s\\) URL nor an absolute path"),
    (["ftp://example.org/rec"], "not an http\\(s\\) URL"),
    (["file:///srv/record"], "not an http\\(s\\) URL"),
    (["https://example.org/rec?x=1"], "not an http\\(s\\) URL"),
    (["http://example.org:99999/rec"], "not an http\\(s\\) URL"),
    (["http:///rec"], "not an http\\(s\\) URL"),
    (["/srv/rec\nord"], "printable"),
    ([""], "printable"),
    ([7], "printable"),
])
def test_anything_else_is_refused_naming_what(value, why):
    with pytest.raises(ConfigError, match=f"^node.toml record_sources: .*{why}"):
        check_record_sources(value, "node.toml record_sources", ConfigError)
    with pytest.raises(InputError):
        check_record_sources(value, "--source")


def test_a_path_location_gives_a_file_only_with_its_digest(tmp_path):
    record = tmp_path / "record"
    (record / "ballots").mkdir(parents=True)
    data = b"x" * 300_000
    (record / "ballots" / "b.json").write_bytes(data)
    digest = hashlib.sha256(data).digest()
    dest = tmp_path / "dest"
    read_location(str(record), "ballots/b.json", digest, dest)
    assert dest.read_bytes() == data
    with pytest.raises(LocationError, match="does not match the index"):
        read_location(str(record), "ballots/b.json", hashlib.sha256(b"other").digest(), dest)
    assert not dest.exists()
    with pytest.raises(LocationError, match="No such file"):
        read_location(str(record), "ballots/none.json", digest, dest)
    os.symlink(record / "ballots" / "b.json", record / "link.json")
    with pytest.raises(LocationError):
        read_location(str(record), "link.json", digest, dest)         # a link is not followed
    os.mkfifo(record / "fifo.json")
    with pytest.raises(LocationError, match="not a regular file"):
        read_location(str(record), "fifo.json", digest, dest)
    assert not dest.exists()
