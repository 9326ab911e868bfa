"""The acp schema: defaults, each validation error, derived values, the shipped file, the docs."""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from pathlib import Path

import pytest

from acp_openwrt.config import OPTIONS, AcpConfig, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]
FILE = "/etc/config/acp"


def main(*lines: str) -> str:
    return "config acp 'main'\n" + "".join(f"\t{line}\n" for line in lines)


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, FILE)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults() -> None:
    config = load_config(None)
    assert config == AcpConfig()
    assert config.enabled is True
    assert config.dodag_root is False and config.registrar is False
    assert config.ldevid_cert is None and config.trust_anchors is None and config.prefix is None
    assert config.ignore_interfaces == ()
    assert (config.namespace_dull, config.namespace_acp) == ("acp-dull", "acp")
    assert config.run_dir == Path("/var/run/acp")
    assert config.control_socket == Path("/var/run/acp/acpd.sock")
    assert config.log_dir == Path("/var/log/acp")
    assert config.log_level == "info"


@pytest.mark.parametrize("text", ["", "# nothing\n", "config interface 'lan'\n\toption x y\n",
                                  "config acp 'main'\n"])
def test_missing_section_or_options_mean_defaults(text: str) -> None:
    assert parse_config(text, FILE) == AcpConfig()


def test_every_option_read() -> None:
    config = parse_config(main(
        "option enabled 'no'", "option ldevid_cert '/etc/acp/ld.pem'",
        "option ldevid_key '/etc/acp/ld.key'", "option trust_anchors '/etc/acp/ca.pem'",
        "option idevid_cert '/etc/acp/id.pem'", "option idevid_key '/etc/acp/id.key'",
        "option manufacturer_trust_anchor '/etc/acp/masa.pem'", "option dodag_root 'on'",
        "option prefix 'fd73:9fc2:3c34::/48'", "option registrar 'true'",
        "option registrar_domain 'acp.example.com'", "option registrar_port '9443'",
        "list ignore_interfaces 'wan*'", "list ignore_interfaces 'eth0.[0-9]'",
        "option namespace_dull 'n1-dull'", "option namespace_acp 'n1.acp'",
        "option run_dir '/run/acp/n1'", "option control_socket '/run/n1.sock'",
        "option log_dir '/tmp/log'", "option log_level 'debug'"), FILE)
    assert config.enabled is False and config.dodag_root is True and config.registrar is True
    assert config.ldevid_cert == Path("/etc/acp/ld.pem")
    assert config.manufacturer_trust_anchor == Path("/etc/acp/masa.pem")
    assert config.prefix == ipaddress.IPv6Network("fd73:9fc2:3c34::/48")
    assert config.ignore_interfaces == ("wan*", "eth0.[0-9]")
    assert (config.namespace_dull, config.namespace_acp) == ("n1-dull", "n1.acp")
    assert config.control_socket == Path("/run/n1.sock")
    assert config.log_level == "debug"
    assert (config.registrar_domain, config.registrar_port) == ("acp.example.com", 9443)
    assert config.source == FILE


@pytest.mark.parametrize("word, expected", [
    ("1", True), ("yes", True), ("on", True), ("true", True), ("enabled", True),
    ("0", False), ("no", False), ("off", False), ("false", False), ("disabled", False),
])
def test_bool_spellings(word: str, expected: bool) -> None:
    config = parse_config(main(f"option enabled '{word}'", f"option registrar '{word}'",
                               "option registrar_domain 'acp.example.com'"), FILE)
    assert config.enabled is expected and config.registrar is expected


def test_control_socket_derived_from_run_dir() -> None:
    config = parse_config(main("option run_dir '/tmp/node7'"), FILE)
    assert config.control_socket == Path("/tmp/node7/acpd.sock")
    assert AcpConfig(run_dir=Path("/x")).control_socket == Path("/x/acpd.sock")
    again = dataclasses.replace(config, run_dir=Path("/y"), control_socket=None)
    assert again.control_socket == Path("/y/acpd.sock")


def test_option_with_spaces_splits_into_patterns() -> None:
    config = parse_config(main("option ignore_interfaces 'wan* eth1  lan?'"), FILE)
    assert config.ignore_interfaces == ("wan*", "eth1", "lan?")


def test_empty_value_means_default() -> None:
    assert parse_config(main("option log_level ''", "option run_dir ''"), FILE) == AcpConfig()


