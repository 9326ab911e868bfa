"""More than one registrar (RFC 8994 §6.11.7, §9.2): Registrar-IDs (option, derived default,
collisions), a registrar renewing a sibling sub-CA's LDevID, the join proxy's choice and
fail-over, and renewal failing over between EST servers."""
from __future__ import annotations

import asyncio
import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski import wellknown
from acp_openwrt.brski.cms import load_certs_only
from acp_openwrt.brski.http import Request
from acp_openwrt.brski.pledge.core import generate_key
from acp_openwrt.brski.pledge.est_servers import EstServer, EstServerBook
from acp_openwrt.brski.pledge.renewal import renewed_anchors
from acp_openwrt.brski.proxy import handover as ho
from acp_openwrt.brski.proxy.registrars import SUSPECT_FOR, RegistrarLocator, RegistrarTable
from acp_openwrt.brski.registrar.allocation import AllocationError, Allocator
from acp_openwrt.brski.registrar.bootstrap import RegistrarSetupError, open_registrar_files
from acp_openwrt.brski.registrar.core import Registrar, read_clock
from acp_openwrt.brski.registrar.domain_ca import DomainCA
from acp_openwrt.brski.registrar.registrar_id import (
    REGISTRAR_ID_MAX,
    RegistrarIdError,
    conflict,
    derived_registrar_id,
    format_registrar_id,
    parse_registrar_id,
    registrar_id_of,
)
from acp_openwrt.config import ConfigError, parse_config
from acp_openwrt.identity.address import zone_address

from .test_operator_ca import make_ca, write

pytestmark = pytest.mark.unit
DOMAIN = "acp.example.com"


# --- Registrar-IDs ---------------------------------------------------------------------------

def test_registrar_id_option_values() -> None:
    assert parse_registrar_id("1a2b3c4d5e6f") == 0x1A2B3C4D5E6F
    assert parse_registrar_id("0x2aa00000002") == 0x2AA00000002
    assert parse_registrar_id("02AA00000002") == 0x2AA00000002
    assert parse_registrar_id("3fffffffffff") == REGISTRAR_ID_MAX
    # an EUI-48: its lower 46 bits (RFC 8994 §6.11.7.2)
    assert parse_registrar_id("fe:54:00:12:34:56") == 0x3E5400123456
    assert parse_registrar_id("02-00-00-00-64-00") == 0x020000006400
    for bad, why in (("0", "is 0"), ("000000000000", "is 0"), ("400000000000", "46 bits"),
                     ("ffffffffffff", "46 bits"), ("1234567890abc", "not a Registrar-ID"),
                     ("xyz", "not a Registrar-ID"), ("", "not a Registrar-ID"),
                     ("aa:bb:cc", "not a Registrar-ID")):
        with pytest.raises(RegistrarIdError, match=why):
            parse_registrar_id(bad)


def test_config_check_refuses_a_bad_registrar_id_with_file_and_line() -> None:
    text = ("config acp 'main'\n\toption registrar '1'\n"
            "\toption registrar_domain 'acp.example.com'\n\toption registrar_id '{}'\n")
    assert parse_config(text.format("02aa00000002")).registrar_id == 0x2AA00000002
    assert parse_config("config acp 'main'\n").registrar_id is None
    with pytest.raises(ConfigError) as refused:
        parse_config(text.format("ffffffffffff"), "/etc/config/acp")
    message = str(refused.value)
    assert message.startswith("/etc/config/acp:4: option registrar_id: ") and "46 bits" in message


def test_derived_registrar_id_is_the_openssl_pipeline_of_the_docs() -> None:
    (one, _), (two, _) = make_ca("sub-CA one"), make_ca("sub-CA two")
    spki = one.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    # `... | openssl dgst -sha256 -r | cut -c1-12`, then >> 2
    assert derived_registrar_id(one) == int(hashlib.sha256(spki).hexdigest()[:12], 16) >> 2
    assert derived_registrar_id(one) == derived_registrar_id(one)
    assert 0 < derived_registrar_id(one) <= REGISTRAR_ID_MAX
    assert derived_registrar_id(one) != derived_registrar_id(two)


