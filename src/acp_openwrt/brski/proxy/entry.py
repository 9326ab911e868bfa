"""How acpd starts the join proxy process: `python3 -S -m acp_openwrt.brski.proxy.entry ARGS`.

The relay is protocol-blind and never speaks TLS, so it runs without the ssl module: asyncio
then works as on a Python built without ssl, and the proxy carries no OpenSSL (about 4.5 MB of
RSS per node, measured with bench/acpd_memory.py). Only this entry point does it; importing
`acp_openwrt.brski.proxy.process` elsewhere (tests, acpd) leaves ssl alone.
"""
from __future__ import annotations

import sys


def run() -> int:
    if "asyncio" not in sys.modules:
        if "ssl" not in sys.modules:  # None in sys.modules: import ssl -> ImportError
            sys.modules["ssl"] = None  # type: ignore[assignment]
    from .process import main
    return main()


if __name__ == "__main__":
    sys.exit(run())
