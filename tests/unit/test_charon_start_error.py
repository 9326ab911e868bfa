"""The error an operator sees first when charon will not start names the cause from its log."""
from __future__ import annotations

from pathlib import Path

from acp_openwrt.channels.charon import _why


def test_missing_plugin_is_named(tmp_path: Path) -> None:
    log = tmp_path / "charon.log"
    log.write_text("00[DMN] Starting IKE charon daemon (strongSwan 5.9.8)\n"
                   "00[LIB] plugin 'openssl': failed to load - openssl_plugin_create not found\n"
                   "00[DMN] initialization failed - aborting charon\n")
    assert _why(log) == ": plugin 'openssl': failed to load - openssl_plugin_create not found"


def test_no_log_or_no_known_cause_adds_nothing(tmp_path: Path) -> None:
    assert _why(tmp_path / "missing.log") == ""
    log = tmp_path / "charon.log"
    log.write_text("00[DMN] initialization failed - aborting charon\n")
    assert _why(log) == ""
