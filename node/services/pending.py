"""How many of one peer's proposals or requests a node keeps waiting: [network] peer_pending each."""

from __future__ import annotations

import logging

from node.services.port import Port

log = logging.getLogger("guardian.node")


def room_for(port: Port, table: str, peer: str, status: str | tuple[str, ...], what: str) -> bool:
    """Whether another of `peer`'s `what` (rows of `table` in `status`) is kept; if not, a `quota` refusal
    is counted against the peer (and logged once in a while, as every refusal)."""
    held, most = port.db.held_from(table, peer, status), port.config.peer_pending
    if held < most:
        return True
    said = status if isinstance(status, str) else "under way"
    detail = f"{held} {what} of {peer} {said} already (peer_pending {most}): another is not kept"
    if port.db.refuse(peer, "quota", detail):
        log.warning("not kept: %s", detail)
    return False
