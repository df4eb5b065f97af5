"""The control channel: an owner-only Unix socket, one JSON request line in, one JSON answer line out.

`guardian status`, `guardian ceremony ...`, `guardian decrypt ...` and the tests talk to the running
node through it. A control client can only ever cost its own session, never the node.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import socket
import struct
from pathlib import Path
from typing import Any, Callable

import trio

from node.crypto.errors import GuardianError, InputError

log = logging.getLogger("guardian.node")

CONTROL_MAX_REQUEST = 1 << 20
CONTROL_READ_TIMEOUT = 5.0        # a client that sends no request line within this is dropped
CONTROL_MAX_SESSIONS = 32         # at once; more wait in the listen backlog
# accept(2) failing for want of resources (file descriptors, memory) is no reason to stop: back off
# and retry, as trio.serve_listeners does for the peers' listener.
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_BACKOFF = 0.1


async def serve_control(path: Path, dispatch: Callable[[dict], Any],
                        task_status=trio.TASK_STATUS_IGNORED) -> None:
    if len(str(path).encode()) > 100:
        raise InputError(f"control socket path too long for a Unix socket: {path}")
    if path.exists():
        if _answers(path):
            raise InputError(f"another node answers on the control socket {path}: stop it first")
        path.unlink()      # left by a node that did not stop cleanly
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)    # the socket file is created owner-only
    try:
        await sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(16)
    task_status.started()
    sessions = trio.CapacityLimiter(CONTROL_MAX_SESSIONS)
    last_complaint = float("-inf")
    try:
        async with trio.open_nursery() as nursery:
            while True:
                token = object()       # a session's place, given back by the session's own task
                await sessions.acquire_on_behalf_of(token)
                try:
                    conn, _ = await sock.accept()
                except OSError as e:
                    sessions.release_on_behalf_of(token)
                    if e.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    if time.monotonic() - last_complaint > 5:
                        last_complaint = time.monotonic()
                        log.error("control socket: accept failed (%s); retrying", os.strerror(e.errno))
                    await trio.sleep(ACCEPT_BACKOFF)
                    continue
                except BaseException:
                    sessions.release_on_behalf_of(token)
                    raise
                nursery.start_soon(_guarded_session, trio.SocketStream(conn), dispatch, sessions, token)
    finally:
        sock.close()
        try:
            path.unlink()
        except OSError:
            pass


def _answers(path: Path) -> bool:
    """Whether a process accepts connections on the Unix socket at path."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def _guarded_session(stream: trio.SocketStream, dispatch: Callable[[dict], Any],
                           sessions: trio.CapacityLimiter, token: object) -> None:
    try:
        await _session(stream, dispatch)
    except Exception:
        log.exception("internal error on a control session")
    finally:
        sessions.release_on_behalf_of(token)


async def _session(stream: trio.SocketStream, dispatch: Callable[[dict], Any]) -> None:
    async with stream:
        uid = _peer_uid(stream.socket)
        if uid is not None and uid != os.getuid():
            log.warning("control connection from uid %d refused", uid)
            return
        with trio.move_on_after(CONTROL_READ_TIMEOUT) as waited:
            line = await read_line(stream, CONTROL_MAX_REQUEST)
        if waited.cancelled_caught:
            log.info("control client sent no request within %s s: dropped", CONTROL_READ_TIMEOUT)
            return
        if line is None:
            return
        try:
            request = json.loads(line)
            response = {"ok": True, "result": dispatch(request)}
        except (GuardianError, ValueError, KeyError, TypeError) as e:
            response = {"ok": False, "error": str(e)}
        try:
            await stream.send_all(json.dumps(response).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("a control client left before its answer")


def _peer_uid(sock) -> int | None:
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


async def read_line(stream: trio.SocketStream, limit: int) -> bytes | None:
    """One newline-terminated line of the control protocol, or None if the stream ends or it grows past limit."""
    buffer = b""
    while b"\n" not in buffer:
        chunk = await stream.receive_some(65536)
        if not chunk or len(buffer) + len(chunk) > limit:
            return None
        buffer += chunk
    return buffer.split(b"\n", 1)[0]


async def control_request(socket_path: Path, request: dict, timeout: float = 10.0) -> Any:
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
