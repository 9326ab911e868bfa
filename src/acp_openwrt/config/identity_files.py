"""Where the node's certificates live when the configuration does not say.

One place for the defaults, so that what BRSKI stores after enrolment is what acpd reads on the
next start, and the secure channels use the same files. They are the paths files/acp.config
shows in its comments (OpenWrt keeps them in /etc/acp, which sysupgrade preserves).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .schema import AcpConfig

STATE_DIR = Path("/etc/acp")
DEFAULT_NAMES = {
    "ldevid_cert": "ldevid.pem",
    "ldevid_key": "ldevid.key",
    "trust_anchors": "domain-ca.pem",
    "idevid_cert": "idevid.pem",
    "idevid_key": "idevid.key",
    "manufacturer_trust_anchor": "manufacturer-ca.pem",
}


def with_identity_files(config: AcpConfig, state_dir: Path = STATE_DIR) -> AcpConfig:
    """`config` with every unset certificate/key path set to its default under `state_dir`."""
    unset: dict[str, Any] = {name: state_dir / file for name, file in DEFAULT_NAMES.items()
                             if getattr(config, name) is None}
    return dataclasses.replace(config, **unset) if unset else config
