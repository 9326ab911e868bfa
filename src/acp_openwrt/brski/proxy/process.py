"""The BRSKI join proxy process (RFC 8995 §4), which acpd starts as
`python3 -S -m acp_openwrt.brski.proxy.entry --handover-fd N` (entry.py keeps ssl out).

Started by acpd (part.py) in the ACP namespace; confines itself at once (namespace,
unprivileged user: proxy_sandbox.py), then serves whatever acpd hands over on the handover
socket (handover.py): listening sockets from DULL, registrar locators from AN_join_registrar
floods. It reports back whether a registrar is known *and answers a TCP connect*, so acpd floods
AN_Proxy only while pledges can actually be relayed: a registrar heard before the ACP routes to
it exist would otherwise draw pledges into failed attempts, and RFC 8995 §4.1 has a pledge back
off exponentially (up to an hour) from a proxy that failed it. It ends when acpd closes the
handover socket, or on SIGTERM.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from . import handover as ho
from .registrars import RegistrarLocator, RegistrarTable
from .relay import Relay, RelayLimits
from .sandbox import SandboxError, confine

LOG = logging.getLogger("acp-join-proxy")
EXIT_USAGE = 2
PROBE_TIMEOUT = 3.0
PROBE_RETRY = 0.5      # first retry; doubles up to PROBE_RETRY_MAX (routes usually follow soon)
PROBE_RETRY_MAX = 5.0

Probe = Callable[[RegistrarLocator], Awaitable[bool]]


async def tcp_probe(locator: RegistrarLocator, within: float = PROBE_TIMEOUT) -> bool:
    """Does the registrar accept a TCP connection (the route to it exists, it listens)?"""
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(locator.address, locator.port), within)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class ProxyProcess:
    """The proxy's event loop side: handover messages in, relay and registrar state out."""

    def __init__(self, channel: ho.HandoverChannel, limits: RelayLimits,
                 probe: Probe = tcp_probe) -> None:
        self.channel = channel
        self._probe = probe
        self._reachable: RegistrarLocator | None = None
        self._probing: asyncio.Task[None] | None = None
        self._probing_for: RegistrarLocator | None = None
        self.probes_failed = 0
        self.registrars = RegistrarTable()
        self.relay = Relay(limits, lambda: self.registrars.candidates(time.monotonic()))
        self._reported: RegistrarLocator | None = None
        self._reported_once = False
        self._expiry: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[ho.Message] = asyncio.Queue()

    async def run(self) -> None:
        """Serve until the handover socket closes (acpd gone or stopping us)."""
        sender = asyncio.create_task(self._send_loop())
        try:
            self._post(ho.Hello(os.getpid(), os.getuid(), os.getgid()))
            self._report_registrar()
            while True:
                try:
                    received = await self.channel.receive()
                except ho.HandoverError as exc:
                    LOG.warning("bad message from acpd: %s", exc)
                    continue
                if received is None:
                    LOG.info("handover socket closed; stopping")
                    return
                msg, fds = received
                await self._handle(msg, fds)
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
            if self._probing is not None:
                self._probing.cancel()
            await self.relay.close()
            await self._drain()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    def _post(self, msg: ho.Message) -> None:
        self._outbox.put_nowait(msg)

    async def _send_loop(self) -> None:
        while True:
            msg = await self._outbox.get()
            try:
                await self.channel.send(msg)
            except OSError as exc:
                LOG.warning("cannot report %s to acpd: %s", msg.op, exc.strerror or exc)
            finally:
                self._outbox.task_done()

    async def _drain(self) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._outbox.join(), 0.5)

    async def _handle(self, msg: ho.Message, fds: list[int]) -> None:
        if isinstance(msg, ho.Listen):
            await self._listen(msg, fds[0])
        elif isinstance(msg, ho.Unlisten):
            await self.relay.remove_listener(msg.ifname)
            LOG.info("stopped listening on %s", msg.ifname)
        elif isinstance(msg, ho.Registrar):
            self._registrar(msg)
        elif isinstance(msg, ho.StatusRequest):
            self._post(ho.StatusReply(msg.seq, self.status()))
        else:
            LOG.warning("ignoring %s from acpd (not a message for the proxy)", msg.op)

    async def _listen(self, msg: ho.Listen, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            os.close(fd)
            self._post(ho.ListenFailed(msg.ifname, f"bad descriptor: {exc.strerror}"))
            return
        if sock.type != socket.SOCK_STREAM or sock.getsockopt(socket.SOL_SOCKET,
                                                               socket.SO_ACCEPTCONN) == 0:
            sock.close()
            self._post(ho.ListenFailed(msg.ifname, "descriptor is not a listening TCP socket"))
            return
        try:
            address, port = await self.relay.add_listener(msg.ifname, sock)
        except OSError as exc:
            sock.close()
            self._post(ho.ListenFailed(msg.ifname, exc.strerror or str(exc)))
            return
        LOG.info("listening on %s [%s]:%d", msg.ifname, address, port)
        self._post(ho.Listening(msg.ifname, address, port))

    def _registrar(self, msg: ho.Registrar) -> None:
        try:
            locator = RegistrarLocator.checked(msg.address, msg.port)
        except ValueError as exc:
            LOG.warning("ignoring registrar: %s", exc)
            return
        self.registrars.heard(locator, msg.ttl_ms, time.monotonic())
        self._report_registrar()

    def _report_registrar(self) -> None:
        """Tell acpd when the registrar we would use changes (known, lost, or another one).
        A new registrar counts as known once it answered a probe."""
        now = time.monotonic()
        current = self.registrars.current(now)
        if current is None:
            self._reachable = None  # heard again later: probed again
        elif current != self._reachable:
            self._start_probe(current)
            current = None
        if current != self._reported or not self._reported_once:
            self._reported, self._reported_once = current, True
            if current is None:
                LOG.info("no registrar known: refusing pledges")
                self._post(ho.RegistrarState(False))
            else:
                LOG.info("registrar [%s]:%d", current.address, current.port)
                self._post(ho.RegistrarState(True, current.address, current.port))
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        next_expiry = self.registrars.next_expiry()
        if next_expiry is not None:
            delay = max(0.0, next_expiry - now) + 0.01
            self._expiry = asyncio.get_running_loop().call_later(delay, self._report_registrar)

    def _start_probe(self, locator: RegistrarLocator) -> None:
        if self._probing is not None and not self._probing.done():
            if self._probing_for == locator:
                return
            self._probing.cancel()
        self._probing_for = locator
        self._probing = asyncio.get_running_loop().create_task(
            self._probe_until_reachable(locator), name=f"probe {locator.address}")

    async def _probe_until_reachable(self, locator: RegistrarLocator) -> None:
        delay = PROBE_RETRY
        while self.registrars.current(time.monotonic()) == locator:
            if await self._probe(locator):
                self._reachable = locator
                self._report_registrar()
                return
            self.probes_failed += 1
            if self.probes_failed in (1, 10) or self.probes_failed % 100 == 0:
                LOG.info("registrar [%s]:%d does not answer yet (%d probes failed)",
                         locator.address, locator.port, self.probes_failed)
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_RETRY_MAX)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        current = self.registrars.current(now)
        return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
                "registrar": current.to_dict() if current else None,
                "registrars": self.registrars.status(now), "probes_failed": self.probes_failed,
                **self.relay.status()}


