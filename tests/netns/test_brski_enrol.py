"""BRSKI over a veth: registrar (+ bench MASA on its ::1) in n1, pledge in n2.

The pledge talks straight to the registrar's link-local address, standing in for a join proxy
(the proxy is tested in test_brski_proxy*.py). Every hostile case must end without an LDevID
and with a log line naming the reason.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski import wellknown
from acp_openwrt.brski.http import HttpConnection, HttpError
from acp_openwrt.brski.pledge.client import (
    IdentityPaths,
    Locator,
    PledgeClient,
    _connect,
    load_pledge_identity,
)
from acp_openwrt.brski.pledge.core import Enrolled, Refused
from acp_openwrt.brski.pledge.renewal import reenroll
from acp_openwrt.brski.registrar.allocation import Allocator
from acp_openwrt.brski.store import StoredIdentity
from acp_openwrt.brski.tls import provisional_client_context, server_context
from acp_openwrt.brski.voucher import new_nonce
from acp_openwrt.identity.address import address_from_name
from acp_openwrt.identity.node_name import parse_acp_node_name
from acp_openwrt.lab.masa import Masa, start_bench_registrar
from acp_openwrt.lab.pki import TestCA
from acp_openwrt.lab.topology import Topology
from acp_openwrt.netns import listener_in


@dataclass
class Outcome:
    result: Enrolled | Refused
    paths: IdentityPaths
    bench: Any
    masa: Masa
    locator: Locator
    pledge_ns: str


def run_case(link: Topology, tmp: Path, *, prepare: Callable[[Masa, Path], None] | None = None,
             register: bool = True, after: Callable[[Outcome], Any] | None = None) -> Outcome:
    registrar_node, pledge_node = link["n1"], link["n2"]
    ifname = pledge_node.ifname("n1")
    registrar_ll = registrar_node.link_local(registrar_node.ifname("n2"))
    pledge_node.link_local(ifname)  # our own source address must be ready too

    async def main() -> Outcome:
        masa = Masa.create(tmp / "vendor")
        await masa.serve(sock=listener_in(registrar_node.netns, "::1"))
        bench = await start_bench_registrar(tmp / "registrar", masa,
                                            sock=listener_in(registrar_node.netns, "::"),
                                            masa_namespace=registrar_node.netns)
        try:
            if prepare is not None:
                prepare(masa, tmp)
            device = masa.issue_idevid("SN-0001", register=register)
            paths = IdentityPaths(device.cert_path, device.key_path, tmp / "node/ldevid.crt",
                                  tmp / "node/ldevid.key", tmp / "node/trust-anchors.pem")
            client = PledgeClient(load_pledge_identity(device.cert_path, device.key_path,
                                                       masa.anchor_path),
                                  paths, namespace=pledge_node.netns)
            locator = Locator(registrar_ll, bench.port, ifname)
            outcome = Outcome(await client.attempt(locator), paths, bench, masa, locator,
                              pledge_node.netns)
            if after is not None:
                await after(outcome)
            return outcome
        finally:
            await bench.close()
            await masa.close()
    return asyncio.run(main())


def test_pledge_enrols_with_the_name_the_registrar_allocated(link, tmp_path) -> None:
    outcome = run_case(link, tmp_path)
    result = outcome.result
    assert isinstance(result, Enrolled), result
    # the registrar is stopped by now: its allocation is read back from its database
    allocator = Allocator(outcome.bench.directory / "allocations.db", domain="acp.example.com")
    allocation = allocator.lookup_name(result.acp_node_name)
    allocator.close()
    assert allocation is not None and allocation.serial == "SN-0001"
    stored = x509.load_pem_x509_certificate(outcome.paths.ldevid_cert.read_bytes())
    san = stored.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    address = address_from_name(parse_acp_node_name(result.acp_node_name)).address
    assert san.get_values_for_type(x509.IPAddress) == [address]
    assert outcome.paths.ldevid_key.stat().st_mode & 0o777 == 0o600
    anchors = x509.load_pem_x509_certificates(outcome.paths.trust_anchors.read_bytes())
    assert anchors == [outcome.bench.registrar.ca.certificate]
    kinds = [(t["kind"], t["status"]) for t in outcome.bench.registrar.telemetry]
    assert kinds == [("voucher_status", True), ("enrollstatus", True)]


def test_renewal_keeps_the_name_and_replaces_key_and_certificate(link, tmp_path) -> None:
    renewed: dict[str, x509.Certificate] = {}

    async def renew(outcome: Outcome) -> None:
        assert isinstance(outcome.result, Enrolled)
        stored = StoredIdentity(outcome.paths.ldevid_cert, outcome.paths.ldevid_key,
                                outcome.paths.trust_anchors)
        renewed["cert"] = await reenroll(outcome.locator, stored, namespace=outcome.pledge_ns)

    outcome = run_case(link, tmp_path, after=renew)
    assert isinstance(outcome.result, Enrolled)
    new = renewed["cert"]
    old = outcome.result.cert
    assert new.serial_number != old.serial_number
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert new.public_key().public_bytes(serialization.Encoding.DER, spki) != \
        old.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert x509.load_pem_x509_certificate(outcome.paths.ldevid_cert.read_bytes()) == new
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert outcome.bench.registrar.counters["simplereenroll 200"] == 1


def test_renewal_in_a_short_lived_process(link, tmp_path) -> None:
    """What acpd's BRSKI part runs (renewal_process.py): the same renewal in a new Python, the
    new identity stored; a refusal comes back as RenewalError with the EST server's reason."""
    from acp_openwrt.brski.pledge.plan import RenewalError
    from acp_openwrt.brski.pledge.renewal_process import reenroll as reenroll_in_process
    refused: dict[str, str] = {}

    async def renew(outcome: Outcome) -> None:
        assert isinstance(outcome.result, Enrolled)
        stored = StoredIdentity(outcome.paths.ldevid_cert, outcome.paths.ldevid_key,
                                outcome.paths.trust_anchors)
        await reenroll_in_process(outcome.locator, stored, namespace=outcome.pledge_ns)
        nowhere = StoredIdentity(tmp_path / "none.pem", tmp_path / "none.key",
                                 outcome.paths.trust_anchors)
        try:
            await reenroll_in_process(outcome.locator, nowhere, namespace=outcome.pledge_ns)
        except RenewalError as exc:
            refused["reason"] = str(exc)

    outcome = run_case(link, tmp_path, after=renew)
    assert isinstance(outcome.result, Enrolled)
    new = x509.load_pem_x509_certificate(outcome.paths.ldevid_cert.read_bytes())
    assert new.serial_number != outcome.result.cert.serial_number
    assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == \
        outcome.result.cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    assert outcome.bench.registrar.counters["simplereenroll 200"] == 1
    assert refused["reason"].startswith("no usable LDevID at ")


