"""GRASP's asyncio edge: the per-interface ff02::13 UDP sockets and the TCP connections.

Sockets are made inside the instance's network namespace (a socket stays in the namespace it
was created in) and then used from the one event loop. Nothing here knows the protocol: bytes
in, bytes out, one callback each way. A receive path never raises: errors are counted.

* ``MulticastSocket``: UDP 7017 on one interface, joined to ff02::13 there (MLD join with the
  ifindex), bound to the device so the receiving interface is known, hop limit 1, no loopback
  of our own sends. Reads are batched (up to ``BATCH`` datagrams per wake-up).
* ``StreamConnection``: one TCP connection (accepted or opened) on a non-blocking socket
  watched with add_reader/add_writer, with a bounded write buffer; what it reads goes to the
  engine as read (``Engine.receive_stream_data`` frames it).
* ``open_listener``: the TCP listener; the service accepts on it from an add_reader callback.
* ``SocketFactory``: creates sockets in the namespace; keeps a few spare TCP sockets made in
  advance, so opening a unicast exchange does not wait for a thread to enter the namespace.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

from . import constants as c

_log = logging.getLogger(__name__)

BATCH = 64  # datagrams read per wake-up before the engine's outputs are pumped
RCVBUF = 1 << 20
MAX_WRITE_BUFFER = 256 * 1024
_GROUP = socket.inet_pton(socket.AF_INET6, c.ALL_GRASP_NEIGHBORS_V6)
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def in_namespace(namespace: str | None, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) inside ``namespace`` (None: the caller's namespace), on a worker thread."""
    if namespace is None:
        return fn(*args)
    from ..netns import call_in
    return call_in(namespace, fn, *args)


def interface_facts(ifname: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(ifindex, link-local address) of ``ifname`` in the current namespace; waits for the
    address to be usable (non-tentative). Call inside the namespace."""
    from pyroute2 import IPRoute

    from ..netns import wait_link_local
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise OSError(f"no interface {ifname}")
        index = int(found[0])
        address = wait_link_local(ipr, index, timeout)
    return index, socket.inet_pton(socket.AF_INET6, address)


def open_multicast(ifname: str, index: int, port: int = c.GRASP_LISTEN_PORT) -> socket.socket:
    """The UDP socket of one interface (call inside the namespace)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.bind(("::", port))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                        _GROUP + struct.pack("@I", index))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_peer_socket(ifname: str, index: int, peer: str,
                     port: int = c.GRASP_LISTEN_PORT) -> socket.socket:
    """A UDP socket that receives only ``peer``'s datagrams to ff02::13 on one interface (call
    inside the namespace). Bound to the group and connected to the peer (port 0: any source
    port), it has a receive queue of its own, so a flood from other (spoofed) sources that
    overflows the interface's socket cannot crowd this neighbour out. The interface's socket
    still gets a copy of each datagram; the engine drops the later copy as a duplicate."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((c.ALL_GRASP_NEIGHBORS_V6, port, 0, index))
        sock.connect((peer, 0, 0, index))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listener(port: int = c.GRASP_LISTEN_PORT, backlog: int = 64) -> socket.socket:
    """The TCP listening socket (call inside the namespace)."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _tcp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


