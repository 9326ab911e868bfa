"""The join proxy's relay on loopback (bounds, idle timeout, counters) and its sans-I/O parts."""
from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator

import pytest

from acp_openwrt.brski.proxy.registrars import (
    RegistrarLocator,
    RegistrarTable,
    registrar_from_flood,
)
from acp_openwrt.brski.proxy.relay import CHUNK, Admission, CircuitBook, Relay, RelayLimits
from acp_openwrt.brski.proxy.runtime import Loop
from acp_openwrt.grasp.messages import Locator
from acp_openwrt.lab.tcp_echo import serve_echo

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


def test_circuit_book_refuses_counts_and_finds_idle_circuits() -> None:
    book = CircuitBook(RelayLimits(max_connections=2, max_per_pledge=1, idle_timeout=10))
    assert book.open("eth0", "fe80::a", False, now=0.0) == "no_registrar"
    first = book.open("eth0", "fe80::a", True, now=0.0)
    assert not isinstance(first, str) and first.cid == 1
    assert book.open("eth0", "fe80::a", True, now=1.0) == "per_pledge_limit"
    second = book.open("eth1", "fe80::b", True, now=2.0)
    assert not isinstance(second, str)
    assert book.open("eth1", "fe80::c", True, now=2.0) == "limit"
    book.moved(first, 5, 7, now=4.0)
    assert book.next_idle_deadline() == 12.0
    assert book.idle(11.9) == [] and book.idle(12.0) == [second]
    book.close(second)
    book.close(second)  # twice is once
    assert book.next_idle_deadline() == 14.0
    assert book.counters() == {"refused_no_registrar": 1, "accepted": 2,
                               "refused_per_pledge_limit": 1, "refused_limit": 1,
                               "idle_closed": 1, "bytes_up": 5, "bytes_down": 7}
    assert book.admission.active == 1


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


# -- the relay on loopback (the loop stepped in this thread, an echo registrar in threads) -----


def echo_server() -> tuple[socket.socket, int]:
    lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lsock.bind(("::1", 0))
    lsock.listen(16)
    return lsock, serve_echo(lsock)


def listener() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.bind(("::1", 0))
    sock.listen(16)
    return sock


class Bench:
    """A Relay on ::1 towards an echo server (or towards nothing)."""

    def __init__(self, limits: RelayLimits, registrar: bool = True) -> None:
        self.server, echo_port = echo_server()
        self.regs = [RegistrarLocator("::1", echo_port)] if registrar else []
        self.loop = Loop()
        self.relay = Relay(self.loop, limits, lambda: list(self.regs))
        _, self.port = self.relay.add_listener("lo", listener())
        self.clients: list[socket.socket] = []

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("::1", self.port), 2)
        sock.setblocking(False)
        self.clients.append(sock)
        return sock

    def exchange(self, sock: socket.socket, payload: bytes, within: float = 5) -> bytes:
        """Send payload while the relay runs; what came back (b'' if closed or reset)."""
        out, got = memoryview(payload), bytearray()
        ended = []

        def step() -> bool:
            nonlocal out
            try:
                if out:
                    out = out[sock.send(out):]
            except BlockingIOError:
                pass
            except OSError:
                ended.append(True)
            try:
                data = sock.recv(65536)
                if not data:
                    ended.append(True)
                got.extend(data)
            except BlockingIOError:
                pass
            except OSError:
                ended.append(True)
            return bool(ended) or len(got) >= len(payload)
        assert self.loop.run_until(step, within), "no answer"
        return bytes(got)

    def wait_closed(self, sock: socket.socket, within: float = 3) -> float:
        """Seconds until the relay closed or reset this client."""
        start = time.monotonic()

        def closed() -> bool:
            try:
                return sock.recv(10) == b""
            except BlockingIOError:
                return False
            except OSError:
                return True
        assert self.loop.run_until(closed, within), "still open"
        return time.monotonic() - start

    def refused(self) -> bool:
        """True when the proxy resets or closes the connection without relaying anything."""
        return self.exchange(self.connect(), b"ping", 2) == b""

    def close(self) -> None:
        self.relay.close()
        assert self.loop.watched == 0
        for sock in self.clients:
            sock.close()
        self.server.close()


@pytest.fixture
def bench_for() -> Iterator[Callable[..., Bench]]:
    made: list[Bench] = []

    def make(limits: RelayLimits, registrar: bool = True) -> Bench:
        made.append(Bench(limits, registrar))
        return made[-1]
    yield make
    for bench in made:
        bench.close()


def test_bytes_reach_the_registrar_and_come_back_with_counters(bench_for) -> None:
    bench = bench_for(RelayLimits())
    relay = bench.relay
    client = bench.connect()
    payload = bytes(range(256)) * 400  # 100 KiB, several chunks
    assert bench.exchange(client, payload) == payload
    status = relay.status()
    assert len(status["connections"]) == 1
    conn = status["connections"][0]
    assert conn["bytes_up"] == conn["bytes_down"] == len(payload)
    client.shutdown(socket.SHUT_WR)  # clean close from the pledge side: the echo side closes too
    assert bench.exchange(client, b"", 5) == b""
    assert bench.loop.run_until(lambda: not relay.status()["connections"], 2)
    totals = relay.counters()
    assert totals["bytes_up"] == totals["bytes_down"] == len(payload)
    assert totals["accepted"] == 1


