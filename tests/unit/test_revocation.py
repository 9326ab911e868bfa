"""Revocation (RFC 8994 §6.2.3 rule 3, §6.2.5.3): the CRL and its distribution point, the
registrar's store and `revoke`/`revoked` commands, renewal of a revoked certificate refused,
the node's CRL keeper (fake clock), its part against a real HTTP CRL server on ::1, and the
channels' peer check with a revoked set."""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski import wellknown
from acp_openwrt.brski.http import Request
from acp_openwrt.brski.pledge.core import generate_key
from acp_openwrt.brski.registrar.allocation import Allocator
from acp_openwrt.brski.registrar.bootstrap import bootstrap_registrar
from acp_openwrt.brski.registrar.core import Now, Registrar, read_clock
from acp_openwrt.brski.registrar.domain_ca import DomainCA
from acp_openwrt.brski.registrar.revocation import (
    CrlPublisher,
    RevocationError,
    RevocationStore,
    parse_serial,
    serve_crl,
)
from acp_openwrt.brski.registrar.service import RegistrarService
from acp_openwrt.brski.registrar.worker_protocol import crl_path
from acp_openwrt.channels.peer_check import check_peer
from acp_openwrt.channels.revocation import RevocationView
from acp_openwrt.commands.registrar import register
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.api import ANSWERS, RevocationStatus, problems
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import ChannelUp, EventBus, RevocationUpdated
from acp_openwrt.identity.certificate import find_acp_node_name, load_certificate
from acp_openwrt.identity.summary import load_identity_summary
from acp_openwrt.node_context import NodeContext
from acp_openwrt.revocation.crl import (
    CrlError,
    build_crl,
    crl_issuer,
    crl_number,
    crl_pem,
    crl_url,
    crl_urls,
    load_crl,
    load_crls,
    revocation_of,
    split_url,
)
from acp_openwrt.revocation.keeper import CrlKeeper, Fetch, revocation_problem
from acp_openwrt.revocation.part import RevocationPart

DOMAIN = "acp.example.com"
NOW = dt.datetime(2026, 12, 6, 5, 0, tzinfo=dt.UTC)
URL = crl_url("fd00::1")


class Pki:
    def __init__(self, tmp: Path, domain: str = DOMAIN) -> None:
        self.ca = DomainCA.load_or_create(tmp / f"ca-{domain}.crt", tmp / f"ca-{domain}.key",
                                          domain=domain)
        self.alloc = Allocator(tmp / f"alloc-{domain}.db", domain=domain)
        self.store = RevocationStore(self.alloc.path)

    def issue(self, serial: str, url: str | None = URL) -> x509.Certificate:
        allocation = self.alloc.allocate(serial)
        cert = self.ca.issue(generate_key().public_key(), allocation.acp_node_name,
                             address=allocation.address.address, crl_url=url, now=NOW)
        self.store.record_issued(cert)
        return cert


def name_of(cert: x509.Certificate) -> str:
    found = find_acp_node_name(cert)
    assert found is not None
    return found.text


# --- the CRL and its distribution point ------------------------------------------------------

def test_crl_url_is_an_ipv6_literal_on_the_acp_and_splits_back() -> None:
    assert crl_url("fd00:0::1") == "http://[fd00::1]/acp.crl"
    assert crl_url("fd00::1", 8080) == "http://[fd00::1]:8080/acp.crl"
    assert split_url("http://[fd00::1]/acp.crl") == ("fd00::1", 80, "/acp.crl")
    assert split_url("http://[fd00::1]:8080/x") == ("fd00::1", 8080, "/x")
    for bad in ("http://crl.example.com/acp.crl", "https://[fd00::1]/", "http://[zz]/",
                "http://[fd00::1]:0/"):
        with pytest.raises(CrlError):
            split_url(bad)


def test_issued_certificates_name_the_crldp(tmp_path) -> None:
    pki = Pki(tmp_path)
    assert crl_urls(pki.issue("SN-1")) == [URL]
    assert crl_urls(pki.issue("SN-2", url=None)) == []


