"""The BRSKI join proxy process (RFC 8995 §4), which acpd starts as
`python3 -S -m acp_openwrt.brski.proxy.entry --handover-fd N`.

Started by acpd (part.py) in the ACP namespace; confines itself at once (namespace,
unprivileged user: sandbox.py), then serves whatever acpd hands over on the handover
socket (handover.py): listening sockets from DULL, registrar locators from AN_join_registrar
floods. It reports back whether a registrar is known *and answers a TCP connect*, so acpd floods
AN_Proxy only while pledges can actually be relayed: a registrar heard before the ACP routes to
it exist would otherwise draw pledges into failed attempts, and RFC 8995 §4.1 has a pledge back
off exponentially (up to an hour) from a proxy that failed it. It ends when acpd closes the
handover socket, or on SIGTERM.

No asyncio: one runtime.Loop (poll and a timer heap) carries the handover socket, the relay's
sockets and the registrar probe; every module the process loads is listed in
tests/unit/test_brski_layout.py.
"""
from __future__ import annotations

import _signal
import _socket
import errno
import os
import sys
import time

from . import handover as ho
from .registrars import RegistrarLocator, RegistrarTable
from .relay import Relay, RelayLimits
from .runtime import IN, LEVELS, OUT, Log, Loop, Timer
from .sandbox import SandboxError, confine

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    Done = Callable[[bool], None]
    Cancel = Callable[[], None]
    Probe = Callable[[Loop, RegistrarLocator, float, Done], Cancel]

EXIT_USAGE = 2
PROBE_TIMEOUT = 3.0    # one probe's connect (the kernel resends a SYN after 1 s, then 3 s)
# The next probe starts this long after the last one, whether or not that one has ended: a SYN
# whose answer found no route back (the registrar's DAO route not there yet) is resent by the
# kernel only after 1 s, so a fresh probe is sent meanwhile. Doubles up to PROBE_RETRY_MAX;
# acpd's Reprobe (its routes changed, its DAO was acknowledged) starts one at once and the
# ladder again from the bottom.
PROBE_RETRY = 0.25
PROBE_RETRY_MAX = 5.0
MAX_PROBES = 4         # probes open at once (each ends within PROBE_TIMEOUT)
DRAIN_TIME = 0.5       # at the end, this long to get the last reports to acpd


def tcp_probe(loop: Loop, locator: RegistrarLocator, within: float, done: Done) -> Cancel:
    """Does the registrar accept a TCP connection (the route to it exists, it listens)?
    Calls done(answer) once, from the loop; the returned function cancels the probe."""
    sock = _socket.socket(_socket.AF_INET6, _socket.SOCK_STREAM)
    sock.setblocking(False)
    fd = sock.fileno()
    timer: list[Timer] = []

    def finish(ok: bool | None) -> None:
        if sock.fileno() < 0:
            return
        loop.forget(fd)
        for t in timer:
            t.cancel()
        sock.close()
        if ok is not None:
            done(ok)

    def ready(_mask: int) -> None:
        finish(sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR) == 0)

    err = sock.connect_ex((locator.address, locator.port))
    if err not in (0, errno.EINPROGRESS):
        timer.append(loop.call_later(0, lambda: finish(False)))
    else:
        loop.watch(fd, ready, OUT)
        timer.append(loop.call_later(within, lambda: finish(False)))
    return lambda: finish(None)


