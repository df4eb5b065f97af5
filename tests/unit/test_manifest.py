"""Tests for node.crypto.manifest: parsing, validation, effective limits, canonical bytes."""

from __future__ import annotations

import copy
import dataclasses
import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.errors import EncodingError, InputError, ManifestError
from node.crypto.manifest import (
    SMALL_INT_MAX,
    BallotStyle,
    Contest,
    ContestOption,
    canonical_json,
    parse_manifest,
)

DEMO_MANIFEST = Path(__file__).resolve().parents[2] / "node" / "data" / "demo-manifest.json"


def base() -> dict:
    """A small valid manifest as a fresh dict that a test may mutate."""
    return {
        "label": "Test election",
        "contests": [
            {"label": "Mayor", "options": [{"label": "Alice"}, {"label": "Bob"}]},
            {
                "label": "Council",
                "selection_limit": 2,
                "options": [{"label": "Carol"}, {"label": "Dave"}, {"label": "Erin"}],
            },
        ],
        "ballot_styles": [{"label": "Style A", "contests": [1, 2]}],
    }


def reject(source, *fragments: str) -> ManifestError:
    """Parsing `source` must raise ManifestError whose message contains every fragment."""
    with pytest.raises(ManifestError) as info:
        parse_manifest(source)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return info.value


def reject_both(d: dict, *fragments: str) -> None:
    """Reject `d` both as a parsed dict and as JSON bytes, with the same message parts."""
    reject(copy.deepcopy(d), *fragments)
    reject(json.dumps(d, ensure_ascii=False).encode("utf-8"), *fragments)


# ------------------------------------------------------------------ benchmark manifest


def test_benchmark_manifest_parses():
    m = parse_manifest(DEMO_MANIFEST.read_bytes())
    assert len(m.contests) == 8
    assert sum(len(c.options) for c in m.contests) == 68
    assert [c.selection_limit for c in m.contests] == [1, 1, 1, 1, 3, 2, 1, 1]
    assert [c.index for c in m.contests] == list(range(1, 9))
    assert all(o.selection_limit == 1 for c in m.contests for o in c.options)
    for c in m.contests:
        assert [o.index for o in c.options] == list(range(1, len(c.options) + 1))
    assert m.ballot_styles == (BallotStyle(index=1, label="all contests", contests=(1, 2, 3, 4, 5, 6, 7, 8)),)


def test_benchmark_manifest_canonical_round_trip():
    m = parse_manifest(DEMO_MANIFEST.read_bytes())
    b = m.canonical_bytes()
    assert b[:1] == b"{" and b[-1:] == b"}"
    assert b"\n" not in b and b": " not in b and b", " not in b.replace(b"(8 contests, 68", b"")
    # The file states "selection_limit": 1 explicitly; the canonical form omits the default.
    assert b'"selection_limit":1,' not in b
    assert b'{"label":"County Commission","selection_limit":3,"options":[' in b
    m2 = parse_manifest(b)
    assert m2.canonical_bytes() == b
    assert parse_manifest(b.decode("utf-8")) == m2
    assert [c.selection_limit for c in m2.contests] == [c.selection_limit for c in m.contests]
    # stated_limit is kept as written: the file's explicit 1 is gone after canonicalization.
    assert m.contest(1).stated_limit == 1 and m2.contest(1).stated_limit is None
    assert m.to_json_dict() == json.loads(b)
    assert list(m.to_json_dict()) == ["label", "contests", "ballot_styles"]


# --------------------------------------------------------------------- known answer

TINY_PRETTY = """
{
  "ballot_styles": [ { "contests": [ 2, 1 ], "label": "N\u00f6rth" } ],
  "contests": [
    {
      "options": [ { "label": "Yes" }, { "label": "No", "selection_limit": 1 } ],
      "label": "Measure 1"
    },
    {
      "label": "Gr\u00e4nd C\u00f8uncil",
      "selection_limit": 2,
      "options": [
        { "label": "Ann" },
        { "selection_limit": "CONTEST_LIMIT", "label": "Bea" },
        { "label": "Cy" }
      ]
    }
  ],
  "label": "Tiny election"
}
"""

# Written out by hand: canonical property order, default limits omitted, explicit 2
# and "CONTEST_LIMIT" kept, non-ASCII as raw UTF-8 (a-umlaut C3 A4, o-slash C3 B8,
# o-umlaut C3 B6), ballot-style contest order as written.
TINY_CANONICAL = (
    b'{"label":"Tiny election","contests":['
    b'{"label":"Measure 1","options":[{"label":"Yes"},{"label":"No"}]},'
    b'{"label":"Gr\xc3\xa4nd C\xc3\xb8uncil","selection_limit":2,"options":['
    b'{"label":"Ann"},{"label":"Bea","selection_limit":"CONTEST_LIMIT"},{"label":"Cy"}]}],'
    b'"ballot_styles":[{"label":"N\xc3\xb6rth","contests":[2,1]}]}'
)


