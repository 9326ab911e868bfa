"""What is wrong with this ACP node, in dependency order (RFC 8994 §9.1), sans-I/O.

`diagnose()` takes the node's control answers (command name → reply, or an exception for a
command that failed) and the time, and walks the chain an operator would: clock, namespaces,
parts, adopted interfaces, identity (or BRSKI), certificate, AN_ACP neighbours, one secure
channel per neighbour, RPL, the route to the root, ACP GRASP, join proxy. Each step is a Check
(ok/warn/fail/skip and one plain line); the first failing one is most likely the root cause,
so it carries a hint. Facts only the local box knows (which namespaces exist, the LDevID's
dates) come in as values and a function, so this module never touches files or sockets.
"""
from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from .node_answers import NodeAnswers, as_dict, as_list, aware, dicts_in

EXPIRY_WARN_DAYS = 14
CLOCK_FLOOR = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # older than this software


class Verdict(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    name: str
    verdict: Verdict
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "result": self.verdict.value, "detail": self.detail,
                "hint": self.hint}


@dataclass(frozen=True)
class CertificateDates:
    not_before: dt.datetime
    not_after: dt.datetime


CertificateReader = Callable[[str], CertificateDates]
# (certificate path, key path) -> why the key is not the certificate's, or None; OSError
# (PermissionError: acpctl not run as root) when the key cannot be read at all.
KeyChecker = Callable[[str, str], "str | None"]


@dataclass(frozen=True)
class Diagnosis:
    checks: tuple[Check, ...]

    @property
    def first_broken(self) -> Check | None:
        return next((c for c in self.checks if c.verdict is Verdict.FAIL), None)

    @property
    def healthy(self) -> bool:
        return self.first_broken is None

    def to_dict(self) -> dict[str, Any]:
        broken = self.first_broken
        return {"healthy": self.healthy, "checks": [c.to_dict() for c in self.checks],
                "first_broken": broken.to_dict() if broken else None}


def diagnose(answers: Mapping[str, Any], now: dt.datetime, *,
             read_certificate: CertificateReader | None = None,
             namespaces_present: Collection[str] | None = None,
             certificate_path: str | None = None, check_key: KeyChecker | None = None,
             key_path: str | None = None) -> Diagnosis:
    """The checks for one node. `namespaces_present` (names under /run/netns),
    `read_certificate` and `check_key` are the local box's view; without them those checks
    trust acpd."""
    facts = NodeAnswers(answers, aware(now))
    checks = [_clock(facts), _namespaces(facts, namespaces_present), _parts(facts),
              _interfaces(facts), _identity(facts),
              _certificate(facts, read_certificate, certificate_path, check_key, key_path),
              _neighbours(facts)]
    checks += _channels(facts)
    checks += [_rpl(facts), _route_to_root(facts), _acp_grasp(facts), _join_proxy(facts)]
    checks += _crl(facts)
    return Diagnosis(tuple(checks))


def _skip(name: str, why: str) -> Check:
    return Check(name, Verdict.SKIP, why)


# --- the chain -------------------------------------------------------------------------------

def _clock(f: NodeAnswers) -> Check:
    if f.now < CLOCK_FLOOR:
        return Check("clock", Verdict.FAIL, f"system time {f.now:%Y-%m-%d %H:%M} UTC is before "
                     f"{CLOCK_FLOOR:%Y}: certificate checks cannot work",
                     "set the clock (NTP, or `date -s`); a dead RTC battery resets it")
    return Check("clock", Verdict.OK, f"{f.now:%Y-%m-%d %H:%M} UTC")


def _namespaces(f: NodeAnswers, present: Collection[str] | None) -> Check:
    if not f.status:
        return Check("namespaces", Verdict.FAIL, f.why_missing("status"),
                     "is acpd running and answering? see `acpctl status` and acpd's log")
    ns = as_dict(f.status.get("namespaces"))
    names = {k: ns.get(k) for k in ("dull", "acp")}
    if not all(isinstance(v, str) and v for v in names.values()):
        return Check("namespaces", Verdict.FAIL, "acpd reports no DULL/ACP namespace names",
                     "restart acpd and read its log")
    text = f"dull={names['dull']} acp={names['acp']}"
    if present is not None:
        missing = [str(v) for v in names.values() if v not in present]
        if missing:
            return Check("namespaces", Verdict.FAIL,
                         f"namespace {', '.join(missing)} missing ({text})",
                         "something removed it under acpd: restart acpd (it recreates them)")
    return Check("namespaces", Verdict.OK, text)


