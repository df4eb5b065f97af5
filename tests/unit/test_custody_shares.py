"""Custodian shares (node/custody/share_files.py): the file, the typed text, the printed page, recovery."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.errors import InputError
from node.custody import ALPHABET, b32decode, b32encode, write_new_file
from node.custody.share_files import (
    FORMAT, LINES, CustodyShare, ShareFileError, load_share, make_shares, parse_share_json, parse_share_text,
    recover_from, share_json, share_png, share_svg, share_text, write_share_files,
)

SECRET = bytes(range(1, 33))
LABEL = "Alice (guardian 1), election 3f2a1b9c"


@pytest.fixture(scope="module")
def shares() -> list[CustodyShare]:
    return make_shares(SECRET, 3, 5, LABEL)


def data_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d+:", line)]


def replace_line(text: str, n: int, new: str) -> str:
    return "\n".join(new if line.startswith(f"{n}:") else line for line in text.splitlines()) + "\n"


def other_char(c: str) -> str:
    return ALPHABET[(ALPHABET.index(c) + 7) % 32]


# --- making and recovering -------------------------------------------------------------------------------


def test_shares_of_one_split(shares):
    assert [s.index for s in shares] == [1, 2, 3, 4, 5]
    assert len({s.split_id for s in shares}) == 1 and len(shares[0].split_id) == 16
    assert all((s.threshold, s.count, s.label) == (3, 5, LABEL) for s in shares)
    assert make_shares(SECRET, 3, 5, LABEL)[0].split_id != shares[0].split_id     # a new id per split


def test_recover_from_any_three_in_any_form(shares, tmp_path):
    for share in shares:
        write_share_files(share, tmp_path)
    assert recover_from([tmp_path / "share_1.json", tmp_path / "share_4.txt", tmp_path / "share_5.json"]) == SECRET
    assert recover_from([share_text(shares[1]), shares[2], str(tmp_path / "share_5.json")]) == SECRET
    assert recover_from(shares) == SECRET                                  # all five: the extra two agree


def test_the_share_value_is_not_in_the_repr(shares):
    assert str(shares[0].value) not in repr(shares[0])


def test_too_few_shares(shares):
    with pytest.raises(ShareFileError, match=r"any 3 shares are needed, only 2 different ones.*share 1, 4"):
        recover_from([shares[0], shares[3]])
    with pytest.raises(ShareFileError, match="no shares"):
        recover_from([])


def test_duplicate_shares_are_refused_by_name(shares, tmp_path):
    write_share_files(shares[0], tmp_path)
    with pytest.raises(ShareFileError, match=r"share_1.txt and .*share_1.json are the same share \(number 1\)"):
        recover_from([tmp_path / "share_1.json", tmp_path / "share_1.txt", shares[1], shares[2]])


def test_two_different_shares_with_one_number_are_refused(shares):
    forged = CustodyShare(shares[0].split_id, 3, 5, 1, shares[1].value, LABEL)
    with pytest.raises(ShareFileError, match="share 2 and share 1 both claim to be share 1 but differ"):
        recover_from([shares[0], forged, shares[2]])


def test_shares_of_different_splits_are_refused_by_name(shares, tmp_path):
    other = make_shares(SECRET, 3, 5, LABEL)
    (tmp_path / "other.json").write_bytes(share_json(other[2]))
    with pytest.raises(ShareFileError, match=r"other.json belongs to split .* not to split .*different splits"):
        recover_from([shares[0], shares[1], tmp_path / "other.json"])


def test_a_share_that_disagrees_with_the_others_is_named(shares):
    altered = CustodyShare(shares[4].split_id, 3, 5, 5, (shares[4].value + 1), LABEL)
    with pytest.raises(ShareFileError, match=r"share 4 \(share 5\) does not agree with share 1, share 2, share 3"):
        recover_from([shares[0], shares[1], shares[2], altered])


def test_an_altered_share_among_exactly_t_is_caught(shares):
    altered = CustodyShare(shares[2].split_id, 3, 5, 3, shares[2].value ^ 1, LABEL)
    with pytest.raises(ShareFileError, match="altered"):
        recover_from([shares[0], shares[1], altered])


def test_shares_that_disagree_on_the_threshold_are_refused(shares):
    odd = CustodyShare(shares[1].split_id, 2, 5, 2, shares[1].value, LABEL)
    with pytest.raises(ShareFileError, match="share 2 says any 2 of 5, share 1 says any 3 of 5"):
        recover_from([shares[0], odd, shares[2]])


def test_bad_items_are_refused(shares, tmp_path):
    with pytest.raises(ShareFileError, match="share 2: expected a file"):
        recover_from([shares[0], 42])
    with pytest.raises(ShareFileError, match="cannot read the share .*missing.json"):
        recover_from([shares[0], tmp_path / "missing.json"])


@pytest.mark.parametrize("changes, words", [
    (dict(split_id=b"short"), "split id must be 16 bytes"),
    (dict(threshold=1), "any 1 of 5"),
    (dict(threshold=6), "any 6 of 5"),
    (dict(count=256, threshold=3), "any 3 of 256"),
    (dict(index=0), "share number 0"),
    (dict(index=6), "share number 6"),
    (dict(value=2**521 - 1), "outside the field"),
    (dict(value=-1), "outside the field"),
    (dict(index=True), "whole number"),
    (dict(label="two\nlines"), "label"),
    (dict(label="x" * 201), "label"),
])
def test_share_fields_are_checked(shares, changes, words):
    fields = dict(split_id=shares[0].split_id, threshold=3, count=5, index=1, value=shares[0].value, label=LABEL)
    with pytest.raises(ShareFileError, match=words):
        CustodyShare(**(fields | changes)).checked("share x")


def test_make_shares_checks_its_input():
    with pytest.raises(InputError, match="at least 2"):
        make_shares(SECRET, 1, 3, LABEL)
    with pytest.raises(ShareFileError, match="label"):
        make_shares(SECRET, 2, 3, "bad\x00label")


# --- the file ------------------------------------------------------------------------------------------------


def test_share_file_round_trip(shares):
    data = share_json(shares[1])
    doc = json.loads(data)
    assert doc["format"] == FORMAT and doc["index"] == 2 and doc["label"] == LABEL
    assert len(doc["value"]) == 132 and len(doc["split_id"]) == 32 and len(doc["check"]) == 64
    assert parse_share_json(data) == shares[1]


def test_every_flipped_byte_of_a_share_file_is_detected(shares, tmp_path):
    data = share_json(shares[0])
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 0x04
        path = tmp_path / f"flip{i}.json"
        path.write_bytes(bytes(corrupt))
        try:
            share = load_share(path)
        except ShareFileError as e:
            assert str(path) in str(e)
        else:                                              # only a change between JSON tokens can pass
            assert share == shares[0], f"byte {i} changed the share undetected"


@pytest.mark.parametrize("keep", [0, 1, 10, 100, -2])
def test_a_truncated_share_file_is_refused_by_name(shares, tmp_path, keep):
    data = share_json(shares[0])
    path = tmp_path / "share_1.json"
    path.write_bytes(data[:keep])
    with pytest.raises(ShareFileError, match="share_1.json"):
        load_share(path)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(index=2), "damaged: its check"),
    (lambda d: d.update(label="Mallory"), "damaged: its check"),
    (lambda d: d.pop("check"), "damaged: it must hold"),
    (lambda d: d.update(extra=1), "damaged: it must hold"),
    (lambda d: d.update(format="something else"), "not a share file"),
])
def test_edited_share_files_are_refused(shares, edit, words):
    doc = json.loads(share_json(shares[0]))
    edit(doc)
    with pytest.raises(ShareFileError, match=words):
        parse_share_json(json.dumps(doc).encode(), "share_1.json")


def test_a_recomputed_check_still_needs_valid_fields(shares):
    from node.custody.share_files import _digest

    doc = json.loads(share_json(shares[0]))
    for key, value, words in [("value", "ZZ" * 66, "lower-case hex"), ("split_id", "AB" * 16, "lower-case hex"),
                              ("threshold", "3", "whole number"), ("index", 9, "share number 9")]:
        edited = {k: v for k, v in doc.items() if k != "check"} | {key: value}
        edited["check"] = _digest(edited)
        with pytest.raises(ShareFileError, match=words):
            parse_share_json(json.dumps(edited).encode())


@pytest.mark.parametrize("content", [b"[]", b"null", b'{"format": 1}', b"\xff\xfe", b"not json at all"])
def test_other_files_are_not_shares(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(ShareFileError, match="x.json"):
        load_share(path)


# --- the typed text ---------------------------------------------------------------------------------------------


def test_typed_text_shape_and_round_trip(shares):
    text = share_text(shares[2])
    lines = data_lines(text)
    assert len(lines) == LINES == 6
    for n, line in enumerate(lines, 1):
        number, groups = line.split(": ")
        assert number == str(n)
        parts = groups.split()
        assert [len(p) for p in parts] == [4] * 6 + [2]
        assert set("".join(parts)) <= set(ALPHABET)
    assert "share 3 of 5, any 3 recover" in text and LABEL in text
    assert parse_share_text(text) == shares[2]


def test_typed_text_forgives_case_spacing_and_look_alikes(shares):
    lines = data_lines(share_text(shares[0]))
    typed = "\n".join(f"  {line.split(':')[0]} :" + line.split(":")[1].replace(" ", "").lower()
                      .replace("0", "o").replace("1", "l") for line in lines)
    parsed = parse_share_text(typed)
    assert (parsed.split_id, parsed.index, parsed.value) == (shares[0].split_id, 1, shares[0].value)
    assert parsed.label == ""                                    # the label line was not typed


@settings(max_examples=80, deadline=None)
@given(st.integers(0, LINES - 1), st.integers(0, 25), st.integers(1, 31))
def test_every_single_typo_is_caught_and_located(line_no, position, delta):
    share = make_shares(SECRET, 2, 3, LABEL)[0]
    text = share_text(share)
    line = data_lines(text)[line_no]
    number, rest = line.split(": ")
    chars = rest.replace(" ", "")
    typo = chars[:position] + ALPHABET[(ALPHABET.index(chars[position]) + delta) % 32] + chars[position + 1:]
    retyped = f"{number}: " + " ".join(typo[i:i + 4] for i in range(0, 24, 4)) + "  " + typo[24:]
    with pytest.raises(ShareFileError) as info:
        parse_share_text(replace_line(text, line_no + 1, retyped), "share_1.txt")
    message = str(info.value)
    assert f"share_1.txt: line {line_no + 1} has a typing mistake" in message
    if position < 24:
        assert f"group {position // 4 + 1} (character {position % 4 + 1})" in message
    else:
        assert "the check characters" in message


def test_two_typos_in_one_line_are_caught(shares):
    text = share_text(shares[0])
    line = data_lines(text)[3]
    chars = list(line)
    for i in (3, 9):
        chars[i] = other_char(chars[i])
    with pytest.raises(ShareFileError, match="line 4 (has|is)"):
        parse_share_text(replace_line(text, 4, "".join(chars)))


def test_lines_typed_out_of_order_are_caught(shares):
    lines = data_lines(share_text(shares[0]))
    swapped = [lines[0], "2:" + lines[2].split(":")[1], "3:" + lines[1].split(":")[1]] + lines[3:]
    with pytest.raises(ShareFileError, match="line 2 is most likely line 3 of this share, typed in the wrong"):
        parse_share_text("\n".join(swapped))


@pytest.mark.parametrize("mangle, words", [
    (lambda ls: ls[:4] + ls[5:], "line 5 missing"),
    (lambda ls: ls + [ls[2]], "line 3 is typed twice"),
    (lambda ls: ls + ["7: AAAA"], "no line 7"),
    (lambda ls: [ls[0][:-1]] + ls[1:], "line 1 has 25 characters, 26 expected"),
    (lambda ls: [ls[0] + "Q"] + ls[1:], "line 1 has 27 characters"),
    (lambda ls: ls[:2] + [ls[2][:8] + "U" + ls[2][9:]] + ls[3:], r"line 3, group 2 \(character 1\): 'U' is not"),
    (lambda ls: ls[:2] + [ls[2][:8] + "*" + ls[2][9:]] + ls[3:], "line 3, group 2"),
])
def test_typed_text_structure_errors(shares, mangle, words):
    lines = data_lines(share_text(shares[0]))
    with pytest.raises(ShareFileError, match=words):
        parse_share_text("\n".join(mangle(lines)), "typed")


def test_a_consistent_line_from_another_share_fails_the_overall_check(shares):
    mine, other = data_lines(share_text(shares[0])), data_lines(share_text(shares[1]))
    mixed = mine[:5] + [other[5]]                 # a valid line 6, but of share 2
    with pytest.raises(ShareFileError, match="does not check out as a whole"):
        parse_share_text("\n".join(mixed))


def test_not_a_typed_share(tmp_path):
    with pytest.raises(ShareFileError, match="missing"):
        parse_share_text("hello\nworld\n")
    with pytest.raises(ShareFileError, match="not a typed share"):
        parse_share_text(b"bytes")
    path = tmp_path / "x.txt"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ShareFileError, match="x.txt is neither a share file nor a typed share"):
        load_share(path)


def test_base32_round_trip():
    for data in (b"", b"\x00", bytes(range(20)), b"\xff" * 90):
        assert b32decode(b32encode(data), len(data)) == data
    assert len(b32encode(bytes(20))) == 32 and len(b32encode(bytes(90))) == 144


# --- the page -----------------------------------------------------------------------------------------------------


def qr_modules_of_page(svg: str) -> set[tuple[int, int]]:
    """The dark modules drawn in the page's QR group, read back from its path."""
    root = ET.fromstring(svg)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    group = root.find(".//svg:g[@id='qr']", ns)
    assert group is not None, "the page has no QR code"
    dark = set()
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", group.find("svg:path", ns).get("d")):
        dark |= {(int(x) + i, int(y)) for i in range(int(width))}
    return dark