def test_known_answer_tiny_manifest():
    m = parse_manifest(TINY_PRETTY.encode("utf-8"))
    assert m.canonical_bytes() == TINY_CANONICAL
    assert parse_manifest(TINY_CANONICAL).canonical_bytes() == TINY_CANONICAL
    assert parse_manifest(TINY_PRETTY).canonical_bytes() == TINY_CANONICAL
    assert parse_manifest(json.loads(TINY_PRETTY)).canonical_bytes() == TINY_CANONICAL

    c1, c2 = m.contests
    assert c1 == Contest(
        index=1,
        label="Measure 1",
        stated_limit=None,
        selection_limit=1,
        options=(
            ContestOption(index=1, label="Yes", stated_limit=None, selection_limit=1),
            ContestOption(index=2, label="No", stated_limit=1, selection_limit=1),
        ),
    )
    assert c2.stated_limit == 2 and c2.selection_limit == 2
    assert [(o.stated_limit, o.selection_limit) for o in c2.options] == [
        (None, 1),
        ("CONTEST_LIMIT", 2),
        (None, 1),
    ]
    assert m.ballot_styles[0].contests == (2, 1)


def test_canonical_json_generic():
    obj = {"b": 1, "a": [True, None, "\u00e9\u00e8"], "c": {"z": "x\ty", "y": '"\\'}}
    assert canonical_json(obj) == (
        b'{"b":1,"a":[true,null,"\xc3\xa9\xc3\xa8"],"c":{"z":"x\\ty","y":"\\"\\\\"}}'
    )
    assert canonical_json({}) == b"{}"
    with pytest.raises(EncodingError):
        canonical_json({"a": "\ud800"})
    with pytest.raises(EncodingError):
        canonical_json({"a": float("nan")})


# ----------------------------------------------------------------- effective limits


def _one_contest(c_limit, o_limits) -> dict:
    contest: dict = {"label": "C"}
    if c_limit is not None:
        contest["selection_limit"] = c_limit
    contest["options"] = []
    for j, lim in enumerate(o_limits, start=1):
        o: dict = {"label": f"O{j}"}
        if lim is not None:
            o["selection_limit"] = lim
        contest["options"].append(o)
    return {"label": "E", "contests": [contest], "ballot_styles": [{"label": "S", "contests": [1]}]}


M = SMALL_INT_MAX


@pytest.mark.parametrize(
    "c_limit, o_limits, c_eff, o_eff",
    [
        # Defaults: 1 for contests and options.
        (None, [None, None], 1, [1, 1]),
        (1, [1, None], 1, [1, 1]),
        # Spec example "Gränd Cøuncil": limit 3; options default / CONTEST_LIMIT / 8 / 4.
        (3, [None, "CONTEST_LIMIT", 8, 4], 3, [1, 3, 3, 3]),
        # All options integer: contest = min(contest limit, sum of option limits).
        (3, [None, None], 2, [1, 1]),
        (5, [2, 1], 3, [2, 1]),
        (3, [1, 1, 1], 3, [1, 1, 1]),
        (2, [5, 1], 2, [2, 1]),
        # Option = min(option limit, contest limit).
        (4, [10, 3], 4, [4, 3]),
        # Spec example "Proposed Amendment No. 1": default contest, CONTEST_LIMIT option.
        (None, ["CONTEST_LIMIT", None], 1, [1, 1]),
        (None, ["CONTEST_LIMIT"], 1, [1]),
        # Spec example "Register of Deeds": default contest; options 375 / CONTEST_LIMIT.
        (None, [375, "CONTEST_LIMIT"], 1, [1, 1]),
        # Spec example "Librarian-in-Chief": 2^31-1 with CONTEST_LIMIT and 2^31-1.
        (M, ["CONTEST_LIMIT", M], M, [M, M]),
        (M, [None, None], 2, [1, 1]),
        # NO_LIMIT: the sum of the option limits; options are not capped.
        ("NO_LIMIT", [None, None, None], 3, [1, 1, 1]),
        ("NO_LIMIT", [4, None, 2], 7, [4, 1, 2]),
        ("NO_LIMIT", [M - 1, 1], M, [M - 1, 1]),
    ],
)
def test_effective_limits(c_limit, o_limits, c_eff, o_eff):
    m = parse_manifest(_one_contest(c_limit, o_limits))
    c = m.contest(1)
    assert c.stated_limit == c_limit
    assert c.selection_limit == c_eff
    assert [o.stated_limit for o in c.options] == o_limits
    assert [o.selection_limit for o in c.options] == o_eff
    # The canonical form keeps the stated limits (except the default 1), not the effective ones.
    again = parse_manifest(m.canonical_bytes())
    assert again.canonical_bytes() == m.canonical_bytes()
    assert again.contest(1).selection_limit == c_eff
    assert [o.selection_limit for o in again.contest(1).options] == o_eff
    assert [o.stated_limit for o in again.contest(1).options] == [None if s == 1 else s for s in o_limits]


def test_no_limit_sum_must_stay_a_small_integer():
    reject_both(_one_contest("NO_LIMIT", [M, 1]), "contest 1 ('C')", "NO_LIMIT", str(M))


