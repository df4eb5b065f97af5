"""What the daemon tells an operator's Prometheus: its links, frames, envelopes, refusals and queues.

One registry per node (several nodes can share a process in tests). The few things that happen on
the hot path (a frame, an envelope, a dial) increment counters; everything else is read from the
node's own state when /metrics is scraped, so no number here can drift from `guardian status`.
Label values are bounded: frame kinds, message types, refusal reasons and roster names, never an
address or a session id.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from node.protocol import link as frames
from node.protocol.envelope import Envelope

# Message types the node has signed come from its services and its operator's control socket:
# beyond this many distinct ones, the rest are counted as "other" so the series stay few.
MAX_TYPES = 64
UNAUTHENTICATED = "unauthenticated"
FRAME_KINDS = {frames.Sync: "sync", frames.Heartbeat: "hb", frames.Want: "want", frames.Blob: "blob",
               frames.Lack: "lack"}


class NodeMetrics:
    """The node's registry, its hot-path counters, and the collector reading the daemon's state."""

    def __init__(self, node) -> None:
        self.registry = CollectorRegistry()
        self._frames = Counter("guardian_link_frames", "Link frames by direction (in, out) and kind "
                               "(env, relay, sync, hb, want, blob, lack)", ["direction", "kind"],
                               registry=self.registry)
        self._envelopes = Counter("guardian_envelopes", "Envelopes accepted into the inbox (in) or signed and "
                                  "committed to the outbox (out), by message type", ["direction", "type"],
                                  registry=self.registry)
        self._dials = Counter("guardian_dials", "Dials of a peer this node keeps the link to", ["peer"],
                              registry=self.registry)
        self._types: set[str] = set()
        self.registry.register(DaemonCollector(node))

    def frame_in(self, event: frames.Event) -> None:
        if isinstance(event, frames.EnvelopeFrame):
            kind = "relay" if event.relayed else "env"
        else:
            kind = FRAME_KINDS[type(event)]
        self._frames.labels("in", kind).inc()

    def frame_out(self, kind: str) -> None:
        self._frames.labels("out", kind).inc()

    def envelope_in(self, envelope: Envelope) -> None:
        self._envelopes.labels("in", self._type(envelope.type)).inc()

    def envelopes_out(self, envelopes: Iterable[Envelope]) -> None:
        for envelope in envelopes:
            self._envelopes.labels("out", self._type(envelope.type)).inc()

    def dial(self, peer: str) -> None:
        self._dials.labels(peer).inc()

    def _type(self, type_: str) -> str:
        if type_ not in self._types and len(self._types) >= MAX_TYPES:
            return "other"
        self._types.add(type_)
        return type_


class DaemonCollector(Collector):
    """Gauges and counters computed at scrape time from the peers' states and the database."""

    def __init__(self, node) -> None:
        self.node = node          # the daemon's Node (not imported: it imports this module)

    def collect(self) -> Iterable[Metric]:
        peers = sorted(self.node.peers.values(), key=lambda p: p.entry.sequence)
        connected = GaugeMetricFamily("guardian_peer_connected", "1 while the link to this peer is up",
                                      labels=["peer"])
        links = CounterMetricFamily("guardian_links_established", "Links to this peer authenticated and "
                                    "started, whoever dialled", labels=["peer"])
        failures = CounterMetricFamily("guardian_dial_failures", "Dials of this peer that failed",
                                       labels=["peer"])
        for peer in peers:
            connected.add_metric([peer.entry.name], 1 if peer.connection is not None else 0)
            links.add_metric([peer.entry.name], peer.connections)
            failures.add_metric([peer.entry.name], peer.dial_failures)
        yield GaugeMetricFamily("guardian_peers_connected", "Peers with a link up now",
                                value=sum(p.connection is not None for p in peers))
        yield from (connected, links, failures)

        names = {p.entry.name for p in peers}
        by_reason: dict[tuple[str, str], int] = {}
        for who, reasons in self.node.db.refusal_counts().items():
            # Before a peer's key is proven it is only an address: those are summed, not listed.
            who = who if who in names else UNAUTHENTICATED
            for reason, count in reasons.items():
                by_reason[who, reason] = by_reason.get((who, reason), 0) + count
        refusals = CounterMetricFamily("guardian_refusals", "Frames and connections refused, by the roster "
                                       f"name they came from ({UNAUTHENTICATED}: not yet a proven peer) and "
                                       "reason", labels=["peer", "reason"])
        for (who, reason), count in sorted(by_reason.items()):
            refusals.add_metric([who, reason], count)
        yield refusals

        counts = self.node.db.counts()
        yield GaugeMetricFamily("guardian_outbox_envelopes", "This node's own envelopes in the outbox",
                                value=counts["outbox"])
        yield GaugeMetricFamily("guardian_inbox_envelopes", "Envelopes accepted into the inbox",
                                value=counts["inbox"])