async def _serve(fd: int, limits: RelayLimits) -> None:
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
        raise SandboxError(f"--handover-fd {fd} is not a Unix SOCK_SEQPACKET socket")
    proxy = ProxyProcess(ho.HandoverChannel(sock), limits)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)  # type: ignore[union-attr]
    try:
        await proxy.run()
    except asyncio.CancelledError:
        LOG.info("stopping on signal")
    finally:
        sock.close()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="acp-join-proxy",
                                     description="BRSKI join proxy (started by acpd).")
    parser.add_argument("--handover-fd", type=int, required=True,
                        help="inherited SOCK_SEQPACKET socket to acpd")
    parser.add_argument("--netns", help="network namespace to enter first (the ACP namespace)")
    parser.add_argument("--user",
                        help="unprivileged user to become (required when started as root)")
    parser.add_argument("--group", help="group to become (default: the user's primary group)")
    defaults = RelayLimits()
    parser.add_argument("--max-connections", type=int, default=defaults.max_connections)
    parser.add_argument("--max-per-pledge", type=int, default=defaults.max_per_pledge)
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout)
    parser.add_argument("--connect-timeout", type=float, default=defaults.connect_timeout)
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format=f"acp-join-proxy[{os.getpid()}]: %(levelname)s %(message)s")
    try:
        limits = RelayLimits(args.max_connections, args.max_per_pledge, args.idle_timeout,
                             args.connect_timeout)
        confine(args.netns, args.user, args.group)
        asyncio.run(_serve(args.handover_fd, limits))
    except (SandboxError, ValueError) as exc:
        print(f"acp-join-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"acp-join-proxy: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
