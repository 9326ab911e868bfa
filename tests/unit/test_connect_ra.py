"""Router Advertisement building and parsing, RS checks, and the RA schedule (RFC 4861/4191)."""
from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from acp_openwrt.connect.ra import (
    MIN_DELAY_BETWEEN_RAS,
    PIO_AUTONOMOUS,
    PIO_ONLINK,
    NdError,
    RaContent,
    RaSchedule,
    build_ra,
    parse_ra,
    parse_rs,
)

NET = ipaddress.IPv6Network("fd73:9fc2:3c34:2001::/64")
ULA = ipaddress.IPv6Network("fd73:9fc2:3c34::/48")
MAC = bytes.fromhex("020000aabbcc")


def test_ra_layout_byte_by_byte() -> None:
    ra = build_ra(RaContent(NET, (ULA,), MAC))
    # header: type 134, code 0, checksum 0 (kernel), hop limit 64, flags 0, lifetime 1800
    assert ra[:16] == bytes([134, 0, 0, 0, 64, 0]) + struct.pack("!HII", 1800, 0, 0)
    assert ra[16:24] == bytes([1, 1]) + MAC                                      # SLLA
    pio = ra[24:56]
    assert pio[:4] == bytes([3, 4, 64, PIO_ONLINK | PIO_AUTONOMOUS])
    assert struct.unpack("!III", pio[4:16]) == (2592000, 604800, 0)
    assert pio[16:] == NET.network_address.packed
    # RIO for the /48: length 2 (8 prefix octets), preference medium, lifetime 1800
    assert ra[56:72] == (bytes([24, 2, 48, 0]) + struct.pack("!I", 1800)
                         + ULA.network_address.packed[:8])
    # RIO ::/0 lifetime 0: length 1, no prefix octets
    assert ra[72:] == bytes([24, 1, 0, 0, 0, 0, 0, 0])
    assert len(ra) % 8 == 0


def test_parse_round_trip_and_variants() -> None:
    long = ipaddress.IPv6Network("fd73:9fc2:3c34:4011:2233:4455:0:ff00/120")
    parsed = parse_ra(build_ra(RaContent(long, (ULA,), MAC, mtu=1400, default_router=True)))
    assert parsed.router_lifetime == 1800 and parsed.source_mac == MAC and parsed.mtu == 1400
    assert parsed.prefixes == [(long, PIO_ONLINK, 2592000, 604800)]   # no A flag: not a /64
    assert parsed.routes == [(ULA, 1800)]                               # no ::/0 RIO
    final = parse_ra(build_ra(RaContent(NET, (ULA,), None), final=True))
    assert final.router_lifetime == 0 and final.source_mac is None
    assert final.prefixes[0][3] == 0                                     # preferred 0
    assert final.routes == [(ULA, 0), (ipaddress.IPv6Network("::/0"), 0)]
    host = ipaddress.IPv6Network("fd00::1:0/112")
    assert parse_ra(build_ra(RaContent(NET, (host,), None))).routes[0] == (host, 1800)


def test_bad_mac() -> None:
    with pytest.raises(ValueError):
        build_ra(RaContent(NET, (), b"\x01\x02"))


def test_router_solicitation_checks() -> None:
    ll = ipaddress.IPv6Address("fe80::1")
    unspecified = ipaddress.IPv6Address("::")
    plain = bytes([133, 0, 0, 0, 0, 0, 0, 0])
    slla = bytes([1, 1]) + MAC
    assert parse_rs(plain, unspecified).source_mac is None
    assert parse_rs(plain + slla, ll).source_mac == MAC
    for bad, src in ((plain[:6], ll), (bytes([133, 1]) + plain[2:], ll),
                     (plain + bytes([1, 0]) + MAC, ll), (plain + bytes([1, 2]) + MAC, ll),
                     (plain + slla, unspecified), (bytes([134]) + plain[1:], ll)):
        with pytest.raises(NdError):
            parse_rs(bad, src)
    with pytest.raises(NdError):
        parse_ra(plain)


def test_schedule_initial_periodic_and_solicited() -> None:
    s = RaSchedule(100.0, max_interval=600.0, rng=random.Random(1))
    assert s.min_interval == 200.0
    assert s.poll(100.0) and not s.poll(100.5)           # the first at once
    sent = [100.0]
    for _ in range(2):                                    # the next two at most 16 s apart
        t = s.next_time()
        assert t - sent[-1] <= 16.0
        assert s.poll(t)
        sent.append(t)
    t = s.next_time()
    assert 200.0 <= t - sent[-1] <= 600.0                 # then MinRtrAdvInterval..Max
    # an RS 1 s after the last RA: answered, but not before MIN_DELAY_BETWEEN_RAS
    s.solicited(sent[-1] + 1.0)
    assert s.next_time() == sent[-1] + MIN_DELAY_BETWEEN_RAS
    answered = s.next_time()
    assert s.poll(answered) and s.solicitations == 1
    assert s.next_time() - answered >= 200.0          # back to the periodic interval
    # an RS long after the last RA: answered within MAX_RA_DELAY_TIME
    s.solicited(answered + 100)
    assert answered + 100 <= s.next_time() <= answered + 100.5


def test_schedule_bounds() -> None:
    with pytest.raises(ValueError):
        RaSchedule(0.0, max_interval=10.0, min_interval=20.0)
