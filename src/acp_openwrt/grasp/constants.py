"""GRASP (RFC 8990) protocol numbers and defaults, as the RFC names them (§2.6, §4)."""
from __future__ import annotations

from typing import Final

# Message types (RFC 8990 §4).
M_NOOP: Final = 0
M_DISCOVERY: Final = 1
M_RESPONSE: Final = 2
M_REQ_NEG: Final = 3
M_REQ_SYN: Final = 4
M_NEGOTIATE: Final = 5
M_END: Final = 6
M_WAIT: Final = 7
M_SYNCH: Final = 8
M_FLOOD: Final = 9
M_INVALID: Final = 99

MESSAGE_NAMES: Final = {
    M_NOOP: "M_NOOP", M_DISCOVERY: "M_DISCOVERY", M_RESPONSE: "M_RESPONSE",
    M_REQ_NEG: "M_REQ_NEG", M_REQ_SYN: "M_REQ_SYN", M_NEGOTIATE: "M_NEGOTIATE",
    M_END: "M_END", M_WAIT: "M_WAIT", M_SYNCH: "M_SYNCH", M_FLOOD: "M_FLOOD",
    M_INVALID: "M_INVALID",
}

# Option types (RFC 8990 §4).
O_DIVERT: Final = 100
O_ACCEPT: Final = 101
O_DECLINE: Final = 102
O_IPv6_LOCATOR: Final = 103
O_IPv4_LOCATOR: Final = 104
O_FQDN_LOCATOR: Final = 105
O_URI_LOCATOR: Final = 106

LOCATOR_NAMES: Final = {
    O_IPv6_LOCATOR: "O_IPv6_LOCATOR", O_IPv4_LOCATOR: "O_IPv4_LOCATOR",
    O_FQDN_LOCATOR: "O_FQDN_LOCATOR", O_URI_LOCATOR: "O_URI_LOCATOR",
}

# Objective flag bits (RFC 8990 §2.10.2).
F_DISC: Final = 1
F_NEG: Final = 2
F_SYNCH: Final = 4
F_NEG_DRY: Final = 8
F_ALL: Final = F_DISC | F_NEG | F_SYNCH | F_NEG_DRY

IPPROTO_TCP: Final = 6
IPPROTO_UDP: Final = 17

# Constants (RFC 8990 §2.6).
ALL_GRASP_NEIGHBORS_V6: Final = "ff02::13"
ALL_GRASP_NEIGHBORS_V4: Final = "224.0.0.119"
GRASP_LISTEN_PORT: Final = 7017
GRASP_DEF_TIMEOUT: Final = 60000  # ms
GRASP_DEF_LOOPCT: Final = 6
GRASP_DEF_MAX_SIZE: Final = 2048  # bytes; the UDP limit and the unicast minimum

# Our own limits (not from the RFC): a TCP message may be longer than the UDP one when an
# objective allows it, but never unbounded; nesting beyond this depth is refused outright.
DEFAULT_TCP_MAX_SIZE: Final = 65535
MAX_NESTING_DEPTH: Final = 32

UINT32_MAX: Final = 0xFFFFFFFF
