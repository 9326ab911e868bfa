"""RPL's I/O edge without root: socket option structs, receive filtering, the sunshine command line,
the service's settings and status, and `acpctl rpl` against a control socket."""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import struct
import threading
from pathlib import Path

import pytest

from acp_openwrt import events
from acp_openwrt.commands import CommandError
from acp_openwrt.commands import rpl as rpl_command
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.identity.address import vlong_address, zone_address
from acp_openwrt.node_context import NodeContext
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.installer import RTPROT_ACP_RPL, RouteInstaller
from acp_openwrt.rpl.linkstate import usable
from acp_openwrt.rpl.part import RplPart
from acp_openwrt.rpl.transport import RplTransport, group_request, icmp6_filter, pktinfo
from acp_openwrt.rpl.unstrung import RplLaunchError, SunshineLauncher, sunshine_argv

RSUB = "area51.research.acp.example"
ZONE = zone_address(RSUB, 7, 5)           # a /127
VLONG = vlong_address(RSUB, 7, 9, v_bits=8)  # a /120


def test_icmp6_filter_passes_only_the_named_types() -> None:
    words = struct.unpack("=8I", icmp6_filter(155))
    blocked = {t for t in range(256) if words[t >> 5] >> (t & 31) & 1}
    assert blocked == set(range(256)) - {155}
    words = struct.unpack("=8I", icmp6_filter(129, 1))
    assert {t for t in range(256) if not words[t >> 5] >> (t & 31) & 1} == {1, 129}


def test_socket_structs() -> None:
    assert group_request(c.ALL_RPL_NODES, 7) == c.ALL_RPL_NODES.packed + struct.pack("=I", 7)
    assert pktinfo(3) == bytes(16) + struct.pack("=I", 3)
    src = ipaddress.IPv6Address("fe80::1")
    assert pktinfo(3, src)[:16] == src.packed


def _anc(ifindex: int, hoplimit: int, dst: str = "ff02::1a") -> list[tuple[int, int, bytes]]:
    return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
             ipaddress.IPv6Address(dst).packed + struct.pack("=I", ifindex)),
            (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT, struct.pack("=i", hoplimit))]


def test_transport_receive_filtering() -> None:
    got: list[tuple] = []
    transport = RplTransport("unused", lambda *args: got.append(args))
    transport._by_index[4] = "acp_a"  # as add_interface leaves it, without a socket
    transport._by_name["acp_a"] = 4
    dio = b"\x9b\x01\x00\x00" + b"body"
    transport._handle(dio, _anc(4, 255), ("fe80::2%acp_a", 0, 0, 4))
    assert got == [("acp_a", ipaddress.IPv6Address("fe80::2"), 1, b"body",
                    ipaddress.IPv6Address("ff02::1a"))]
    transport._handle(dio, _anc(9, 255), ("fe80::2", 0, 0, 9))        # not an RPL interface
    transport._handle(dio, _anc(4, 64), ("fe80::2", 0, 0, 4))         # any hop limit: taken
    transport._handle(dio, _anc(4, 64, "fd00::1"), ("fe80::2", 0, 0, 4))  # routed destination
    transport._handle(b"\x9b\x01", _anc(4, 255), ("fe80::2", 0, 0, 4))  # truncated header
    transport._handle(dio, _anc(4, 255), ("fd00::2", 0, 0, 4))        # not link-local
    transport._handle(dio, [], ("fe80::2", 0, 0, 4))                  # no pktinfo at all
    assert len(got) == 2
    assert transport.counters == {"received": 2, "received_hop_limit_not_255": 1,
                                  "drop_unknown_interface": 2, "drop_malformed": 1,
                                  "drop_not_link_local": 1, "drop_not_link_local_destination": 1}


def test_link_usable_needs_up_and_carrier() -> None:
    assert usable(0x1 | 0x10000)
    assert not usable(0x1) and not usable(0x10000) and not usable(0)


def test_installer_refuses_reserved_protocols() -> None:
    assert RouteInstaller("x").protocol == RTPROT_ACP_RPL == 155
    for bad in (0, 2, 4, 256):
        with pytest.raises(ValueError):
            RouteInstaller("x", bad)


def test_sunshine_argv_root_and_member() -> None:
    prefix = ipaddress.IPv6Network("fd89:b714:f3db::/48")
    root = sunshine_argv("/usr/sbin/sunshine", ["acp_a", "acp_b"], root=True,
                         dodag_id=ZONE.address, prefix=prefix)
    assert root == ["/usr/sbin/sunshine", "-v",
                    "-i", "acp_a", "-I", "0", "-p", str(prefix), "-G", str(ZONE.address),
                    "-R", "1",
                    "-i", "acp_b", "-I", "0", "-p", str(prefix), "-G", str(ZONE.address),
                    "-R", "1"]
    member = sunshine_argv("sunshine", ["acp_a"], root=False, dodag_id=None,
                           prefix=VLONG.prefix, verbose=False)
    assert member == ["sunshine", "-i", "acp_a", "-I", "0", "-p", str(VLONG.prefix)]
    with pytest.raises(RplLaunchError):
        sunshine_argv("sunshine", [], root=False, dodag_id=None, prefix=VLONG.prefix)
    with pytest.raises(RplLaunchError):
        sunshine_argv("sunshine", ["acp_a"], root=True, dodag_id=None, prefix=VLONG.prefix)


