"""The registrar part without root: bootstrap files, refusals, flood content, status, acpctl."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import ipaddress
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski.pledge.core import generate_key
from acp_openwrt.brski.proxy.registrars import registrar_from_flood
from acp_openwrt.brski.registrar.bootstrap import (
    ALLOCATIONS_NAME,
    CA_KEY_NAME,
    RegistrarSetupError,
    bootstrap_registrar,
    open_registrar_files,
)
from acp_openwrt.brski.registrar.part import FLOOD_TTL_MS, RegistrarPart, flood_items
from acp_openwrt.brski.store import store_identity
from acp_openwrt.brski.wellknown import ID_KP_CMC_RA
from acp_openwrt.commands.registrar import register
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import AcpGraspInterfaceUp, EventBus, RegistrarHeard
from acp_openwrt.grasp import codec
from acp_openwrt.grasp.messages import Flood
from acp_openwrt.identity.certificate import (
    certificate_node_name,
    find_acp_node_name,
    load_certificate,
    load_certificates,
    validity,
)
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.lab.pki import TestCA
from acp_openwrt.node_context import NodeContext, Ports

DOMAIN = "acp.example.com"


def node_name(path: Path) -> str:
    found = find_acp_node_name(load_certificate(path))
    assert found is not None
    return found.text


def make_config(tmp: Path, domain: str = DOMAIN, registrar_dir: Path | None = None) -> AcpConfig:
    node = tmp / "node"
    return AcpConfig(registrar=True, registrar_domain=domain,
                     registrar_dir=registrar_dir or tmp / "registrar",
                     ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                     trust_anchors=node / "ta.pem", run_dir=tmp / "run", log_dir=tmp / "log")


def boot(config: AcpConfig) -> bool:
    return bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)


def snapshot(*dirs: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.is_file():
                st = p.stat()
                out[str(p)] = (p.read_bytes(), st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def test_bootstrap_creates_ca_and_own_ldevid_then_changes_nothing(tmp_path) -> None:
    config = make_config(tmp_path)
    assert boot(config) is True
    reg = config.registrar_dir
    assert stat.S_IMODE(reg.stat().st_mode) == 0o700
    assert stat.S_IMODE((reg / CA_KEY_NAME).stat().st_mode) == 0o600
    assert stat.S_IMODE(config.ldevid_key.stat().st_mode) == 0o600
    cert = load_certificate(config.ldevid_cert)
    name, _carrier = certificate_node_name(cert)
    assert name.domain == DOMAIN and name.has_address
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ObjectIdentifier(ID_KP_CMC_RA) in usages
    anchors = load_certificates(config.trust_anchors)
    assert check_domain_membership(cert, [], anchors, DOMAIN).ok
    before = snapshot(reg, config.ldevid_cert.parent)
    assert boot(config) is False
    assert snapshot(reg, config.ldevid_cert.parent) == before


def test_own_address_is_allocated_and_never_handed_out_again(tmp_path) -> None:
    config = make_config(tmp_path)
    boot(config)
    name = node_name(config.ldevid_cert)
    files = open_registrar_files(config.registrar_dir, DOMAIN)
    try:
        own = files.allocator.lookup_name(name)
        assert own is not None and own.serial == files.own_serial
        pledges = [files.allocator.allocate(f"SN-{i}") for i in range(3)]
        assert name not in {p.acp_node_name for p in pledges}
        assert own.address not in {p.address for p in pledges}
    finally:
        files.close()


def test_deleted_ldevid_is_reissued_with_the_same_name(tmp_path) -> None:
    config = make_config(tmp_path)
    boot(config)
    first = node_name(config.ldevid_cert)
    config.ldevid_cert.unlink()
    assert boot(config) is True
    assert node_name(config.ldevid_cert) == first


def test_ldevid_near_its_end_is_reissued(tmp_path) -> None:
    config = make_config(tmp_path)
    boot(config)
    files = open_registrar_files(config.registrar_dir, DOMAIN)
    try:
        name = node_name(config.ldevid_cert)
        key = generate_key()
        old = files.ca.issue(key.public_key(), name, registrar=True,
                             now=dt.datetime.now(dt.UTC) - dt.timedelta(days=80))
        store_identity(old, key, [files.ca.certificate], cert_path=config.ldevid_cert,
                       key_path=config.ldevid_key, trust_anchors_path=config.trust_anchors)
    finally:
        files.close()
    assert boot(config) is True
    new = load_certificate(config.ldevid_cert)
    assert validity(new)[1] > validity(old)[1] + dt.timedelta(days=60)
    assert find_acp_node_name(new).text == name


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and isinstance(exc.value, (ValueError, OSError))
    return text


def test_registrar_dir_that_is_a_file_is_refused(tmp_path) -> None:
    (tmp_path / "registrar").write_text("not a dir")
    with pytest.raises(RegistrarSetupError) as exc:
        boot(make_config(tmp_path))
    assert "not a directory" in one_line(exc)
    under = make_config(tmp_path, registrar_dir=tmp_path / "registrar" / "sub")
    with pytest.raises(RegistrarSetupError) as exc:
        boot(under)
    assert "registrar_dir" in one_line(exc)


def test_open_registrar_dir_is_tightened(tmp_path) -> None:
    (tmp_path / "registrar").mkdir(mode=0o755)
    os.chmod(tmp_path / "registrar", 0o755)
    boot(make_config(tmp_path))
    assert stat.S_IMODE((tmp_path / "registrar").stat().st_mode) == 0o700


def test_ldevid_of_another_domain_is_refused(tmp_path) -> None:
    boot(make_config(tmp_path, domain="other.example.net"))
    other_dir = make_config(tmp_path, registrar_dir=tmp_path / "registrar2")
    with pytest.raises(RegistrarSetupError) as exc:
        boot(other_dir)
    assert "other.example.net" in one_line(exc) and DOMAIN in str(exc.value)


def test_same_dir_with_another_domain_is_refused(tmp_path) -> None:
    boot(make_config(tmp_path))
    config = dataclasses.replace(make_config(tmp_path, domain="other.example.net"),
                                 ldevid_cert=tmp_path / "x.crt")
    with pytest.raises(RegistrarSetupError) as exc:
        boot(config)
    assert ALLOCATIONS_NAME in one_line(exc)


def test_ldevid_of_another_ca_or_with_a_wrong_key_is_refused(tmp_path) -> None:
    config = make_config(tmp_path)
    foreign = TestCA.create(tmp_path / "foreign", domain=DOMAIN).issue_node(
        "n1", acp_node_name=f"fd739fc23c3400000200000064000002@{DOMAIN}")
    config.ldevid_cert.parent.mkdir(parents=True)
    config.ldevid_cert.write_bytes(foreign.cert_path.read_bytes())
    config.ldevid_key.write_bytes(foreign.key_path.read_bytes())
    with pytest.raises(RegistrarSetupError) as exc:
        boot(config)
    assert "not issued by the domain CA" in one_line(exc)
    config.ldevid_cert.unlink()
    boot(config)
    config.ldevid_key.write_bytes(foreign.key_path.read_bytes())
    with pytest.raises(RegistrarSetupError) as exc:
        boot(config)
    assert "ldevid_key" in one_line(exc)


def test_corrupt_domain_ca_and_missing_domain_are_one_line(tmp_path) -> None:
    config = make_config(tmp_path)
    boot(config)
    (config.registrar_dir / CA_KEY_NAME).write_bytes(b"garbage")
    with pytest.raises(RegistrarSetupError) as exc:
        boot(config)
    assert "domain CA" in one_line(exc)
    with pytest.raises(RegistrarSetupError, match="registrar_domain"):
        bootstrap_registrar(AcpConfig(), tmp_path / "a", tmp_path / "b", tmp_path / "c")


def test_trust_anchors_without_the_domain_ca_are_refused_missing_ones_written(tmp_path) -> None:
    config = make_config(tmp_path)
    boot(config)
    config.trust_anchors.unlink()
    assert boot(config) is False and config.trust_anchors.exists()
    config.trust_anchors.write_bytes(TestCA.create(tmp_path / "x").cert_path.read_bytes())
    with pytest.raises(RegistrarSetupError, match="does not hold the domain CA"):
        boot(config)


# --- flooding ---------------------------------------------------------------------------------

def test_flood_item_is_the_rfc_8995_objective_and_the_proxy_parses_it() -> None:
    items = flood_items("fd73:9fc2:3c34::200:0:6400:2", 8443)
    wire = codec.encode(Flood(7, bytes(16), FLOOD_TTL_MS, tuple(items)))
    tagged = codec.decode(wire).objectives[0]
    assert tuple(tagged.objective) == ("AN_join_registrar", 4, 255, "EST-TLS")
    assert tuple(tagged.locator) == (103, bytes.fromhex("fd739fc23c340000020000006400" "0002"),
                                     6, 8443)
    found = registrar_from_flood(tagged.objective.name, tagged.objective.value, tagged.locator)
    assert found is not None and found.port == 8443
    assert ipaddress.IPv6Address(found.address) == \
        ipaddress.IPv6Address("fd73:9fc2:3c34::200:0:6400:2")


@dataclass
class FakeGrasp:
    asas: list[Any] = field(default_factory=list)
    objectives: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)
    floods: list[tuple[int, list[Any]]] = field(default_factory=list)
    deregistered: list[Any] = field(default_factory=list)

    def register_asa(self, name: str) -> Any:
        self.asas.append(name)
        return ("asa", name)

    def register_objective(self, asa: Any, objective: Any, **kw: Any) -> None:
        self.objectives.append((objective, kw))

    def flood(self, asa: Any, ttl_ms: int, items: Any) -> int:
        self.floods.append((ttl_ms, list(items)))
        return 1

    def deregister_asa(self, asa: Any) -> None:
        self.deregistered.append(asa)


@dataclass
class FakeAcpGrasp:
    """The `acp_grasp` port (AcpGraspPort) of a node whose ACP GRASP runs."""
    api: FakeGrasp

    def asa_api(self) -> Any:
        return self.api

    async def find_est_server(self) -> tuple[str, int] | None:
        return None


class FakeProxy:
    """Listens as the join proxy part does: RegistrarHeard on the bus."""
    def __init__(self, bus: EventBus) -> None:
        self.heard: list[tuple[str, int, int]] = []
        bus.subscribe(RegistrarHeard, lambda ev: self.heard.append((ev.address, ev.port,
                                                                    ev.ttl_ms)))


def test_announce_floods_and_tells_the_local_join_proxy(tmp_path) -> None:
    ctx = NodeContext(make_config(tmp_path), EventBus(), ControlServer(tmp_path / "s"))
    grasp, proxy = FakeGrasp(), FakeProxy(ctx.bus)
    ctx.ports = Ports(acp_grasp=FakeAcpGrasp(grasp))
    service = RegistrarPart(ctx)
    service.address, service.port = "fd00::1:2", 8443
    service._start_flooding()
    service.announce()
    service.announce()
    (objective, kw), = grasp.objectives
    assert tuple(objective) == ("AN_join_registrar", 4, 255, "EST-TLS") and kw["discoverable"]
    assert [ttl for ttl, _ in grasp.floods] == [180000, 180000]
    assert grasp.floods[0][1] == flood_items("fd00::1:2", 8443)
    assert proxy.heard == [("fd00::1:2", 8443, 180000)] * 2
    asyncio.run(service.stop())
    assert grasp.deregistered and proxy.heard[-1] == ("fd00::1:2", 8443, 0)
    assert service.status()["floods_sent"] == 2


def test_a_new_acp_grasp_interface_brings_an_announcement(tmp_path) -> None:
    ctx = NodeContext(make_config(tmp_path), EventBus(), ControlServer(tmp_path / "s"))
    grasp = FakeGrasp()
    ctx.ports = Ports(acp_grasp=FakeAcpGrasp(grasp))
    service = RegistrarPart(ctx)
    service.address, service.port = "fd00::1:2", 8443
    service._start_flooding()
    ctx.bus.publish(AcpGraspInterfaceUp("acp_peer1"))
    assert len(grasp.floods) == 1
    asyncio.run(service.stop())
    ctx.bus.publish(AcpGraspInterfaceUp("acp_peer2"))  # unsubscribed when stopped
    assert len(grasp.floods) == 1


def test_without_grasp_only_the_local_proxy_hears(tmp_path, caplog) -> None:
    ctx = NodeContext(make_config(tmp_path), EventBus(), ControlServer(tmp_path / "s"))
    proxy = FakeProxy(ctx.bus)  # no acp_grasp port: the part degrades to the local proxy
    service = RegistrarPart(ctx)
    service.address, service.port = "fd00::1:2", 8443
    service._start_flooding()
    service._start_flooding()
    service.announce()
    assert proxy.heard == [("fd00::1:2", 8443, 180000)]
    assert caplog.text.count("no ACP GRASP") == 1
    assert service.status()["flooding"] is False


def test_start_without_identity_reports_the_problem(tmp_path) -> None:
    config = make_config(tmp_path)
    ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "s"))
    service = RegistrarPart(ctx)

    async def main() -> dict[str, Any]:
        await service.start()
        reply = await ctx.control.dispatch(b'{"cmd": "registrar"}')
        await service.stop()
        return reply
    reply = asyncio.run(main())
    assert reply["ok"] and reply["result"]["running"] is False
    assert "no LDevID" in reply["result"]["problem"]


# --- acpctl registrar ------------------------------------------------------------------------

STATUS = {"running": True, "domain": DOMAIN, "port": 8443, "enrolled": 2, "address": "fd00::2",
          "counters": {"simpleenroll 200": 2},
          "worker": {"pid": None, "running": False, "processes": 0, "starts": 3, "crashes": 1,
                     "connections": 7, "last_exit": -9, "last_error": "exit -9: no output",
                     "probes": 2, "crl_served": 0},
          "recent_refusals": [{"time": 0, "who": "pledge SN-9", "status": 403, "reason": "nope"}]}


def run_acpctl(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="acpctl")
    parser.add_argument("--socket", type=Path)
    register(parser.add_subparsers(dest="command", required=True))

    async def main() -> int:
        server = ControlServer(tmp_path / "acpd.sock")
        server.register("registrar", lambda _req: STATUS)
        await server.start()
        try:
            args = parser.parse_args(["--socket", str(server.path), "registrar", *argv])
            return await asyncio.get_running_loop().run_in_executor(None, args.func, args)
        finally:
            await server.stop()
    return asyncio.run(main())


def test_acpctl_registrar_table_and_json(tmp_path, capsys) -> None:
    assert run_acpctl(tmp_path) == 0
    out = capsys.readouterr().out
    assert "domain            acp.example.com" in out and "pledge SN-9" in out
    assert "simpleenroll 200" in out
    assert "not running (starts on demand); starts 3, crashes 1, connections 7, probes 2" in out
    assert "worker_error      exit -9: no output" in out
    assert run_acpctl(tmp_path, "--json") == 0
    assert json.loads(capsys.readouterr().out) == STATUS


def test_running_registrar_renews_its_own_ldevid_when_due(tmp_path) -> None:
    """The worker's side (RegistrarService; the part asks a worker when `renew_at` passed)."""
    from acp_openwrt.brski.registrar.service import RegistrarService
    from acp_openwrt.identity.summary import load_identity_summary
    config = make_config(tmp_path)
    boot(config)
    service = RegistrarService(config, load_identity_summary(config.ldevid_cert)["acp_address"])
    service.open()
    try:
        old = service.registrar.cert
        assert service.renew_if_due() is False
        assert service.renew_at() > dt.datetime.now(dt.UTC).timestamp()
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=70)
        assert service.renew_if_due(now=later) is True
        new = load_certificate(config.ldevid_cert)
        assert new == service.registrar.cert != old
        assert find_acp_node_name(new).text == find_acp_node_name(old).text
        assert service.registrar._cert_der == new.public_bytes(serialization.Encoding.DER)
        assert service.state()["enrolled"] == 0
    finally:
        service.close()