def _parts(f: NodeAnswers) -> Check:
    if not f.status:
        return _skip("parts", "no status")
    if f.failed_parts:
        first, reason = next(iter(sorted(f.failed_parts.items())))
        more = f" (and {len(f.failed_parts) - 1} more)" if len(f.failed_parts) > 1 else ""
        return Check("parts", Verdict.FAIL, f"{first} did not start: {reason}{more}",
                     "read acpd's log for the part that failed; `acpctl status --json` "
                     "lists failed_parts")
    return Check("parts", Verdict.OK, f"{len(f.parts)} running: {', '.join(sorted(f.parts))}")


def _interfaces(f: NodeAnswers) -> Check:
    if f.interfaces is None:
        return Check("interfaces", Verdict.FAIL, f.why_missing("interfaces"),
                     "the links part is not answering: see acpd's log")
    errors = "; ".join(f"{k}: {v}" for k, v in sorted(f.link_errors.items()))
    if not f.interfaces:
        return Check("interfaces", Verdict.FAIL,
                     "no interface adopted into DULL" + (f" ({errors})" if errors else ""),
                     "is a cable in a port that is up? is it excluded by ignore_interfaces? "
                     "see `acpctl interfaces`")
    names = [str(e.get("host_interface")) for e in f.interfaces]
    no_ll = [str(e.get("host_interface")) for e in f.interfaces if not e.get("link_local")]
    text = f"{len(names)} adopted: {', '.join(names)}"
    if errors or no_ll:
        extra = ([f"no link-local yet on {', '.join(no_ll)}"] if no_ll else []) + \
                ([f"errors: {errors}"] if errors else [])
        return Check("interfaces", Verdict.WARN, f"{text}; {'; '.join(extra)}",
                     "see `acpctl interfaces` and acpd's log")
    return Check("interfaces", Verdict.OK, text)


def _identity(f: NodeAnswers) -> Check:
    if f.enrolled:
        ident = as_dict(f.status.get("identity"))
        return Check("identity", Verdict.OK, f"{ident.get('acp_node_name')} "
                     f"(ACP address {ident.get('acp_address')})")
    if not f.status:
        return _skip("identity", "no status")
    return _brski(f)


def _brski(f: NodeAnswers) -> Check:
    """Not enrolled: why BRSKI has not given us an LDevID yet."""
    b = f.brski
    if b is None:
        return Check("identity", Verdict.FAIL, "not enrolled, and no BRSKI pledge is running",
                     "install an LDevID (ldevid_cert/ldevid_key) or enable the pledge "
                     "(this node is configured as registrar?)")
    state, refusal = b.get("state"), b.get("last_refusal")
    proxies = dicts_in(b.get("proxies"))
    if state == "no-idevid":
        return Check("identity", Verdict.FAIL, f"not enrolled: no usable IDevID ({refusal})",
                     "install the manufacturer's IDevID (idevid_cert, idevid_key) and restart acpd")
    if not proxies:
        return Check("identity", Verdict.FAIL,
                     "not enrolled: no join proxy heard (no AN_Proxy on any interface)",
                     "is a neighbour enrolled and running acpd with join_proxy on, and the cable "
                     "in a port acpd adopted? see `acpctl interfaces`, `acpctl brski`")
    if refusal:
        return Check("identity", Verdict.FAIL,
                     f"not enrolled: {len(proxies)} proxy(s) heard, {b.get('attempts', 0)} "
                     f"attempt(s), last refusal: {refusal}",
                     "the registrar or MASA said no: see `acpctl brski` here and the registrar's "
                     "`acpctl registrar` (is this IDevID's manufacturer trusted there?)")
    return Check("identity", Verdict.FAIL,
                 f"not enrolled yet: BRSKI {state}, {len(proxies)} proxy(s) heard, "
                 f"{b.get('attempts', 0)} attempt(s)",
                 "enrolment is under way: run `acpctl diagnose` again in a minute")