class ProxyProcess:
    """The proxy's loop side: handover messages in, relay and registrar state out."""

    def __init__(self, sock: _socket.socket, limits: RelayLimits, probe: Probe = tcp_probe,
                 loop: Loop | None = None) -> None:
        self.loop = loop if loop is not None else Loop()
        self.sock = sock
        self._probe = probe
        self._reachable: RegistrarLocator | None = None
        self._probing_for: RegistrarLocator | None = None
        self._probes: dict[int, Cancel] = {}   # the open probes, by a serial number
        self._probe_serial = 0
        self._probe_delay = PROBE_RETRY
        self._probe_retry: Timer | None = None
        self.probes_failed = 0
        self.reprobes = 0
        self.registrars = RegistrarTable()
        self.relay = Relay(self.loop, limits,
                           lambda: self.registrars.candidates(time.monotonic()),
                           failed=self._registrar_failed, answered=self._registrar_answered)
        self._reported: RegistrarLocator | None = None
        self._reported_once = False
        self._expiry: Timer | None = None
        self._outbox: list[ho.Message] = []
        self.stopped = False
        self._closing = False

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self.sock.setblocking(False)
        self.loop.watch(self.sock.fileno(), self._on_handover, IN)
        self._post(ho.Hello(os.getpid(), os.getuid(), os.getgid()))
        self._report_registrar()

    def run(self) -> None:
        """Serve until the handover socket closes (acpd gone or stopping us) or stop()."""
        self.start()
        try:
            self.loop.run()
        finally:
            self.finish()

    def stop(self) -> None:
        self.stopped = True
        self.loop.stop()

    def finish(self) -> None:
        """Close every circuit and listener, cancel timers, get the last reports out."""
        self._closing = True
        for timer in (self._expiry, self._probe_retry):
            if timer is not None:
                timer.cancel()
        for cancel in list(self._probes.values()):
            cancel()
        self._probes.clear()
        self.relay.close()
        if self._outbox and self.sock.fileno() >= 0:
            self.loop.run_until(lambda: not self._outbox, DRAIN_TIME)
        self.loop.forget(self.sock.fileno())

    # -- the handover socket --------------------------------------------------------------
    def _on_handover(self, mask: int) -> None:
        if mask & OUT:
            self._send_out()
        if self._closing or not mask & ~OUT:
            return
        while not self.stopped:
            try:
                received = ho.recv_message(self.sock)
            except (BlockingIOError, InterruptedError):
                return
            except ho.HandoverError as exc:
                Log.warning("bad message from acpd: %s", exc)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.EBADF):
                    Log.warning("handover socket: %s", exc.strerror or exc)
                received = None
            if received is None:
                Log.info("handover socket closed; stopping")
                self.stop()
                return
            msg, fds = received
            self._handle(msg, fds)

    def _post(self, msg: ho.Message) -> None:
        self._outbox.append(msg)
        self._send_out()

    def _send_out(self) -> None:
        while self._outbox:
            msg = self._outbox[0]
            try:
                ho.send_message(self.sock, msg)
            except (BlockingIOError, InterruptedError):
                break
            except (OSError, ho.HandoverError) as exc:
                Log.warning("cannot report %s to acpd: %s", msg.op,
                            getattr(exc, "strerror", None) or exc)
            del self._outbox[0]
        if self.sock.fileno() >= 0:
            self.loop.want(self.sock.fileno(), (0 if self._closing else IN)
                           | (OUT if self._outbox else 0))

    def _handle(self, msg: ho.Message, fds: list[int]) -> None:
        if isinstance(msg, ho.Listen):
            self._listen(msg, fds[0])
        elif isinstance(msg, ho.Unlisten):
            self.relay.remove_listener(msg.ifname)
            Log.info("stopped listening on %s", msg.ifname)
        elif isinstance(msg, ho.Registrar):
            self._registrar(msg)
        elif isinstance(msg, ho.StatusRequest):
            self._post(ho.StatusReply(msg.seq, self.status()))
        elif isinstance(msg, ho.Reprobe):
            self._reprobe()
        else:
            Log.warning("ignoring %s from acpd (not a message for the proxy)", msg.op)

    def _listen(self, msg: ho.Listen, fd: int) -> None:
        try:
            sock = _socket.socket(fileno=fd)
        except OSError as exc:
            os.close(fd)
            self._post(ho.ListenFailed(msg.ifname, f"bad descriptor: {exc.strerror}"))
            return
        try:
            listening = (sock.type == _socket.SOCK_STREAM and sock.family == _socket.AF_INET6
                         and sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN) != 0)
        except OSError:
            listening = False
        if not listening:
            sock.close()
            self._post(ho.ListenFailed(msg.ifname,
                                       "descriptor is not a listening TCP/IPv6 socket"))
            return
        try:
            address, port = self.relay.add_listener(msg.ifname, sock)
        except OSError as exc:
            sock.close()
            self._post(ho.ListenFailed(msg.ifname, exc.strerror or str(exc)))
            return
        Log.info("listening on %s [%s]:%d", msg.ifname, address, port)
        self._post(ho.Listening(msg.ifname, address, port))

    # -- registrars -----------------------------------------------------------------------
    def _registrar(self, msg: ho.Registrar) -> None:
        try:
            locator = RegistrarLocator.checked(msg.address, msg.port)
        except ValueError as exc:
            Log.warning("ignoring registrar: %s", exc)
            return
        self.registrars.heard(locator, msg.ttl_ms, time.monotonic(), local=msg.local)
        self._report_registrar()

    def _registrar_failed(self, locator: RegistrarLocator) -> None:
        """A circuit could not reach it: the others first for a while (fail-over)."""
        if self.registrars.failed(locator, time.monotonic()):
            self._report_registrar()

    def _registrar_answered(self, locator: RegistrarLocator) -> None:
        """A circuit reached it: no longer suspect (it may be the choice again)."""
        if self.registrars.answered(locator, time.monotonic()):
            self._report_registrar()

    def _report_registrar(self) -> None:
        """Tell acpd when the registrar we would use changes (known, lost, or another one).
        A new registrar counts as known once it answered a probe."""
        if self._closing:
            return
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
                Log.info("no registrar known: refusing pledges")
                self._post(ho.RegistrarState(False))
            else:
                Log.info("registrar [%s]:%d", current.address, current.port)
                self._post(ho.RegistrarState(True, current.address, current.port))
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        next_expiry = self.registrars.next_expiry()
        if next_expiry is not None:
            self._expiry = self.loop.call_at(next_expiry + 0.01, self._report_registrar)

    def _start_probe(self, locator: RegistrarLocator) -> None:
        if self._probing_for == locator:
            return
        self._stop_probe()
        self._probing_for = locator
        self._probe_delay = PROBE_RETRY
        self._probe_once(locator)

    def _stop_probe(self) -> None:
        for cancel in list(self._probes.values()):
            cancel()
        self._probes.clear()
        if self._probe_retry is not None:
            self._probe_retry.cancel()
            self._probe_retry = None
        self._probing_for = None

    def _reprobe(self) -> None:
        """acpd's routes changed: a registrar not answering yet may answer now."""
        locator = self._probing_for
        if locator is None:
            return
        self.reprobes += 1
        if self._probe_retry is not None:
            self._probe_retry.cancel()
            self._probe_retry = None
        self._probe_delay = PROBE_RETRY
        self._probe_once(locator)

    def _probe_once(self, locator: RegistrarLocator) -> None:
        """One more probe now (the open ones go on), and the next after the current delay."""
        self._probe_retry = None
        if self.registrars.current(time.monotonic()) != locator or self._closing:
            self._stop_probe()
            return
        if len(self._probes) < MAX_PROBES:
            self._probe_serial += 1
            serial = self._probe_serial
            self._probes[serial] = lambda: None  # the probe may answer before it returns
            cancel = self._probe(self.loop, locator, PROBE_TIMEOUT,
                                 lambda ok: self._probed(locator, serial, ok))
            if serial in self._probes:
                self._probes[serial] = cancel
        delay = self._probe_delay
        self._probe_delay = min(delay * 2, PROBE_RETRY_MAX)
        if self._probing_for == locator:
            self._probe_retry = self.loop.call_later(delay, lambda: self._probe_once(locator))

    def _probed(self, locator: RegistrarLocator, serial: int, ok: bool) -> None:
        if self._probes.pop(serial, None) is None or self._probing_for != locator:
            return
        if ok:
            self._stop_probe()
            self.registrars.answered(locator, time.monotonic())
            self._reachable = locator
            self._report_registrar()
            return
        self.probes_failed += 1
        if self.registrars.failed(locator, time.monotonic()):  # another one may answer
            self._stop_probe()
            self._report_registrar()
            return
        if self.probes_failed in (1, 10) or self.probes_failed % 100 == 0:
            Log.info("registrar [%s]:%d does not answer yet (%d probes failed)",
                     locator.address, locator.port, self.probes_failed)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        current = self.registrars.current(now)
        return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
                "registrar": current.to_dict() if current else None,
                "registrars": self.registrars.status(now), "probes_failed": self.probes_failed,
                "reprobes": self.reprobes,
                **self.relay.status()}