def test_allocator_takes_option_then_default_and_keeps_what_it_stored(tmp_path: Path) -> None:
    db = tmp_path / "allocations.db"
    first = Allocator(db, domain=DOMAIN, default_id=0x1234)
    assert first.registrar_id == 0x1234
    first.close()
    # a later start with another default (another CA key) keeps the stored one
    again = Allocator(db, domain=DOMAIN, default_id=0x9999)
    assert again.registrar_id == 0x1234
    again.close()
    with pytest.raises(AllocationError, match="set option registrar_id to 000000001234"):
        Allocator(db, domain=DOMAIN, registrar_id=0x4321)
    explicit = Allocator(tmp_path / "b.db", domain=DOMAIN, registrar_id=0x4321, default_id=1)
    assert explicit.registrar_id == 0x4321
    explicit.close()


def test_two_sub_ca_registrars_derive_distinct_ids_and_allocate_apart(tmp_path: Path) -> None:
    root = make_ca("Operator Root CA", path_length=1)
    ids, names = {}, {}
    for label in ("r1", "r2"):
        sub, sub_key = make_ca(f"ACP registrar {label}", root, path_length=0)
        (tmp_path / label).mkdir()
        cert_path, key_path = write(tmp_path / label, [sub, root[0]], sub_key)
        files = open_registrar_files(tmp_path / label / "registrar", DOMAIN, cert_path, key_path)
        try:
            assert files.allocator.registrar_id == derived_registrar_id(sub)
            ids[label] = files.allocator.registrar_id
            names[label] = {files.allocator.allocate(f"SN-{i}").address.address
                            for i in range(5)}
        finally:
            files.close()
    assert ids["r1"] != ids["r2"] and not names["r1"] & names["r2"]
    for label in ("r1", "r2"):
        assert {registrar_id_of(str(a)) for a in names[label]} == {ids[label]}
    # a configured ID that is not the stored one stops the start with a clear line
    with pytest.raises(RegistrarSetupError, match="refusing to switch"):
        open_registrar_files(tmp_path / "r1" / "registrar", DOMAIN,
                             tmp_path / "r1" / "registrar-ca-chain.pem",
                             tmp_path / "r1" / "registrar-ca.key", registrar_id=ids["r1"] ^ 1)


def test_a_second_registrar_with_our_id_is_a_conflict() -> None:
    own = str(zone_address(DOMAIN, 0x1234, 1).address)
    twin = str(zone_address(DOMAIN, 0x1234, 7).address)
    other = str(zone_address(DOMAIN, 0x5678, 1).address)
    assert conflict(0x1234, own, own) is None
    assert conflict(0x1234, own, other) is None
    assert conflict(0x1234, own, "fd00::1") is None   # Registrar-ID 0, not ours
    found = conflict(0x1234, own, twin)
    assert found is not None and format_registrar_id(0x1234) in found and "registrar_id" in found
    assert registrar_id_of("fe80::1") is None


# --- a registrar renews a sibling sub-CA's LDevID (RFC 8994 §9.2.3, §9.2.4) ------------------

class PeerTls:
    """What asyncio's TLS transport gives: the client's leaf and the chain it sent."""

    def __init__(self, chain: list[x509.Certificate]) -> None:
        self.ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]

    def get_extra_info(self, name: str) -> Any:
        ders = self.ders

        class SslObject:
            def getpeercert(self, binary_form: bool = False) -> bytes:
                return ders[0]

            def get_unverified_chain(self) -> list[bytes]:
                return list(ders)
        return SslObject() if name == "ssl_object" else None


def _reenroll(key: Any, name: str) -> Request:
    from acp_openwrt.brski.csr import build_csr
    der = build_csr(key, name).public_bytes(serialization.Encoding.DER)
    return Request("POST", wellknown.SIMPLE_REENROLL, {"content-type": wellknown.PKCS10},
                   base64.encodebytes(der))


