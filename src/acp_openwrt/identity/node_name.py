"""acp-node-name (RFC 8994 §6.2.2): parse and format.

ABNF (RFC 8994 Figure 2):
    acp-node-name = local-part "@" acp-domain-name
    local-part    = [ acp-address ] [ "+" rsub extensions ]
    acp-address   = 32HEXDIG / "0"
    extensions    = *( "+" extension )

Interoperability choice: names issued by the AnimaGUS/Minerva code base and by the LAMPS
csrattrs examples carry a legacy prefix ("rfcSELF+" from the drafts, "rfc8994+" from the
RFC editor's instruction). We strip it when parsing so those certificates still identify a
domain member, and never emit it: format() always gives the RFC 8994 form.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

LEGACY_PREFIXES = ("rfcself+", "rfc8994+")

_HEX32 = re.compile(r"[0-9a-fA-F]{32}\Z")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_ETEXT = re.compile(r"[A-Za-z0-9!#$%&'*\-/=?^_`{|}~]+\Z")
MAX_NAME_LENGTH = 1024


class NodeNameError(ValueError):
    """An acp-node-name that does not follow RFC 8994 §6.2.2."""


def _check_domain(text: str, what: str) -> None:
    """RFC 1034 §3.5 preferred name syntax: dot-separated labels, 7-bit ASCII only."""
    if not text:
        raise NodeNameError(f"{what} is empty")
    if len(text) > 253:
        raise NodeNameError(f"{what} is longer than 253 characters")
    for label in text.split("."):
        if not _LABEL.match(label):
            raise NodeNameError(f"{what} {text!r} has an invalid label {label!r}")


@dataclass(frozen=True)
class AcpNodeName:
    """The parts of an acp-node-name.

    acp_address is None when omitted (ACP domain membership only, no secure channels),
    "0" when the node learns its address by other means, else 32 lowercase hex digits.
    rsub is None when the "+" part is absent and "" when present but empty.
    """

    acp_address: str | None
    rsub: str | None
    extensions: tuple[str, ...]
    domain: str

    @property
    def routing_subdomain(self) -> str:
        """The string whose SHA-256 gives the ULA Global ID (RFC 8994 §6.11.2)."""
        return f"{self.rsub}.{self.domain}" if self.rsub else self.domain

    @property
    def has_address(self) -> bool:
        """True when the name carries a full 128-bit ACP address."""
        return self.acp_address is not None and self.acp_address != "0"

    @property
    def can_build_channels(self) -> bool:
        """§6.2.3 rule 5: an acp-address (32HEXDIG or "0") must be present."""
        return self.acp_address is not None

    def format(self) -> str:
        """The RFC 8994 form (never a legacy prefix)."""
        local = self.acp_address or ""
        if self.rsub is not None or self.extensions:
            local += "+" + (self.rsub or "")
            local += "".join("+" + ext for ext in self.extensions)
        return f"{local}@{self.domain}"

    def __str__(self) -> str:
        return self.format()


def parse_acp_node_name(text: str) -> AcpNodeName:
    """Parse an acp-node-name; raise NodeNameError with the reason when it is not one."""
    if not isinstance(text, str):
        raise NodeNameError(f"acp-node-name must be a string, not {type(text).__name__}")
    if len(text) > MAX_NAME_LENGTH:
        raise NodeNameError(f"acp-node-name longer than {MAX_NAME_LENGTH} characters")
    if not text.isascii() or not text.isprintable():
        raise NodeNameError("acp-node-name must be printable 7-bit ASCII")
    if text.count("@") != 1:
        raise NodeNameError(f"acp-node-name {text!r} must contain exactly one '@'")
    local, domain = text.split("@")
    _check_domain(domain, "acp-domain-name")
    lowered = local.lower()
    for prefix in LEGACY_PREFIXES:
        if lowered.startswith(prefix):
            local = local[len(prefix):]
            break
    address_part, plus, rest = local.partition("+")
    acp_address: str | None
    if address_part == "":
        acp_address = None
    elif address_part == "0":
        acp_address = "0"
    elif _HEX32.match(address_part):
        acp_address = address_part.lower()
    else:
        raise NodeNameError(
            f"acp-address {address_part!r} is neither 32 hex digits nor '0'")
    rsub: str | None = None
    extensions: tuple[str, ...] = ()
    if plus:
        rsub, *ext_list = rest.split("+")
        if rsub:
            _check_domain(rsub, "routing subdomain")
        for ext in ext_list:
            if not _ETEXT.match(ext):
                raise NodeNameError(f"extension {ext!r} is empty or has characters outside etext")
        extensions = tuple(ext_list)
    # Case is kept as written: the ULA hash is taken over the routing subdomain as issued.
    # Domain comparisons (membership) lowercase both sides instead.
    return AcpNodeName(acp_address, rsub, extensions, domain)
