"""The operator's view of an identity: what `acpctl identity` and `acpctl status` print."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .address import AddressError, address_from_name, ula_prefix
from .node_name import AcpNodeName


def identity_summary(name: AcpNodeName) -> dict[str, Any]:
    """JSON-ready facts of an acp-node-name.

    A name with acp-address "0" or none has no address, prefix length or scheme (null); its
    ula_prefix is then the hash of the routing subdomain. With an address, the ula_prefix is
    the address's own /48, since nodes must not assume it equals the hash (§6.11.2).
    """
    summary: dict[str, Any] = {
        "acp_node_name": name.format(),
        "acp_address": None,
        "prefix_length": None,
        "scheme": None,
        "routing_subdomain": name.routing_subdomain,
        "acp_domain": name.domain,
        "ula_prefix": str(ula_prefix(name.routing_subdomain)),
    }
    if name.has_address:
        try:
            addr = address_from_name(name)
        except AddressError as exc:
            raise AddressError(f"acp-node-name {name}: {exc}") from exc
        summary.update(acp_address=str(addr.address), prefix_length=addr.prefix_length,
                       scheme=addr.scheme.value, ula_prefix=str(addr.ula_prefix))
    return summary


def load_identity_summary(cert_path: Path) -> dict[str, Any]:
    """identity_summary() of an LDevID file; ValueError with a one-line reason if unusable."""
    from .cert_name import certificate_node_name
    from .cert_reader import load_certificate
    try:
        found = certificate_node_name(load_certificate(cert_path))
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from exc
    if found is None:
        raise ValueError("certificate carries no acp-node-name")
    return identity_summary(found[0])
