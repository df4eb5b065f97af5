"""One record file received in chunks over the links: the receiver's credit and checks, sans-I/O.

The file is taken strictly in order into a partial file of `held` bytes. The receiver asks one peer
(the source) for ranges, at most `window` bytes ahead of what it holds; a peer is sent only ranges
it was asked for, so it may send nothing else. The first chunk tells the file's total size; until
then a single range is asked. A chunk at the offset held is taken; one behind it, within what the
peer was asked, is stale (asked twice: after a stall or a switch of source) and dropped; anything
beyond what the peer was asked, or a total that changes, is a misfit naming that peer. Whether the
bytes are right is the SHA-256 of the whole file's business, at the end (the caller's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TAKE, STALE, RESTART = "take", "stale", "restart"


class Misfit(Exception):
    """A chunk that does not fit what was asked of its peer; the message says how."""


@dataclass
class Incoming:
    digest: bytes
    held: int = 0                        # bytes of the file held, in order, from offset 0
    total: int | None = None             # the file's size, from the first chunk taken
    total_from: int | None = None        # the peer that said so
    source: int | None = None            # the peer asked now
    cursor: int = 0                      # where the next range asked of the source starts
    limits: dict[int, int] = field(default_factory=dict)     # peer -> end of what it was asked on its link
    contributors: set[int] = field(default_factory=set)      # peers whose bytes the partial holds (this run)
    lacked: set[int] = field(default_factory=set)            # peers that said they lack the file
    progress_at: float = 0.0

    @property
    def complete(self) -> bool:
        return self.total is not None and self.held == self.total

    def use(self, peer: int, now: float) -> None:
        """Ask `peer` from now on, from the bytes held."""
        self.source, self.cursor, self.progress_at = peer, self.held, now

    def ranges(self, chunk: int, window: int, room: int) -> list[tuple[int, int]]:
        """The (offset, length) ranges to ask of the source now: at most `room` bytes more (the peer's
        credit left), up to `window` bytes ahead of what is held; none while over half the window is out."""
        self.cursor = max(self.cursor, self.held)
        if self.source is None or self.complete or room <= 0:
            return []
        if self.total is None:
            # One range until the size is known: a range at or past the end is answered by an end marker.
            if self.cursor > self.held:
                return []
            out = [(self.held, min(chunk, room))]
            self.cursor = self.held + out[0][1]
        else:
            if self.cursor - self.held > window // 2:
                return []
            end = min(self.total, self.held + window, self.cursor + room)
            out = []
            while self.cursor < end:
                length = min(chunk, end - self.cursor)
                out.append((self.cursor, length))
                self.cursor += length
        if out:
            self.limits[self.source] = max(self.limits.get(self.source, 0), self.cursor)
        return out

    def outstanding(self) -> int:
        """Bytes asked of the source and not yet held."""
        return max(0, self.cursor - self.held) if self.source is not None else 0

    def accept(self, peer: int, offset: int, total: int, size: int, now: float) -> str:
        """A chunk of `size` bytes at `offset` of a file of `total` bytes from `peer` (the frame checked
        0 <= offset, offset + size <= total): TAKE (write it at `held`, then `held` grows), STALE (drop it),
        RESTART (the partial is longer than the file: drop it and start from 0), or raise Misfit."""
        limit = self.limits.get(peer)
        if limit is None or offset + size > limit:
            raise Misfit(f"sent {size} bytes at {offset} of a record file it was not asked for")
        if self.total is not None and total != self.total:
            raise Misfit(f"said the record file is {total} bytes, where guardian {self.total_from} said "
                         f"{self.total}")
        if total < self.held:
            return RESTART        # only a partial from an earlier run can be longer (its total was not known)
        if offset != self.held:
            return STALE
        self.held += size
        if self.total is None:
            self.total, self.total_from = total, peer
        self.contributors.add(peer)
        self.progress_at = now
        return TAKE

    def restart(self) -> None:
        """Drop what is held (a partial that was wrong); keep who was asked what."""
        self.held, self.total, self.total_from, self.cursor = 0, None, None, 0
        self.contributors.clear()

    def link_down(self, peer: int) -> None:
        """A link closed: what it was asked is gone with it."""
        self.limits.pop(peer, None)
        if self.source == peer:
            self.source = None
