"""The formation bench's log timeline: milestones from stamped acpd lines, and per-hop figures."""
from __future__ import annotations

import datetime as dt

import pytest

from acp_openwrt.lab.timeline import Milestones, hop_figures, milestones

pytestmark = pytest.mark.unit

UTC = dt.UTC
DAY = dt.date(2026, 12, 6)
T0 = dt.datetime.combine(DAY, dt.time(), tzinfo=UTC).timestamp()

PLEDGE_LOG = """\
07:00:01.000 acpd: INFO acp_openwrt.coordinator: node up: links, discovery
07:00:02.500 acpd: INFO acp_openwrt.brski.pledge.part: pledge: join proxy [fe80::1%d0]:4433 heard
07:00:02.600 acpd: INFO acp_openwrt.brski.pledge.client: pledge: enrolling via [fe80::1]:4433
07:00:03.000 acpd: WARNING acp_openwrt.brski.pledge.client: pledge: enrolment via x refused: no
07:00:04.000 acpd: INFO acp_openwrt.brski.pledge.client: pledge: enrolling via [fe80::1]:4433
07:00:05.250 acpd: INFO acp_openwrt.brski.pledge.client: pledge: enrolled via [fe80::1]:4433 as n
07:00:06.000 acpd: INFO acp_openwrt.brski.pledge.client: pledge: enrolling via [fe80::9]:4433
07:00:07.000 acpd: INFO acp_openwrt.channels.part: channel acp-1 d0: attempt failed: x
07:00:08.000 acpd: INFO acp_openwrt.channels.part: channel acp-1 up to n1 (fe80::1) on d0
07:00:09.000 acpd: INFO acp_openwrt.rpl.part: RPL: preferred parent fe80::1 on acp-1
07:00:10.000 acpd: INFO acp_openwrt.rpl.part: RPL: preferred parent fe80::2 on acp-2
not a stamped line
"""


def at(seconds: float) -> float:
    return T0 + 7 * 3600 + seconds


def test_pledge_milestones_take_the_attempt_that_worked() -> None:
    m = milestones(PLEDGE_LOG.splitlines(), DAY, UTC)
    assert m.proxy_heard == pytest.approx(at(2.5))
    assert m.enrol_start == pytest.approx(at(4.0))  # not the refused one, not the later one
    assert m.enrolled == pytest.approx(at(5.25))
    assert m.brski_s == pytest.approx(1.25)
    assert m.first_channel == pytest.approx(at(8.0))  # "attempt failed" is not "up"
    assert m.rpl_joined == pytest.approx(at(9.0))  # the first parent, not the move
    rel = m.relative(at(0))
    assert rel["enrolled"] == pytest.approx(5.25) and rel["brski_s"] == pytest.approx(1.25)


def test_root_joins_when_rpl_starts_and_midnight_wraps() -> None:
    log = ["23:59:59.000 acpd: INFO acp_openwrt.rpl.part: RPL started: root fd00::1 prefix x",
           "00:00:01.000 acpd: INFO acp_openwrt.channels.part: channel acp-1 up to n2 (x) on d"]
    m = milestones(log, DAY, UTC)
    assert m.rpl_joined == pytest.approx(T0 + 86399)
    assert m.first_channel == pytest.approx(T0 + 86401)
    assert m.enrolled is None and m.brski_s is None
    assert Milestones().relative(0.0)["brski_s"] is None


def test_hops_start_at_the_upstream_channel() -> None:
    marks = {"n1": Milestones(first_channel=14.0),
             "n2": Milestones(enrol_start=11.0, enrolled=12.0, first_channel=15.0),
             "n3": Milestones(enrol_start=19.0, enrolled=20.0)}
    answered = {"n1": 0.0, "n2": 10.0, "n3": 10.5}
    hops = hop_figures(["n1", "n2", "n3"], marks, answered)
    assert hops[0] == {"upstream": "n1", "pledge": "n2", "hop_s": 2.0, "brski_s": 1.0,
                       "ratio": 2.0}
    assert hops[1] == {"upstream": "n2", "pledge": "n3", "hop_s": 5.0, "brski_s": 1.0,
                       "ratio": 5.0}
    marks["n3"] = Milestones()
    assert hop_figures(["n1", "n2", "n3"], marks, answered)[1]["hop_s"] is None