def test_the_page_holds_a_qr_code_of_the_typed_text(shares):
    share = shares[1]
    svg = share_svg(share)
    expected = segno.make(share_text(share), error="m", micro=False)
    rows = list(expected.matrix_iter(scale=1, border=4))
    assert qr_modules_of_page(svg) == {(x, y) for y, row in enumerate(rows) for x, v in enumerate(row) if v}
    root = ET.fromstring(svg)
    text = " ".join("".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "Share 2 of 5: any 3 of the 5 shares recover the backup key" in text
    assert LABEL in text and share.split_id.hex() in text and "guardian backup recover" in text
    for line in data_lines(share_text(share)):
        assert line in text


def test_the_page_escapes_the_label():
    share = make_shares(SECRET, 2, 2, "Bob <script>&amp;")[0]
    root = ET.fromstring(share_svg(share))               # still well-formed XML
    assert any("Bob <script>&amp;" == "".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text"))


def test_the_png_is_a_qr_code(shares):
    png = share_png(shares[0])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 500


def test_write_share_files(shares, tmp_path):
    paths = write_share_files(shares[3], tmp_path)
    assert [p.name for p in paths] == ["share_4.json", "share_4.txt", "share_4.svg", "share_4.png"]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_share(paths[0]) == shares[3] and load_share(paths[1]) == shares[3]
    with pytest.raises(InputError, match="already exists"):
        write_share_files(shares[3], tmp_path)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_write_new_file_never_overwrites(tmp_path):
    path = tmp_path / "f"
    write_new_file(path, b"first")
    with pytest.raises(InputError, match="already exists"):
        write_new_file(path, b"second")
    assert path.read_bytes() == b"first"
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    with pytest.raises(InputError, match="already exists"):
        write_new_file(tmp_path / "link", b"x")
    with pytest.raises(InputError, match="cannot write"):
        write_new_file(tmp_path / "no-such-dir" / "f", b"x")


def test_a_long_label_is_wrapped_inside_the_page():
    label = ("Guardian Bartholomew-Featherstonehaugh of the county electoral board, " * 3)[:200]
    root = ET.fromstring(share_svg(make_shares(SECRET, 2, 3, label)[0]))
    texts = ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert max(len(t) for t in texts) <= 90
    assert " ".join(texts[1:4]).startswith(label[:150])


@pytest.mark.skipif(not shutil.which("zbarimg"), reason="zbarimg (zbar-tools) is not installed")
def test_the_png_decodes_to_the_typed_share(shares, tmp_path):
    path = tmp_path / "qr.png"
    path.write_bytes(share_png(shares[0]))
    decoded = subprocess.run(["zbarimg", "-q", "--raw", str(path)], capture_output=True, text=True, check=True)
    assert parse_share_text(decoded.stdout) == shares[0]
