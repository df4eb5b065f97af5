"""The guardian node assembled: the daemon with its services. The one place that knows both.

  Custody       key backups, custody steps, the certificate          (node/services/custody.py)
  Ceremonies    proposals, votes, the key ceremony                   (node/services/ceremonies.py)
  Decryptions   decryption sessions                                  (node/services/decryptions.py)
each behind its own port on one Node (node/daemon/node.py), with the guardian's page (node/page/)
among the node's servers when [page] is enabled, and /metrics (node/metrics.py) when [metrics] listen
is set. Rehearsals swap in misbehaving guardians through `Guardians` (node/testing/adversary.py); the
node guardians run uses the honest ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from node.config import NodeConfig, Roster
from node.daemon.node import Node
from node.identity import Identity
from node.metrics import ServicesCollector, metrics_server
from node.page.app import install as install_page
from node.services import ceremonies, decryptions
from node.services.ceremonies import Ceremonies
from node.services.custody import Custody
from node.services.decryptions import Decryptions
from node.storage.db import NodeDatabase
from node.storage.state_box import StateBox


@dataclass(frozen=True)
class Guardians:
    """How each service makes this node's guardian for a session."""
    ceremony: ceremonies.GuardianFactory = ceremonies.honest_guardian
    decryption: decryptions.GuardianFactory = decryptions.honest_guardian


@dataclass
class App:
    node: Node
    custody: Custody
    ceremonies: Ceremonies
    decryptions: Decryptions

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await self.node.run(task_status=task_status)


def build(config: NodeConfig, roster: Roster, identity: Identity, db: NodeDatabase,
          guardians: Guardians = Guardians()) -> App:
    box = StateBox(bytes(identity.signing_key))
    db.seal_rows(box.row_key)
    db.check_store(box.open)      # a damaged or altered store stops the node here, in one line
    node = Node(config, roster, identity, db)
    custody_port, ceremony_port, decryption_port = (node.port_for(n) for n in ("custody", "ceremonies", "decryptions"))
    custody = Custody(custody_port, box)
    ceremony = Ceremonies(ceremony_port, box, custody, guardians.ceremony)
    decryption = Decryptions(decryption_port, box, guardians.decryption)
    for port, service in ((custody_port, custody), (ceremony_port, ceremony), (decryption_port, decryption)):
        port.bind(service)
    node.metrics.registry.register(ServicesCollector(ceremony, decryption))
    if config.metrics_host is not None:
        node.servers["metrics"] = metrics_server(node.metrics.registry, config.metrics_host, config.metrics_port)
    if config.page_enabled:
        install_page(node)
    return App(node, custody, ceremony, decryption)
