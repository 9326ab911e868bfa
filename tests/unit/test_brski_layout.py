"""The join proxy's process stays apart: it runs unprivileged next to strangers' connections,
so it imports nothing from acpd, the pledge or the registrar (nor anything they pull in)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

PROXY_PROCESS = ("acp_openwrt.brski.proxy.entry", "acp_openwrt.brski.proxy.process")
ALLOWED = {"acp_openwrt", "acp_openwrt.brski", "acp_openwrt.brski.proxy",
           "acp_openwrt.brski.proxy.entry", "acp_openwrt.brski.proxy.process",
           "acp_openwrt.brski.proxy.handover", "acp_openwrt.brski.proxy.registrars",
           "acp_openwrt.brski.proxy.relay", "acp_openwrt.brski.proxy.sandbox"}


def imported_by(modules: tuple[str, ...]) -> set[str]:
    # as entry.run() starts it: ssl blocked before anything imports asyncio
    code = ("import importlib, json, sys\n"
            "sys.modules.setdefault('ssl', None)\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    return set(json.loads(out))


def test_the_join_proxy_process_imports_only_its_own_package() -> None:
    loaded = imported_by(PROXY_PROCESS)
    ours = {m for m in loaded if m.startswith("acp_openwrt")}
    assert ours <= ALLOWED, sorted(ours - ALLOWED)
    for heavy in ("cryptography", "cbor2", "pyroute2", "vici", "asn1crypto", "ssl"):
        assert heavy not in loaded, heavy


def test_each_role_is_a_subpackage_with_one_acpd_part() -> None:
    import importlib
    for role, cls in (("pledge", "PledgePart"), ("proxy", "JoinProxyPart"),
                      ("registrar", "RegistrarPart")):
        part = importlib.import_module(f"acp_openwrt.brski.{role}.part")
        assert hasattr(part, cls), (role, cls)


def test_the_proxy_process_finds_this_package_without_site() -> None:
    """acpd starts it with `python3 -S` and PYTHONPATH=PACKAGE_ROOT (no site-packages .pth)."""
    from acp_openwrt.brski.proxy.part import PACKAGE_ROOT
    env = {"PYTHONPATH": PACKAGE_ROOT, "PATH": "/usr/bin:/bin"}
    code = "import acp_openwrt.brski.proxy.entry as e; print(e.__file__)"
    out = subprocess.run([sys.executable, "-S", "-c", code], check=True, capture_output=True,
                         text=True, env=env, cwd="/").stdout
    assert out.startswith(PACKAGE_ROOT)
