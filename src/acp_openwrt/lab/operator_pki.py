"""Lab help for more than one registrar: the operator's PKI made with the openssl commands of
docs/brski.md (one root, one sub-CA per registrar), and the lab MASA answering in more than one
node's host namespace (each registrar's acpd reaches it on [::1] of its own)."""
from __future__ import annotations

import asyncio
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..netns import socket_in
from .acpd_lab import AcpdLab

# docs/brski.md, "More than one registrar", steps 1 to 3 (the same commands, the same order)
SUB_EXT = """basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
ROOT_STEPS = [
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root.key",
    "openssl req -x509 -new -key root.key -sha256 -days 7300"
    " -subj '/O=Example/CN=Example Operator Root CA'"
    " -addext 'basicConstraints=critical,CA:TRUE,pathlen:1'"
    " -addext 'keyUsage=critical,keyCertSign,cRLSign' -out root.crt",
]
SUB_STEPS = [
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out {r}-ca.key",
    "openssl req -new -key {r}-ca.key -subj '/O=Example/CN=ACP registrar CA {r}' -out {r}-ca.csr",
    "openssl x509 -req -in {r}-ca.csr -CA root.crt -CAkey root.key -CAcreateserial"
    " -days 1825 -sha256 -extfile registrar-ca.ext -out {r}-ca.crt",
    "cat {r}-ca.crt root.crt > {r}-ca-chain.pem",
    "openssl verify -CAfile root.crt {r}-ca.crt",
]
# the Registrar-ID a registrar derives from its sub-CA (docs/brski.md): 12 hex digits, >> 2
DERIVED_ID_STEP = ("openssl x509 -in {r}-ca.crt -noout -pubkey | openssl pkey -pubin -outform DER"
                   " | openssl dgst -sha256 -r | cut -c1-12")


@dataclass(frozen=True)
class SubCa:
    name: str
    chain: Path        # the sub-CA certificate, then the root (registrar_ca_cert)
    key: Path          # registrar_ca_key
    cert: Path
    derived_id: int    # what the openssl pipeline of the docs computes


def _run(step: str, folder: Path) -> str:
    done = subprocess.run(["sh", "-ec", step], cwd=folder, capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{step}: {done.stderr.strip()}")
    return done.stdout


def operator_pki(folder: Path, registrars: list[str]) -> tuple[Path, dict[str, SubCa]]:
    """root.crt and one sub-CA per registrar name, made as the docs say."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "registrar-ca.ext").write_text(SUB_EXT)
    for step in ROOT_STEPS:
        _run(step, folder)
    subs = {}
    for name in registrars:
        for step in SUB_STEPS:
            _run(step.format(r=name), folder)
        derived = int(_run(DERIVED_ID_STEP.format(r=name), folder).strip(), 16) >> 2
        subs[name] = SubCa(name, folder / f"{name}-ca-chain.pem", folder / f"{name}-ca.key",
                           folder / f"{name}-ca.crt", derived)
    return folder / "root.crt", subs


def serve_masa_in(lab: AcpdLab, name: str) -> None:
    """The lab's MASA (start_masa() made it) also on [::1]:<its port> in node `name`'s host
    namespace: the IDevIDs name that URL, and each registrar asks from its own namespace."""
    masa, loop = lab.masa, lab._masa_loop
    assert masa is not None and loop is not None, "start_masa() first"
    sock = socket_in(lab.nodes[name].host_ns, socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::1", masa.port))
    sock.listen(64)
    from ..brski.http import serve_connection
    from ..brski.tls import server_context
    context = server_context(masa.tls_cert_path, masa.tls_key_path)

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_connection(reader, writer, masa._handle)

    async def serve() -> None:
        await asyncio.start_server(connection, sock=sock, ssl=context)
    asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
