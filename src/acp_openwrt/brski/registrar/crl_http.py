"""`GET /acp.crl` over plain HTTP (RFC 8994 §6.2.5.3: the CRL is signed, and a revoked node
must still be able to fetch it), without cryptography: acpd serves what the registrar worker
signed (`CrlFile`, the DER file worker_protocol.crl_path names), tests a CrlPublisher.

A source is anything with `current(now) -> bytes` and a `served` counter.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ...revocation.crl import CRL_MEDIA_TYPE, CRL_PATH
from ..http import Request, Response, serve_connection, text_response


class CrlSource(Protocol):
    served: int

    def current(self, now: dt.datetime) -> bytes: ...


class CrlFile:
    """The signed CRL as a file: read again only when it was replaced (the worker writes it
    in one rename). OSError when it is missing or unreadable."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.served = 0
        self._key: tuple[int, int, int] | None = None
        self._der = b""

    def current(self, now: dt.datetime) -> bytes:
        info = os.stat(self.path)
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        if key != self._key:
            self._der, self._key = self.path.read_bytes(), key
        return self._der


def crl_handler(source: CrlSource, clock: Callable[[], dt.datetime],
                ) -> Callable[[Request, asyncio.StreamWriter], Any]:
    async def handle(request: Request, _writer: asyncio.StreamWriter) -> Response:
        if request.path.split("?")[0] != CRL_PATH:
            return text_response(404, f"no {request.path}")
        if request.method not in ("GET", "HEAD"):
            return text_response(405, "GET only")
        try:
            body = source.current(clock())
        except OSError:
            return text_response(503, "no CRL signed yet")
        source.served += 1
        return Response(200, body if request.method == "GET" else b"",
                        {"content-type": CRL_MEDIA_TYPE, "cache-control": "no-cache"})
    return handle


async def serve_crl(source: CrlSource, *, sock: Any = None, host: str | None = None,
                    port: int = 0, clock: Callable[[], dt.datetime] | None = None,
                    ) -> asyncio.base_events.Server:
    """Plain HTTP: GET /acp.crl -> the CRL (DER, application/pkix-crl)."""
    handle = crl_handler(source, clock or (lambda: dt.datetime.now(dt.UTC)))

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, handle, idle_timeout=10.0, max_requests=4)
    if sock is not None:
        return await asyncio.start_server(connection, sock=sock)
    return await asyncio.start_server(connection, host, port)
