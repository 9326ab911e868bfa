"""What one secure channel asks of the IKE daemon: its names and its connection definition.

RFC 8994 §6.8.3: IKEv2, tunnel mode, IPv6 ::/0 both ways, link-local outer addresses, the ACP
certificate, AES-GCM-16 with 256-bit keys, DH group 19 (ECP-256). Pure data, no I/O.

IKE SA proposals, most preferred first (charon as responder picks by its own order,
`prefer_configured_proposals` defaults to yes):
1. AES-GCM-16-256 with PRF_HMAC_SHA2_256 (then _512) and group 19: RFC 8994's choice.
2. RFC 8247's MUST set, which §6.8.3.1.2 requires us to accept: ENCR_AES_CBC (256 and 128
   bit keys) with AUTH_HMAC_SHA2_256_128 and PRF_HMAC_SHA2_256, DH group 14 (MODP-2048); group
   19 is allowed with it too. A peer that offers only this set gets a channel (vm test
   tests/vm/test_ike_interop.py).
ESP stays AES-GCM-16-256 only (§6.8.3.1.1 makes it the only mandatory ESP transform).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

CONN_PREFIX = "acp-"
CHILD_NAME = "acp"
RFC8994_IKE_PROPOSALS = ("aes256gcm16-prfsha256-ecp256", "aes256gcm16-prfsha512-ecp256")
# RFC 8247 §2.1-§2.4 MUSTs for the IKE SA, accepted after ours (never first).
RFC8247_MUST_PROPOSAL = "aes256-aes128-sha256-prfsha256-ecp256-modp2048"
IKE_PROPOSALS = (*RFC8994_IKE_PROPOSALS, RFC8247_MUST_PROPOSAL)
ESP_PROPOSALS = ("aes256gcm16-ecp256", "aes256gcm16")
IFNAME_MAX = 15
ACP_IFNAME_PREFIX = "acp_"
DULL_IFNAME_PREFIX = "acpx"


def conn_name(if_id: int, dull_ifname: str) -> str:
    """`acp-<if_id>-<dull link>`: the if_id and the link survive an acpd restart in charon."""
    return f"{CONN_PREFIX}{if_id}-{dull_ifname}"


def parse_conn_name(name: str) -> tuple[int, str] | None:
    """(if_id, dull link) of one of our connection names, None for anything else."""
    if not name.startswith(CONN_PREFIX):
        return None
    number, sep, link = name[len(CONN_PREFIX):].partition("-")
    if not sep or not link or not number.isdigit():
        return None
    return int(number), link


def dull_ifname(if_id: int) -> str:
    """The interface's name while it waits in DULL for its CHILD SA."""
    return f"{DULL_IFNAME_PREFIX}{if_id:x}"[:IFNAME_MAX]


def acp_ifname(peer_address: ipaddress.IPv6Address, taken: set[str]) -> str:
    """`acp_<low 32 bits of the peer's ACP address>`, suffixed `-N` when the peer already has
    a channel on another link (≤ 15 characters either way)."""
    base = f"{ACP_IFNAME_PREFIX}{int(peer_address) & 0xFFFFFFFF:08x}"
    if base not in taken:
        return base
    for n in range(1, 100):
        name = f"{base}-{n}"
        if name not in taken:
            return name
    raise ValueError(f"no free interface name for peer {peer_address}")


@dataclass(frozen=True)
class ChannelTimers:
    dpd_delay: int = 5            # seconds without inbound traffic before a liveness check
    rekey_time: int = 4 * 3600    # IKE SA rekey
    child_rekey_time: int = 3600


def connection(local_ll: str, peer_ll: str, if_id: int, *, local_id: str | None,
               cert_pem: bytes, anchor_pems: tuple[bytes, ...],
               timers: ChannelTimers = ChannelTimers(),
               initial_contact: str | None = None) -> dict[str, Any]:
    """The VICI load-conn body (swanctl.conf(5) keys).

    The remote identity is left open (%any): strongSwan checks that the peer's certificate
    chains to our CA (cacerts) and confirms the identity the peer claims; acpd then runs the
    §6.2.3 membership check on that certificate and the ID-matches-ACP-address rule. keyingtries
    is 1 and close/DPD actions only clear: retrying is the state machine's job (§6.7 backoff).

    `initial_contact` (the peer's IKE identity, as verified before): after our charon
    restarted, our first IKE_AUTH to the peer must carry INITIAL_CONTACT, which makes the peer
    drop the SAs it still holds with the dead charon at once (RFC 7296 §2.4). charon sends it
    only to a named remote identity (not %any) and when `unique` is neither no nor never, so
    such a connection names the peer and says `replace` until its channel is up again (the
    peer check still runs on the new SA). Not on every first contact:
    when both sides start at once, each one's INITIAL_CONTACT could destroy the other's
    freshly made SA. Without it the Follower keeps the stale SA for good, as its DPD never
    fires: the inbound policy it shares with the new SA keeps looking used.
    """
    local: dict[str, Any] = {"auth": "pubkey", "certs": [cert_pem]}
    if local_id:
        local["id"] = local_id
    return {
        "version": "2",
        "local_addrs": [local_ll],
        "remote_addrs": [peer_ll],
        "mobike": "no",
        "encap": "no",
        "proposals": list(IKE_PROPOSALS),
        "send_cert": "always",
        "send_certreq": "yes",
        "unique": "replace" if initial_contact else "no",
        "keyingtries": "1",
        "dpd_delay": f"{timers.dpd_delay}s",
        "rekey_time": f"{timers.rekey_time}s",
        "local": local,
        "remote": {"auth": "pubkey", "id": initial_contact or "%any",
                   "cacerts": list(anchor_pems)},
        "children": {CHILD_NAME: {
            "mode": "tunnel",
            "local_ts": ["::/0"],
            "remote_ts": ["::/0"],
            "esp_proposals": list(ESP_PROPOSALS),
            "if_id_in": str(if_id),
            "if_id_out": str(if_id),
            "rekey_time": f"{timers.child_rekey_time}s",
            "dpd_action": "clear",
            "close_action": "none",
            "start_action": "none",
        }},
    }
