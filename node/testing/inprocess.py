"""A guardian node run in the caller's trio nursery: node.app, with the guardians a test chooses.

Same code and same wire as `guardian run`, on a data directory of its own (a fresh one, or that of a
cluster node whose process is stopped). Misbehaviour comes in through node.app.Guardians (the factories
of node/testing/adversary.py); the one thing a guardian cannot do itself, stream another envelope for
one of its sequence numbers to some peers, is the `outbox` hook below.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

import trio

from node.app import App, Guardians, build
from node.config import NODE_TOML, load_node_config, load_roster, roster_entry_toml
from node.daemon.control import control_request
from node.identity import Identity, encode_public_key, fingerprint, load_public_key
from node.storage.db import NodeDatabase
from node.testing.processes import FAST_NETWORK, PASSPHRASE, NodeProc, free_port, set_config

# What a link streams for one outbox row: (peer key, sequence number, stored envelope) -> envelope.
OutboxView = Callable[[bytes, int, bytes], bytes]


class ViewedDatabase(NodeDatabase):
    """The node's database, every outbox row passed through an OutboxView on its way to a peer's link."""

    def __init__(self, data_dir: Path, view: OutboxView) -> None:
        super().__init__(data_dir)
        self.view = view

    def outbox_for(self, peer: bytes, after_seq: int) -> list[tuple[int, bytes]]:
        return [(seq, self.view(peer, seq, envelope)) for seq, envelope in super().outbox_for(peer, after_seq)]


class InProcessNode:
    """One guardian's node in this process. `identity` None: loaded from the directory (PASSPHRASE)."""

    def __init__(self, directory: Path, name: str, port: int, identity: Identity | None = None) -> None:
        self.dir, self.name, self.port, self.identity = directory, name, port, identity
        self.sequence: int | None = None
        self.app: App | None = None
        self._scope: trio.CancelScope | None = None

    @classmethod
    def fresh(cls, directory: Path, name: str, **config) -> "InProcessNode":
        """A new guardian: a new identity (kept in memory), a free port, node.toml tuned like a cluster's."""
        port = free_port()
        directory.mkdir(parents=True)
        path = directory / "node.toml"
        path.write_text(NODE_TOML.format(name=name, listen=f"127.0.0.1:{port}", advertise=f"ws://127.0.0.1:{port}"))
        set_config(path, **{**FAST_NETWORK, **config})
        return cls(directory, name, port, Identity.generate())

    @classmethod
    def of(cls, proc: NodeProc) -> "InProcessNode":
        """The guardian of a cluster node, on its data directory (stop its process first)."""
        node = cls(proc.dir, proc.name, proc.port)
        node.sequence = proc.sequence
        return node

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key if self.identity is not None else load_public_key(self.dir)

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def socket(self) -> Path:
        return self.dir / "control.sock"

    @property
    def alive(self) -> bool:
        return self.app is not None

    def roster_entry(self, sequence: int) -> str:
        return roster_entry_toml(sequence, self.name, encode_public_key(self.public_key), self.address,
                                 fingerprint(self.public_key))

    # --- running ---------------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery, guardians: Guardians = Guardians(),
                    outbox: OutboxView | None = None) -> App:
        """Build the node (node.app.build) and run it in `nursery` until stop(); the App, once it listens."""
        assert self.app is None, f"{self.name} is already running"
        config = load_node_config(self.dir / "node.toml")
        identity = self.identity or await trio.to_thread.run_sync(Identity.load, config.data_dir, PASSPHRASE)
        db = NodeDatabase(config.data_dir) if outbox is None else ViewedDatabase(config.data_dir, outbox)
        app = build(config, load_roster(config.roster_file), identity, db, guardians)
        scope = self._scope = trio.CancelScope()

        async def run(task_status=trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await app.run(task_status)
            finally:
                self.app = None
                db.close()
        self.app = app
        await nursery.start(run)
        return app

    def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    @asynccontextmanager
    async def running(self, guardians: Guardians = Guardians(), outbox: OutboxView | None = None):
        """The node runs for the body of the with-block (which gets its App), then stops."""
        async with trio.open_nursery() as nursery:
            app = await self.start(nursery, guardians, outbox)
            try:
                yield app
            finally:
                self.stop()

    # --- the control socket, as for a NodeProc ------------------------------------------------------------

    async def control(self, request: dict, timeout: float = 5.0) -> object:
        assert self.alive, f"{self.name} is not running"
        return await control_request(self.socket, request, timeout=timeout)

    async def request(self, cmd: str, *, timeout: float = 5.0, **fields) -> object:
        return await self.control({"cmd": cmd, **fields}, timeout)
