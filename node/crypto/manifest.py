"""The election manifest in the ElectionGuard 2.1 serialization format.

Parses a manifest (bytes, str or an already-parsed dict), checks every MUST of the
serialization spec ("Election Manifest", "Selection Limits", "Labels", "Text data
types", "Canonical form") and of design spec 3.1.3, computes the effective
selection limits, and writes the canonical JSON bytes that H_B hashes (eq 5).

Pure functions and frozen dataclasses: no I/O, no logging. Every problem with a
manifest raises ManifestError naming the offending object by index and label.

Two ways to read. Strict (the default) is for every manifest this project
creates, proposes or accepts from a peer: each MUST holds or the manifest is
refused. Lenient (`strict=False`) is for a manifest read from a record that
another tool wrote, so that an auditor can verify that record: the deviations
other ElectionGuard tools are known to write are accepted when their meaning is
unambiguous, each is named in `Manifest.deviations`, and the manifest hashes as
its writer hashed it, over the canonical JSON of the manifest as written
(`Manifest.canonical_bytes`). The deviations accepted are:

  - a label with line breaks, where a single space would be allowed in its
    place (the serialization spec's own example manifest has such labels,
    although "Labels" says they MUST NOT);
  - `contest_options` where 2.1 says `options` (manifests of the 2.0 era), when
    the contest does not also have `options`;
  - a stated `selection_limit` of 1, which canonical form omits ("Selection Limits");
  - properties out of the specified order ("Order of properties in objects");
  - file bytes that are not the canonical form (whitespace, escapes); the
    canonical form of the manifest as written is what is hashed.

Everything else is refused as in strict mode.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from node.crypto.errors import EncodingError, ManifestError

SMALL_INT_MAX = 2**31 - 1
"""Largest small integer (serialization spec "Small integers"; design spec 3.1.3 indices)."""

NO_LIMIT = "NO_LIMIT"
CONTEST_LIMIT = "CONTEST_LIMIT"
DEFAULT_LIMIT = 1  # serialization spec "Selection Limits": the default is 1 for both

# Unicode White_Space property (PropList.txt). The spec's label rules speak of
# "whitespace characters" without a narrower definition, so we use Unicode's.
_WHITESPACE = frozenset(
    "\u0009\u000a\u000b\u000c\u000d\u0020\u0085\u00a0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
# Mandatory line breaks of UAX #14 (classes BK, CR, LF, NL).
_LINE_BREAKS = frozenset("\u000a\u000b\u000c\u000d\u0085\u2028\u2029")
# Labels MUST NOT use these two no-break spaces (serialization spec "Labels").
_FORBIDDEN_SPACES = {"\u00a0": "U+00A0 NO-BREAK SPACE", "\u202f": "U+202F NARROW NO-BREAK SPACE"}

_TOP_KEYS = ("label", "contests", "ballot_styles")
_CONTEST_KEYS = ("label", "selection_limit", "options")
_OLD_OPTIONS_KEY = "contest_options"     # the 2.0-era name of a contest's "options"
_OLD_CONTEST_KEYS = ("label", "selection_limit", _OLD_OPTIONS_KEY)
_OPTION_KEYS = ("label", "selection_limit")
_STYLE_KEYS = ("label", "contests")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ContestOption:
    """A selectable option; `selection_limit` is the effective option limit R."""

    index: int
    label: str
    stated_limit: int | str | None
    selection_limit: int

    def to_json_dict(self) -> dict:
        """Canonical property order: label, selection_limit (omitted when default 1)."""
        d: dict[str, Any] = {"label": self.label}
        if self.stated_limit is not None and self.stated_limit != DEFAULT_LIMIT:
            d["selection_limit"] = self.stated_limit
        return d


@dataclass(frozen=True)
class Contest:
    """A contest; `selection_limit` is the effective contest limit L."""

    index: int
    label: str
    stated_limit: int | str | None
    selection_limit: int
    options: tuple[ContestOption, ...]
    _by_label: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = f"{_describe('contest', self.index, self.label)}: option"
        object.__setattr__(self, "_by_label", _index_labels(self.options, where))

    def option(self, index: int) -> ContestOption:
        """The option with 1-based option index `index`."""
        return _at(self.options, index, f"{_describe('contest', self.index, self.label)}: option")

    def option_by_label(self, label: str) -> ContestOption:
        """The option whose label is exactly `label`."""
        try:
            return self._by_label[label]
        except (KeyError, TypeError):
            raise ManifestError(
                f"{_describe('contest', self.index, self.label)}: no option labelled {label!r}"
            ) from None

    def to_json_dict(self) -> dict:
        """Canonical property order: label, selection_limit (omitted when default 1), options."""
        d: dict[str, Any] = {"label": self.label}
        if self.stated_limit is not None and self.stated_limit != DEFAULT_LIMIT:
            d["selection_limit"] = self.stated_limit
        d["options"] = [o.to_json_dict() for o in self.options]
        return d


@dataclass(frozen=True)
class BallotStyle:
    """A ballot style: the contest indices (as written) that appear on its ballots."""

    index: int
    label: str
    contests: tuple[int, ...]

    def to_json_dict(self) -> dict:
        """Canonical property order: label, contests."""
        return {"label": self.label, "contests": list(self.contests)}


@dataclass(frozen=True)
class Manifest:
    """A validated election manifest. Build it with `parse_manifest`.

    `deviations` names each departure from the 2.1 MUST rules that a lenient read
    accepted (empty for every strictly parsed manifest); `as_written` is then the
    canonical JSON of the manifest as its writer wrote it, when that differs from
    this project's canonical form, and `canonical_bytes` returns it.
    """

    label: str
    contests: tuple[Contest, ...]
    ballot_styles: tuple[BallotStyle, ...]
    deviations: tuple[str, ...] = field(default=(), compare=False)
    as_written: bytes | None = field(default=None, repr=False)
    _contest_by_label: dict = field(init=False, repr=False, compare=False, hash=False)
    _style_by_label: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_contest_by_label", _index_labels(self.contests, "contest"))
        object.__setattr__(self, "_style_by_label", _index_labels(self.ballot_styles, "ballot style"))

    def contest(self, index: int) -> Contest:
        """The contest with 1-based contest index `index`."""
        return _at(self.contests, index, "contest")

    def contest_by_label(self, label: str) -> Contest:
        """The contest whose label is exactly `label`."""
        try:
            return self._contest_by_label[label]
        except (KeyError, TypeError):
            raise ManifestError(f"no contest labelled {label!r}") from None

    def ballot_style(self, index: int) -> BallotStyle:
        """The ballot style with 1-based ballot style index `index`."""
        return _at(self.ballot_styles, index, "ballot style")

    def ballot_style_by_label(self, label: str) -> BallotStyle:
        """The ballot style whose label is exactly `label`."""
        try:
            return self._style_by_label[label]
        except (KeyError, TypeError):
            raise ManifestError(f"no ballot style labelled {label!r}") from None

    def to_json_dict(self) -> dict:
        """The manifest as a JSON-ready dict, properties in canonical order."""
        return {
            "label": self.label,
            "contests": [c.to_json_dict() for c in self.contests],
            "ballot_styles": [s.to_json_dict() for s in self.ballot_styles],
        }

    def canonical_bytes(self) -> bytes:
        """The canonical JSON (serialization spec "Canonical form"): the `manifest` of eq 5.

        For a manifest read leniently from another tool, the canonical JSON of the
        manifest as written (its property names, order and stated limits kept), which
        is what its writer hashed.
        """
        if self.as_written is not None:
            return self.as_written
        return canonical_json(self.to_json_dict())


def _describe(kind: str, index: int, label: object = None) -> str:
    """'contest 3 ('Mayor')' - how error messages name an object."""
    return f"{kind} {index}" if label is None else f"{kind} {index} ({label!r})"


def _index_labels(items: tuple, what: str) -> dict:
    by_label: dict = {}
    for item in items:
        if item.label in by_label:
            raise ManifestError(
                f"{_describe(what, item.index, item.label)}: label duplicates that of "
                f"index {by_label[item.label].index}"
            )
        by_label[item.label] = item
    return by_label


def _at(items: tuple, index: int, what: str):
    if not _is_int(index) or not 1 <= index <= len(items):
        raise ManifestError(f"{what} index {index!r} is out of range 1..{len(items)}")
    return items[index - 1]


# ----------------------------------------------------------------- canonical JSON


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: UTF-8, no whitespace, dict order kept, no trailing newline.

    Escaping is RFC 8259's minimum (quote, backslash, control characters); all
    other characters are written as UTF-8, not \\u-escaped.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        # A lone surrogate cannot be encoded: writers MUST NOT emit one
        # (serialization spec "Text data types").
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise EncodingError(f"string contains a lone surrogate ({e.object[e.start:e.end]!r})") from None
    except (TypeError, ValueError) as e:
        raise EncodingError(f"not serializable as canonical JSON: {e}") from None


# ------------------------------------------------------------------------ parsing


class _JsonObject(dict):
    """A parsed JSON object that remembers property names it saw more than once."""

    __slots__ = ("duplicate_keys",)


def _object_pairs(pairs: list) -> _JsonObject:
    # Property names MUST be unique (serialization spec "Property names"); json
    # keeps the last silently, so record repeats and report them with context.
    obj = _JsonObject()
    dups = []
    for k, v in pairs:
        if k in obj and k not in dups:
            dups.append(k)
        obj[k] = v
    obj.duplicate_keys = tuple(dups)
    return obj


def _reject_constant(name: str):
    raise ManifestError(f"manifest is not valid JSON: {name} is not a JSON value")


def _load_json(source: bytes | str) -> Any:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        # File content MUST be UTF-8 with no BOM (serialization spec "Encoding: UTF-8").
        if raw.startswith(b"\xef\xbb\xbf"):
            raise ManifestError("manifest starts with a UTF-8 byte order mark (BOM)")
        try:
            text = raw.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            raise ManifestError(f"manifest is not valid UTF-8 (byte offset {e.start})") from None
    else:
        text = source
        if text.startswith("\ufeff"):
            raise ManifestError("manifest starts with a byte order mark (U+FEFF)")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ManifestError(f"manifest text contains a lone surrogate at offset {e.start}") from None
    try:
        return json.loads(text, object_pairs_hook=_object_pairs, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        raise ManifestError(f"manifest is not valid JSON: {e}") from None
    except RecursionError:
        raise ManifestError("manifest is not valid JSON: nested too deeply") from None


def _is_int(x: object) -> bool:
    # bool is a subclass of int in Python; JSON true/false are not numbers.
    return isinstance(x, int) and not isinstance(x, bool)


def _check_object(obj: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: must be a JSON object, not {_json_type(obj)}")
    dups = getattr(obj, "duplicate_keys", ())
    if dups:
        raise ManifestError(f"{where}: duplicate property name {dups[0]!r}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ManifestError(f"{where}: unknown property {unknown[0]!r} (allowed: {', '.join(allowed)})")
    for k in required:
        if k not in obj:
            raise ManifestError(f"{where}: missing required property {k!r}")
    return obj


def _json_type(x: object) -> str:
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if isinstance(x, int):
        return "an integer"
    if isinstance(x, float):
        return "a non-integer number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, (list, tuple)):
        return "an array"
    if isinstance(x, dict):
        return "an object"
    return f"a Python {type(x).__name__}"


def _check_array(x: object, where: str, what: str) -> list:
    if not isinstance(x, (list, tuple)):
        raise ManifestError(f"{where}: {what!r} must be an array, not {_json_type(x)}")
    if not x:
        raise ManifestError(f"{where}: {what!r} must not be empty")
    return list(x)


def label_problem(label: str) -> str | None:
    """Why `label` breaks a MUST of serialization spec "Labels", or None if it is fine."""
    if label == "":
        # No field of the design spec takes an empty string ("Missing properties").
        return "label is empty"
    try:
        label.encode("utf-8")
    except UnicodeEncodeError:
        # Readers MUST reject strings that un-escape to a malformed surrogate ("Text data types").
        return "label contains a lone surrogate"
    # Labels MUST NOT contain line breaks. The spec's own example manifest has "\n"
    # in labels, contradicting this MUST-level rule; we follow the MUST.
    for ch in label:
        if ch in _LINE_BREAKS:
            return f"label contains a line break (U+{ord(ch):04X})"
    for ch, name in _FORBIDDEN_SPACES.items():
        if ch in label:
            return f"label contains {name}"
    if label[0] in _WHITESPACE:
        return "label has leading whitespace"
    if label[-1] in _WHITESPACE:
        return "label has trailing whitespace"
    for a, b in zip(label, label[1:]):
        if a in _WHITESPACE and b in _WHITESPACE:
            return "label contains two or more whitespace characters in a row"
    return None


class _Lenient:
    """The deviations a lenient read accepted, in document order, each naming its field by JSON path."""

    def __init__(self) -> None:
        self.deviations: list[str] = []

    def note(self, text: str) -> None:
        self.deviations.append(text)


def _line_breaks_as_spaces(label: str) -> str:
    """`label` with each line break (CR LF counted as one, UAX #14) replaced by a single space."""
    text = label.replace("\r\n", " ")
    return "".join(" " if ch in _LINE_BREAKS else ch for ch in text)


def _check_label(x: object, where: str, lenient: _Lenient | None = None, path: str = "label") -> str:
    if not isinstance(x, str):
        raise ManifestError(f"{where}: 'label' must be a string, not {_json_type(x)}")
    problem = label_problem(x)
    if problem and lenient is not None and any(ch in _LINE_BREAKS for ch in x):
        # Read leniently, a line break is accepted where a single space would be:
        # the label still names its item unambiguously.
        rest = label_problem(_line_breaks_as_spaces(x))
        if rest is None:
            found = sorted({f"U+{ord(ch):04X}" for ch in x if ch in _LINE_BREAKS})
            lenient.note(f"{path} contains a line break ({', '.join(found)})")
            return x
        raise ManifestError(f"{where}: {rest} (counting each line break as a space): {x!r}")
    if problem:
        raise ManifestError(f"{where}: {problem}: {x!r}")
    return x


def _note_order(obj: dict, order: tuple[str, ...], path: str, lenient: _Lenient | None) -> None:
    """Properties MUST be in the specified order ("Order of properties in objects")."""
    if lenient is not None and list(obj) != [k for k in order if k in obj]:
        lenient.note(f"{path} lists its properties out of the specified order ({', '.join(order)})")


def _note_default_limit(obj: dict, path: str, lenient: _Lenient | None) -> None:
    """A stated limit of 1, the default, MUST NOT be written in canonical form ("Selection Limits")."""
    x = obj.get("selection_limit")
    if lenient is not None and _is_int(x) and x == DEFAULT_LIMIT:
        lenient.note(f"{path}.selection_limit is 1, the default, which canonical form omits")


def _check_unique(labels: list[str], where: str, what: str) -> None:
    # Labels MUST identify their item uniquely within its scope (serialization
    # spec "Labels"; design spec 3.1.3). Labels that differ only in Unicode
    # normalization look identical to a person, so they count as duplicates too.
    seen: dict[str, int] = {}
    for i, label in enumerate(labels, start=1):
        key = unicodedata.normalize("NFC", label)
        if key in seen:
            raise ManifestError(
                f"{where}{_describe(what, i, label)}: label duplicates {what} {seen[key]}"
            )
        seen[key] = i


def _stated_limit(obj: dict, where: str, allowed_string: str) -> int | str | None:
    if "selection_limit" not in obj:
        return None
    x = obj["selection_limit"]
    if _is_int(x):
        # Stated limits are small integers (serialization spec "Selection Limits");
        # a limit is a positive integer (design spec 3.1.3), so 0 is refused.
        if not 1 <= x <= SMALL_INT_MAX:
            raise ManifestError(f"{where}: selection_limit {x} is not in 1..{SMALL_INT_MAX}")
        return int(x)
    if isinstance(x, str) and x == allowed_string:
        return allowed_string
    raise ManifestError(
        f"{where}: selection_limit {x!r} must be an integer in 1..{SMALL_INT_MAX} or {allowed_string!r}"
    )


def _effective_limits(
    c_stated: int | str | None, o_stated: list[int | str | None], where: str
) -> tuple[int, list[int]]:
    """Effective (contest, option) limits, serialization spec "Selection Limits"."""
    contest = DEFAULT_LIMIT if c_stated is None else c_stated
    opts = [DEFAULT_LIMIT if s is None else s for s in o_stated]
    if contest == NO_LIMIT:
        # The parser has already refused CONTEST_LIMIT options here, so every
        # option limit is an integer and the contest limit is their sum.
        total = sum(opts)
        if total > SMALL_INT_MAX:
            # "The effective selection limit ... is always a small integer."
            raise ManifestError(
                f"{where}: NO_LIMIT contest's effective limit (the sum of its option limits, "
                f"{total}) exceeds {SMALL_INT_MAX}"
            )
        return total, list(opts)
    # Integer contest limit: option = min(option limit, contest limit), with
    # CONTEST_LIMIT meaning the contest's limit.
    eff_opts = [contest if o == CONTEST_LIMIT else min(o, contest) for o in opts]
    if all(_is_int(o) for o in opts):
        # Spec: "unless all its options have integer-valued selection limits ...
        # the smaller of its limit and the sum". With a CONTEST_LIMIT option the
        # sum is >= the contest limit anyway, so min() would change nothing.
        return min(contest, sum(opts)), eff_opts
    return contest, eff_opts


def _given_label(obj: object) -> str | None:
    """The label as written, for naming an object in an error before it is checked."""
    label = obj.get("label") if isinstance(obj, dict) else None
    return label if isinstance(label, str) else None


def _parse_option(
    obj: object, where: str, j: int, contest_stated: int | str | None,
    lenient: _Lenient | None = None, path: str = "",
) -> tuple[str, int | str | None]:
    here = f"{where}, {_describe('option', j, _given_label(obj))}"
    _check_object(obj, here, _OPTION_KEYS, ("label",))
    _note_order(obj, _OPTION_KEYS, path, lenient)
    label = _check_label(obj["label"], here, lenient, f"{path}.label")
    here = f"{where}, {_describe('option', j, label)}"
    stated = _stated_limit(obj, here, CONTEST_LIMIT)
    _note_default_limit(obj, path, lenient)
    if stated == CONTEST_LIMIT and contest_stated == NO_LIMIT:
        # If the contest says NO_LIMIT, every option MUST specify (or default to)
        # an integer limit ("Selection Limits").
        raise ManifestError(
            f"{here}: selection_limit 'CONTEST_LIMIT' is not allowed in a contest whose "
            "selection_limit is 'NO_LIMIT' (options of a NO_LIMIT contest must have integer limits)"
        )
    return label, stated


def _parse_contest(obj: object, i: int, lenient: _Lenient | None = None) -> Contest:
    where = _describe("contest", i, _given_label(obj))
    path = f"contests[{i - 1}]"
    options_key, keys = "options", _CONTEST_KEYS
    if lenient is not None and isinstance(obj, dict) and _OLD_OPTIONS_KEY in obj:
        if "options" in obj:
            raise ManifestError(f"{where}: has both 'options' and {_OLD_OPTIONS_KEY!r}, so which lists "
                                f"the contest's options is ambiguous")
        options_key, keys = _OLD_OPTIONS_KEY, _OLD_CONTEST_KEYS
        lenient.note(f"{path} uses {_OLD_OPTIONS_KEY!r} where 2.1 says 'options'")
    _check_object(obj, where, keys, ("label", options_key))
    _note_order(obj, keys, path, lenient)
    label = _check_label(obj["label"], where, lenient, f"{path}.label")
    where = _describe("contest", i, label)
    c_stated = _stated_limit(obj, where, NO_LIMIT)
    _note_default_limit(obj, path, lenient)
    raw_options = _check_array(obj[options_key], where, options_key)
    parsed = [_parse_option(o, where, j, c_stated, lenient, f"{path}.{options_key}[{j - 1}]")
              for j, o in enumerate(raw_options, start=1)]
    _check_unique([lbl for lbl, _ in parsed], f"{where}, ", "option")
    c_eff, o_eff = _effective_limits(c_stated, [s for _, s in parsed], where)
    options = tuple(
        ContestOption(index=j, label=lbl, stated_limit=s, selection_limit=e)
        for j, ((lbl, s), e) in enumerate(zip(parsed, o_eff), start=1)
    )
    return Contest(index=i, label=label, stated_limit=c_stated, selection_limit=c_eff, options=options)


def _parse_ballot_style(obj: object, i: int, n_contests: int, lenient: _Lenient | None = None) -> BallotStyle:
    where = _describe("ballot style", i, _given_label(obj))
    path = f"ballot_styles[{i - 1}]"
    _check_object(obj, where, _STYLE_KEYS, _STYLE_KEYS)
    _note_order(obj, _STYLE_KEYS, path, lenient)
    label = _check_label(obj["label"], where, lenient, f"{path}.label")
    where = _describe("ballot style", i, label)
    raw = _check_array(obj["contests"], where, "contests")
    seen: set[int] = set()
    for x in raw:
        if not _is_int(x):
            raise ManifestError(f"{where}: contest index {x!r} must be an integer, not {_json_type(x)}")
        if not 1 <= x <= n_contests:
            raise ManifestError(f"{where}: contest index {x} is out of range 1..{n_contests}")
        if x in seen:
            raise ManifestError(f"{where}: contest index {x} is listed more than once")
        seen.add(x)
    # Design spec 3.1.3: the list "is not ordered"; we keep the order as written so
    # that the canonical bytes preserve the manifest faithfully.
    return BallotStyle(index=i, label=label, contests=tuple(int(x) for x in raw))


def parse_manifest(source: bytes | str | dict, *, strict: bool = True) -> Manifest:
    """Parse and validate a manifest given as JSON bytes, JSON text or a parsed dict.

    strict=True: every MUST of the serialization spec holds, or ManifestError.
    strict=False: a manifest from another tool's record; the deviations listed in
    this module's docstring are accepted and named in `deviations`, and
    `canonical_bytes()` is the canonical JSON of the manifest as written. What
    would be ambiguous is refused as in strict mode.
    """
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        data = _load_json(source)
    elif isinstance(source, dict):
        data = source
    else:
        raise ManifestError(f"manifest must be bytes, str or dict, not {type(source).__name__}")
    lenient = None if strict else _Lenient()
    _check_object(data, "manifest", _TOP_KEYS, _TOP_KEYS)
    _note_order(data, _TOP_KEYS, "the manifest", lenient)
    label = _check_label(data["label"], "manifest", lenient, "label")
    raw_contests = _check_array(data["contests"], "manifest", "contests")
    contests = tuple(_parse_contest(c, i, lenient) for i, c in enumerate(raw_contests, start=1))
    _check_unique([c.label for c in contests], "", "contest")
    raw_styles = _check_array(data["ballot_styles"], "manifest", "ballot_styles")
    styles = tuple(_parse_ballot_style(s, i, len(contests), lenient) for i, s in enumerate(raw_styles, start=1))
    _check_unique([s.label for s in styles], "", "ballot style")
    manifest = Manifest(label=label, contests=contests, ballot_styles=styles)
    if lenient is None:
        return manifest
    written = canonical_json(data)
    if isinstance(source, (bytes, bytearray, memoryview, str)):
        raw = source.encode("utf-8") if isinstance(source, str) else bytes(source)
        if raw != written:
            lenient.note("the file is not in canonical form (whitespace or escapes); "
                         "its canonical form is what is hashed")
    if written == manifest.canonical_bytes():
        written = None      # the manifest as written is already this project's canonical form
    elif not lenient.deviations:
        lenient.note("the manifest as written differs from this project's canonical form")
    return Manifest(label=label, contests=contests, ballot_styles=styles,
                    deviations=tuple(lenient.deviations), as_written=written)
