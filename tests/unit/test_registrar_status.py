"""The registrar's status telemetry endpoints (RFC 8995 §5.7 voucher_status, §5.9.4
enrollstatus) hear only the pledge whose enrolment it is, over its own TLS client certificate:
the IDevID the voucher was relayed for, or the LDevID just issued to it. A stranger through a
join proxy (no certificate, or another pledge's) gets 401/403 and a counted drop, and no text
of anyone's reaches a log line unescaped.

The whole BRSKI exchange runs in memory: the real pledge state machine, the real registrar
handlers (the TLS layer stood in for by the verified peer certificate), the lab MASA.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acp_openwrt.brski import wellknown
from acp_openwrt.brski.http import Request, Response
from acp_openwrt.brski.pledge.client import load_pledge_identity
from acp_openwrt.brski.pledge.core import Enrolled, PledgeAttempt, SendRequest
from acp_openwrt.brski.registrar import masa_client
from acp_openwrt.brski.registrar.allocation import Allocator
from acp_openwrt.brski.registrar.core import ensure_registrar_identity, read_clock
from acp_openwrt.brski.registrar.domain_ca import DomainCA
from acp_openwrt.brski.registrar.service import RecordingRegistrar
from acp_openwrt.lab.masa import Masa

FORGED = "ok\nacpd: INFO acpd.brski.registrar: registrar issued root@evil\x1b[2J"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PeerTls:
    """What asyncio's StreamWriter answers about a TLS peer whose certificate verified."""
    cert: x509.Certificate | None

    def get_extra_info(self, name: str) -> Any:
        if name != "ssl_object":
            return None
        der = self.cert.public_bytes(serialization.Encoding.DER) if self.cert else None

        class SslObject:
            def getpeercert(self, binary_form: bool = False) -> bytes | None:
                return der
        return SslObject()


@dataclass
class Bench:
    registrar: RecordingRegistrar
    masa: Masa
    tmp: Path

    def handle(self, request: SendRequest | Request, cert: x509.Certificate | None,
               later: float = 0.0) -> Response:
        """The registrar's answer `later` seconds (monotonic) from now."""
        if isinstance(request, SendRequest):
            request = Request(request.method, request.path,
                              {k.lower(): v for k, v in request.headers.items()}, request.body)
        now = read_clock()
        now = now._replace(mono=now.mono + later)
        return asyncio.run(self.registrar.handle(request, PeerTls(cert),  # type: ignore[arg-type]
                                                 now=now))

    def report(self, kind: str, cert: x509.Certificate | None, status: bool = True,
               reason: str | None = None) -> Response:
        body: dict[str, Any] = {"version": 1, "status": status}
        if reason is not None:
            body["reason"] = reason
        path = wellknown.VOUCHER_STATUS if kind == "voucher_status" else wellknown.ENROLL_STATUS
        return self.handle(Request("POST", path, {"content-type": wellknown.JSON},
                                   json.dumps(body).encode()), cert)

    def pledge(self, serial: str) -> tuple[PledgeAttempt, x509.Certificate]:
        device = self.masa.issue_idevid(serial)
        identity = load_pledge_identity(device.cert_path, device.key_path, self.masa.anchor_path)
        return PledgeAttempt(identity), device.certificate

    def voucher(self, attempt: PledgeAttempt, idevid: x509.Certificate) -> SendRequest:
        """Voucher-request relayed to the MASA; returns the pledge's voucher_status report."""
        request = attempt.connected(self.registrar.cert, [self.registrar.cert], now=_now())
        answer = self.handle(request, idevid)  # type: ignore[arg-type]
        action = attempt.response(answer, now=_now())
        assert isinstance(action, SendRequest) and action.path == wellknown.VOUCHER_STATUS, action
        return action

    def enrol(self, attempt: PledgeAttempt, idevid: x509.Certificate,
              report: SendRequest) -> Enrolled:
        action: Any = attempt.response(self.handle(report, idevid), now=_now())
        while isinstance(action, SendRequest):
            action = attempt.response(self.handle(action, idevid), now=_now())
        assert isinstance(action, Enrolled), action
        return action


@pytest.fixture
def bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    masa = Masa.create(tmp_path / "vendor")
    ca = DomainCA.load_or_create(tmp_path / "reg/domain-ca.crt", tmp_path / "reg/domain-ca.key",
                                 domain="acp.example.com")
    allocator = Allocator(tmp_path / "reg/allocations.db", domain="acp.example.com")
    cert, key = ensure_registrar_identity(ca, allocator, tmp_path / "reg/registrar.crt",
                                          tmp_path / "reg/registrar.key")
    masa.trust_registrar(ca.certificate)

    async def to_masa(url: str, body: bytes, *args: Any, **kwargs: Any) -> Response:
        return masa.decide(body)
    monkeypatch.setattr(masa_client, "request_voucher", to_masa)
    yield Bench(RecordingRegistrar(ca, allocator, cert, key), masa, tmp_path)
    allocator.close()


def one_line_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records]
    assert all("\n" not in line and "\x1b" not in line for line in lines), lines
    return lines


