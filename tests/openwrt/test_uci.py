"""files/acp.config through OpenWrt's real `uci` CLI (libuci), read back by acpd's own UCI reader.

acpd parses /etc/config/acp itself (config/uci.py, schema.py) so that it also runs on plain
Linux; whatever libuci writes must read the same there. Every run uses private directories:
`uci -c CONF -C CONF2 -t DELTA` (config, override and change files), never /etc/config or
/tmp/.uci. acpd does not use pyuci, so only the CLI is tested.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from acp_openwrt.config import load_config
from acp_openwrt.config.schema import OPTIONS, OptionSpec
from acp_openwrt.config.uci import UciPackage, parse_uci, read_uci_file

if TYPE_CHECKING:
    from conftest import Userland

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "files" / "acp.config"
UciRun = Callable[..., subprocess.CompletedProcess[str]]

# Values with something to get wrong: a quote and a space (uci writes '...'\''...'), globs.
SAMPLES: dict[str, str | tuple[str, ...]] = {
    "ldevid_cert": "/etc/acp/it's mine/ldevid.pem",
    "prefix": "fd73:9fc2:3c34::/48",
    "ignore_interfaces": ("wan*", "eth0.2", "lan[0-9]"),
    "namespace_dull": "dull-x",
    "namespace_acp": "acp.x_1",
    "log_level": "debug",
    "registrar_domain": "acp.example.com",
    "registrar_id": "1a2b3c",
    "registrar_masa_url": "https://masa.example.com/.well-known/brski",
    "join_proxy_user": "acpproxy",
    "join_proxy_group": "nogroup",
}
TRUE_SPELLINGS = ("yes", "on", "true", "enabled", "1")
FALSE_SPELLINGS = ("no", "off", "false", "disabled", "0")
CONNECT = {"device": "eth2", "subnet_id": "7", "ipv4": "192.168.7.1/24",
           "device_ipv4": "192.168.7.20", "ra": "off", "relay_idle_timeout": "600"}
CONNECT_FORWARDS = ("tcp:443", "udp:623")


def sample(spec: OptionSpec, index: int) -> str | tuple[str, ...]:
    """A valid value other than the default, for any option of the schema."""
    if spec.name in SAMPLES:
        return SAMPLES[spec.name]
    if spec.allowed.startswith("1/0"):
        words = FALSE_SPELLINGS if spec.default else TRUE_SPELLINGS
        return words[index % len(words)]
    if spec.allowed.startswith("absolute path"):
        return f"/srv/acp test/{spec.name}"
    bounds = re.fullmatch(r"(\d+) to (\d+)( seconds)?", spec.allowed)
    if bounds:
        return bounds.group(2)
    raise AssertionError(f"option {spec.name} ({spec.allowed}): add a sample value to SAMPLES")


@pytest.fixture
def uci(openwrt_userland: Userland, tmp_path: Path) -> UciRun:
    """Run the real `uci` on private config, override and delta directories."""
    (tmp_path / "config").mkdir()

    def run(*args: str, confdir: Path | None = None, input: str | None = None,
            ok: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [openwrt_userland.path("uci"), "-c", confdir or tmp_path / "config",
                "-C", tmp_path / "conf2", "-t", tmp_path / "delta", *args]
        return openwrt_userland.run(argv, input=input, check=ok)
    return run


def acpd_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "acp_openwrt.acpd", "-c", str(path), "--check"],
                          capture_output=True, text=True, timeout=60)


def main_options(package: UciPackage) -> dict[str, str | tuple[str, ...]]:
    main = next(s for s in package.sections if s.type == "acp" and s.name == "main")
    return {o.name: tuple(v.text for v in o.values) if o.is_list else o.values[0].text
            for o in main.options}


def test_show_lists_what_acpd_reads_in_the_shipped_file(uci: UciRun, tmp_path: Path) -> None:
    shutil.copy(SHIPPED, tmp_path / "config" / "acp")
    shown = uci("show", "acp").stdout.splitlines()
    ours = main_options(read_uci_file(SHIPPED))
    assert shown == ["acp.main=acp"] + [f"acp.main.{k}='{v}'" for k, v in ours.items()]
    assert uci("get", "acp.main.log_level").stdout == "info\n"


def test_export_then_import_gives_the_same_config(uci: UciRun, tmp_path: Path) -> None:
    shutil.copy(SHIPPED, tmp_path / "config" / "acp")
    exported = uci("export", "acp").stdout
    other = tmp_path / "imported"
    other.mkdir()
    uci("import", "acp", confdir=other, input=exported)
    assert uci("show", "acp", confdir=other).stdout == uci("show", "acp").stdout
    assert uci("export", "acp", confdir=other).stdout == exported
    assert load_config(other / "acp") == load_config(SHIPPED)  # comments gone, values kept


def set_everything(uci: UciRun) -> dict[str, str | tuple[str, ...]]:
    values = {spec.name: sample(spec, i) for i, spec in enumerate(OPTIONS)}
    for name, value in values.items():
        if isinstance(value, tuple):
            uci("-q", "delete", f"acp.main.{name}", ok=False)
            for item in value:
                uci("add_list", f"acp.main.{name}={item}")
        else:
            uci("set", f"acp.main.{name}={value}")
    section = uci("add", "acp", "connect").stdout.strip()
    assert re.fullmatch(r"cfg[0-9a-f]{6}", section), section
    for name, value in CONNECT.items():
        uci("set", f"acp.@connect[-1].{name}={value}")
    for item in CONNECT_FORWARDS:
        uci("add_list", f"acp.@connect[-1].forward={item}")
    assert uci("changes", "acp").stdout  # pending in the private delta directory
    uci("commit", "acp")
    assert uci("changes", "acp").stdout == ""
    return values


def test_every_option_set_by_uci_reads_the_same_in_acpd(uci: UciRun, tmp_path: Path) -> None:
    config_file = tmp_path / "config" / "acp"
    shutil.copy(SHIPPED, config_file)
    values = set_everything(uci)
    text = config_file.read_text()
    assert "option ldevid_cert '/etc/acp/it'\\''s mine/ldevid.pem'" in text  # libuci's quoting

    package = read_uci_file(config_file)
    assert main_options(package) == values  # the texts, as acpd's parser reads libuci's output
    config = load_config(config_file)
    for spec in OPTIONS:
        value = values[spec.name]
        expected = tuple(map(spec.convert, value)) if isinstance(value, tuple) else \
            spec.convert(value)
        assert getattr(config, spec.name) == expected, spec.name
        assert expected != spec.default, f"{spec.name}: the sample must not be the default"
    (connect,) = config.connect
    assert (connect.name, connect.device, connect.subnet_id, str(connect.ipv4),
            str(connect.device_ipv4), connect.router_advertisements,
            connect.relay_idle_timeout) == ("eth2", "eth2", 7, "192.168.7.1/24",
                                            "192.168.7.20", False, 600)
    assert [str(f) for f in connect.forward] == list(CONNECT_FORWARDS)

    check = acpd_check(config_file)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["config"]["ignore_interfaces"] == list(
        values["ignore_interfaces"])


def test_deleted_options_fall_back_to_acpds_defaults(uci: UciRun, tmp_path: Path) -> None:
    config_file = tmp_path / "config" / "acp"
    shutil.copy(SHIPPED, config_file)
    set_everything(uci)
    for spec in OPTIONS:
        uci("delete", f"acp.main.{spec.name}")
    uci("delete", "acp.@connect[0]")
    uci("commit", "acp")
    assert uci("show", "acp").stdout == "acp.main=acp\n"
    assert load_config(config_file) == load_config(None)


def test_anonymous_acp_section_from_uci_add_is_refused(uci: UciRun, tmp_path: Path) -> None:
    config_file = tmp_path / "config" / "acp"
    shutil.copy(SHIPPED, config_file)
    uci("add", "acp", "acp")
    uci("commit", "acp")
    check = acpd_check(config_file)
    assert check.returncode == 2 and check.stdout == ""
    assert "config acp without a name: only config acp 'main' is read" in check.stderr


BAD_VALUES = [
    ("log_level", "verbose", "is not one of debug, info"),
    ("registrar_port", "70000", "is not a whole number from 1 to 65535"),
    ("registrar_id", "0", "an all-zero Registrar-ID"),
    ("enabled", "maybe", "is not one of 1, 0, yes, no"),
    ("namespace_acp", "acp-dull", "is both namespace_dull and namespace_acp"),
    ("join_proxy_user", "root", "root is refused"),
    ("ignore_interfaces", "wan 0", "is not an interface name pattern"),
]


@pytest.mark.parametrize(("option", "value", "why"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_value_written_by_uci_is_named_by_check(uci: UciRun, tmp_path: Path, option: str,
                                                    value: str, why: str) -> None:
    config_file = tmp_path / "config" / "acp"
    shutil.copy(SHIPPED, config_file)
    verb = "add_list" if option == "ignore_interfaces" else "set"
    uci(verb, f"acp.main.{option}={value}")
    uci("commit", "acp")
    check = acpd_check(config_file)
    assert check.returncode == 2 and check.stdout == "", check
    (line,) = check.stderr.splitlines()
    m = re.fullmatch(rf"acpd: {re.escape(str(config_file))}:(\d+): (option|list) {option}: (.*)",
                     line)
    assert m is not None, line
    assert why in m.group(3) and (value in m.group(3) or option == "join_proxy_user"), line
    statement = config_file.read_text().splitlines()[int(m.group(1)) - 1].split()
    assert statement[:2] == [m.group(2), option], statement  # the line uci wrote it on


def test_values_with_uci_syntax_survive_both_readers(uci: UciRun, tmp_path: Path) -> None:
    """What a LuCI form could send: quotes, #, ;, backslashes, tabs, newline, unicode."""
    config_file = tmp_path / "config" / "acp"
    config_file.write_text("")
    uci("set", "acp.main=acp")
    nasty = ["a'b\"c", "x # not a comment", "semi;colon", "back\\slash\\n", "tab\there",
             "two\nlines", "ünï ☃"]
    uci("set", "acp.probe=probe")
    for item in nasty:
        uci("add_list", f"acp.probe.item={item}")
    uci("commit", "acp")
    package = parse_uci(config_file.read_text())
    probe = next(s for s in package.sections if s.name == "probe")
    assert [v.text for v in probe.options[0].values] == nasty
