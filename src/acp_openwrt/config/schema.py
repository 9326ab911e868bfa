"""The acp config schema: options, defaults, validation and the typed AcpConfig.

Only `config acp 'main'` is read. Every option has a default, so a missing file, section or
option means "defaults". Sections of other types are ignored (room for e.g. `config interface`
later); inside an `acp` section an unknown option is an error, so that a typo is not silently
a default. Loading reads the file and nothing else: no directory is made, no path is checked.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .uci import ConfigError, UciOption, UciPackage, parse_uci, read_uci_file, show

SECTION_TYPE = "acp"
SECTION_NAME = "main"
CONTROL_SOCKET_NAME = "acpd.sock"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error")
# The spellings OpenWrt's shell helpers (config_get_bool in /lib/functions.sh) accept; exact case.
TRUE_WORDS = ("1", "yes", "on", "true", "enabled")
FALSE_WORDS = ("0", "no", "off", "false", "disabled")
_BOOL_WORDS = ", ".join(word for pair in zip(TRUE_WORDS, FALSE_WORDS, strict=True) for word in pair)
ULA_L1 = ipaddress.IPv6Network("fd00::/8")  # ACP addresses are locally assigned ULAs (§6.11)
PATH_MAX = 4095  # bytes, without the terminating NUL
SUN_PATH_MAX = 107  # a Unix socket path: sizeof(sun_path) - 1
NETNS_NAME_MAX = 64
_NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_PATTERN_MAX = 64



@runtime_checkable
class _JsonReady(Protocol):
    """A nested setting (connect.config.ConnectConfig) that renders itself for to_dict()."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class AcpConfig:
    """The node's configuration, validated. Construct directly for tests and the lab.

    control_socket left as None is derived from run_dir (`<run_dir>/acpd.sock`); with
    dataclasses.replace() pass control_socket=None again to re-derive it from a new run_dir.
    """
    enabled: bool = True
    ldevid_cert: Path | None = None
    ldevid_key: Path | None = None
    trust_anchors: Path | None = None
    idevid_cert: Path | None = None
    idevid_key: Path | None = None
    manufacturer_trust_anchor: Path | None = None
    dodag_root: bool = False
    prefix: ipaddress.IPv6Network | None = None
    registrar: bool = False
    ignore_interfaces: tuple[str, ...] = ()
    namespace_dull: str = "acp-dull"
    namespace_acp: str = "acp"
    run_dir: Path = Path("/var/run/acp")
    control_socket: Path | None = None
    ubus_socket: Path | None = None  # None: ubusd's usual places (/var/run/ubus/ubus.sock, ...)
    log_dir: Path = Path("/var/log/acp")
    log_level: str = "info"
    rpl_external: bool = False
    rpl_sunshine: Path | None = None
    registrar_domain: str | None = None
    registrar_dir: Path = Path("/etc/acp/registrar")
    registrar_port: int = 8443
    registrar_masa_url: str | None = None
    registrar_ca_cert: Path | None = None
    registrar_ca_key: Path | None = None
    registrar_id: int | None = None  # None: derived from the registrar's CA key
    join_proxy: bool = True
    join_proxy_user: str = "nobody"
    join_proxy_group: str | None = None
    join_proxy_port: int = 0
    join_proxy_max_connections: int = 32
    join_proxy_max_per_pledge: int = 4
    join_proxy_idle_timeout: int = 60
    discovery_interval: int = 60
    crl_refresh: int = 300
    crl_file: Path | None = None   # None: acp-crl.pem beside ldevid_cert
    connect: tuple[Any, ...] = ()  # connect.config.ConnectConfig, one per `config connect`
    source: str | None = field(default=None, compare=False)  # the file read; None: defaults

    def __post_init__(self) -> None:
        if self.control_socket is None:
            object.__setattr__(self, "control_socket", self.run_dir / CONTROL_SOCKET_NAME)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths and the prefix as strings, lists as lists, unset as None."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Path, ipaddress.IPv6Network)):
                value = str(value)
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, _JsonReady) else v for v in value]
            out[f.name] = value
        return out


class _Invalid(Exception):
    """A value's problem, without file and line (the caller adds them)."""


def _bool(text: str) -> bool:
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise _Invalid(f"{show(text)} is not one of {_BOOL_WORDS}")


def _path(text: str) -> Path:
    if not text.startswith("/"):
        raise _Invalid(f"{show(text)} is not an absolute path (it must start with /)")
    if len(text.encode()) > PATH_MAX:
        raise _Invalid(f"{show(text)} is longer than {PATH_MAX} bytes")
    return Path(text)