def test_stranger_without_certificate_is_refused_and_counted(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for kind in ("voucher_status", "enrollstatus"):
        response = bench.report(kind, None, False, FORGED)
        assert response.status == 401 and b"client certificate" in response.body
    status = bench.registrar.status()
    assert status["recent_status"] == [] and status["counters"]["status dropped"] == 2
    assert status["counters"]["voucher_status 401"] == status["counters"]["enrollstatus 401"] == 1
    assert not any("evil" in line for line in one_line_logs(caplog))


def test_pledge_without_an_enrolment_here_is_refused(bench: Bench) -> None:
    """A real IDevID (the TLS layer verified it) that never had a voucher relayed here."""
    _, idevid = bench.pledge("SN-0007")
    for kind in ("voucher_status", "enrollstatus"):
        response = bench.report(kind, idevid, True)
        assert response.status == 403 and b"no enrolment of this pledge" in response.body
    assert bench.registrar.status()["recent_status"] == []
    assert bench.registrar.counters["status dropped"] == 2


def test_each_pledge_reports_on_its_own_enrolment_only(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    attempt, idevid = bench.pledge("SN-0001")
    _, other = bench.pledge("SN-0002")
    report = bench.voucher(attempt, idevid)
    assert bench.handle(report, other).status == 403  # SN-0002 has no voucher here
    enrolled = bench.enrol(attempt, idevid, report)  # SN-0001's own report, then EST
    assert bench.report("voucher_status", idevid).status == 403  # one report per voucher
    # enrollstatus after success: a new TLS connection with the new LDevID (§5.9.4)
    foreign = bench.registrar.ca.issue(enrolled.key.public_key(),
                                       "fd89b714f3db00000200000064000009+@acp.example.com")
    assert bench.report("enrollstatus", foreign).status == 403  # an LDevID not issued to it
    assert bench.report("enrollstatus", bench.registrar.cert).status == 403
    assert bench.report("enrollstatus", enrolled.cert).status == 200
    assert bench.report("enrollstatus", enrolled.cert).status == 403  # once per enrolment
    seen = [(s["kind"], s["from"], s["status"]) for s in bench.registrar.status()["recent_status"]]
    assert seen == [("voucher_status", "pledge SN-0001", True),
                    ("enrollstatus", "pledge SN-0001", True)]
    assert bench.registrar.counters["status dropped"] == 5
    one_line_logs(caplog)


def test_a_failed_enrolment_is_reported_over_the_idevid(bench: Bench) -> None:
    """enrollstatus false comes over the pledge's IDevID connection (it has no LDevID)."""
    attempt, idevid = bench.pledge("SN-0003")
    bench.handle(bench.voucher(attempt, idevid), idevid)
    assert bench.report("enrollstatus", idevid, False, "issued certificate rejected").status == 200
    assert bench.report("enrollstatus", idevid, False, "again").status == 403


def test_the_registrar_times_its_windows_by_the_now_it_is_given(bench: Bench) -> None:
    """No clock inside: a voucher_status report is due for STATUS_FOR seconds of the `now`
    the handlers are given, and the voucher authorizes /csrattrs for VOUCHED_FOR."""
    from acp_openwrt.brski.registrar.core import STATUS_FOR, VOUCHED_FOR
    attempt, idevid = bench.pledge("SN-0004")
    report = bench.voucher(attempt, idevid)
    assert bench.handle(report, idevid, later=STATUS_FOR + 1).status == 403
    assert bench.handle(report, idevid, later=STATUS_FOR - 1).status == 200
    csrattrs = Request("GET", wellknown.CSRATTRS, {}, b"")
    assert bench.handle(csrattrs, idevid, later=VOUCHED_FOR + 1).status == 403
    assert bench.handle(csrattrs, idevid).status == 200


def test_reason_from_the_pledge_is_escaped_in_log_and_view(
        bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    attempt, idevid = bench.pledge("SN-0004")
    bench.voucher(attempt, idevid)
    assert bench.report("voucher_status", idevid, False, FORGED + "x" * 1000).status == 200
    entry = bench.registrar.status()["recent_status"][-1]
    assert entry["reason"].startswith("ok\\nacpd: INFO") and "\\x1b[2J" in entry["reason"]
    assert "\n" not in entry["reason"] and len(entry["reason"]) < 400
    lines = [line for line in one_line_logs(caplog) if "voucher_status from" in line]
    assert len(lines) == 1 and "ok\\nacpd: INFO" in lines[0]


def test_malformed_report_does_not_use_up_the_enrolment(bench: Bench) -> None:
    attempt, idevid = bench.pledge("SN-0005")
    bench.voucher(attempt, idevid)
    bad = bench.handle(Request("POST", wellknown.VOUCHER_STATUS,
                               {"content-type": wellknown.JSON}, b'{"status": "yes"}'), idevid)
    assert bad.status == 400
    assert bench.report("voucher_status", idevid, True).status == 200


def test_refusals_in_the_view_are_escaped(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    """acpctl registrar prints recent refusals as a table: no raw control characters there."""
    caplog.set_level(logging.INFO)
    _, idevid = bench.pledge("SN-0006")
    response = bench.handle(Request("POST", wellknown.REQUEST_VOUCHER,
                                    {"content-type": "text/x\n\x1b[31mred"}, b""), idevid)
    assert response.status == 415
    refusal = bench.registrar.refusals[-1]
    assert "\n" not in refusal["reason"] and "\x1b" not in refusal["reason"]
    one_line_logs(caplog)
