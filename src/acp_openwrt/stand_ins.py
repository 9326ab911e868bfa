"""Stand-ins for modules that a library imports but acpd never uses, for its memory budget.

Some of the libraries acpd runs on import a heavy module at import time for a feature acpd
does not use: pyroute2 0.9 imports unittest (to make one `unittest.mock.Mock()`, the dummy queue
of its synchronous IPRSocket) and ssl (for its TLS probe); cryptography imports hashlib (for
SubjectKeyIdentifier.from_public_key) and hmac (constant-time compare), which load OpenSSL's
libcrypto beside cryptography's own (3.6 MB of RSS on x86-64). `install({module: imported})`
puts a finder on sys.meta_path that, while `module` executes, has a stand-in in sys.modules
for each of its `imported`: a `LazyModule` imports the real module at its first attribute (and
from then on is a view of it); `unittest`'s stand-in has a lazy `mock` whose `Mock` makes the
real Mock when first used. Each stand-in is gone from sys.modules as soon as the module has
executed, so any later import anywhere is the real module; if the real one was imported
already, nothing is stood in. Only acpd's entry point installs any (pyroute2_lean.py,
acpd.main).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

# cryptography (41 to 48): what its x509 and primitives modules import at import time and use
# only for building certificates and comparing MACs, not for the parsing and signature checks
# of an enrolled node's steady state.
CRYPTOGRAPHY = {"cryptography.x509.extensions": ("hashlib",),
                "cryptography.hazmat.primitives.constant_time": ("hmac",),
                # RFC822Name(value) checks a new name with email.utils.parseaddr; parsed names
                # do not (0.3 MB: email's charset, quoting, calendar...)
                "cryptography.x509.general_name": ("email.utils",)}
# Functions that a module takes from a stood-in module by name (`from email.utils import
# parseaddr`): the stand-in holds a function that imports the real module when called.
FUNCTIONS = {"email.utils": ("parseaddr",),
             # pyroute2's config keeps these as its MpPipe, MpQueue, MpProcess (for its
             # fork-based NetNS, which acpd does not use: netns.py)
             "multiprocessing": ("Pipe", "Queue", "Process")}
# Values a module takes from a stood-in module by name and only calls, indexes or iterates
# later (pyroute2 keeps tcmsg, its traffic-control message class, in its rtnl marshal's map
# and its plugins dict for IPRoute.tc(), which acpd never calls): a LazyValue.
VALUES = {"pyroute2.netlink.rtnl.tcmsg": ("tcmsg", "plugins")}


class LazyModule(types.ModuleType):
    """A module imported at its first attribute; each attribute read is kept."""

    def _real(self) -> types.ModuleType:
        if sys.modules.get(self.__name__) is self:  # used while still standing in
            del sys.modules[self.__name__]
        return importlib.import_module(self.__name__)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            # what the import system asks (`from email.utils import x` looks for __path__),
            # not a use: answered from the real module only once something imported it
            real = sys.modules.get(self.__name__)
            if real is None or real is self:
                raise AttributeError(name)
            return getattr(real, name)
        value = getattr(self._real(), name)
        self.__dict__[name] = value
        return value


def _lazy_function(module: LazyModule, name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(module._real(), name)(*args, **kwargs)
    call.__name__ = call.__qualname__ = name
    return call


class LazyValue:
    """`name` of a lazy module, imported when first called, indexed, iterated or read."""

    def __init__(self, module: LazyModule, name: str) -> None:
        self.__dict__["_where"] = (module, name)

    def _real(self) -> Any:
        module, name = self.__dict__["_where"]
        return getattr(module._real(), name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self._real()[key]

    def __contains__(self, key: Any) -> bool:
        return key in self._real()

    def __iter__(self) -> Any:
        return iter(self._real())

    def __len__(self) -> int:
        return len(self._real())


class LazyMock:
    """unittest.mock.Mock(*args, **kwargs), made when first used."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_lazy"] = (args, kwargs, None)

    def _real(self) -> Any:
        args, kwargs, real = self.__dict__["_lazy"]
        if real is None:  # the library's import, on its behalf (not a dependency of acp's own)
            real = importlib.import_module("unittest.mock").Mock(*args, **kwargs)
            self.__dict__["_lazy"] = (args, kwargs, real)
        return real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._real(), name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)


def stand_in(name: str) -> types.ModuleType:
    if name == "unittest":  # `from unittest import mock`: a lazy mock, whose Mock is lazy too
        module = types.ModuleType("unittest")
        mock = LazyModule("unittest.mock")
        mock.Mock = LazyMock  # type: ignore[attr-defined]
        module.mock = mock  # type: ignore[attr-defined]
        return module
    lazy = LazyModule(name)
    for function in FUNCTIONS.get(name, ()):
        setattr(lazy, function, _lazy_function(lazy, function))
    for value in VALUES.get(name, ()):
        setattr(lazy, value, LazyValue(lazy, value))
    return lazy


class _WithStandIns:  # a loader (importlib.abc.Loader's protocol)
    """The module's own loader, run with stand-ins in sys.modules for what it imports."""

    def __init__(self, loader: Any, imported: Sequence[str]) -> None:
        self.loader = loader
        self.imported = imported

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        placed = {name: stand_in(name) for name in self.imported if name not in sys.modules}
        sys.modules.update(placed)
        for name, placeholder in placed.items():
            # `import ctypes.util` binds `ctypes` and reads `.util` off it later: the parent
            # holds the stand-in until the real submodule is imported (which replaces it)
            parent, _, child = name.rpartition(".")
            if parent and not hasattr(importlib.import_module(parent), child):
                setattr(sys.modules[parent], child, placeholder)
        try:
            self.loader.exec_module(module)
        finally:
            for name, placeholder in placed.items():
                if sys.modules.get(name) is placeholder:
                    del sys.modules[name]

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, ...: the real one's
        return getattr(self.loader, name)


class StandInFinder:  # a meta path finder (the protocol)
    """Finds nothing itself: for the modules it knows it asks the finders after it and wraps
    the loader."""

    def __init__(self) -> None:
        self.stand_ins: dict[str, tuple[str, ...]] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        imported = self.stand_ins.get(fullname)
        if imported is None:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _WithStandIns(spec.loader, imported)
                return spec
        return None


def install(stand_ins: Mapping[str, Sequence[str]]) -> None:
    """While each module named executes (imported from now on), the modules it imports that
    are named with it are stand-ins."""
    finder = next((f for f in sys.meta_path if isinstance(f, StandInFinder)), None)
    if finder is None:
        finder = StandInFinder()
        sys.meta_path.insert(0, finder)
    for module, imported in stand_ins.items():
        finder.stand_ins[module] = tuple(imported)