def test_sunshine_not_installed_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RplLaunchError, match="not installed"):
        SunshineLauncher("acp", tmp_path).find()
    with pytest.raises(RplLaunchError, match=f"not installed at {tmp_path}/sunshine"):
        SunshineLauncher("acp", tmp_path, str(tmp_path / "sunshine")).find()
    fake = tmp_path / "sunshine"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert SunshineLauncher("acp", tmp_path).find() == str(fake)


def _ctx(tmp_path: Path, identity: dict | None, **config) -> NodeContext:
    return NodeContext(AcpConfig(run_dir=tmp_path, log_dir=tmp_path, **config),
                       events.EventBus(), ControlServer(tmp_path / "acpd.sock"), identity)


def test_external_mode_without_sunshine_fails_start(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    ctx = _ctx(tmp_path, {"acp_address": str(ZONE.address), "prefix_length": 127})
    service = RplPart(ctx, external=True)

    async def main() -> None:
        with pytest.raises(RplLaunchError, match="not installed"):
            await service.start()
        await service.stop()
    asyncio.run(main())


def test_service_settings_from_config_and_identity(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, {"acp_address": str(VLONG.address), "prefix_length": 120},
               dodag_root=True, registrar=True,
               prefix=ipaddress.IPv6Network("fd00:1234::/32"))
    service = RplPart(ctx)
    config = service.rpl_config()
    assert config is not None and config.root and config.prefix == VLONG.prefix
    assert config.preference == c.PRF_ROOT
    assert service.root_range() == ipaddress.IPv6Network("fd00:1234::/32")
    # An ACP-Manual style /64 from the identity wins over the scheme's length.
    member = RplPart(_ctx(tmp_path, {"acp_address": str(VLONG.address), "prefix_length": 64},
                             registrar=True), namespace="other")
    config = member.rpl_config()
    assert config is not None and not config.root and config.prefix.prefixlen == 64
    assert config.preference == c.PRF_REGISTRAR and member.root_range() is None
    assert member.namespace == "other"


def test_service_without_identity_stays_inactive(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, None)
    service = RplPart(ctx)

    async def main() -> dict:
        await service.start()
        ctx.bus.publish(events.ChannelUp("fe80::1", "eth0", "acp_x", "peer"))
        reply = await ctx.control.dispatch(b'{"cmd": "rpl"}')
        await service.stop()
        return reply
    reply = asyncio.run(main())
    assert reply["ok"] and reply["result"]["role"] == "inactive"
    assert reply["result"]["reason"] == "no ACP address"


STATUS = {"role": "member", "rank": 1024, "dodag_id": "fd00::1", "version": 240,
          "address": str(ZONE.address), "prefix": str(ZONE.prefix), "implementation": "acpd",
          "parents": [{"address": "fe80::1", "ifname": "acp_a", "rank": 256, "preferred": True}],
          "children": [{"address": "fe80::9", "ifname": "acp_b", "targets": [str(VLONG.prefix)]}],
          "routes": [{"prefix": "::/0", "kind": "unicast", "gateway": "fe80::1",
                      "ifname": "acp_a"}]}


def _acpctl(socket_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", type=Path)
    rpl_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["--socket", str(socket_path), "rpl", *argv])
    return args.func(args)


def test_acpctl_rpl_json_and_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "acpd.sock"
    server = ControlServer(path)
    server.register("rpl", lambda req: STATUS)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        assert _acpctl(path, "--json") == 0
        out = json.loads(capsys.readouterr().out)
        assert {k: out[k] for k in ("role", "rank", "dodag_id")} == \
            {"role": "member", "rank": 1024, "dodag_id": "fd00::1"}
        assert out["parents"][0]["address"] == "fe80::1" and out["routes"][0]["prefix"] == "::/0"
        assert _acpctl(path) == 0
        text = capsys.readouterr().out
        assert "role:" in text and "member" in text and "1024" in text
        assert "PARENT" in text and "fe80::1" in text and "yes" in text
        assert "CHILD" in text and str(VLONG.prefix) in text
        assert "ROUTE" in text and "::/0" in text
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    with pytest.raises(CommandError, match="no control socket"):
        _acpctl(path)