def _certificate(f: NodeAnswers, read: CertificateReader | None, path: str | None,
                 check_key: KeyChecker | None = None, key_path: str | None = None) -> Check:
    if not f.enrolled:
        return _skip("certificate", "not enrolled")
    if path is None:  # acpd's own files; a --cert of the operator's goes with --key only
        key_path = key_path or (f.brski or {}).get("ldevid_key") \
            or as_dict(f.status.get("registrar")).get("ldevid_key")
    path = path or (f.brski or {}).get("ldevid") \
        or as_dict(f.status.get("registrar")).get("ldevid")  # a registrar runs no pledge part
    if not isinstance(path, str) or not path:
        return Check("certificate", Verdict.WARN, "LDevID file unknown (no BRSKI part reports it)",
                     "pass its path: `acpctl diagnose --cert FILE`")
    if read is None:
        return _skip("certificate", f"{path} not read")
    try:
        dates = read(path)
    except (OSError, ValueError) as exc:
        return Check("certificate", Verdict.FAIL, f"cannot read LDevID: {exc}",
                     "acpd runs with a certificate it cannot read back: check the file and "
                     "restart acpd")
    key_note = ""
    if check_key is not None and isinstance(key_path, str) and key_path:
        try:
            problem = check_key(path, key_path)
        except OSError as exc:
            problem, key_note = None, f"; key not checked ({exc.strerror or exc}: run as root)"
        if problem:
            return Check("certificate", Verdict.FAIL, problem,
                         "the LDevID and its key must be one pair (a copied file, or a renewal "
                         "an older acpd left half done): restore the pair, or remove both so "
                         "that acpd enrols again with BRSKI")
    not_before, not_after = aware(dates.not_before), aware(dates.not_after)
    days = (not_after - f.now).total_seconds() / 86400
    renewal = _renewal_text(f.brski or {})
    if f.now < not_before:
        return Check("certificate", Verdict.FAIL,
                     f"{path} not valid before {not_before:%Y-%m-%d %H:%M} UTC",
                     "is the clock right? peers refuse a certificate that is not yet valid")
    if days <= 0:
        return Check("certificate", Verdict.FAIL,
                     f"{path} expired {not_after:%Y-%m-%d} ({-days:.0f} days ago){renewal}",
                     "the LDevID was not renewed: acpd falls back to BRSKI with the IDevID; "
                     "see `acpctl brski` (est_server, renewal_failures)")
    text = f"valid until {not_after:%Y-%m-%d} ({days:.0f} days left){renewal}{key_note}"
    if days < EXPIRY_WARN_DAYS or (f.brski or {}).get("renewal_failures"):
        return Check("certificate", Verdict.WARN, text,
                     "renewal is not getting through: see `acpctl brski`")
    return Check("certificate", Verdict.OK, text)


def _renewal_text(brski: dict[str, Any]) -> str:
    failures = brski.get("renewal_failures")
    nxt = brski.get("next_renewal")
    parts = ([f"renewal due {str(nxt)[:10]}"] if nxt else []) + \
            ([f"{failures} renewal failure(s)"] if failures else [])
    return f"; {', '.join(parts)}" if parts else ""


def _neighbours(f: NodeAnswers) -> Check:
    if f.neighbours is None:
        return Check("neighbours", Verdict.FAIL, f.why_missing("neighbors"),
                     "the discovery part is not answering: see acpd's log")
    if not f.neighbours and not f.enrolled:
        return Check("neighbours", Verdict.WARN, "no AN_ACP heard (as a pledge only AN_Proxy "
                     "matters)")
    if not f.neighbours:
        return Check("neighbours", Verdict.FAIL, "no AN_ACP heard on any interface",
                     "is the neighbour running acpd (and enrolled), and the cable in a port "
                     "acpd adopted? see `acpctl interfaces`; L2 gear between may drop "
                     "multicast (MLD snooping)")
    by_if: dict[str, int] = {}
    for n in f.neighbours:
        by_if[str(n.get("interface"))] = by_if.get(str(n.get("interface")), 0) + 1
    text = f"{len(f.neighbours)} heard: " + ", ".join(f"{n} on {i}"
                                                      for i, n in sorted(by_if.items()))
    if not f.enrolled:
        return Check("neighbours", Verdict.OK, text + " (we flood nothing until enrolled)")
    return Check("neighbours", Verdict.OK, text)