def _sub_ca_registrar(tmp: Path, label: str, root: Any) -> tuple[Registrar, DomainCA, Any]:
    sub, sub_key = make_ca(f"ACP registrar {label}", root, path_length=0)
    (tmp / label).mkdir()
    ca = DomainCA.load_operator(*write(tmp / label, [sub, root[0]], sub_key), domain=DOMAIN)
    alloc = Allocator(tmp / label / "allocations.db", domain=DOMAIN,
                      default_id=derived_registrar_id(sub))
    own_key = generate_key()
    own = ca.issue(own_key.public_key(), alloc.allocate("registrar").acp_node_name,
                   registrar=True)
    return Registrar(ca, alloc, own, own_key), ca, sub


def test_a_registrar_renews_an_ldevid_of_its_sibling_sub_ca(tmp_path: Path) -> None:
    root = make_ca("Operator Root CA", path_length=1)
    r1, ca1, sub1 = _sub_ca_registrar(tmp_path, "r1", root)
    r2, _ca2, sub2 = _sub_ca_registrar(tmp_path, "r2", root)
    key = generate_key()
    allocation = r1.allocator.allocate("SN-1")
    leaf = ca1.issue(key.public_key(), allocation.acp_node_name,
                     address=allocation.address.address)

    def renew(chain: list[x509.Certificate]) -> Any:
        return asyncio.run(r2.handle(_reenroll(key, allocation.acp_node_name), PeerTls(chain),
                                     now=read_clock()))  # type: ignore[arg-type]
    refused = renew([leaf])      # without the sub-CA it cannot be told from a stranger's
    assert refused.status == 403, refused.body
    answer = renew([leaf, sub1, root[0]])
    assert answer.status == 200, answer.body
    certs = load_certs_only(base64.b64decode(answer.body))  # a SET: in no particular order
    [renewed] = [c for c in certs if c.public_key() == key.public_key()]
    cas = [c for c in certs if c is not renewed]
    renewed.verify_directly_issued_by(sub2)
    assert cas == [sub2]
    from acp_openwrt.identity.certificate import certificate_node_name_text
    assert certificate_node_name_text(renewed) == allocation.acp_node_name  # address kept
    # the node's anchors then hold the renewing registrar's sub-CA too
    assert renewed_anchors([root[0], sub1], cas) == [root[0], sub1, sub2]
    assert renewed_anchors([root[0], sub1], [make_ca("stranger")[0]]) == [root[0], sub1]
    # a certificate of another domain is no LDevID here, chain or not
    stranger_root = make_ca("Other Root", path_length=1)
    _, other_ca, other_sub = _sub_ca_registrar(tmp_path, "other", stranger_root)
    alien = other_ca.issue(key.public_key(), allocation.acp_node_name)
    assert renew([alien, other_sub]).status == 403


def test_refuse_new_blocks_new_addresses_but_not_those_held(tmp_path: Path) -> None:
    root = make_ca("Operator Root CA", path_length=1)
    registrar, _, _ = _sub_ca_registrar(tmp_path, "r1", root)
    registrar.allocator.allocate("SN-old")
    registrar.refuse_new = "registrar at fd00::2 uses this registrar's Registrar-ID"
    client = make_ca("an IDevID", ca=False)[0]
    now = read_clock()
    from acp_openwrt.brski import idevid
    pledges = {"SN-old": client, "SN-new": client}
    for serial in pledges:
        registrar.vouched[serial] = now.mono
    original = idevid.serial_number
    try:
        for serial, expect in (("SN-old", True), ("SN-new", False)):
            idevid.serial_number = lambda _cert, serial=serial: serial  # type: ignore[assignment]
            name, _, why = registrar._name_for(client, now)
            assert (name is not None) is expect, why
            if not expect:
                assert "Registrar-ID" in why
    finally:
        idevid.serial_number = original  # type: ignore[assignment]