def test_later_option_overrides() -> None:
    assert parse_config(main("option log_level debug", "option log_level error"),
                        FILE).log_level == "error"


def test_example_message_from_the_brief() -> None:
    text = ("package acp\n\n# node\n\nconfig acp 'main'\n\toption enabled 1\n"
            "\toption log_level 'verbose'\n")
    assert error(text) == (f"{FILE}:7: option log_level: 'verbose' is not one of "
                           "debug, info, notice, warning, error")


@pytest.mark.parametrize("lines, expected", [
    (["option enabled 'maybe'"],
     ":2: option enabled: 'maybe' is not one of 1, 0, yes, no, on, off, true, false, enabled, "
     "disabled"),
    (["option dodag_root 'Yes'"], ":2: option dodag_root: 'Yes' is not one of"),
    (["option run_dir 'var/run/acp'"],
     ":2: option run_dir: 'var/run/acp' is not an absolute path (it must start with /)"),
    (["option ldevid_cert 'ld.pem'", "option ldevid_key '/k'"],
     ":2: option ldevid_cert: 'ld.pem' is not an absolute path"),
    (["option log_dir '/" + "a" * 5000 + "'"], ":2: option log_dir: '/aaaa"),
    (["option log_lvl 'debug'"],
     ":2: option log_lvl: unknown option in config acp 'main' (did you mean log_level?)"),
    (["option zzzz 1"],
     ":2: option zzzz: unknown option in config acp 'main' (the options are listed in "),
    (["option namespace_acp 'acp-dull'"],
     ":2: option namespace_acp: 'acp-dull' is both namespace_dull and namespace_acp"),
    (["option namespace_dull 'x'", "option namespace_acp 'x'"],
     ":3: option namespace_acp: 'x' is both"),
    (["option namespace_acp 'a/b'"],
     ":2: option namespace_acp: 'a/b' is not a usable namespace name"),
    (["option namespace_acp '..'"],
     ":2: option namespace_acp: '..' is not a usable namespace name"),
    (["option namespace_dull '.'"],
     ":2: option namespace_dull: '.' is not a usable namespace name"),
    (["option namespace_dull '-n'"], ":2: option namespace_dull: '-n' is not a usable"),
    (["option namespace_dull '" + "n" * 65 + "'"], ":2: option namespace_dull: 'nnnn"),
    (["option dodag_root 1", "option prefix 'fd00::/130'"],
     ":3: option prefix: 'fd00::/130' is not an IPv6 prefix"),
    (["option dodag_root 1", "option prefix 'not-a-prefix/48'"],
     ":3: option prefix: 'not-a-prefix/48' is not an IPv6"),
    (["option dodag_root 1", "option prefix 'fd00::1/48'"], "has host bits set"),
    (["option dodag_root 1", "option prefix 'fd00::'"],
     ":3: option prefix: 'fd00::' has no prefix length"),
    (["option dodag_root 1", "option prefix '2001:db8::/32'"],
     "is not a ULA prefix inside fd00::/8"),
    (["option dodag_root 1", "option prefix 'fc00::/48'"], "is not a ULA prefix inside fd00::/8"),
    (["option dodag_root 1", "option prefix 'fd00::/96'"], "of length 8 to 64"),
    (["option prefix 'fd73:9fc2:3c34::/48'"],
     ":2: option prefix: only meaningful with 'option dodag_root 1'"),
    (["option ldevid_key '/etc/acp/k'"],
     ":2: option ldevid_key: ldevid_cert and ldevid_key go together"),
    (["option idevid_cert '/etc/acp/c'"],
     ":2: option idevid_cert: idevid_cert and idevid_key go together"),
    (["list log_level debug"], ":2: option log_level: takes one value"),
    (["list ignore_interfaces 'a b'"],
     ":2: list ignore_interfaces: 'a b' is not an interface name pattern"),
    (["list ignore_interfaces 'e\x1bth'"],
     ":2: list ignore_interfaces: 'e\\x1bth' is not an interface name pattern"),
    (["list ignore_interfaces ''"],
     ":2: list ignore_interfaces: '' is not an interface name pattern"),
    (["option control_socket 'sock'"], ":2: option control_socket: 'sock' is not an absolute path"),
    (["option control_socket '/" + "s" * 120 + "'"],
     ":2: option control_socket: control socket '/sss"),
    (["option run_dir '/" + "r" * 120 + "'"], "; shorten run_dir or set option control_socket"),
])
def test_validation_errors(lines: list[str], expected: str) -> None:
    message = error(main(*lines))
    assert message.startswith(FILE + ":")
    assert expected in message
    assert len(message) < 400


