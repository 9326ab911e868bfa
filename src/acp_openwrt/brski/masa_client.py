"""The registrar's client towards a MASA (RFC 8995 §5.5): HTTPS POST of a voucher-request.

The MASA is authenticated by TLS with its host name (or IP literal) from the IDevID's MASA URL
checked against the certificate (RFC 6125 DNS-ID, §5.4.1); the registrar presents its own
certificate as TLS client certificate (RECOMMENDED there).
"""
from __future__ import annotations

import asyncio
import ssl

from .http import HttpConnection, HttpError, Response, text_response
from .idevid import IdevidError, masa_endpoint
from .wellknown import VOUCHER_CMS_JSON

CONNECT_TIMEOUT = 5.0


async def request_voucher(masa_url: str, signed_request: bytes, context: ssl.SSLContext, *,
                          timeout: float = CONNECT_TIMEOUT) -> Response:
    """POST the registrar voucher-request; the MASA's answer, or a 502 naming the failure."""
    try:
        host, port, prefix = masa_endpoint(masa_url)
    except IdevidError as exc:
        return text_response(502, str(exc))
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), timeout)
    except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
        return text_response(502, f"MASA {host}:{port} unreachable: {exc or type(exc).__name__}")
    connection = HttpConnection(reader, writer, host=f"[{host}]:{port}" if ":" in host
                                else f"{host}:{port}", timeout=timeout)
    try:
        return await connection.request("POST", f"{prefix}/requestvoucher", signed_request, {
            "Content-Type": VOUCHER_CMS_JSON, "Accept": VOUCHER_CMS_JSON, "Connection": "close"})
    except (HttpError, OSError, ConnectionError) as exc:
        return text_response(502, f"MASA {host}:{port} answered badly: {exc}")
    finally:
        await connection.close()
