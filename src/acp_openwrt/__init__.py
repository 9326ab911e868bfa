"""acp-openwrt: an RFC 8994 Autonomic Control Plane node."""

__version__ = "0.1.0"
