"""Link frames of record files (node/protocol/link.py) and the receiver's credit and checks
(node/protocol/transfer.py): sans-I/O, strict."""

from __future__ import annotations

import msgpack
import pytest

from node.protocol import link
from node.protocol.envelope import EnvelopeError
from node.protocol.transfer import RESTART, STALE, TAKE, Incoming, Misfit

D = bytes(range(32))
CHUNK = 1000


def frame(kind, payload) -> bytes:
    return msgpack.packb([kind, payload], use_bin_type=True)


def test_want_blob_lack_round_trip():
    assert link.decode(frame("want", [[D, 0, 5], [D, 5, 7]])) == link.Want((link.Range(D, 0, 5), link.Range(D, 5, 7)))
    assert link.decode(frame("blob", [D, 10, 15, b"hello"])) == link.Blob(D, 10, 15, b"hello")
    assert link.decode(frame("blob", [D, 15, 15, b""])) == link.Blob(D, 15, 15, b"")       # the end marker
    assert link.decode(frame("blob", [D, 0, 0, b""])) == link.Blob(D, 0, 0, b"")           # an empty file
    assert link.decode(frame("lack", [D])) == link.Lack((D,))


@pytest.mark.parametrize("payload, why", [
    ([], "1 to"),
    ([[D, 0]], "a range must be"),
    ([[D[:31], 0, 5]], "a range must be"),
    ([[D, -1, 5]], "a range must be"),
    ([[D, 0, 0]], "a range must be"),
    ([[D, True, 5]], "a range must be"),
    ([[D, 0, link.MAX_RANGE_BYTES + 1]], "a range must be"),
    ([[D, link.MAX_FILE_BYTES, 1]], "a range must be"),
    ([[D, "0", 5]], "a range must be"),
    ([[D, 0, 5]] * (link.MAX_WANTED + 1), "1 to"),
    ({"d": D}, "1 to"),
])
def test_malformed_wants_are_refused(payload, why):
    with pytest.raises(EnvelopeError, match=why) as e:
        link.decode(frame("want", payload))
    assert e.value.reason == "malformed"


@pytest.mark.parametrize("payload, why", [
    ([D, 0, 5], "must be \\[digest, offset, total, bytes\\]"),
    ([D, 0, 5, "hello"], "must be \\[digest, offset, total, bytes\\]"),
    ([D[:8], 0, 5, b"hello"], "must be \\[digest, offset, total, bytes\\]"),
    ([D, -1, 5, b"x"], "offset and total"),
    ([D, 6, 5, b""], "offset and total"),
    ([D, 0, link.MAX_FILE_BYTES + 1, b"x"], "offset and total"),
    ([D, False, 5, b"x"], "offset and total"),
    ([D, 0, 5.0, b"x"], "offset and total"),
    ([D, 2, 5, b"xyzw"], "run past the total"),
    ([D, 2, 5, b""], "empty chunk before the end"),
    ([D, 0, 5000, b"x" * (CHUNK + 1)], f"more than {CHUNK}"),
])
def test_malformed_blobs_are_refused(payload, why):
    with pytest.raises(EnvelopeError, match=why):
        link.decode(frame("blob", payload), max_chunk=CHUNK)


@pytest.mark.parametrize("payload", [[], [D[:31]], [D] * (link.MAX_WANTED + 1), [1]])
def test_malformed_lacks_are_refused(payload):
    with pytest.raises(EnvelopeError, match="lack frame"):
        link.decode(frame("lack", payload))


def test_a_blob_frame_of_a_full_chunk_fits_in_max_frame_bytes():
    max_frame = 4096            # sealed, the frame gains the 16 bytes of its tag
    payload = [D, link.MAX_FILE_BYTES - link.chunk_bytes(max_frame), link.MAX_FILE_BYTES,
               b"x" * link.chunk_bytes(max_frame)]
    assert len(link.encode("blob", payload)) + 16 <= max_frame