def test_spec_example_contests_with_line_breaks_replaced():
    """The spec's example, with its "\\n" label separators replaced by spaces, parses."""
    d = {
        "label": "General Election - The United Realms of Imaginaria",
        "contests": [
            {
                "label": "Gränd Cøuncil of Arcáne and Technomägical Affairs",
                "selection_limit": 3,
                "options": [
                    {"label": "Ìgnatius Gearsøul (Crystâlheärt)"},
                    {"label": "Èlena Wîndwhisper (Technocrat)", "selection_limit": "CONTEST_LIMIT"},
                    {"label": "Bërnard Månesworn (Ætherwïng)", "selection_limit": 8},
                    {"label": "Émeric Crystálgaze (Førestmíst)", "selection_limit": 4},
                ],
            },
            {
                "label": "Privacy Protection in Techno-Magical Communications Act",
                "options": [{"label": "Prō"}, {"label": "Ĉontrá"}],
            },
            {
                "label": "Renewable Ætherwind Infrastructure Initiative",
                "options": [{"label": "Prō"}, {"label": "Ĉontrá"}],
            },
        ],
        "ballot_styles": [{"label": "Silvërspîre County Ballot", "contests": [1, 3]}],
    }
    m = parse_manifest(d)
    grand = m.contest_by_label("Gränd Cøuncil of Arcáne and Technomägical Affairs")
    assert grand.selection_limit == 3
    assert [o.selection_limit for o in grand.options] == [1, 3, 3, 3]
    assert grand.option_by_label("Bërnard Månesworn (Ætherwïng)").stated_limit == 8
    # Same option labels in different contests are fine: uniqueness is per contest.
    assert m.contest(2).option_by_label("Prō").index == 1
    assert m.contest(3).option_by_label("Ĉontrá").index == 2


# ------------------------------------------------------------------------- lookups


def test_lookups():
    m = parse_manifest(base())
    assert m.contest(2).label == "Council"
    assert m.contest_by_label("Mayor").index == 1
    assert m.ballot_style(1).label == "Style A"
    assert m.ballot_style_by_label("Style A").contests == (1, 2)
    assert m.contest(2).option_by_label("Dave") == ContestOption(2, "Dave", None, 1)
    for bad in (0, 3, -1, True, "1", 1.0):
        with pytest.raises(ManifestError, match="contest index"):
            m.contest(bad)
    for bad in (0, 2):
        with pytest.raises(ManifestError, match="ballot style index"):
            m.ballot_style(bad)
    with pytest.raises(ManifestError, match="no contest labelled 'Governor'"):
        m.contest_by_label("Governor")
    with pytest.raises(ManifestError, match="no ballot style labelled"):
        m.ballot_style_by_label("Style B")
    with pytest.raises(ManifestError, match=r"contest 1 \('Mayor'\): no option labelled 'Carol'"):
        m.contest(1).option_by_label("Carol")


def test_manifest_is_frozen_and_hashable():
    m = parse_manifest(base())
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.label = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.contest(1).selection_limit = 5  # type: ignore[misc]
    assert hash(m) == hash(parse_manifest(base()))
    assert m == parse_manifest(base())


def test_manifest_error_is_input_error():
    assert issubclass(ManifestError, InputError) and issubclass(ManifestError, ValueError)


# ------------------------------------------------------------------- rejections: bytes


@pytest.mark.parametrize("text", [b"", b"{", b"not json", b'{"label": }', b"{}x", b"{'label': 'x'}"])
def test_reject_not_json(text):
    reject(text, "not valid JSON")


def test_reject_json_constants():
    good = json.dumps(base())
    for const in ("NaN", "Infinity", "-Infinity"):
        reject(good.replace('"selection_limit": 2', f'"selection_limit": {const}'), "not valid JSON", const)


def test_reject_not_utf8():
    good = canonical_json(base())
    reject(good.replace(b"Mayor", b"May\xffor"), "not valid UTF-8")
    reject(good.replace(b"Mayor", b"May\xc3or"), "not valid UTF-8")
    reject(good.replace(b"Mayor", b"\xed\xa0\x80"), "not valid UTF-8")  # CESU surrogate bytes
    reject(json.dumps(base()).encode("utf-16"), "UTF-8")


def test_reject_bom():
    good = canonical_json(base())
    reject(b"\xef\xbb\xbf" + good, "byte order mark")
    reject("\ufeff" + good.decode("utf-8"), "byte order mark")


def test_bom_character_inside_a_label_is_allowed():
    d = base()
    d["contests"][0]["label"] = "May\ufeffor"
    assert parse_manifest(canonical_json(d)).contest(1).label == "May\ufeffor"


def test_reject_wrong_source_type():
    for bad in (None, 5, ["label"], ("x",)):
        with pytest.raises(ManifestError, match="bytes, str or dict"):
            parse_manifest(bad)  # type: ignore[arg-type]


def test_reject_top_level_not_object():
    reject(b"[]", "manifest", "JSON object", "array")
    reject(b'"x"', "manifest", "JSON object")


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ('{"label":"Test election"', '{"label":"Test election","label":"Test election"', ["manifest", "'label'"]),
        ('"ballot_styles":[', '"contests":[],"ballot_styles":[', ["manifest", "'contests'"]),
        ('{"label":"Council"', '{"label":"Council","label":"Council"', ["contest 2 ('Council')", "'label'"]),
        ('"selection_limit":2', '"selection_limit":2,"selection_limit":3', ["contest 2 ('Council')", "'selection_limit'"]),
        ('{"label":"Dave"}', '{"label":"Dave","label":"Dave"}', ["contest 2 ('Council'), option 2 ('Dave')", "'label'"]),
        ('"contests":[1,2]', '"contests":[1,2],"contests":[1]', ["ballot style 1 ('Style A')", "'contests'"]),
    ],
)
def test_reject_duplicate_property_names(old, new, fragments):
    text = canonical_json(base()).decode("utf-8")
    assert text.count(old) == 1
    reject(text.replace(old, new).encode("utf-8"), "duplicate property name", *fragments)