# --- the join proxy's registrar choice ---------------------------------------------------------

A, B, C = (RegistrarLocator(f"fd00::{i}", 8443) for i in (1, 2, 3))


def test_proxy_prefers_the_registrar_of_its_own_node() -> None:
    table = RegistrarTable()
    table.heard(A, 180_000, 0.0)
    table.heard(C, 180_000, 0.0, local=True)
    assert table.candidates(1.0) == [C, A]
    table.heard(B, 180_000, 1.0)
    assert table.current(2.0) == C            # stays, no flapping
    table.heard(C, 0, 3.0)                    # our own registrar stopped: withdrawn
    assert table.candidates(3.0) == [A, B]


def test_proxy_fails_over_from_a_registrar_that_does_not_answer() -> None:
    table = RegistrarTable()
    table.heard(A, 180_000, 0.0)
    table.heard(B, 180_000, 0.0)
    assert table.current(1.0) == A
    assert table.failed(A, 1.0) is True        # the choice moved
    assert table.candidates(2.0) == [B, A]     # A is still tried, last
    assert table.status(2.0)[0]["suspect_for"] == SUSPECT_FOR - 1.0
    assert table.current(1.0 + SUSPECT_FOR + 1) == B   # suspicion over: B stays (stable)
    assert table.failed(B, 100.0) is True and table.current(100.0) == A
    assert table.answered(B, 101.0) is False
    assert table.current(101.0) == A           # answering does not steal the choice back
    assert table.failed(fd := RegistrarLocator("fd00::9", 1), 1.0) is False and fd
    single = RegistrarTable()
    single.heard(A, 180_000, 0.0)
    assert single.failed(A, 1.0) is False and single.current(1.0) == A  # the only one


def test_proxy_with_every_registrar_failing_tries_the_one_failed_longest_ago() -> None:
    table = RegistrarTable()
    table.heard(A, 180_000, 0.0)
    table.heard(B, 180_000, 0.0)
    assert table.failed(A, 1.0) is True and table.current(1.0) == B
    assert table.failed(B, 2.0) is True and table.candidates(2.0) == [A, B]
    # B answers (a circuit or the probe reached it): the only one not suspect is the choice
    assert table.answered(B, 3.0) is True and table.current(3.0) == B
    # a probe that failed once and then answered leaves no suspicion behind: a registrar heard
    # later does not take over
    table.answered(A, 4.0)
    table.heard(C, 180_000, 5.0)
    assert table.current(5.0) == B


def test_handover_carries_local_and_old_messages_still_parse() -> None:
    msg = ho.Registrar("fd00::1", 8443, 1000, True)
    assert ho.decode(ho.encode(msg)) == msg
    plain = ho.decode(b'{"op":"registrar","address":"fd00::1","port":8443,"ttl_ms":5}')
    assert isinstance(plain, ho.Registrar) and plain.local is False
    with pytest.raises(ho.HandoverError, match="local"):
        ho.decode(b'{"op":"registrar","address":"fd00::1","port":1,"ttl_ms":5,"local":1}')


# --- renewal fails over between EST servers -------------------------------------------------

def test_est_server_book_order() -> None:
    book = EstServerBook()
    one, two, three = (EstServer(f"fd00::{i}", 8443) for i in (1, 2, 3))
    book.heard(one, 0.0)
    book.heard(two, 1.0)
    assert book.candidates() == [two, one]     # the most recently heard first
    book.worked(one, 2.0)
    assert book.candidates() == [one, two]     # then the one that last worked
    book.failed(one, 3.0, "cannot reach")
    book.heard(three, 4.0)
    assert book.candidates() == [three, two, one]   # failed ones last
    book.failed(three, 5.0, "refused")
    assert book.candidates() == [two, one, three]   # the longest failed first among them
    book.heard(one, 6.0)                       # announced again: a chance again
    assert book.candidates()[-1] == three and book.candidates()[0] == one
    # the last error stays on show; failed_ago says whether it still counts
    assert [(s["last_error"], s["failed_ago"]) for s in book.status(7.0)] == [
        ("cannot reach", None), (None, None), ("refused", 2.0)]


