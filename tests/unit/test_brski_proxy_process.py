"""The proxy process's message handling, in-process over a socketpair (no namespaces, no root)."""
from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from acp_openwrt.brski.proxy import handover as ho
from acp_openwrt.brski.proxy.process import ProxyProcess
from acp_openwrt.brski.proxy.relay import RelayLimits
from acp_openwrt.brski.proxy.sandbox import SandboxError, resolve_user

SRC = str(Path(ho.__file__).resolve().parents[3])


class Acpd:
    """acpd's end of the socketpair, with the proxy stepped in this thread (no asyncio)."""

    def __init__(self, probe=None) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        kwargs = {"probe": probe} if probe is not None else {}
        self.proxy = ProxyProcess(theirs, RelayLimits(), **kwargs)
        self.proxy.start()

    def send(self, msg: ho.Message, fds: tuple[int, ...] = ()) -> None:
        ho.send_message(self.sock, msg, fds)

    def expect(self, within: float = 2.0) -> ho.Message:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        assert self.proxy.loop.run_until(lambda: poller.poll(0), within), "no message"
        received = ho.recv_message(self.sock)
        assert received is not None, "proxy closed the handover socket"
        return received[0]

    def close(self) -> None:
        self.sock.close()
        assert self.proxy.loop.run_until(lambda: self.proxy.stopped, 2)  # end of stream
        self.proxy.finish()
        assert self.proxy.loop.watched == 0  # nothing left behind
        self.proxy.sock.close()


def answers(loop, _locator, _within, done):
    timer = loop.call_later(0, lambda: done(True))
    return timer.cancel


def test_proxy_reports_listeners_registrar_known_lost_and_status() -> None:
    acpd = Acpd(probe=answers)
    assert acpd.expect() == ho.Hello(os.getpid(), os.getuid(), os.getgid())
    assert acpd.expect() == ho.RegistrarState(False)

    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as lsock:
        lsock.bind(("::1", 0))
        lsock.listen(4)
        port = lsock.getsockname()[1]
        acpd.send(ho.Listen("eth0", "::1", port), (lsock.fileno(),))
    assert acpd.expect() == ho.Listening("eth0", "::1", port)

    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as not_listening:
        acpd.send(ho.Listen("eth1", "::1", 1), (not_listening.fileno(),))
    msg = acpd.expect()
    assert isinstance(msg, ho.ListenFailed) and msg.ifname == "eth1"

    acpd.send(ho.Registrar("fe80::9", 443, 10_000))       # refused: link-local
    acpd.send(ho.Registrar("fd00::1", 8443, 400))
    assert acpd.expect() == ho.RegistrarState(True, "fd00::1", 8443)
    heard = time.monotonic()
    acpd.send(ho.StatusRequest(5))
    reply = acpd.expect()
    assert isinstance(reply, ho.StatusReply) and reply.seq == 5
    assert reply.status["registrar"] == {"address": "fd00::1", "port": 8443}
    assert [x["ifname"] for x in reply.status["listeners"]] == ["eth0"]
    assert reply.status["uid"] == os.getuid()
    # The flood's ttl runs out: the proxy says so by itself, without being asked.
    assert acpd.expect() == ho.RegistrarState(False)
    assert 0.3 < time.monotonic() - heard < 1.5

    acpd.send(ho.Unlisten("eth0"))
    acpd.send(ho.StatusRequest(6))
    reply = acpd.expect()
    assert isinstance(reply, ho.StatusReply) and reply.status["listeners"] == []
    acpd.close()



def lucky_on(attempt: int, probed: list):
    """A registrar probe that fails until its `attempt`th try (each recorded in `probed`)."""
    def probe(loop, locator, _within, done):
        probed.append(locator)
        timer = loop.call_later(0.01, lambda: done(len(probed) >= attempt))
        return timer.cancel
    return probe

def test_registrar_is_known_only_once_it_answers(monkeypatch) -> None:
    """Heard before the ACP routes to it exist: no AN_Proxy yet (pledges would fail, back off)."""
    monkeypatch.setattr("acp_openwrt.brski.proxy.process.PROBE_RETRY", 0.05)
    probed: list = []
    acpd = Acpd(probe=lucky_on(3, probed))
    acpd.expect()  # Hello
    assert acpd.expect() == ho.RegistrarState(False)
    acpd.send(ho.Registrar("fd00::1", 8443, 60_000))
    assert acpd.expect() == ho.RegistrarState(True, "fd00::1", 8443)
    assert len(probed) == 3 and acpd.proxy.probes_failed == 2
    acpd.send(ho.Registrar("fd00::1", 8443, 60_000))  # refreshed: no new probe
    acpd.send(ho.StatusRequest(1))
    reply = acpd.expect()
    assert reply.status["probes_failed"] == 2 and len(probed) == 3
    acpd.close()


