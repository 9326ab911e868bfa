"""The join proxy's process stays apart: it runs unprivileged next to strangers' connections,
so it imports nothing from acpd, the pledge or the registrar (nor anything they pull in)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from acp_openwrt.brski.proxy.part import PACKAGE_ROOT

pytestmark = pytest.mark.unit

PROXY_PROCESS = ("acp_openwrt.brski.proxy.entry", "acp_openwrt.brski.proxy.process")
ALLOWED = {"acp_openwrt", "acp_openwrt.brski", "acp_openwrt.brski.proxy",
           "acp_openwrt.brski.proxy.entry", "acp_openwrt.brski.proxy.process",
           "acp_openwrt.brski.proxy.handover", "acp_openwrt.brski.proxy.registrars",
           "acp_openwrt.brski.proxy.relay", "acp_openwrt.brski.proxy.sandbox",
           "acp_openwrt.brski.proxy.runtime"}
# Everything else the process may load: C modules (built in or extensions, whatever this
# interpreter's build makes of them) and the few small pure-Python ones that os needs anyway.
# No asyncio, selectors, logging, argparse, json, ipaddress, dataclasses, typing, enum, re or
# socket.py: each is 0.5 to 3 MB of RSS in a process whose floor is the interpreter's own
# 8.2 MB (docs/brski-proxy.md).
PURE_PYTHON_ALLOWED = {"__future__", "_collections_abc", "genericpath", "os", "os.path",
                       "posixpath", "stat"}


def imported_by(modules: tuple[str, ...]) -> dict[str, bool]:
    """What importing `modules` adds, in `python3 -S` as acpd starts the process: each name
    and whether it is Python code (False: a C module, built in or an extension)."""
    code = ("import sys\n"
            "before = set(sys.modules)\n"
            f"for m in {list(modules)!r}: __import__(m)\n"
            "for k, v in sorted(sys.modules.items()):\n"
            "    if v is not None and k not in before:\n"
            "        origin = getattr(getattr(v, '__spec__', None), 'origin', None) or ''\n"
            "        c = origin in ('built-in',) or origin.endswith('.so')\n"
            "        print(k, 'c' if c else 'py')")
    env = {"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True,
                         text=True, env=env, cwd="/").stdout
    return {name: kind == "py" for name, kind in (line.split() for line in out.splitlines())}


def test_the_join_proxy_process_imports_only_its_own_package() -> None:
    loaded = imported_by(PROXY_PROCESS)
    ours = {m for m in loaded if m.startswith("acp_openwrt")}
    assert ours <= ALLOWED, sorted(ours - ALLOWED)
    for heavy in ("cryptography", "cbor2", "pyroute2", "vici", "asn1crypto", "ssl", "asyncio",
                  "selectors", "logging", "socket", "typing"):
        assert heavy not in loaded, heavy
    python = {m for m, is_python in loaded.items() if is_python} - ours
    assert python <= PURE_PYTHON_ALLOWED, sorted(python - PURE_PYTHON_ALLOWED)


def test_each_role_is_a_subpackage_with_one_acpd_part() -> None:
    import importlib
    for role, cls in (("pledge", "PledgePart"), ("proxy", "JoinProxyPart"),
                      ("registrar", "RegistrarPart")):
        part = importlib.import_module(f"acp_openwrt.brski.{role}.part")
        assert hasattr(part, cls), (role, cls)


def test_the_proxy_process_finds_this_package_without_site() -> None:
    """acpd starts it with `python3 -S` and PYTHONPATH=PACKAGE_ROOT (no site-packages .pth)."""
    env = {"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"}
    code = "import acp_openwrt.brski.proxy.entry as e; print(e.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True,
                         text=True, env=env, cwd="/").stdout
    assert out.startswith(PACKAGE_ROOT)
