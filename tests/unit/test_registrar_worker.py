"""The registrar part with its worker process, without root: acpd's RegistrarPart listens on
[::1] (its ACP-namespace bind replaced), the worker is the real child (worker.py). What acpd
keeps (sockets, status, commands) and what the worker does (TLS, signing, sqlite) meet here:
a probe is no session, revoke reaches the CRL served from the worker's file, a killed worker
is counted and the next request starts another, an idle worker leaves."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from acp_openwrt.brski.pledge.core import generate_key
from acp_openwrt.brski.registrar.bootstrap import bootstrap_registrar, open_registrar_files
from acp_openwrt.brski.registrar.part import RegistrarPart
from acp_openwrt.brski.registrar.revocation import RevocationStore
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.api import ANSWERS, problems
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import EventBus, PledgeSolicited
from acp_openwrt.identity.summary import load_identity_summary
from acp_openwrt.lab.waiting import until
from acp_openwrt.node_context import NodeContext
from acp_openwrt.revocation.crl import crl_url, load_crl

until_30 = functools.partial(until, within=30.0)

pytestmark = pytest.mark.unit
DOMAIN = "acp.example.com"


def make_config(tmp: Path, manufacturer_anchor: Path | None = None) -> AcpConfig:
    node = tmp / "node"
    config = AcpConfig(registrar=True, registrar_domain=DOMAIN, registrar_dir=tmp / "registrar",
                       ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                       trust_anchors=node / "ta.pem", run_dir=tmp / "run", log_dir=tmp / "log",
                       manufacturer_trust_anchor=manufacturer_anchor)
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    return config


def local_part(tmp: Path, idle_exit: float = 30.0, manufacturer_anchor: Path | None = None,
               ) -> tuple[RegistrarPart, NodeContext]:
    config = make_config(tmp, manufacturer_anchor)
    ctx = NodeContext(config, EventBus(), ControlServer(tmp / "s"),
                      identity=load_identity_summary(config.ldevid_cert))
    part = RegistrarPart(ctx, crl_port=0, idle_exit=idle_exit)

    def bind_here(port: int) -> socket.socket:   # [::1] instead of the ACP namespace
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.bind(("::1", 0))
        sock.listen(16)
        sock.setblocking(False)
        return sock
    part._bind_in_acp = bind_here  # type: ignore[method-assign]
    return part, ctx


def issue_one(config: AcpConfig) -> tuple[str, int]:
    """A certificate issued and recorded as the registrar does (acp-node-name, serial)."""
    files = open_registrar_files(config.registrar_dir, DOMAIN)
    store = RevocationStore(files.allocator.path)
    try:
        allocation = files.allocator.allocate("SN-1")
        cert = files.ca.issue(generate_key().public_key(), allocation.acp_node_name)
        store.record_issued(cert)
        return allocation.acp_node_name, cert.serial_number
    finally:
        store.close()
        files.close()


async def ask(ctx: NodeContext, **line: Any) -> dict[str, Any]:
    return await ctx.control.dispatch(json.dumps(line).encode())


def test_start_checks_in_a_child_and_acpd_holds_no_cryptography(tmp_path: Path) -> None:
    """The part's start (check worker, sockets, CRL file) and a request to the worker, in a
    fresh interpreter set up as acpd.main sets up its own: afterwards it still holds none of
    cryptography, ssl, sqlite3 or hashlib's OpenSSL."""
    make_config(tmp_path)
    program = f"""
from acp_openwrt import asyncio_lean, pyroute2_lean, stand_ins
pyroute2_lean.install()    # as acpd.main does, before anything
asyncio_lean.install()
stand_ins.install(stand_ins.CRYPTOGRAPHY)
import asyncio, json, socket, sys
from pathlib import Path
from acp_openwrt.brski.registrar.part import RegistrarPart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control.server import ControlServer
from acp_openwrt.events import EventBus, PledgeSolicited
from acp_openwrt.identity.summary import load_identity_summary
from acp_openwrt.node_context import NodeContext
tmp = Path({str(tmp_path)!r})
node = tmp / "node"
config = AcpConfig(registrar=True, registrar_domain={DOMAIN!r}, registrar_dir=tmp / "registrar",
                   ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                   trust_anchors=node / "ta.pem", run_dir=tmp / "run", log_dir=tmp / "log")
ctx = NodeContext(config, EventBus(), ControlServer(tmp / "s2"),
                  identity=load_identity_summary(config.ldevid_cert))
part = RegistrarPart(ctx, crl_port=0)
def bind_here(port):
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind(("::1", 0)); sock.listen(4); sock.setblocking(False)
    return sock
part._bind_in_acp = bind_here
async def main():
    await part.start()
    status = part.status()
    answer = await part._cmd_revoked({{}})
    await part.stop()
    return status, answer
status, answer = asyncio.run(main())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("cryptography", "ssl", "_ssl",
                                                              "sqlite3", "_sqlite3", "_hashlib"))
print(json.dumps({{"status": status, "revoked": answer, "heavy": heavy}}))
"""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["status"]["running"] and out["status"]["problem"] is None, out["status"]
    assert out["status"]["crl_number"] == 1 and out["revoked"]["revoked"] == []
    assert out["heavy"] == []   # the worker did the TLS, signing and sqlite work


