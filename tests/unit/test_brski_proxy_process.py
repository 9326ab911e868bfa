"""The proxy process's message handling, in-process over a socketpair (no namespaces, no root)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from acp_openwrt.brski.proxy import handover as ho
from acp_openwrt.brski.proxy.process import ProxyProcess
from acp_openwrt.brski.proxy.relay import RelayLimits
from acp_openwrt.brski.proxy.sandbox import SandboxError, resolve_user


async def expect(chan: ho.HandoverChannel, within: float = 2.0) -> ho.Message:
    received = await asyncio.wait_for(chan.receive(), within)
    assert received is not None, "proxy closed the handover socket"
    return received[0]


async def answers(_locator) -> bool:
    return True


def test_proxy_reports_listeners_registrar_known_lost_and_status() -> None:
    async def scenario() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        acpd = ho.HandoverChannel(a)
        proxy = ProxyProcess(ho.HandoverChannel(b), RelayLimits(), probe=answers)
        task = asyncio.create_task(proxy.run())
        assert await expect(acpd) == ho.Hello(os.getpid(), os.getuid(), os.getgid())
        assert await expect(acpd) == ho.RegistrarState(False)

        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as lsock:
            lsock.bind(("::1", 0))
            lsock.listen(4)
            port = lsock.getsockname()[1]
            await acpd.send(ho.Listen("eth0", "::1", port), (lsock.fileno(),))
        assert await expect(acpd) == ho.Listening("eth0", "::1", port)

        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as not_listening:
            await acpd.send(ho.Listen("eth1", "::1", 1), (not_listening.fileno(),))
        msg = await expect(acpd)
        assert isinstance(msg, ho.ListenFailed) and msg.ifname == "eth1"

        await acpd.send(ho.Registrar("fe80::9", 443, 10_000))       # refused: link-local
        await acpd.send(ho.Registrar("fd00::1", 8443, 400))
        assert await expect(acpd) == ho.RegistrarState(True, "fd00::1", 8443)
        heard = time.monotonic()
        await acpd.send(ho.StatusRequest(5))
        reply = await expect(acpd)
        assert isinstance(reply, ho.StatusReply) and reply.seq == 5
        assert reply.status["registrar"] == {"address": "fd00::1", "port": 8443}
        assert [x["ifname"] for x in reply.status["listeners"]] == ["eth0"]
        assert reply.status["uid"] == os.getuid()
        # The flood's ttl runs out: the proxy says so by itself, without being asked.
        assert await expect(acpd) == ho.RegistrarState(False)
        assert 0.3 < time.monotonic() - heard < 1.5

        await acpd.send(ho.Unlisten("eth0"))
        await acpd.send(ho.StatusRequest(6))
        reply = await expect(acpd)
        assert isinstance(reply, ho.StatusReply) and reply.status["listeners"] == []
        acpd.close()
        await asyncio.wait_for(task, 2)  # end of stream ends the proxy
    asyncio.run(scenario())


def test_registrar_is_known_only_once_it_answers(monkeypatch) -> None:
    """Heard before the ACP routes to it exist: no AN_Proxy yet (pledges would fail, back off)."""
    monkeypatch.setattr("acp_openwrt.brski.proxy.process.PROBE_RETRY", 0.05)
    probed = []

    async def third_time_lucky(locator) -> bool:
        probed.append(locator)
        return len(probed) >= 3

    async def scenario() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        acpd = ho.HandoverChannel(a)
        proxy = ProxyProcess(ho.HandoverChannel(b), RelayLimits(), probe=third_time_lucky)
        task = asyncio.create_task(proxy.run())
        await expect(acpd)  # Hello
        assert await expect(acpd) == ho.RegistrarState(False)
        await acpd.send(ho.Registrar("fd00::1", 8443, 60_000))
        assert await expect(acpd) == ho.RegistrarState(True, "fd00::1", 8443)
        assert len(probed) == 3 and proxy.probes_failed == 2
        await acpd.send(ho.Registrar("fd00::1", 8443, 60_000))  # refreshed: no new probe
        await acpd.send(ho.StatusRequest(1))
        reply = await expect(acpd)
        assert reply.status["probes_failed"] == 2 and len(probed) == 3
        acpd.close()
        await asyncio.wait_for(task, 2)
    asyncio.run(scenario())


def test_tcp_probe_tells_a_listening_registrar_from_a_closed_port() -> None:
    from acp_openwrt.brski.proxy.process import tcp_probe
    from acp_openwrt.brski.proxy.registrars import RegistrarLocator

    async def scenario() -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as lsock:
            lsock.bind(("::1", 0))
            lsock.listen(1)
            port = lsock.getsockname()[1]
            assert await tcp_probe(RegistrarLocator("::1", port), 1.0) is True
        assert await tcp_probe(RegistrarLocator("::1", port), 1.0) is False
    asyncio.run(scenario())


def test_bad_message_from_acpd_is_skipped_not_fatal() -> None:
    async def scenario() -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        acpd = ho.HandoverChannel(a)
        task = asyncio.create_task(ProxyProcess(ho.HandoverChannel(b), RelayLimits()).run())
        await expect(acpd)
        await expect(acpd)
        a.send(b'{"op":"format_disk"}')
        await acpd.send(ho.StatusRequest(1))
        assert isinstance(await expect(acpd), ho.StatusReply)
        acpd.close()
        await asyncio.wait_for(task, 2)
    asyncio.run(scenario())


def test_root_is_never_a_proxy_user() -> None:
    with pytest.raises(SandboxError, match="root"):
        resolve_user("root")
    with pytest.raises(SandboxError, match="no such user"):
        resolve_user("no-such-user-here")


def proxy_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acp_openwrt.brski.proxy.process", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)


def test_cli_errors_are_one_line() -> None:
    if os.geteuid() == 0:
        # Root without a user to become: refused before touching anything.
        res = proxy_cli("--handover-fd", "0")
        assert res.returncode == 2 and "refusing to run the join proxy as root" in res.stderr
        # Confined as nobody, then fd 0 (/dev/null) is no socket.
        res = proxy_cli("--handover-fd", "0", "--user", "nobody")
        assert res.returncode == 1
    else:
        res = proxy_cli("--handover-fd", "0")
        assert res.returncode == 1
    assert res.stderr.startswith("acp-join-proxy:") and res.stderr.count("\n") == 1
    res = proxy_cli("--handover-fd", "0", "--max-connections", "0")
    assert res.returncode == 2 and "at least 1" in res.stderr