class SocketFactory:
    """TCP sockets born in the namespace, a few made ahead of need."""

    def __init__(self, namespace: str | None, spare: int = 8) -> None:
        self.namespace = namespace
        self.spare = spare
        self._pool: collections.deque[socket.socket] = collections.deque()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._refilling = False

    def _exec(self) -> concurrent.futures.ThreadPoolExecutor | None:
        if self.namespace is None:
            return None
        if self._executor is None:
            from ..netns import namespace_executor
            self._executor = namespace_executor(self.namespace)
        return self._executor

    async def tcp(self) -> socket.socket:
        if self.namespace is None:
            return _tcp_socket()
        if self._pool:
            sock = self._pool.popleft()
        else:
            sock = await asyncio.get_running_loop().run_in_executor(self._exec(), _tcp_socket)
        self._refill()
        return sock

    def take(self) -> socket.socket | None:
        """A socket now, without waiting: None when only a thread in the namespace can make
        one (the spares are used up; ``tcp()`` waits for it)."""
        if self.namespace is None:
            return _tcp_socket()
        if not self._pool:
            return None
        sock = self._pool.popleft()
        self._refill()
        return sock

    def _refill(self) -> None:
        if self._refilling or len(self._pool) > self.spare // 2 or self.namespace is None:
            return
        self._refilling = True
        loop = asyncio.get_running_loop()

        def made(fut: asyncio.Future[list[socket.socket]]) -> None:
            self._refilling = False
            if not fut.cancelled() and fut.exception() is None:
                self._pool.extend(fut.result())

        want = self.spare - len(self._pool)
        fut = loop.run_in_executor(self._exec(), lambda: [_tcp_socket() for _ in range(want)])
        fut.add_done_callback(made)

    async def prime(self) -> None:
        """Fill the pool once (at start)."""
        if self.namespace is not None:
            socks = await asyncio.get_running_loop().run_in_executor(
                self._exec(), lambda: [_tcp_socket() for _ in range(self.spare)])
            self._pool.extend(socks)

    def close(self) -> None:
        while self._pool:
            self._pool.popleft().close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


class MulticastSocket:
    """ff02::13 on one interface; ``on_batch(ifname, [(data, source-address-tuple)])``."""

    def __init__(self, ifname: str, index: int, sock: socket.socket,
                 on_batch: Callable[[str, list[tuple[bytes, Any]]], None],
                 counters: dict[str, int], max_size: int = c.GRASP_DEF_MAX_SIZE) -> None:
        self.ifname = ifname
        self.index = index
        self.sock = sock
        self._on_batch = on_batch
        self._counters = counters
        self._bufsize = max_size + 1  # one byte more, so an oversize datagram is seen as such
        self._dest = (c.ALL_GRASP_NEIGHBORS_V6, c.GRASP_LISTEN_PORT, 0, index)
        self.received = 0
        self.sent = 0
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        recvfrom = self.sock.recvfrom
        size = self._bufsize
        batch = []
        for _ in range(BATCH):
            try:
                batch.append(recvfrom(size))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._count("udp_receive_error")
                _log.debug("grasp %s: receive error %s", self.ifname, exc)
                break
        if batch:
            self.received += len(batch)
            try:
                self._on_batch(self.ifname, batch)
            except Exception:  # never out of the reader: one bad batch must not stop the socket
                self._count("receive_exception")
                _log.exception("grasp %s: datagram handling failed", self.ifname)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendto(data, self._dest)
            self.sent += 1
        except OSError as exc:
            self._count("udp_send_error")
            _log.debug("grasp %s: send failed: %s", self.ifname, exc)

    def _count(self, what: str) -> None:
        self._counters[what] = self._counters.get(what, 0) + 1

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except (RuntimeError, ValueError):
            pass
        self.sock.close()