def test_a_probe_is_no_session_but_starts_the_worker_and_revoke_reaches_the_crl(
        tmp_path: Path) -> None:
    part, ctx = local_part(tmp_path, idle_exit=0.5)
    config = ctx.config

    async def main() -> dict[str, Any]:
        from acp_openwrt.revocation.part import fetch_crl
        out: dict[str, Any] = {}
        await part.start()
        try:
            out["started"] = part.status()   # the start's worker: checked, and serving
            assert part.worker is not None
            await until_30(lambda: part.worker.status()["processes"] == 0,
                           what="the start's worker leaving when idle")
            assert part.port is not None and part._crl_server is not None
            crl_port = part._crl_server.sockets[0].getsockname()[1]
            out["crl_before"] = await fetch_crl(crl_url("::1", crl_port), None)
            # a join proxy's probe: connect, close without a byte
            probe = socket.create_connection(("::1", part.port))
            probe.close()
            await until_30(lambda: part.probes == 1, what="the probe counted")
            assert part.worker is not None
            await until_30(lambda: part.worker.status()["pid"], what="the worker pre-started")
            out["after_probe"] = part.status()
            name, serial = issue_one(config)
            out["serial"] = serial
            out["revoke"] = await ask(ctx, cmd="revoke", target=name, reason="stolen")
            out["unknown"] = await ask(ctx, cmd="revoke", target="nobody@" + DOMAIN)
            out["empty"] = await ask(ctx, cmd="revoke")
            out["revoked"] = await ask(ctx, cmd="revoked")
            out["crl_after"] = await fetch_crl(crl_url("::1", crl_port), None)
            out["status"] = part.status()
        finally:
            await part.stop()
        out["stopped"] = part.status()
        return out
    out = asyncio.run(main())
    started = out["started"]
    assert started["running"] and started["problem"] is None
    assert started["worker"]["starts"] == 1 and started["worker"]["pid"] is not None
    assert problems(started, ANSWERS["registrar"]) == []
    assert load_crl(out["crl_before"]).number == started["crl_number"] == 1
    probed = out["after_probe"]["worker"]
    assert probed["probes"] == 1 and probed["connections"] == 0 and probed["starts"] == 2
    revoke = out["revoke"]
    assert revoke["ok"], revoke
    assert problems(revoke["result"], ANSWERS["revoke"]) == []
    assert revoke["result"]["revoked"][0]["serial"] == f"{out['serial']:x}"
    assert not out["unknown"]["ok"] and "no certificate was issued" in out["unknown"]["error"]
    assert not out["empty"]["ok"]
    listing = out["revoked"]["result"]
    assert problems(listing, ANSWERS["revoked"]) == []
    assert len(listing["revoked_names"]) == 1
    crl = load_crl(out["crl_after"])   # served by acpd from the file the worker signed
    assert crl.number == out["status"]["crl_number"] == 2
    assert out["serial"] in crl.revoked
    assert out["status"]["revoked"] == 1
    assert problems(out["status"], ANSWERS["registrar"]) == []
    assert out["stopped"]["running"] is False
    assert part.worker is not None and part.worker.status()["processes"] == 0


