"""The shipped /etc/config/acp (files/acp.config): every option of the schema is there, and what
it sets is exactly acpd's defaults, so the file documents the defaults and changes none."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from acp_openwrt.config.schema import OPTIONS, AcpConfig, parse_config

SHIPPED = Path(__file__).resolve().parents[2] / "files" / "acp.config"


def test_every_option_is_listed_with_a_comment() -> None:
    lines = SHIPPED.read_text().splitlines()
    for option in OPTIONS:
        keyword = "list" if option.is_list else "option"
        where = [i for i, line in enumerate(lines)
                 if re.match(rf"\s*#?{keyword} {option.name} ", line)]
        assert where, f"option {option.name} is missing from {SHIPPED.name}"
        # the line above it (or above the run of option lines it belongs to) is a comment
        i = where[0] - 1
        while i >= 0 and re.match(r"\s*#?(option|list) ", lines[i]):
            i -= 1
        assert i >= 0 and lines[i].strip().startswith("#"), f"{option.name} is not explained"


def test_shipped_file_states_the_defaults() -> None:
    config = parse_config(SHIPPED.read_text(), str(SHIPPED))
    assert dataclasses.replace(config, source=None) == AcpConfig()


def test_commented_examples_are_valid_values() -> None:
    # uncomment every example: the result must still pass acpd's validator
    text = re.sub(r"^(\s*)#((option|list) )", r"\1\2", SHIPPED.read_text(), flags=re.M)
    text = text.replace("option dodag_root '0'", "option dodag_root '1'")  # prefix needs it
    config = parse_config(text, str(SHIPPED))
    assert config.prefix is not None and config.ignore_interfaces
