"""Host interfaces → DULL twins: the plan (sans-I/O), the netlink edge, and the acpd service."""
