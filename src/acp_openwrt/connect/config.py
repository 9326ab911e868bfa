"""`config connect '<name>'` sections: one ACP connect interface each (RFC 8994 §8.1).

Read from the same parsed UCI file as `config acp 'main'` (config/uci.py); only sections of
type `connect` are looked at. Every problem is a ConfigError `file:line: message`.

    config connect 'bmc'
        option device 'eth2'              # host interface, moved into the ACP namespace
        option subnet_id '1'              # ACP-Manual Subnet-ID; or: option prefix '<ULA>/64'
        option ipv4 '192.168.0.1/24'      # the node's IPv4 address and subnet on eth2
        option device_ipv4 '192.168.0.2'  # the IPv4-only device behind it
        list forward 'tcp:443'
        list forward 'udp:623'
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..config.uci import ConfigError, UciOption, UciPackage, UciSection, show

SECTION_TYPE = "connect"
IFNAME_MAX = 15  # IFNAMSIZ - 1
SUBNET_ID_MAX = (1 << 13) - 1
ULA = ipaddress.IPv6Network("fd00::/8")
_IFNAME = re.compile(r"[A-Za-z0-9_.@-]+")
_FORWARD = re.compile(r"(tcp|udp):([0-9]{1,5})")
TRUE_WORDS = ("1", "yes", "on", "true", "enabled")
FALSE_WORDS = ("0", "no", "off", "false", "disabled")


@dataclass(frozen=True)
class Forward:
    """One relayed service of the IPv4 device: `tcp:443`."""
    protocol: str   # "tcp" or "udp"
    port: int

    def __str__(self) -> str:
        return f"{self.protocol}:{self.port}"


@dataclass(frozen=True)
class ConnectConfig:
    """One validated connect section. `prefix` and `subnet_id` are exclusive; with neither the
    subnet is carved out of the node's own Vlong range (see connect/addressing.py)."""
    name: str
    device: str
    prefix: ipaddress.IPv6Network | None = None
    subnet_id: int | None = None
    ipv4: ipaddress.IPv4Interface | None = None
    device_ipv4: ipaddress.IPv4Address | None = None
    forward: tuple[Forward, ...] = ()
    enabled: bool = True
    router_advertisements: bool = True
    default_router: bool = False
    relay_max_connections: int = 16
    relay_idle_timeout: int = 300
    line: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device": self.device,
                "prefix": str(self.prefix) if self.prefix else None,
                "subnet_id": self.subnet_id,
                "ipv4": str(self.ipv4) if self.ipv4 else None,
                "device_ipv4": str(self.device_ipv4) if self.device_ipv4 else None,
                "forward": [str(f) for f in self.forward], "enabled": self.enabled,
                "router_advertisements": self.router_advertisements,
                "default_router": self.default_router,
                "relay_max_connections": self.relay_max_connections,
                "relay_idle_timeout": self.relay_idle_timeout}


class _Invalid(Exception):
    """A value's problem, without file and line."""


def _bool(text: str) -> bool:
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise _Invalid(f"{show(text)} is not a boolean (1/0, yes/no, on/off, true/false)")


def _device(text: str) -> str:
    if len(text) > IFNAME_MAX or not _IFNAME.fullmatch(text) or text in (".", ".."):
        raise _Invalid(f"{show(text)} is not an interface name (1 to {IFNAME_MAX} of letters, "
                       "digits, _ . - @)")
    if text == "lo":
        raise _Invalid("lo cannot be an ACP connect interface")
    return text


