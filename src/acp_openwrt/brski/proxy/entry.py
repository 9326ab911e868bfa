"""How acpd starts the join proxy process: `python3 -S -m acp_openwrt.brski.proxy.entry ARGS`.

The relay is protocol-blind and never speaks TLS, and it runs on its own small loop
(runtime.py), so the process needs neither ssl nor asyncio nor the site module: it loads C
modules and this package only (tests/unit/test_brski_layout.py lists them). ssl is blocked
here as well, so that nothing can pull OpenSSL in by accident.
"""
from __future__ import annotations

import sys


def run() -> int:
    if "ssl" not in sys.modules:  # None in sys.modules: import ssl -> ImportError
        sys.modules["ssl"] = None  # type: ignore[assignment]
    from .process import main
    return main()


if __name__ == "__main__":
    sys.exit(run())
