"""A custodian's share of a secret, in three forms that all give the share back.

The file (share_<i>.json): a JSON object
    format     "guardian-node custody share v1"
    split_id   32 hex digits: 16 random bytes naming one split; shares of different splits are refused
    threshold  T: any T shares of the split recover the secret
    count      M: the number of shares made
    index      i, 1..M: this share's number (its x coordinate)
    value      132 hex digits: the share's value, f(i) in the field of 2^521 - 1
    label      what the secret is, for people: e.g. the guardian's name and the election
    check      SHA-256 (hex) of the canonical JSON (sorted keys, no spaces) of every other member
The check finds accidental damage (a flipped bit, a truncated copy). A deliberate edit with a
recomputed check is found later: the recovered key does not open the backup it belongs to.

The typed text (share_<i>.txt, also the QR code's content): 90 bytes
    version 1 | split_id (16) | T | M | i | value (66) | first 4 bytes of SHA-256 of all before
in base32 (the alphabet of node.custody), 6 numbered lines of 6 groups of 4 characters, each line
followed by 2 check characters. The line's number, its 24 characters and the 2 check characters form a
codeword of a distance-3 code over GF(32) (the two syndromes sum(c_j) and sum(alpha^j c_j) vanish), so
a single mistyped character is always caught and its group named, and two in a line are always caught.
Lines typed out of order fail their check too. The label line is for people and is not checked.

The page (share_<i>.svg, share_<i>.png): an A4 SVG page with the QR code of the typed text, the text
itself, the label, "share i of M, any T recover" and instructions; the PNG is the QR code alone (segno
writes PNG with no other library; drawing the whole page as PNG would need one).
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import secrets
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

from node.crypto.errors import EncodingError
from node.custody import ALPHABET, b32decode, b32encode, b32value, write_new_file
from node.custody.shamir import MAX_SHARES, PRIME, VALUE_BYTES, Rng, Share, SharingError, evaluate_at, recover, split

FORMAT = "guardian-node custody share v1"
SPLIT_ID_BYTES = 16
MAX_LABEL_CHARS = 200
MAX_SHARE_FILE_BYTES = 64 * 1024
TEXT_VERSION = 1
_FIELDS = {"format", "split_id", "threshold", "count", "index", "value", "label", "check"}


class ShareFileError(EncodingError):
    """A share that cannot be read, is damaged, or does not belong with the others; names the share."""


@dataclass(frozen=True)
class CustodyShare:
    split_id: bytes
    threshold: int
    count: int
    index: int
    value: int = field(repr=False)      # a piece of the secret: never in logs or tracebacks
    label: str

    def checked(self, where: str) -> "CustodyShare":
        """This share, if every field is in range; ShareFileError naming `where` otherwise."""
        if not isinstance(self.split_id, bytes) or len(self.split_id) != SPLIT_ID_BYTES:
            raise ShareFileError(f"{where}: the split id must be {SPLIT_ID_BYTES} bytes")
        for name in ("threshold", "count", "index", "value"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ShareFileError(f"{where}: {name} must be a whole number")
        if not 2 <= self.threshold <= self.count <= MAX_SHARES:
            raise ShareFileError(f"{where}: 'any {self.threshold} of {self.count}' is not a valid split")
        if not 1 <= self.index <= self.count:
            raise ShareFileError(f"{where}: share number {self.index} is not between 1 and {self.count}")
        if not 0 <= self.value < PRIME:
            raise ShareFileError(f"{where}: the share value is outside the field")
        check_label(self.label, where)
        return self


def check_label(label: object, where: str = "label") -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS or not label.isprintable():
        raise ShareFileError(f"{where}: the label must be at most {MAX_LABEL_CHARS} printable characters "
                             f"on one line")
    return label


def make_shares(secret: bytes, threshold: int, count: int, label: str,
                rng: Rng = secrets.randbelow) -> list[CustodyShare]:
    """Split `secret`; every share carries the same new random split id."""
    check_label(label)
    split_id = secrets.token_bytes(SPLIT_ID_BYTES)
    return [CustodyShare(split_id, threshold, count, s.x, s.y, label)
            for s in split(secret, threshold, count, rng)]


# --- recovery ------------------------------------------------------------------------------------


def recover_from(items: Iterable[Path | str | CustodyShare]) -> bytes:
    """The secret from share files (.json or typed .txt), typed texts (a str with line breaks) or shares."""
    named = [_load_item(n, item) for n, item in enumerate(items, 1)]
    return recover_secret(named)


def recover_secret(named: Sequence[tuple[str, CustodyShare]]) -> bytes:
    """The secret from (where, share) pairs: every refusal names the share at fault."""
    if not named:
        raise ShareFileError("no shares given")
    _check_same_split(named)
    distinct = _distinct(named)
    threshold = distinct[0][1].threshold
    if len(distinct) < threshold:
        given = ", ".join(str(s.index) for _, s in distinct)
        raise ShareFileError(f"any {threshold} shares are needed, only {len(distinct)} different ones were "
                             f"given (share {given})")
    base = distinct[:threshold]
    points = [Share(s.index, s.value) for _, s in base]
    for where, s in distinct[threshold:]:
        if evaluate_at(points, s.index) != s.value:
            others = ", ".join(w for w, _ in base)
            raise ShareFileError(f"{where} (share {s.index}) does not agree with {others}: one of these "
                                 f"shares was altered")
    try:
        return recover(points)
    except SharingError as e:
        raise ShareFileError(f"{e} ({', '.join(w for w, _ in base)})") from None


def _check_same_split(named: Sequence[tuple[str, CustodyShare]]) -> None:
    counts = collections.Counter(s.split_id for _, s in named)
    reference_id = counts.most_common(1)[0][0]
    where_ref, ref = next((w, s) for w, s in named if s.split_id == reference_id)
    for where, s in named:
        if s.split_id != reference_id:
            raise ShareFileError(f"{where} belongs to split {s.split_id.hex()[:8]}, not to split "
                                 f"{reference_id.hex()[:8]} of {where_ref}: shares of different splits "
                                 f"cannot be combined")
        if (s.threshold, s.count) != (ref.threshold, ref.count):
            raise ShareFileError(f"{where} says any {s.threshold} of {s.count}, {where_ref} says any "
                                 f"{ref.threshold} of {ref.count}: one of them was altered")


def _distinct(named: Sequence[tuple[str, CustodyShare]]) -> list[tuple[str, CustodyShare]]:
    seen: dict[int, tuple[str, CustodyShare]] = {}
    for where, s in named:
        if s.index in seen:
            first, other = seen[s.index]
            if other.value == s.value:
                raise ShareFileError(f"{where} and {first} are the same share (number {s.index}): "
                                     f"each share counts once")
            raise ShareFileError(f"{where} and {first} both claim to be share {s.index} but differ: "
                                 f"one of them was altered")
        seen[s.index] = (where, s)
    return list(seen.values())


def _load_item(n: int, item: Path | str | CustodyShare) -> tuple[str, CustodyShare]:
    if isinstance(item, CustodyShare):
        where = f"share {n}"
        return where, item.checked(where)
    if isinstance(item, str) and "\n" in item:
        where = f"typed share {n}"
        return where, parse_share_text(item, where)
    if isinstance(item, (str, Path)):
        return str(item), load_share(Path(item))
    raise ShareFileError(f"share {n}: expected a file, a typed text or a share, got {type(item).__name__}")


def load_share(path: Path) -> CustodyShare:
    """A share file: the JSON form, or a text file holding the typed form."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SHARE_FILE_BYTES + 1)
    except OSError as e:
        raise ShareFileError(f"cannot read the share {path}: {e.strerror}") from None
    if len(data) > MAX_SHARE_FILE_BYTES:
        raise ShareFileError(f"{path} is too large to be a share")
    if data.lstrip().startswith(b"{"):
        return parse_share_json(data, str(path))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ShareFileError(f"{path} is neither a share file nor a typed share") from None
    return parse_share_text(text, str(path))


