"""Pledge pieces without a network: renewal schedule, proxy back-off, state machine edges."""
from __future__ import annotations

import datetime as dt

import pytest

from acp_openwrt.brski import wellknown
from acp_openwrt.brski.http import Response
from acp_openwrt.brski.pledge.client import Locator
from acp_openwrt.brski.pledge.core import (
    MAX_RETRY_AFTER,
    PledgeAttempt,
    Refused,
    SendRequest,
    State,
    Wait,
)
from acp_openwrt.brski.pledge.proxies import ProxyBook, TryProxy
from acp_openwrt.brski.pledge.renewal import renewal_time
from acp_openwrt.lab.masa import Masa
from acp_openwrt.lab.pki import TestCA

UTC = dt.UTC
START = dt.datetime(2025, 1, 1, tzinfo=UTC)
NOW = dt.datetime.now(UTC)  # the test CA and MASA issue certificates valid from now


@pytest.fixture(scope="module")
def short_cert(tmp_path_factory):
    ca = TestCA.create(tmp_path_factory.mktemp("renew"))
    return ca.issue_node("n", not_before=START, not_after=START + dt.timedelta(days=10)).certificate


def test_renewal_waits_until_40_percent(short_cert) -> None:
    plan = renewal_time(short_cert, START + dt.timedelta(days=1))
    assert not plan.due and plan.at == START + dt.timedelta(days=4)
    assert renewal_time(short_cert, START + dt.timedelta(days=4, seconds=1)).due


def test_renewal_before_half_life_even_with_other_fractions(short_cert) -> None:
    assert renewal_time(short_cert, START, fraction=0.49).at < START + dt.timedelta(days=5)


def test_failed_renewal_backs_off_but_not_past_expiry(short_cert) -> None:
    now = START + dt.timedelta(days=5)
    first = renewal_time(short_cert, now, failures=1)
    second = renewal_time(short_cert, now, failures=2)
    assert not first.due and now < first.at < second.at
    late = START + dt.timedelta(days=9, hours=23, minutes=59)
    assert renewal_time(short_cert, late, failures=12).at <= START + dt.timedelta(days=10)


def test_expired_certificate_is_due_at_once(short_cert) -> None:
    now = START + dt.timedelta(days=11)
    plan = renewal_time(short_cert, now)
    assert plan.due and "expired" in plan.reason
    assert not renewal_time(short_cert, now, failures=1).due  # no busy loop after a failure


def test_proxy_book_backs_off_per_proxy_and_forgets_silent_ones() -> None:
    book = ProxyBook(initial_backoff=2.0, max_backoff=8.0, ttl=180.0)
    a, b = Locator("fe80::1", 1000, "eth0"), Locator("fe80::2", 1000, "eth1")
    assert book.heard(a, 0.0) and not book.heard(a, 1.0)
    assert book.next_due(1.0) == (a, None)
    book.failed(a, 1.0, "bad voucher")
    assert book.next_due(1.5) == (None, pytest.approx(1.5))
    book.heard(b, 1.5)
    assert book.next_due(1.5) == (b, None)  # a new proxy is not held back by a's back-off
    for _ in range(5):
        book.failed(a, 10.0, "again")
    assert book.entries[a].backoff == 8.0
    book.heard(b, 150.0)
    assert book.next_due(200.0)[0] in (a, b) and a not in book.entries  # a expired (heard at 1.0)
    assert book.status(200.0)[0]["address"] == "fe80::2"


def test_the_book_is_a_core_with_one_timer() -> None:
    """next_timer() is when the next proxy is due; handle_timer(now) starts one attempt, and
    the book asks for nothing while it runs; a failure backs off, a new proxy is due at once."""
    a, b = Locator("fe80::1", 1000, "eth0"), Locator("fe80::2", 2000, "eth1")
    book = ProxyBook(initial_backoff=2.0, max_backoff=8.0, ttl=180.0)
    assert book.next_timer() is None and book.handle_timer(0.0) == []
    book.heard(a, 10.0)
    assert book.next_timer() == 10.0
    assert book.handle_timer(10.0) == [TryProxy(a)]
    book.heard(b, 10.5)
    assert book.next_timer() is None and book.handle_timer(11.0) == []  # one at a time
    book.failed(a, 12.0, "refused")
    assert book.next_timer() == 10.5  # b waits since it was heard
    assert book.handle_timer(12.0) == [TryProxy(b)]
    book.failed(b, 13.0, "refused")
    assert book.next_timer() == 14.0 and book.handle_timer(13.9) == []  # a backs off 2 s
    assert book.handle_timer(14.0) == [TryProxy(a)]
    book.done(a)
    assert book.trying is None
    assert book.next_timer() == 14.0  # (the pledge part closes the timer once enrolled)
    assert book.handle_timer(200.0) == [] and book.entries == {}  # both forgotten (ttl)


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    from acp_openwrt.brski.pledge.client import load_pledge_identity
    masa = Masa.create(tmp_path_factory.mktemp("vendor"))
    device = masa.issue_idevid("SN-5")
    registrar = TestCA.create(tmp_path_factory.mktemp("dom")).issue_node("reg").certificate
    return load_pledge_identity(device.cert_path, device.key_path, masa.anchor_path), registrar


def test_voucher_request_is_signed_and_carries_nonce_serial_and_registrar(identity) -> None:
    from acp_openwrt.brski import cms
    from acp_openwrt.brski.voucher import parse_voucher
    pledge, registrar = identity
    attempt = PledgeAttempt(pledge)
    action = attempt.connected(registrar, now=NOW)
    assert isinstance(action, SendRequest) and action.path == wellknown.REQUEST_VOUCHER
    signed = cms.verify(action.body)
    assert signed.signer == pledge.cert
    request = parse_voucher(signed.content, request=True)
    assert (request.nonce, request.serial_number, request.assertion) == \
        (attempt.nonce, "SN-5", "proximity")


def test_202_waits_at_most_60_s_and_resends_the_identical_request(identity) -> None:
    pledge, registrar = identity
    attempt = PledgeAttempt(pledge)
    first = attempt.connected(registrar, now=NOW)
    wait = attempt.response(Response(202, b"", {"retry-after": "3600"}), now=NOW)
    assert wait == Wait(MAX_RETRY_AFTER)
    assert attempt.resend() == first
    attempt.response(Response(202), now=NOW)
    attempt.response(Response(202), now=NOW)
    assert isinstance(attempt.response(Response(202), now=NOW), Refused)


def test_refusals_carry_the_reason(identity) -> None:
    pledge, registrar = identity
    attempt = PledgeAttempt(pledge)
    attempt.connected(registrar, now=NOW)
    result = attempt.response(Response(403, b"not today"), now=NOW)
    assert isinstance(result, Refused) and "403" in result.reason and "not today" in result.reason
    assert attempt.state is State.FAILED
    other = PledgeAttempt(pledge)
    other.connected(registrar, now=NOW)
    report = other.response(Response(200, b"\x30\x03garbage",
                                     {"content-type": wellknown.VOUCHER_CMS_JSON}), now=NOW)
    assert isinstance(report, SendRequest) and report.path == wellknown.VOUCHER_STATUS
    assert b'"status": false' in report.body
    final = other.response(Response(200), now=NOW)
    assert isinstance(final, Refused) and "voucher CMS rejected" in final.reason
    assert isinstance(PledgeAttempt(pledge).connected(None, now=NOW), Refused)
