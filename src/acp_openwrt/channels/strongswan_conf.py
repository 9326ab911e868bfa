"""The strongswan.conf of one node's charon (pure text; no I/O).

Everything that made strongSwan work over link-local in the lab (lab-notes §3) is here: an
explicit plugin list including `kdf`, `set_sourceif` so IKE leaves with the right ifindex, no
routes installed by charon (acpd owns routing), a per-node VICI socket, and logs on stderr
(the supervisor sends stderr to the node's log file). Retransmission settings decide how fast
DPD declares a peer dead (IKEv2 has no dpd_timeout): timeout * sum(base**i) over the tries.
"""
from __future__ import annotations

from dataclasses import dataclass

# Plugins charon needs for ACP channels (Debian/OpenWrt names). openssl does AES-GCM, ECDH,
# ECDSA and SHA-2; the others are parsing, randomness, the kernel and VICI.
DEFAULT_PLUGINS = ("random", "nonce", "openssl", "pem", "pkcs1", "pkcs8", "x509", "pubkey",
                   "constraints", "kdf", "kernel-netlink", "socket-default", "vici")


@dataclass(frozen=True)
class CharonSettings:
    """What may differ between nodes and deployments."""

    vici_socket: str                      # path as charon sees it
    plugins: tuple[str, ...] = DEFAULT_PLUGINS
    # A link-local peer answers in well under a second, even a small box under load: give up
    # on it after 2 + 3 + 4.5 + 6.75 = 16.25 s (strongSwan's defaults: 165 s), so that a dead
    # neighbour is noticed within dpd_delay + 16.25 s (issue 15: < 30 s).
    retransmit_timeout: float = 2.0
    retransmit_tries: int = 3
    retransmit_base: float = 1.5
    log_level: int = 1                    # strongSwan levels -1..4 for all subsystems
    ike_port: int = 500
    nat_port: int = 4500

    def dead_peer_seconds(self) -> float:
        """How long after the first unanswered DPD request charon gives up on a peer."""
        return sum(self.retransmit_timeout * self.retransmit_base ** i
                   for i in range(self.retransmit_tries + 1))


def render(settings: CharonSettings) -> str:
    """The file's text; values are ours, never user-supplied strings, so no quoting needed."""
    s = settings
    return f"""# written by acpd: this node's charon (ACP secure channels); do not edit
charon {{
    load = {" ".join(s.plugins)}
    port = {s.ike_port}
    port_nat_t = {s.nat_port}
    install_routes = no
    install_virtual_ip = no
    retransmit_timeout = {s.retransmit_timeout:g}
    retransmit_tries = {s.retransmit_tries}
    retransmit_base = {s.retransmit_base:g}
    plugins {{
        socket-default {{
            set_sourceif = yes
        }}
        vici {{
            socket = unix://{s.vici_socket}
        }}
    }}
    syslog {{
    }}
    filelog {{
        acpd {{
            path = stderr
            time_format = %Y-%m-%dT%H:%M:%S
            time_add_ms = yes
            ike_name = yes
            default = {s.log_level}
            flush_line = yes
        }}
    }}
}}
"""