# --------------------------------------------------------- rejections: structure & types


@pytest.mark.parametrize(
    "path, key, fragments",
    [
        ((), "label", ["manifest"]),
        ((), "contests", ["manifest"]),
        ((), "ballot_styles", ["manifest"]),
        (("contests", 1), "label", ["contest 2"]),
        (("contests", 1), "options", ["contest 2 ('Council')"]),
        (("contests", 0, "options", 1), "label", ["contest 1 ('Mayor'), option 2"]),
        (("ballot_styles", 0), "label", ["ballot style 1"]),
        (("ballot_styles", 0), "contests", ["ballot style 1 ('Style A')"]),
    ],
)
def test_reject_missing_property(path, key, fragments):
    d = base()
    obj = d
    for step in path:
        obj = obj[step]
    del obj[key]
    reject_both(d, "missing required property", repr(key), *fragments)


@pytest.mark.parametrize(
    "path, key, fragments",
    [
        ((), "name", ["manifest"]),
        (("contests", 0), "description", ["contest 1 ('Mayor')"]),
        (("contests", 1, "options", 2), "party", ["contest 2 ('Council'), option 3 ('Erin')"]),
        (("ballot_styles", 0), "id", ["ballot style 1 ('Style A')"]),
        (("contests", 0), "Label", ["contest 1 ('Mayor')"]),
    ],
)
def test_reject_unknown_property(path, key, fragments):
    d = base()
    obj = d
    for step in path:
        obj = obj[step]
    obj[key] = "x"
    reject_both(d, "unknown property", repr(key), *fragments)


def _set(d: dict, path: tuple, value) -> dict:
    obj = d
    for step in path[:-1]:
        obj = obj[step]
    obj[path[-1]] = value
    return d


@pytest.mark.parametrize(
    "path, value, fragments",
    [
        (("label",), 5, ["manifest", "'label' must be a string", "integer"]),
        (("contests",), {"label": "Mayor"}, ["manifest", "'contests' must be an array"]),
        (("contests", 0), "Mayor", ["contest 1", "JSON object", "string"]),
        (("contests", 0, "options"), {"label": "Alice"}, ["contest 1 ('Mayor')", "'options' must be an array"]),
        (("contests", 0, "options", 0), ["Alice"], ["contest 1 ('Mayor'), option 1", "JSON object"]),
        (("contests", 0, "options", 1, "label"), None, ["contest 1 ('Mayor'), option 2", "string", "null"]),
        (("contests", 1, "selection_limit"), True, ["contest 2 ('Council')", "selection_limit True"]),
        (("contests", 1, "selection_limit"), 2.0, ["contest 2 ('Council')", "selection_limit 2.0"]),
        (("contests", 1, "selection_limit"), "2", ["contest 2 ('Council')", "selection_limit '2'"]),
        (("contests", 1, "selection_limit"), None, ["contest 2 ('Council')", "selection_limit None"]),
        (("contests", 1, "options", 0, "selection_limit"), False, ["contest 2 ('Council'), option 1 ('Carol')", "False"]),
        (("contests", 1, "options", 0, "selection_limit"), [1], ["contest 2 ('Council'), option 1 ('Carol')", "[1]"]),
        (("ballot_styles",), "Style A", ["manifest", "'ballot_styles' must be an array"]),
        (("ballot_styles", 0), 1, ["ballot style 1", "JSON object"]),
        (("ballot_styles", 0, "contests"), 1, ["ballot style 1 ('Style A')", "'contests' must be an array"]),
        (("ballot_styles", 0, "contests"), [1, True], ["ballot style 1 ('Style A')", "True", "must be an integer"]),
        (("ballot_styles", 0, "contests"), [1, "2"], ["ballot style 1 ('Style A')", "'2'", "must be an integer"]),
        (("ballot_styles", 0, "contests"), [1.0], ["ballot style 1 ('Style A')", "1.0", "must be an integer"]),
    ],
)
def test_reject_wrong_types(path, value, fragments):
    reject_both(_set(base(), path, value), *fragments)


def test_reject_empty_contests():
    reject_both(_set(base(), ("contests",), []), "manifest", "'contests' must not be empty")


def test_reject_contest_without_options():
    reject_both(_set(base(), ("contests", 1, "options"), []), "contest 2 ('Council')", "'options' must not be empty")


def test_reject_no_ballot_styles():
    reject_both(_set(base(), ("ballot_styles",), []), "manifest", "'ballot_styles' must not be empty")


