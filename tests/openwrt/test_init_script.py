"""files/acp.init through OpenWrt's real procd.sh and functions.sh, with the built jshn and
`ubus`: what procd would receive for `/etc/init.d/acp start`.

The script runs as /etc/rc.common runs a procd service's start (functions.sh, the init script,
procd.sh, then procd_open_service / start_service / procd_close_service), as
/etc/init.d/acp in a private mount namespace holding the real paths it uses (/lib/functions.sh,
/lib/functions/procd.sh, /usr/share/libubox/jshn.sh, /etc/config/acp, /var/run/ubus/ubus.sock
bound to the test's ubusd). procd.sh sends the service with `ubus call service set`; a
python-ubus stand-in `service` object receives it, typed as blobmsg (ints, booleans).
tests/unit/test_openwrt_init.py checks the same script under a recorder of procd calls; this
one checks what procd.sh makes of those calls.

procd.sh (openwrt/openwrt package/system/procd/files/procd.sh) and functions.sh
(package/base-files/files/lib/functions.sh) are not in ../shared/openwrt-userland and cannot be
fetched here; they must never be copied into this repository. They are taken from
$OPENWRT_PROCD_SH and $OPENWRT_FUNCTIONS_SH, else PREFIX/lib/functions/procd.sh and
PREFIX/lib/functions.sh; without them the tests skip. /sbin/validate_data (procd's, from
openwrt/ubox) comes from $OPENWRT_VALIDATE_DATA or PREFIX/sbin/validate_data; without it the
stand-in below answers in its output format (values read with the real uci, no type checks:
`acpd -c FILE --check` is acp's validator).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from acp_openwrt.config.schema import OPTIONS

if TYPE_CHECKING:
    from conftest import PrivateRoot, Ubusd, UbusObject, Userland

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "files" / "acp.init"
SERVICE_SET = {"name": "STRING", "script": "STRING", "instances": "TABLE", "triggers": "ARRAY",
               "validate": "ARRAY"}
# What /etc/rc.common does for `start` of a USE_PROCD script (its own words are not here).
RC_START = """\
[ -d /var/lock ] || mkdir -p "$(readlink -f /var/lock)"  # procd_lock; /run is empty here
. /lib/functions.sh
initscript=/etc/init.d/acp
. "$initscript"
[ -n "$USE_PROCD" ] || exit 3
. /lib/functions/procd.sh
basescript=$(readlink "$initscript")
procd_open_service "$(basename "${basescript:-$initscript}")" "$initscript"
start_service
procd_close_service
"""
VALIDATE_DATA_STANDIN = r"""#!/bin/sh
# Stand-in for procd's /sbin/validate_data, in its output format:
#   validate_data PKG TYPE '' 'opt:expr[:default]'...   -> jshn calls describing the spec
#   validate_data PKG TYPE SECTION 'opt:expr[:default]'... -> opt=value; (uci value or default)
pkg=$1 type=$2 section=$3
shift 3
if [ -z "$section" ]; then
	printf 'json_add_object; json_add_string "package" "%s"; ' "$pkg"
	printf 'json_add_string "type" "%s"; json_add_object "data"; ' "$type"
	for spec in "$@"; do
		rest=${spec#*:}
		printf 'json_add_string "%s" "%s"; ' "${spec%%:*}" "${rest%%:*}"
	done
	printf 'json_close_object; json_close_object; '
	exit 0
fi
for spec in "$@"; do
	opt=${spec%%:*} rest=${spec#*:}
	expr=${rest%%:*} default=
	[ "$rest" = "$expr" ] || default=${rest#*:}
	value=$(uci -q get "$pkg.$section.$opt") || value=$default
	if [ "$expr" = bool ]; then
		case "$value" in
		1 | on | true | yes | enabled) value=1 ;;
		0 | off | false | no | disabled) value=0 ;;
		*) value= ;;
		esac
	fi
	if [ -z "$value" ]; then
		printf 'unset -v %s; ' "$opt"
	else
		printf "%s='%s'; " "$opt" "$(printf '%s' "$value" | sed "s/'/'\\\\''/g")"
	fi
