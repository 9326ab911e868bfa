"""uci-defaults/90-acp with OpenWrt's real `uci`, on the real paths it names (/etc/config,
/etc/acp, /etc/uci-defaults), in a private mount namespace: /etc is an overlay whose upper
layer is tmp_path, /etc/config a bind of a tmp_path directory, /tmp a tmpfs (uci's change
files). The host's /etc is never written.

It runs as /etc/init.d/boot's uci_apply_defaults runs each script on first boot (and
default_postinst after a package install): `( . ./90-acp ) && rm -f 90-acp`: exit 0 deletes it.
"""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from acp_openwrt.config import load_config

if TYPE_CHECKING:
    from conftest import PrivateRoot, Userland

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "uci-defaults" / "90-acp"
OPERATOR = """\
# edited by the operator
config acp 'main'
\toption enabled '0'
\toption log_level 'debug'
\tlist ignore_interfaces 'wan*'

config connect 'bmc'
\toption device 'eth2'
\toption subnet_id '1'
"""


class Boot:
    """Runs 90-acp the way OpenWrt's boot does, again and again on the same private root."""

    def __init__(self, userland: Userland, root: PrivateRoot, tmp_path: Path) -> None:
        self.userland, self.root = userland, root
        self.config_dir = tmp_path / "etc-config"
        self.config_dir.mkdir()
        root.bind("/etc/config", self.config_dir)
        root.tmpfs("/tmp")
        self.host_had = {p: os.path.lexists(p) for p in ("/etc/acp", "/etc/config",
                                                          "/etc/uci-defaults")}

    @property
    def acp_dir(self) -> Path:
        return self.root.upper("/etc/acp")

    def run(self) -> subprocess.CompletedProcess[str]:
        staged = self.root.stage("/etc/uci-defaults/90-acp", SCRIPT, 0o755)
        command = [*self.userland.shell, "-c",
                   "cd /etc/uci-defaults && ( . ./90-acp ) && rm -f 90-acp"]
        proc = self.userland.run(self.root.argv(command), timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert not staged.exists(), "90-acp did not exit 0, so boot would run it again"
        assert {p: os.path.lexists(p) for p in self.host_had} == self.host_had, "host touched"
        return proc

    def show(self) -> str:
        return self.userland.run([self.userland.path("uci"), "-c", self.config_dir,
                                  "-t", self.config_dir.parent / "delta", "show", "acp"],
                                 check=True).stdout


@pytest.fixture
def boot(openwrt_userland: Userland, private_root: PrivateRoot, tmp_path: Path) -> Boot:
    return Boot(openwrt_userland, private_root, tmp_path)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_boot_makes_main_and_a_private_acp_dir(boot: Boot) -> None:
    boot.run()
    assert boot.acp_dir.is_dir() and mode(boot.acp_dir) == 0o700
    assert boot.show() == "acp.main=acp\nacp.main.enabled='1'\n"
    config = load_config(boot.config_dir / "acp")
    assert config.enabled is True and config.source == str(boot.config_dir / "acp")


def test_second_run_changes_nothing(boot: Boot) -> None:
    boot.run()
    first = (boot.config_dir / "acp").read_bytes()
    (boot.acp_dir / "ldevid.pem").write_text("enrolled since")
    boot.run()  # the package reinstalled: default_postinst runs it again
    assert (boot.config_dir / "acp").read_bytes() == first
    assert mode(boot.acp_dir) == 0o700 and (boot.acp_dir / "ldevid.pem").exists()


@pytest.mark.parametrize("text", [OPERATOR, (ROOT / "files" / "acp.config").read_text()],
                         ids=["operator-edited", "shipped"])
def test_existing_main_section_is_left_alone(boot: Boot, text: str) -> None:
    (boot.config_dir / "acp").write_text(text)
    boot.run()
    assert (boot.config_dir / "acp").read_text() == text  # byte for byte, comments too


def test_main_is_added_beside_the_operators_other_sections(boot: Boot) -> None:
    """The operator removed `main` but kept a connect section: main comes back (enabled), the
    connect section stays; uci's commit rewrites the file, so comments do not survive."""
    (boot.config_dir / "acp").write_text(OPERATOR.split("\n\n", 1)[1])
    boot.run()
    shown = boot.show().splitlines()
    assert "acp.main=acp" in shown and "acp.main.enabled='1'" in shown
    assert "acp.bmc=connect" in shown and "acp.bmc.device='eth2'" in shown
    config = load_config(boot.config_dir / "acp")
    assert config.enabled is True and [c.name for c in config.connect] == ["bmc"]


def test_an_open_acp_dir_is_closed_and_its_files_kept(boot: Boot) -> None:
    key = boot.root.stage("/etc/acp/ldevid.key", "key", 0o600)
    boot.acp_dir.chmod(0o755)
    boot.run()
    assert mode(boot.acp_dir) == 0o700 and key.read_text() == "key"
