"""The registrar worker: the registrar's TLS, CMS, CSR, signing and sqlite work in a child.

Issue 19: a registrar node's acpd held cryptography's Rust module, OpenSSL and sqlite (about
20 MB of RSS) for good, for work that happens when a pledge enrols or a node renews. acpd
(part.py) now keeps only what needs no cryptography: the listening sockets, the GRASP flooding,
the status and the control commands; this module does the rest, in one of three modes, each
`python3 -m acp_openwrt.brski.registrar.worker MODE SETTINGS [FD]` (SETTINGS:
worker_protocol.settings_of; supervisor.py starts it):

- `bootstrap`: the domain CA and the node's own LDevID before acpd loads it
  (bootstrap.bootstrap_registrar); prints "issued" when it wrote one.
- `start`: the registrar's start: checks what the registrar needs (CA, allocations.db, our
  LDevID chaining to the CA, id-kp-cmcRA), signs the CRL (written to worker_protocol.crl_path,
  which acpd serves), says hello with its state, then serves as `serve` does. The check's
  interpreter, cryptography and CA so stay loaded for the pledges that come first (a node that
  has just started is where they come: a site powered up at once; under TCG a second start,
  after a check that exited, cost 3.4 s of the first pledge's enrolment). When the registrar
  cannot run it exits EXIT_UNUSABLE with the reason.
- `serve`: the long-lived worker, on the socketpair descriptor FD (worker_protocol.py): serves
  the TCP connections acpd accepted and handed over (TLS server, the Registrar's handlers),
  answers revoke, revoked, crl and renew, reports its state after each, and leaves after
  worker_protocol.IDLE_EXIT s without a session. acpd starts the next one on the next
  connection.

Exit codes (as the pledge's children, idevid_check.py): 0 done, EXIT_UNUSABLE with the reason
as one line on stdout (the registrar cannot run: acpd shows it as `problem`), anything else a
crash (acpd names the last stderr line). Logging goes to stderr as "LEVEL message" lines,
which acpd relays into its own log.

The Registrar's memory (a voucher's enrolment window, the status reports due) lives as long
as one worker: IDLE_EXIT is longer than the pauses within one pledge's enrolment, and a
pledge whose worker left in between starts over (its next voucher-request).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from .worker_protocol import IDLE_EXIT

EXIT_UNUSABLE = 3  # (1 is what Python exits with on an uncaught exception: a crash)
LOG = logging.getLogger("acpd.brski.registrar")
_PATHS = ("registrar_dir", "registrar_ca_cert", "registrar_ca_key", "ldevid_cert",
          "ldevid_key", "trust_anchors", "manufacturer_trust_anchor")


def config_of(options: dict[str, Any]) -> Any:
    """The AcpConfig acpd described (worker_protocol.settings_of)."""
    from ...config import AcpConfig
    values: dict[str, Any] = {k: (Path(v) if k in _PATHS and v is not None else v)
                              for k, v in options.items()}
    return AcpConfig(registrar=True, **values)


def _bootstrap(config: Any) -> int:
    from .bootstrap import bootstrap_registrar
    try:
        issued = bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key,
                                     config.trust_anchors)
    except (OSError, ValueError) as exc:
        print(str(exc).replace("\n", " "))
        return EXIT_UNUSABLE
    print("issued" if issued else "")
    return 0


class Worker:
    """The `serve` mode: one RegistrarService, the link to acpd, the sessions."""

    def __init__(self, service: Any, sock: socket.socket, idle_exit: float = IDLE_EXIT) -> None:
        from ..proxy.handover import HandoverChannel
        from . import worker_protocol as wp
        self.service = service
        self.channel = HandoverChannel(sock, send=wp.send, recv=wp.receive_in_worker)
        self.idle_exit = idle_exit
        self.sessions: set[asyncio.Task[None]] = set()
        if service.registrar is not None:
            service.registrar.on_answer = self._state_now

    async def _send(self, msg: dict[str, Any]) -> None:
        await self.channel.send(msg)

    async def _state(self) -> None:
        await self._send({"op": "state", "state": self.service.state()})

    def _state_now(self) -> None:
        """Each answer's effect (an enrolment, a refusal, a counter) reaches acpd before the
        answer reaches the client (RecordingRegistrar.on_answer)."""
        self.channel.send_soon({"op": "state", "state": self.service.state()})

    def _answer(self, what: str, args: dict[str, Any]) -> dict[str, Any]:
        service = self.service
        if what == "revoke":
            return service.revoke(str(args.get("target", "")), str(args.get("reason") or ""))
        if what == "revoked":
            return service.revoked_view()
        if what == "crl":
            service.publish_crl()
            return {"crl_number": service.crl.number}
        if what == "renew":
            return {"renewed": service.renew_if_due()}
        raise ValueError(f"unknown request {what!r}")

    async def _request(self, msg: dict[str, Any]) -> None:
        import ssl

        from .bootstrap import RegistrarSetupError
        from .revocation import RevocationError
        seq, args = msg.get("seq"), msg.get("args")
        try:
            result = self._answer(str(msg.get("what")), args if isinstance(args, dict) else {})
        except (RevocationError, RegistrarSetupError, OSError, ValueError, ssl.SSLError) as exc:
            await self._send({"op": "reply", "seq": seq, "error": str(exc)})
        else:
            await self._send({"op": "reply", "seq": seq, "result": result})
        await self._state()

    def _session(self, fd: int) -> None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        assert self.service.registrar is not None
        task = asyncio.get_running_loop().create_task(
            self.service.registrar.serve_accepted(self.service.ssl_context(), sock))
        self.sessions.add(task)

    async def run(self) -> None:
        from .worker_protocol import LinkError
        loop = asyncio.get_running_loop()
        await self._send({"op": "hello", "pid": os.getpid(), "state": self.service.state()})
        receiver: asyncio.Task[Any] | None = None
        idle_sent = leaving = False
        last = loop.time()
        while not (leaving and not self.sessions):
            if receiver is None and not leaving:
                receiver = loop.create_task(self.channel.receive())
            waiting: set[asyncio.Future[Any]] = set(self.sessions)
            if receiver is not None:
                waiting.add(receiver)
            timeout = None if self.sessions or idle_sent or leaving \
                else max(0.0, last + self.idle_exit - loop.time())
            done, _ = await asyncio.wait(waiting, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done:
                if not self.sessions and not idle_sent:
                    await self._send({"op": "idle"})   # acpd answers exit
                    idle_sent = True
                continue
            for task in done:
                if task is not receiver:
                    self.sessions.discard(task)
                    if not task.cancelled() and task.exception() is not None:
                        LOG.error("registrar worker: a session failed: %r", task.exception())
                    last = loop.time()
                    await self._state()
                    continue
                receiver = None
                try:
                    received = task.result()
                except LinkError as exc:
                    LOG.warning("registrar worker: bad message from acpd: %s", exc)
                    continue
                if received is None:   # acpd went away: nothing more to serve for
                    for session in self.sessions:
                        session.cancel()
                    await asyncio.gather(*self.sessions, return_exceptions=True)
                    return
                msg, fds = received
                last = loop.time()
                if msg["op"] == "connection":
                    self._session(fds[0])
                elif msg["op"] == "request":
                    await self._request(msg)
                elif msg["op"] == "refuse_new":
                    reason = msg.get("reason")
                    assert self.service.registrar is not None
                    self.service.registrar.refuse_new = reason if isinstance(reason, str) \
                        else None
                elif msg["op"] == "exit":
                    leaving = True
        if receiver is not None:
            receiver.cancel()


def _serve(config: Any, address: str, masa_namespace: str | None, fd: int,
           idle_exit: float = IDLE_EXIT, checked_start: bool = False) -> int:
    from .bootstrap import RegistrarSetupError
    from .service import RegistrarService
    service = RegistrarService(config, address, masa_namespace=masa_namespace)
    try:
        service.open()
        service.ssl_context()
        if checked_start:   # what `check` does besides: the CRL signed for acpd to serve
            service.publish_crl()
    except (RegistrarSetupError, OSError, ValueError) as exc:
        print(str(exc).replace("\n", " "))
        return EXIT_UNUSABLE
    sock = socket.socket(fileno=fd)

    async def run() -> None:
        await Worker(service, sock, idle_exit).run()
    try:
        asyncio.run(run())
    finally:
        service.close()
    return 0


def _setup_logging(level: str | None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel((level or "info").upper())


def main(argv: list[str]) -> int:
    """MODE SETTINGS [FD] (the module docstring)."""
    from ... import pyroute2_lean
    pyroute2_lean.install()  # as acpd: netns (masa_namespace) without pyroute2's package init
    mode, settings = argv[0], json.loads(argv[1])
    config = config_of(settings["config"])
    _setup_logging(config.log_level)
    if mode == "bootstrap":
        return _bootstrap(config)
    address, masa_namespace = settings.get("address"), settings.get("masa_namespace")
    if not address:
        print("the node has no LDevID with an ACP address (bootstrap_registrar did not run?)")
        return EXIT_UNUSABLE
    if mode in ("serve", "start"):
        return _serve(config, address, masa_namespace, int(argv[2]),
                      float(settings.get("idle_exit") or IDLE_EXIT), checked_start=mode == "start")
    print(f"unknown mode {mode!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