def _netns(text: str) -> str:
    if text in (".", "..") or len(text) > NETNS_NAME_MAX or not _NETNS_NAME.fullmatch(text):
        raise _Invalid(f"{show(text)} is not a usable namespace name (1 to {NETNS_NAME_MAX} of "
                       "letters, digits, _ . -; not starting with . or -)")
    return text


def _level(text: str) -> str:
    if text not in LOG_LEVELS:
        raise _Invalid(f"{show(text)} is not one of {', '.join(LOG_LEVELS)}")
    return text


def _prefix(text: str) -> ipaddress.IPv6Network:
    if "/" not in text:
        raise _Invalid(f"{show(text)} has no prefix length (write it as fdxx:xxxx:xxxx::/48)")
    try:
        net = ipaddress.IPv6Network(text, strict=True)
    except ValueError as exc:
        raise _Invalid(f"{show(text)} is not an IPv6 prefix ({exc})") from None
    if not net.subnet_of(ULA_L1) or net.prefixlen > 64:
        raise _Invalid(f"{show(text)} is not a ULA prefix inside fd00::/8 of length 8 to 64")
    return net


def _pattern(text: str) -> str:
    bad = any(c.isspace() or c == "/" or not c.isprintable() for c in text)
    if not text or len(text) > _PATTERN_MAX or bad:
        raise _Invalid(f"{show(text)} is not an interface name pattern (1 to {_PATTERN_MAX} "
                       "characters, no spaces or /)")
    return text


_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}$)({_LABEL})(\.{_LABEL})*")


def _domain(text: str) -> str:
    if not _DOMAIN.fullmatch(text):
        raise _Invalid(f"{show(text)} is not a domain name (lower-case letters, digits, - and .)")
    return text


def _url(text: str) -> str:
    if not text.startswith("https://") or len(text) > 2048 or any(c.isspace() for c in text):
        raise _Invalid(f"{show(text)} is not an https:// URL")
    return text


_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _account(text: str) -> str:
    if not _ACCOUNT.fullmatch(text):
        raise _Invalid(f"{show(text)} is not a user or group name")
    if text == "root":
        raise _Invalid("root is refused: the join proxy faces unauthenticated pledges")
    return text


def _registrar_id(text: str) -> int:
    from ..brski.registrar.registrar_id import RegistrarIdError, parse_registrar_id
    try:
        return parse_registrar_id(text)
    except RegistrarIdError as exc:
        raise _Invalid(str(exc)) from None


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise _Invalid(f"{show(text)} is not a whole number from {low} to {high}")
        return int(text)
    return convert


@dataclass(frozen=True)
class OptionSpec:
    """One option of `config acp 'main'`: its converter and what it is for (as in the docs)."""
    name: str
    convert: Callable[[str], Any]
    allowed: str
    meaning: str
    is_list: bool = False

    @property
    def default(self) -> Any:
        value = next(f.default for f in fields(AcpConfig) if f.name == self.name)
        return None if self.name == "control_socket" else value


