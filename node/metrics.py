"""The services' part of /metrics, and the endpoint itself (node/daemon/metrics.py has the daemon's).

Read at scrape time from what the services already keep: the ceremonies and decryption sessions in
the database, each running ceremony's phase and when it began, the outcome of each decryption (its
rounds, who was missing, its timings). The endpoint is its own address ([metrics] listen), never
behind the guardian page's login: it shows counts, states and roster names, nothing secret.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from node.daemon.http import serve_asgi
from node.protocol.ceremony import PHASES
from node.protocol.lifecycle import CEREMONY, DECRYPTION
from node.services.ceremonies import Ceremonies
from node.services.decryptions import Decryptions

# A transcript in one of these has ended; its ceremony is counted by its status, not its phase.
ENDED = ("complete", "aborted")


class ServicesCollector(Collector):
    def __init__(self, ceremonies: Ceremonies, decryptions: Decryptions) -> None:
        self.ceremonies, self.decryptions = ceremonies, decryptions

    def collect(self) -> Iterable[Metric]:
        yield from self._ceremonies()
        yield from self._decryptions()

    def _ceremonies(self) -> Iterable[Metric]:
        rows = self.ceremonies.port.db.ceremonies()
        yield _by_status("guardian_ceremonies", "Key ceremonies this node knows, by status",
                         CEREMONY.transitions, (r["status"] for r in rows))
        now = self.ceremonies.port.now()
        in_phase = {phase: 0 for phase in PHASES if phase not in ENDED}
        longest: dict[str, float] = {}
        for run in self.ceremonies.running.values():
            phase = run.transcript.phase
            if phase in in_phase:
                in_phase[phase] += 1
                longest[phase] = max(longest.get(phase, 0.0), now - run.phase_started)
        running = GaugeMetricFamily("guardian_ceremony_phase", "Running key ceremonies in each phase",
                                    labels=["phase"])
        seconds = GaugeMetricFamily("guardian_ceremony_phase_seconds", "How long the running ceremony longest "
                                    "in this phase has been in it", labels=["phase"])
        for phase, count in in_phase.items():
            running.add_metric([phase], count)
            if phase in longest:
                seconds.add_metric([phase], round(longest[phase], 3))
        yield running
        yield seconds

    def _decryptions(self) -> Iterable[Metric]:
        rows = self.decryptions.port.db.decryptions()
        yield _by_status("guardian_decryptions", "Decryption sessions this node knows, by status",
                         DECRYPTION.transitions, (r["status"] for r in rows))
        rounds = 0
        missing = {e.name: 0 for e in self.decryptions.port.roster.entries}
        verify, decrypt = [], []
        for row in rows:
            outcome = row["outcome"]
            run = self.decryptions.sessions.get(row["session"])
            if row["status"] == "complete":
                rounds += outcome.get("rounds", 0)
                for name in outcome.get("missing", ()):
                    if name in missing:
                        missing[name] += 1
                took = outcome.get("seconds", {})
                # The timings are of this node's last run of the session: from its start (or restart).
                if "checked" in took:
                    verify.append(took["checked"] - took.get("fetched", 0.0))
                    if "complete" in took:
                        decrypt.append(took["complete"] - took["checked"])
            elif run is not None and run.snapshot is not None:
                rounds += run.snapshot.round
        yield CounterMetricFamily("guardian_decryption_rounds", "Decryption rounds opened, in every session "
                                  "(a round is opened again without a guardian whose part was wrong)", value=rounds)
        absent = CounterMetricFamily("guardian_decryption_missing", "Completed decryptions this guardian "
                                     "took no part in", labels=["guardian"])
        for name, count in missing.items():
            absent.add_metric([name], count)
        yield absent
        yield _summary("guardian_decryption_verify_seconds", "Checking a record copy (the verifier and the "
                       "policy) before decrypting, per completed session", verify)
        yield _summary("guardian_decryption_seconds", "From a record copy checked to the decryption complete "
                       "(every round), per completed session", decrypt)


def _by_status(name: str, documentation: str, statuses: Iterable[str], found: Iterable[str]) -> Metric:
    counts = {str(s): 0 for s in statuses}
    for status in found:
        counts[status] = counts.get(status, 0) + 1
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    for status, count in counts.items():
        family.add_metric([status], count)
    return family


def _summary(name: str, documentation: str, values: list[float]) -> Metric:
    return SummaryMetricFamily(name, documentation, count_value=len(values), sum_value=round(sum(values), 3))


def metrics_app(registry: CollectorRegistry) -> Starlette:
    """GET /metrics in the Prometheus text format; any other path is a 404."""
    async def metrics(request: Request) -> Response:
        # On the node's own trio loop: the collectors read its state and database from its thread.
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Starlette(routes=[Route("/metrics", metrics)])


def metrics_server(registry: CollectorRegistry, host: str, port: int):
    """The start function for node.servers: serves metrics_app on host:port in the node's nursery."""
    return partial(serve_asgi, metrics_app(registry), host, port, what="metrics")