def serve(fd: int, limits: RelayLimits) -> None:
    """The process's loop on the inherited handover socket; SIGTERM/SIGINT end it cleanly."""
    sock = _socket.socket(fileno=fd)
    if sock.family != _socket.AF_UNIX or sock.type != _socket.SOCK_SEQPACKET:
        sock.detach()
        raise SandboxError(f"--handover-fd {fd} is not a Unix SOCK_SEQPACKET socket")
    proxy = ProxyProcess(sock, limits)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def on_signal(_signum: int, _frame: object) -> None:
        if not proxy.stopped:
            Log.info("stopping on signal")
        proxy.stop()

    def drain(_mask: int) -> None:
        try:
            os.read(wake_r, 64)
        except OSError:
            pass

    proxy.loop.watch(wake_r, drain, IN)
    _signal.set_wakeup_fd(wake_w)  # the C handler writes here: poll() wakes at once
    for signum in (_signal.SIGTERM, _signal.SIGINT):
        _signal.signal(signum, on_signal)
    try:
        proxy.run()
    finally:
        sock.close()


USAGE = ("usage: acp-join-proxy --handover-fd N [--netns NS] [--user USER] [--group GROUP] "
         "[--max-connections N] [--max-per-pledge N] [--idle-timeout S] [--connect-timeout S] "
         "[--log-level debug|info|notice|warning|error]")