# --- the file --------------------------------------------------------------------------------------


def _content(share: CustodyShare) -> dict:
    return {"format": FORMAT, "split_id": share.split_id.hex(), "threshold": share.threshold,
            "count": share.count, "index": share.index, "value": share.value.to_bytes(VALUE_BYTES, "big").hex(),
            "label": share.label}


def _digest(content: dict) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def share_json(share: CustodyShare) -> bytes:
    content = _content(share.checked("share"))
    return json.dumps({**content, "check": _digest(content)}, indent=1).encode() + b"\n"


def parse_share_json(data: bytes, where: str = "share file") -> CustodyShare:
    try:
        doc = json.loads(data)
    except ValueError:
        raise ShareFileError(f"{where} is not a share file, or a truncated one") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ShareFileError(f"{where} is not a share file ({FORMAT!r})")
    if set(doc) != _FIELDS:
        raise ShareFileError(f"{where} is damaged: it must hold exactly {sorted(_FIELDS)}")
    content = {k: v for k, v in doc.items() if k != "check"}
    if doc["check"] != _digest(content):
        raise ShareFileError(f"{where} is damaged: its check does not match its content")
    split_id = _hex_field(doc["split_id"], SPLIT_ID_BYTES, "split_id", where)
    value = int.from_bytes(_hex_field(doc["value"], VALUE_BYTES, "value", where), "big")
    return CustodyShare(split_id, doc["threshold"], doc["count"], doc["index"], value, doc["label"]).checked(where)