# --- the receiver ---------------------------------------------------------------------------------


def test_one_range_until_the_size_is_known_then_a_window_within_the_credit():
    f = Incoming(D)
    f.use(2, 0.0)
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == [(0, CHUNK)]
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == []            # asked, nothing back yet
    assert f.accept(2, 0, 10_500, CHUNK, 1.0) == TAKE and (f.held, f.total) == (CHUNK, 10_500)
    assert f.ranges(CHUNK, 4 * CHUNK, 2500) == [(1000, 1000), (2000, 1000), (3000, 500)]      # room: 2500
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == []            # over half the window out
    for offset in (1000, 2000):
        assert f.accept(2, offset, 10_500, CHUNK, 2.0) == TAKE
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == [(3500, 1000), (4500, 1000), (5500, 1000), (6500, 500)]
    assert f.outstanding() == 4 * CHUNK           # the window, ahead of the 3000 bytes held


def test_never_asked_beyond_the_end_and_complete_at_the_total():
    f = Incoming(D)
    f.use(2, 0.0)
    f.ranges(CHUNK, 4 * CHUNK, 10**6)
    f.accept(2, 0, 1500, CHUNK, 0.0)
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == [(1000, 500)]
    assert f.accept(2, 1000, 1500, 500, 0.0) == TAKE and f.complete
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == []


def test_chunks_not_asked_for_are_misfits_naming_how():
    f = Incoming(D)
    with pytest.raises(Misfit, match="not asked for"):
        f.accept(3, 0, 100, 100, 0.0)                      # never asked anything
    f.use(2, 0.0)
    f.ranges(CHUNK, 4 * CHUNK, 10**6)
    with pytest.raises(Misfit, match="not asked for"):
        f.accept(3, 0, 100, 100, 0.0)                      # asked of another peer
    with pytest.raises(Misfit, match="not asked for"):
        f.accept(2, 500, 5000, CHUNK, 0.0)                 # past what was asked
    f.accept(2, 0, 5000, CHUNK, 0.0)
    f.ranges(CHUNK, 4 * CHUNK, 10**6)
    with pytest.raises(Misfit, match="said the record file is 6000 bytes, where guardian 2 said 5000"):
        f.accept(2, 1000, 6000, CHUNK, 0.0)


def test_a_chunk_behind_what_is_held_is_stale_and_a_link_drop_resumes_from_the_bytes_held():
    f = Incoming(D)
    f.use(2, 0.0)
    f.ranges(CHUNK, 4 * CHUNK, 10**6)
    f.accept(2, 0, 10_000, CHUNK, 0.0)
    f.ranges(CHUNK, 4 * CHUNK, 10**6)
    f.accept(2, 1000, 10_000, CHUNK, 0.0)
    assert f.accept(2, 1000, 10_000, CHUNK, 0.0) == STALE      # asked twice (after a stall, say)
    f.link_down(2)
    assert f.source is None and f.ranges(CHUNK, 4 * CHUNK, 10**6) == []
    with pytest.raises(Misfit):
        f.accept(2, 2000, 10_000, CHUNK, 0.0)                  # the old link's asks are gone with it
    f.use(3, 5.0)
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6)[0] == (2000, 1000)     # from the bytes held, of another peer
    assert f.accept(3, 2000, 10_000, CHUNK, 6.0) == TAKE and f.contributors == {2, 3}


def test_a_partial_longer_than_the_file_starts_over():
    f = Incoming(D, held=3000)        # from before a restart: its size unknown
    f.use(2, 0.0)
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == [(3000, CHUNK)]
    assert f.accept(2, 2000, 2000, 0, 0.0) == RESTART              # the end marker: the file has 2000 bytes
    f.restart()
    f.use(2, 0.0)
    assert f.ranges(CHUNK, 4 * CHUNK, 10**6) == [(0, CHUNK)]
