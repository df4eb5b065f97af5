"""Public record files coming to this node: in chunks over the links, or read from a location.

`Transfers` keeps, node-wide and by SHA-256, the files asked for over the links. Each goes into a
partial file of its own (`DIR/<hex>.part`, inside the node's data directory), in order, from one peer at
a time (node/protocol/transfer.py keeps its credit and checks each chunk); at most MAX_IN_FLIGHT files at
once, each at most WINDOW_CHUNKS chunks ahead, and at most PEER_CREDIT bytes asked of one peer at once,
so a slow receiver is never flooded and heartbeats never wait long behind a file. A dropped link, a
silent peer or a node restart resumes from the bytes held: the partial file survives. A completed
file whose SHA-256 is not the one asked for is refused, naming the peers that sent it, and fetched again
from the others; a right one becomes `DIR/<hex>` until no session needs it.

`read_location` copies one file of a published record (a directory this node can see, or an http(s)
URL of it: the file at URL/<relative path>) and checks it against its digest; nothing from a location
is used unchecked.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import trio

from node.protocol.link import MAX_FILE_BYTES, MAX_WANTED, Blob, chunk_bytes
from node.protocol.transfer import RESTART, STALE, Incoming, Misfit
from node.protocol.waiting import LinkView
from node.record import layout

log = logging.getLogger("guardian.transfer")

MAX_IN_FLIGHT = 8            # files asked over the links at once
WINDOW_CHUNKS = 4            # chunks of one file asked ahead of what is held
PEER_CREDIT = 2**20          # bytes asked of one peer at once (at least two chunks)
STALL_SECONDS = 10.0         # no chunk from the source for this long: ask another peer
RETRY_SECONDS = 1.0          # every peer lacks it (or is silent): ask them all again after this
READ_BYTES = 2**20           # bytes read at once from a file or a location
LOCATION_TIMEOUT = 30.0      # seconds a location may keep one read waiting


@dataclass
class Download:
    state: Incoming
    part: Path
    prefer: int | None = None            # the peer asked first (a session's requester: it has every file)
    fd: int | None = None
    hasher: "hashlib._Hash | None" = None    # over the bytes held; None until the download has started
    tried: set[int] = field(default_factory=set)     # peers given up on (stalled or wrong) this round
    retry_at: float = 0.0


class Transfers:
    """The record files this node asks of its peers, each in chunks into a partial file of `directory`."""

    def __init__(self, links: Callable[[], Mapping[int, LinkView]], want, refuse: Callable[[int, str], None],
                 now: Callable[[], float], me: int, directory: Path, max_frame_bytes: int,
                 done: Callable[[bytes], None]) -> None:
        self._links, self._want, self._refuse, self._now, self._done = links, want, refuse, now, done
        self.me, self.dir = me, directory
        self.chunk = chunk_bytes(max_frame_bytes)
        self.window = WINDOW_CHUNKS * self.chunk
        # At least two chunks, and no more than the files in flight can use (each range asked is at least
        # one chunk's want frame at most, well within what a peer queues).
        self.credit = min(max(PEER_CREDIT, 2 * self.chunk), MAX_IN_FLIGHT * self.window)
        self.downloads: dict[bytes, Download] = {}       # started, in flight
        self.queue: dict[bytes, int | None] = {}         # waiting to start: digest -> preferred peer
        self.ready: dict[bytes, Path] = {}               # complete and checked
        self.interest: dict[bytes, set[bytes]] = {}      # digest -> the sessions that need it
        self.resumed = 0                                 # downloads that went on from bytes already held
        self._wake = trio.Event()

    # --- what the sessions need -------------------------------------------------------------------

    def need(self, session: bytes, digests, prefer: int | None) -> None:
        for digest in digests:
            self.interest.setdefault(digest, set()).add(session)
            if digest not in self.downloads and digest not in self.ready and digest not in self.queue:
                self.queue[digest] = prefer
        self.poke()

    def release(self, session: bytes, digests=()) -> None:
        """The session's copy is complete (or given up): what only it needed goes, partial files too, and the
        files of `digests` (its index's) that an earlier run of it left here."""
        for digest in {*digests, *(d for d, who in self.interest.items() if session in who)}:
            who = self.interest.get(digest, set())
            who.discard(session)
            if who:
                continue
            self.interest.pop(digest, None)
            self.queue.pop(digest, None)
            self.ready.pop(digest, None)
            download = self.downloads.pop(digest, None)
            if download is not None:
                self._close(download)
            _unlink(self.dir / digest.hex())
            _unlink(self.dir / f"{digest.hex()}.part")

    def prune(self, keep: set[bytes]) -> None:
        """At start: drop what this directory holds that no session still fetching needs."""
        try:
            names = list(self.dir.iterdir())
        except OSError:
            return
        for path in names:
            hex_digest = path.name.split(".")[0]
            try:
                wanted = bytes.fromhex(hex_digest) in keep and len(hex_digest) == 64
            except ValueError:
                wanted = False
            if not wanted:
                _unlink(path)

    def poke(self) -> None:
        self._wake.set()

    # --- the pump: starts downloads, picks sources, asks ranges ----------------------------------------

    async def run(self) -> None:
        while True:
            wake = self._wake = trio.Event()
            await self._start_queued()
            asks = self._asks()
            for peer, ranges in asks.items():
                for i in range(0, len(ranges), MAX_WANTED):
                    await self._want(peer, ranges[i:i + MAX_WANTED])
            with trio.move_on_after(RETRY_SECONDS):
                await wake.wait()

    async def _start_queued(self) -> None:
        while self.queue and len(self.downloads) < MAX_IN_FLIGHT:
            digest, prefer = next(iter(self.queue.items()))
            del self.queue[digest]
            hex_digest = digest.hex()
            done = self.dir / hex_digest
            if done.exists():        # completed before a restart: checked again before use
                if (await trio.to_thread.run_sync(layout.file_hasher, done)).digest() == digest:
                    self.ready[digest] = done
                    self._done(digest)
                    continue
                _unlink(done)
            part = self.dir / f"{hex_digest}.part"
            self.dir.mkdir(parents=True, exist_ok=True)
            download = Download(Incoming(digest), part, prefer)
            self.downloads[digest] = download
            held = part.stat().st_size if part.exists() else 0
            download.hasher = await trio.to_thread.run_sync(layout.file_hasher, part) if held else hashlib.sha256()
            if self.downloads.get(digest) is not download:
                continue             # released meanwhile
            download.fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
            download.state.held = download.state.cursor = held
            if held:
                self.resumed += 1
                log.info("record file %s resumed at byte %d (held from before)", hex_digest[:16], held)

    def _asks(self) -> dict[int, list[list]]:
        now, links = self._now(), self._links()
        out: dict[int, list[list]] = {}
        room = {p: self.credit for p in links if p != self.me}
        for d in self.downloads.values():
            if d.hasher is not None and d.state.source is not None:
                room[d.state.source] = room.get(d.state.source, 0) - d.state.outstanding()
        for digest, d in self.downloads.items():
            s = d.state
            if d.hasher is None or d.fd is None:
                continue
            if s.source is not None and not links.get(s.source, LinkView(False)).connected:
                s.link_down(s.source)
            elif s.source is not None and now - s.progress_at > STALL_SECONDS:
                log.info("record file %s: no chunk from guardian %d for %g s; asking another peer",
                         digest.hex()[:16], s.source, STALL_SECONDS)
                d.tried.add(s.source)
                s.source = None
            if s.source is None:
                peer = self._pick(d, links, now)
                if peer is None:
                    continue
                s.use(peer, now)
                if s.held:
                    log.info("record file %s: going on from byte %d, from guardian %d", digest.hex()[:16], s.held,
                             peer)
            ranges = s.ranges(self.chunk, self.window, room.get(s.source, 0))
            room[s.source] = room.get(s.source, 0) - sum(length for _, length in ranges)
            out.setdefault(s.source, []).extend([digest, offset, length] for offset, length in ranges)
        return out

    def _pick(self, d: Download, links: Mapping[int, LinkView], now: float) -> int | None:
        linked = sorted((p for p, v in links.items() if v.connected and p != self.me),
                        key=lambda p: (p != d.prefer, p))
        fresh = [p for p in linked if p not in d.tried and p not in d.state.lacked]
        if not fresh and linked and now >= d.retry_at:
            # Every linked peer lacked it or was given up on: a peer may have fetched it since.
            d.tried.clear()
            d.state.lacked.clear()
            d.retry_at = now + RETRY_SECONDS
            fresh = linked
        return fresh[0] if fresh else None

    # --- what the links bring ----------------------------------------------------------------------------

    def on_blob(self, peer: int, blob: Blob) -> None:
        d = self.downloads.get(blob.digest)
        if d is None or d.fd is None:
            return           # a file no longer asked for (completed, released): late, and not used
        s, hex16 = d.state, blob.digest.hex()[:16]
        try:
            verdict = s.accept(peer, blob.offset, blob.total, len(blob.data), self._now())
        except Misfit as e:
            self._refuse(peer, f"record file {hex16}: {e}")
            d.tried.add(peer)
            if s.source == peer:
                s.source = None
            self.poke()
            return
        if verdict == STALE:
            return
        if verdict == RESTART:
            log.info("record file %s: the partial file is longer than the file (%d bytes): starting over",
                     hex16, blob.total)
            self._truncate(d)
            self.poke()
            return
        try:
            os.pwrite(d.fd, blob.data, blob.offset)
        except OSError as e:
            log.warning("record file %s: cannot write %s: %s; starting it over", hex16, d.part, e)
            self._truncate(d)
            return
        d.hasher.update(blob.data)
        if s.complete:
            self._finish(blob.digest, d)
        elif s.outstanding() <= self.window // 2:
            self.poke()

    def on_lack(self, peer: int, digests) -> None:
        for digest in digests:
            d = self.downloads.get(digest)
            if d is not None:
                d.state.lacked.add(peer)
                if d.state.source == peer:
                    d.state.source = None
        self.poke()

    def links_changed(self) -> None:
        """A link came up or went down; a link may also have replaced another: ask the sources again from
        the bytes held (what the old link was asked is gone with it; a duplicate is dropped as stale)."""
        links = self._links()
        for d in self.downloads.values():
            for peer in list(d.state.limits):
                if not links.get(peer, LinkView(False)).connected:
                    d.state.link_down(peer)
            d.state.cursor = d.state.held
        self.poke()

    def _finish(self, digest: bytes, d: Download) -> None:
        self._close(d)
        del self.downloads[digest]
        hex_digest = digest.hex()
        if d.hasher.digest() == digest:
            done = self.dir / hex_digest
            os.replace(d.part, done)
            self.ready[digest] = done
            log.debug("record file %s received (%d bytes)", hex_digest[:16], d.state.total)
            self._done(digest)
            return
        _unlink(d.part)
        senders = sorted(d.state.contributors)
        for peer in senders:
            self._refuse(peer, f"record file {hex_digest[:16]}: the {d.state.total} bytes sent by guardian(s) "
                               f"{', '.join(map(str, senders))} do not match the SHA-256 asked for")
        if not senders:
            log.info("record file %s: the bytes held from before do not match; starting over", hex_digest[:16])
        # Asked again, first of the peers that sent no part of it.
        self.queue[digest] = next((p for p in sorted(self._links()) if p not in senders and p != self.me), None)
        self.poke()

    def _truncate(self, d: Download) -> None:
        d.state.restart()
        d.hasher = hashlib.sha256()
        try:
            os.ftruncate(d.fd, 0)
        except OSError:
            pass

    def _close(self, d: Download) -> None:
        if d.fd is not None:
            os.close(d.fd)
            d.fd = None


def place(source: Path, targets: list[Path]) -> None:
    """Put a checked file of this node's own at each target, atomically: a hard link where it can (no second
    copy of a big file), else a copy (worker thread)."""
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.parent / f".{target.name}.tmp.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            os.link(source, temp)
        except OSError:
            shutil.copyfile(source, temp)
        os.replace(temp, target)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# --- locations ------------------------------------------------------------------------------------


class LocationError(Exception):
    """A location that could not give one file, or gave a wrong one: the message says which and why."""


def read_location(location: str, rel: str, digest: bytes, dest: Path) -> None:
    """Copy `rel` of the record at `location` to `dest` (in a worker thread), checking its SHA-256 as it goes;
    LocationError if it cannot, or if the file is not the one asked for (`dest` is then removed)."""
    try:
        if "://" in location:
            url = location + "/" + urllib.parse.quote(rel)
            with _OPENER.open(url, timeout=LOCATION_TIMEOUT) as response:
                h = _copy(response, dest)
        else:
            path = Path(location) / rel
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise LocationError("not a regular file")
                h = _copy(f, dest)
    except LocationError:
        _unlink(dest)
        raise
    except urllib.error.HTTPError as e:
        _unlink(dest)
        raise LocationError(f"HTTP {e.code}") from None
    except (OSError, urllib.error.URLError, ValueError) as e:
        _unlink(dest)
        raise LocationError(str(getattr(e, "reason", None) or e)[:200]) from None
    if h.digest() != digest:
        _unlink(dest)
        raise LocationError("a file whose SHA-256 does not match the index")


def _copy(source, dest: Path) -> "hashlib._Hash":
    h, size = hashlib.sha256(), 0
    with open(dest, "wb") as out:
        while block := source.read(READ_BYTES):
            size += len(block)
            if size > MAX_FILE_BYTES:
                raise LocationError(f"more than {MAX_FILE_BYTES} bytes")
            h.update(block)
            out.write(block)
    return h


def copy_checked(source: Path, digest: bytes, dest: Path) -> bool:
    """Copy a file this node serves into `dest` if it still has the digest (worker thread)."""
    try:
        read_location(str(source.parent), source.name, digest, dest)
        return True
    except LocationError:
        return False


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, "redirect away from http(s)", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


# Only http(s): no file:, ftp: or data: handlers behind a location a peer named.
_OPENER = urllib.request.OpenerDirector()
for _handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(), urllib.request.HTTPSHandler(),
                 urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(), urllib.request.HTTPErrorProcessor()):
    _OPENER.add_handler(_handler)
