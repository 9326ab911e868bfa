"""A minimal HTTP/1.1 for BRSKI and EST: one request at a time on asyncio streams, bounded.

BRSKI needs a handful of POSTs and GETs on one persistent TLS connection, between parties that
do not trust each other yet. A full web framework would be more to audit (and to ship on a
router) than this: Content-Length bodies only (no chunked encoding), a size limit on the head
and the body, a time limit on every read, and errors as one line (HttpError).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..logsafe import logsafe

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_HEADERS = 64
READ_TIMEOUT = 10.0
REASONS = {200: "OK", 202: "Accepted", 204: "No Content", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           406: "Not Acceptable", 411: "Length Required", 413: "Content Too Large",
           415: "Unsupported Media Type", 500: "Internal Server Error",
           501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable"}
LOG = logging.getLogger("acpd.brski.http")


class HttpError(ValueError):
    """The peer broke HTTP/1.1 (or our limits); `status` is what a server answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def text(self, limit: int = 200) -> str:
        """The body as one printable line, for log messages about refusals."""
        text = self.body[:limit].decode("utf-8", "replace")
        return "".join(c if c.isprintable() else " " for c in text).strip()


def text_response(status: int, message: str) -> Response:
    return Response(status, message.encode("utf-8"), {"content-type": "text/plain; charset=utf-8"})


async def _read_head(reader: asyncio.StreamReader, read_timeout: float) -> list[str] | None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None  # the peer closed between messages: not an error
        raise HttpError("connection closed inside an HTTP head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(f"HTTP head longer than {MAX_HEAD_BYTES} bytes", 431) from None
    except TimeoutError:
        raise HttpError("timed out reading an HTTP head", 408) from None
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(f"HTTP head longer than {MAX_HEAD_BYTES} bytes", 431)
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError("HTTP head is not ASCII") from None
    return text[:-4].split("\r\n")


def _headers(lines: list[str]) -> dict[str, str]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise HttpError(f"malformed header line {line[:60]!r}")
        key = name.lower()
        if key in headers and key in ("content-length", "content-type", "transfer-encoding"):
            raise HttpError(f"header {name} appears twice")
        headers[key] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError("transfer-encoding is not supported (send Content-Length)", 501)
    return headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str], read_timeout: float,
                     limit: int) -> bytes:
    text = headers.get("content-length", "0")
    if not text.isdigit() or len(text) > 12:
        raise HttpError(f"bad Content-Length {text[:20]!r}")
    length = int(text)
    if length > limit:
        raise HttpError(f"body of {length} bytes is larger than {limit}", 413)
    try:
        return await asyncio.wait_for(reader.readexactly(length), read_timeout)
    except asyncio.IncompleteReadError:
        raise HttpError("connection closed inside an HTTP body") from None
    except TimeoutError:
        raise HttpError("timed out reading an HTTP body", 408) from None


async def read_request(reader: asyncio.StreamReader, *, read_timeout: float = READ_TIMEOUT,
                       body_limit: int = MAX_BODY_BYTES) -> Request | None:
    """The next request, or None when the client closed the connection cleanly."""
    lines = await _read_head(reader, read_timeout)
    if lines is None:
        return None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
        raise HttpError(f"malformed request line {lines[0][:80]!r}")
    headers = _headers(lines[1:])
    body = await _read_body(reader, headers, read_timeout, body_limit)
    return Request(parts[0], parts[1], headers, body)


async def read_response(reader: asyncio.StreamReader, *, read_timeout: float = READ_TIMEOUT,
                        body_limit: int = MAX_BODY_BYTES) -> Response:
    lines = await _read_head(reader, read_timeout)
    if lines is None:
        raise HttpError("connection closed before a response")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise HttpError(f"malformed status line {lines[0][:80]!r}")
    headers = _headers(lines[1:])
    body = await _read_body(reader, headers, read_timeout, body_limit)
    return Response(int(parts[1]), body, headers)


def _encode(first: str, headers: dict[str, str], body: bytes) -> bytes:
    head = [first] + [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def encode_request(request: Request, host: str = "registrar") -> bytes:
    headers = {"Host": host, **request.headers}
    return _encode(f"{request.method} {request.path} HTTP/1.1", headers, request.body)


def encode_response(response: Response) -> bytes:
    reason = REASONS.get(response.status, "Status")
    return _encode(f"HTTP/1.1 {response.status} {reason}", response.headers, response.body)


class HttpConnection:
    """The client side of one persistent connection: request() in turn, then close()."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 host: str = "registrar", timeout: float = READ_TIMEOUT) -> None:
        self.reader, self.writer, self.host, self.timeout = reader, writer, host, timeout

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> Response:
        self.writer.write(encode_request(Request(method, path, dict(headers or {}), body),
                                         self.host))
        await self.writer.drain()
        return await read_response(self.reader, read_timeout=self.timeout)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (OSError, asyncio.CancelledError, ConnectionError):
            pass


Handler = Callable[[Request, asyncio.StreamWriter], Awaitable[Response]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           handler: Handler, *, idle_timeout: float = 30.0,
                           max_requests: int = 32) -> None:
    """Answer requests on one connection until the client closes, errs or is idle too long.

    `handler` gets the request and the writer (for the TLS peer certificate) and returns the
    response; one that raises gets a 500 and ends the connection.
    """
    peer = writer.get_extra_info("peername")
    try:
        for _ in range(max_requests):
            try:
                request = await read_request(reader, read_timeout=idle_timeout)
            except HttpError as exc:
                LOG.info("HTTP from %s refused: %s", peer, exc)
                writer.write(encode_response(text_response(exc.status, str(exc))))
                await writer.drain()
                return
            if request is None:
                return
            try:
                response = await handler(request, writer)
            except Exception:
                LOG.exception("handler failed on %s %s", logsafe(request.method),
                              logsafe(request.path))
                response = text_response(500, "internal error")
                response.headers["connection"] = "close"
            writer.write(encode_response(response))
            await writer.drain()
            if request.headers.get("connection", "").lower() == "close" or \
                    response.headers.get("connection") == "close":
                return
    except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
        LOG.debug("connection from %s ended: %s", peer, exc)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ConnectionError, asyncio.CancelledError):
            pass
