"""The guardian node daemon: trio, websockets to the peers, a local control channel.

Structure (structured concurrency, one nursery):
  listener      serves peers that dial us (the peers with a lower roster sequence number)
  dial loops    one per peer with a higher sequence number: dial, serve, re-dial with capped
                exponential backoff and jitter (one connection per pair of guardians)
  prompts       at start, one call to each peer with a lower sequence number: after the handshake
                that peer closes it and dials us at once, instead of waiting out its backoff
  links         handshake, then four tasks: reader, outbox writer, heartbeat, record-file server (the
                ranges of record files a peer asked for, in chunks: node/protocol/link.py)
  control       the Unix socket of `guardian status` (node/daemon/control.py)
  signals       SIGINT / SIGTERM cancel everything and the node exits cleanly

Frames on a link are events (node/protocol/link.py). Envelopes are checked by the
InboundFilter and committed to the inbox before anything uses them; what we send is
committed to the outbox first and streamed to each peer from there, so a restart or
reconnect resends exactly what a peer has not seen.

The daemon knows the services (ceremonies, decryptions, custody) only through what they
registered (node/services/port.py): each gets a `NodePort`, and the daemon routes each
accepted envelope, control command and link event to the service that asked for it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import random
import signal
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import h11
import msgpack
import trio
import trio_websocket

from node.config import NodeConfig, Roster, RosterEntry
from node.crypto.errors import GuardianError, InputError
from node.daemon.control import serve_control
from node.daemon.metrics import NodeMetrics
from node.identity import Identity, fingerprint
from node.protocol import link as frames
from node.protocol.envelope import NODE_SESSION, Envelope, EnvelopeError, seal_envelope
from node.protocol.handshake import DIALER, LISTENER, Handshake, HandshakeError, LinkError
from node.protocol.inbound import Equivocation, InboundFilter
from node.protocol.quota import Limits, Quota
from node.protocol.waiting import SILENT_HEARTBEATS, LinkView
from node.record import layout
from node.services.port import Outgoing, Port, Service
from node.daemon import crash_points
from node.storage.db import DiskFull, NodeDatabase, StoreError

log = logging.getLogger("guardian.node")

HANDSHAKE_TIMEOUT = 10.0
MAX_WANTS_QUEUED = 64
# Connections not yet authenticated, in all and from one address: the excess is closed on accept, so
# silent or slow connections can never take the file descriptors the node needs for its own work.
MAX_UNAUTHENTICATED = 64
MAX_UNAUTHENTICATED_PER_ADDRESS = 16
REFUSAL_FLUSH_SECONDS = 1.0
MAX_OTHER_REFUSALS_SHOWN = 20
DISK_PROBE_SECONDS = 1.0


@dataclass
class PeerState:
    entry: RosterEntry
    dialing: bool = False                   # our dial loop is dialling it now
    last_seen: float | None = None          # trio clock
    connected_since: float | None = None
    connections: int = 0
    dial_failures: int = 0
    last_error: str = ""
    cancel: trio.CancelScope | None = None
    connection: "Connection | None" = None     # the live link, while connected
    writer_cursor: int | None = None
    cursor_set: trio.Event = field(default_factory=trio.Event)
    prompted: trio.Event = field(default_factory=trio.Event)   # set when the peer asks us to dial it now
    prompting: trio.CancelScope | None = None  # our start call to this peer, while under way

    @property
    def state(self) -> str:
        # From the live link, whoever dialled it; "dialing" only while no link is up.
        if self.connection is not None:
            return "connected"
        return "dialing" if self.dialing else "disconnected"


class Connection:
    """One authenticated link: sends are serialized so the sealing counter matches the wire order."""

    def __init__(self, ws, frames_: frames.LinkFrames, metrics: NodeMetrics) -> None:
        self.ws, self.frames, self.metrics = ws, frames_, metrics
        self._lock = trio.Lock()
        # Record files a peer asked for: served by their own task, so the reader never waits on a send.
        self.wants_in, self.wants_out = trio.open_memory_channel(MAX_WANTS_QUEUED)

    async def send(self, kind: str, payload) -> None:
        async with self._lock:
            await self.ws.send_message(self.frames.seal(kind, payload))
        self.metrics.frame_out(kind)


class _Gate:
    """Counts the connections that have not authenticated yet, in all and per remote address."""

    def __init__(self, total: int, per_address: int) -> None:
        self.total, self.per_address = total, per_address
        self._by_address: dict[str, int] = {}
        self._open: set[tuple] = set()

    def admit(self, peer: tuple) -> str | None:
        """None if the connection may proceed, else why it is refused."""
        address = peer[0]
        if len(self._open) >= self.total:
            return "too many unauthenticated connections"
        if self._by_address.get(address, 0) >= self.per_address:
            return "too many unauthenticated connections from this address"
        self._open.add(peer)
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def release(self, peer: tuple) -> None:
        if peer in self._open:
            self._open.remove(peer)
            left = self._by_address[peer[0]] - 1
            if left:
                self._by_address[peer[0]] = left
            else:
                del self._by_address[peer[0]]


class _GatedServer(trio_websocket.WebSocketServer):
    """The websocket server, giving a connection's place in the gate back when it ends."""

    def __init__(self, gate: _Gate, sockets: list, tls: bool, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gate, self._sockets, self._tls = gate, sockets, tls

    @property
    def listeners(self) -> list:
        # The listeners are wrapped (gate, TLS): say where they listen from the sockets underneath.
        return [trio_websocket.Endpoint(*s.getsockname()[:2], self._tls) for s in self._sockets]

    async def _handle_connection(self, stream) -> None:
        peer = _peer_of(getattr(stream, "transport_stream", stream))
        try:
            await super()._handle_connection(stream)
        finally:
            if peer is not None:
                self._gate.release(peer)


def _peer_of(stream) -> tuple | None:
    try:
        name = stream.socket.getpeername()
    except (OSError, AttributeError):
        return None
    return (name[0], name[1]) if isinstance(name, (tuple, list)) else None


class _GatedListener(trio.abc.Listener):
    """A TCP listener that closes at once each connection the gate does not admit, and counts it.

    Errors of accept itself (EMFILE and the like) pass through to trio.serve_listeners, which backs
    off and retries."""

    def __init__(self, listener: trio.SocketListener, gate: _Gate, refuse: Callable[[str, str, str], None]) -> None:
        self.listener, self.socket, self._gate, self._refuse = listener, listener.socket, gate, refuse

    async def accept(self) -> trio.SocketStream:
        while True:
            stream = await self.listener.accept()
            peer = _peer_of(stream)
            why = "no peer address" if peer is None else self._gate.admit(peer)
            if why is None:
                return stream
            await trio.aclose_forcefully(stream)
            self._refuse(str(peer[0]) if peer else "unknown address", "connection limit", why)

    async def aclose(self) -> None:
        await self.listener.aclose()


class _EveryFewSeconds(logging.Filter):
    """Lets one record through per interval: trio logs each EMFILE back-off of its accept loop."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self._last = seconds, float("-inf")

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < self.seconds:
            return False
        self._last = now
        record.exc_info, record.exc_text = None, None    # the errno says it all; no traceback each time
        return True


logging.getLogger("trio.serve_listeners").addFilter(_EveryFewSeconds(5.0))


class Node:
    def __init__(self, config: NodeConfig, roster: Roster, identity: Identity, db: NodeDatabase) -> None:
        me = roster.by_key(identity.public_key)
        if me is None:
            raise InputError(f"this node's key {identity.fingerprint} is not in the roster {config.roster_file}")
        self.config, self.roster, self.identity, self.db, self.me = config, roster, identity, db, me
        self.peers = {e.public_key: PeerState(e) for e in roster.entries if e.public_key != identity.public_key}
        self.filter = InboundFilter(frozenset(e.public_key for e in roster.entries), identity.public_key,
                                    config.max_frame_bytes, {NODE_SESSION}, {NODE_SESSION: frozenset({"note"})})
        self.filter.remember(db.inbox())
        self.quota = Quota(Limits(config.peer_burst_bytes, config.peer_bytes_per_second, config.peer_burst_messages,
                                  config.peer_messages_per_second, config.peer_open_sessions))
        self.services: list[Service] = []
        self._checked_files: dict[Path, tuple] = {}     # record file -> (size, mtime, inode, digest) it had
        self._node_types: dict[str, Service] = {}
        self._session_owner: dict[bytes, Service] = {}
        self._commands: dict[str, Callable[[dict], Any]] = {"status": lambda r: self.status(),
                                                            "send": self._control_send, "inbox": self._control_inbox}
        # Commands that write nothing answer while the disk is full; every other one is new work, refused.
        self._read_only = {"status", "inbox"}
        self._outbox_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.started = time.time()
        self.port: int | None = None
        self._gate = _Gate(MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED_PER_ADDRESS)
        # HTTP servers at the edge (the guardian's page, the metrics): name -> start function, started
        # in the node's nursery once the services run; `serving` holds the address each is bound to.
        self.servers: dict[str, Callable[..., Any]] = {}
        self.serving: dict[str, str] = {}
        self.disk_full: str | None = None        # the one line saying so, while the disk is full
        self._space_back = trio.Event()
        self.fatal: str | None = None            # why the node stopped itself
        self.metrics = NodeMetrics(self)

    # --- services ---------------------------------------------------------------------------------

    def port_for(self, name: str) -> "NodePort":
        """The port a service gets: what it may ask of this node."""
        return NodePort(self, name)

    def register(self, service: Service) -> None:
        """Route the service's message types, open types and control commands to it."""
        for type_ in service.node_types:
            if type_ in self._node_types:
                raise ValueError(f"message type {type_!r} registered twice")
            self._node_types[type_] = service
        self.filter.accepted_types[NODE_SESSION] = self.filter.accepted_types[NODE_SESSION] | service.node_types
        self.filter.open_types = self.filter.open_types | service.open_types
        for command, handler in service.commands().items():
            if command in self._commands:
                raise ValueError(f"control command {command!r} registered twice")
            self._commands[command] = handler
        self._read_only |= service.read_only
        self.services.append(service)

    def _accept_session(self, service: Service, session: bytes, types: frozenset[str]) -> None:
        self.filter.sessions.add(session)
        self.filter.accepted_types[session] = types
        self._session_owner[session] = service

    def _owner(self, envelope: Envelope) -> Service | None:
        owner = self._session_owner.get(envelope.session)
        if owner is None:
            owner = next((s for s in self.services if envelope.type in s.open_types), None)
        return owner

    # --- running ------------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; a reason to stop (a store behind its peers, a disk full under a service)
        comes out as one StoreError."""
        await self._run(task_status)
        if self.fatal is not None:
            raise StoreError(self.fatal)

    def stop(self, why: str) -> None:
        """Stop the whole node, saying why in one line: it cannot go on without doing harm."""
        if self.fatal is None:
            self.fatal = why
            log.error("stopping: %s", why)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _run(self, task_status) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_signals, nursery.cancel_scope)
            nursery.start_soon(self._flush_refusals)
            server = await nursery.start(self._serve)
            self.port = server.port
            await nursery.start(serve_control, self.config.control_socket, self.control)
            self._nursery = nursery
            for service in self.services:
                service.start()
            self._replay_unapplied()
            for name, start in self.servers.items():
                self.serving[name] = await nursery.start(start)
            for peer in self.peers.values():
                if self._dials(peer):
                    nursery.start_soon(self._dial_loop, peer)
                else:
                    nursery.start_soon(self._prompt, peer)
            self.db.audit("node started", {"fingerprint": self.identity.fingerprint, "port": self.port})
            log.info("node %s (guardian %d) listening on %s:%d", self.me.name, self.me.sequence,
                     self.config.listen_host, self.port)
            task_status.started(self)

    def _replay_unapplied(self) -> None:
        """Act on what was accepted but not acted on before the last stop (a kill between the inbox
        commit and its service's own): accepted means applied, whenever the kill came."""
        for envelope in self.db.unapplied(self.config.max_frame_bytes):
            sender = self.roster.by_key(envelope.sender)
            log.info("acting on %s seq %d from %s, accepted before the last stop", envelope.type, envelope.seq,
                     sender.name if sender else "?")
            self._apply(envelope, "the inbox")

    async def _flush_refusals(self) -> None:
        """Refusals beyond the first of their kind are counted in memory, applied marks wait for the next
        transaction: write them now and then."""
        try:
            while True:
                await trio.sleep(REFUSAL_FLUSH_SECONDS)
                self._bookkeeping(self.db.flush_refusals)
                self._bookkeeping(self.db.flush_applied)
        finally:
            self._bookkeeping(self.db.flush_refusals)

    def _bookkeeping(self, write: Callable[[], Any]) -> None:
        """A write the node can go without for a while (audit of a connection, refusal counts): a full
        disk puts the node in its disk-full state instead of failing what it was doing."""
        try:
            write()
        except DiskFull as e:
            self._on_disk_full(e)

    def _on_disk_full(self, error: DiskFull) -> None:
        if self.disk_full is None:
            self.disk_full = str(error)
            self._space_back = trio.Event()
            log.error("%s", error)
            if self._nursery is not None:
                self._nursery.start_soon(self._watch_space)

    async def _watch_space(self) -> None:
        """While the disk is full, try a small write now and then; when it goes through, go on."""
        while True:
            await trio.sleep(DISK_PROBE_SECONDS)
            try:
                self.db.audit("disk space returned", {})
            except DiskFull:
                continue
            log.info("disk space returned: taking work again")
            self.disk_full = None
            self._space_back.set()
            return

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("stopping on %s", signal.Signals(signum).name)
                self._bookkeeping(lambda: self.db.audit("node stopped", {"signal": signal.Signals(signum).name}))
                scope.cancel()
                return

    def _ssl_server(self) -> ssl.SSLContext | None:
        if self.config.tls_cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
        except (OSError, ssl.SSLError) as e:
            raise InputError(f"{self.config.path} [tls]: cannot load the certificate {self.config.tls_cert} "
                             f"and key {self.config.tls_key}: {getattr(e, 'strerror', None) or e}") from None
        return context

    def _ssl_client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.config.tls_ca) if self.config.tls_ca else None)

    async def _serve(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        host, port = self.config.listen_host, self.config.listen_port
        context = self._ssl_server()
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as e:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            if e.errno == errno.EADDRINUSE:
                raise InputError(f"cannot listen on {where}: the address is in use by another process "
                                 f"(stop it, or change [node] listen in {self.config.path})") from None
            raise InputError(f"cannot listen on {where}: {e.strerror or e}") from None
        sockets = [listener.socket for listener in listeners]
        listeners = [_GatedListener(listener, self._gate, self.refuse) for listener in listeners]
        if context is not None:
            listeners = [trio.SSLListener(listener, context, https_compatible=True) for listener in listeners]
        # A connection that never sends its upgrade request is dropped after the handshake timeout.
        server = _GatedServer(self._gate, sockets, context is not None, self._on_request, listeners,
                              max_message_size=2 * self.config.max_frame_bytes,
                              connect_timeout=HANDSHAKE_TIMEOUT, disconnect_timeout=HANDSHAKE_TIMEOUT)
        await server.run(task_status=task_status)

    async def _on_request(self, request) -> None:
        if hasattr(request.remote, "address"):
            address, remote = str(request.remote.address), f"{request.remote.address}:{request.remote.port}"
            peer = (request.remote.address, request.remote.port)
        else:
            address = remote = str(request.remote)
            peer = None
        try:
            ws = await request.accept()
            await self._serve_connection(ws, LISTENER, remote, expected=None, address=address,
                                         authenticated=lambda: peer is not None and self._gate.release(peer))
        except LINK_CLOSED:
            pass
        except Exception:
            log.exception("internal error serving %s; connection dropped", remote)

    def _dials(self, peer: PeerState) -> bool:
        """Of each pair of guardians, the one with the lower sequence number dials and keeps the link."""
        return peer.entry.sequence > self.me.sequence

    async def _dial_loop(self, peer: PeerState) -> None:
        initial, maximum = self.config.redial_initial_seconds, self.config.redial_max_seconds
        delay = initial
        url = peer.entry.address
        context = self._ssl_client() if url.startswith("wss://") else None
        while True:
            started = trio.current_time()
            peer.dialing = True
            peer.prompted = trio.Event()
            self.metrics.dial(peer.entry.name)
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
            finally:
                peer.dialing = False
            if trio.current_time() - started > 4 * initial:
                delay = initial       # the link held for a while: start the backoff afresh
            # The peer calling us (it has just started) ends the wait: it is there now.
            with trio.move_on_after(min(delay, maximum) * random.uniform(0.5, 1.5)):
                await peer.prompted.wait()
            if peer.prompted.is_set():
                delay = initial
            else:
                delay = min(delay * 2, maximum)

    async def _prompt(self, peer: PeerState) -> None:
        """Call a peer that dials us, once, so that it dials now rather than when its backoff ends."""
        url = peer.entry.address
        try:
            with trio.CancelScope() as peer.prompting:
                if peer.connection is None:        # it dialled us first: nothing to prompt
                    await self._dial_once(url, self._ssl_client() if url.startswith("wss://") else None, peer)
            peer.prompting = None
        except* DIAL_ERRORS as group:
            log.debug("%s not reached at start (it dials us when it starts): %s", peer.entry.name, _first(group))
        except* Exception as group:
            log.error("internal error calling %s", peer.entry.name, exc_info=_first(group))

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

    async def _serve_connection(self, ws, role: str, remote: str, expected: bytes | None,
                                address: str | None = None, authenticated: Callable[[], Any] = lambda: None) -> None:
        """`remote` names the connection in logs; `address` (default: remote) is whom a refusal is counted
        against before the peer's key is proven."""
        address = address or remote
        arrived = trio.current_time()
        handshake = Handshake(self.identity.signing_key, role, lambda key: key in self.peers)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT):
                await ws.send_message(handshake.hello())
                while not handshake.done:
                    for frame in handshake.receive(await ws.get_message()):
                        await ws.send_message(frame)
            if expected is not None and handshake.peer_key != expected:
                raise HandshakeError("wrong peer", "the address answered with another guardian's key",
                                     handshake.peer_key, key_verified=True)
        except HandshakeError as e:
            who = self._describe(e.peer_key if e.key_verified else None, address)
            claimed = "" if e.key_verified or e.peer_key is None else f" (presenting key {fingerprint(e.peer_key)})"
            self.refuse(who, e.reason, e.detail + claimed, f"refused connection from {remote}{claimed}: {e}")
            if e.reason != "refused by peer":
                await _try_send(ws, handshake.refusal(e.reason))
            await ws.aclose()
            return
        except trio.TooSlowError:
            self.refuse(address, "handshake timeout", f"no handshake within {HANDSHAKE_TIMEOUT} s")
            await ws.aclose()
            return
        except trio_websocket.ConnectionClosed:
            return
        authenticated()          # its key is proven: it no longer counts against unauthenticated limits
        peer = self.peers[handshake.peer_key]
        if (role == DIALER) != self._dials(peer):
            await self._on_prompt(ws, role, peer, arrived)
            return
        if peer.cancel is not None:
            peer.cancel.cancel()          # a newer link replaces the old one
        if peer.prompting is not None:
            # It dialled us while our start call was on its way: the call would make it drop this link,
            # which is already of our run.
            peer.prompting.cancel()
        connection = Connection(ws, frames.LinkFrames(handshake.link, frames.chunk_bytes(self.config.max_frame_bytes)),
                                self.metrics)
        with trio.CancelScope() as scope:
            peer.cancel = scope
            peer.connection = connection
            peer.connected_since = trio.current_time()
            peer.last_seen = trio.current_time()
            peer.connections += 1
            peer.cursor_set = trio.Event()
            self._bookkeeping(lambda: self.db.audit("peer connected", {"peer": peer.entry.name, "role": role}))
            self._links_changed()
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
                    self._links_changed()
                log.info("link to %s closed", peer.entry.name)
        await _close(ws)

    async def _on_prompt(self, ws, role: str, peer: PeerState, arrived: float) -> None:
        """An authenticated connection against the rule of who dials: a prompt, never a link.

        The peer that dials us gets the close at once and dials now; a link of ours that is older
        than the prompt belongs to the peer's previous run and is replaced. The side that prompted
        waits for that close, so the peer has seen the whole handshake.
        """
        if role == LISTENER:
            log.info("%s has started: dialling it now", peer.entry.name)
            if peer.cancel is not None and peer.connected_since is not None and peer.connected_since < arrived:
                peer.cancel.cancel()
            peer.prompted.set()
        else:
            with trio.move_on_after(HANDSHAKE_TIMEOUT):
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    pass
        await _close(ws)

    def _links_changed(self) -> None:
        for service in self.services:
            service.links_changed()

    async def _send_sync(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        await connection.send("sync", {"since": self.db.highest_seq_from(peer.entry.public_key)})

    async def _reader(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        name = peer.entry.name
        while True:
            sealed = await connection.ws.get_message()
            try:
                event = connection.frames.open(sealed)
            except LinkError as e:
                self.refuse(name, "undecryptable", str(e), f"closing link to {name}: {e}")
                scope.cancel()
                return
            except EnvelopeError as e:
                peer.last_seen = trio.current_time()
                self._refuse(name, e)
                continue
            peer.last_seen = trio.current_time()
            self.metrics.frame_in(event)
            if isinstance(event, frames.EnvelopeFrame):
                while True:
                    try:
                        self.receive_envelope(event.data, name, relayed=event.relayed)
                        break
                    except DiskFull as e:
                        # Nothing of it was taken: wait for space and take it then (or, if the link
                        # drops meanwhile, when the peer sends it again from our cursor).
                        self._on_disk_full(e)
                        await self._space_back.wait()
            elif isinstance(event, frames.Sync):
                own = self.db.highest_own_seq()
                if event.since > own:
                    # The peer holds a message of ours this database has no trace of: it lost commits
                    # (a damaged or truncated file, an old copy). Numbering on from here would sign new
                    # content under numbers the peers already hold: stop instead.
                    self.stop(f"the node database {self.db.path} is behind its peers: {name} holds this node's "
                              f"message {event.since}, the database ends at {own} (damaged, truncated or an old "
                              f"copy); restore the node from its key backup (`guardian restore`)")
                    return
                peer.writer_cursor = event.since
                peer.cursor_set.set()
            elif isinstance(event, frames.Want):
                try:
                    connection.wants_in.send_nowait(event.ranges)
                except trio.WouldBlock:
                    pass              # asked too much at once: it asks again
            elif isinstance(event, frames.Blob):
                for service in self.services:
                    service.on_blob(peer.entry.sequence, event)
                crash_points.reached("blob-in", "end" if event.offset + len(event.data) == event.total else "part")
            elif isinstance(event, frames.Lack):
                for service in self.services:
                    service.on_lack(peer.entry.sequence, list(event.digests))

    def receive_envelope(self, frame: bytes, via: str, relayed: bool = False) -> None:
        """Check an envelope, commit it to the inbox, then act on it; the node never raises on input.

        Raises DiskFull when the inbox commit fails for space: then nothing of the envelope was taken
        (not even its seen-mark), so it is taken when it comes again."""
        try:
            envelope = self.filter.check(frame)
        except Equivocation as e:
            # Signed twice with one sequence number: counted against the signer, and handed to its
            # session as evidence, whoever relayed it.
            signer = self.roster.by_key(e.envelope.sender)
            self._refuse(signer.name if signer else via, e)
            self._act_on(e.envelope, via)
            return
        except EnvelopeError as e:
            if e.reason == "replay" and not relayed and self.db.mark_direct(hashlib.sha256(bytes(frame)).digest()):
                return      # first seen relayed, now from its sender: no fault, and its cursor may advance
            # A relayed copy we already have, or one for a session we no longer follow, is no fault.
            if not (relayed and e.reason in ("replay", "own message", "unknown session")):
                self._refuse(via, e)
            return
        if self._over_quota(envelope, len(frame)):
            return
        # A session's messages are applied by replaying its log at start; a node-session message is
        # replayed until marked applied.
        self.db.accept(envelope, via, direct=not relayed, applied=envelope.session != NODE_SESSION)
        self.filter.mark(envelope)
        self.metrics.envelope_in(envelope)
        crash_points.reached("inbox", envelope.type)
        sender = self.roster.by_key(envelope.sender)
        log.info("accepted %s seq %d from %s", envelope.type, envelope.seq, sender.name if sender else "?")
        self._apply(envelope, via)

    def _apply(self, envelope: Envelope, via: str) -> None:
        if self._act_on(envelope, via) and envelope.session == NODE_SESSION:
            crash_points.reached("applied", envelope.type)
            self.db.mark_applied(envelope.digest)

    def _act_on(self, envelope: Envelope, via: str) -> bool:
        """Hand an envelope to its service. False when the service could not store what it did."""
        sender = self.roster.by_key(envelope.sender)
        try:
            if envelope.session == NODE_SESSION:
                service = self._node_types.get(envelope.type)
                if service is not None:
                    service.on_node_message(envelope, sender.name)
            else:
                owner = self._owner(envelope)
                if owner is not None:
                    owner.on_session_message(envelope)
        except StoreError as e:
            # The service may hold in memory what it failed to store: stop, and let the restart replay
            # it from what is stored (nothing accepted is lost; it stays unapplied).
            self.stop(str(e))
            return False
        except GuardianError as e:
            log.warning("message %s from %s not acted on: %s", envelope.type, via, e)
        return True

    def _over_quota(self, envelope: Envelope, size: int) -> bool:
        """Charge an envelope to its signer's quota (node/protocol/quota.py); if over it, count the refusal
        against the signer; the envelope is not marked seen, so it is taken if it comes again within the quota."""
        why = self.quota.admit(envelope.sender, envelope.session, size, trio.current_time(),
                               self.filter.sessions.__contains__)
        if why is None:
            return False
        self.refuse(self.roster.by_key(envelope.sender).name, "quota", why)
        return True

    def _refuse(self, peer: str, error: EnvelopeError) -> None:
        self.refuse(peer, error.reason, error.detail, f"refused a frame from {peer}: {error}")

    def refuse(self, who: str, reason: str, detail: str, message: str | None = None) -> None:
        """Count a refusal against `who`; logged only when the database reports it (once a minute per
        who and reason), so a flood does not fill the log."""
        try:
            reported = self.db.refuse(who, reason, detail)
        except DiskFull as e:
            self._on_disk_full(e)
            return
        if reported:
            log.warning("%s (more of the same are counted, not logged, for a minute)",
                        message or f"refused {who}: {reason}: {detail}")

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
        """Send the ranges of public record files a peer asked for, chunk by chunk, each read from disk at
        its offset (no whole file in memory); a `lack` for those this node does not have."""
        chunk = frames.chunk_bytes(self.config.max_frame_bytes)
        async for ranges in connection.wants_out:
            lacking: list[bytes] = []
            for r in ranges:
                found = await self._record_file(r.digest)
                if found is None:
                    if r.digest not in lacking:
                        lacking.append(r.digest)
                    continue
                path, size = found
                if r.offset >= size:
                    await connection.send("blob", [r.digest, size, size, b""])      # the file ends here
                    continue
                offset, end = r.offset, min(r.offset + r.length, size)
                while offset < end:
                    data = await trio.to_thread.run_sync(_read_at, path, offset, min(chunk, end - offset))
                    if not data:
                        break         # shorter than when it was checked: the peer's SHA-256 check refuses it
                    await connection.send("blob", [r.digest, offset, size, data])
                    offset += len(data)
                    crash_points.reached("blob-out", "end" if offset == size else "part")
            if lacking:
                await connection.send("lack", lacking)

    async def _record_file(self, digest: bytes) -> tuple[Path, int] | None:
        """The file a service serves for this SHA-256 and its size, if it still has that digest: checked
        once (in a worker thread) and again whenever its size, mtime or inode changes."""
        path = next((p for p in (s.blob(digest) for s in self.services) if p is not None), None)
        if path is None:
            return None
        try:
            st = await trio.to_thread.run_sync(os.stat, path)
        except OSError:
            return None
        key = (st.st_size, st.st_mtime_ns, st.st_ino, digest)
        if self._checked_files.get(path) != key:
            if not await trio.to_thread.run_sync(_has_digest, path, digest):
                return None
            self._checked_files[path] = key
        return path, st.st_size

    async def want(self, sequence: int, ranges: list[list]) -> None:
        """Ask a peer for ranges [digest, offset, length] of record files (it sends those it has)."""
        peer = next((p for p in self.peers.values() if p.entry.sequence == sequence), None)
        connection = peer.connection if peer is not None else None
        if connection is None:
            return
        try:
            await connection.send("want", ranges)
        except LINK_CLOSED:
            pass

    async def _heartbeat(self, connection: Connection, peer: PeerState, scope: trio.CancelScope) -> None:
        interval = self.config.heartbeat_seconds
        while True:
            await connection.send("hb", None)
            await trio.sleep(interval)
            if peer.last_seen is not None and trio.current_time() - peer.last_seen > SILENT_HEARTBEATS * interval:
                log.warning("%s silent for %d heartbeats: closing the link", peer.entry.name, SILENT_HEARTBEATS)
                self._bookkeeping(lambda: self.db.audit("peer silent", {"peer": peer.entry.name}))
                scope.cancel()
                return

    # --- sending --------------------------------------------------------------------------------

    def send(self, type_: str, body, to: bytes | None = None, session: bytes = NODE_SESSION) -> int:
        """Sign, commit to the outbox, then wake the writers. Returns the sequence number."""
        if to is not None and to not in self.peers:
            raise InputError("the recipient is not a peer in the roster")
        envelope = self._seal([(type_, body)], session)[0]
        self.db.append_outbox(envelope, to)
        self.metrics.envelopes_out([envelope])
        self._wake_writers()
        return envelope.seq

    def commit_and_send(self, session: bytes, sends: Sequence[Outgoing], sealed_state: bytes) -> list[Envelope]:
        """Sign the messages, commit them with the sealed state they depend on (one transaction), send."""
        envelopes = self._seal([(s.type, s.body) for s in sends], session)
        self.db.append_outbox_with_state(envelopes, session, sealed_state)
        self.metrics.envelopes_out(envelopes)
        self._wake_writers()
        return envelopes

    def relay(self, envelope: Envelope) -> None:
        if envelope.sender != self.identity.public_key and self.db.append_relay(envelope):
            self._wake_writers()

    def _seal(self, messages: list[tuple[str, Any]], session: bytes) -> list[Envelope]:
        seq = self.db.next_seq()
        envelopes = [seal_envelope(self.identity.signing_key, t, session, seq + i, b)
                     for i, (t, b) in enumerate(messages)]
        for envelope in envelopes:
            size = len(envelope.encode())
            if size > self.config.max_frame_bytes:
                raise InputError(f"a {envelope.type} message of {size} bytes exceeds max_frame_bytes "
                                 f"({self.config.max_frame_bytes}); raise it on every node")
        return envelopes

    def _wake_writers(self) -> None:
        """Wake every link's writer: something new is committed to the outbox."""
        changed, self._outbox_changed = self._outbox_changed, trio.Event()
        changed.set()

    def links(self) -> dict[int, LinkView]:
        links = {self.me.sequence: LinkView(connected=True, last_seen=trio.current_time())}
        for p in self.peers.values():
            links[p.entry.sequence] = LinkView(connected=p.connection is not None, last_seen=p.last_seen)
        return links

    # --- the control channel ----------------------------------------------------------------------

    def control(self, request: dict):
        command = request.get("cmd")
        handler = self._commands.get(command) if isinstance(command, str) else None
        if handler is None:
            raise InputError(f"unknown control command {command!r}")
        if self.disk_full is not None and command not in self._read_only:
            raise DiskFull(self.disk_full)
        return handler(request)

    def _control_send(self, request: dict) -> dict:
        to = request.get("to", "all")
        target = None
        if to != "all":
            entry = self.roster.by_name(to)
            if entry is None:
                raise InputError(f"no guardian named {to!r} in the roster")
            target = entry.public_key
        return {"seq": self.send(str(request["type"]), request.get("body"), target)}

    def _control_inbox(self, request: dict) -> list[dict]:
        result = []
        for e in self.db.inbox():
            sender = self.roster.by_key(e.sender)
            result.append({"from": sender.name if sender else fingerprint(e.sender), "seq": e.seq,
                           "type": e.type, "session": e.session.hex(), "body": _jsonable(e.body)})
        return result

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
            "uptime_seconds": round(time.time() - self.started, 1), "serving": dict(self.serving),
            "disk_full": self.disk_full, "peers": peers,
            "other_refusals": _bounded(refusals, MAX_OTHER_REFUSALS_SHOWN),
            "sessions": [self._session_status(s) for s in sorted(self.filter.sessions)],
            **self.db.counts(),
        }

    def _session_status(self, session: bytes) -> dict:
        kind, phase = "node", None
        if session != NODE_SESSION:
            owner = self._session_owner.get(session)
            kind, phase = (owner.session_kind(session) if owner is not None else None) or ("unknown", None)
        return {"id": session.hex(), "kind": kind, "phase": phase}

    def _describe(self, key: bytes | None, remote: str) -> str:
        if key is not None:
            peer = self.peers.get(key)
            return peer.entry.name if peer else f"{remote} key {fingerprint(key)}"
        return remote


class NodePort(Port):
    """The port of one service on this node (node/services/port.py says what each call promises)."""

    def __init__(self, node: Node, name: str) -> None:
        self._node, self.name = node, name
        self.config, self.roster, self.me = node.config, node.roster, node.me
        self.identity, self.db = node.identity, node.db
        self.service: Service | None = None

    def bind(self, service: Service) -> None:
        self.service = service
        self._node.register(service)

    def send(self, type_: str, body: Any, to: bytes | None = None, session: bytes = NODE_SESSION) -> int:
        return self._node.send(type_, body, to, session)

    def commit_and_send(self, session: bytes, sends: Sequence[Outgoing], sealed_state: bytes) -> list[Envelope]:
        return self._node.commit_and_send(session, sends, sealed_state)

    def relay(self, envelope: Envelope) -> None:
        self._node.relay(envelope)

    def accept_session(self, session: bytes, types: frozenset[str]) -> None:
        assert self.service is not None, "bind the service to its port first"
        self._node._accept_session(self.service, session, types)

    def links(self) -> dict[int, LinkView]:
        return self._node.links()

    async def want(self, sequence: int, ranges: list[list]) -> None:
        await self._node.want(sequence, ranges)

    def start_task(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._node._nursery is not None, "tasks start once the node runs"
        self._node._nursery.start_soon(fn, *args)

    def now(self) -> float:
        return trio.current_time()


LINK_CLOSED = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)
DIAL_ERRORS = (OSError, trio_websocket.HandshakeError, trio_websocket.ConnectionClosed, trio_websocket.ConnectionRejected,
               trio_websocket.ConnectionTimeout, trio_websocket.DisconnectionTimeout, trio.BrokenResourceError,
               trio.TooSlowError, ssl.SSLError, h11.ProtocolError)


def _bounded(refusals: dict[str, dict[str, int]], most: int) -> dict[str, dict[str, int]]:
    """The `most` addresses refused most often; the rest summed under one line, so status stays short."""
    ranked = sorted(refusals.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    shown = dict(ranked[:most])
    rest = ranked[most:]
    if rest:
        summed: dict[str, int] = {}
        for _, reasons in rest:
            for reason, count in reasons.items():
                summed[reason] = summed.get(reason, 0) + count
        shown[f"{len(rest)} other addresses"] = summed
    return shown


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


def _jsonable(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        return os.pread(f.fileno(), size, offset)


def _has_digest(path: Path, digest: bytes) -> bool:
    try:
        return layout.file_hasher(path).digest() == digest
    except OSError:
        return False


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
