"""AN_ACP (RFC 8994 §6.4) on the wire, sans-I/O: our flood out; a heard flood's neighbour in,
or the reason it is not one."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from ..grasp import constants as c
from ..grasp.actions import FloodReceived
from ..grasp.messages import Locator, Objective
from ..logsafe import logsafe

AN_ACP = "AN_ACP"
IKE_PORT = 500
# RFC 8994 §6.4 defines these two method names; anything else is a method we cannot offer a
# channel for, and a value that names none is no neighbour (it used to be one "without method",
# which the channels part took for IKEv2).
KNOWN_METHODS = frozenset(("IKEv2", "DTLS"))
# Why a heard AN_ACP flood is not a neighbour (the discovery counters use these names).
UNUSABLE_LOCATOR = "unusable_locator"
LOCATOR_MISMATCH = "locator_mismatch"
BAD_METHOD = "bad_method"


@dataclass(frozen=True)
class Offer:
    """A neighbour offering a secure channel: its link-local address, port and methods."""
    peer: str
    port: int
    methods: tuple[str, ...]


@dataclass(frozen=True)
class Refused:
    reason: str
    detail: str  # for a log line: printable, bounded


def our_flood(link_local: str) -> tuple[Objective, Locator]:
    """Our AN_ACP flood on one link: ["AN_ACP", 4, 1, "IKEv2"] and
    [O_IPv6_LOCATOR, <link-local>, UDP, 500]."""
    return (Objective(AN_ACP, c.F_SYNCH, 1, "IKEv2"),
            Locator(c.O_IPv6_LOCATOR, ipaddress.IPv6Address(link_local).packed, c.IPPROTO_UDP,
                    IKE_PORT))


def read_offer(flood: FloodReceived) -> Offer | Refused:
    """The neighbour a heard AN_ACP flood announces.

    RFC 8994 §6.4: "The originator MUST be the IPv6 link-local address of the originating ACP
    node on the sending interface", and a locator's "IPv6 address MUST be the same as the
    initiator address (these are DULL requirements to minimize third-party DoS attacks)". A
    DULL flood is never relayed (loop count 1), so its originator is the datagram's sender: the
    locator, the initiator and the IPv6 source address must be one address. Otherwise a single
    host could point us, and our IKE initiations, at any number of addresses it does not own.
    """
    loc = flood.locator
    if (loc is None or loc.kind != c.O_IPv6_LOCATOR or loc.protocol != c.IPPROTO_UDP
            or not isinstance(loc.address, bytes) or len(loc.address) != 16
            or not isinstance(loc.port, int) or not 0 < loc.port < 65536):
        return Refused(UNUSABLE_LOCATOR, "no IPv6/UDP locator")
    raw = loc.address
    if raw[0] != 0xFE or raw[1] & 0xC0 != 0x80:   # fe80::/10, without an IPv6Address per flood
        return Refused(UNUSABLE_LOCATOR, f"locator {_address(raw)} is not link-local")
    if raw != flood.source or raw != flood.initiator:
        return Refused(LOCATOR_MISMATCH, f"locator {_address(raw)}, initiator "
                       f"{_address(flood.initiator)}, sent from {_address(flood.source)}")
    methods = methods_of(flood.objective.value)
    if methods is None:
        return Refused(BAD_METHOD, f"objective value {logsafe(flood.objective.value, 60)}")
    # inet_ntop writes what str(IPv6Address) does for fe80::/10 (RFC 5952), in C: every
    # flood of a spoofing neighbour comes through here
    return Offer(socket.inet_ntop(socket.AF_INET6, raw), loc.port, methods)


def methods_of(value: Any) -> tuple[str, ...] | None:
    """The method an AN_ACP objective value names, or None. RFC 8994 Figure 7:
    objective-value = method-name / [method, *extension]; method = method-name /
    [method-name, *method-param]; unknown params and extensions are ignored."""
    method = value
    if isinstance(method, (list, tuple)) and method:
        method = method[0]
        if isinstance(method, (list, tuple)) and method:
            method = method[0]
    if isinstance(method, str) and method in KNOWN_METHODS:
        return (method,)
    return None


def _address(raw: bytes) -> str:
    return str(ipaddress.IPv6Address(raw)) if isinstance(raw, bytes) and len(raw) == 16 \
        else logsafe(raw, 40)
