"""The control socket's server side: each acpd part registers the commands it answers.

The socket is root's and its group's, but a stuck or buggy client must still not lock the
operator out: a request line has a deadline (whole line, not per read: a slowloris times out),
clients over the limit are told "busy" in JSON and closed, and every malformed line gets a JSON
error. The drops are counted in `status()` (the node's status reports it under "control").
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the control API's types: 2 MB of TypedDicts acpd needs no instance of
    from .api import ControlCounters, ControlStatus

LOG = logging.getLogger("acpd.control")
MAX_REQUEST = 64 * 1024   # one line; anything longer is a client bug or an attack
MAX_CLIENTS = 16
MAX_DEPTH = 32            # acpctl's deepest request is 2; json.loads recurses (RecursionError)
IDLE_TIMEOUT_S = 10.0     # to send one complete request line (and to take one reply)
Handler = Callable[[dict[str, Any]], Any | Awaitable[Any]]

# A JSON string, escapes included: one alternative per character, so linear on any input.
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class RequestError(Exception):
    """A handler's answer to a bad request: sent back as {"ok": false, "error": str(exc)}."""


class MalformedRequest(Exception):
    """A request line that is no request (why, in words for the client's error answer)."""


def nesting_depth(text: str, bound: int) -> int:
    """How deep arrays and objects nest in `text` (outside strings), counting stops past `bound`.

    Checked before json.loads, which recurses per level and dies on ~40 KB of '['.
    """
    depth = deepest = 0
    for ch in _JSON_STRING.sub("", text):
        if ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > bound:
                    break
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line → the request object, or MalformedRequest saying why."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("request is not UTF-8") from None
    if nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise MalformedRequest(f"request nested too deep (more than {MAX_DEPTH} levels)")
    try:
        req = json.loads(text)
    except RecursionError:
        raise MalformedRequest("request nested too deep") from None
    except ValueError as exc:
        raise MalformedRequest(f"request is not JSON ({str(exc)[:80]})") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise MalformedRequest('request must be an object with a string "cmd"')
    return req


def encode_reply(reply: dict[str, Any]) -> bytes:
    """One reply line; a result that will not encode becomes an error reply, never a silence."""
    try:
        return json.dumps(reply, default=str).encode() + b"\n"
    except (ValueError, TypeError, RecursionError) as exc:
        LOG.error("control reply not encodable: %s", exc)
        return json.dumps({"ok": False, "error": f"internal error: reply not encodable ({exc})"}
                          ).encode() + b"\n"


class ControlServer:
    """JSON-lines server on a Unix socket (mode 0660: root and the socket's group)."""

    def __init__(self, path: Path, *, idle_timeout: float = IDLE_TIMEOUT_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.path = path
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self._handlers: dict[str, Handler] = {"help": self._help}
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0
        self._serving: set[asyncio.Task[Any]] = set()  # one per connected client
        # Requests refused before any handler ran: stuck clients, too many, garbage.
        self.counters: ControlCounters = {"timeouts": 0, "busy": 0, "malformed": 0}

    def status(self) -> ControlStatus:
        return {"clients": self._clients, "max_clients": self.max_clients,
                "idle_timeout_s": self.idle_timeout, "counters": self.counters.copy()}

    def register(self, cmd: str, handler: Handler) -> None:
        if cmd in self._handlers:
            raise ValueError(f"control command {cmd!r} registered twice")
        self._handlers[cmd] = handler

    def commands(self) -> set[str]:
        return set(self._handlers)

    def keep_only(self, names: set[str]) -> None:
        """Forget every command not in `names` (the node rebuilds its parts, which register
        anew)."""
        for cmd in set(self._handlers) - names - {"help"}:
            del self._handlers[cmd]

    def _help(self, _request: dict[str, Any]) -> list[str]:
        return sorted(self._handlers)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.unlink()  # a stale socket from a killed acpd
        except FileNotFoundError:
            pass
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       limit=MAX_REQUEST)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # connected clients are hung up on: no handler outlives the server (or its event loop)
        others = self._serving - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def dispatch(self, line: bytes) -> dict[str, Any]:
        """One request line → one reply object (never raises)."""
        try:
            req = parse_request(line)
        except MalformedRequest as exc:
            self.counters["malformed"] += 1
            return {"ok": False, "error": str(exc)}
        return await self.dispatch_request(req)

    async def call(self, cmd: str) -> dict[str, Any]:
        """The same answer a client of the socket gets, from inside acpd (the ubus bridge)."""
        return await self.dispatch_request({"cmd": cmd})

    async def dispatch_request(self, req: Any) -> dict[str, Any]:
        """One parsed request → one reply object (never raises)."""
        if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
            return {"ok": False, "error": 'request must be an object with a string "cmd"'}
        handler = self._handlers.get(req["cmd"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {req['cmd']!r}"}
        try:
            result = handler(req)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
        except RequestError as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug in a handler must not take the daemon down
            LOG.exception("control command %s failed", req["cmd"])
            return {"ok": False, "error": f"internal error: {exc}"}
        return {"ok": True, "result": result}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.max_clients:
            self.counters["busy"] += 1
            await self._send(writer, {"ok": False, "error": (
                f"busy: {self._clients} control clients connected (the limit); "
                "try again in a few seconds")})
            writer.close()
            return
        self._clients += 1
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        try:
            while True:
                try:  # one deadline for the whole line: a byte a second does not renew it
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    self.counters["timeouts"] += 1
                    await self._send(writer, {"ok": False, "error": (
                        f"timeout: no complete request line within {self.idle_timeout:g} s")})
                    break
                except (ValueError, asyncio.LimitOverrunError):
                    self.counters["malformed"] += 1
                    await self._send(writer, {"ok": False, "error": "request too long"})
                    break
                if not line:
                    break
                if not await self._send(writer, await self.dispatch(line)):
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients -= 1
            if task is not None:
                self._serving.discard(task)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, reply: dict[str, Any]) -> bool:
        """Write one reply; False if the client is gone or does not read it in time."""
        try:
            writer.write(encode_reply(reply))
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
        except TimeoutError:  # before OSError: TimeoutError is one since 3.11
            self.counters["timeouts"] += 1
            return False
        except (ConnectionError, OSError):
            return False
        return True
