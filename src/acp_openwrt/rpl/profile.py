"""A node's RPL settings: who it is (ACP address and prefix), its role, the profile values."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..identity.address import AcpAddress
from . import constants as c
from .options import DodagConfiguration


@dataclass(frozen=True)
class RplConfig:
    address: ipaddress.IPv6Address          # the node's ACP address (DODAGID when root)
    prefix: ipaddress.IPv6Network           # its ACP prefix: the DAO target it owns
    root: bool = False
    preference: int = c.PRF_DEFAULT         # DODAGPreference when root or floating root
    grounded: bool = True                   # a configured root offers the NOC: grounded
    dodag: DodagConfiguration = field(default_factory=DodagConfiguration)  # what a root announces
    dao_delay: float = c.ACP_DAO_DELAY
    dao_ack_timeout: float = c.DAO_ACK_TIMEOUT
    dao_retries: int = c.DAO_RETRIES
    hold_down: float = c.ACP_HOLD_DOWN
    max_parents: int = c.MAX_PARENTS
    neighbor_timeout: float | None = None   # None: 3 x Imax of the DODAG configuration in use
    # Route a DAO's Targets that have no Transit Information (unstrung's DAOs) with the DODAG's
    # Default Lifetime. RFC 6550 §9.4 rules 3 and 6 say to discard such a DAO; False does that,
    # answering DAO-ACK 128 when K is set.
    accept_dao_without_transit: bool = True

    def __post_init__(self) -> None:
        if self.address not in self.prefix:
            raise ValueError(f"ACP address {self.address} is not inside its prefix {self.prefix}")
        if not 0 <= self.preference <= 7:
            raise ValueError(f"DODAGPreference {self.preference} outside 0..7")
        if self.max_parents < 1:
            raise ValueError("max_parents must be at least 1")

    @classmethod
    def for_address(cls, address: ipaddress.IPv6Address | str, *, root: bool = False,
                    registrar: bool = False, acp_connect: bool = False,
                    **kwargs: object) -> RplConfig:
        """Settings from an ACP address: prefix by scheme, preference by role (§6.12.1.12)."""
        acp = AcpAddress.decode(address)
        if root:
            preference = c.PRF_ROOT
        elif registrar:
            preference = c.PRF_REGISTRAR
        elif acp_connect:
            preference = c.PRF_ACP_CONNECT
        else:
            preference = c.PRF_DEFAULT
        return cls(acp.address, acp.prefix, root=root, preference=preference,
                   **kwargs)  # type: ignore[arg-type]
