"""The join proxy's relay on loopback (bounds, idle timeout, counters) and its sans-I/O parts."""
from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from acp_openwrt.brski.proxy.registrars import (
    RegistrarLocator,
    RegistrarTable,
    registrar_from_flood,
)
from acp_openwrt.brski.proxy.relay import Admission, Relay, RelayLimits
from acp_openwrt.grasp.messages import Locator

# -- sans-I/O ------------------------------------------------------------------------------


def test_admission_counts_globally_and_per_pledge() -> None:
    adm = Admission(RelayLimits(max_connections=3, max_per_pledge=2))
    assert adm.admit("fe80::a") is None and adm.admit("fe80::a") is None
    assert adm.admit("fe80::a") == "per_pledge_limit"
    assert adm.admit("fe80::b") is None
    assert adm.admit("fe80::c") == "limit"
    adm.release("fe80::a")
    assert adm.active == 2
    assert adm.admit("fe80::c") is None


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        RelayLimits(max_connections=0)
    with pytest.raises(ValueError):
        RelayLimits(idle_timeout=0)


def test_registrar_table_expires_and_keeps_its_choice() -> None:
    table = RegistrarTable()
    b, a = RegistrarLocator("fd00::b", 443), RegistrarLocator("fd00::a", 443)
    table.heard(b, 10_000, now=0.0)
    assert table.current(1.0) == b
    table.heard(a, 10_000, now=2.0)      # a sorts first, but b stays the choice while it lives
    assert table.candidates(3.0) == [b, a]
    assert table.current(10.5) == a      # b expired at 10 s
    assert table.remaining(11.0) == [(a, 1000)]
    table.heard(a, 0, now=11.0)          # withdrawn
    assert table.current(11.0) is None and table.next_expiry() is None


def test_registrar_locator_refuses_what_a_proxy_must_not_dial() -> None:
    assert RegistrarLocator.checked("FD00::0001", 8443) == RegistrarLocator("fd00::1", 8443)
    for address, port in [("fe80::1", 443), ("::1", 443), ("ff02::1", 443), ("fd00::1", 0),
                          ("not-an-address", 443)]:
        with pytest.raises(ValueError):
            RegistrarLocator.checked(address, port)


def test_registrar_from_flood_reads_the_rfc_example() -> None:
    addr = bytes.fromhex("fda379a6f6ee00000200000064000001")
    loc = Locator(103, addr, 6, 8443)
    assert registrar_from_flood("AN_join_registrar", "EST-TLS", loc) == \
        RegistrarLocator("fda3:79a6:f6ee:0:200:0:6400:1", 8443)
    assert registrar_from_flood("AN_join_registrar", "EST-coaps", loc) is None
    udp = Locator(103, addr, 17, 8443)
    assert registrar_from_flood("AN_join_registrar", "EST-TLS", udp) is None
    assert registrar_from_flood("AN_Proxy", "EST-TLS", loc) is None


# -- the relay on loopback -----------------------------------------------------------------


async def echo_server() -> tuple[asyncio.AbstractServer, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(echo, "::1", 0)
    return server, server.sockets[0].getsockname()[1]


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind(("::1", 0))
    sock.listen(16)
    return sock


Scenario = Callable[[Relay, int, list[RegistrarLocator]], Awaitable[None]]


def run(limits: RelayLimits, scenario: Scenario, registrar: bool = True) -> Relay:
    """Relay on ::1 towards an echo server (or towards nothing); runs scenario(relay, port,
    regs)."""
    async def main() -> Relay:
        server, echo_port = await echo_server()
        regs = [RegistrarLocator("::1", echo_port)] if registrar else []
        relay = Relay(limits, lambda: list(regs))
        try:
            _, port = await relay.add_listener("lo", listener())
            await scenario(relay, port, regs)
        finally:
            await relay.close()
            server.close()
        return relay
    return asyncio.run(main())


async def refused(port: int) -> bool:
    """True when the proxy resets or closes the connection without relaying anything."""
    reader, writer = await asyncio.open_connection("::1", port)
    try:
        writer.write(b"ping")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(10), 2)
        return data == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def test_bytes_reach_the_registrar_and_come_back_with_counters() -> None:
    async def scenario(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        reader, writer = await asyncio.open_connection("::1", port)
        payload = bytes(range(256)) * 400  # 100 KiB, several chunks
        writer.write(payload)
        await writer.drain()
        got = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
        assert got == payload
        status = relay.status()
        assert len(status["connections"]) == 1
        conn = status["connections"][0]
        assert conn["bytes_up"] == conn["bytes_down"] == len(payload)
        writer.write_eof()  # clean close from the pledge side: the echo side closes too
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        for _ in range(50):
            if not relay.status()["connections"]:
                break
            await asyncio.sleep(0.02)
        assert relay.status()["connections"] == []
        totals = relay.counters()
        assert totals["bytes_up"] == totals["bytes_down"] == len(payload)
        assert totals["accepted"] == 1
    run(RelayLimits(), scenario)


def test_no_registrar_means_refused() -> None:
    async def scenario(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        assert await refused(port)
        assert relay.counters().get("refused_no_registrar") == 1
        assert relay.counters().get("accepted", 0) == 0
    run(RelayLimits(), scenario, registrar=False)


def test_registrar_unreachable_means_refused() -> None:
    async def scenario(relay: Relay, port: int, regs: list[RegistrarLocator]) -> None:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as unused:
            unused.bind(("::1", 0))
            regs[:] = [RegistrarLocator("::1", unused.getsockname()[1])]  # nobody listens
            assert await refused(port)
        assert relay.counters().get("refused_registrar_unreachable") == 1
    run(RelayLimits(), scenario)


def test_per_pledge_and_global_limits() -> None:
    async def scenario(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        conns = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection("::1", port)
            writer.write(b"x")
            assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"
            conns.append(writer)
        assert await refused(port)  # third from the same address
        assert relay.counters().get("refused_per_pledge_limit") == 1
        conns[0].close()
        for _ in range(100):  # the slot comes back once the circuit is gone
            if len(relay.status()["connections"]) == 1:
                break
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"y")
        assert await asyncio.wait_for(reader.readexactly(1), 2) == b"y"
        for w in (conns[1], writer):
            w.close()
    run(RelayLimits(max_connections=8, max_per_pledge=2), scenario)

    async def global_limit(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 2)
        assert await refused(port)
        assert relay.counters().get("refused_limit") == 1
        writer.close()
    run(RelayLimits(max_connections=1, max_per_pledge=1), global_limit)


def test_idle_circuit_is_closed() -> None:
    async def scenario(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"x")
        await asyncio.wait_for(reader.readexactly(1), 2)
        start = time.monotonic()
        try:
            assert await asyncio.wait_for(reader.read(10), 3) == b""
        except ConnectionResetError:
            pass
        waited = time.monotonic() - start
        assert 0.3 <= waited < 1.5, waited
        assert relay.counters().get("idle_closed") == 1
        writer.close()
    run(RelayLimits(idle_timeout=0.4), scenario)


def test_removing_a_listener_stops_accepting() -> None:
    async def scenario(relay: Relay, port: int, _regs: list[RegistrarLocator]) -> None:
        assert [x["port"] for x in relay.listeners()] == [port]
        await relay.remove_listener("lo")
        assert relay.listeners() == []
        with pytest.raises(OSError):
            await asyncio.open_connection("::1", port)
    run(RelayLimits(), scenario)
