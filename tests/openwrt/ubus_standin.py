"""A stand-in ubus object, served by python-ubus 0.1.3 (the binding OpenWrt ships as python3-ubus).

Run by the `ubus_object` fixture (tests/openwrt/conftest.py) with the userland's PYTHONPATH:

    python3 ubus_standin.py SOCKET NAME SPEC_JSON LOG

SPEC_JSON maps each method to {"signature": {arg: "STRING" | "INT32" | "TABLE" | ...},
"reply": {...}}. Each call is appended to LOG as one JSON line {"method", "args"} before the
reply goes out, so a test can see exactly what arrived (uhttpd's ubus_rpc_session included).

python-ubus refuses (INVALID_ARGUMENT) any argument the signature does not declare and treats
every declared one as mandatory. libubus's uloop catches SIGTERM and SIGINT while `loop()` runs
and only ends that loop slice, so this process is stopped with SIGKILL.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import ubus  # python-ubus, from the userland's PYTHONPATH


def _handler(method: str, reply: dict[str, Any], log: str) -> Callable[[Any, Any], None]:
    def handle(request: Any, data: Any) -> None:
        with open(log, "a", encoding="utf-8") as stream:
            stream.write(json.dumps({"method": method, "args": data}) + "\n")
        request.reply(reply)
    return handle


def main(argv: list[str]) -> int:
    socket_path, name, spec_text, log = argv
    spec: dict[str, dict[str, Any]] = json.loads(spec_text)
    methods = {}
    for method, entry in spec.items():
        signature = {arg: getattr(ubus, f"BLOBMSG_TYPE_{kind}")
                     for arg, kind in (entry.get("signature") or {}).items()}
        reply = entry.get("reply") or {"object": name, "method": method}
        methods[method] = {"signature": signature, "method": _handler(method, reply, log)}
    ubus.connect(socket_path=socket_path)
    ubus.add(name, methods)
    print("ready", flush=True)
    while True:
        ubus.loop(250)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
