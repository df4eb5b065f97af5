"""The guardian node daemon: trio, websockets to the peers, a local control channel.

Structure (structured concurrency, one nursery):
  listener      serves peers that dial us (the peers with a lower roster sequence number)
  dial loops    one per peer with a higher sequence number: dial, serve, re-dial with capped
                exponential backoff and jitter (one connection per pair of guardians)
  connections   handshake, then three tasks: reader, outbox writer, heartbeat
  control       the Unix socket of `guardian status`
  signals       SIGINT / SIGTERM cancel everything and the node exits cleanly

Frames on an established link are sealed by SecureLink; inside, a frame is
msgpack [kind, payload] with kind "env" (a signed envelope), "sync" (which of
our messages the peer already has) or "hb" (heartbeat). Envelopes are checked by
the InboundFilter and committed to the inbox before anything uses them; what we
send is committed to the outbox first and streamed to each peer from there, so
a restart or reconnect resends exactly what a peer has not seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import signal
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import h11
import msgpack
import trio
import trio_websocket

from node.config import NodeConfig, Roster, RosterEntry
from node.crypto.errors import GuardianError, InputError
from node.identity import Identity, fingerprint
from node.protocol.decryption import MESSAGE_TYPES as DECRYPTION_TYPES
from node.protocol.envelope import NODE_SESSION, EnvelopeError, seal_envelope
from node.protocol.handshake import DIALER, LISTENER, Handshake, HandshakeError, LinkError, SecureLink
from node.protocol.inbound import Equivocation, InboundFilter
from node.storage.db import NodeDatabase

log = logging.getLogger("guardian.node")

HANDSHAKE_TIMEOUT = 10.0
SILENT_HEARTBEATS = 3
CONTROL_MAX_REQUEST = 1 << 20
NODE_MESSAGE_TYPES = frozenset({"note", "ceremony-propose", "ceremony-accept", "ceremony-reject", "decrypt-request",
                                "custody-step", "certificate-signature"})
MAX_WANTS_QUEUED = 64


@dataclass
class PeerState:
    entry: RosterEntry
    state: str = "disconnected"
    last_seen: float | None = None          # trio clock
    connected_since: float | None = None
    connections: int = 0
    dial_failures: int = 0
    last_error: str = ""
    cancel: trio.CancelScope | None = None
    connection: "Connection | None" = None     # the live link, while connected
    writer_cursor: int | None = None
    cursor_set: trio.Event = field(default_factory=trio.Event)


class Connection:
    """One authenticated link: sends are serialized so the sealing counter matches the wire order."""

    def __init__(self, ws, link: SecureLink) -> None:
        self.ws, self.link = ws, link
        self._lock = trio.Lock()
        # Record files a peer asked for: served by their own task, so the reader never waits on a send.
        self.wants_in, self.wants_out = trio.open_memory_channel(MAX_WANTS_QUEUED)

    async def send(self, kind: str, payload) -> None:
        frame = msgpack.packb([kind, payload], use_bin_type=True)
        async with self._lock:
            await self.ws.send_message(self.link.seal(frame))


class Node:
    def __init__(self, config: NodeConfig, roster: Roster, identity: Identity, db: NodeDatabase) -> None:
        me = roster.by_key(identity.public_key)
        if me is None:
            raise InputError(f"this node's key {identity.fingerprint} is not in the roster {config.roster_file}")
        self.config, self.roster, self.identity, self.db, self.me = config, roster, identity, db, me
        self.peers = {e.public_key: PeerState(e) for e in roster.entries if e.public_key != identity.public_key}
        # Decryption messages may reach us before the request that opens their session (it comes over
        # another link): they are kept, and replayed when the session starts.
        self.filter = InboundFilter(frozenset(e.public_key for e in roster.entries), identity.public_key,
                                    config.max_frame_bytes, {NODE_SESSION}, {NODE_SESSION: NODE_MESSAGE_TYPES},
                                    open_types=DECRYPTION_TYPES)
        self.filter.remember(db.inbox())
        self._outbox_changed = trio.Event()
        self.started = time.time()
        self.port: int | None = None
        from node.services.ceremonies import Ceremonies
        from node.services.custody import Custody
        from node.services.decryptions import Decryptions
        self.ceremonies = Ceremonies(self)
        self.decryptions = Decryptions(self)
        self.custody = Custody(self)

    # --- running ------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            server = await nursery.start(self._serve)
            self.port = server.port
            await nursery.start(self._serve_control)
            self._nursery = nursery
            self.ceremonies.restore(nursery)
            self.decryptions.restore(nursery)
            for peer in self.peers.values():
                if peer.entry.sequence > self.me.sequence:
                    nursery.start_soon(self._dial_loop, peer)
            self.db.audit("node started", {"fingerprint": self.identity.fingerprint, "port": self.port})
            log.info("node %s (guardian %d) listening on %s:%d", self.me.name, self.me.sequence,
                     self.config.listen_host, self.port)
            task_status.started(self)

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                self.db.audit("node stopped", {"signal": signal.Signals(signum).name})
                scope.cancel()
                return

    def _ssl_server(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        return context

    def _ssl_client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.config.tls_ca) if self.config.tls_ca else None)

    async def _serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await trio_websocket.serve_websocket(
            self._on_request, self.config.listen_host, self.config.listen_port, self._ssl_server(),
            max_message_size=2 * self.config.max_frame_bytes, task_status=task_status)

    async def _on_request(self, request) -> None:
        remote = f"{request.remote.address}:{request.remote.port}" if hasattr(request.remote, "address") \
            else str(request.remote)
        try:
            ws = await request.accept()
            await self._serve_connection(ws, LISTENER, remote, expected=None)
        except LINK_CLOSED:
            pass
        except Exception:
            log.exception("internal error serving %s; connection dropped", remote)

    async def _dial_loop(self, peer: PeerState) -> None:
        initial, maximum = self.config.redial_initial_seconds, self.config.redial_max_seconds
        delay = initial
        url = peer.entry.address
        context = self._ssl_client() if url.startswith("wss://") else None
        while True:
            started = trio.current_time()
            peer.state = "dialing"
            try:
                await self._dial_once(url, context, peer)
            except* DIAL_ERRORS as group:
                e = _first(group)
                peer.dial_failures += 1
                peer.last_error = f"{type(e).__name__}: {e}"[:200]
                log.debug("dial %s failed: %s", peer.entry.name, peer.last_error)
            except* Exception as group:
                peer.dial_failures += 1
                peer.last_error = f"internal error: {type(_first(group)).__name__}"
                log.error("internal error dialling %s", peer.entry.name, exc_info=_first(group))
            if peer.state != "connected":
                peer.state = "disconnected"
            if trio.current_time() - started > 4 * initial:
                delay = initial       # the link held for a while: start the backoff afresh
            await trio.sleep(min(delay, maximum) * random.uniform(0.5, 1.5))
            delay = min(delay * 2, maximum)

    async def _dial_once(self, url: str, context, peer: PeerState) -> None:
        async with trio.open_nursery() as link_nursery:
            # Our own deadline around the whole dial: a peer (or a middlebox) that accepts the TCP
            # connection and never answers the upgrade must not hold the dial loop forever.
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                ws = await trio_websocket.connect_websocket_url(
                    link_nursery, url, context, max_message_size=2 * self.config.max_frame_bytes)
            try:
                await self._serve_connection(ws, DIALER, url, expected=peer.entry.public_key)
            finally:
                await _close(ws)

    # --- one connection ---------------------------------------------------------------------------

    async def _serve_connection(self, ws, role: str, remote: str, expected: bytes | None) -> None:
        handshake = Handshake(self.identity.signing_key, role, lambda key: key in self.peers)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await ws.send_message(handshake.hello())
                while not handshake.done:
                    for frame in handshake.receive(await ws.get_message()):
                        await ws.send_message(frame)
            if expected is not None and handshake.peer_key != expected:
                raise HandshakeError("wrong peer", "the address answered with another guardian's key",
                                     handshake.peer_key)
        except HandshakeError as e:
            who = self._describe(e.peer_key, remote)
            self.db.refuse(who, e.reason, e.detail)
            log.warning("refused connection from %s: %s", who, e)
            if e.reason != "refused by peer":
                await _try_send(ws, handshake.refusal(e.reason))
            await ws.aclose()
            return
        except trio.TooSlowError:
            self.db.refuse(remote, "handshake timeout", f"no handshake within {HANDSHAKE_TIMEOUT} s")
            await ws.aclose()
            return
        except trio_websocket.ConnectionClosed:
            return
        peer = self.peers[handshake.peer_key]
        if peer.cancel is not None:
            peer.cancel.cancel()          # a newer link replaces the old one
        connection = Connection(ws, handshake.link)
        with trio.CancelScope() as scope:
            peer.cancel = scope
            peer.connection = connection
            peer.state, peer.connected_since = "connected", trio.current_time()
            peer.last_seen = trio.current_time()
            peer.connections += 1
            peer.cursor_set = trio.Event()
            self.db.audit("peer connected", {"peer": peer.entry.name, "role": role})
            self.decryptions.links_changed()
            log.info("connected to %s (%s)", peer.entry.name, role)
            try:
                async with trio.open_nursery() as nursery:
                    for task in (self._reader, self._writer, self._heartbeat, self._blob_server):
                        nursery.start_soon(_until_closed, scope, task, connection, peer, scope)
                    await _until_closed(scope, self._send_sync, connection, peer, scope)
            finally:
                if peer.cancel is scope:
                    peer.cancel = None
                    peer.connection = None
                    peer.state = "disconnected"
                    self.decryptions.links_changed()
                log.info("link to %s closed", peer.entry.name)
        await _close(ws)

    async def _send_sync(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        await connection.send("sync", {"since": self.db.highest_seq_from(peer.entry.public_key)})

    async def _reader(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        name = peer.entry.name
        while True:
            sealed = await connection.ws.get_message()
            try:
                frame = connection.link.open(sealed)
            except LinkError as e:
                self.db.refuse(name, "undecryptable", str(e))
                log.warning("closing link to %s: %s", name, e)
                scope.cancel()
                return
            peer.last_seen = trio.current_time()
            try:
                kind, payload = _link_frame(frame)
            except EnvelopeError as e:
                self._refuse(name, e)
                continue
            if kind == "hb":
                continue
            if kind == "want":
                try:
                    connection.wants_in.send_nowait(payload)
                except trio.WouldBlock:
                    pass              # asked too much at once: it asks again
                continue
            if kind == "blob":
                self.decryptions.on_blob(payload[0], payload[1])
                continue
            if kind == "sync":
                since = payload.get("since") if isinstance(payload, dict) else None
                if isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**63:
                    self._refuse(name, EnvelopeError("malformed", "sync without a valid 'since'"))
                    continue
                peer.writer_cursor = since
                peer.cursor_set.set()
                continue
            self.receive_envelope(payload, name, relayed=kind == "relay")

    def receive_envelope(self, frame: bytes, via: str, relayed: bool = False) -> None:
        """Check an envelope, commit it to the inbox, then act on it; the node never raises on input."""
        try:
            envelope = self.filter.check(frame)
        except Equivocation as e:
            # Signed twice with one sequence number: counted against the signer, and handed to its
            # session as evidence, whoever relayed it.
            signer = self.roster.by_key(e.envelope.sender)
            self._refuse(signer.name if signer else via, e)
            self._relay(e.envelope)
            self._act_on(e.envelope, via)
            return
        except EnvelopeError as e:
            if e.reason == "replay" and not relayed and self.db.mark_direct(hashlib.sha256(bytes(frame)).digest()):
                return      # first seen relayed, now from its sender: no fault, and its cursor may advance
            # A relayed copy we already have, or one for a ceremony we no longer follow, is no fault.
            if not (relayed and e.reason in ("replay", "own message", "unknown session")):
                self._refuse(via, e)
            return
        self.db.accept(envelope, via, direct=not relayed)
        sender = self.roster.by_key(envelope.sender)
        log.info("accepted %s seq %d from %s", envelope.type, envelope.seq, sender.name if sender else "?")
        self._act_on(envelope, via)

    def _act_on(self, envelope, via: str) -> None:
        sender = self.roster.by_key(envelope.sender)
        try:
            if envelope.session == NODE_SESSION:
                if envelope.type == "decrypt-request":
                    self.decryptions.on_request(envelope, sender.name)
                elif envelope.type in ("custody-step", "certificate-signature"):
                    self.custody.on_node_message(envelope, sender.name)
                elif envelope.type != "note":
                    self.ceremonies.on_node_message(envelope, sender.name)
            elif envelope.type in DECRYPTION_TYPES:
                self.decryptions.on_session_message(envelope)
            else:
                self._relay(envelope)
                self.ceremonies.on_session_message(envelope)
        except GuardianError as e:
            log.warning("message %s from %s not acted on: %s", envelope.type, via, e)

    def _relay(self, envelope) -> None:
        """Pass keys messages and share checks on to every peer, through the outbox (durable, in order),
        so a guardian showing different keys or complaints to different peers is caught by all
        (spec 3.2.2 step 1, the H_G echo; the check views signed into the results)."""
        if envelope.type in ("keys", "share-check") and envelope.sender != self.identity.public_key:
            if self.db.append_relay(envelope):
                self.outbox_changed()

    def _refuse(self, peer: str, error: EnvelopeError) -> None:
        self.db.refuse(peer, error.reason, error.detail)
        log.warning("refused a frame from %s: %s", peer, error)

    async def _writer(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        await peer.cursor_set.wait()
        cursor = peer.writer_cursor or 0
        while True:
            changed = self._outbox_changed
            own = self.identity.public_key
            for seq, envelope in self.db.outbox_for(peer.entry.public_key, cursor):
                # Another guardian's envelope in our outbox is a relay: its duplicates are no fault.
                await connection.send("env" if _signer(envelope) == own else "relay", envelope)
                cursor = seq
            await changed.wait()

    async def _blob_server(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        """Send the public record files a peer asked for, that this node has."""
        async for digests in connection.wants_out:
            for digest in digests:
                data = self.decryptions.blob(digest)
                if data is not None:
                    await connection.send("blob", [digest, data])

    async def want(self, peer: PeerState, digests: list[bytes]) -> None:
        """Ask a peer for record files by SHA-256 (it answers with those it has)."""
        connection = peer.connection
        if connection is None:
            return
        try:
            await connection.send("want", digests)
        except LINK_CLOSED:
            pass

    async def _heartbeat(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        interval = self.config.heartbeat_seconds
        while True:
            await connection.send("hb", None)
            await trio.sleep(interval)
            if peer.last_seen is not None and trio.current_time() - peer.last_seen > SILENT_HEARTBEATS * interval:
                log.warning("%s silent for %d heartbeats: closing the link", peer.entry.name, SILENT_HEARTBEATS)
                self.db.audit("peer silent", {"peer": peer.entry.name})
                scope.cancel()
                return

    # --- sending --------------------------------------------------------------------------------

    def send(self, type_: str, body, to: bytes | None = None, session: bytes = NODE_SESSION) -> int:
        """Sign, commit to the outbox, then wake the writers. Returns the sequence number."""
        if to is not None and to not in self.peers:
            raise InputError("the recipient is not a peer in the roster")
        seq = self.db.next_seq()
        envelope = seal_envelope(self.identity.signing_key, type_, session, seq, body)
        if len(envelope.encode()) > self.config.max_frame_bytes:
            raise InputError(f"message of {len(envelope.encode())} bytes exceeds max_frame_bytes")
        self.db.append_outbox(envelope, to)
        self.outbox_changed()
        return seq

    def outbox_changed(self) -> None:
        """Wake every link's writer: something new is committed to the outbox."""
        changed, self._outbox_changed = self._outbox_changed, trio.Event()
        changed.set()

    # --- the control channel ----------------------------------------------------------------------

    async def _serve_control(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        path = self.config.control_socket
        if len(str(path).encode()) > 100:
            raise InputError(f"control socket path too long for a Unix socket: {path}")
        if path.exists():
            path.unlink()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)    # the socket file is created owner-only
        try:
            await sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    conn, _ = await sock.accept()
                    nursery.start_soon(self._guarded_control_session, trio.SocketStream(conn))
        finally:
            sock.close()
            with _suppress():
                path.unlink()

    async def _guarded_control_session(self, stream: trio.SocketStream) -> None:
        """A control client can only ever cost its own session, never the node."""
        try:
            await self._control_session(stream)
        except Exception:
            log.exception("internal error on a control session")

    async def _control_session(self, stream: trio.SocketStream) -> None:
        async with stream:
            uid = _peer_uid(stream.socket)
            if uid is not None and uid != os.getuid():
                log.warning("control connection from uid %d refused", uid)
                return
            line = await read_line(stream, CONTROL_MAX_REQUEST)
            if line is None:
                return
            try:
                request = json.loads(line)
                response = {"ok": True, "result": self.control(request)}
            except (GuardianError, ValueError, KeyError, TypeError) as e:
                response = {"ok": False, "error": str(e)}
            try:
                await stream.send_all(json.dumps(response).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                log.info("a control client left before its answer")

    def control(self, request: dict):
        command = request.get("cmd")
        if command == "status":
            return self.status()
        if command == "send":
            to = request.get("to", "all")
            target = None
            if to != "all":
                entry = self.roster.by_name(to)
                if entry is None:
                    raise InputError(f"no guardian named {to!r} in the roster")
                target = entry.public_key
            return {"seq": self.send(str(request["type"]), request.get("body"), target)}
        if command == "ceremony-propose":
            return {"session": self.ceremonies.propose(request["election"])}
        if command == "ceremony-show":
            return self.ceremonies.show(request.get("session"))
        if command in ("ceremony-accept", "ceremony-reject"):
            self.ceremonies.vote(request.get("session"), command == "ceremony-accept", request.get("why", ""))
            return {"ok": True}
        if command == "ceremony-status":
            return self.ceremonies.status()
        if command == "decrypt-request":
            ballots = request.get("ballots") or None
            if ballots is not None and (not isinstance(ballots, list) or not all(isinstance(b, str) for b in ballots)):
                raise InputError("ballots must be a list of ballot ids")
            timeout = request.get("timeout")
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                        or not 1 <= timeout <= 86400):
                raise InputError("timeout must be between 1 and 86400 seconds")
            return {"session": self.decryptions.request(str(request["record"]), bool(request.get("compensated")),
                                                        ballots, timeout)}
        if command == "decrypt-status":
            return self.decryptions.status()
        if command == "backup-export":
            return self.custody.export(request.get("ceremony"), str(request["out"]), str(request["passphrase"]))
        if command == "backup-confirm":
            return self.custody.confirm(request.get("ceremony"), request.get("copies"))
        if command == "backup-verify":
            return self.custody.verify(request.get("ceremony"), str(request["file"]), str(request["passphrase"]))
        if command == "custody-status":
            return self.custody.status(request.get("ceremony"))
        if command == "certificate":
            return self.custody.show_certificate(request.get("ceremony"))
        if command == "inbox":
            result = []
            for e in self.db.inbox():
                sender = self.roster.by_key(e.sender)
                result.append({"from": sender.name if sender else fingerprint(e.sender), "seq": e.seq,
                               "type": e.type, "session": e.session.hex(), "body": _jsonable(e.body)})
            return result
        raise InputError(f"unknown control command {command!r}")

    def status(self) -> dict:
        now = trio.current_time()
        refusals = self.db.refusal_counts()
        peers = []
        for peer in sorted(self.peers.values(), key=lambda p: p.entry.sequence):
            peers.append({
                "sequence": peer.entry.sequence, "name": peer.entry.name,
                "fingerprint": peer.entry.fingerprint, "address": peer.entry.address, "state": peer.state,
                "last_seen_seconds_ago": None if peer.last_seen is None else round(now - peer.last_seen, 2),
                "connections": peer.connections, "dial_failures": peer.dial_failures,
                "last_error": peer.last_error, "refusals": refusals.pop(peer.entry.name, {}),
            })
        return {
            "name": self.me.name, "sequence": self.me.sequence, "guardians": len(self.roster),
            "fingerprint": self.identity.fingerprint, "listen": f"{self.config.listen_host}:{self.port}",
            "uptime_seconds": round(time.time() - self.started, 1), "peers": peers,
            "other_refusals": refusals,
            "sessions": [{"id": s.hex(), "kind": "node" if s == NODE_SESSION else
                          "decryption" if s in self.decryptions.sessions else "ceremony",
                          "phase": self.ceremonies.running[s].transcript.phase if s in self.ceremonies.running
                          else None} for s in sorted(self.filter.sessions)],
            **self.db.counts(),
        }

    def _describe(self, key: bytes | None, remote: str) -> str:
        if key is not None:
            peer = self.peers.get(key)
            return peer.entry.name if peer else f"{remote} key {fingerprint(key)}"
        return remote


