"""The registrar's client towards a MASA (RFC 8995 §5.5): HTTPS POST of a voucher-request.

The MASA is authenticated by TLS with its host name (or IP literal) from the IDevID's MASA URL
checked against the certificate (RFC 6125 DNS-ID, §5.4.1); the registrar presents its own
certificate as TLS client certificate (RECOMMENDED there).
"""
from __future__ import annotations

import asyncio
import socket
import ssl

from ..http import HttpConnection, HttpError, Response, text_response
from ..idevid import IdevidError, masa_endpoint
from ..wellknown import VOUCHER_CMS_JSON

CONNECT_TIMEOUT = 5.0


async def _open(host: str, port: int, context: ssl.SSLContext, namespace: str | None,
                io_timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if namespace is None:
        return await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {host}")
    family, _, _, _, address = infos[0]
    from ...netns import socket_in  # here: pyroute2 only for a registrar with masa_namespace
    sock = await loop.run_in_executor(None, socket_in, namespace, family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
        return await asyncio.open_connection(sock=sock, ssl=context, server_hostname=host)
    except BaseException:
        sock.close()
        raise


async def request_voucher(masa_url: str, signed_request: bytes, context: ssl.SSLContext, *,
                          io_timeout: float = CONNECT_TIMEOUT,
                          namespace: str | None = None) -> Response:
    """POST the registrar voucher-request; the MASA's answer, or a 502 naming the failure.

    `namespace`: the network namespace to connect from (the MASA is usually reached over the
    data plane, while the registrar itself serves inside the ACP namespace)."""
    try:
        host, port, prefix = masa_endpoint(masa_url)
    except IdevidError as exc:
        return text_response(502, str(exc))
    try:
        reader, writer = await asyncio.wait_for(
            _open(host, port, context, namespace, io_timeout), io_timeout)
    except (TimeoutError, OSError, ssl.SSLError) as exc:
        return text_response(502, f"MASA {host}:{port} unreachable: {exc or type(exc).__name__}")
    connection = HttpConnection(reader, writer, host=f"[{host}]:{port}" if ":" in host
                                else f"{host}:{port}", timeout=io_timeout)
    try:
        return await connection.request("POST", f"{prefix}/requestvoucher", signed_request, {
            "Content-Type": VOUCHER_CMS_JSON, "Accept": VOUCHER_CMS_JSON, "Connection": "close"})
    except (HttpError, OSError, ConnectionError) as exc:
        return text_response(502, f"MASA {host}:{port} answered badly: {exc}")
    finally:
        await connection.close()