def test_reject_electionguard_1_manifest():
    # The 1.0 format (as in the Hamilton County sample) has other top-level properties.
    eg1 = {"election_scope_id": "hamilton-county-general-election", "spec_version": "1.0", "type": "general",
           "start_date": "2020-03-01T08:00:00-05:00", "end_date": "2020-03-01T20:00:00-05:00",
           "geopolitical_units": [], "parties": [], "candidates": [], "contests": [], "ballot_styles": []}
    reject(json.dumps(eg1).encode(), "manifest", "unknown property")


# ------------------------------------------------------------------- rejections: labels


@pytest.mark.parametrize(
    "label, problem",
    [
        ("", "empty"),
        (" Bob", "leading whitespace"),
        ("\tBob", "leading whitespace"),
        ("\u3000Bob", "leading whitespace"),
        ("Bob ", "trailing whitespace"),
        ("Bob\u2003", "trailing whitespace"),
        ("Bob\u00a0Smith", "U+00A0"),
        ("Bob\u202fSmith", "U+202F"),
        ("Bob  Smith", "two or more whitespace"),
        ("Bob \tSmith", "two or more whitespace"),
        ("Bob\u2002\u2002Smith", "two or more whitespace"),
        # The spec's example puts "\n" in labels, but the MUST rule forbids line breaks.
        ("Bob Smith\n(Party)", "line break (U+000A)"),
        ("Bob\r\nSmith", "line break"),
        ("Bob\u2028Smith", "line break (U+2028)"),
        ("Bob\u0085Smith", "line break (U+0085)"),
        ("Bob\u000bSmith", "line break"),
        ("Bob\n", "line break"),
    ],
)
def test_reject_bad_option_label(label, problem):
    d = _set(base(), ("contests", 0, "options", 1, "label"), label)
    reject_both(d, "contest 1 ('Mayor'), option 2", problem, repr(label))


@pytest.mark.parametrize(
    "path, fragment",
    [
        (("label",), "manifest"),
        (("contests", 1, "label"), "contest 2"),
        (("contests", 1, "options", 2, "label"), "contest 2 ('Council'), option 3"),
        (("ballot_styles", 0, "label"), "ballot style 1"),
    ],
)
def test_reject_bad_label_everywhere(path, fragment):
    reject_both(_set(base(), path, "Two  spaces"), fragment, "two or more whitespace", "'Two  spaces'")
    reject_both(_set(base(), path, " lead"), fragment, "leading whitespace")


def test_single_inner_whitespace_is_allowed():
    d = _set(base(), ("contests", 0, "options", 1, "label"), "Bob\tSmith \u2003Jr")
    with pytest.raises(ManifestError, match="two or more whitespace"):
        parse_manifest(d)
    d = _set(base(), ("contests", 0, "options", 1, "label"), "Bob\tSmith\u2003Jr. \u00e9")
    assert parse_manifest(d).contest(1).option(2).label == "Bob\tSmith\u2003Jr. \u00e9"


def test_reject_duplicate_contest_labels():
    d = _set(base(), ("contests", 1, "label"), "Mayor")
    reject_both(d, "contest 2 ('Mayor')", "duplicates contest 1")


def test_reject_duplicate_option_labels():
    d = _set(base(), ("contests", 1, "options", 2, "label"), "Carol")
    reject_both(d, "contest 2 ('Council'), option 3 ('Carol')", "duplicates option 1")


def test_reject_duplicate_ballot_style_labels():
    d = base()
    d["ballot_styles"].append({"label": "Style A", "contests": [2]})
    reject_both(d, "ballot style 2 ('Style A')", "duplicates ballot style 1")


def test_reject_labels_equal_after_unicode_normalization():
    d = base()
    d["contests"][0]["options"][0]["label"] = "Ren\u00e9"  # precomposed
    d["contests"][0]["options"][1]["label"] = "Rene\u0301"  # e + combining acute
    reject_both(d, "contest 1 ('Mayor'), option 2", "duplicates option 1")


def test_option_labels_may_repeat_across_contests():
    d = _set(base(), ("contests", 1, "options", 0, "label"), "Alice")
    assert parse_manifest(d).contest(2).option_by_label("Alice").index == 1


# ----------------------------------------------------------- rejections: selection limits


@pytest.mark.parametrize("value", [0, -1, 2**31, 2**63, -(2**31)])
def test_reject_contest_limit_out_of_range(value):
    d = _set(base(), ("contests", 1, "selection_limit"), value)
    reject_both(d, "contest 2 ('Council')", f"selection_limit {value} is not in 1..{M}")


@pytest.mark.parametrize("value", [0, -5, 2**31])
def test_reject_option_limit_out_of_range(value):
    d = _set(base(), ("contests", 1, "options", 1, "selection_limit"), value)
    reject_both(d, "contest 2 ('Council'), option 2 ('Dave')", f"selection_limit {value} is not in 1..{M}")


@pytest.mark.parametrize(
    "path, value, fragment",
    [
        (("contests", 1, "selection_limit"), "CONTEST_LIMIT", "contest 2 ('Council')"),
        (("contests", 1, "selection_limit"), "no_limit", "contest 2 ('Council')"),
        (("contests", 1, "selection_limit"), "NO_LIMIT ", "contest 2 ('Council')"),
        (("contests", 1, "options", 0, "selection_limit"), "NO_LIMIT", "contest 2 ('Council'), option 1 ('Carol')"),
        (("contests", 1, "options", 0, "selection_limit"), "contest_limit", "contest 2 ('Council'), option 1 ('Carol')"),
    ],
)
def test_reject_limit_string_in_wrong_place(path, value, fragment):
    reject_both(_set(base(), path, value), fragment, f"selection_limit {value!r}")