def test_est_server_book_prefers_the_issuing_registrar_until_another_worked() -> None:
    book = EstServerBook()
    issuer, other = EstServer("fd00::1", 8443), EstServer("fd00::2", 8443)
    book.heard(issuer, 0.0)
    book.heard(other, 1.0)
    book.prefer("fd00::1")
    assert book.candidates() == [issuer, other]
    book.failed(issuer, 2.0, "cannot reach")
    book.worked(other, 3.0)
    assert book.candidates() == [other, issuer]
    book.heard(issuer, 4.0)                    # back: still after the one that worked
    assert book.candidates() == [other, issuer]


def test_renewal_goes_on_at_the_registrar_that_answers(tmp_path: Path, monkeypatch) -> None:
    from acp_openwrt.brski.pledge.client import Locator
    from acp_openwrt.brski.pledge.renewal import RenewalError
    from acp_openwrt.events import EstServerHeard

    from .test_brski_enroll_command import dispatch, service
    svc = service(tmp_path)
    svc.state = "enrolled"
    tried: list[str] = []

    async def reenroll(target: Locator, stored: Any, namespace: str | None = None) -> None:
        tried.append(target.address)
        if target.address == "fd00::dead":
            raise RenewalError("cannot reach EST server: timed out")

    monkeypatch.setattr("acp_openwrt.brski.pledge.part.reenroll", reenroll)
    monkeypatch.setattr(svc, "_publish", lambda: None)
    svc.ctx.bus.publish(EstServerHeard("fd00::live", 8443))
    svc.ctx.bus.publish(EstServerHeard("fd00::dead", 8443))   # heard last: tried first
    reply = dispatch(svc)
    assert reply["result"]["renewed"] is True, reply
    assert tried == ["fd00::dead", "fd00::live"]
    status = svc.status()
    assert status["est_server"] == "[fd00::live]:8443"
    assert [s["address"] for s in status["est_servers"]] == ["fd00::live", "fd00::dead"]
    tried.clear()
    assert dispatch(svc)["result"]["renewed"] is True
    assert tried == ["fd00::live"]             # the one that worked, first
    monkeypatch.setattr("acp_openwrt.brski.pledge.part.reenroll", _always_fails)
    reply = dispatch(svc)
    assert reply["result"]["renewed"] is False
    assert "fd00::live" in reply["result"]["error"] and "fd00::dead" in reply["result"]["error"]


async def _always_fails(target: Any, stored: Any, namespace: str | None = None) -> None:
    from acp_openwrt.brski.pledge.renewal import RenewalError
    raise RenewalError(f"nobody at {target.address}")


def test_proxy_process_reports_the_registrar_it_fails_over_to(monkeypatch) -> None:
    """A probe that failed once then answered leaves no suspicion (a second registrar heard
    later does not take over); a circuit that cannot reach the current registrar moves the
    choice, and acpd hears of it (the AN_Proxy it floods follows)."""
    from .test_brski_proxy_process import Acpd, lucky_on
    monkeypatch.setattr("acp_openwrt.brski.proxy.process.PROBE_RETRY", 0.05)
    probed: list[RegistrarLocator] = []
    acpd = Acpd(probe=lucky_on(2, probed))
    acpd.expect()  # Hello
    assert acpd.expect() == ho.RegistrarState(False)
    acpd.send(ho.Registrar("fd00::1", 8443, 60_000))
    assert acpd.expect() == ho.RegistrarState(True, "fd00::1", 8443)
    acpd.send(ho.Registrar("fd00::2", 8443, 60_000))
    acpd.send(ho.StatusRequest(1))
    reply = acpd.expect()
    assert isinstance(reply, ho.StatusReply)
    assert reply.status["registrar"] == {"address": "fd00::1", "port": 8443}
    # a pledge's circuit finds fd00::1 gone: fd00::2 is probed and reported
    acpd.proxy._registrar_failed(RegistrarLocator("fd00::1", 8443))
    assert acpd.expect() == ho.RegistrarState(False)
    assert acpd.expect() == ho.RegistrarState(True, "fd00::2", 8443)
    acpd.send(ho.StatusRequest(2))
    reply = acpd.expect()
    assert isinstance(reply, ho.StatusReply)
    heard = {r["address"]: r["suspect_for"] for r in reply.status["registrars"]}
    assert heard["fd00::2"] is None and heard["fd00::1"] is not None
    acpd.close()


