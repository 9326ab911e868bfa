"""The control socket's server side: each acpd part registers the commands it answers."""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Awaitable, Callable, Union

LOG = logging.getLogger("acpd.control")
MAX_REQUEST = 64 * 1024   # one line; anything longer is a client bug or an attack
MAX_CLIENTS = 16
Handler = Callable[[dict[str, Any]], Union[Any, Awaitable[Any]]]


class RequestError(Exception):
    """A handler's answer to a bad request: sent back as {"ok": false, "error": str(exc)}."""


class ControlServer:
    """JSON-lines server on a Unix socket (mode 0660: root and the socket's group)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handlers: dict[str, Handler] = {"help": self._help}
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0

    def register(self, cmd: str, handler: Handler) -> None:
        if cmd in self._handlers:
            raise ValueError(f"control command {cmd!r} registered twice")
        self._handlers[cmd] = handler

    def commands(self) -> set[str]:
        return set(self._handlers)

    def keep_only(self, names: set[str]) -> None:
        """Forget every command not in `names` (the node rebuilds its parts, which register anew)."""
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
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def dispatch(self, line: bytes) -> dict[str, Any]:
        """One request line → one reply object (never raises)."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not JSON"}
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
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(b'{"ok": false, "error": "request too long"}\n')
                    break
                if not line:
                    break
                reply = await self.dispatch(line)
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._clients -= 1
            writer.close()
