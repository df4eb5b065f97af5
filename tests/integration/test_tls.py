"""Optional TLS: two real node processes connect over wss:// with certificates from a test CA."""

from __future__ import annotations

import trustme

from node.testing.processes import PASS_ENV, Cluster, NodeProc, all_connected, eventually, free_port, guardian


def tls_node(cluster: Cluster, i: int, cert: trustme.LeafCert) -> NodeProc:
    """`guardian init` of a node that advertises wss://, with the test CA's certificate and key."""
    port = free_port()
    node = NodeProc(f"tls{i}", cluster.base / f"n{i}", port)
    result = guardian("init", node.dir, "--name", node.name, "--listen", f"127.0.0.1:{port}",
                      "--advertise", f"wss://127.0.0.1:{port}", "--passphrase-env", PASS_ENV)
    assert result.returncode == 0, result.stderr
    cert.private_key_pem.write_to_path(str(node.dir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(node.dir / "cert.pem"))
    node.set_config(tls__cert='"cert.pem"', tls__key='"key.pem"', tls__ca=f'"{cluster.base / "ca.pem"}"',
                    heartbeat_seconds=0.5)
    cluster.nodes.append(node)
    return node


async def test_nodes_link_over_wss(cluster):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(cluster.base / "ca.pem"))
    n1, n2 = (tls_node(cluster, i, cert) for i in (1, 2))
    cluster.write_roster([n1, n2])
    await cluster.start(n1, n2)
    await all_connected([n1, n2], 30)
    await n1.send_note("tls2", "over tls")

    async def arrived():
        assert await n2.inbox()
    await eventually(arrived, 30, "the note to arrive")
    assert [(m["from"], m["body"]) for m in await n2.inbox()] == [("tls1", "over tls")]
    # the dialler reached the listener through TLS: its link carried the note and no refusal was counted
    assert (await n2.status())["other_refusals"] == {}