def test_peer_chain_of_a_client_without_certificate_is_empty() -> None:
    """CPython 3.11's private get_unverified_chain answers [None] on a server whose client
    sent no certificate (a status report without one must get 401, not a crash)."""
    from acp_openwrt.brski.tls import peer_chain

    class NoCertificate:
        def get_extra_info(self, name: str) -> Any:
            class SslObject:
                def getpeercert(self, binary_form: bool = False) -> None:
                    return None

                def get_unverified_chain(self) -> list[None]:
                    return [None]
            return SslObject() if name == "ssl_object" else None
    assert peer_chain(NoCertificate()) == []


def test_registrar_part_hears_others_and_stops_new_enrolments_on_a_collision(tmp_path) -> None:
    """acpd's side: the part reads Registrar-IDs from the announced addresses (its own from its
    ACP address, which its allocator gave it first) and passes the conflict to its workers."""
    from acp_openwrt.brski.registrar.part import RegistrarPart
    from acp_openwrt.brski.registrar.supervisor import RegistrarWorker
    from acp_openwrt.control.server import ControlServer
    from acp_openwrt.events import EventBus, RegistrarHeard
    from acp_openwrt.identity.address import AcpAddress
    from acp_openwrt.identity.summary import load_identity_summary
    from acp_openwrt.node_context import NodeContext

    from .test_registrar_service import boot, make_config
    config = make_config(tmp_path)
    boot(config)
    identity = load_identity_summary(config.ldevid_cert)
    ctx = NodeContext(config, EventBus(), ControlServer(tmp_path / "s"), identity=identity)
    part = RegistrarPart(ctx)
    part.address = identity["acp_address"]
    sent: list[str | None] = []

    class Worker(RegistrarWorker):
        async def set_refuse_new(self, reason: str | None) -> None:
            sent.append(reason)

    async def main() -> None:
        part.worker = Worker("{}", part.reports.on_state)
        own = AcpAddress.decode(part.address)
        files = open_registrar_files(config.registrar_dir, config.registrar_domain)
        assert own.registrar_id == files.allocator.registrar_id
        files.close()
        base = int(own.ula_prefix.network_address)
        other_id = (own.registrar_id or 0) ^ 0x5A5A
        other = str(AcpAddress.decode(base | other_id << 16 | 2).address)
        ctx.bus.publish(RegistrarHeard(part.address, 8443, 180_000))   # ourselves: ignored
        ctx.bus.publish(RegistrarHeard(other, 8443, 180_000))
        status = part.status()
        assert [o["registrar_id"] for o in status["other_registrars"]] == \
            [format_registrar_id(other_id)]
        assert status["registrar_id_conflict"] is None
        twin = str(AcpAddress.decode(base | (own.registrar_id or 0) << 16 | 14).address)
        ctx.bus.publish(RegistrarHeard(twin, 8443, 180_000))
        await asyncio.sleep(0)
        status = part.status()
        assert status["registrar_id_conflict"] and "registrar_id" in status["registrar_id_conflict"]
        assert sent == [status["registrar_id_conflict"]]
        ctx.bus.publish(RegistrarHeard(other, 8443, 0))                # withdrawn
        assert {o["address"] for o in part.status()["other_registrars"]} == {twin}
    asyncio.run(main())