def test_largest_small_integer_limit_is_accepted():
    d = _set(base(), ("contests", 1, "selection_limit"), M)
    d = _set(d, ("contests", 1, "options", 0, "selection_limit"), M)
    c = parse_manifest(d).contest(2)
    assert c.stated_limit == M and c.selection_limit == M  # min(M, M + 1 + 1)
    assert c.options[0].selection_limit == M


def test_reject_contest_limit_option_in_no_limit_contest():
    d = _set(base(), ("contests", 1, "selection_limit"), "NO_LIMIT")
    d = _set(d, ("contests", 1, "options", 2, "selection_limit"), "CONTEST_LIMIT")
    reject_both(d, "contest 2 ('Council'), option 3 ('Erin')", "'CONTEST_LIMIT' is not allowed", "'NO_LIMIT'")


def test_no_limit_contest_requires_integer_option_limits():
    # Defaulted and explicit integer option limits are fine under NO_LIMIT ...
    d = _set(base(), ("contests", 1, "selection_limit"), "NO_LIMIT")
    d = _set(d, ("contests", 1, "options", 1, "selection_limit"), 4)
    assert parse_manifest(d).contest(2).selection_limit == 6
    # ... the only non-integer option limit, CONTEST_LIMIT, is refused, even on option 1.
    d = _set(d, ("contests", 1, "options", 0, "selection_limit"), "CONTEST_LIMIT")
    reject_both(d, "contest 2 ('Council'), option 1 ('Carol')", "must have integer limits")


# ------------------------------------------------------------ rejections: ballot styles


@pytest.mark.parametrize(
    "contests, fragment",
    [
        ([1, 3], "contest index 3 is out of range 1..2"),
        ([0], "contest index 0 is out of range 1..2"),
        ([-1, 1], "contest index -1 is out of range 1..2"),
        ([2**31], "out of range"),
        ([1, 2, 1], "contest index 1 is listed more than once"),
        ([], "'contests' must not be empty"),
    ],
)
def test_reject_bad_ballot_style_contests(contests, fragment):
    d = base()
    d["ballot_styles"].append({"label": "Style B", "contests": contests})
    reject_both(d, "ballot style 2 ('Style B')", fragment)


# ------------------------------------------------------------- rejections: surrogates


@pytest.mark.parametrize("escaped", ["\\ud800", "\\udc00", "\\ud83dx", "\\ude00\\ud83d", "x\\udbff"])
def test_reject_lone_surrogate_escape(escaped):
    text = canonical_json(base()).decode("utf-8").replace('"Bob"', f'"Bob{escaped}"')
    reject(text.encode("utf-8"), "contest 1 ('Mayor'), option 2", "lone surrogate")


def test_reject_lone_surrogate_in_dict_and_str_sources():
    d = _set(base(), ("contests", 0, "label"), "May\ud800or")
    reject(d, "contest 1", "lone surrogate")
    reject(json.dumps(d, ensure_ascii=False), "lone surrogate")


def test_escaped_surrogate_pair_is_accepted_and_written_as_utf8():
    text = canonical_json(base()).decode("utf-8").replace('"Bob"', '"Bob \\ud83d\\ude00"')
    m = parse_manifest(text.encode("utf-8"))
    assert m.contest(1).option(2).label == "Bob \U0001f600"
    assert b'"Bob \xf0\x9f\x98\x80"' in m.canonical_bytes()


# ---------------------------------------------------------------- property-based tests

_WORD = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=6)
_SEPARATOR = st.sampled_from([" ", " ", " ", "\t", "\u2003", "\u3000"])


def _nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


@st.composite
def valid_labels(draw) -> str:
    words = draw(st.lists(_WORD, min_size=1, max_size=4))
    out = words[0]
    for w in words[1:]:
        out += draw(_SEPARATOR) + w
    return out


def _unique_labels(n: int):
    return st.lists(valid_labels(), min_size=n, max_size=n, unique_by=_nfc)


@st.composite
def manifest_dicts(draw) -> dict:
    n_contests = draw(st.integers(1, 4))
    contests = []
    for c_label in draw(_unique_labels(n_contests)):
        c_limit = draw(st.one_of(st.none(), st.integers(1, M), st.just("NO_LIMIT")))
        if c_limit == "NO_LIMIT":
            # At most 5 options of at most 2^28 each keeps the sum a small integer.
            o_limit = st.one_of(st.none(), st.integers(1, 2**28))
        else:
            o_limit = st.one_of(st.none(), st.integers(1, M), st.just("CONTEST_LIMIT"))
        options = []
        for o_label in draw(_unique_labels(draw(st.integers(1, 5)))):
            o = {"label": o_label}
            lim = draw(o_limit)
            if lim is not None:
                o["selection_limit"] = lim
            options.append(o)
        c: dict = {"label": c_label}
        if c_limit is not None:
            c["selection_limit"] = c_limit
        c["options"] = options
        contests.append(c)
    styles = [
        {"label": s_label, "contests": draw(st.lists(st.integers(1, n_contests), min_size=1, unique=True))}
        for s_label in draw(_unique_labels(draw(st.integers(1, 3))))
    ]
    return {"label": draw(valid_labels()), "contests": contests, "ballot_styles": styles}