class StreamConnection:
    """One GRASP TCP connection: bytes as read to ``on_data(conn, data)``; ``on_closed`` once
    when it ends for any reason. Data written before the socket is attached is queued.

    A non-blocking socket driven by the loop's add_reader/add_writer rather than an asyncio
    transport and protocol: a negotiation is three small messages on a fresh connection, and
    the transport machinery (a task and a waiter per accept or connect, connection_made and
    connection_lost scheduled as callbacks) cost more loop turns than the exchange itself.
    Writes go to the socket at once (a connect still in progress queues them until it is
    writable); a refused or reset connection is seen by the next read or write.
    """

    __slots__ = ("conn_id", "sock", "peer", "_fd", "_loop", "_on_data", "_on_closed",
                 "_counters", "_out", "_reading", "_writing", "_closing", "_done")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_data: Callable[[StreamConnection, bytes], None],
                 on_closed: Callable[[StreamConnection], None], counters: dict[str, int]) -> None:
        self.conn_id = 0
        self.sock: socket.socket | None = None
        self.peer: Any = None  # the peer's address tuple, for an accepted connection
        self._fd = -1
        self._loop = loop
        self._on_data = on_data
        self._on_closed = on_closed
        self._counters = counters
        self._out = bytearray()  # written, not yet taken by the socket
        self._reading = False  # add_reader is armed
        self._writing = False  # add_writer is armed
        self._closing = False
        self._done = False

    def attach(self, sock: socket.socket, read_now: bool = False,
               read_later: bool = False) -> None:
        """Drive ``sock`` (non-blocking; connected, accepted or with a connect in progress).
        ``read_now``: try a read at once (an accepted connection's first message is usually
        there already), saving a loop turn. ``read_later``: watch for reading from the next
        loop turn, so that what answers the first message (an opened connection's request,
        written right after this; an accepted one's reply, written by its ASA in the next
        turn) goes out before the loop's bookkeeping, and the peer works on it meanwhile."""
        if self._done:
            sock.close()
            return
        self.sock, self._fd = sock, sock.fileno()
        if self._out:
            self._flush()
        elif self._closing:
            self._finish()
        elif read_now:
            self._readable()
        if read_later:  # scheduled after what the read woke up
            self._loop.call_soon(self._start_reading)
        else:
            self._start_reading()

    def _start_reading(self) -> None:
        if not self._reading and self.sock is not None and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # reset, refused
            _log.debug("grasp stream %d: %s", self.conn_id, exc)
            self._finish()
            return
        if not data:  # the peer's FIN: what we still send goes out, then we close too
            self._reading = False
            self._loop.remove_reader(self._fd)
            self.close()
            return
        try:
            self._on_data(self, data)
        except Exception:  # never out of the reader
            self._counters["receive_exception"] = self._counters.get("receive_exception", 0) + 1
            _log.exception("grasp stream %d: message handling failed", self.conn_id)

    def write(self, data: bytes) -> None:
        if self._done or self._closing:
            return
        if len(self._out) > MAX_WRITE_BUFFER:
            counters = self._counters
            counters["stream_write_overflow"] = counters.get("stream_write_overflow", 0) + 1
            self.abort()
            return
        if self._out or self.sock is None:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):  # a connect in progress, or a full buffer
            sent = 0
        except OSError as exc:
            _log.debug("grasp stream %d: %s", self.conn_id, exc)
            self._finish()
            return
        if sent < len(data):
            self._out += data[sent:]
            self._want_write()

    def _want_write(self) -> None:
        if not self._writing:
            self._writing = True
            self._loop.add_writer(self._fd, self._flush)

    def _flush(self) -> None:
        sock = self.sock
        if sock is None:
            return
        if self._out:
            try:
                sent = sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                _log.debug("grasp stream %d: %s", self.conn_id, exc)
                self._finish()
                return
            del self._out[:sent]
        if self._out:
            self._want_write()
            return
        if self._writing:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if self._closing:
            self._finish()

    def close(self) -> None:
        """Close after what is queued has been sent."""
        if self._done:
            return
        self._closing = True
        if self.sock is not None and not self._out:
            self._finish()
        elif self._reading:  # nothing more is read while the rest goes out
            self._reading = False
            self._loop.remove_reader(self._fd)

    def abort(self) -> None:
        """Close at once, dropping what is queued."""
        if self.sock is None:  # not attached yet: attach() closes it
            self._closing = True
            self._out.clear()
            return
        self._finish()

    def finished(self) -> None:
        """It ended without a socket (the connect could not start)."""
        self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        self._out.clear()
        sock, self.sock = self.sock, None
        if sock is not None:
            loop = self._loop
            if not loop.is_closed():
                if self._reading:
                    loop.remove_reader(self._fd)
                if self._writing:
                    loop.remove_writer(self._fd)
            self._reading = self._writing = False
            sock.close()
        self._on_closed(self)
