"""The bare-socket baseline of grasp_io.py's negotiation figure: the same three CBOR messages
(M_REQ_NEG, M_NEGOTIATE, M_END, byte for byte what the GRASP run sends) over a fresh TCP
connection each, between two plain Python processes with blocking sockets. Standard library
only: no GRASP code, no asyncio, no decoding (each side knows the lengths it waits for).

    bare_negotiation.py responder PORT CPU NEGOTIATE_HEX REQ_LEN END_LEN
        listens on [::]:PORT, prints "ready", then answers connections until killed
    bare_negotiation.py initiator HOST PORT CPU REQ_HEX END_HEX NEGOTIATE_LEN
        prints "ready"; for each line N on stdin runs N exchanges and prints their durations
        (seconds, a JSON list) on one line; ends at end of input

    bare_negotiation.py async-responder PORT CPU NEGOTIATE_HEX REQ_LEN END_LEN
    bare_negotiation.py async-initiator HOST PORT CPU REQ_HEX END_HEX NEGOTIATE_LEN
        the same exchange on an asyncio event loop, as thin as such a loop allows: non-blocking
        sockets driven by add_reader, and each side's answer written by a coroutine woken
        through a Future (the shape of any asyncio service whose callers await an API: one
        loop turn per wake-up), still no GRASP code and no decoding. This is the floor an
        asyncio implementation stands on; grasp_io.py reports GRASP against it as well.
    bare_negotiation.py callback-responder ... / callback-initiator ...   (same arguments)
        the event loop alone: each answer written inside the reader's callback, no coroutine,
        no Future, no Queue: what asyncio costs before any API.

CPU -1: no pinning. grasp_io.py starts both inside the namespaces (and on the CPUs) of its GRASP
initiator and responder.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
import time
from typing import Any


def _pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def _listening(port: int, blocking: bool) -> socket.socket:
    lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("::", port))
    lsock.listen(64)
    lsock.setblocking(blocking)
    return lsock


def _accepted(lsock: socket.socket) -> socket.socket | None:
    """The next connection, non-blocking with TCP_NODELAY; None if there is none yet."""
    try:
        conn, _ = lsock.accept()
    except (BlockingIOError, InterruptedError):
        return None
    conn.setblocking(False)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _recv_exact(sock: socket.socket, n: int) -> bool:
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            return False
        n -= len(chunk)
    return True


def responder(port: int, cpu: int, negotiate: bytes, req_len: int, end_len: int) -> None:
    _pin(cpu)
    lsock = _listening(port, blocking=True)
    print("ready", flush=True)
    while True:
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _recv_exact(conn, req_len):
            conn.sendall(negotiate)
            _recv_exact(conn, end_len)
        conn.close()


def initiator(host: str, port: int, cpu: int, request: bytes, end: bytes,
              negotiate_len: int) -> None:
    _pin(cpu)
    addr = (host, port, 0, 0)
    print("ready", flush=True)
    for line in sys.stdin:
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect(addr)
            sock.sendall(request)
            if not _recv_exact(sock, negotiate_len):
                raise SystemExit("responder closed early")
            sock.sendall(end)
            sock.close()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


class _Reader:
    """Collects ``want`` bytes from a non-blocking socket, then resolves ``done`` (or fails it
    on a close or an error)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, want: int) -> None:
        self.loop, self.sock, self.want = loop, sock, want
        self.done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._end(exc)
            return
        if not data:
            self._end(ConnectionError("closed early"))
            return
        self.want -= len(data)
        if self.want <= 0:
            self._end(None)

    def _end(self, exc: BaseException | None) -> None:
        self.loop.remove_reader(self.sock.fileno())
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