def test_acp_section_must_be_named_main() -> None:
    assert error("config acp 'mian'\n") == (f"{FILE}:1: config acp 'mian': only config acp 'main' "
                                            "is read; name the section 'main'")
    assert "config acp without a name" in error("config acp\n\toption enabled 1\n")


def test_other_section_types_are_ignored_even_with_unknown_options() -> None:
    text = "config interface 'wan'\n\toption whatever 1\n" + main("option log_level warning")
    assert parse_config(text, FILE).log_level == "warning"


def test_syntax_errors_pass_through_as_config_error() -> None:
    assert error("option enabled 1\n") == (f"{FILE}:1: option outside a section: a 'config' line "
                                           "must come first")
    assert error(main("option enabled '1")).startswith(f"{FILE}:2: unterminated '")


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_config("config acp main\n option enabled 2\n", FILE)


def test_shipped_file_parses_to_the_defaults() -> None:
    shipped = ROOT / "files" / "acp.config"
    config = load_config(shipped)
    assert config == AcpConfig()
    assert config.source == str(shipped)


def test_shipped_file_mentions_every_option() -> None:
    text = (ROOT / "files" / "acp.config").read_text()
    for spec in OPTIONS:
        assert re.search(rf"^\s*#?\s*(option|list) {spec.name} ", text, re.M), spec.name


def test_shipped_file_commented_options_are_valid_when_uncommented() -> None:
    text = (ROOT / "files" / "acp.config").read_text()
    uncommented = re.sub(r"^(\s*)#((option|list) )", r"\1\2", text, flags=re.M)
    config = parse_config(uncommented.replace("option dodag_root '0'", "option dodag_root '1'"),
                          "uncommented")
    assert config.ldevid_cert is not None and config.prefix is not None
    assert config.ignore_interfaces == ("wan*", "eth0.2")


def test_docs_table_lists_every_option_and_default() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    rows = {m.group(1): m.group(2)
            for m in re.finditer(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|", docs, re.M)}
    assert set(rows) == {spec.name for spec in OPTIONS}
    for spec in OPTIONS:
        if isinstance(spec.default, (str, Path)):
            assert f"`{spec.default}`" in rows[spec.name], spec.name


def test_to_dict_is_json_ready() -> None:
    config = parse_config(main("option dodag_root 1", "option prefix 'fd01::/48'",
                               "list ignore_interfaces 'wan*'"), FILE)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["prefix"] == "fd01::/48"
    assert data["ignore_interfaces"] == ["wan*"]
    assert data["control_socket"] == "/var/run/acp/acpd.sock"
    assert data["ldevid_cert"] is None
    assert data["source"] == FILE
    assert set(data) == {f.name for f in dataclasses.fields(AcpConfig)}


def test_two_nodes_on_one_machine_share_nothing() -> None:
    nodes = [parse_config(main(f"option namespace_dull 'n{i}-dull'",
                               f"option namespace_acp 'n{i}-acp'",
                               f"option run_dir '/run/acp/n{i}'",
                               f"option log_dir '/var/log/acp/n{i}'"), f"n{i}") for i in (1, 2)]
    per_node = [{c.namespace_dull, c.namespace_acp, c.run_dir, c.control_socket, c.log_dir}
                for c in nodes]
    assert not per_node[0] & per_node[1]


def test_loading_changes_nothing(tmp_path: Path) -> None:
    run_dir, log_dir = tmp_path / "run", tmp_path / "log"
    path = tmp_path / "acp"
    path.write_text(main(f"option run_dir '{run_dir}'", f"option log_dir '{log_dir}'",
                         f"option ldevid_cert '{tmp_path}/absent.pem'",
                         f"option ldevid_key '{tmp_path}/absent.key'"))
    before = sorted(p.name for p in tmp_path.iterdir())
    config = load_config(path)
    assert config.control_socket == run_dir / "acpd.sock"
    assert sorted(p.name for p in tmp_path.iterdir()) == before == ["acp"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load_config(tmp_path / "nope")


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AcpConfig().log_level = "debug"  # type: ignore[misc]