_BOOL = "1/0, yes/no, on/off, true/false, enabled/disabled"
_ABS = "absolute path"
OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec("enabled", _bool, _BOOL, "Run the ACP node at all."),
    OptionSpec("ldevid_cert", _path, _ABS, "This node's ACP domain certificate (LDevID), PEM; "
               "without it the node enrols with BRSKI."),
    OptionSpec("ldevid_key", _path, _ABS, "Private key of ldevid_cert, PEM; give both or neither."),
    OptionSpec("trust_anchors", _path, _ABS, "The ACP domain CA certificate(s), PEM: peers' "
               "certificates must chain to these."),
    OptionSpec("idevid_cert", _path, _ABS, "The manufacturer-installed IDevID certificate the "
               "BRSKI pledge presents."),
    OptionSpec("idevid_key", _path, _ABS, "Private key of idevid_cert; give both or neither."),
    OptionSpec("manufacturer_trust_anchor", _path, _ABS, "Manufacturer CA(s) that pledges' "
               "IDevIDs must chain to (registrar, join proxy)."),
    OptionSpec("dodag_root", _bool, _BOOL, "Be the RPL DODAG root (explicitly configured root, "
               "DODAGPreference 0b100)."),
    OptionSpec("prefix", _prefix, "IPv6 prefix inside fd00::/8, length 8 to 64, no host bits",
               "For a DODAG root only: the ACP address range it is root for; unset: the /48 ULA "
               "of its acp-node-name."),
    OptionSpec("registrar", _bool, _BOOL, "Act as the ACP/BRSKI registrar."),
    OptionSpec("ignore_interfaces", _pattern, "fnmatch patterns (e.g. wan*, eth0.*)",
               "Host interfaces never adopted into the ACP. A list; an option is split at spaces.",
               is_list=True),
    OptionSpec("namespace_dull", _netns, "netns name", "Name of the DULL network namespace."),
    OptionSpec("namespace_acp", _netns, "netns name, differs from namespace_dull",
               "Name of the ACP network namespace."),
    OptionSpec("run_dir", _path, _ABS, "Runtime state (sockets, IKE daemon files) of this node."),
    OptionSpec("control_socket", _path, f"absolute path, at most {SUN_PATH_MAX} bytes",
               "The control socket (JSON lines) acpctl and ubus use; unset: <run_dir>/acpd.sock."),
    OptionSpec("ubus_socket", _path, f"absolute path, at most {SUN_PATH_MAX} bytes",
               "ubusd's socket, where acpd registers ubus object acp; unset: "
               "/var/run/ubus/ubus.sock, else /var/run/ubus.sock."),
    OptionSpec("log_dir", _path, _ABS, "Log files of this node."),
    OptionSpec("log_level", _level, ", ".join(LOG_LEVELS), "Least severe message logged."),
    OptionSpec("rpl_external", _bool, _BOOL, "Run unstrung's sunshine for RPL instead of the "
               "built-in RPL (same role and prefix)."),
    OptionSpec("rpl_sunshine", _path, _ABS, "The sunshine binary; unset: searched in PATH."),
    OptionSpec("registrar_domain", _domain, "domain name, e.g. acp.example.com",
               "The ACP domain a registrar enrols nodes into (required with registrar 1)."),
    OptionSpec("registrar_dir", _path, _ABS, "A registrar's state: domain CA, address allocations "
               "(sqlite), its own certificate; created on first start."),
    OptionSpec("registrar_port", _int_range(1, 65535), "1 to 65535",
               "TCP port of the registrar's BRSKI/EST server in the ACP namespace."),
    OptionSpec("registrar_masa_url", _url, "https:// URL", "MASA for IDevIDs that carry no "
               "MASA URL extension; unset: such pledges are refused."),
    OptionSpec("registrar_ca_cert", _path, _ABS, "An operator's CA for the registrar: its "
               "certificate followed by the chain up to the operator's root (PEM); unset: the "
               "registrar makes its own root CA in registrar_dir."),
    OptionSpec("registrar_ca_key", _path, _ABS, "The key of registrar_ca_cert (PEM, "
               "unencrypted; keep it 0600)."),
    OptionSpec("registrar_id", _registrar_id, "1 to 12 hex digits (not 0, at most "
               "3fffffffffff) or a MAC address", "The registrar's domain-unique Registrar-ID "
               "(RFC 8994 §6.11.7.2), the part of every address it allocates that tells "
               "registrars apart; unset: derived from its CA's key at the first start."),
    OptionSpec("join_proxy", _bool, _BOOL, "Once enrolled, relay pledges to the registrar "
               "(BRSKI join proxy, an unprivileged process)."),
    OptionSpec("join_proxy_user", _account, "user name, not root", "User the join proxy runs as."),
    OptionSpec("join_proxy_group", _account, "group name, not root",
               "Group the join proxy runs as; unset: the user's primary group."),
    OptionSpec("join_proxy_port", _int_range(0, 65535), "0 to 65535",
               "TCP port on each DULL link-local address; 0: the kernel picks (the port is in "
               "the AN_Proxy flood)."),
    OptionSpec("join_proxy_max_connections", _int_range(1, 4096), "1 to 4096",
               "Pledge circuits at once."),
    OptionSpec("join_proxy_max_per_pledge", _int_range(1, 4096), "1 to 4096",
               "Circuits at once from one pledge address."),
    OptionSpec("join_proxy_idle_timeout", _int_range(1, 86400), "1 to 86400 seconds",
               "Close a circuit idle this long."),
    OptionSpec("discovery_interval", _int_range(1, 3600), "1 to 3600 seconds",
               "Period of the AN_ACP flood on each link (RFC 8994 §6.4 recommends 60; below "
               "that only in labs). A neighbour is kept at most 3.5 periods unheard."),
    OptionSpec("crl_refresh", _int_range(10, 86400), "10 to 86400 seconds",
               "How often the node fetches the CRL from the distribution point named in its "
               "certificate (also at start and when a channel comes up); a revoked peer's "
               "channels close within this time."),
    OptionSpec("crl_file", _path, _ABS, "Where the last good CRL is kept across restarts; "
               "unset: acp-crl.pem beside ldevid_cert."),
)
_SPECS = {spec.name: spec for spec in OPTIONS}


