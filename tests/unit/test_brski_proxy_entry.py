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


def test_entry_keeps_ssl_asyncio_and_site_out() -> None:
    probe = ("import sys, runpy; sys.argv = ['proxy', '--help'];\n"
             "try:\n    runpy.run_module('acp_openwrt.brski.proxy.entry', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sys.modules.get('ssl') is None, 'site' in sys.modules,"
             " 'asyncio' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": SRC}
    out = subprocess.run([sys.executable, "-S", "-c", probe], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    assert out[-3:] == ["True", "False", "False"]


def test_usage_errors_are_one_line() -> None:
    env = {**os.environ, "PYTHONPATH": SRC}
    for args, error in [([], "--handover-fd is required"),
                        (["--handover-fd", "x"], "bad value"),
                        (["--handover-fd=3", "--log-level", "loud"], "--log-level"),
                        (["--handover-fd", "3", "--bogus"], "unknown argument"),
                        (["--handover-fd", "3", "--idle-timeout"], "needs a value")]:
        res = subprocess.run([sys.executable, "-S", "-m", "acp_openwrt.brski.proxy.entry",
                              *args], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.startswith("acp-join-proxy:") and error in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1


def test_launcher_starts_the_entry_without_site(tmp_path: Path) -> None:
    ctx = NodeContext(config=AcpConfig(run_dir=tmp_path), bus=EventBus(),
                      control=ControlServer(tmp_path / "acpd.sock"), identity=None)
    argv = JoinProxyPart(ctx)._argv(7)
    assert argv[1:4] == ["-S", "-m", "acp_openwrt.brski.proxy.entry"]
    assert argv[argv.index("--handover-fd") + 1] == "7"


def test_every_acpd_log_level_starts_the_proxy() -> None:
    """acpd passes its own log_level on (notice included): the proxy must take each one."""
    from acp_openwrt.brski.proxy.process import parse_args
    from acp_openwrt.config.schema import LOG_LEVELS
    for level in LOG_LEVELS:
        assert parse_args(["--handover-fd", "3", "--log-level", level])["log_level"] == level
