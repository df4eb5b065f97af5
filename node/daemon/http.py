"""HTTP for the node's own pages and metrics: an ASGI app served by Hypercorn's trio worker.

Hypercorn runs inside the daemon's nursery, so the page and the metrics stop with the node and call
its services on the same trio loop; no thread, no second event loop, no hand-written HTTP.
"""

from __future__ import annotations

import errno
import logging
import socket

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from node.crypto.errors import InputError

log = logging.getLogger("guardian.http")


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_asgi(app, host: str, port: int, *, certfile: str | None = None, keyfile: str | None = None,
                     what: str = "page", task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on host:port (port 0: a free one) until cancelled. task_status gets the bound port."""
    # Bind the socket ourselves and hand it over by descriptor: the port is known before Hypercorn
    # starts (port 0 picks a free one), and an address in use is one line, not a traceback.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"cannot serve the {what} on {_where(host, port)}: the address is in use "
                             f"(change [{what}] listen in node.toml)") from None
        raise InputError(f"cannot serve the {what} on {_where(host, port)}: {e.strerror or e}") from None
    bound = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]     # Hypercorn owns (and closes) it from here
    config.certfile, config.keyfile = certfile, keyfile
    config.accesslog = None            # a URL may carry a one-time login token: never logged
    config.errorlog = logging.getLogger(f"guardian.http.{what}")
    config.graceful_timeout = 1.0
    config.h11_max_incomplete_size = 64 * 1024
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, config)
        log.info("%s served on %s://%s", what, "https" if certfile else "http", _where(host, bound))
        task_status.started(bound)
