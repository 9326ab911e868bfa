"""Where a pledge reaches a registrar, and where its identity files are: the plain data the
BRSKI part holds while idle, apart from the BRSKI work (client.py: TLS, CMS, the IDevID), which
it imports only when it tries a proxy or renews (acpd's memory budget, issue 19)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Locator:
    """Where to reach a registrar: a join proxy's (link-local) address, port and DULL link."""
    address: str
    port: int
    ifname: str | None = None

    def __str__(self) -> str:
        scope = f"%{self.ifname}" if self.ifname else ""
        return f"[{self.address}{scope}]:{self.port}"


@dataclass(frozen=True)
class IdentityPaths:
    idevid_cert: Path
    idevid_key: Path
    ldevid_cert: Path
    ldevid_key: Path
    trust_anchors: Path
