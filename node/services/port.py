"""The port: everything a service may ask of the node it runs in, and what a service offers back.

A service (ceremonies, decryptions, custody) holds the election logic of one part of a guardian's
work; the daemon holds the links, the listener and the control socket. They meet only here:
  - the daemon gives each service a `Port` (the node's identity, roster, config and database,
    sending, commit-then-send, the sessions it accepts, the links, record files, tasks, the clock);
  - each service is a `Service`: the message types it handles, its control commands, its hooks.
No service imports the daemon, and the daemon knows services only through what they registered
(node/app.py wires the two together).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

from node.config import NodeConfig, Roster, RosterEntry
from node.identity import Identity
from node.protocol.envelope import NODE_SESSION, Envelope
from node.protocol.link import Blob
from node.protocol.waiting import LinkView
from node.storage.db import NodeDatabase


class Outgoing(Protocol):
    """A message a state machine wants sent in its session: the machines' `Send`."""
    type: str
    body: Any


class Port(Protocol):
    config: NodeConfig
    roster: Roster
    me: RosterEntry
    identity: Identity
    db: NodeDatabase

    def send(self, type_: str, body: Any, to: bytes | None = None, session: bytes = NODE_SESSION) -> int:
        """Sign, commit to the outbox, wake the links; to one peer (its key) or to all. The sequence number."""

    def commit_and_send(self, session: bytes, sends: Sequence[Outgoing], sealed_state: bytes) -> list[Envelope]:
        """Sign `sends`, and commit them with the sealed state they depend on in one transaction, then
        wake the links. After a crash either both are stored or neither: no secret drawn for a message
        is ever lost while the message is out, nor a message sent whose secret was not kept."""

    def relay(self, envelope: Envelope) -> None:
        """Pass a peer's envelope on to every other peer, through the outbox (durable, in order)."""

    def accept_session(self, session: bytes, types: frozenset[str]) -> None:
        """Accept these message types of this session from now on; they are routed to this service."""

    def links(self) -> Mapping[int, LinkView]:
        """Every guardian by sequence number: linked now, and when last heard (node clock). Self included."""

    async def want(self, sequence: int, ranges: list[list]) -> None:
        """Ask one peer for ranges [digest, offset, length] of record files by SHA-256; it answers with chunks
        of those it has (Service.on_blob) and names those it lacks (Service.on_lack)."""

    def start_task(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `await fn(*args)` in the node's nursery, for as long as the node runs."""

    def now(self) -> float:
        """The node's clock (seconds, monotonic): every deadline a service keeps is on it."""


class Service:
    """What a service registers with the daemon. Every hook has a do-nothing default."""

    name = "service"
    node_types: frozenset[str] = frozenset()      # node-session message types it handles
    open_types: frozenset[str] = frozenset()      # session types kept before their session is known
    read_only: frozenset[str] = frozenset()       # its commands that write nothing: they answer on a full disk

    def start(self) -> None:
        """The node is up: resume what the database says is under way."""

    def on_node_message(self, envelope: Envelope, sender: str) -> None:
        """An accepted node-session envelope of one of `node_types`, from the guardian named `sender`."""

    def on_session_message(self, envelope: Envelope) -> None:
        """An accepted envelope of a session this service accepted (or of one of its `open_types`)."""

    def commands(self) -> dict[str, Callable[[dict], Any]]:
        """Control commands (`guardian ...` through the control socket): name -> handler(request)."""
        return {}

    def session_kind(self, session: bytes) -> tuple[str, str | None] | None:
        """For `guardian status`: (kind, phase) of a session this service owns, else None."""
        return None

    def links_changed(self) -> None:
        """A link came up or went down."""

    def blob(self, digest: bytes) -> Path | None:
        """The public record file a peer asked for by SHA-256, if this service serves it (the daemon checks
        its digest before it sends a byte of it, and reads it in chunks)."""
        return None

    def on_blob(self, peer: int, blob: Blob) -> None:
        """A chunk of a record file from the guardian of sequence number `peer` (the frame well formed;
        whether it was asked for, and the file's digest, are the service's to check)."""

    def on_lack(self, peer: int, digests: list[bytes]) -> None:
        """The guardian of sequence number `peer` lacks these record files."""
