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

It also spares acpd the imports pyroute2 makes for what acpd never or seldom does: unittest
(1.8 MB; 0.9's netlink.rtnl.iprsocket makes one `unittest.mock.Mock()` at import, the dummy
message queue of its synchronous IPRSocket; 0.7's lab module wants mock for its mock mode), ssl
(netlink.rtnl.probe_msg, for its TLS probe; acpd imports ssl only for BRSKI work,
asyncio_lean.py), shutil (the ping probe), multiprocessing (its fork-based NetNS), the traffic
control messages (tcmsg and its 40 plugin modules: IPRoute.tc()) and ctypes.util
(0.9 MB with the tempfile, shutil, bz2 and lzma it imports; netns finds libc with it when it
first makes or removes a namespace). While such a module
executes, the module it imports is a stand-in in sys.modules (stand_ins.py) that imports the
real one when first used; the stand-ins are gone from sys.modules right after, so any later
import is the real module.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

from .stand_ins import install as install_stand_ins

PACKAGE = "pyroute2"
# pyroute2 modules and the modules they import only for what acpd never does
STAND_INS = {"pyroute2.netlink.rtnl.iprsocket": ("unittest",),  # 0.9
             "pyroute2.lab": ("unittest",),  # 0.7: mock.MagicMock only in its mock mode
             # its TLS probe and its ping probe (shutil.which): with shutil come bz2, lzma,
             # zlib, fnmatch (0.5 MB)
             "pyroute2.netlink.rtnl.probe_msg": ("ssl", "shutil"),
             # multiprocessing (and pickle: 0.8 MB) for the fork-based NetNS and its
             # ChildProcess, which acpd does not use (netns.py works in threads)
             "pyroute2.config": ("multiprocessing",),
             "pyroute2.process": ("multiprocessing",),
             # traffic control (IPRoute.tc(); 40 modules, 0.6 MB): its message class stays in
             # the rtnl marshal's map and its plugins in the request filters, both lazy
             "pyroute2.iproute.linux": ("pyroute2.netlink.rtnl.tcmsg",),
             "pyroute2.netlink.rtnl.marshal": ("pyroute2.netlink.rtnl.tcmsg",),
             "pyroute2.requests.tc": ("pyroute2.netlink.rtnl.tcmsg",),
             # find_library('c') when a namespace is made or removed: tempfile, shutil, bz2...
             # and (0.7) pickle, for the forked child that makes a namespace: acp's netns.py
             # makes them in a thread
             "pyroute2.netns": ("ctypes.util", "pickle")}
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
    install_stand_ins(STAND_INS)
    return True
