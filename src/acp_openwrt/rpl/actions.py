"""What the RPL engine asks its I/O edge to do."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .messages import Message, encode_packet


@dataclass(frozen=True)
class Send:
    """Send message on ifname to dst (ff02::1a or a neighbour's link-local address)."""
    ifname: str
    dst: ipaddress.IPv6Address
    message: Message

    def packet(self) -> bytes:
        """The ICMPv6 message for a raw socket (checksum left to the kernel)."""
        return encode_packet(self.message)