def test_crl_build_parse_and_lookup(tmp_path) -> None:
    pki, other = Pki(tmp_path), Pki(tmp_path, "other.example.com")
    revoked, kept = pki.issue("SN-1"), pki.issue("SN-2")
    crl = build_crl(pki.ca.certificate, pki.ca.key, [_entry(revoked)], now=NOW, number=7)
    der = crl.public_bytes(serialization.Encoding.DER)
    for data in (der, crl_pem([(None, crl)])):
        again = load_crl(data)
        assert crl_number(again) == 7
        assert revocation_of(again, revoked) == NOW
        assert revocation_of(again, kept) is None
    assert [(url, c.der) for url, c in load_crls(crl_pem([(URL, crl), (None, crl)]))] == \
        [(URL, der), (None, der)]
    ca_der = pki.ca.certificate.public_bytes(serialization.Encoding.DER)
    assert crl_issuer(crl, [other.ca.certificate, pki.ca.certificate]).der == ca_der
    with pytest.raises(CrlError, match="not signed by one of our trust anchors"):
        crl_issuer(crl, [other.ca.certificate])
    with pytest.raises(CrlError):
        load_crl(b"garbage")
    # a certificate of another CA with the same serial is not revoked by this CRL
    foreign = other.issue("SN-1")
    assert revocation_of(crl, foreign) is None or foreign.issuer == revoked.issuer


def _entry(cert: x509.Certificate) -> Any:
    from acp_openwrt.revocation.crl import RevokedEntry
    return RevokedEntry(cert.serial_number, NOW)


# --- the registrar's store and CRL -------------------------------------------------------------

def test_store_revokes_names_and_serials(tmp_path) -> None:
    pki = Pki(tmp_path)
    first, second = pki.issue("SN-1"), pki.issue("SN-1")   # renewal: same name, two certs
    other = pki.issue("SN-2")
    added = pki.store.revoke(name_of(first), NOW, "stolen")
    assert {r.serial for r in added} == {f"{first.serial_number:x}", f"{second.serial_number:x}"}
    assert all(r.reason == "stolen" and r.acp_node_name == name_of(first) for r in added)
    assert pki.store.revoke(name_of(first), NOW) == []          # again: nothing new
    assert pki.store.name_revoked(name_of(first))
    assert pki.store.refusal(first) and pki.store.refusal(other) is None
    assert pki.store.revoke(f"0x{other.serial_number:X}", NOW)[0].acp_node_name == name_of(other)
    assert pki.store.is_revoked(other.serial_number) and not pki.store.name_revoked(name_of(other))
    assert pki.store.revision() == 3
    with pytest.raises(RevocationError, match="no certificate was issued"):
        pki.store.revoke("fd00000000000000000000000000ffff@acp.example.com", NOW)
    with pytest.raises(RevocationError):
        pki.store.revoke("not-hex", NOW)
    assert parse_serial("0a:bc") == 0xABC