def test_strangers_cannot_report_status_over_real_tls(link, tmp_path, caplog) -> None:
    """Through the link, as through a join proxy: no client certificate (401), a certificate of
    no trusted issuer (TLS refuses it), another real pledge's IDevID (403), the enrolled
    pledge repeating itself (403). The log keeps one line per event."""
    caplog.set_level(logging.INFO)
    forged = {"version": 1, "status": False,
              "reason": "ok\nacpd: INFO acpd.brski.registrar: registrar issued root@evil"}
    answers: dict[str, Any] = {}

    async def strangers(outcome: Outcome) -> None:
        async def post(context: ssl.SSLContext | None, path: str) -> int:
            reader, writer = await _connect(outcome.locator, context, outcome.pledge_ns, 5.0)
            connection = HttpConnection(reader, writer, timeout=5.0)
            try:
                response = await connection.request("POST", path, json.dumps(forged).encode(),
                                                     {"Content-Type": wellknown.JSON})
                return response.status
            finally:
                await connection.close()
        anonymous = ssl.create_default_context()
        anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
        self_made = TestCA.create(tmp_path / "stranger").issue_node("stranger")
        other = outcome.masa.issue_idevid("SN-0002")
        for path in (wellknown.VOUCHER_STATUS, wellknown.ENROLL_STATUS):
            answers[("anonymous", path)] = await post(anonymous, path)
            answers[("other pledge", path)] = await post(
                provisional_client_context(other.cert_path, other.key_path), path)
            answers[("the pledge again", path)] = await post(
                provisional_client_context(outcome.paths.idevid_cert,
                                           outcome.paths.idevid_key), path)
            try:
                answers[("self-made", path)] = await post(
                    provisional_client_context(self_made.cert_path, self_made.key_path), path)
            except (ssl.SSLError, ConnectionError, OSError, HttpError) as exc:
                answers[("self-made", path)] = type(exc).__name__  # TLS 1.3: after the request

    outcome = run_case(link, tmp_path, after=strangers)
    assert isinstance(outcome.result, Enrolled)
    for path in (wellknown.VOUCHER_STATUS, wellknown.ENROLL_STATUS):
        assert answers[("anonymous", path)] == 401
        assert answers[("other pledge", path)] == 403
        assert answers[("the pledge again", path)] == 403
        assert answers[("self-made", path)] != 200
    registrar = outcome.bench.registrar
    assert [(t["kind"], t["status"]) for t in registrar.telemetry] == \
        [("voucher_status", True), ("enrollstatus", True)]
    assert registrar.counters["status dropped"] == 6
    lines = [r.getMessage() for r in caplog.records]
    assert not any("\n" in line or "root@evil" in line for line in lines)


