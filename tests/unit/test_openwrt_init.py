"""The shell side of the OpenWrt integration, run here with stubs: the procd init script under a
recorder of procd calls, the hotplug nudge and the uci-defaults script with stub commands;
sh -n, shellcheck and shfmt (OpenWrt's CI runs it on init scripts); the systemd unit."""
from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from acp_openwrt.config.schema import OPTIONS, OptionSpec

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "files" / "acp.init"
HOTPLUG = ROOT / "files" / "acp.hotplug"
UCI_DEFAULTS = ROOT / "uci-defaults" / "90-acp"
QEMU_CHECK = ROOT / ".github" / "openwrt-qemu-check.sh"
SHELL_FILES = [INIT, HOTPLUG, UCI_DEFAULTS, QEMU_CHECK]

# Stand-ins for /lib/functions.sh and /lib/functions/procd.sh: every procd call becomes one line
# on stdout; uci_load_validate records its spec, sets each option to its default (or to
# STUB_<option> when given) and calls back with STUB_RESULT (0: valid).
FUNCTIONS_SH = """
config_load() { :; }
"""
PROCD_SH = r"""
_rec() { printf '%s' "$1"; shift; for a in "$@"; do printf ' [%s]' "$a"; done; printf '\n'; }
procd_open_instance() { _rec procd_open_instance "$@"; }
procd_close_instance() { _rec procd_close_instance "$@"; }
procd_set_param() { _rec procd_set_param "$@"; }
procd_append_param() { _rec procd_append_param "$@"; }
procd_add_reload_trigger() { _rec procd_add_reload_trigger "$@"; }
procd_add_validation() { _rec procd_add_validation "$@"; "$1"; }
uci_load_validate() {
	_rec uci_load_validate "$@"
	_pkg=$1 _type=$2 _name=$3 _fn=$4
	shift 4
	for _spec in "$@"; do
		_opt=${_spec%%:*}
		_def=$(printf '%s' "$_spec" | sed -n 's/^[^:]*:.*:\([^:)]*\)$/\1/p')
		eval "_override=\${STUB_$_opt-}"
		eval "$_opt=\${_override:-\$_def}"
	done
	[ -n "$_fn" ] || return 0
	"$_fn" "$_name" "${STUB_RESULT:-0}"
}
"""
# like /etc/rc.common: the helpers, then the script's functions, then the action
RC_COMMON = """
. "$IPKG_INSTROOT/lib/functions.sh"
. "$IPKG_INSTROOT/lib/functions/procd.sh"
. "$1"
"$2"
"""


def _args(line: str) -> list[str]:
    return [part.rstrip("]") for part in line.split(" [")]


def run_init_lines(tmp_path: Path, action: str, **env: str) -> tuple[list[str], str]:
    lib = tmp_path / "lib" / "functions"
    lib.mkdir(parents=True, exist_ok=True)
    (tmp_path / "lib" / "functions.sh").write_text(FUNCTIONS_SH)
    (lib / "procd.sh").write_text(PROCD_SH)
    (tmp_path / "rc.common").write_text(RC_COMMON)
    proc = subprocess.run(["sh", str(tmp_path / "rc.common"), str(INIT), action],
                          env={"PATH": os.environ["PATH"], "IPKG_INSTROOT": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=10)
    return proc.stdout.splitlines(), proc.stderr


def instance_params(lines: list[str]) -> dict[str, list[str]]:
    params = {}
    for line in lines:
        args = _args(line)
        if args[0] == "procd_set_param":
            params[args[1]] = args[2:]
    return params


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shell_syntax(path: Path) -> None:
    proc = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: p.name)
def test_shellcheck(path: Path) -> None:
    proc = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.skipif(shutil.which("shfmt") is None, reason="shfmt not installed")