def _hex_field(text: object, length: int, name: str, where: str) -> bytes:
    if not isinstance(text, str) or len(text) != 2 * length or text != text.lower():
        raise ShareFileError(f"{where}: {name} must be {2 * length} lower-case hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ShareFileError(f"{where}: {name} must be {2 * length} lower-case hex digits") from None


# --- the typed text ----------------------------------------------------------------------------------

TEXT_TITLE = "guardian-node custody share v1"
GROUP_CHARS = 4
GROUPS_PER_LINE = 6
LINE_CHARS = GROUP_CHARS * GROUPS_PER_LINE               # 24 data characters, then 2 check characters
PAYLOAD_BYTES = 1 + SPLIT_ID_BYTES + 3 + VALUE_BYTES + 4  # 90 bytes = 144 characters = 6 lines
LINES = PAYLOAD_BYTES * 8 // 5 // LINE_CHARS
_LINE_RE = re.compile(r"\s*(\d{1,3})\s*[:.]\s*(.*)")


def share_text(share: CustodyShare) -> str:
    share = share.checked("share")
    chars = b32encode(_payload(share))
    lines = [TEXT_TITLE, f"label: {share.label}",
             f"share {share.index} of {share.count}, any {share.threshold} recover"]
    for n in range(1, LINES + 1):
        data = chars[(n - 1) * LINE_CHARS:n * LINE_CHARS]
        groups = " ".join(data[i:i + GROUP_CHARS] for i in range(0, LINE_CHARS, GROUP_CHARS))
        lines.append(f"{n}: {groups}  {_check_chars(n, data)}")
    return "\n".join(lines) + "\n"


def parse_share_text(text: str, where: str = "typed share") -> CustodyShare:
    """The share from its typed form; a typing mistake is reported with its line and group."""
    if not isinstance(text, str) or len(text) > MAX_SHARE_FILE_BYTES:
        raise ShareFileError(f"{where} is not a typed share")
    numbered, label = _data_lines(text, where)
    chars = "".join(_check_line(n, numbered[n], where) for n in range(1, LINES + 1))
    payload = b32decode(chars, PAYLOAD_BYTES)
    body, check = payload[:-4], payload[-4:]
    if hashlib.sha256(body).digest()[:4] != check:
        raise ShareFileError(f"{where}: the typed share does not check out as a whole: compare every line "
                             f"with the page")
    if body[0] != TEXT_VERSION:
        raise ShareFileError(f"{where}: typed share version {body[0]} is not known here")
    split_id = body[1:1 + SPLIT_ID_BYTES]
    threshold, count, index = body[1 + SPLIT_ID_BYTES:4 + SPLIT_ID_BYTES]
    value = int.from_bytes(body[4 + SPLIT_ID_BYTES:], "big")
    return CustodyShare(split_id, threshold, count, index, value, label).checked(where)


def _payload(share: CustodyShare) -> bytes:
    body = (bytes([TEXT_VERSION]) + share.split_id + bytes([share.threshold, share.count, share.index])
            + share.value.to_bytes(VALUE_BYTES, "big"))
    return body + hashlib.sha256(body).digest()[:4]


def _data_lines(text: str, where: str) -> tuple[dict[int, str], str]:
    """The numbered lines (number -> what follows it) and the label; other lines are ignored."""
    numbered: dict[int, str] = {}
    label = ""
    for line in text.splitlines():
        if line.strip().lower().startswith("label:"):
            label = line.split(":", 1)[1].strip()[:MAX_LABEL_CHARS]
            continue
        match = _LINE_RE.fullmatch(line)
        if not match:
            continue
        n = int(match.group(1))
        if not 1 <= n <= LINES:
            raise ShareFileError(f"{where}: there is no line {n} in a share (lines 1 to {LINES})")
        if n in numbered:
            raise ShareFileError(f"{where}: line {n} is typed twice")
        numbered[n] = match.group(2)
    missing = [str(n) for n in range(1, LINES + 1) if n not in numbered]
    if missing:
        raise ShareFileError(f"{where}: line {', '.join(missing)} missing (a share has lines 1 to {LINES})")
    return numbered, label if label.isprintable() else ""


def _check_line(n: int, typed: str, where: str) -> str:
    """The 24 data characters of line n, after its check characters are verified."""
    chars = re.sub(r"[\s-]", "", typed)
    values = []
    for position, char in enumerate(chars):
        try:
            values.append(b32value(char))
        except EncodingError:
            raise ShareFileError(f"{where}: line {n}, {_place(position + 1)}: {char!r} is not a share "
                                 f"character (0-9 and A-Z without U)") from None
    if len(values) != LINE_CHARS + 2:
        raise ShareFileError(f"{where}: line {n} has {len(values)} characters, {LINE_CHARS + 2} expected "
                             f"(6 groups of 4 and 2 check characters): one left out or typed twice?")
    s1, s2 = _syndromes([n] + values)
    if s1 or s2:
        raise ShareFileError(f"{where}: line {n} {_diagnosis(n, s1, s2)}")
    return "".join(_canonical(c) for c in chars[:LINE_CHARS])


def _canonical(char: str) -> str:
    return ALPHABET[b32value(char)]


def _place(position: int) -> str:
    """Position 1..24 is a data character, 25..26 a check character (position 0 is the line number)."""
    if position > LINE_CHARS:
        return "the check characters"
    group, char = divmod(position - 1, GROUP_CHARS)
    return f"group {group + 1} (character {char + 1})"


def _diagnosis(n: int, s1: int, s2: int) -> str:
    """Where a single error is; with two or more errors the syndromes may point anywhere, hence "most likely"."""
    position = (_LOG[s2] - _LOG[s1]) % 31 if s1 and s2 else None
    if position is None or position > LINE_CHARS + 2:
        return "has more than one typing mistake: compare it with the page"
    if position == 0:
        if not 1 <= n ^ s1 <= LINES:
            return "has more than one typing mistake: compare it with the page"
        return f"is most likely line {n ^ s1} of this share, typed in the wrong place"
    return f"has a typing mistake, most likely in {_place(position)}"


# GF(32) with the primitive polynomial x^5 + x^2 + 1; alpha = 2.
_EXP = [0] * 62
_LOG = [0] * 32
_v = 1
for _i in range(31):
    _EXP[_i] = _EXP[_i + 31] = _v
    _LOG[_v] = _i
    _v = (_v << 1) ^ (0b100101 if _v & 0b10000 else 0)
del _i, _v


def _mul(a: int, b: int) -> int:
    return 0 if a == 0 or b == 0 else _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    return 0 if a == 0 else _EXP[(_LOG[a] - _LOG[b]) % 31]


def _syndromes(word: list[int]) -> tuple[int, int]:
    s1 = s2 = 0
    for j, c in enumerate(word):
        s1 ^= c
        s2 ^= _mul(_EXP[j], c)
    return s1, s2


def _check_chars(n: int, data: str) -> str:
    """The two symbols at positions 25 and 26 that make both syndromes of [n, data..., c25, c26] zero."""
    a, b = _syndromes([n] + [b32value(c) for c in data])
    p, q = LINE_CHARS + 1, LINE_CHARS + 2
    c26 = _div(b ^ _mul(_EXP[p], a), _EXP[p] ^ _EXP[q])
    c25 = a ^ c26
    return ALPHABET[c25] + ALPHABET[c26]


# --- the page ------------------------------------------------------------------------------------------

QR_ERROR_LEVEL = "m"      # 15 % of the code can be lost to a fold or a stain


def _qr_code(share: CustodyShare):
    import segno

    return segno.make(share_text(share), error=QR_ERROR_LEVEL, micro=False)


def share_png(share: CustodyShare, qr=None) -> bytes:
    """The QR code of the typed text; `qr` is that code when already made (making it is the slow part)."""
    import io

    buffer = io.BytesIO()
    (qr or _qr_code(share)).save(buffer, kind="png", scale=8, border=4)
    return buffer.getvalue()


def share_svg(share: CustodyShare, qr=None) -> str:
    """An A4 page (millimetres): title, label, the QR code of the typed text, the text, instructions."""
    text = share_text(share)
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<svg xmlns="http://www.w3.org/2000/svg" width="210mm" height="297mm" viewBox="0 0 210 297">',
        '<rect width="210" height="297" fill="#fff"/>',
        _text(105, 18, 7, "Guardian key backup: custodian share", anchor="middle", bold=True),
    ]
    y = 27.0
    for line in textwrap.wrap(share.label, 76):          # a long label takes more lines, never the margin
        parts.append(_text(105, y, 4.5, line, anchor="middle"))
        y += 5.5
    parts.append(_text(105, y + 2.5, 5, f"Share {share.index} of {share.count}: any {share.threshold} of the "
                                        f"{share.count} shares recover the backup key", anchor="middle", bold=True))
    parts.append(_text(105, y + 8.5, 3.2, f"split id {share.split_id.hex()}", anchor="middle", mono=True))
    y += 13.5
    parts.append(_qr_group(qr or _qr_code(share), x=50, y=y, size=110))
    y += 124
    for line in (line for line in text.splitlines() if _LINE_RE.fullmatch(line)):
        parts.append(_text(30, y, 5, line, mono=True))
        y += 7
    y += 4
    for line, mono in _instructions(share):
        parts.append(_text(20, y, 3.6, line, mono=mono))
        y += 5.5
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _instructions(share: CustodyShare) -> list[tuple[str, bool]]:
    """(line, monospaced) pairs: the paragraphs wrapped to stay inside the page."""
    paragraphs = [
        f"Keep this page private, on paper, apart from the other shares. Alone it tells nothing about the key; "
        f"any {share.threshold} of the {share.count} shares together open the guardian's key backup without the "
        f"passphrase. To recover, the guardian gathers the shares (the QR code, or the six numbered lines typed "
        f"into a .txt file) and runs:",
        None,
        "Each line ends with two check characters: a typing mistake is caught and its group named. O and 0, "
        "and I, L and 1, are read alike; lower case is fine. Shares of different splits (see the split id "
        "above) cannot be combined.",
    ]
    lines: list[tuple[str, bool]] = []
    for paragraph in paragraphs:
        if paragraph is None:
            lines.append(("  guardian backup recover SHARE... --backup BACKUP_FILE --out NEW_BACKUP_FILE", True))
        else:
            lines.extend((line, False) for line in textwrap.wrap(paragraph, 88))
    return lines