async def _send(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    """At once when the socket takes it (no loop turn); else through the loop's writer."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    if sent < len(data):
        await loop.sock_sendall(sock, data[sent:])


async def _async_responder(port: int, negotiate: bytes, req_len: int, end_len: int) -> None:
    loop = asyncio.get_running_loop()
    lsock = _listening(port, blocking=False)
    accepted: asyncio.Queue[socket.socket] = asyncio.Queue()

    def accept() -> None:
        conn = _accepted(lsock)
        if conn is None:
            return
        accepted.put_nowait(conn)

    async def serve(conn: socket.socket) -> None:
        try:
            await _Reader(loop, conn, req_len).done      # the request, then the answer
            await _send(loop, conn, negotiate)
            await _Reader(loop, conn, end_len).done
        except OSError:
            pass
        finally:
            conn.close()

    loop.add_reader(lsock.fileno(), accept)
    print("ready", flush=True)
    while True:  # one coroutine woken per request, as an ASA awaiting listen_negotiate is
        await serve(await accepted.get())


async def _async_initiator(host: str, port: int, request: bytes, end: bytes,
                           negotiate_len: int) -> None:
    loop = asyncio.get_running_loop()
    addr = (host, port, 0, 0)
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        times = []
        for _ in range(int(line)):
            t0 = time.perf_counter()
            sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex(addr)   # over a veth the handshake is done on return
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
            await _send(loop, sock, request)
            await _Reader(loop, sock, negotiate_len).done
            sock.send(end)
            sock.close()
            times.append(time.perf_counter() - t0)
        print(json.dumps(times), flush=True)


async def _callback_responder(port: int, negotiate: bytes, req_len: int, end_len: int) -> None:
    loop = asyncio.get_running_loop()
    lsock = _listening(port, blocking=False)

    def accept() -> None:
        conn = _accepted(lsock)
        if conn is None:
            return
        want = [req_len, end_len]

        def readable() -> None:
            try:
                data = conn.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            want[0] -= len(data)
            if data and want[0] <= 0 and len(want) == 2:
                want.pop(0)
                conn.send(negotiate)
            elif not data or want[0] <= 0:
                loop.remove_reader(conn.fileno())
                conn.close()

        loop.add_reader(conn.fileno(), readable)

    loop.add_reader(lsock.fileno(), accept)
    print("ready", flush=True)
    await loop.create_future()  # until killed


async def _callback_batch(loop: asyncio.AbstractEventLoop, addr: tuple[str, int, int, int],
                          request: bytes, end: bytes, negotiate_len: int,
                          runs: int) -> list[float]:
    """``runs`` exchanges one after the other, each started by the previous one's callback."""
    times: list[float] = []
    finished: asyncio.Future[None] = loop.create_future()

    def exchange() -> None:
        t0 = time.perf_counter()
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sock.connect_ex(addr)
        sock.send(request)   # over a veth the handshake is done when connect returns
        want = [negotiate_len]

        def readable() -> None:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            want[0] -= len(data)
            if data and want[0] > 0:
                return
            if data:
                sock.send(end)
            loop.remove_reader(sock.fileno())
            sock.close()
            if not data:
                finished.set_exception(ConnectionError("responder closed early"))
                return
            times.append(time.perf_counter() - t0)
            if len(times) < runs:
                exchange()
            else:
                finished.set_result(None)

        loop.add_reader(sock.fileno(), readable)

    exchange()
    await finished
    return times


async def _callback_initiator(host: str, port: int, request: bytes, end: bytes,
                              negotiate_len: int) -> None:
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        times = await _callback_batch(loop, (host, port, 0, 0), request, end, negotiate_len,
                                      int(line))
        print(json.dumps(times), flush=True)


RESPONDERS: dict[str, Any] = {"async-": _async_responder, "callback-": _callback_responder}
INITIATORS: dict[str, Any] = {"async-": _async_initiator, "callback-": _callback_initiator}


def main(role: str, args: list[str]) -> None:
    kind, _, side = role.rpartition("-")
    kind += "-" if kind else ""
    if side == "responder" and (kind in RESPONDERS or not kind):
        _pin(int(args[1]))
        call = (int(args[0]), bytes.fromhex(args[2]), int(args[3]), int(args[4]))
        runner = RESPONDERS.get(kind)
        if runner is None:
            responder(call[0], -1, *call[1:])
        else:
            asyncio.run(runner(*call))
    elif side == "initiator" and (kind in INITIATORS or not kind):
        _pin(int(args[2]))
        call2 = (args[0], int(args[1]), bytes.fromhex(args[3]), bytes.fromhex(args[4]),
                 int(args[5]))
        runner = INITIATORS.get(kind)
        if runner is None:
            initiator(call2[0], call2[1], -1, *call2[2:])
        else:
            asyncio.run(runner(*call2))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
