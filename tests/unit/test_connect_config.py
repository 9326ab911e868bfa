"""`config connect` sections: values, cross-option rules, one-line errors, link adoption skip."""
from __future__ import annotations

import ipaddress

import pytest

from acp_openwrt.config.schema import parse_config
from acp_openwrt.config.uci import ConfigError, parse_uci
from acp_openwrt.connect.config import ConnectConfig, Forward, connects_from_uci, ignore_patterns
from acp_openwrt.links.plan import HostLink, wanted

GOOD = """
config acp 'main'
    option dodag_root '1'

config connect 'bmc'
    option device 'eth2'
    option subnet_id '1'
    option ipv4 '192.168.0.1/24'
    option device_ipv4 '192.168.0.2'
    list forward 'tcp:443'
    list forward 'udp:623'
    option relay_idle_timeout '60'

config connect
    option device 'eth3'
    option prefix 'fd73:9fc2:3c34:2002::/64'
    option ra '0'
    option default_router 'yes'
"""


def parse(text: str) -> tuple[ConnectConfig, ...]:
    return connects_from_uci(parse_uci(text, "/etc/config/acp"))


def test_good_file() -> None:
    bmc, nms = parse(GOOD)
    assert bmc == ConnectConfig(
        name="bmc", device="eth2", subnet_id=1,
        ipv4=ipaddress.IPv4Interface("192.168.0.1/24"),
        device_ipv4=ipaddress.IPv4Address("192.168.0.2"),
        forward=(Forward("tcp", 443), Forward("udp", 623)), relay_idle_timeout=60, line=5)
    assert nms.name == "eth3" and nms.prefix == ipaddress.IPv6Network("fd73:9fc2:3c34:2002::/64")
    assert not nms.router_advertisements and nms.default_router
    assert str(bmc.forward[0]) == "tcp:443" and bmc.to_dict()["forward"] == ["tcp:443", "udp:623"]
    # the acp schema still reads the same file (it ignores other section types)
    assert parse_config(GOOD).dodag_root


def test_no_sections() -> None:
    assert parse("config acp 'main'\n") == ()


@pytest.mark.parametrize("body, line, message", [
    ("    option subnet_id '1'\n", 2, "option device is required"),
    ("    option device 'a b'\n", 3, "is not an interface name"),
    ("    option device 'lo'\n", 3, "lo cannot be"),
    ("    option device 'eth0'\n    option prefix 'fd00::/48'\n", 4, "is not a ULA /64"),
    ("    option device 'eth0'\n    option prefix '2001:db8::/64'\n", 4, "is not a ULA /64"),
    ("    option device 'eth0'\n    option prefix 'fd00::1/64'\n", 4, "host bits set"),
    ("    option device 'eth0'\n    option subnet_id '8192'\n", 4, "0 to 8191"),
    ("    option device 'eth0'\n    option subnet_id '1'\n    option prefix 'fd00::/64'\n", 5,
     "not both"),
    ("    option device 'eth0'\n    list forward 'tcp:0'\n", 4, "tcp:PORT or udp:PORT"),
    ("    option device 'eth0'\n    list forward 'sctp:22'\n", 4, "tcp:PORT or udp:PORT"),
    ("    option device 'eth0'\n    list forward 'tcp:22'\n", 4, "forward needs option ipv4"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.1/24'\n", 4, "device_ipv4 is missing"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.0/24'\n", 4, "network or broadcast"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.1'\n", 4, "prefix length from 8 to 30"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.1/24'\n    option device_ipv4 '10.0.1.2'\n",
     5, "must be another host address inside 10.0.0.0/24"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.1/24'\n    option device_ipv4 '10.0.0.1'\n",
     5, "must be another host address"),
    ("    option device 'eth0'\n    option ipv4 '10.0.0.1/24'\n    option device_ipv4 '10.0.0.2'\n"
     "    list forward 'tcp:22'\n    list forward 'tcp:22'\n", 6, "tcp:22 is listed twice"),
    ("    option device 'eth0'\n    option subnet '1'\n", 4, "did you mean subnet_id?"),
    ("    option device 'eth0'\n    option ra 'maybe'\n", 4, "is not a boolean"),
    ("    list device 'eth0'\n", 3, "takes one value"),
    ("    option device 'eth0'\n    option relay_max_connections '0'\n", 4, "from 1 to 1024"),
])
def test_errors_are_one_line_with_file_and_line(body: str, line: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"\nconfig connect 'x'\n{body}")
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"/etc/config/acp:{line}: ") and message in text


def test_duplicates_across_sections() -> None:
    with pytest.raises(ConfigError, match=r":5: config connect 'b': same device as config "
                                          r"connect 'a' \(line 2\)"):
        parse("\nconfig connect 'a'\n option device 'eth1'\n\nconfig connect 'b'\n"
              " option device 'eth1'\n")
    with pytest.raises(ConfigError, match="same subnet_id"):
        parse("config connect 'a'\n option device 'e1'\n option subnet_id 3\n"
              "config connect 'b'\n option device 'e2'\n option subnet_id 3\n")


def test_link_adoption_skips_connect_devices() -> None:
    """With ignore_patterns() added to the ignore list, plan.wanted() never twins them."""
    connects = parse(GOOD)
    links = [HostLink(2, "eth1"), HostLink(3, "eth2"), HostLink(4, "eth3"),
             HostLink(5, "eth[x]")]
    patterns = ignore_patterns(connects)
    assert patterns == ("eth2", "eth3")
    assert sorted(a.host_name for a in wanted(links, patterns).values()) == ["eth1", "eth[x]"]
    assert ignore_patterns([ConnectConfig("z", "eth[x]")]) == ("eth[[]x]",)
    assert [a.host_name for a in wanted(links, ("eth[[]x]",)).values()] == ["eth1", "eth2", "eth3"]
