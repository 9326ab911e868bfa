"""The bare-socket baseline of grasp_io.py's negotiation figure: the same three CBOR messages
(M_REQ_NEG, M_NEGOTIATE, M_END, byte for byte what the GRASP run sends) over a fresh TCP
connection each, between two plain Python processes with blocking sockets. Standard library
only: no GRASP code, no asyncio, no decoding (each side knows the lengths it waits for).

    bare_negotiation.py responder PORT CPU NEGOTIATE_HEX REQ_LEN END_LEN
        listens on [::]:PORT, prints "ready", then answers connections until killed
    bare_negotiation.py initiator HOST PORT CPU REQ_HEX END_HEX NEGOTIATE_LEN
        prints "ready"; for each line N on stdin runs N exchanges and prints their durations
        (seconds, a JSON list) on one line; ends at end of input

CPU -1: no pinning. grasp_io.py starts both inside the namespaces (and on the CPUs) of its GRASP
initiator and responder.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time


def _pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})


def _recv_exact(sock: socket.socket, n: int) -> bool:
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            return False
        n -= len(chunk)
    return True


def responder(port: int, cpu: int, negotiate: bytes, req_len: int, end_len: int) -> None:
    _pin(cpu)
    lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("::", port))
    lsock.listen(64)
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


if __name__ == "__main__":
    role, args = sys.argv[1], sys.argv[2:]
    if role == "responder":
        responder(int(args[0]), int(args[1]), bytes.fromhex(args[2]), int(args[3]), int(args[4]))
    elif role == "initiator":
        initiator(args[0], int(args[1]), int(args[2]), bytes.fromhex(args[3]),
                  bytes.fromhex(args[4]), int(args[5]))
    else:
        raise SystemExit(__doc__)