def test_init_script_is_shfmt_clean() -> None:
    proc = subprocess.run(["shfmt", "-d", str(INIT), str(HOTPLUG), str(UCI_DEFAULTS)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_init_script_header() -> None:
    text = INIT.read_text()
    assert text.startswith("#!/bin/sh /etc/rc.common\n")
    assert "\nUSE_PROCD=1\n" in text and "\nSTART=" in text


def test_start_service_declares_one_respawned_acpd(tmp_path: Path) -> None:
    lines, err = run_init_lines(tmp_path, "start_service")
    names = [_args(line)[0] for line in lines]
    assert names.count("procd_open_instance") == 1 == names.count("procd_close_instance")
    assert names.index("procd_open_instance") < names.index("procd_close_instance")
    assert _args(lines[names.index("procd_open_instance")])[1:] == ["acpd"]
    params = instance_params(lines)
    assert params["command"] == ["/usr/bin/acpd", "-c", "/etc/config/acp"]
    assert len(params["respawn"]) == 3 and all(p.isdigit() for p in params["respawn"])
    assert params["stdout"] == ["1"] and params["stderr"] == ["1"]
    assert params["file"] == ["/etc/config/acp"]  # a changed config restarts acpd on reload
    assert int(params["term_timeout"][0]) >= 10   # acpd's clean stop needs more than procd's 5 s
    # charon is acpd's child (in the DULL namespace), not a second procd instance
    assert not any("charon" in line or "netns" in line for line in lines)


def test_validation_spec_covers_every_option_with_acpds_defaults(tmp_path: Path) -> None:
    lines, _ = run_init_lines(tmp_path, "start_service")
    spec = next(_args(line) for line in lines if line.startswith("uci_load_validate"))
    assert spec[1:5] == ["acp", "acp", "main", "start_acp_instance"]
    declared: dict[str, tuple[str, str | None]] = {}
    for item in spec[5:]:
        name, kind, *default = item.split(":")  # validate_data types here have no ':'
        declared[name] = (kind, default[0] if default else None)
    assert set(declared) == {o.name for o in OPTIONS}
    for option in OPTIONS:
        kind, default = declared[option.name]
        assert kind, option.name
        assert default == _uci_default(option), option.name
        assert (kind == "bool") is (option.allowed.startswith("1/0")), option.name
        assert kind.startswith("list(") is option.is_list, option.name


def _uci_default(option: OptionSpec) -> str | None:
    value = option.default
    if value is None or value == () or option.name == "control_socket":
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def test_disabled_or_invalid_config_starts_nothing(tmp_path: Path) -> None:
    lines, _ = run_init_lines(tmp_path, "start_service", STUB_enabled="0")
    assert not any(line.startswith("procd_open_instance") for line in lines)
    lines, err = run_init_lines(tmp_path, "start_service", STUB_RESULT="1")
    assert not any(line.startswith("procd_open_instance") for line in lines)
    assert "failed validation" in err and "--check" in err
    lines, _ = run_init_lines(tmp_path, "start_service", STUB_enabled="yes")
    assert any(line.startswith("procd_open_instance") for line in lines)


def test_triggers_reload_on_uci_change_and_validate(tmp_path: Path) -> None:
    lines, _ = run_init_lines(tmp_path, "service_triggers")
    assert "procd_add_reload_trigger [acp]" in lines
    assert "procd_add_validation [validate_acp_section]" in lines
    # procd_add_validation asks the function for its spec: no section name, no callback
    assert any(line.startswith("uci_load_validate [acp] [acp] [] []") for line in lines)


def stub_bin(tmp_path: Path, log: Path, *names: str, fail: tuple[str, ...] = ()) -> dict[str, str]:
    """Commands that log their argv (and fail when listed in `fail`) ahead of the real PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in names:
        status = 1 if name in fail else 0
        (bindir / name).write_text(f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\n'
                                   f'cat > /dev/null\nexit {status}\n' if name == "uci" else
                                   f'#!/bin/sh\necho "{name} $*" >> {shlex.quote(str(log))}\n'
                                   f'exit {status}\n')
        (bindir / name).chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_hotplug_nudges_acpd_on_ifup_ifdown(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    env = stub_bin(tmp_path, log, "ubus")
    for action, interface, nudged in (("ifup", "lan", True), ("ifdown", "wan", True),
                                      ("ifupdate", "lan", True), ("ifup", "loopback", False),
                                      ("add", "lan", False)):
        log.unlink(missing_ok=True)
        proc = subprocess.run(["sh", str(HOTPLUG)], capture_output=True, text=True, timeout=10,
                              env={**env, "ACTION": action, "INTERFACE": interface})
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + (3 if nudged else 0.3)
        while time.monotonic() < deadline and not log.exists():
            time.sleep(0.02)
        calls = log.read_text().splitlines() if log.exists() else []
        assert calls == (["ubus -t 10 call acp rescan"] if nudged else []), (action, interface)


def test_hotplug_is_quiet_when_acpd_is_away(tmp_path: Path) -> None:
    env = stub_bin(tmp_path, tmp_path / "calls", "ubus", fail=("ubus",))
    proc = subprocess.run(["sh", str(HOTPLUG)], capture_output=True, text=True, timeout=10,
                          env={**env, "ACTION": "ifup", "INTERFACE": "lan"})
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize("has_section", [False, True])
def test_uci_defaults_adds_main_section_only_when_missing(tmp_path: Path,
                                                          has_section: bool) -> None:
    log = tmp_path / "calls"
    env = stub_bin(tmp_path, log, "uci", "mkdir", "chmod", "touch",
                   fail=() if has_section else ("uci",))
    proc = subprocess.run(["sh", str(UCI_DEFAULTS)], capture_output=True, text=True, timeout=10,
                          env=env)
    assert proc.returncode == 0, proc.stderr  # uci-defaults scripts are deleted after exit 0
    calls = log.read_text().splitlines()
    assert "mkdir -p /etc/acp" in calls and "chmod 0700 /etc/acp" in calls
    assert "uci -q get acp.main" in calls
    assert ("uci -q batch" in calls) is (not has_section)
    assert ("touch /etc/config/acp" in calls) is (not has_section)


def test_uci_defaults_batch_creates_main(tmp_path: Path) -> None:
    text = UCI_DEFAULTS.read_text()
    assert "set acp.main=acp" in text and "commit acp" in text
    assert text.rstrip().endswith("exit 0")


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(strict=True, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment]
    unit.read(ROOT / "files" / "acpd.service")
    service = unit["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == "acpd" and argv[1:] == ["-c", "/etc/acp/acp.conf"]
    assert service["RestartPreventExitStatus"] == "2"  # acpd.EXIT_CONFIG: do not loop on it
    for sandbox in ("PrivateTmp", "ProtectSystem", "ProtectHome", "PrivateMounts",
                    "PrivateNetwork"):
        assert sandbox not in service, f"{sandbox} would hide acpd's namespaces from the host"
    assert int(service["TimeoutStopSec"]) >= 10
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    from acp_openwrt.acpd import EXIT_CONFIG
    assert str(EXIT_CONFIG) == service["RestartPreventExitStatus"]