def test_store_survives_reopening_the_database(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    pki.store.revoke(name_of(cert), NOW)
    pki.store.close()
    again = RevocationStore(pki.alloc.path)
    assert again.is_revoked(cert.serial_number) and again.name_revoked(name_of(cert))


def test_publisher_rebuilds_on_revocation_and_numbers_only_go_up(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    publisher = CrlPublisher(pki.ca, pki.store)
    first = load_crl(publisher.current(NOW))
    assert revocation_of(first, cert) is None
    assert publisher.current(NOW + dt.timedelta(hours=1)) == publisher.current(NOW)  # cached
    pki.store.revoke(name_of(cert), NOW)
    second = load_crl(publisher.current(NOW + dt.timedelta(minutes=1)))
    assert revocation_of(second, cert) is not None and crl_number(second) > crl_number(first)
    third = load_crl(publisher.current(NOW + dt.timedelta(hours=13)))  # half the validity
    assert crl_number(third) > crl_number(second)
    assert CrlPublisher(pki.ca, pki.store).current(NOW) != b""           # a restart
    assert crl_number(load_crl(CrlPublisher(pki.ca, pki.store).current(NOW))) > crl_number(third)


def _reenroll_request(cert_key: Any, name: str) -> Request:
    from acp_openwrt.brski.csr import build_csr
    der = build_csr(cert_key, name).public_bytes(serialization.Encoding.DER)
    return Request("POST", wellknown.SIMPLE_REENROLL, {"content-type": wellknown.PKCS10},
                   base64.encodebytes(der))


class PeerTls:
    def __init__(self, cert: x509.Certificate) -> None:
        self.der = cert.public_bytes(serialization.Encoding.DER)

    def get_extra_info(self, name: str) -> Any:
        der = self.der

        class SslObject:
            def getpeercert(self, binary_form: bool = False) -> bytes:
                return der
        return SslObject() if name == "ssl_object" else None


def test_renewal_of_a_revoked_certificate_is_refused(tmp_path) -> None:
    pki = Pki(tmp_path)
    key = generate_key()
    allocation = pki.alloc.allocate("SN-1")
    cert = pki.ca.issue(key.public_key(), allocation.acp_node_name,
                        address=allocation.address.address, crl_url=URL)
    pki.store.record_issued(cert)
    own_key = generate_key()
    own = pki.ca.issue(own_key.public_key(), pki.alloc.allocate("registrar").acp_node_name,
                       registrar=True)
    registrar = Registrar(pki.ca, pki.alloc, own, own_key, revocation=pki.store, crl_url=URL)

    def renew() -> Any:
        return asyncio.run(registrar.handle(_reenroll_request(key, allocation.acp_node_name),
                                            PeerTls(cert), now=read_clock()))  # type: ignore
    answer = renew()
    assert answer.status == 200, answer.body
    from acp_openwrt.brski.cms import load_certs_only
    renewed = load_certs_only(base64.b64decode(answer.body))[0]
    assert crl_urls(renewed) == [URL]                      # EST issues with the CRLDP
    assert pki.store.refusal(renewed) is None
    pki.store.revoke(f"{cert.serial_number:x}", NOW)
    refused = renew()
    assert refused.status == 403 and b"is revoked" in refused.body
    assert registrar.counters["simplereenroll 403"] == 1


def test_a_revoked_name_gets_no_new_enrolment(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    own_key = generate_key()
    own = pki.ca.issue(own_key.public_key(), pki.alloc.allocate("registrar").acp_node_name,
                       registrar=True)
    registrar = Registrar(pki.ca, pki.alloc, own, own_key, revocation=pki.store)
    pki.store.revoke(name_of(cert), NOW)
    registrar.vouched["SN-1"] = read_clock().mono
    from acp_openwrt.lab.masa import Masa
    idevid = Masa.create(tmp_path / "masa").issue_idevid("SN-1").certificate
    name, _, refusal = registrar._name_for(idevid, read_clock())
    assert name is None and "revoked" in refusal


# --- the registrar part: commands, CRL served -----------------------------------------------

def _registrar_service(tmp: Path) -> tuple[RegistrarService, AcpConfig]:
    """The registrar worker's side (RegistrarPart's commands: test_registrar_worker.py)."""
    node = tmp / "node"
    config = AcpConfig(registrar=True, registrar_domain=DOMAIN, registrar_dir=tmp / "registrar",
                       ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                       trust_anchors=node / "ta.pem", run_dir=tmp / "run", log_dir=tmp / "log")
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    service = RegistrarService(config, load_identity_summary(config.ldevid_cert)["acp_address"])
    service.open()
    return service, config


def test_registrar_revoke_and_revoked_view_and_the_crl_file(tmp_path) -> None:
    service, config = _registrar_service(tmp_path)
    try:
        own = load_certificate(config.ldevid_cert)
        assert crl_urls(own) == [crl_url(service.address)]
        assert service.registrar is not None and service.registrar.crl_url == crl_urls(own)[0]
        key = generate_key()
        allocation = service.files.allocator.allocate("SN-1")  # type: ignore[union-attr]
        cert = service.files.ca.issue(key.public_key(), allocation.acp_node_name)  # type: ignore
        service.revocation.record_issued(cert)  # type: ignore[union-attr]
        answer = service.revoke(allocation.acp_node_name, "stolen")
        assert problems(answer, ANSWERS["revoke"]) == []
        assert answer["revoked"][0]["serial"] == f"{cert.serial_number:x}"
        listing = service.revoked_view()
        assert problems(listing, ANSWERS["revoked"]) == []
        assert listing["revoked_names"] == [allocation.acp_node_name]
        written = crl_path(config.registrar_dir).read_bytes()   # what acpd serves
        assert revocation_of(load_crl(written), cert) is not None
        assert load_crl(written).number == answer["crl_number"] == service.state()["crl_number"]
        assert service.state()["revoked"] == 1
        with pytest.raises(RevocationError, match="no certificate was issued"):
            service.revoke("nobody@acp.example.com")
    finally:
        service.close()


def test_crl_served_over_http(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    pki.store.revoke(name_of(cert), NOW)
    publisher = CrlPublisher(pki.ca, pki.store)

    async def main() -> tuple[bytes, int]:
        from acp_openwrt.revocation.part import fetch_crl
        server = await serve_crl(publisher, host="::1", port=0)
        port = server.sockets[0].getsockname()[1]
        try:
            data = await fetch_crl(crl_url("::1", port), None)
            from acp_openwrt.brski.http import HttpError
            with pytest.raises(HttpError, match="404"):
                await fetch_crl(f"http://[::1]:{port}/other", None)
            return data, publisher.served
        finally:
            server.close()
            await server.wait_closed()
    data, served = asyncio.run(main())
    assert revocation_of(load_crl(data), cert) is not None and served == 1


# --- acpctl registrar revoke / revoked ---------------------------------------------------------

REVOKED = {"serial": "abc", "acp_node_name": "fd00@acp.example.com", "revoked": 0.0,
           "reason": "stolen"}


def run_acpctl(tmp_path: Path, *argv: str) -> tuple[int, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(prog="acpctl")
    parser.add_argument("--socket", type=Path)
    register(parser.add_subparsers(dest="command", required=True))
    seen: list[dict[str, Any]] = []

    def revoke(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return {"target": request["target"], "revoked": [REVOKED], "crl_number": 3}

    async def main() -> int:
        server = ControlServer(tmp_path / "acpd.sock")
        server.register("revoke", revoke)
        server.register("revoked", lambda _r: {"crl_url": URL, "crl_number": 3,
                                               "revoked": [REVOKED], "revoked_names": []})
        await server.start()
        try:
            args = parser.parse_args(["--socket", str(server.path), "registrar", *argv])
            return await asyncio.get_running_loop().run_in_executor(None, args.func, args)
        finally:
            await server.stop()
    return asyncio.run(main()), seen


def test_acpctl_registrar_revoke_and_list(tmp_path, capsys) -> None:
    code, seen = run_acpctl(tmp_path, "revoke", "fd00@acp.example.com", "--reason", "stolen")
    assert code == 0 and seen[0]["target"] == "fd00@acp.example.com"
    assert seen[0]["reason"] == "stolen"
    out = capsys.readouterr().out
    assert "abc" in out and "stolen" in out and "CRL number 3" in out
    for word in ("revoked", "list"):
        assert run_acpctl(tmp_path, word)[0] == 0
        assert "http://[fd00::1]/acp.crl" in capsys.readouterr().out
    assert run_acpctl(tmp_path, "revoked", "--json")[0] == 0
    assert json.loads(capsys.readouterr().out)["crl_number"] == 3


# --- the node's keeper (fake clock) ------------------------------------------------------------

def _crl(pki: Pki, revoked: list[x509.Certificate], number: int) -> bytes:
    crl = build_crl(pki.ca.certificate, pki.ca.key, [_entry(c) for c in revoked], now=NOW,
                    number=number)
    return crl.public_bytes(serialization.Encoding.DER)


def test_keeper_fetches_at_start_then_every_refresh(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    keeper = CrlKeeper([pki.ca.certificate], refresh=300)
    keeper.add_urls([URL], now=0.0)
    assert keeper.next_timer() == 0.0
    assert keeper.handle_timer(0.0) == [Fetch(URL)]
    assert keeper.next_timer() is None                     # in flight
    assert keeper.fetched(URL, _crl(pki, [], 1), 1.0, NOW) is False
    assert keeper.next_timer() == 301.0
    assert keeper.handle_timer(300.0) == []
    assert keeper.handle_timer(301.0) == [Fetch(URL)]
    assert keeper.fetched(URL, _crl(pki, [cert], 2), 302.0, NOW) is True
    assert revocation_problem(cert, keeper.revoked()) is not None
    status = keeper.status(302.0, NOW)
    assert status["revoked"] == 1 and status["crls"][0]["crl_number"] == 2
    assert status["sources"][0]["next_fetch_in_s"] == 300.0


def test_keeper_keeps_the_last_good_crl_and_backs_off_when_unreachable(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    keeper = CrlKeeper([pki.ca.certificate], refresh=300)
    keeper.add_urls([URL], now=0.0)
    keeper.handle_timer(0.0)
    keeper.fetched(URL, _crl(pki, [cert], 5), 0.0, NOW)
    now, delays = 300.0, []
    for _ in range(7):
        assert keeper.handle_timer(now) == [Fetch(URL)]
        keeper.failed(URL, "connection refused", now, NOW)
        due = keeper.next_timer()
        assert due is not None
        delays.append(due - now)
        now = due
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert revocation_problem(cert, keeper.revoked())     # still revoked: the last good CRL
    keeper.handle_timer(now)
    keeper.fetched(URL, _crl(pki, [], 4), now, NOW)        # older than the one held: refused
    assert revocation_problem(cert, keeper.revoked()) and keeper.refused == 1
    assert "older" in (keeper.sources[URL].last_error or "")


def test_keeper_without_any_crl_refuses_nothing(tmp_path) -> None:
    pki = Pki(tmp_path)
    keeper = CrlKeeper([pki.ca.certificate])
    keeper.add_urls([URL], 0.0)
    keeper.handle_timer(0.0)
    keeper.failed(URL, "no route", 0.0, NOW)
    assert keeper.revoked() == frozenset()
    assert revocation_problem(pki.issue("SN-1"), keeper.revoked()) is None


def test_keeper_refuses_a_foreign_crl_and_refreshes_on_channel_up(tmp_path) -> None:
    pki, other = Pki(tmp_path), Pki(tmp_path, "other.example.com")
    keeper = CrlKeeper([pki.ca.certificate], refresh=300, min_gap=5)
    keeper.add_urls([URL], 0.0)
    keeper.handle_timer(0.0)
    assert keeper.fetched(URL, _crl(other, [other.issue("X")], 1), 1.0, NOW) is False
    assert "not signed" in (keeper.sources[URL].last_error or "") and not keeper.revoked()
    assert keeper.handle_timer(11.0) == [Fetch(URL)]
    keeper.fetched(URL, _crl(pki, [], 1), 12.0, NOW)
    keeper.refresh_all(14.0)                               # too soon after the last fetch
    assert keeper.next_timer() == 312.0
    keeper.refresh_all(20.0)
    assert keeper.next_timer() == 20.0


def test_loaded_file_counts_until_a_newer_crl_arrives(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    keeper = CrlKeeper([pki.ca.certificate])
    assert keeper.load([(URL, load_crl(_crl(pki, [cert], 3)))], NOW) == []
    assert revocation_problem(cert, keeper.revoked())
    assert keeper.load([(None, load_crl(_crl(Pki(tmp_path, "x.example"), [], 9)))], NOW)
    keeper.add_urls([URL], 0.0)
    keeper.handle_timer(0.0)
    keeper.fetched(URL, _crl(pki, [], 2), 0.0, NOW)    # older than the kept one from URL
    assert revocation_problem(cert, keeper.revoked())


def test_two_registrars_one_ca_each_crl_counts(tmp_path) -> None:
    """Registrars sharing the domain CA serve their own revocations: the node keeps both."""
    pki = Pki(tmp_path)
    first, second = pki.issue("SN-1"), pki.issue("SN-2")
    other_url = crl_url("fd00::2")
    keeper = CrlKeeper([pki.ca.certificate], max_sources=2)
    assert keeper.add_urls([URL], 0.0) == [URL]
    assert keeper.add_urls([URL, other_url, crl_url("fd00::3")], 0.0) == [other_url]  # bounded
    assert keeper.handle_timer(0.0) == [Fetch(URL), Fetch(other_url)]
    keeper.fetched(URL, _crl(pki, [first], 7), 0.0, NOW)
    keeper.fetched(other_url, _crl(pki, [second], 2), 0.0, NOW)  # a lower number elsewhere
    assert revocation_problem(first, keeper.revoked())
    assert revocation_problem(second, keeper.revoked())
    assert {url for url, _ in keeper.crls()} == {URL, other_url}


def test_channels_learn_distribution_points_of_verified_peers(tmp_path) -> None:
    pki = Pki(tmp_path)
    view = RevocationView()
    der = pki.issue("SN-1", url=crl_url("fd00::2")).public_bytes(serialization.Encoding.DER)
    assert view.learn([der, b"junk"]) == (crl_url("fd00::2"),)
    assert view.learn([der]) == ()


# --- the node's part (HTTP on ::1, no namespace) ---------------------------------------------

def _node(tmp: Path, pki: Pki, url: str) -> AcpConfig:
    key = generate_key()
    allocation = pki.alloc.allocate("NODE")
    cert = pki.ca.issue(key.public_key(), allocation.acp_node_name,
                        address=allocation.address.address, crl_url=url)
    node = tmp / "node"
    node.mkdir(exist_ok=True)
    (node / "ldevid.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (node / "ta.pem").write_bytes(pki.ca.certificate.public_bytes(serialization.Encoding.PEM))
    return AcpConfig(ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                     trust_anchors=node / "ta.pem", run_dir=tmp / "run", log_dir=tmp / "log",
                     crl_refresh=10)


def test_part_fetches_publishes_keeps_and_restarts_without_the_crldp(tmp_path) -> None:
    pki = Pki(tmp_path)
    victim = pki.issue("VICTIM")
    pki.store.revoke(name_of(victim), NOW)
    publisher = CrlPublisher(pki.ca, pki.store)

    async def main() -> None:
        server = await serve_crl(publisher, host="::1", port=0)
        port = server.sockets[0].getsockname()[1]
        config = _node(tmp_path, pki, crl_url("::1", port))
        ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "s"),
                          identity={"acp_address": "fd00::9", "acp_domain": DOMAIN})
        heard: list[RevocationUpdated] = []
        ctx.bus.subscribe(RevocationUpdated, heard.append)
        part = RevocationPart(ctx, namespace=None)
        await part.start()
        assert heard == [RevocationUpdated(frozenset())]       # nothing kept yet
        for _ in range(100):
            if len(heard) == 2:
                break
            await asyncio.sleep(0.02)
        assert revocation_problem(victim, heard[-1].revoked)
        status = part.status()
        assert problems(status, RevocationStatus) == []
        assert status["revoked"] == 1 and status["sources"][0]["last_error"] is None
        assert (tmp_path / "node" / "acp-crl.pem").exists()
        ctx.bus.publish(ChannelUp("fe80::1", "eth0", "acp_1", "x"))   # within the gap: no fetch
        await part.stop()
        server.close()
        await server.wait_closed()
        # restart with the CRLDP gone: the kept CRL still revokes; the failure is shown
        heard.clear()
        again = RevocationPart(ctx, namespace=None)
        await again.start()
        assert revocation_problem(victim, heard[0].revoked)
        for _ in range(100):
            if again.status()["sources"][0]["failures"]:
                break
            await asyncio.sleep(0.02)
        assert again.status()["sources"][0]["last_error"]
        assert again.status()["revoked"] == 1
        await again.stop()
    asyncio.run(main())


# --- the channels' check ---------------------------------------------------------------------

def test_check_peer_refuses_a_revoked_certificate(tmp_path) -> None:
    pki = Pki(tmp_path)
    cert = pki.issue("SN-1")
    der = cert.public_bytes(serialization.Encoding.DER)
    address = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.IPAddress)[0]
    view = RevocationView()
    ok = check_peer(str(address), [der], [], [pki.ca.certificate], DOMAIN,
                    revoked=view.problem)
    assert ok.ok, ok.reason
    view.update(frozenset({(cert.issuer.public_bytes(), cert.serial_number)}))
    refused = check_peer(str(address), [der], [], [pki.ca.certificate], DOMAIN,
                         revoked=view.problem)
    assert not refused.ok and "revoked" in refused.reason
    # a renewed certificate next to the revoked one in charon's cache passes
    renewed = pki.issue("SN-1")
    both = check_peer(str(address), [der, renewed.public_bytes(serialization.Encoding.DER)], [],
                      [pki.ca.certificate], DOMAIN, revoked=view.problem)
    assert both.ok


def test_now_type_is_the_registrars() -> None:
    assert isinstance(read_clock(), Now)


# --- acpctl diagnose: "CRL fresh?" (RFC 8994 §9.1) -------------------------------------------

def _diagnose_crl(revocation: dict[str, Any] | None) -> Any:
    from acp_openwrt.diagnosis import diagnose
    status: dict[str, Any] = {"enrolled": True, "identity": {"acp_node_name": "x"}}
    if revocation is not None:
        status["revocation"] = revocation
    checks = {c.name: c for c in diagnose({"status": status}, NOW).checks}
    return checks.get("crl")


def test_diagnose_shows_the_crl_state() -> None:
    from acp_openwrt.diagnosis import Verdict
    assert _diagnose_crl(None) is None                     # no revocation part: no check
    source = {"url": URL, "in_flight": False, "failures": 0, "last_fetch": NOW.timestamp() - 30,
              "last_attempt": NOW.timestamp() - 30, "next_fetch_in_s": 270.0, "last_error": None}
    held = {"issuer": "CN=ACP domain CA", "crl_number": 4, "this_update": 0.0,
            "next_update": None, "stale": False, "revoked": 1, "url": URL}
    base = {"refresh_s": 300.0, "revoked": 1, "fetches": 1, "refused": 0, "file": None,
            "problem": None, "last_change": None}
    ok = _diagnose_crl({**base, "crls": [held], "sources": [source]})
    assert ok.verdict is Verdict.OK and ok.detail == "CRL #4, 1 revoked, fetched 30 s ago"
    failing = {**source, "failures": 2, "last_error": "connection refused"}
    kept = _diagnose_crl({**base, "crls": [held], "sources": [failing]})
    assert kept.verdict is Verdict.WARN and "kept while" in kept.detail
    none = _diagnose_crl({**base, "crls": [], "sources": [failing]})
    assert none.verdict is Verdict.WARN and "channels still form" in none.detail
    stale = _diagnose_crl({**base, "crls": [{**held, "stale": True}], "sources": [source]})
    assert stale.verdict is Verdict.WARN and "next update" in stale.detail
    nodp = _diagnose_crl({**base, "crls": [], "sources": []})
    assert "no CRL distribution point" in nodp.detail


# --- the channels part: an up channel to a newly revoked peer is closed ------------------------

def test_channels_close_an_up_channel_when_its_peer_is_revoked(tmp_path, monkeypatch) -> None:
    import concurrent.futures

    from acp_openwrt.channels import xfrm_interface as xi
    from acp_openwrt.channels.part import ChannelPart
    from acp_openwrt.events import ChannelDown

    pki = Pki(tmp_path)
    peer = pki.issue("PEER")
    address = str(peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                  .get_values_for_type(x509.IPAddress)[0])
    calls: list[tuple[str, ...]] = []

    class FakeCharon:
        def peer_certificates(self, remote_id: str) -> tuple[list[bytes], list[bytes]]:
            return [peer.public_bytes(serialization.Encoding.DER)], []

        def __getattr__(self, name: str) -> Any:
            return lambda *args: calls.append((name, *map(str, args)))

    monkeypatch.setattr(xi, "delete_if_id", lambda if_id: True)
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    downs: list[ChannelDown] = []
    ctx.bus.subscribe(ChannelDown, downs.append)
    part = ChannelPart(ctx)
    part._anchors, part._domain = [pki.ca.certificate], DOMAIN

    async def no_prepare(ch: Any) -> None:
        return None
    monkeypatch.setattr(part, "_prepare", no_prepare)

    async def main() -> None:
        ex = concurrent.futures.ThreadPoolExecutor(1)
        part._vici_ex = part._acp_ex = part._dull_ex = ex
        part.driver = FakeCharon()  # type: ignore[assignment]
        part.running = True
        ch = part.new_channel(("eth0", "fe80::2"))
        ch.fsm.adjacency_up(0.0)
        ch.fsm.child_up("7", "c1", True, address)
        actions = ch.fsm.peer_verified("7", 1, name_of(peer), 0.0)
        assert actions and ch.fsm.active
        ch.acp_ifname = "acp_2"
        # a CRL that revokes someone else changes nothing
        part._on_revocation(RevocationUpdated(frozenset({(peer.issuer.public_bytes(), 1)})))
        for task in list(part._tasks):
            await task
        assert ch.fsm.active and not calls
        part._on_revocation(RevocationUpdated(frozenset(
            {(peer.issuer.public_bytes(), peer.serial_number)})))
        for task in list(part._tasks):
            await task
        assert not ch.fsm.active and "revoked" in (ch.fsm.last_error or "")
        part.running = False
        ex.shutdown()
    asyncio.run(main())
    assert ("terminate_ike", "7") in calls
    assert [d.acp_ifname for d in downs] == ["acp_2"]
    assert part.revocation.closed == 1


def test_a_backup_carries_the_revocations(tmp_path) -> None:
    """The revocations live in allocations.db: `acpctl registrar backup`/`restore` keep them."""
    from acp_openwrt.brski.registrar.backup import restore_backup, write_backup
    service, config = _registrar_service(tmp_path / "old")
    try:
        key = generate_key()
        allocation = service.files.allocator.allocate("SN-1")  # type: ignore[union-attr]
        cert = service.files.ca.issue(key.public_key(), allocation.acp_node_name)  # type: ignore
        service.revocation.record_issued(cert)  # type: ignore[union-attr]
        service.revoke(allocation.acp_node_name, "stolen")
        write_backup(config.registrar_dir, tmp_path / "backup")
    finally:
        service.close()
    restore_backup(tmp_path / "backup", tmp_path / "new", domain=DOMAIN)
    store = RevocationStore(tmp_path / "new" / "allocations.db")
    assert store.is_revoked(cert.serial_number) and store.name_revoked(allocation.acp_node_name)
    store.close()


def test_a_peers_ca_is_kept_across_a_restart_and_checked_again(tmp_path: Path) -> None:
    """Another registrar's sub-CA, learned from a verified peer, is written beside the CRL
    file; a restarted node takes it back only if one of its anchors signed it (a look-alike
    with the same name and another key, or a stranger's, is left out)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from acp_openwrt.identity.cert_reader import Certificate
    from acp_openwrt.lab.pki import TestCA
    root = TestCA.create(tmp_path / "root", domain="acp.example.com")
    anchor = Certificate(root.certificate.public_bytes(Encoding.DER))
    sub = root.issue_intermediate("r2")
    look_alike = TestCA.create(tmp_path / "other", domain="acp.example.com").issue_intermediate(
        "r2", common_name=sub.certificate.subject.rfc4514_string().removeprefix("CN="))
    der = [c.certificate.public_bytes(Encoding.DER) for c in (sub, look_alike)]

    config = AcpConfig(run_dir=tmp_path / "run", crl_file=tmp_path / "acp.crl")
    ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "acpd.sock"))

    async def first_run() -> None:
        part = RevocationPart(ctx)
        part.keeper.anchors = [anchor]
        part.keeper.add_issuers(der)          # as if both had come from verified peers
        await part._save_issuers()

    async def second_run() -> list[str]:
        part = RevocationPart(ctx)
        part.keeper.anchors = [anchor]
        await part._restore_issuers()
        return [ca.der for ca in part.keeper.issuers]

    asyncio.run(first_run())
    assert (tmp_path / "acp.crl.issuers").read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert asyncio.run(second_run()) == [der[0]]
