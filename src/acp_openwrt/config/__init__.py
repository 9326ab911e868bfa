"""Configuration: UCI syntax (uci.py) and the acp schema (schema.py).

    from acp_openwrt.config import load_config, ConfigError
    config = load_config(Path("/etc/config/acp"))   # None: all defaults

One reader and one validator for OpenWrt (/etc/config/acp) and elsewhere (`acpd -c PATH`).
"""
from .schema import (
                     CONTROL_SOCKET_NAME,
                     LOG_LEVELS,
                     OPTIONS,
                     AcpConfig,
                     OptionSpec,
                     config_from_uci,
                     load_config,
                     parse_config,
)
from .uci import ConfigError, UciOption, UciPackage, UciSection, UciValue, parse_uci, read_uci_file

__all__ = [
    "AcpConfig", "CONTROL_SOCKET_NAME", "ConfigError", "LOG_LEVELS", "OPTIONS", "OptionSpec",
    "UciOption", "UciPackage", "UciSection", "UciValue", "config_from_uci", "load_config",
    "parse_config", "parse_uci", "read_uci_file",
]
