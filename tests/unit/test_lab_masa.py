"""The lab MASA's TLS certificate passes the strict X.509 checks that Python 3.13 and later
apply by default (OpenWrt master ships Python 3.14): a registrar there must reach it."""
from __future__ import annotations

import ssl
from pathlib import Path

from acp_openwrt.lab.masa import Masa


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, hostname: str) -> None:
    """A whole TLS handshake in memory: no sockets, so it runs in the unit tier."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    tls_server = server.wrap_bio(to_server, to_client, server_side=True)
    done: set[int] = set()
    for _ in range(10):
        for side in (tls_client, tls_server):
            if id(side) in done:
                continue
            try:
                side.do_handshake()
                done.add(id(side))
            except ssl.SSLWantReadError:
                pass
        if len(done) == 2:
            return
    raise AssertionError("TLS handshake did not finish")


def test_masa_tls_certificate_verifies_with_strict_x509_checks(tmp_path: Path) -> None:
    masa = Masa.create(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(masa.tls_cert_path, masa.tls_key_path)
    client = ssl.create_default_context(cafile=str(masa.anchor_path))
    client.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    _handshake(client, server, masa.host)
