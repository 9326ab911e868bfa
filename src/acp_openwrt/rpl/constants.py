"""RPL numbers (RFC 6550 §6, §17; RFC 6552 §6.3) and the ACP profile choices (RFC 8994 §6.12.1).

Profile values that RFC 8994 leaves open are chosen here, each with the reason next to it.
"""
from __future__ import annotations

import ipaddress

ICMPV6_TYPE_RPL = 155
ALL_RPL_NODES = ipaddress.IPv6Address("ff02::1a")

# Message codes (§6). Secure variants and the Consistency Check are not used by the ACP.
CODE_DIS = 0x00
CODE_DIO = 0x01
CODE_DAO = 0x02
CODE_DAO_ACK = 0x03
SECURE_CODES = frozenset({0x80, 0x81, 0x82, 0x83, 0x8A})

# Option types (§6.7).
OPT_PAD1 = 0x00
OPT_PADN = 0x01
OPT_METRIC_CONTAINER = 0x02
OPT_ROUTE_INFORMATION = 0x03
OPT_DODAG_CONFIGURATION = 0x04
OPT_RPL_TARGET = 0x05
OPT_TRANSIT_INFORMATION = 0x06
OPT_SOLICITED_INFORMATION = 0x07
OPT_PREFIX_INFORMATION = 0x08
OPT_TARGET_DESCRIPTOR = 0x09

# Mode of Operation: the ACP needs storing mode without multicast (MOP 2) and a root of ours
# announces it. MOP 3 (storing with multicast) MAY be supported "as that is a superset of mode 2"
# (RFC 8994 §6.12.1.3): we join such a DODAG and route unicast in it as in MOP 2; a multicast
# listener target in a child's DAO is refused (no multicast forwarding, RFC 6550 §12).
MOP_STORING_NO_MULTICAST = 2
MOP_STORING_WITH_MULTICAST = 3
SUPPORTED_MOPS = frozenset({MOP_STORING_NO_MULTICAST, MOP_STORING_WITH_MULTICAST})

# §17 constants.
BASE_RANK = 0
INFINITE_RANK = 0xFFFF
RPL_DEFAULT_INSTANCE = 0
DEFAULT_PATH_CONTROL_SIZE = 0
DEFAULT_DIO_INTERVAL_MIN = 3
DEFAULT_DIO_INTERVAL_DOUBLINGS = 20
DEFAULT_DIO_REDUNDANCY_CONSTANT = 10
DEFAULT_MIN_HOP_RANK_INCREASE = 256
DEFAULT_DAO_DELAY = 1.0
INFINITE_LIFETIME = 0xFF  # Path Lifetime / Default Lifetime value meaning "forever"
NO_PATH_LIFETIME = 0x00

# OF0 (RFC 6552 §6.3) and the ACP rank factors (RFC 8994 §6.12.1.6).
OCP_OF0 = 0
DEFAULT_STEP_OF_RANK = 3
MINIMUM_STEP_OF_RANK = 1
MAXIMUM_STEP_OF_RANK = 9
DEFAULT_RANK_STRETCH = 0
MAXIMUM_RANK_STRETCH = 5
DEFAULT_RANK_FACTOR = 1
LOW_SPEED_FACTOR = 5   # links <= 100 Mbit/s; above OF0's MAXIMUM_RANK_FACTOR 4, as RFC 8994 says
HIGH_SPEED_FACTOR = 1

# DAO-ACK status (§6.5.1: 0 accepts, 1-127 accept but suggest another parent, "127-255" reject,
# read as 128-255). RFC 9010 §6.2 splits the octet into E|A|value: 128 is E=1, A=0, value 0,
# "Unqualified rejection" in IANA's RPL Rejection Status registry. We send only these two: 0 when
# every target of the DAO has its route, 128 when the DAO cannot be honoured (nothing applied).
DAO_ACK_ACCEPT = 0
DAO_ACK_REJECT = 128

# Administrative preference (DODAGPreference, RFC 8994 §6.12.1.12).
PRF_ROOT = 0b100
PRF_REGISTRAR = 0b011
PRF_ACP_CONNECT = 0b010
PRF_DEFAULT = 0b001

# ACP DAO policy (RFC 8994 §6.12.1.4).
DAO_RETRIES = 3
DAO_ACK_TIMEOUT = 0.256

# --- Profile choices where RFC 8994 is silent (digest §G.2) ---
# Imin 2^7 ms = 128 ms, 9 doublings -> Imax ~65.5 s: fast start-up and repair, then a DIO a minute.
ACP_DIO_INTERVAL_MIN = 7
ACP_DIO_INTERVAL_DOUBLINGS = 9
# k = 0 is "infinity" (§8.3.1): ACP links are point-to-point channels, so hearing a DIO on one link
# says nothing about the neighbour on another; suppression would only starve neighbours and break
# DIO-based parent liveness.
ACP_DIO_REDUNDANCY = 0
# Room for local repair (§8.2.2.4 rule 3): 16 fast hops (768 each) of rank growth in a Version.
ACP_MAX_RANK_INCREASE = 16 * DEFAULT_STEP_OF_RANK * DEFAULT_MIN_HOP_RANK_INCREASE
# DAO route lifetime: 15 units of 60 s; refreshed every third of it.
ACP_LIFETIME_UNIT = 60
ACP_DEFAULT_LIFETIME = 15
# "Proactive, aggressive" DAOs (§6.12.1.4): batch changes for 100 ms instead of DEFAULT_DAO_DELAY.
ACP_DAO_DELAY = 0.1
# After leaving a DODAG Version (detach or following a parent out), ignore it this long so that
# stale DIOs from our own former sub-DODAG cannot pull us back into a loop.
ACP_HOLD_DOWN = 1.0
MAX_PARENTS = 3
# A neighbour that left DAOs unacknowledged after all retries is not a parent for this long.
ACP_DAO_FAILURE_PENALTY = 10.0
# Downward targets shorter than this are refused: no node owns more than a /64 (ACP-Manual), and a
# short target from a hostile child would capture traffic meant for the rest of the network.
MIN_TARGET_PREFIX_LENGTH = 48
# DAO bodies are kept below the IPv6 minimum MTU (1280 - 40 IPv6 - 4 ICMPv6 header).
MAX_DAO_BODY = 1200
