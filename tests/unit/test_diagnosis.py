"""diagnosis.diagnose: a healthy node is all ok; each broken link is named first; any answer
shape, however wrong, gives checks and never an exception."""
from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from acp_openwrt.diagnosis import CertificateDates, Diagnosis, Verdict, diagnose

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
PEER, PEER2 = "fe80::2", "fe80::3"
ROOT = "fd89:b714:f3db:0:200:0:6400:0"
CERT = "/etc/acp/ldevid.pem"


def healthy() -> dict[str, Any]:
    """A member node with one neighbour over one up channel, shaped like real acpd answers."""
    channel = {"interface": "acp_100", "peer": PEER, "dull_interface": "eth0",
               "peer_node_name": "fd89b714f3db00000200000064000000+@acp.example.com",
               "state": "up", "role": "decider", "if_id": 256, "last_error": None}
    neighbour = {"peer": PEER, "interface": "eth0", "methods": ["IKEv2"], "port": 500,
                 "ttl_s": 200.0, "floods_heard": 3}
    interface = {"host_interface": "eth0", "method": "macvlan", "dull_interface": "eth0",
                 "link_local": "fe80::1", "up_for_s": 20.0}
    default = {"prefix": "::/0", "kind": "unicast", "gateway": "fe80::9", "ifname": "acp_100"}
    rpl = {"role": "member", "rank": 512, "dodag_id": ROOT, "interfaces": ["acp_100"],
           "neighbors": 1, "implementation": "acpd", "running": True,
           "parents": [{"address": "fe80::9", "ifname": "acp_100", "preferred": True,
                        "rank": 256}],
           "routes": [default], "installed": [default]}
    brski = {"state": "enrolled", "attempts": 0, "last_refusal": None, "proxies": [],
             "next_renewal": "2026-09-01T00:00:00+00:00", "renewal_failures": 0,
             "ldevid": CERT}
    proxy = {"active": True, "registrar": {"address": ROOT, "port": 443}}
    status = {
        "identity": {"acp_node_name": "fd89b714f3db00000200000064000001+@acp.example.com",
                     "acp_address": "fd89:b714:f3db:0:200:0:6400:1"},
        "enrolled": True, "namespaces": {"dull": "acp-dull", "acp": "acp"},
        "parts": ["links", "rpl", "grasp", "channels", "discovery", "join_proxy", "brski"],
        "failed_parts": {},
        "links": {"interfaces": [interface], "errors": {}},
        "rpl": rpl, "brski": brski, "join_proxy": proxy,
        "grasp": {"running": True, "interfaces": {"acp_100": "fe80::1"}, "est_servers_heard": 1},
        "channels": {"running": True, "channels": [channel]},
        "discovery": {"flooding": True, "neighbors": [neighbour]},
    }
    return {"status": status, "interfaces": [interface], "neighbors": [neighbour],
            "channels": [channel], "rpl": rpl, "brski": brski, "proxy": proxy}


def valid_cert(path: str) -> CertificateDates:
    return CertificateDates(NOW - dt.timedelta(days=30), NOW + dt.timedelta(days=335))


def run(answers: dict[str, Any], now: dt.datetime = NOW, **kw: Any) -> Diagnosis:
    kw.setdefault("read_certificate", valid_cert)
    kw.setdefault("namespaces_present", ["acp-dull", "acp", "other"])
    return diagnose(answers, now, **kw)


def verdicts(result: Diagnosis) -> dict[str, Verdict]:
    return {c.name: c.verdict for c in result.checks}


def test_healthy_node_all_ok() -> None:
    result = run(healthy())
    assert result.healthy and result.first_broken is None
    assert set(verdicts(result).values()) == {Verdict.OK}, result.to_dict()
    names = [c.name for c in result.checks]
    assert names[:7] == ["clock", "namespaces", "parts", "interfaces", "identity", "certificate",
                         "neighbours"]
    assert f"channel {PEER}%eth0" in names
    text = {c.name: c.detail for c in result.checks}
    assert "335 days left" in text["certificate"]
    assert "parent fe80::9 on acp_100" in text["rpl"] and "rank 512" in text["rpl"]
    assert text["route to root"].startswith("::/0 via fe80::9 on acp_100")