def _text(x: float, y: float, size: float, content: str, *, anchor: str = "start", bold: bool = False,
          mono: bool = False) -> str:
    family = "monospace" if mono else "sans-serif"
    weight = ' font-weight="bold"' if bold else ""
    return (f'<text x="{x}" y="{y}" font-size="{size}" font-family="{family}" text-anchor="{anchor}"'
            f'{weight} xml:space="preserve">{escape(content)}</text>')


def _qr_group(qr, *, x: float, y: float, size: float) -> str:
    """The QR code as one path of unit squares (one per run of dark modules), scaled to `size` mm."""
    rows = list(qr.matrix_iter(scale=1, border=4))
    modules = len(rows)
    path = []
    for r, row in enumerate(rows):
        c = 0
        while c < modules:
            if row[c]:
                start = c
                while c < modules and row[c]:
                    c += 1
                path.append(f"M{start} {r}h{c - start}v1h-{c - start}z")
            else:
                c += 1
    scale = size / modules
    return (f'<g id="qr" transform="translate({x} {y}) scale({scale:.6f})">'
            f'<rect width="{modules}" height="{modules}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(path)}"/></g>')


# --- writing -------------------------------------------------------------------------------------------


def share_file_names(index: int) -> list[str]:
    return [f"share_{index}.{ext}" for ext in ("json", "txt", "svg", "png")]


def write_share_files(share: CustodyShare, directory: Path) -> list[Path]:
    """share_<i>.json, .txt, .svg and .png in `directory`, each new and owner-only."""
    json_name, txt_name, svg_name, png_name = share_file_names(share.index)
    directory = Path(directory)
    qr = _qr_code(share)
    return [write_new_file(directory / json_name, share_json(share)),
            write_new_file(directory / txt_name, share_text(share).encode()),
            write_new_file(directory / svg_name, share_svg(share, qr).encode()),
            write_new_file(directory / png_name, share_png(share, qr))]