@settings(max_examples=150, deadline=None)
@given(manifest_dicts())
def test_property_canonical_round_trip(d):
    m = parse_manifest(d)
    b = m.canonical_bytes()
    assert b[:1] == b"{" and b[-1:] == b"}"
    m2 = parse_manifest(b)
    assert m2.canonical_bytes() == b
    assert parse_manifest(m2.canonical_bytes()) == m2
    explicit_ones = any(c.get("selection_limit") == 1 for c in d["contests"]) or any(
        o.get("selection_limit") == 1 for c in d["contests"] for o in c["options"]
    )
    if not explicit_ones:
        assert m2 == m  # nothing stated the default 1 explicitly, so nothing was dropped
    # A pretty-printed, ASCII-escaped rendering gives the same canonical bytes.
    pretty = json.dumps(d, indent=2, ensure_ascii=True).encode("ascii")
    assert parse_manifest(pretty).canonical_bytes() == b


@settings(max_examples=150, deadline=None)
@given(manifest_dicts())
def test_property_effective_limit_invariants(d):
    m = parse_manifest(d)
    for c, raw in zip(m.contests, d["contests"]):
        assert c.stated_limit == raw.get("selection_limit")
        assert 1 <= c.selection_limit <= M
        effs = [o.selection_limit for o in c.options]
        assert all(1 <= e <= c.selection_limit for e in effs)
        # The contest limit can always be reached with the options' limits.
        assert c.selection_limit <= sum(effs)
        if isinstance(c.stated_limit, int):
            assert c.selection_limit <= c.stated_limit
        for o, raw_o in zip(c.options, raw["options"]):
            assert o.stated_limit == raw_o.get("selection_limit")
            if isinstance(o.stated_limit, int):
                assert o.selection_limit <= o.stated_limit


# ------------------------------------------------------------ lenient reading (manifests of other tools)
# parse_manifest(..., strict=False) is for a manifest read from a record another tool wrote: known
# deviations are accepted when unambiguous and named in `deviations`; the manifest hashes as written.

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
RUST_MANIFEST = VECTORS / "electionguard-rust" / "example_artifacts" / "public" / "election_manifest_canonical.bin"
KOTLIN_MANIFEST = VECTORS / "electionguard-kotlin-multiplatform" / "egrust-manifest" / "election_manifest_canonical.bin"


def lenient(source):
    return parse_manifest(source, strict=False)


def test_lenient_read_of_a_conforming_manifest_is_the_strict_one():
    strict = parse_manifest(base())
    for source in (base(), strict.canonical_bytes(), strict.canonical_bytes().decode("utf-8")):
        m = lenient(source)
        assert m == strict and hash(m) == hash(strict)
        assert m.deviations == () and m.as_written is None
        assert m.canonical_bytes() == strict.canonical_bytes()


@pytest.mark.parametrize("path", [RUST_MANIFEST, KOTLIN_MANIFEST], ids=["electionguard-rust", "kotlin"])
def test_manifests_of_other_tools_are_refused_strictly_and_read_leniently(path):
    data = path.read_bytes()
    with pytest.raises(ManifestError):
        parse_manifest(data)
    m = lenient(data)
    assert m.deviations and m.canonical_bytes() == data


@pytest.mark.parametrize(
    "label, found",
    [
        ("Bob Smith\n(Party)", "U+000A"),
        ("Bob\r\nSmith", "U+000A, U+000D"),          # CR LF is one line break
        ("Bob\u2028Smith", "U+2028"),
        ("Bob\u0085Smith", "U+0085"),
        ("Bob\u000bSmith", "U+000B"),
        ("A\nB\nC", "U+000A"),
    ],
)
def test_lenient_accepts_a_line_break_where_a_space_would_be(label, found):
    d = _set(base(), ("contests", 0, "options", 1, "label"), label)
    reject_both(copy.deepcopy(d), "line break")                         # strict: as before
    m = lenient(d)
    assert m.deviations == (f"contests[0].options[1].label contains a line break ({found})",)
    assert m.contest(1).option_by_label(label).index == 2
    assert m.canonical_bytes() == canonical_json(d)


@pytest.mark.parametrize(
    "path, where",
    [
        (("label",), "label"),
        (("contests", 1, "label"), "contests[1].label"),
        (("contests", 1, "options", 2, "label"), "contests[1].options[2].label"),
        (("ballot_styles", 0, "label"), "ballot_styles[0].label"),
    ],
)
def test_lenient_names_the_field_of_each_label(path, where):
    m = lenient(_set(base(), path, "Two\nlines"))
    assert m.deviations == (f"{where} contains a line break (U+000A)",)


