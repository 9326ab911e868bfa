"""The control API: JSON lines over a Unix socket (acpctl, the ubus bridge and LuCI are views).

Request: one JSON object per line, `{"cmd": "<name>", ...arguments}`.
Reply: one JSON object per line, `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
"""
from __future__ import annotations

from .client import ControlClientError, request
from .server import ControlServer, Handler, RequestError

__all__ = ["ControlClientError", "ControlServer", "Handler", "RequestError", "request"]
