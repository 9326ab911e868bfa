"""The RFC 8991 API on a Unix socket, for ASAs in other processes (format: api_wire.py).

Bounded: at most ``max_clients`` connections, ``MAX_MESSAGE`` bytes a message and
``max_inflight`` unanswered requests per client (more and the client is disconnected). Each
client may use only the ASAs it registered; when it disconnects they are deregistered, so a
crashed ASA leaves nothing behind. A malformed request gets an error reply (or, if it is not
even a request, the connection is closed); nothing a client sends raises out of the server.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cbor2

from . import api_wire as w
from .asa_api import Asa
from .errors import GraspApiError, GraspError
from .stream import StreamFramer

if TYPE_CHECKING:
    from .service import GraspService

_log = logging.getLogger(__name__)


class _Client(asyncio.Protocol):
    def __init__(self, server: ApiServer) -> None:
        self.server = server
        self.svc = server.service
        self.framer = StreamFramer(w.MAX_MESSAGE)
        self.transport: asyncio.Transport | None = None
        self.asas: dict[int, Asa] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.server.clients) >= self.server.max_clients:
            self.server.refused += 1
            transport.close()
            return
        self.server.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        self.transport = None
        for task in list(self.tasks):
            task.cancel()
        for asa in list(self.asas.values()):
            with contextlib.suppress(GraspApiError):
                self.svc.deregister_asa(asa)
        self.asas.clear()

    def data_received(self, data: bytes) -> None:
        try:
            items = self.framer.feed(data)
        except Exception as exc:
            return self._hang_up(f"bad framing: {exc}")
        for raw in items:
            try:
                req = cbor2.loads(raw)
            except Exception:
                return self._hang_up("undecodable request")
            if (type(req) is not dict or type(req.get("id")) is not int
                    or type(req.get("op")) is not str):
                return self._hang_up("not a request map")
            if len(self.tasks) >= self.server.max_inflight:
                return self._hang_up("too many requests in flight")
            task = asyncio.get_running_loop().create_task(self._serve(req))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _hang_up(self, why: str) -> None:
        self.server.bad_requests += 1
        _log.debug("grasp api client dropped: %s", why)
        if self.transport is not None:
            self.transport.close()

    def _send(self, msg: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(cbor2.dumps(msg))

    async def _serve(self, req: dict[str, Any]) -> None:
        rid = req["id"]
        handler = _OPS.get(req["op"])
        args = req.get("args") or {}
        try:
            if handler is None:
                raise GraspApiError(GraspError.unspec, f"unknown op {req['op']!r}")
            if type(args) is not dict:
                raise GraspApiError(GraspError.unspec, "args is not a map")
            result = await handler(self, args)
        except GraspApiError as exc:
            return self._send({"id": rid, "error": int(exc.code), "reason": exc.detail})
        except w.GraspDecodeError as exc:
            return self._send({"id": rid, "error": int(GraspError.CBORfail), "reason": str(exc)})
        except (KeyError, TypeError, ValueError) as exc:
            return self._send({"id": rid, "error": int(GraspError.unspec),
                               "reason": f"bad arguments: {exc}"})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the server; tell the client
            _log.exception("grasp api %s failed", req["op"])
            return self._send({"id": rid, "error": int(GraspError.unspec),
                               "reason": type(exc).__name__})
        self._send({"id": rid, "result": result})

    def asa(self, args: dict[str, Any]) -> Asa:
        asa = self.asas.get(args.get("asa"))  # type: ignore[arg-type]
        if asa is None:
            raise GraspApiError(GraspError.noASA, "not an ASA of this connection")
        return asa


Handler = Callable[[_Client, dict[str, Any]], Any]
_OPS: dict[str, Handler] = {}


def _op(fn: Handler) -> Handler:
    _OPS[fn.__name__.lstrip("_")] = fn
    return fn


def _opt_int(args: dict[str, Any], key: str) -> int | None:
    v = args.get(key)
    if v is not None and type(v) is not int:
        raise TypeError(f"{key} is not an integer")
    return v


@_op
async def _register_asa(cl: _Client, args: dict[str, Any]) -> Any:
    name = args["name"]
    if type(name) is not str or len(name) > 64:
        raise TypeError("name is not a short text string")
    asa = cl.svc.register_asa(name)
    cl.asas[asa.nonce] = asa
    return asa.nonce


@_op
async def _deregister_asa(cl: _Client, args: dict[str, Any]) -> Any:
    asa = cl.asa(args)
    cl.svc.deregister_asa(asa)
    del cl.asas[asa.nonce]


@_op
async def _register_objective(cl: _Client, args: dict[str, Any]) -> Any:
    locs = [w.locator_in(x) for x in args.get("locators") or []]
    cl.svc.register_objective(cl.asa(args), w.objective_in(args["objective"]),
                              ttl_ms=_opt_int(args, "ttl_ms") or 60000,
                              discoverable=bool(args.get("discoverable")),
                              overlap=bool(args.get("overlap")), locators=[x for x in locs if x])


@_op
async def _deregister_objective(cl: _Client, args: dict[str, Any]) -> Any:
    cl.svc.deregister_objective(cl.asa(args), str(args["name"]))


@_op
async def _discover(cl: _Client, args: dict[str, Any]) -> Any:
    locs = await cl.svc.discover(cl.asa(args), w.objective_in(args["objective"]),
                                 _opt_int(args, "timeout_ms"), bool(args.get("flush")))
    return [w.locator_out(x) for x in locs]


@_op
async def _request_negotiate(cl: _Client, args: dict[str, Any]) -> Any:
    peer = w.locator_in(args["peer"])
    if peer is None:
        raise GraspApiError(GraspError.invalidLoc, "no peer locator")
    reply = await cl.svc.request_negotiate(cl.asa(args), w.objective_in(args["objective"]), peer,
                                           _opt_int(args, "timeout_ms"), args.get("ifname"))
    return w.reply_out(reply)


@_op
async def _negotiate_step(cl: _Client, args: dict[str, Any]) -> Any:
    reply = await cl.svc.negotiate_step(cl.asa(args), int(args["handle"]),
                                        w.objective_in(args["objective"]))
    return w.reply_out(reply)


@_op
async def _negotiate_wait(cl: _Client, args: dict[str, Any]) -> Any:
    cl.svc.negotiate_wait(cl.asa(args), int(args["handle"]), int(args["waiting_time_ms"]))


@_op
async def _end_negotiate(cl: _Client, args: dict[str, Any]) -> Any:
    reason = args.get("reason")
    cl.svc.end_negotiate(cl.asa(args), int(args["handle"]), bool(args["accept"]),
                         reason if type(reason) is str else None)


@_op
async def _listen_negotiate(cl: _Client, args: dict[str, Any]) -> Any:
    request = await cl.svc.listen_negotiate(cl.asa(args), w.objective_in(args["objective"]))
    return w.request_out(request)


@_op
async def _stop_listen_negotiate(cl: _Client, args: dict[str, Any]) -> Any:
    cl.svc.stop_listen_negotiate(cl.asa(args), w.objective_in(args["objective"]))


@_op
async def _synchronize(cl: _Client, args: dict[str, Any]) -> Any:
    peer = w.locator_in(args.get("peer"))
    obj = await cl.svc.synchronize(cl.asa(args), w.objective_in(args["objective"]), peer,
                                   _opt_int(args, "timeout_ms"), args.get("ifname"))
    return w.objective_out(obj)


@_op
async def _listen_synchronize(cl: _Client, args: dict[str, Any]) -> Any:
    cl.svc.listen_synchronize(cl.asa(args), w.objective_in(args["objective"]))


@_op
async def _stop_listen_synchronize(cl: _Client, args: dict[str, Any]) -> Any:
    cl.svc.stop_listen_synchronize(cl.asa(args), w.objective_in(args["objective"]))


@_op
async def _flood(cl: _Client, args: dict[str, Any]) -> Any:
    items = args["items"]
    if type(items) is not list or not 0 < len(items) <= 64:
        raise TypeError("items is not a list of 1 to 64 [objective, locator] pairs")
    pairs = [(w.objective_in(x[0]), w.locator_in(x[1])) for x in items]
    ifname = args.get("ifname")
    return cl.svc.flood(cl.asa(args), int(args["ttl_ms"]), pairs,
                        ifname if type(ifname) is str else None)


@_op
async def _get_flood(cl: _Client, args: dict[str, Any]) -> Any:
    now = cl.svc._now()
    return [w.flood_entry_out(e, now) for e in cl.svc.get_flood(cl.asa(args), str(args["name"]))]


class ApiServer:
    def __init__(self, service: GraspService, path: str, mode: int = 0o660, max_clients: int = 16,
                 max_inflight: int = 32) -> None:
        self.service = service
        self.path = path
        self.mode = mode
        self.max_clients = max_clients
        self.max_inflight = max_inflight
        self.clients: set[_Client] = set()
        self.refused = 0
        self.bad_requests = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Client(self), self.path)
        os.chmod(self.path, self.mode)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
            client.connection_lost(None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def status(self) -> dict[str, Any]:
        return {"path": self.path, "clients": len(self.clients), "refused": self.refused,
                "bad_requests": self.bad_requests}
