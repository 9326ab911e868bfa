"""The join proxy process runs without ssl (it never speaks TLS) and without the site module."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import acp_openwrt
from acp_openwrt.brski.proxy.part import JoinProxyPart
from acp_openwrt.config import AcpConfig
from acp_openwrt.control import ControlServer
from acp_openwrt.events import EventBus
from acp_openwrt.node_context import NodeContext

SRC = str(Path(acp_openwrt.__file__).resolve().parents[1])


def test_entry_keeps_ssl_and_site_out() -> None:
    probe = ("import sys, runpy; sys.argv = ['proxy', '--help'];\n"
             "try:\n    runpy.run_module('acp_openwrt.brski.proxy.entry', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "import asyncio; print(sys.modules.get('ssl') is None, 'site' in sys.modules,"
             " asyncio.sslproto.ssl is None)")
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    assert out[-3:] == ["True", "False", "True"]


def test_launcher_starts_the_entry_without_site(tmp_path: Path) -> None:
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    argv = JoinProxyPart(ctx)._argv(7)
    assert argv[1:4] == ["-S", "-m", "acp_openwrt.brski.proxy.entry"]
    assert argv[argv.index("--handover-fd") + 1] == "7"
