"""pyroute2 without its package `__init__`, for acpd's memory budget.

`import pyroute2` (and so every `from pyroute2.x import y`) first runs the package's
`__init__`, which imports nearly all of pyroute2: NDB and IPDB (with sqlite3), nftables,
ipset, nl80211, plan9, psutil, ... about 200 modules and 6 MB of RSS that acpd never uses.
acpd needs IPRoute, the netns helpers, the netlink exceptions and the rtnl marshal.

`install()` puts a stand-in for the package into sys.modules before anything imports it:
submodules still load from the real package directory, `pyroute2.IPRoute` (and its siblings)
resolve on first use, and any other name runs the real `__init__` once, so code that wants
more of pyroute2 gets the very same objects as before. Only acpd's entry point calls it; a
library import of acp_openwrt leaves pyroute2 alone.

It also spares acpd two imports pyroute2 0.9 makes for features acpd never uses: unittest
(1.8 MB; netlink.rtnl.iprsocket makes one `unittest.mock.Mock()` at import, the dummy message
queue of its synchronous IPRSocket) and ssl (netlink.rtnl.probe_msg, for its TLS probe; acpd
imports ssl only for BRSKI work, asyncio_lean.py). While such a module executes, the module it
imports is a stand-in in sys.modules: `unittest.mock.Mock` makes the real Mock on first use,
and the ssl stand-in imports the real ssl at its first attribute. The stand-ins are gone from
sys.modules right after, so any later import is the real module.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

PACKAGE = "pyroute2"
# pyroute2 modules and the modules they import only for what acpd never does
STAND_INS = {"pyroute2.netlink.rtnl.iprsocket": "unittest",
             "pyroute2.netlink.rtnl.probe_msg": "ssl"}
# Names the stand-in resolves without the full package: where each lives on Linux.
LAZY_NAMES = {name: "pyroute2.iproute.linux"
              for name in ("IPRoute", "AsyncIPRoute", "RawIPRoute", "ChaoticIPRoute", "IPBatch",
                           "NetNS")}
LAZY_NAMES.update({name: "pyroute2.netlink.exceptions"
                   for name in ("NetlinkError", "NetlinkDecodeError", "NetlinkDumpInterrupted",
                                "ChaoticException")})


def install() -> bool:
    """Put the lean pyroute2 into sys.modules; False if pyroute2 is already imported or
    missing (nothing changes then)."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return False
    module = types.ModuleType(PACKAGE, __doc__)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = PACKAGE
    full_loaded = False

    def __getattr__(name: str) -> Any:
        nonlocal full_loaded
        if name == "__version__":
            return importlib.import_module("pyroute2.config.version").__version__
        if name.startswith("__") and name != "__all__":
            raise AttributeError(name)
        if importlib.machinery.PathFinder.find_spec(f"{PACKAGE}.{name}", module.__path__):
            # a submodule: AttributeError makes `from pyroute2 import netns` import it
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r} (yet)")
        where = LAZY_NAMES.get(name)
        if where is not None:
            importlib.import_module("pyroute2.config.log")  # pyroute2's logger, as __init__ does
            value = getattr(importlib.import_module(where), name, None)
            if value is not None:
                setattr(module, name, value)
                return value
            # Not there in this pyroute2 (0.7.9, OpenWrt 24.10: NetNS lives elsewhere, no
            # AsyncIPRoute): the real __init__ below decides.
        if not full_loaded:
            full_loaded = True
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            if name in module.__dict__:
                return module.__dict__[name]
        raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[PACKAGE] = module
    sys.meta_path.insert(0, _StandInFinder())
    return True


class LazyMock:
    """unittest.mock.Mock(*args, **kwargs), made when first used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_lazy"] = (args, kwargs, None)

    def _real(self) -> Any:
        args, kwargs, real = self.__dict__["_lazy"]
        if real is None:  # pyroute2's import, on its behalf (not a dependency of acp's own)
            real = importlib.import_module("unittest.mock").Mock(*args, **kwargs)
            self.__dict__["_lazy"] = (args, kwargs, real)
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)


class LazyModule(types.ModuleType):
    """A module imported at its first attribute."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module(self.__name__), name)


def _stand_in(name: str) -> types.ModuleType:
    if name == "unittest":
        stand_in = types.ModuleType("unittest")
        mock = types.ModuleType("unittest.mock")
        mock.Mock = LazyMock  # type: ignore[attr-defined]
        stand_in.mock = mock  # type: ignore[attr-defined]
        return stand_in
    return LazyModule(name)


class _WithStandIn(importlib.abc.Loader):
    """The module's own loader, run with a stand-in in sys.modules for what it imports."""

    def __init__(self, loader: Any, imported: str) -> None:
        self.loader = loader
        self.imported = imported

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        if self.imported in sys.modules:  # already paid for: nothing to spare
            self.loader.exec_module(module)
            return
        stand_in = sys.modules[self.imported] = _stand_in(self.imported)
        try:
            self.loader.exec_module(module)
        finally:
            if sys.modules.get(self.imported) is stand_in:
                del sys.modules[self.imported]

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: the real one's
        return getattr(self.loader, name)


class _StandInFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for STAND_INS it asks the finders after it and wraps the loader."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        imported = STAND_INS.get(fullname)
        if imported is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _WithStandIn(spec.loader, imported)
                return spec
        return None
