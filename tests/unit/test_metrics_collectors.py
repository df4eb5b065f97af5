"""/metrics: the collectors read the node's state at scrape time; the hot-path counters move; labels stay bounded.

A node built by node.app.build on a fresh data directory (identities in memory, a roster of three), not
run: its state is set as the daemon and the services would set it, and the registry's text output is
parsed back with prometheus_client's own parser.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import get_args

import pytest
import trio
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from node.app import App, build
from node.config import load_node_config, load_roster
from node.daemon.metrics import FRAME_KINDS, MAX_TYPES
from node.metrics import metrics_server
from node.protocol import link as frames
from node.protocol.envelope import NODE_SESSION, seal_envelope
from node.storage.db import NodeDatabase
from node.testing.inprocess import InProcessNode
from node.testing.processes import NodeProc, metric_samples


def samples(app: App) -> dict[tuple[str, tuple], float]:
    return metric_samples(generate_latest(app.node.metrics.registry).decode())


@pytest.fixture
def cluster(tmp_path):
    members = [InProcessNode.fresh(tmp_path / name, name) for name in ("g1", "g2", "g3")]
    roster = "\n".join(m.roster_entry(i) for i, m in enumerate(members, 1))
    for m in members:
        (m.dir / "roster.toml").write_text(roster)
    return members


def built(member: InProcessNode) -> App:
    config = load_node_config(member.dir / "node.toml")
    return build(config, load_roster(config.roster_file), member.identity, NodeDatabase(config.data_dir))


async def test_a_fresh_node_shows_its_peers_down_and_nothing_counted(cluster):
    s = samples(built(cluster[0]))
    assert s[("guardian_peers_connected", ())] == 0
    assert {k: v for k, v in s.items() if k[0] == "guardian_peer_connected"} == {
        ("guardian_peer_connected", (("peer", "g2"),)): 0, ("guardian_peer_connected", (("peer", "g3"),)): 0}
    assert s[("guardian_outbox_envelopes", ())] == 0 and s[("guardian_inbox_envelopes", ())] == 0
    assert s[("guardian_ceremonies", (("status", "complete"),))] == 0
    assert s[("guardian_ceremony_phase", (("phase", "keys"),))] == 0
    assert s[("guardian_decryption_rounds_total", ())] == 0
    assert not [k for k in s if k[0] in ("guardian_refusals_total", "guardian_envelopes_total")]


async def test_links_frames_envelopes_and_refusals_move_the_metrics(cluster):
    app = built(cluster[0])
    node = app.node
    g2 = next(p for p in node.peers.values() if p.entry.name == "g2")
    g2.connection, g2.connections, g2.dial_failures = object(), 2, 5
    node.metrics.dial("g2")
    node.metrics.frame_in(frames.Heartbeat())
    node.metrics.frame_in(frames.EnvelopeFrame(b"", relayed=True))
    node.metrics.frame_out("env")
    node.send("note", {"text": "hello"})
    node.receive_envelope(seal_envelope(cluster[1].identity.signing_key, "note", NODE_SESSION, 1, "hi").encode(), "g2")
    node.db.refuse("g2", "bad signature", "forged")
    node.db.refuse("203.0.113.9", "connection limit", "too many")
    node.db.refuse("203.0.113.10", "connection limit", "too many")

    s = samples(app)
    assert s[("guardian_peers_connected", ())] == 1
    assert s[("guardian_peer_connected", (("peer", "g2"),))] == 1
    assert s[("guardian_links_established_total", (("peer", "g2"),))] == 2
    assert s[("guardian_dial_failures_total", (("peer", "g2"),))] == 5
    assert s[("guardian_dials_total", (("peer", "g2"),))] == 1
    assert s[("guardian_link_frames_total", (("direction", "in"), ("kind", "hb")))] == 1
    assert s[("guardian_link_frames_total", (("direction", "in"), ("kind", "relay")))] == 1
    assert s[("guardian_link_frames_total", (("direction", "out"), ("kind", "env")))] == 1
    assert s[("guardian_envelopes_total", (("direction", "out"), ("type", "note")))] == 1
    assert s[("guardian_envelopes_total", (("direction", "in"), ("type", "note")))] == 1
    assert s[("guardian_outbox_envelopes", ())] == 1 and s[("guardian_inbox_envelopes", ())] == 1
    # Addresses are summed as one label value: a flood from many addresses makes no new series.
    assert {k[1]: v for k, v in s.items() if k[0] == "guardian_refusals_total"} == {
        (("peer", "g2"), ("reason", "bad signature")): 1,
        (("peer", "unauthenticated"), ("reason", "connection limit")): 2}


def test_every_link_frame_event_has_a_kind():
    # The reader counts each event it opens: an event without a kind would close the link it came on.
    assert set(get_args(frames.Event)) == set(FRAME_KINDS) | {frames.EnvelopeFrame}


async def test_message_types_beyond_the_bound_are_counted_as_other(cluster):
    app = built(cluster[0])
    for i in range(MAX_TYPES + 5):
        app.node.send(f"type-{i}", None)
    s = samples(app)
    out = {dict(k[1])["type"]: v for k, v in s.items() if k[0] == "guardian_envelopes_total"}
    assert len(out) == MAX_TYPES + 1 and out["other"] == 5


async def test_ceremony_phases_and_how_long_the_longest_has_been_in_its_phase(cluster):
    app = built(cluster[0])
    now = trio.current_time()
    # Ceremonies under way as the service keeps them: a transcript's phase and when it began.
    for session, phase, began in ((b"a", "shares", now - 4), (b"b", "shares", now - 9), (b"c", "complete", now)):
        app.ceremonies.running[session] = SimpleNamespace(transcript=SimpleNamespace(phase=phase), phase_started=began)
    s = samples(app)
    assert s[("guardian_ceremony_phase", (("phase", "shares"),))] == 2
    assert s[("guardian_ceremony_phase", (("phase", "keys"),))] == 0
    assert ("guardian_ceremony_phase", (("phase", "complete"),)) not in s      # counted by its status instead
    assert 9 <= s[("guardian_ceremony_phase_seconds", (("phase", "shares"),))] < 10
    assert ("guardian_ceremony_phase_seconds", (("phase", "keys"),)) not in s


async def test_decryptions_rounds_missing_guardians_and_durations(cluster):
    app = built(cluster[0])
    db = app.node.db
    for session, rounds, missing, seconds in ((b"1" * 32, 1, [], {"fetched": 1.0, "checked": 3.0, "complete": 7.0}),
                                              (b"2" * 32, 2, ["g3"], {"checked": 2.0, "complete": 3.0})):
        db.add_decryption(session, b"request", "g1", "fetching", {})
        for status in ("checking", "ready"):
            db.set_decryption_status(session, status)
        db.set_decryption_status(session, "complete", {"rounds": rounds, "missing": missing, "seconds": seconds})
    db.add_decryption(b"3" * 32, b"request", "g2", "fetching", {})
    db.set_decryption_status(b"3" * 32, "refused", {"reason": "not this node's election"})
    s = samples(app)
    assert s[("guardian_decryptions", (("status", "complete"),))] == 2
    assert s[("guardian_decryptions", (("status", "refused"),))] == 1
    assert s[("guardian_decryptions", (("status", "fetching"),))] == 0
    assert s[("guardian_decryption_rounds_total", ())] == 3
    assert s[("guardian_decryption_missing_total", (("guardian", "g3"),))] == 1
    assert s[("guardian_decryption_missing_total", (("guardian", "g2"),))] == 0
    assert s[("guardian_decryption_verify_seconds_count", ())] == 2
    assert s[("guardian_decryption_verify_seconds_sum", ())] == 2.0 + 2.0
    assert s[("guardian_decryption_seconds_sum", ())] == 4.0 + 1.0


async def get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
    return data


async def test_the_endpoint_serves_the_text_format_at_slash_metrics_only(cluster):
    app = built(cluster[0])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics_server(app.node.metrics.registry, "127.0.0.1", 0))
        with trio.fail_after(10):
            response = await get(port, "/metrics")
            other = await get(port, "/")
        nursery.cancel_scope.cancel()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/plain; version=" in head
    names = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"guardian_peers_connected", "guardian_ceremony_phase", "guardian_refusals"} <= names
    assert other.startswith(b"HTTP/1.1 404")


def test_build_serves_metrics_only_when_listen_is_set(cluster):
    assert "metrics" not in built(cluster[0]).node.servers
    NodeProc(cluster[0].name, cluster[0].dir, cluster[0].port).serve_metrics()
    assert "metrics" in built(cluster[0]).node.servers