_OPTIONS = {"--handover-fd": int, "--netns": str, "--user": str, "--group": str,
            "--max-connections": int, "--max-per-pledge": int, "--idle-timeout": float,
            "--connect-timeout": float, "--log-level": str}


class UsageError(ValueError):
    pass


def parse_args(argv: Sequence[str]) -> dict[str, Any]:
    """`--option value` or `--option=value`; argparse would cost the process about 1.5 MB."""
    args: dict[str, Any] = {}
    items = list(argv)
    while items:
        item = items.pop(0)
        if item in ("-h", "--help"):
            print(USAGE)
            print("BRSKI join proxy (started by acpd).")
            raise SystemExit(0)
        name, eq, value = item.partition("=")
        kind = _OPTIONS.get(name)
        if kind is None:
            raise UsageError(f"unknown argument {item!r}")
        if not eq:
            if not items:
                raise UsageError(f"{name} needs a value")
            value = items.pop(0)
        try:
            args[name[2:].replace("-", "_")] = kind(value)
        except ValueError:
            raise UsageError(f"{name}: bad value {value!r}") from None
    if "handover_fd" not in args:
        raise UsageError("--handover-fd is required")
    if args.get("log_level", "info") not in LEVELS:
        raise UsageError(f"--log-level: one of {', '.join(LEVELS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        Log.set_level(args.get("log_level", "info"))
        defaults = RelayLimits()
        limits = RelayLimits(args.get("max_connections", defaults.max_connections),
                             args.get("max_per_pledge", defaults.max_per_pledge),
                             args.get("idle_timeout", defaults.idle_timeout),
                             args.get("connect_timeout", defaults.connect_timeout))
        confine(args.get("netns"), args.get("user"), args.get("group"))
        serve(args["handover_fd"], limits)
    except (SandboxError, ValueError) as exc:
        print(f"acp-join-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"acp-join-proxy: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