done
exit 0
"""


def _find(env: str, under_prefix: str, prefix: Path) -> Path | None:
    for candidate in (os.environ.get(env), prefix / under_prefix):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


class InitRun:
    """One `start` of the init script; .message is what `ubus call service set` carried."""

    def __init__(self, userland: Userland, root: PrivateRoot, ubusd: Ubusd,
                 make_object: Callable[..., UbusObject], tmp_path: Path) -> None:
        prefix = userland.prefix
        procd_sh = _find("OPENWRT_PROCD_SH", "lib/functions/procd.sh", prefix)
        functions_sh = _find("OPENWRT_FUNCTIONS_SH", "lib/functions.sh", prefix)
        if procd_sh is None or functions_sh is None:
            pytest.skip("OpenWrt's procd.sh and functions.sh are not here (they are not in "
                        "../shared/openwrt-userland and cannot be fetched): set "
                        "OPENWRT_PROCD_SH and OPENWRT_FUNCTIONS_SH, or put them at "
                        f"{prefix}/lib/functions/procd.sh and {prefix}/lib/functions.sh")
        validate_data = _find("OPENWRT_VALIDATE_DATA", "sbin/validate_data", prefix)
        self.real_validate_data = validate_data is not None
        self.userland, self.root = userland, root
        root.stage("/lib/functions.sh", functions_sh)
        root.stage("/lib/functions/procd.sh", procd_sh)
        root.stage("/usr/share/libubox/jshn.sh", prefix / "share/libubox/jshn.sh")
        root.stage("/sbin/validate_data", validate_data or VALIDATE_DATA_STANDIN, 0o755)
        root.stage("/etc/init.d/acp", INIT, 0o755)
        self.config_dir = tmp_path / "etc-config"
        self.config_dir.mkdir()
        (self.config_dir / "acp").write_text((ROOT / "files" / "acp.config").read_text())
        root.bind("/etc/config", self.config_dir)
        root.tmpfs("/run")
        root.bind("/var/run/ubus/ubus.sock", ubusd.socket)
        self.service = make_object("service", {"set": SERVICE_SET})

    def start(self) -> dict[str, Any]:
        proc = self.userland.run(self.root.argv([*self.userland.shell, "-c", RC_START]),
                                 timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "Command failed" not in proc.stderr, proc.stderr  # the ubus call itself
        calls = self.service.calls()
        assert [c["method"] for c in calls] == ["set"], (calls, proc.stderr)
        message: dict[str, Any] = calls[0]["args"]
        return message


@pytest.fixture
def init_run(openwrt_userland: Userland, private_root: PrivateRoot, ubusd: Ubusd,
             ubus_object: Callable[..., UbusObject], tmp_path: Path) -> InitRun:
    return InitRun(openwrt_userland, private_root, ubusd, ubus_object, tmp_path)


def test_start_hands_procd_one_supervised_acpd(init_run: InitRun) -> None:
    message = init_run.start()
    assert message["name"] == "acp" and message["script"] == "/etc/init.d/acp"
    assert message["instances"] == {"acpd": {
        "command": ["/usr/bin/acpd", "-c", "/etc/config/acp"],
        "respawn": ["3600", "5", "5"],
        "term_timeout": 30,  # an int for procd: json_add_int
        "stdout": True, "stderr": True,
        "file": ["/etc/config/acp"],
    }}


def test_a_changed_acp_config_reloads_the_service(init_run: InitRun) -> None:
    message = init_run.start()
    assert message["triggers"] == [
        ["config.change", ["if", ["eq", "package", "acp"],
                           ["run_script", "/etc/init.d/acp", "reload"]], 1000]]
    (validation,) = message["validate"]
    assert (validation["package"], validation["type"]) == ("acp", "acp")
    assert set(validation["data"]) == {o.name for o in OPTIONS}
    assert validation["data"]["enabled"] == "bool"


def test_disabled_config_declares_no_instance(init_run: InitRun) -> None:
    """procd stops the instances a service no longer declares."""
    config = init_run.config_dir / "acp"
    config.write_text(config.read_text().replace("option enabled '1'", "option enabled '0'"))
    message = init_run.start()
    assert message["instances"] == {}
    assert message["triggers"][0][0] == "config.change"


def test_invalid_config_declares_no_instance(init_run: InitRun) -> None:
    if not init_run.real_validate_data:
        pytest.skip("needs procd's own /sbin/validate_data (OPENWRT_VALIDATE_DATA): the "
                    "stand-in does not check types")
    config = init_run.config_dir / "acp"
    config.write_text(config.read_text().replace("option registrar_port '8443'",
                                                 "option registrar_port '70000'"))
    message = init_run.start()
    assert message["instances"] == {}