def _channels(f: NodeAnswers) -> list[Check]:
    """One check per neighbour: did a secure channel come up, and if not, why not."""
    if not f.enrolled:
        return [_skip("channels", "not enrolled: no secure channels without an LDevID")]
    if not f.neighbours:
        return [_skip("channels", "no neighbour to build a channel to")]
    if f.channels is None:
        return [Check("channels", Verdict.FAIL, f.why_missing("channels"),
                      "the channels part is not running: see `acpctl status` and acpd's log")]
    running = as_dict(f.status.get("channels")).get("running")
    if running is False:
        return [Check("channels", Verdict.FAIL, "the channels part is not running (charon?)",
                      "see acpd's log and the charon log named in `acpctl status --json`")]
    by_key = {(str(c.get("dull_interface")), str(c.get("peer"))): c for c in f.channels}
    any_up = bool(f.up_channels())
    bad = Verdict.WARN if any_up else Verdict.FAIL  # one bad neighbour of several is partial
    out = []
    for n in f.neighbours:
        peer, ifname = n.get("peer"), n.get("interface")
        name = f"channel {peer}%{ifname}"
        methods = [str(m) for m in as_list(n.get("methods"))]
        if "IKEv2" not in methods:
            out.append(Check(name, bad, f"no common secure channel method (peer offers "
                             f"{', '.join(methods) or 'none'})",
                             "the neighbour must offer IKEv2 in AN_ACP"))
            continue
        ch = by_key.get((str(ifname), str(peer)))
        if ch is None:
            out.append(Check(name, bad, "neighbour heard but no channel attempt",
                             "see `acpctl channels` and acpd's log"))
            continue
        out.append(_channel(name, ch, bad))
    return out


def _attempts(ch: dict[str, Any]) -> str:
    """'; 3 failed attempts, next in 40 s' from what the channels part reports (if it does)."""
    failures, retry, initiating = ch.get("failures"), ch.get("retry_in_s"), ch.get("initiating")
    text = ""
    if isinstance(failures, int) and failures:
        text += f"; {failures} failed attempt(s)"
    if initiating is True:
        text += "; an attempt is under way"
    elif isinstance(retry, (int, float)):
        text += f"; next attempt in {retry:g} s"
    return text


def _channel(name: str, ch: dict[str, Any], bad: Verdict) -> Check:
    state, error = ch.get("state"), ch.get("last_error")
    who = ch.get("peer_node_name") or "peer"
    if state == "up":
        return Check(name, Verdict.OK, f"up to {who} on {ch.get('interface')} "
                     f"(role {ch.get('role')})")
    if error:
        return Check(name, bad, f"{state}, last error: {error}{_attempts(ch)}",
                     "a certificate or domain mismatch shows here; see `acpctl channels` and "
                     "the charon log (`acpctl status --json` names it)")
    if state == "activating":
        return Check(name, bad, "SA up, interface not yet in the ACP namespace",
                     "wait a few seconds; if it stays, see acpd's log")
    return Check(name, bad, f"{state}, no result yet (role {ch.get('role')}){_attempts(ch)}",
                 "IKE takes a few seconds: run diagnose again; if it stays, see "
                 "`acpctl channels` and the charon log")


def _rpl(f: NodeAnswers) -> Check:
    if not f.enrolled:
        return _skip("rpl", "not enrolled")
    r = f.rpl
    if r is None:
        return Check("rpl", Verdict.FAIL, f.why_missing("rpl"), "the RPL part is not running")
    role = r.get("role")
    parents = dicts_in(r.get("parents"))
    preferred = next((p for p in parents if p.get("preferred")), parents[0] if parents else None)
    if role == "root":
        return Check("rpl", Verdict.OK, f"DODAG root, rank {r.get('rank')}")
    if role == "member" and preferred:
        return Check("rpl", Verdict.OK, f"joined DODAG {r.get('dodag_id')}, rank {r.get('rank')}, "
                     f"parent {preferred.get('address')} on {preferred.get('ifname')}")
    if r.get("implementation") == "unstrung":
        return Check("rpl", Verdict.WARN if r.get("running") else Verdict.FAIL,
                     f"external RPL daemon {'running' if r.get('running') else 'not running'}; "
                     "parent and rank not visible", "see the sunshine log")
    if role == "inactive":
        return Check("rpl", Verdict.FAIL, f"RPL inactive: {r.get('reason')}",
                     "RPL needs the node's ACP address: check the LDevID's acp-node-name")
    ifaces = as_list(r.get("interfaces"))
    if not ifaces:
        hint = ("no secure channel is up, so RPL has no interface: fix the channels first"
                if not f.up_channels() else "channels are up but RPL runs on none: see acpd's log")
        return Check("rpl", Verdict.FAIL, "not joined any DODAG: RPL runs on no interface", hint)
    return Check("rpl", Verdict.FAIL,
                 f"not joined any DODAG ({r.get('neighbors', 0)} RPL neighbour(s) on "
                 f"{', '.join(map(str, ifaces))})",
                 "no DIO from a grounded DODAG heard: is a root configured (rpl_root) and "
                 "reachable? see `acpctl rpl` on the neighbours")


