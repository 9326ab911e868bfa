"""The control socket's client side (blocking: acpctl, the ubus bridge thread, tests)."""
from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class ControlClientError(Exception):
    """No answer (acpd not running, permission) or the node said no: one line for the operator."""


def request(path: Path | str, cmd: str, timeout: float = 10.0, **args: Any) -> Any:
    """Send one command and return its result; raise ControlClientError with a readable reason."""
    msg = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            try:
                sock.sendall(msg)
            except (BrokenPipeError, ConnectionResetError):
                pass  # a busy server answers and closes without reading: its answer is queued
            buf = b""
            while not buf.endswith(b"\n"):
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    if buf:
                        break
                    raise
                if not chunk:
                    break
                buf += chunk
    except FileNotFoundError:
        raise ControlClientError(f"{path}: no control socket (is acpd running?)") from None
    except ConnectionRefusedError:
        raise ControlClientError(f"{path}: acpd is not answering (stale socket?)") from None
    except TimeoutError:
        raise ControlClientError(f"{path}: no answer from acpd within {timeout:g} s") from None
    except OSError as exc:
        raise ControlClientError(f"{path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlClientError(f"{path}: acpd sent no valid reply") from None
    if not isinstance(reply, dict):
        raise ControlClientError(f"{path}: acpd sent no valid reply")
    if not reply.get("ok"):
        raise ControlClientError(str(reply.get("error", "request refused")))
    return reply.get("result")
