"""Lab help for revocation tests: LDevIDs issued by a running registrar node's domain CA, as its
EST /simpleenroll would (acp-node-name from its allocator, CRL distribution point, recorded as
issued), without a BRSKI round per node: the vm tier is slow, and enrolment is tested apart."""
from __future__ import annotations

from ..brski.pledge.core import generate_key
from ..brski.registrar.allocation import Allocator
from ..brski.registrar.domain_ca import DomainCA
from ..brski.registrar.revocation import RevocationStore
from ..brski.store import store_identity
from ..revocation.crl import crl_url
from .acpd_lab import AcpdLab


def enrol_from_registrar(lab: AcpdLab, registrar: str, name: str, *extra: str) -> str:
    """Give node `name` an LDevID from `registrar`'s domain CA (its acpd made the CA already);
    returns the acp-node-name."""
    directory = lab.nodes[registrar].workdir / "registrar"
    ca = DomainCA.load_or_create(directory / "domain-ca.crt", directory / "domain-ca.key",
                                 domain=lab.domain)
    allocator = Allocator(directory / "allocations.db", domain=lab.domain)
    store = RevocationStore(allocator.path)
    try:
        allocation = allocator.allocate(f"SN-{name}")
        key = generate_key()
        cert = ca.issue(key.public_key(), allocation.acp_node_name,
                        address=allocation.address.address, serial_number=f"SN-{name}",
                        crl_url=crl_url(lab.acp_address(registrar)))
        store.record_issued(cert)
    finally:
        store.close()
        allocator.close()
    work = lab.nodes[name].workdir
    store_identity(cert, key, list(ca.trust_anchors), cert_path=work / "ldevid.pem",
                   key_path=work / "ldevid.key", trust_anchors_path=work / "domain-ca.pem")
    lab.configure(name, *lab.own_files(name), *extra)
    return allocation.acp_node_name