def test_a_killed_worker_is_counted_and_the_next_request_starts_another(tmp_path: Path) -> None:
    part, ctx = local_part(tmp_path)

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        await part.start()
        try:
            first = await ask(ctx, cmd="revoked")
            assert first["ok"], first
            assert part.worker is not None
            pid = part.worker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until_30(lambda: part.worker.crashes == 1, what="the crash noticed")
            crashed = part.status()
            again = await ask(ctx, cmd="revoked")
            assert again["ok"], again
            return crashed, part.status(), {"pid": pid}
        finally:
            await part.stop()
    crashed, healed, first = asyncio.run(main())
    assert crashed["worker"]["running"] is False and crashed["worker"]["crashes"] == 1
    assert crashed["worker"]["last_error"].startswith("exit -9")
    assert healed["worker"]["starts"] == 2 and healed["worker"]["pid"] != first["pid"]


async def get_cacerts(config: AcpConfig, port: int) -> bytes:
    """One EST request over TLS, the node's own LDevID as client certificate."""
    import ssl
    context = ssl.create_default_context(cafile=str(config.trust_anchors))
    context.check_hostname = False
    context.load_cert_chain(str(config.ldevid_cert), str(config.ldevid_key))
    reader, writer = await asyncio.open_connection("::1", port, ssl=context)
    writer.write(b"GET /.well-known/est/cacerts HTTP/1.1\r\nhost: x\r\n"
                 b"connection: close\r\n\r\n")
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return answer


def test_sessions_go_to_the_worker_which_leaves_when_idle_and_its_counters_stay(
        tmp_path: Path) -> None:
    part, ctx = local_part(tmp_path, idle_exit=0.5)

    async def main() -> tuple[bytes, dict[str, Any], dict[str, Any]]:
        await part.start()
        try:
            assert part.port is not None and part.worker is not None
            answer = await get_cacerts(ctx.config, part.port)
            await until_30(lambda: part.worker.status()["processes"] == 0, what="the idle exit")
            left = part.status()
            assert (await ask(ctx, cmd="revoked"))["ok"]   # a new one comes for the next need
            return answer, left, part.status()
        finally:
            await part.stop()
    answer, left, later = asyncio.run(main())
    assert answer.startswith(b"HTTP/1.1 200")
    assert left["worker"]["crashes"] == 0 and left["worker"]["last_exit"] == 0
    assert left["worker"]["connections"] == 1 and left["worker"]["probes"] == 0
    assert left["worker"]["starts"] == 1   # the start's worker, checked, served the first one
    assert left["counters"] == {"cacerts 200": 1}
    assert later["worker"]["starts"] == 2 and later["counters"] == {"cacerts 200": 1}


def test_a_pledge_asking_for_a_proxy_here_starts_the_worker_ahead(tmp_path: Path) -> None:
    part, ctx = local_part(tmp_path, idle_exit=0.5)

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        await part.start()
        try:
            assert part.worker is not None
            await until_30(lambda: part.worker.status()["processes"] == 0,
                           what="the start's worker leaving when idle")
            before = part.status()
            ctx.bus.publish(PledgeSolicited("eth0"))
            await until_30(lambda: part.worker.status()["pid"], what="the worker started")
            ctx.bus.publish(PledgeSolicited("eth0"))   # one worker for any number of asks
            await asyncio.sleep(0.2)
            return before, part.status()
        finally:
            await part.stop()
    before, after = asyncio.run(main())
    assert before["worker"]["pid"] is None and before["worker"]["starts"] == 1
    assert after["worker"]["starts"] == 2 and after["worker"]["connections"] == 0