def _route_to_root(f: NodeAnswers) -> Check:
    r = f.rpl or {}
    if not f.enrolled or r.get("role") not in ("root", "member"):
        return _skip("route to root", "not in a DODAG")
    if r.get("role") == "root":
        return Check("route to root", Verdict.OK, "this node is the root")
    routes = [x for x in dicts_in(r.get("routes")) if x.get("prefix") == "::/0"]
    if not routes:
        return Check("route to root", Verdict.FAIL, "no default route towards the root",
                     "RPL has a parent but planned no route: see acpd's log")
    route = routes[0]
    text = f"::/0 via {route.get('gateway')} on {route.get('ifname')}"
    installed = r.get("installed")
    if isinstance(installed, list) and not any(as_dict(x).get("prefix") == "::/0"
                                               for x in installed):
        return Check("route to root", Verdict.FAIL, f"{text} planned but not installed",
                     "netlink refused the route: see acpd's log (rpl)")
    dodag = r.get("dodag_id")
    return Check("route to root", Verdict.OK, f"{text} (root {dodag})" if dodag else text)


def _acp_grasp(f: NodeAnswers) -> Check:
    if not f.enrolled:
        return _skip("acp grasp", "not enrolled")
    g = f.grasp
    if g is None or not g.get("running"):
        return Check("acp grasp", Verdict.FAIL, "ACP GRASP is not running",
                     "see acpd's log (grasp part)")
    on = {str(i) for i in (as_dict(g.get("interfaces")) or as_list(g.get("interfaces")))}
    want = {str(c.get("interface")) for c in f.up_channels() if c.get("interface")}
    missing = sorted(want - on)
    if missing:
        return Check("acp grasp", Verdict.FAIL, f"not running on {', '.join(missing)}",
                     "the channel is up but GRASP did not join it: see acpd's log")
    if not want:
        return Check("acp grasp", Verdict.WARN, "running, but on no channel yet")
    est = g.get("est_servers_heard")
    text = f"running on {', '.join(sorted(want))}"
    return Check("acp grasp", Verdict.OK, text + (f"; {est} SRV.est flood(s) heard" if est else ""))


def _join_proxy(f: NodeAnswers) -> Check:
    p = f.proxy
    if not f.enrolled or p is None:
        return _skip("join proxy", "not enrolled" if not f.enrolled else "no join proxy part")
    if not p.get("active"):
        return Check("join proxy", Verdict.WARN, "not active", "see acpd's log (join_proxy)")
    registrar = as_dict(p.get("registrar"))
    if not registrar:
        return Check("join proxy", Verdict.WARN, "no registrar known (no AN_join_registrar heard)",
                     "pledges next to this node cannot enrol until a registrar floods over the ACP")
    return Check("join proxy", Verdict.OK,
                 f"registrar [{registrar.get('address')}]:{registrar.get('port')}")


def _crl(f: NodeAnswers) -> list[Check]:
    """RFC 8994 §9.1's "CRL fresh?": the revocation part's view (no check without that part)."""
    r = as_dict(f.status.get("revocation"))
    if not f.enrolled or not r:
        return []
    if r.get("problem"):
        return [Check("crl", Verdict.WARN, str(r["problem"]))]
    sources, crls = dicts_in(r.get("sources")), dicts_in(r.get("crls"))
    if not sources and not crls:
        return [Check("crl", Verdict.WARN, "our certificate names no CRL distribution point: "
                      "revoked peers are not noticed", "re-enrol or renew with a registrar that "
                      "writes a CRL distribution point")]
    failing = [s for s in sources if s.get("last_error")]
    if not crls:
        why = (f"{failing[0].get('url')}: {failing[0].get('last_error')}" if failing
               else "not fetched yet")
        return [Check("crl", Verdict.WARN, f"no CRL yet ({why}); channels still form "
                      "(RFC 8994 §6.2.3), revoked peers are not noticed",
                      "the CRL comes from the registrar across the ACP: see the channels "
                      "and the route to the registrar")]
    held = crls[0]
    text = f"CRL #{held.get('crl_number')}, {r.get('revoked', 0)} revoked"
    fetched = [float(s["last_fetch"]) for s in sources
               if isinstance(s.get("last_fetch"), int | float)]
    if fetched:
        text += f", fetched {max(0, round(f.now.timestamp() - max(fetched)))} s ago"
    if failing:
        return [Check("crl", Verdict.WARN, f"{text}; kept while {failing[0].get('url')} "
                      f"fails: {failing[0].get('last_error')}")]
    if any(c.get("stale") for c in crls):
        return [Check("crl", Verdict.WARN, f"{text}; past its next update")]
    return [Check("crl", Verdict.OK, text)]
