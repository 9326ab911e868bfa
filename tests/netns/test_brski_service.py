"""acpd's BRSKI part: proxies come in through add_proxy(), IdentityChanged comes out.

Registrar + MASA in n1, the PledgePart's DULL namespace is n2. The first proxy offered is
dead (nothing listens), so the service must back off from it and enrol through the second.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from cryptography import x509

from acp_openwrt.brski.pledge.part import PledgePart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import EventBus, IdentityChanged
from acp_openwrt.identity.certificate import find_acp_node_name
from acp_openwrt.lab.masa import Masa, start_bench_registrar
from acp_openwrt.lab.topology import Topology, line
from acp_openwrt.netns import listener_in
from acp_openwrt.node_context import NodeContext

if TYPE_CHECKING:
    from conftest import TopologyFactory


@pytest.fixture
def link(topology: TopologyFactory) -> Topology:
    """A fresh n1 - n2 for each test (conftest's `link` is one per module)."""
    return topology(line(2))


def test_service_enrols_via_the_working_proxy_and_publishes(link, tmp_path) -> None:
    registrar_node, pledge_node = link["n1"], link["n2"]
    address = registrar_node.link_local("eth0")
    pledge_node.link_local("eth0")

    async def main() -> tuple[list[IdentityChanged], dict, dict]:
        masa = Masa.create(tmp_path / "vendor")
        await masa.serve(sock=listener_in(registrar_node.netns, "::1"))
        bench = await start_bench_registrar(tmp_path / "registrar", masa,
                                            sock=listener_in(registrar_node.netns, "::"),
                                            masa_namespace=registrar_node.netns)
        device = masa.issue_idevid("SN-SVC")
        node = tmp_path / "node"
        config = AcpConfig(idevid_cert=device.cert_path, idevid_key=device.key_path,
                           manufacturer_trust_anchor=masa.anchor_path,
                           ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                           trust_anchors=node / "ta.pem", namespace_dull=pledge_node.netns,
                           run_dir=tmp_path / "run")
        ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "run/acpd.sock"))
        seen: list[IdentityChanged] = []
        done = asyncio.Event()
        ctx.bus.subscribe(IdentityChanged, lambda e: (seen.append(e), done.set()))
        service = PledgePart(ctx, initial_backoff=0.2)
        await service.start()
        try:
            dead = listener_in(registrar_node.netns, "::")
            dead_port = dead.getsockname()[1]
            dead.close()  # nothing listens there any more: connection refused
            service.add_proxy(address, dead_port, "eth0")
            await asyncio.sleep(0.3)
            service.add_proxy(address, bench.port, "eth0")
            await asyncio.wait_for(done.wait(), 20)
            reply = await ctx.control.dispatch(b'{"cmd": "brski"}')
            return seen, reply, service.status()
        finally:
            await service.stop()
            await bench.close()
            await masa.close()

    seen, reply, status = asyncio.run(main())
    assert len(seen) == 1 and seen[0].cert_path.endswith("ldevid.crt")
    cert = x509.load_pem_x509_certificate(open(seen[0].cert_path, "rb").read())
    assert find_acp_node_name(cert).text == status["acp_node_name"]
    assert reply["ok"] and reply["result"]["state"] in ("enrolled", "stopped")
    assert status["attempts"] >= 2
    dead_entries = [p for p in reply["result"]["proxies"] if p["failures"]]
    assert dead_entries and "cannot reach" in dead_entries[0]["last_refusal"]
