"""A roster member played by the test itself: its own identity, a real handshake over a real websocket,
and then whatever frames a test wants to send over the sealed link (node/protocol/handshake.py).
"""

from __future__ import annotations

import msgpack
import trio
import trio_websocket

from node.config import roster_entry_toml
from node.crypto.errors import GuardianError
from node.identity import Identity, encode_public_key
from node.protocol.envelope import NODE_SESSION, seal_envelope
from node.protocol.handshake import DIALER, Handshake, SecureLink
from node.testing.processes import free_port


class HarnessPeer:
    """A roster member played by the test: its own identity, and a real handshake over a real websocket."""

    def __init__(self, name: str, port: int | None = None) -> None:
        self.name = name
        self.identity = Identity.generate()
        self.port = port or free_port()
        self.sequence: int | None = None
        self.seq = 0

    @property
    def public_key(self) -> bytes:
        return self.identity.public_key

    @property
    def address(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def roster_entry(self, sequence: int) -> str:
        return roster_entry_toml(sequence, self.name, encode_public_key(self.public_key), self.address,
                                 self.identity.fingerprint)

    def envelope(self, body, *, seq: int | None = None, type_: str = "note", session: bytes = NODE_SESSION):
        if seq is None:
            self.seq += 1
            seq = self.seq
        return seal_envelope(self.identity.signing_key, type_, session, seq, body)


class HarnessLink:
    """An authenticated link from a HarnessPeer to a node: send sealed frames, read and open the node's."""

    def __init__(self, ws, link: SecureLink) -> None:
        self.ws, self.link = ws, link
        self.received: list[tuple[str, object]] = []
        self.closed = trio.Event()
        self.open_errors = 0
        self._lock = trio.Lock()

    @classmethod
    async def connect(cls, ws, peer: HarnessPeer, roster_keys) -> "HarnessLink":
        handshake = Handshake(peer.identity.signing_key, DIALER, lambda key: key in roster_keys)
        with trio.fail_after(10):
            await ws.send_message(handshake.hello())
            while not handshake.done:
                for frame in handshake.receive(await ws.get_message()):
                    await ws.send_message(frame)
        return cls(ws, handshake.link)

    async def send_raw(self, data) -> None:
        """Straight onto the websocket, outside the sealed link."""
        async with self._lock:
            await self.ws.send_message(data)

    async def send_sealed(self, frame: bytes) -> None:
        async with self._lock:
            await self.ws.send_message(self.link.seal(frame))

    async def send(self, kind: str, payload) -> None:
        await self.send_sealed(msgpack.packb([kind, payload], use_bin_type=True))

    async def pump(self, heartbeat: float = 0.3) -> None:
        """Read the node's frames and send heartbeats until the link closes."""
        closed = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError)

        async def beat():
            try:
                while True:
                    await self.send("hb", None)
                    await trio.sleep(heartbeat)
            except closed:
                pass

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(beat)
                try:
                    while True:
                        sealed = await self.ws.get_message()
                        try:
                            kind, payload = msgpack.unpackb(self.link.open(sealed), raw=False)
                        except GuardianError:
                            self.open_errors += 1
                            continue
                        self.received.append((kind, payload))
                except closed:
                    nursery.cancel_scope.cancel()
        finally:
            self.closed.set()

