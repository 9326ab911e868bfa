"""A GRASP ASA in another process: the RFC 8991 calls over GraspService's Unix socket.

    async with GraspClient("/run/acp/grasp.sock") as grasp:
        asa = await grasp.register_asa("join-proxy")
        await grasp.flood(asa, 60000, [(objective, locator)])
        reply = await grasp.request_negotiate(asa, objective, peer_locator)

Same names, arguments and results as the in-process API (asa_api.py); every call is a
coroutine. Refusals raise ``GraspApiError`` with the RFC 8991 code. Several calls may be in
flight at once (e.g. a listen_negotiate waiting while others run).
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import cbor2

from . import api_wire as w
from .actions import NegotiationRequested
from .asa_api import Asa, FloodItem, NegotiationReply
from .errors import GraspApiError, GraspError
from .flood_cache import FloodEntry
from .messages import Locator, Objective, TaggedObjective
from .stream import StreamFramer


class GraspClient:
    def __init__(self, path: str) -> None:
        self.path = path
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._lost = False

    async def connect(self) -> GraspClient:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
            self._writer = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def __aenter__(self) -> GraspClient:
        return await self.connect()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _read(self) -> None:
        framer = StreamFramer(w.MAX_MESSAGE)
        assert self._reader is not None
        try:
            while True:
                data = await self._reader.read(65536)
                if not data:
                    break
                for raw in framer.feed(data):
                    msg = cbor2.loads(raw)
                    fut = self._pending.pop(msg.get("id"), None)
                    if fut is None or fut.done():
                        continue
                    if "error" in msg:
                        fut.set_exception(GraspApiError(GraspError(msg["error"]),
                                                        msg.get("reason") or ""))
                    else:
                        fut.set_result(msg.get("result"))
        except (OSError, ValueError, AttributeError, cbor2.CBORDecodeError):
            pass  # a broken reply stream: every pending and later call fails with noSocket
        finally:
            self._lost = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(GraspApiError(GraspError.noSocket,
                                                    "GRASP service connection lost"))
            self._pending.clear()

    async def _call(self, op: str, **args: Any) -> Any:
        if self._writer is None or self._lost:
            raise GraspApiError(GraspError.noSocket, "not connected to the GRASP service")
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(cbor2.dumps({"id": rid, "op": op,
                                        "args": {k: v for k, v in args.items() if v is not None}}))
        try:
            return await fut
        finally:
            self._pending.pop(rid, None)

    # -- the RFC 8991 calls -------------------------------------------------------------------
    async def register_asa(self, name: str) -> Asa:
        return Asa(name, await self._call("register_asa", name=name))

    async def deregister_asa(self, asa: Asa) -> None:
        await self._call("deregister_asa", asa=asa.nonce)

    async def register_objective(self, asa: Asa, objective: Objective, ttl_ms: int = 60000,
                                 discoverable: bool = False, overlap: bool = False,
                                 locators: Iterable[Locator] = ()) -> None:
        await self._call("register_objective", asa=asa.nonce, objective=w.objective_out(objective),
                         ttl_ms=ttl_ms, discoverable=discoverable, overlap=overlap,
                         locators=[w.locator_out(x) for x in locators])

    async def deregister_objective(self, asa: Asa, name: str) -> None:
        await self._call("deregister_objective", asa=asa.nonce, name=name)

    async def discover(self, asa: Asa, objective: Objective, timeout_ms: int | None = None,
                       flush: bool = False) -> list[Locator]:
        found = await self._call("discover", asa=asa.nonce, objective=w.objective_out(objective),
                                 timeout_ms=timeout_ms, flush=flush)
        return [x for x in (w.locator_in(f) for f in found) if x is not None]

    async def request_negotiate(self, asa: Asa, objective: Objective, peer: Locator,
                                timeout_ms: int | None = None, ifname: str | None = None
                                ) -> NegotiationReply:
        return w.reply_in(await self._call("request_negotiate", asa=asa.nonce,
                                           objective=w.objective_out(objective),
                                           peer=w.locator_out(peer), timeout_ms=timeout_ms,
                                           ifname=ifname))

    async def negotiate_step(self, asa: Asa, handle: int, objective: Objective) -> NegotiationReply:
        return w.reply_in(await self._call("negotiate_step", asa=asa.nonce, handle=handle,
                                           objective=w.objective_out(objective)))

    async def negotiate_wait(self, asa: Asa, handle: int, waiting_time_ms: int) -> None:
        await self._call("negotiate_wait", asa=asa.nonce, handle=handle,
                         waiting_time_ms=waiting_time_ms)

    async def end_negotiate(self, asa: Asa, handle: int, accept: bool,
                            reason: str | None = None) -> None:
        await self._call("end_negotiate", asa=asa.nonce, handle=handle, accept=accept,
                         reason=reason)

    async def listen_negotiate(self, asa: Asa, objective: Objective) -> NegotiationRequested:
        return w.request_in(await self._call("listen_negotiate", asa=asa.nonce,
                                             objective=w.objective_out(objective)))

    async def stop_listen_negotiate(self, asa: Asa, objective: Objective) -> None:
        await self._call("stop_listen_negotiate", asa=asa.nonce,
                         objective=w.objective_out(objective))

    async def synchronize(self, asa: Asa, objective: Objective, peer: Locator | None = None,
                          timeout_ms: int | None = None, ifname: str | None = None) -> Objective:
        return w.objective_in(await self._call(
            "synchronize", asa=asa.nonce, objective=w.objective_out(objective),
            peer=None if peer is None else w.locator_out(peer), timeout_ms=timeout_ms,
            ifname=ifname))

    async def listen_synchronize(self, asa: Asa, objective: Objective) -> None:
        await self._call("listen_synchronize", asa=asa.nonce, objective=w.objective_out(objective))

    async def stop_listen_synchronize(self, asa: Asa, objective: Objective) -> None:
        await self._call("stop_listen_synchronize", asa=asa.nonce,
                         objective=w.objective_out(objective))

    async def flood(self, asa: Asa, ttl_ms: int, items: Iterable[FloodItem],
                    ifname: str | None = None) -> int:
        pairs = [t if isinstance(t, TaggedObjective) else TaggedObjective(*t) for t in items]
        return await self._call("flood", asa=asa.nonce, ttl_ms=ttl_ms, ifname=ifname,
                                items=[[w.objective_out(p.objective), w.locator_out(p.locator)]
                                       for p in pairs])

    async def get_flood(self, asa: Asa, objective: Objective | str) -> list[FloodEntry]:
        name = objective if isinstance(objective, str) else objective.name
        found = await self._call("get_flood", asa=asa.nonce, name=name)
        now = time.monotonic()
        return [w.flood_entry_in(x, now) for x in found]