def hangs_until(answer_from: int, probed: list, cancelled: list):
    """A probe whose connects get no answer (a SYN-ACK with no route back) until the
    `answer_from`th, which answers at once."""
    def probe(loop, locator, _within, done):
        probed.append(locator)
        n = len(probed)
        if n >= answer_from:
            timer = loop.call_later(0, lambda: done(True))
            return timer.cancel
        return lambda: cancelled.append(n)
    return probe


def test_an_unanswered_probe_does_not_hold_up_the_next(monkeypatch) -> None:
    """A probe whose SYN found no route back would wait for the kernel's resend (1 s): the next
    probe starts at PROBE_RETRY all the same, and the first answer ends the others."""
    monkeypatch.setattr("acp_openwrt.brski.proxy.process.PROBE_RETRY", 0.05)
    probed: list = []
    cancelled: list = []
    acpd = Acpd(probe=hangs_until(3, probed, cancelled))
    acpd.expect()  # Hello
    assert acpd.expect() == ho.RegistrarState(False)
    started = time.monotonic()
    acpd.send(ho.Registrar("fd00::1", 8443, 60_000))
    assert acpd.expect() == ho.RegistrarState(True, "fd00::1", 8443)
    assert len(probed) == 3 and sorted(cancelled) == [1, 2]
    assert time.monotonic() - started < 0.5  # 0.05 + 0.1, not a resend's 1 s
    acpd.close()


def test_reprobe_probes_at_once_and_only_while_probing(monkeypatch) -> None:
    """acpd's Reprobe (its routes changed) starts a probe now instead of at the next retry."""
    monkeypatch.setattr("acp_openwrt.brski.proxy.process.PROBE_RETRY", 30.0)
    probed: list = []
    cancelled: list = []
    acpd = Acpd(probe=hangs_until(2, probed, cancelled))
    acpd.expect()  # Hello
    assert acpd.expect() == ho.RegistrarState(False)
    acpd.send(ho.Reprobe())                    # nothing to probe: ignored
    acpd.send(ho.Registrar("fd00::1", 8443, 60_000))
    acpd.send(ho.StatusRequest(1))
    assert acpd.expect().status["reprobes"] == 0 and len(probed) == 1
    acpd.send(ho.Reprobe())                    # the next retry is 30 s away: probed now
    assert acpd.expect(within=1.0) == ho.RegistrarState(True, "fd00::1", 8443)
    assert len(probed) == 2 and cancelled == [1]
    acpd.send(ho.Reprobe())                    # known: nothing more
    acpd.send(ho.StatusRequest(2))
    assert acpd.expect().status["reprobes"] == 1 and len(probed) == 2
    acpd.close()


def test_tcp_probe_tells_a_listening_registrar_from_a_closed_port() -> None:
    from acp_openwrt.brski.proxy.process import tcp_probe
    from acp_openwrt.brski.proxy.registrars import RegistrarLocator
    from acp_openwrt.brski.proxy.runtime import Loop

    loop = Loop()

    def probe(port: int) -> bool | None:
        answer: list[bool] = []
        tcp_probe(loop, RegistrarLocator("::1", port), 1.0, answer.append)
        loop.run_until(lambda: answer, 2)
        assert loop.watched == 0
        return answer[0] if answer else None

    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as lsock:
        lsock.bind(("::1", 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        assert probe(port) is True
    assert probe(port) is False


def test_bad_message_from_acpd_is_skipped_not_fatal() -> None:
    acpd = Acpd()
    acpd.expect()
    acpd.expect()
    acpd.sock.send(b'{"op":"format_disk"}')
    acpd.send(ho.StatusRequest(1))
    assert isinstance(acpd.expect(), ho.StatusReply)
    acpd.close()


def test_sigterm_ends_the_process_cleanly(tmp_path) -> None:
    """The real process, started as acpd starts it (python3 -S, entry), stopped by SIGTERM."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-S", "-m", "acp_openwrt.brski.proxy.entry",
            "--handover-fd", str(theirs.fileno())]
    if os.geteuid() == 0:
        argv += ["--user", "nobody"]
    proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env, cwd="/",
                            stderr=subprocess.PIPE, text=True)
    theirs.close()
    try:
        mine.settimeout(20)
        received = ho.recv_message(mine)
        assert received is not None and isinstance(received[0], ho.Hello)
        assert received[0].pid == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "stopping on signal" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
        mine.close()


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
