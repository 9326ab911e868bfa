"""A threaded TCP echo server on a listening socket: the registrar stand-in that join proxy
tests and benches relay to."""
from __future__ import annotations

import socket
import threading


def serve_echo(lsock: socket.socket) -> int:
    """Echo every connection accepted on `lsock` (each on a daemon thread) until it is closed;
    returns its port."""
    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def serve() -> None:
        while True:
            try:
                conn, _ = lsock.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()
    threading.Thread(target=serve, daemon=True).start()
    return int(lsock.getsockname()[1])