def test_root_node_is_healthy_without_parent() -> None:
    answers = healthy()
    answers["rpl"] = {"role": "root", "rank": 256, "parents": [], "routes": [],
                      "interfaces": ["acp_100"]}
    result = run(answers)
    assert result.healthy
    assert "this node is the root" in {c.name: c.detail for c in result.checks}["route to root"]


def broken(answers: dict[str, Any], **kw: Any) -> tuple[str, str, str]:
    result = run(answers, **kw)
    first = result.first_broken
    assert first is not None, result.to_dict()
    assert not result.healthy and first.hint
    return first.name, first.detail, first.hint or ""


def test_clock_before_floor() -> None:
    name, detail, hint = broken(healthy(), now=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    assert name == "clock" and "1970-01-01" in detail and "clock" in hint


def test_status_missing_or_refused() -> None:
    name, detail, _ = broken({"status": RuntimeError("no control socket")})
    assert name == "namespaces" and "no control socket" in detail


def test_namespace_gone() -> None:
    name, detail, hint = broken(healthy(), namespaces_present=["acp-dull"])
    assert name == "namespaces" and "acp missing" in detail and "restart acpd" in hint


def test_failed_part() -> None:
    answers = healthy()
    answers["status"]["failed_parts"] = {"channels": "FileNotFoundError: charon"}
    name, detail, _ = broken(answers)
    assert name == "parts" and detail == "channels did not start: FileNotFoundError: charon"


def test_no_interface_adopted() -> None:
    answers = healthy()
    answers["interfaces"] = []
    answers["status"]["links"] = {"interfaces": [], "errors": {"eth1": "EPERM"}}
    name, detail, hint = broken(answers)
    assert name == "interfaces" and "no interface adopted" in detail and "eth1: EPERM" in detail
    assert "acpctl interfaces" in hint


def test_interface_without_link_local_is_a_warning() -> None:
    answers = healthy()
    answers["interfaces"][0]["link_local"] = None
    result = run(answers)
    assert result.healthy and verdicts(result)["interfaces"] is Verdict.WARN


def not_enrolled(brski: dict[str, Any] | None) -> dict[str, Any]:
    answers = healthy()
    answers["status"].update(enrolled=False, identity=None)
    answers["channels"] = RuntimeError("unknown command 'channels'")
    answers["status"].pop("channels")
    answers["brski"] = brski if brski is not None else RuntimeError("unknown command 'brski'")
    answers["status"]["brski"] = brski
    return answers


@pytest.mark.parametrize("brski, expect", [
    ({"state": "no-idevid", "last_refusal": "idevid.pem: no such file", "proxies": []},
     "no usable IDevID (idevid.pem: no such file)"),
    ({"state": "pledging", "last_refusal": None, "proxies": []}, "no join proxy heard"),
    ({"state": "pledging", "attempts": 2, "last_refusal": "voucher refused: unknown serial",
      "proxies": [{"address": "fe80::2", "port": 4000}]}, "last refusal: voucher refused"),
    ({"state": "pledging", "attempts": 0, "last_refusal": None,
      "proxies": [{"address": "fe80::2", "port": 4000}]}, "not enrolled yet"),
    (None, "no BRSKI pledge is running"),
])
def test_not_enrolled_names_the_brski_reason(brski: dict[str, Any] | None, expect: str) -> None:
    answers = not_enrolled(brski)
    name, detail, _ = broken(answers)
    assert name == "identity" and expect in detail
    v = verdicts(run(answers))
    assert v["certificate"] is v["rpl"] is v["channels"] is Verdict.SKIP


def test_no_proxy_hint_points_at_cabling() -> None:
    _, _, hint = broken(not_enrolled({"state": "pledging", "proxies": []}))
    assert "join_proxy" in hint and "acpctl interfaces" in hint


@pytest.mark.parametrize("days, verdict, healthy_", [(335, Verdict.OK, True),
                                                      (5, Verdict.WARN, True),
                                                      (-3, Verdict.FAIL, False)])
def test_certificate_expiry(days: int, verdict: Verdict, healthy_: bool) -> None:
    def reader(path: str) -> CertificateDates:
        assert path == CERT
        return CertificateDates(NOW - dt.timedelta(days=400), NOW + dt.timedelta(days=days))
    result = run(healthy(), read_certificate=reader)
    check = next(c for c in result.checks if c.name == "certificate")
    assert check.verdict is verdict and result.healthy is healthy_
    if days < 0:
        assert result.first_broken is check and "expired" in check.detail
        assert f"({-days} days ago)" in check.detail


def test_certificate_not_yet_valid_and_unreadable() -> None:
    def future(path: str) -> CertificateDates:
        return CertificateDates(NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=100))
    name, detail, hint = broken(healthy(), read_certificate=future)
    assert name == "certificate" and "not valid before" in detail and "clock" in hint

    def unreadable(path: str) -> CertificateDates:
        raise ValueError(f"cannot read certificate file {path}: Permission denied")
    name, detail, _ = broken(healthy(), read_certificate=unreadable)
    assert name == "certificate" and "Permission denied" in detail