def test_prepare_begins_the_first_worker_and_a_stop_before_start_ends_it(
        tmp_path: Path) -> None:
    """The first worker's start overlaps the other parts' (Part.prepare); a part stopped before
    its start (an earlier part failed) leaves no worker behind."""
    part, _ctx = local_part(tmp_path)

    async def main() -> tuple[int | None, bool, int | None]:
        part.prepare()
        assert part._first is not None
        worker, ok, _out = await asyncio.shield(part._first)  # ready before start() is called
        pid = worker.pid
        await part.stop()
        return pid, ok, worker.pid
    pid, ok, after = asyncio.run(main())
    assert ok and pid is not None and after is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_registrar_that_cannot_start_says_why(tmp_path: Path) -> None:
    part, ctx = local_part(tmp_path)
    ctx.config.ldevid_key.write_bytes(b"not a key")  # type: ignore[union-attr]

    async def main() -> dict[str, Any]:
        await part.start()
        reply = await ask(ctx, cmd="registrar")
        await part.stop()
        return reply
    reply = asyncio.run(main())
    assert reply["ok"] and reply["result"]["running"] is False
    assert "cannot load the LDevID" in reply["result"]["problem"]
    assert part.worker is None and part._listener is None


def test_pledges_enrol_through_the_worker_cold_warm_and_after_it_was_killed(
        tmp_path: Path) -> None:
    """Real pledges (PledgeClient) straight to the registrar port on [::1]: once the start's
    worker has left, the first one starts a worker (Python, its imports, the TLS context), the
    second finds it warm; a killed worker costs nothing more than a new start for the third."""
    from acp_openwrt.brski.pledge.client import IdentityPaths, PledgeClient, load_pledge_identity
    from acp_openwrt.brski.pledge.core import Enrolled
    from acp_openwrt.brski.pledge.locator import Locator
    from acp_openwrt.brski.registrar.bootstrap import CA_CERT_NAME
    from acp_openwrt.identity.certificate import load_certificate
    from acp_openwrt.lab.masa import Masa
    masa = Masa.create(tmp_path / "vendor", host="::1")
    part, ctx = local_part(tmp_path, idle_exit=3.0, manufacturer_anchor=masa.anchor_path)

    async def enrol(serial: str) -> tuple[Any, float]:
        idevid = masa.issue_idevid(serial)
        where = tmp_path / serial
        client = PledgeClient(load_pledge_identity(idevid.cert_path, idevid.key_path,
                                                   masa.anchor_path),
                              IdentityPaths(idevid.cert_path, idevid.key_path,
                                            where / "ldevid.crt", where / "ldevid.key",
                                            where / "ta.pem"))
        assert part.port is not None
        started = time.perf_counter()
        result = await client.attempt(Locator("::1", part.port))
        return result, time.perf_counter() - started

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        await masa.serve(port=0)
        masa.trust_registrar(load_certificate(ctx.config.registrar_dir / CA_CERT_NAME))
        await part.start()
        try:
            assert part.worker is not None and part.worker.pid is not None  # the start's
            await until_30(lambda: part.worker.status()["processes"] == 0,
                           what="the start's worker leaving when idle")
            out["cold"] = await enrol("SN-COLD")
            out["warm"] = await enrol("SN-WARM")
            pid = part.worker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await until_30(lambda: part.worker.crashes == 1, what="the crash noticed")
            out["healed"] = await enrol("SN-HEALED")
            await until_30(lambda: part.status()["counters"].get("enrollstatus 200", 0) >= 2,
                        what="the enrolment reports")
            out["status"] = part.status()
        finally:
            await part.stop()
            await masa.close()
        return out
    out = asyncio.run(main())
    for key in ("cold", "warm", "healed"):
        assert isinstance(out[key][0], Enrolled), (key, out[key][0])
    status = out["status"]
    assert status["enrolled"] == 3 and status["worker"]["starts"] == 3
    assert status["worker"]["crashes"] == 1 and status["worker"]["connections"] >= 3
    assert status["counters"]["simpleenroll 200"] == 3
    print(f"\nenrolment through a fresh worker {out['cold'][1] * 1000:.0f} ms, warm "
          f"{out['warm'][1] * 1000:.0f} ms, after a kill {out['healed'][1] * 1000:.0f} ms")