@pytest.mark.parametrize(
    "label, problem",
    [
        ("Bob\n", "trailing whitespace"),
        ("\nBob", "leading whitespace"),
        ("Bob \nSmith", "two or more whitespace"),
        ("Bob\n\nSmith", "two or more whitespace"),
        ("Bob\n\u00a0Smith", "U+00A0"),
        ("Bob\r\n\r\nSmith", "two or more whitespace"),
    ],
)
def test_lenient_refuses_line_breaks_where_a_space_would_not_be_allowed(label, problem):
    d = _set(base(), ("contests", 0, "options", 1, "label"), label)
    with pytest.raises(ManifestError) as info:
        lenient(d)
    assert problem in str(info.value) and "counting each line break as a space" in str(info.value)
    assert "contest 1 ('Mayor'), option 2" in str(info.value)


def test_lenient_accepts_contest_options_and_hashes_it_as_written():
    d = base()
    d["contests"][1] = {"label": "Council", "selection_limit": 2,
                        "contest_options": d["contests"][1].pop("options")}
    reject_both(copy.deepcopy(d), "contest 2 ('Council')", "unknown property 'contest_options'")
    m = lenient(d)
    assert m.deviations == ("contests[1] uses 'contest_options' where 2.1 says 'options'",)
    assert m.contests == parse_manifest(base()).contests
    assert m.canonical_bytes() == canonical_json(d) != parse_manifest(base()).canonical_bytes()
    assert b'"contest_options"' in m.canonical_bytes()
    assert m != parse_manifest(base())              # another manifest file, another H_B
    # H_B (eq 5) is over the manifest as written
    from node.crypto.election import ElectionParameters
    from node.crypto.hashing import election_base_hash
    from node.crypto.params import TOY_64
    params = ElectionParameters(TOY_64, 3, 2, m)
    assert params.h_b == election_base_hash(params.h_p, canonical_json(d))


def test_lenient_refuses_both_options_and_contest_options():
    d = base()
    d["contests"][0]["contest_options"] = [{"label": "Zed"}]
    with pytest.raises(ManifestError, match="both 'options' and 'contest_options'.*ambiguous"):
        lenient(d)


def test_lenient_keeps_a_stated_default_limit():
    d = base()
    d["contests"][0] = {"label": "Mayor", "selection_limit": 1,
                        "options": [{"label": "Alice", "selection_limit": 1}, {"label": "Bob"}]}
    strict = parse_manifest(copy.deepcopy(d))                        # accepted, written without them
    assert b'"selection_limit":1' not in strict.canonical_bytes()
    m = lenient(d)
    assert m.deviations == (
        "contests[0].selection_limit is 1, the default, which canonical form omits",
        "contests[0].options[0].selection_limit is 1, the default, which canonical form omits",
    )
    assert m.canonical_bytes() == canonical_json(d)
    assert m.contests == strict.contests


def test_lenient_keeps_the_order_as_written():
    d = base()
    out_of_order = {"contests": d["contests"], "label": d["label"], "ballot_styles": d["ballot_styles"]}
    out_of_order["contests"][0] = {"options": d["contests"][0]["options"], "label": "Mayor"}
    assert parse_manifest(copy.deepcopy(out_of_order)).canonical_bytes() == parse_manifest(base()).canonical_bytes()
    m = lenient(out_of_order)
    assert m.deviations == (
        "the manifest lists its properties out of the specified order (label, contests, ballot_styles)",
        "contests[0] lists its properties out of the specified order (label, selection_limit, options)",
    )
    assert m.canonical_bytes() == canonical_json(out_of_order)


def test_lenient_file_not_in_canonical_form():
    canonical = parse_manifest(base()).canonical_bytes()
    pretty = json.dumps(base(), indent=2, ensure_ascii=True)
    for source in (pretty, pretty.encode("ascii")):
        m = lenient(source)
        assert m.deviations == ("the file is not in canonical form (whitespace or escapes); "
                                "its canonical form is what is hashed",)
        assert m.canonical_bytes() == canonical


@pytest.mark.parametrize(
    "change, fragments",
    [
        (lambda d: d["contests"][0].update(extra=1), ("unknown property 'extra'",)),
        (lambda d: d["contests"][0]["options"].append({"label": "Alice"}), ("label duplicates",)),
        (lambda d: d["contests"][1].update(selection_limit=0), ("selection_limit 0",)),
        (lambda d: d["ballot_styles"][0].update(contests=[1, 3]), ("out of range",)),
        (lambda d: d.update(label="Two  spaces"), ("two or more whitespace",)),
        (lambda d: d["contests"][0].pop("options"), ("missing required property 'options'",)),
    ],
)
def test_lenient_still_refuses_everything_else(change, fragments):
    d = base()
    change(d)
    with pytest.raises(ManifestError) as info:
        lenient(d)
    for frag in fragments:
        assert frag in str(info.value)


def test_strict_is_keyword_only():
    with pytest.raises(TypeError):
        parse_manifest(base(), False)


@settings(max_examples=100, deadline=None)
@given(manifest_dicts())
def test_property_lenient_agrees_with_strict_on_valid_manifests(d):
    canonical = parse_manifest(copy.deepcopy(d)).canonical_bytes()
    strict = parse_manifest(canonical)
    m = lenient(canonical)
    assert m == strict and m.deviations == () and m.canonical_bytes() == canonical