def test_key_not_the_certificates_own_is_the_first_broken_link() -> None:
    """A key that does not match fails the certificate check even with good dates; where
    acpd's key is, its BRSKI (or registrar) part says."""
    answers = healthy()
    answers["brski"]["ldevid_key"] = "/etc/acp/ldevid.key"
    seen = []

    def mismatch(cert: str, key: str) -> str | None:
        seen.append((cert, key))
        return f"ldevid_key {key} is not the key of the LDevID certificate"
    name, detail, hint = broken(answers, check_key=mismatch)
    assert seen == [(CERT, "/etc/acp/ldevid.key")]
    assert name == "certificate" and "is not the key" in detail and "BRSKI" in hint
    assert run(answers, check_key=lambda c, k: None).healthy

    def unreadable(cert: str, key: str) -> str | None:
        raise PermissionError(13, "Permission denied")
    result = run(answers, check_key=unreadable)
    check = next(c for c in result.checks if c.name == "certificate")
    assert result.healthy and "key not checked (Permission denied: run as root)" in check.detail


def test_key_check_follows_the_certificate_override() -> None:
    """--cert without --key: acpd's key is not that certificate's, so it is not checked."""
    answers = healthy()
    answers["brski"]["ldevid_key"] = "/etc/acp/ldevid.key"
    seen = []
    run(answers, certificate_path="/tmp/other.pem",
        check_key=lambda c, k: seen.append((c, k)) or None)
    assert seen == []
    run(answers, certificate_path="/tmp/other.pem", key_path="/tmp/other.key",
        check_key=lambda c, k: seen.append((c, k)) or None)
    assert seen == [("/tmp/other.pem", "/tmp/other.key")]


def test_certificate_path_override_and_unknown_path() -> None:
    seen = []
    run(healthy(), read_certificate=lambda p: seen.append(p) or valid_cert(p),
        certificate_path="/tmp/other.pem")
    assert seen == ["/tmp/other.pem"]
    answers = healthy()
    answers.pop("brski")
    answers["status"].pop("brski")
    result = run(answers)
    assert result.healthy and verdicts(result)["certificate"] is Verdict.WARN


def test_no_neighbour_heard() -> None:
    answers = healthy()
    answers["neighbors"] = []
    name, detail, hint = broken(answers)
    assert (name, detail) == ("neighbours", "no AN_ACP heard on any interface")
    assert "running acpd" in hint and "acpctl interfaces" in hint
    assert verdicts(run(answers))["channels"] is Verdict.SKIP


def test_channel_error_is_first_broken() -> None:
    answers = healthy()
    answers["channels"][0].update(state="connecting", interface=None, role="decider",
                                  last_error="peer certificate: domain other.example")
    answers["rpl"].update(role="unattached", parents=[], routes=[], interfaces=[])
    name, detail, _ = broken(answers)
    assert name == f"channel {PEER}%eth0"
    assert detail == "connecting, last error: peer certificate: domain other.example"


def test_neighbour_without_channel_attempt() -> None:
    answers = healthy()
    answers["channels"] = []
    name, detail, _ = broken(answers)
    assert name == f"channel {PEER}%eth0" and "no channel attempt" in detail


def test_neighbour_without_ikev2() -> None:
    answers = healthy()
    answers["neighbors"][0]["methods"] = ["DTLS"]
    answers["channels"] = []
    name, detail, _ = broken(answers)
    assert "no common secure channel method" in detail and "DTLS" in detail


