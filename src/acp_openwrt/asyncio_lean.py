"""asyncio without ssl until something needs TLS, for acpd's memory budget.

`import asyncio` imports ssl (asyncio.base_events, selector_events and sslproto each try it),
and with it OpenSSL's libssl and libcrypto and their initialisation: about 3.5 MB of RSS on
x86-64 in a process that never speaks TLS. An enrolled node speaks TLS only for the rare BRSKI
work (enrolment, renewal; the registrar's EST server and MASA client), so acpd imports asyncio
with ssl held back and lets the first `import ssl`, wherever it happens, give asyncio its ssl
support back: `install()` imports asyncio with `sys.modules["ssl"] = None` (each of those
modules then holds `ssl = None`, as on a Python built without ssl), removes that block, and
puts a finder on sys.meta_path that, when ssl is imported, loads the real module and sets it in
those asyncio modules (and sslproto's `SSLAgainErrors`, which is defined only with ssl). So
`asyncio.open_connection(..., ssl=context)` works exactly as before once the caller has
imported ssl to make its context. Only acpd's entry point calls it; a library import of
acp_openwrt leaves asyncio alone.
"""
from __future__ import annotations

import importlib.machinery
import sys
import types
from collections.abc import Sequence
from typing import Any

# The asyncio modules that `try: import ssl` at import (CPython 3.11 to 3.13).
ASYNCIO_SSL_USERS = ("asyncio.base_events", "asyncio.selector_events", "asyncio.sslproto")


def install() -> bool:
    """Import asyncio without ssl and arm the finder; False (nothing changes) if asyncio or
    ssl is already imported."""
    if "asyncio" in sys.modules or "ssl" in sys.modules:
        return False
    sys.modules["ssl"] = None  # type: ignore[assignment]  # ImportError for `import ssl`
    try:
        import asyncio  # noqa: F401
    finally:
        del sys.modules["ssl"]
    sys.meta_path.insert(0, _SslFinder())
    return True


def give_asyncio_ssl(ssl: types.ModuleType) -> None:
    """Set the real ssl module in the asyncio modules that were imported without it."""
    for name in ASYNCIO_SSL_USERS:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "ssl", ssl) is None:
            module.ssl = ssl  # type: ignore[attr-defined]
    sslproto = sys.modules.get("asyncio.sslproto")
    if sslproto is not None and not hasattr(sslproto, "SSLAgainErrors"):
        sslproto.SSLAgainErrors = (  # type: ignore[attr-defined]
            ssl.SSLWantReadError, ssl.SSLSyscallError)


class _ArmingLoader:  # a loader (importlib.abc.Loader's protocol)
    """ssl's own loader, then give_asyncio_ssl()."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self.loader.exec_module(module)
        give_asyncio_ssl(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: the real one's
        return getattr(self.loader, name)


class _SslFinder:  # a meta path finder (the protocol)
    """Finds nothing itself: for "ssl" it asks the finders after it and wraps the loader."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "ssl":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)  # once: ssl is imported only once
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ArmingLoader(spec.loader)
                return spec
        return None