def _unknown(name: str) -> str:
    import difflib  # only to name what a misspelt option was meant to be
    close = difflib.get_close_matches(name, _SPECS, n=1)
    hint = f"did you mean {close[0]}?" if close else "the options are listed in files/acp.config"
    return f"option {name}: unknown option in config {SECTION_TYPE} '{SECTION_NAME}' ({hint})"


def _convert(spec: OptionSpec, option: UciOption, filename: str) -> Any:
    if not spec.is_list:
        if option.is_list:
            raise ConfigError(filename, option.line, f"option {spec.name}: takes one value; write "
                              f"'option {spec.name} ...', not 'list'")
        value = option.values[0]
        try:
            return spec.convert(value.text)
        except _Invalid as exc:
            raise ConfigError(filename, value.line, f"option {spec.name}: {exc}") from None
    # A `list` line is one pattern; an `option` may hold several, separated by spaces.
    items = [(word, v.line) for v in option.values
             for word in ([v.text] if option.is_list else v.text.split())]
    out = []
    for text, line in items:
        try:
            out.append(spec.convert(text))
        except _Invalid as exc:
            raise ConfigError(filename, line, f"{'list' if option.is_list else 'option'} "
                              f"{spec.name}: {exc}") from None
    return tuple(out)


def _check_together(config: AcpConfig, lines: dict[str, int], filename: str) -> None:
    """Rules between options; the error names the option the file set (the later one if both)."""
    def fail(names: tuple[str, ...], message: str) -> None:
        name = max((n for n in names if n in lines), key=lambda n: lines[n])
        raise ConfigError(filename, lines[name], f"option {name}: {message}")

    if config.namespace_dull == config.namespace_acp:
        fail(("namespace_dull", "namespace_acp"),
             f"{show(config.namespace_acp)} is both namespace_dull and namespace_acp; "
             "they must differ")
    if config.prefix is not None and not config.dodag_root:
        fail(("prefix",), "only meaningful with 'option dodag_root 1'")
    for cert, key in (("ldevid_cert", "ldevid_key"), ("idevid_cert", "idevid_key"),
                      ("registrar_ca_cert", "registrar_ca_key")):
        if (cert in lines) != (key in lines):
            fail((cert, key), f"{cert} and {key} go together: give both or neither")
    if config.registrar and config.registrar_domain is None:
        fail(("registrar",), "a registrar needs option registrar_domain (e.g. acp.example.com)")
    if config.ubus_socket is not None and len(str(config.ubus_socket).encode()) > SUN_PATH_MAX:
        fail(("ubus_socket",), f"ubus socket {show(str(config.ubus_socket))} is longer than the "
             f"{SUN_PATH_MAX} bytes a Unix socket path may have")
    sock = str(config.control_socket)
    if len(sock.encode()) > SUN_PATH_MAX:
        derived = "control_socket" not in lines
        fail(("run_dir",) if derived else ("control_socket",),
             f"control socket {show(sock)} is {len(sock.encode())} bytes, more than the "
             f"{SUN_PATH_MAX} a Unix socket path may have" +
             ("; shorten run_dir or set option control_socket" if derived else ""))


def config_from_uci(package: UciPackage) -> AcpConfig:
    """Validate the `acp` sections of a parsed file into an AcpConfig."""
    filename = package.filename
    main = None
    for section in package.sections:
        if section.type != SECTION_TYPE:
            continue
        if section.name != SECTION_NAME:
            label = f"'{section.name}'" if section.name else "without a name"
            raise ConfigError(filename, section.line,
                              f"config {SECTION_TYPE} {label}: only config {SECTION_TYPE} "
                              f"'{SECTION_NAME}' is read; name the section '{SECTION_NAME}'")
        main = section
    # imported here: connect.config reads UCI through this package
    from ..connect.config import connects_from_uci
    connects = connects_from_uci(package)
    if main is None:
        return AcpConfig(connect=connects, source=filename)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for option in main.options:
        spec = _SPECS.get(option.name)
        if spec is None:
            raise ConfigError(filename, option.line, _unknown(option.name))
        values[option.name] = _convert(spec, option, filename)
        lines[option.name] = option.line
    config = AcpConfig(**values, connect=connects, source=filename)
    _check_together(config, lines, filename)
    return config


def parse_config(text: str, filename: str = "<string>") -> AcpConfig:
    """UCI text to a validated AcpConfig; ConfigError names file, line, option, allowed values."""
    return config_from_uci(parse_uci(text, filename))


def load_config(path: Path | None) -> AcpConfig:
    """Read the config file (None: all defaults). Pure: reads the file and changes nothing."""
    if path is None:
        return AcpConfig()
    return config_from_uci(read_uci_file(path))
