"""GraspService's TCP streams (non-blocking sockets on the loop, no asyncio transports) between
two ACP-mode services on ::1, no namespaces: negotiations one after another and at once, a
refused connection, a peer that sends garbage, stop() with a connection open."""
from __future__ import annotations

import asyncio
import socket
import time

import pytest

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.engine import EngineConfig
from acp_openwrt.grasp.errors import GraspApiError, GraspError
from acp_openwrt.grasp.messages import Locator, Objective
from acp_openwrt.grasp.service import GraspService

OBJ = Objective("EX3", c.F_NEG, 6, ["NZD", 410])
LOOPBACK = socket.inet_pton(socket.AF_INET6, "::1")


def _free_port() -> int:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


def _peer(port: int) -> Locator:
    return Locator(c.O_IPv6_LOCATOR, LOOPBACK, c.IPPROTO_TCP, port)


def _service(port: int) -> GraspService:
    cfg = EngineConfig(neighbour_rate=1e6, neighbour_burst=1e6)
    return GraspService(mode="acp", address="::1", port=port, config=cfg)


@pytest.mark.parametrize("spare_sockets", [True, False])
def test_negotiations_over_loopback(spare_sockets: bool) -> None:
    async def main() -> None:
        port_a, port_b = _free_port(), _free_port()
        a, b = _service(port_a), _service(port_b)
        if not spare_sockets:  # as in a namespace whose spares ran out: a task waits for one
            a._factory.take = lambda: None  # type: ignore[method-assign]
        await a.start()
        await b.start()
        try:
            buyer, seller = a.register_asa("buyer"), b.register_asa("seller")

            async def step(handle: int) -> None:
                await b.negotiate_step(seller, handle, OBJ.with_value(["NZD", 300]))

            async def sell() -> None:  # a task per request: several may be open at once
                steps = set()
                while True:
                    req = await b.listen_negotiate(seller, OBJ)
                    steps.add(t := asyncio.create_task(step(req.handle)))
                    t.add_done_callback(steps.discard)

            task = asyncio.create_task(sell())
            for _ in range(20):  # one after another: each a new connection
                reply = await a.request_negotiate(buyer, OBJ, _peer(port_b))
                assert reply.handle is not None and reply.objective is not None
                assert reply.objective.value == ["NZD", 300]
                a.end_negotiate(buyer, reply.handle, True)
            replies = await asyncio.gather(*(a.request_negotiate(buyer, OBJ, _peer(port_b))
                                             for _ in range(8)))  # at once
            for reply in replies:
                assert reply.handle is not None
                a.end_negotiate(buyer, reply.handle, True)
            for _ in range(50):  # the seller sees each M_END and closes its side
                if not b.status()["streams"] and not a.status()["streams"]:
                    break
                await asyncio.sleep(0.01)
            assert a.status()["streams"] == 0 and b.status()["streams"] == 0
            task.cancel()
        finally:
            await a.stop()
            await b.stop()
    asyncio.run(main())


def test_refused_connection_and_garbage() -> None:
    async def main() -> None:
        port = _free_port()
        svc = _service(port)
        await svc.start()
        try:
            asa = svc.register_asa("buyer")
            t0 = time.monotonic()
            with pytest.raises(GraspApiError) as err:  # nobody listens there: refused at once
                await svc.request_negotiate(asa, OBJ, _peer(_free_port()))
            assert err.value.code == GraspError.noNegReply and time.monotonic() - t0 < 1.0
            assert svc.status()["streams"] == 0
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("::1", port))
            await loop.sock_sendall(sock, b"\x1c\x1c\x1c")  # not CBOR: the service hangs up
            assert await asyncio.wait_for(loop.sock_recv(sock, 10), 2) == b""
            sock.close()
            assert svc.engine.counters["stream_framing_error"] == 1
            # a connection left open is closed by stop()
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("::1", port))
            for _ in range(50):
                if svc.status()["streams"]:
                    break
                await asyncio.sleep(0.01)
            assert svc.status()["streams"] == 1
        finally:
            await svc.stop()
        assert svc.status()["streams"] == 0
        assert await asyncio.wait_for(loop.sock_recv(sock, 10), 2) == b""
        sock.close()
    asyncio.run(main())