LINK_CLOSED = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
DIAL_ERRORS = (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, trio_websocket.ConnectionRejected,
               trio_websocket.ConnectionTimeout, trio_websocket.DisconnectionTimeout, trio.BrokenResourceError,
               trio.TooSlowError, ssl.SSLError, h11.ProtocolError)


def _first(group: BaseException) -> BaseException:
    """The first leaf of an exception group (the one that ended the dial)."""
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


async def _until_closed(scope: trio.CancelScope, task, *args) -> None:
    """Run one task of a link; when the link closes under it, close the whole link, never the node."""
    try:
        await task(*args)
    except LINK_CLOSED:
        scope.cancel()
    except Exception:   # a bug must cost one link, not the node: log it and close the link
        log.exception("internal error on a link; closing it")
        scope.cancel()


def _signer(envelope: bytes) -> bytes | None:
    """The sender key of an encoded envelope from our own outbox (already well formed)."""
    try:
        return msgpack.unpackb(envelope, raw=False)[3]
    except Exception:
        return None


def _link_frame(frame: bytes) -> tuple[str, object]:
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True, ext_hook=_no_ext)
    except Exception:
        raise EnvelopeError("malformed", "link frame is not msgpack") from None
    if not isinstance(value, list) or len(value) != 2 or value[0] not in ("env", "relay", "sync", "hb", "want", "blob"):
        raise EnvelopeError("malformed", "unknown link frame")
    if value[0] in ("env", "relay") and not isinstance(value[1], bytes):
        raise EnvelopeError("malformed", "envelope frame without bytes")
    if value[0] == "want" and not (isinstance(value[1], list) and len(value[1]) <= 256 and
                                   all(isinstance(d, bytes) and len(d) == 32 for d in value[1])):
        raise EnvelopeError("malformed", "want frame must list at most 256 SHA-256 digests")
    if value[0] == "blob" and not (isinstance(value[1], list) and len(value[1]) == 2 and
                                   isinstance(value[1][0], bytes) and len(value[1][0]) == 32 and
                                   isinstance(value[1][1], bytes)):
        raise EnvelopeError("malformed", "blob frame must be [digest, bytes]")
    return value[0], value[1]