def _evil_masa(masa: Masa, tmp: Path) -> None:
    masa.sign_with(Masa.create(tmp / "evil", name="evil"))


def _mangle(**changes: Any) -> Callable[[Masa, Path], None]:
    def prepare(masa: Masa, tmp: Path) -> None:
        masa.mangle = lambda leaves: {**leaves, **{k: (v() if callable(v) else v)
                                                   for k, v in changes.items()}}
    return prepare


def _foreign_pin(masa: Masa, tmp: Path) -> None:
    other = TestCA.create(tmp / "other-domain").certificate.public_bytes(serialization.Encoding.DER)
    masa.mangle = lambda leaves: {**leaves, "pinned_domain_cert": other}


HOSTILE = {
    "voucher signed by another MASA": (_evil_masa, "not signed by a trusted MASA"),
    "wrong nonce": (_mangle(nonce=new_nonce), "nonce"),
    "wrong serial": (_mangle(serial_number="SN-9999"), "serial-number"),
    "expired voucher": (_mangle(nonce=None, expires_on=lambda: dt.datetime.now(dt.UTC)
                                - dt.timedelta(hours=1)), "expired"),
    "registrar not under the pinned CA": (_foreign_pin, "does not match the pinned"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_voucher_is_refused(link, tmp_path, caplog, case: str) -> None:
    prepare, reason = HOSTILE[case]
    caplog.set_level(logging.WARNING, logger="acpd.brski")
    outcome = run_case(link, tmp_path, prepare=prepare)
    assert isinstance(outcome.result, Refused)
    assert reason in outcome.result.reason
    assert not outcome.paths.ldevid_cert.exists() and not outcome.paths.ldevid_key.exists()
    assert any("refused" in r.getMessage() and reason in r.getMessage() for r in caplog.records)
    # the pledge told the registrar why (voucher status telemetry, §5.7)
    reports = [t for t in outcome.bench.registrar.telemetry if t["kind"] == "voucher_status"]
    assert reports and reports[-1]["status"] is False and reason in reports[-1]["reason"]


def test_pledge_unknown_to_the_masa_is_refused(link, tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    outcome = run_case(link, tmp_path, register=False)
    assert isinstance(outcome.result, Refused)
    assert "HTTP 404" in outcome.result.reason and "unknown device" in outcome.result.reason
    assert not outcome.paths.ldevid_cert.exists()
    assert any("unknown device" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("speaks_tls", [False, True])
def test_peer_talking_garbage_is_refused(link, tmp_path, caplog, speaks_tls: bool) -> None:
    """A 'proxy' that answers with junk: raw bytes, or junk inside a real TLS session."""
    caplog.set_level(logging.WARNING, logger="acpd.brski")
    peer_node, pledge_node = link["n1"], link["n2"]
    ca = TestCA.create(tmp_path / "junk")
    junk = ca.issue_node("junk")
    masa = Masa.create(tmp_path / "vendor")
    device = masa.issue_idevid("SN-0002")
    paths = IdentityPaths(device.cert_path, device.key_path, tmp_path / "n/ldevid.crt",
                          tmp_path / "n/ldevid.key", tmp_path / "n/ta.pem")

    address = peer_node.link_local(peer_node.ifname("n2"))  # pyroute2: outside the event loop
    pledge_node.link_local(pledge_node.ifname("n1"))

    async def main() -> Refused | Enrolled:
        async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.read(1)
                writer.write(b"\x00\xffHTTP/9 garbage\r\n\r\n" * 50)
                await writer.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                writer.close()
        context = server_context(junk.cert_path, junk.key_path) if speaks_tls else None
        server = await asyncio.start_server(talk, sock=listener_in(peer_node.netns, "::"),
                                            ssl=context)
        try:
            client = PledgeClient(load_pledge_identity(device.cert_path, device.key_path,
                                                       masa.anchor_path),
                                  paths, namespace=pledge_node.netns, io_timeout=3.0)
            return await client.attempt(Locator(address, server.sockets[0].getsockname()[1],
                                                pledge_node.ifname("n1")))
        finally:
            server.close()
            await server.wait_closed()

    result = asyncio.run(main())
    assert isinstance(result, Refused)
    assert not paths.ldevid_cert.exists()
    assert any("refused" in r.getMessage() for r in caplog.records)