def test_a_slow_pledge_holds_back_the_registrar_side(bench_for) -> None:
    """Backpressure: what the pledge does not read stays in the kernel, not in the proxy."""
    bench = bench_for(RelayLimits())
    client = bench.connect()
    payload = os.urandom(8 * 1024 * 1024)
    out = memoryview(payload)
    deadline = time.monotonic() + 1
    while out and time.monotonic() < deadline:  # send what fits; never read
        try:
            out = out[client.send(out):]
        except BlockingIOError:
            pass
        bench.loop.run_once(0.01)
        for circuit in bench.relay.book.circuits.values():  # the proxy holds a chunk at most
            assert len(circuit.up_buf) <= CHUNK and len(circuit.down_buf) <= CHUNK
    got = bytearray()  # now read: everything arrives, in order

    def step() -> bool:
        nonlocal out
        try:
            if out:
                out = out[client.send(out):]
        except BlockingIOError:
            pass
        try:
            got.extend(client.recv(1 << 20))
        except BlockingIOError:
            pass
        return len(got) >= len(payload)
    assert bench.loop.run_until(step, 20)
    assert got == payload


def test_no_registrar_means_refused(bench_for) -> None:
    bench = bench_for(RelayLimits(), registrar=False)
    assert bench.refused()
    assert bench.relay.counters().get("refused_no_registrar") == 1
    assert bench.relay.counters().get("accepted", 0) == 0


def test_registrar_unreachable_means_refused(bench_for) -> None:
    bench = bench_for(RelayLimits())
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as unused:
        unused.bind(("::1", 0))
        bench.regs[:] = [RegistrarLocator("::1", unused.getsockname()[1])]  # nobody listens
        assert bench.refused()
    assert bench.relay.counters().get("refused_registrar_unreachable") == 1


def test_the_next_registrar_is_tried(bench_for) -> None:
    bench = bench_for(RelayLimits())
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as unused:
        unused.bind(("::1", 0))
        bench.regs.insert(0, RegistrarLocator("::1", unused.getsockname()[1]))
        assert bench.exchange(bench.connect(), b"hi") == b"hi"
    conn = bench.relay.status()["connections"][0]
    assert conn["registrar"] == bench.regs[1].to_dict()


def test_per_pledge_and_global_limits(bench_for) -> None:
    bench = bench_for(RelayLimits(max_connections=8, max_per_pledge=2))
    conns = []
    for _ in range(2):
        sock = bench.connect()
        assert bench.exchange(sock, b"x") == b"x"
        conns.append(sock)
    assert bench.refused()  # third from the same address
    assert bench.relay.counters().get("refused_per_pledge_limit") == 1
    conns[0].close()  # the slot comes back once the circuit is gone
    assert bench.loop.run_until(lambda: len(bench.relay.status()["connections"]) == 1, 2)
    assert bench.exchange(bench.connect(), b"y") == b"y"

    bench = bench_for(RelayLimits(max_connections=1, max_per_pledge=1))
    assert bench.exchange(bench.connect(), b"x") == b"x"
    assert bench.refused()
    assert bench.relay.counters().get("refused_limit") == 1


def test_idle_circuit_is_closed(bench_for) -> None:
    bench = bench_for(RelayLimits(idle_timeout=0.4))
    client = bench.connect()
    assert bench.exchange(client, b"x") == b"x"
    waited = bench.wait_closed(client)
    assert 0.3 <= waited < 1.5, waited
    assert bench.relay.counters().get("idle_closed") == 1
    assert bench.relay.status()["connections"] == []


def test_a_reset_on_one_side_resets_the_other(bench_for) -> None:
    bench = bench_for(RelayLimits())
    client = bench.connect()
    assert bench.exchange(client, b"x") == b"x"
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    bench.clients.remove(client)
    assert bench.loop.run_until(lambda: not bench.relay.status()["connections"], 2)


def test_removing_a_listener_stops_accepting(bench_for) -> None:
    bench = bench_for(RelayLimits())
    client = bench.connect()
    assert bench.exchange(client, b"x") == b"x"
    assert [x["port"] for x in bench.relay.listeners()] == [bench.port]
    bench.relay.remove_listener("lo")
    assert bench.relay.listeners() == []
    bench.wait_closed(client)  # its circuits end with the link
    with pytest.raises(OSError):
        socket.create_connection(("::1", bench.port), 2)


def test_fifty_circuits_at_once(bench_for) -> None:
    bench = bench_for(RelayLimits(max_connections=64, max_per_pledge=64))
    for i in range(50):
        assert bench.exchange(bench.connect(), b"%d" % i) == b"%d" % i
    assert len(bench.relay.status()["connections"]) == 50
    assert bench.loop.watched == 1 + 100  # the listener, both sides of each circuit


def test_a_failing_callback_is_logged_and_the_loop_goes_on(capsys) -> None:
    loop = Loop()
    ran = []
    loop.call_later(0, lambda: 1 / 0)
    loop.call_later(0.01, lambda: ran.append(True))
    assert loop.run_until(lambda: ran, 1)
    assert "internal error at test_brski_proxy_relay.py" in capsys.readouterr().err


def test_loop_timers_come_in_order_and_cancelled_ones_never() -> None:
    loop = Loop()
    seen: list[int] = []
    for delay, tag in ((0.03, 3), (0.01, 1), (0.02, 2)):
        loop.call_later(delay, lambda tag=tag: seen.append(tag))
    loop.call_later(0.015, lambda: seen.append(99)).cancel()
    assert loop.run_until(lambda: len(seen) == 3, 1)
    loop.run_once(0.05)
    assert seen == [1, 2, 3]