def _no_ext(code, data):
    raise ValueError("extension type")


def _jsonable(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _peer_uid(sock) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


async def _try_send(ws, frame: bytes) -> None:
    with trio.move_on_after(1):
        try:
            await ws.send_message(frame)
        except (trio_websocket.ConnectionClosed, trio.BrokenResourceError):
            pass


async def _close(ws) -> None:
    with trio.move_on_after(2) as scope:
        scope.shield = True
        try:
            await ws.aclose()
        except Exception:
            pass


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


async def read_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    """One newline-terminated line of the control protocol, or None if the stream ends or it grows past limit."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk or len(buffer) + len(chunk) > limit:
            return None
        buffer += chunk
    return buffer.split(b"\n", 1)[0]


async def control_request(socket_path: Path, request: dict, timeout: float = 10.0) -> dict:
    """Client side of the control channel, for `guardian status` and the tests."""
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_unix_socket(str(socket_path))
            async with stream:
                await stream.send_all(json.dumps(request).encode() + b"\n")
                line = await read_line(stream, 64 * CONTROL_MAX_REQUEST)
    except (OSError, trio.TooSlowError) as e:
        raise InputError(f"no node answers on {socket_path}: is `guardian run` running? "
                         f"({getattr(e, 'strerror', None) or type(e).__name__})") from None
    if line is None:
        raise InputError(f"the node on {socket_path} closed the control connection without an answer")
    response = json.loads(line)
    if not response.get("ok"):
        raise InputError(response.get("error", "the node refused the request"))
    return response["result"]