def test_one_failing_neighbour_of_two_is_a_warning() -> None:
    answers = healthy()
    answers["neighbors"].append({"peer": PEER2, "interface": "eth0", "methods": ["IKEv2"]})
    answers["channels"].append({"peer": PEER2, "dull_interface": "eth0", "state": "connecting",
                                "last_error": "IKE_SA_INIT timed out"})
    result = run(answers)
    assert result.healthy
    assert verdicts(result)[f"channel {PEER2}%eth0"] is Verdict.WARN


def test_still_connecting_alone_fails_at_the_channel_not_at_rpl() -> None:
    answers = healthy()
    answers["channels"][0].update(state="connecting", interface=None, last_error=None)
    answers["rpl"].update(role="unattached", parents=[], routes=[], interfaces=[])
    name, detail, hint = broken(answers)
    assert name == f"channel {PEER}%eth0" and "no result yet" in detail and "again" in hint


def test_rpl_not_joined() -> None:
    answers = healthy()
    answers["rpl"].update(role="unattached", parents=[], routes=[], rank=None, neighbors=0)
    name, detail, hint = broken(answers)
    assert name == "rpl" and "not joined any DODAG" in detail and "root" in hint
    assert verdicts(run(answers))["route to root"] is Verdict.SKIP


def test_rpl_inactive() -> None:
    answers = healthy()
    answers["rpl"] = {"implementation": "acpd", "role": "inactive", "running": False,
                      "reason": "no ACP address"}
    name, detail, _ = broken(answers)
    assert name == "rpl" and "no ACP address" in detail


def test_route_planned_not_installed() -> None:
    answers = healthy()
    answers["rpl"]["installed"] = []
    name, detail, _ = broken(answers)
    assert name == "route to root" and "planned but not installed" in detail


def test_acp_grasp_missing_on_a_channel() -> None:
    answers = healthy()
    answers["status"]["grasp"]["interfaces"] = {}
    name, detail, _ = broken(answers)
    assert (name, detail) == ("acp grasp", "not running on acp_100")
    answers["status"]["grasp"] = {"running": False}
    assert broken(answers)[:2] == ("acp grasp", "ACP GRASP is not running")


def test_status_copy_is_used_when_a_command_fails() -> None:
    answers = healthy()
    for cmd in ("interfaces", "neighbors", "channels", "rpl", "brski", "proxy"):
        answers[cmd] = RuntimeError(f"unknown command {cmd!r}")
    assert run(answers).healthy


# --- garbage never crashes -------------------------------------------------------------------

GARBAGE: list[Any] = [None, 0, -1, 1.5, "", "x", True, [], {}, [1, "a", None], {"a": None},
                      [[1]], [{"peer": ["x"], "interface": {}}], RuntimeError("boom")]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from paths(sub, prefix + (index,))


def replaced(answers: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    out = copy.deepcopy(answers)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return out


def test_every_part_replaced_by_garbage_never_crashes() -> None:
    base = healthy()
    every = [p for p in paths(base) if p]
    assert len(every) > 100
    for path in every:
        for junk in GARBAGE:
            result = run(replaced(base, path, junk))
            assert result.checks and all(c.detail for c in result.checks), (path, junk)
            result.to_dict()


@pytest.mark.parametrize("answers", [{}, {"status": None}, {"status": []}, {"status": "up"},
                                     {cmd: RuntimeError("x") for cmd in healthy()},
                                     {cmd: None for cmd in healthy()}, [], None, "status"])
def test_whole_answers_garbage(answers: Any) -> None:
    result = diagnose(answers, NOW)
    assert result.first_broken is not None and result.first_broken.name == "namespaces"


def test_naive_time_is_taken_as_utc() -> None:
    assert run(healthy(), now=NOW.replace(tzinfo=None)).healthy


def test_channel_attempts_are_reported() -> None:
    from acp_openwrt.diagnosis import Verdict, _channel
    check = _channel("channel x", {"state": "connecting", "last_error": "AUTH_FAILED",
                                   "failures": 3, "retry_in_s": 40.0, "initiating": False},
                     Verdict.FAIL)
    assert check.detail == ("connecting, last error: AUTH_FAILED; 3 failed attempt(s); "
                            "next attempt in 40 s")
    check = _channel("channel x", {"state": "connecting", "initiating": True}, Verdict.FAIL)
    assert check.detail.endswith("; an attempt is under way")