def _prefix(text: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise _Invalid(f"{show(text)} is not an IPv6 prefix ({exc})") from None
    if "/" not in text or net.prefixlen != 64 or not net.subnet_of(ULA):
        raise _Invalid(f"{show(text)} is not a ULA /64 (an ACP-Manual prefix, RFC 8994 §6.11.4, "
                       "e.g. fdxx:xxxx:xxxx:2001::/64)")
    return net


def _subnet_id(text: str) -> int:
    if not text.isdigit() or int(text) > SUBNET_ID_MAX:
        raise _Invalid(f"{show(text)} is not a Subnet-ID from 0 to {SUBNET_ID_MAX}")
    return int(text)


def _ipv4(text: str) -> ipaddress.IPv4Interface:
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError as exc:
        raise _Invalid(f"{show(text)} is not an IPv4 address with prefix length ({exc})") from None
    net = iface.network
    if "/" not in text or not 8 <= net.prefixlen <= 30:
        raise _Invalid(f"{show(text)} needs a prefix length from 8 to 30 (e.g. 192.168.0.1/24)")
    if iface.ip in (net.network_address, net.broadcast_address):
        raise _Invalid(f"{show(text)}: the node's address is the network or broadcast address")
    return iface


def _address4(text: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise _Invalid(f"{show(text)} is not an IPv4 address") from None


def _forward(text: str) -> Forward:
    m = _FORWARD.fullmatch(text)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise _Invalid(f"{show(text)} is not tcp:PORT or udp:PORT with PORT 1 to 65535")
    return Forward(m.group(1), int(m.group(2)))


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise _Invalid(f"{show(text)} is not a whole number from {low} to {high}")
        return int(text)
    return convert


# option name -> (converter, ConnectConfig field, is a list)
_OPTIONS: dict[str, tuple[Callable[[str], Any], str, bool]] = {
    "device": (_device, "device", False),
    "prefix": (_prefix, "prefix", False),
    "subnet_id": (_subnet_id, "subnet_id", False),
    "ipv4": (_ipv4, "ipv4", False),
    "device_ipv4": (_address4, "device_ipv4", False),
    "forward": (_forward, "forward", True),
    "enabled": (_bool, "enabled", False),
    "ra": (_bool, "router_advertisements", False),
    "default_router": (_bool, "default_router", False),
    "relay_max_connections": (_int_range(1, 1024), "relay_max_connections", False),
    "relay_idle_timeout": (_int_range(1, 86400), "relay_idle_timeout", False),
}


def _convert(name: str, option: UciOption, filename: str) -> Any:
    convert, _field, is_list = _OPTIONS[name]
    if not is_list and option.is_list:
        raise ConfigError(filename, option.line,
                          f"option {name}: takes one value; write 'option {name} ...', not 'list'")
    items = [(word, v.line) for v in option.values
             for word in ([v.text] if option.is_list or not is_list else v.text.split())]
    out = []
    for text, line in items:
        try:
            out.append(convert(text))
        except _Invalid as exc:
            kind = "list" if option.is_list else "option"
            raise ConfigError(filename, line, f"{kind} {name}: {exc}") from None
    return tuple(out) if is_list else out[0]


def _section(section: UciSection, filename: str) -> ConnectConfig:
    label = f"config {SECTION_TYPE} '{section.name}'" if section.name \
        else f"config {SECTION_TYPE} (unnamed)"
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for option in section.options:
        if option.name not in _OPTIONS:
            close = difflib.get_close_matches(option.name, _OPTIONS, n=1)
            hint = f"did you mean {close[0]}?" if close else "see docs/connect.md"
            raise ConfigError(filename, option.line,
                              f"option {option.name}: unknown option in {label} ({hint})")
        values[_OPTIONS[option.name][1]] = _convert(option.name, option, filename)
        lines[option.name] = option.line

    def fail(option: str, message: str) -> ConfigError:
        return ConfigError(filename, lines.get(option, section.line), f"{label}: {message}")

    if "device" not in values:
        raise fail("device", "option device is required (the host interface to connect)")
    if "prefix" in values and "subnet_id" in values:
        later = max(("prefix", "subnet_id"), key=lambda n: lines[n])
        raise fail(later, "give option prefix or option subnet_id, not both")
    forwards = values.get("forward", ())
    seen: set[Forward] = set()
    for fwd in forwards:
        if fwd in seen:
            raise fail("forward", f"forward {fwd} is listed twice")
        seen.add(fwd)
    ipv4, device4 = values.get("ipv4"), values.get("device_ipv4")
    if (ipv4 is None) != (device4 is None):
        missing = "device_ipv4" if ipv4 is not None else "ipv4"
        raise fail("ipv4" if ipv4 is not None else "device_ipv4",
                   f"ipv4 and device_ipv4 go together: option {missing} is missing")
    if ipv4 is not None and device4 is not None:
        if device4 not in ipv4.network or device4 == ipv4.ip or \
                device4 in (ipv4.network.network_address, ipv4.network.broadcast_address):
            raise fail("device_ipv4", f"device_ipv4 {device4} must be another host address "
                       f"inside {ipv4.network} (the node has {ipv4.ip})")
    if forwards and device4 is None:
        raise fail("forward", "forward needs option ipv4 and option device_ipv4 (the relays "
                   "reach the device over IPv4)")
    name = section.name or values["device"]
    return ConnectConfig(name=name, line=section.line, **values)


def connects_from_uci(package: UciPackage) -> tuple[ConnectConfig, ...]:
    """Every `config connect` section of a parsed file, validated, in file order."""
    out: list[ConnectConfig] = []
    # each keyed by the value two sections must not share
    by_name: dict[object, ConnectConfig] = {}
    by_device: dict[object, ConnectConfig] = {}
    by_subnet: dict[object, ConnectConfig] = {}
    filename = package.filename
    for section in (s for s in package.sections if s.type == SECTION_TYPE):
        connect = _section(section, filename)
        for table, key, what in ((by_name, connect.name, "name"),
                                 (by_device, connect.device, "device"),
                                 (by_subnet, connect.prefix, "prefix"),
                                 (by_subnet, ("id", connect.subnet_id), "subnet_id")):
            if key is None or key == ("id", None):
                continue
            other = table.get(key)
            if other is not None:
                raise ConfigError(filename, section.line,
                                  f"config {SECTION_TYPE} '{connect.name}': same {what} as "
                                  f"config {SECTION_TYPE} '{other.name}' (line {other.line})")
            table[key] = connect
        out.append(connect)
    return tuple(out)


def ignore_patterns(connects: Iterable[ConnectConfig]) -> tuple[str, ...]:
    """Host interface names link adoption must leave alone (never a DULL twin: §8.1).

    Exact names, usable as fnmatch patterns; `[` is escaped so a name is never a pattern.
    Disabled sections are included too: a connect link must not fall into DULL by accident.
    """
    return tuple(c.device.replace("[", "[[]") for c in connects)
