"""`acpctl status` in words: one short line per part, from the `status` control reply.

Pure (data in, lines out) and forgiving: a part missing from the reply, or a reply from an
older or newer acpd with other keys, gives fewer lines or a '?', never an exception.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Summary = Callable[[dict[str, Any]], str]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _channels(st: dict[str, Any]) -> str:
    if not st.get("running"):
        return "off (no LDevID)"
    entries = st.get("channels") or []
    states: dict[str, int] = {}
    for entry in entries:
        states[str(entry.get("state"))] = states.get(str(entry.get("state")), 0) + 1
    if not entries:
        return "none yet (no neighbour with a usable AN_ACP)"
    text = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    errors = [e.get("last_error") for e in entries if e.get("last_error")]
    return text + (f"; last error: {errors[-1]}" if errors else "")


def _rpl(st: dict[str, Any]) -> str:
    if not st.get("running"):
        return f"off ({st.get('reason') or 'not running'})"
    role = st.get("role", "?")
    if st.get("rank") is None:
        return f"{role}, not in a DODAG yet"
    parents = [p for p in st.get("parents") or [] if p.get("preferred")]
    via = f", parent {parents[0].get('address')}%{parents[0].get('ifname')}" if parents else ""
    return (f"{role}, rank {st.get('rank')}{via}, {len(st.get('installed') or [])} routes, "
            f"DODAG {st.get('dodag_id')}")


def _grasp(st: dict[str, Any]) -> str:
    if not st.get("running"):
        return "off"
    interfaces, asas = len(st.get("interfaces") or {}), len(st.get("asas") or [])
    return f"on {interfaces} channel interfaces, {asas} ASAs"


def _brski(st: dict[str, Any]) -> str:
    state = st.get("state", "?")
    if state == "enrolled":
        renew = st.get("next_renewal")
        return "enrolled" + (f", renewal due {str(renew)[:10]}" if renew else "")
    refusal = st.get("last_refusal")
    return (f"{state}, {st.get('attempts', 0)} attempts, {len(st.get('proxies') or [])} "
            f"proxies heard" + (f"; last: {refusal}" if refusal else ""))


def _join_proxy(st: dict[str, Any]) -> str:
    if not st.get("active"):
        return "off (until enrolled)"
    registrar = st.get("registrar")
    if not registrar:
        return "waiting for an AN_join_registrar"
    return f"relaying to registrar [{registrar.get('address')}]:{registrar.get('port')}"


def _connect(st: dict[str, Any]) -> str:
    connects = st.get("connects") or []
    return ", ".join(f"{c.get('name')} ({c.get('device')}) {c.get('state')}"
                     + (f": {c.get('error')}" if c.get("error") else "")
                     for c in connects) or "none configured"


def _registrar(st: dict[str, Any]) -> str:
    parts = [f"domain {st.get('domain', '?')}"]
    if st.get("port") is not None:
        parts.append(f"port {st.get('port')}")
    for key in ("enrolled", "refused"):
        if key in st:
            parts.append(f"{key} {st[key]}")
    return ", ".join(parts)


def _ubus(st: dict[str, Any]) -> str:
    if st.get("connected"):
        return f"object {st.get('object', 'acp')} at {st.get('socket')}"
    return f"not registered: {st.get('reason') or 'not connected'}"


PARTS: tuple[tuple[str, Summary], ...] = (
    ("channels", _channels), ("rpl", _rpl), ("grasp", _grasp), ("connect", _connect),
    ("brski", _brski), ("join_proxy", _join_proxy), ("registrar", _registrar), ("ubus", _ubus))


def status_lines(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs for the parts in `data`, in the order an operator reads them."""
    identity = _dict(data.get("identity"))
    lines: list[tuple[str, str]] = []
    if identity:
        lines += [("node", str(identity.get("acp_node_name"))),
                  ("address", f"{identity.get('acp_address')}/{identity.get('prefix_length')} "
                              f"({identity.get('scheme')})"),
                  ("domain", str(identity.get("acp_domain")))]
    else:
        lines.append(("node", "not enrolled (no LDevID): no AN_ACP is flooded"))
    ns = _dict(data.get("namespaces"))
    lines.append(("netns", f"dull={ns.get('dull')} acp={ns.get('acp')}"))
    links = _list(_dict(data.get("links")).get("interfaces"))
    neighbors = _list(_dict(data.get("discovery")).get("neighbors"))
    lines.append(("links", f"{len(links)} adopted, {len(neighbors)} neighbours heard"))
    for name, summary in PARTS:
        part = data.get(name)
        if isinstance(part, dict):
            try:
                lines.append((name, summary(part)))
            except (AttributeError, TypeError, ValueError):
                lines.append((name, "?"))
    for name, error in _dict(data.get("failed_parts")).items():
        lines.append(("FAILED", f"{name}: {error}"))
    return lines
