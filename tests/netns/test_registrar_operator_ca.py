"""A registrar running as the operator's sub-CA, with real acpd processes (root).

The operator's PKI is made with the openssl commands docs/brski.md gives (root CA, a sub-CA
for the registrar, the chain file); n2 is the registrar with registrar_ca_cert/_key; n1 and
n3 enrol through it. Their stored trust anchor is the operator's root (the sub-CA below it),
their LDevIDs are issued by the sub-CA, and each verifies the other's certificate with the
check channels run on a new SA (peer_check), through the chain to the root.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from acp_openwrt.channels.peer_check import check_peer
from acp_openwrt.identity.certificate import load_certificate, load_certificates
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.lab.acpd_lab import AcpdLab
from acp_openwrt.lab.operator_pki import SUB_EXT  # the sub-CA extensions, as in docs/brski.md
from acp_openwrt.lab.topology import line

# docs/brski.md, "The operator's CA", steps 1 to 3 (the same commands, the same order)
OPENSSL_STEPS = [
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out root.key",
    "openssl req -x509 -new -key root.key -sha256 -days 7300"
    " -subj '/O=Example/CN=Example Operator Root CA'"
    " -addext 'basicConstraints=critical,CA:TRUE,pathlen:1'"
    " -addext 'keyUsage=critical,keyCertSign,cRLSign' -out root.crt",
    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out registrar-ca.key",
    "openssl req -new -key registrar-ca.key -subj '/O=Example/CN=ACP registrar CA' "
    "-out registrar-ca.csr",
    "openssl x509 -req -in registrar-ca.csr -CA root.crt -CAkey root.key -CAcreateserial"
    " -days 1825 -sha256 -extfile registrar-ca.ext -out registrar-ca.crt",
    "cat registrar-ca.crt root.crt > registrar-ca-chain.pem",
    "openssl verify -CAfile root.crt registrar-ca.crt",
]


def operator_pki(folder: Path) -> tuple[Path, Path, Path]:
    """root.crt, registrar-ca-chain.pem, registrar-ca.key made as the docs say."""
    folder.mkdir()
    (folder / "registrar-ca.ext").write_text(SUB_EXT)
    for step in OPENSSL_STEPS:
        done = subprocess.run(["sh", "-ec", step], cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, (step, done.stderr)
    return folder / "root.crt", folder / "registrar-ca-chain.pem", folder / "registrar-ca.key"


@pytest.fixture
def lab(tmp_path: Path):
    lab = AcpdLab(line(3), tmp_path).up()
    try:
        yield lab
    finally:
        lab.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("pinned", ["sub-CA", "root"])
def test_pledges_enrol_under_the_operator_root(lab: AcpdLab, tmp_path: Path,
                                               pinned: str) -> None:
    root_path, chain_path, key_path = operator_pki(tmp_path / "operator")
    root = load_certificate(root_path)
    sub = load_certificates(chain_path)[0]
    lab.start_masa("n2")
    lab.make_registrar("n2", f"option registrar_ca_cert '{chain_path}'",
                       f"option registrar_ca_key '{key_path}'")
    lab.make_pledge("n1")
    lab.make_pledge("n3")
    lab.start_all(["n2"])
    assert lab.masa is not None
    # the MASA pins the registrar's CA, or the operator's root: then the pledge verifies
    # the registrar's TLS certificate through the sub-CA the registrar sends in TLS
    lab.masa.trust_registrar(sub if pinned == "sub-CA" else root)
    lab.start_all(["n1", "n3"])
    try:
        for name in ("n1", "n3"):
            lab.wait(f"{name} enrolled through the sub-CA registrar",
                     lambda name=name: lab.enrolled(name), timeout=30)
        assert not (lab.nodes["n2"].workdir / "registrar" / "domain-ca.key").exists()
        leaves = {}
        for name in ("n1", "n2", "n3"):
            work = lab.nodes[name].workdir
            anchors = load_certificates(work / "domain-ca.pem")
            assert anchors == [root, sub], name  # the root, then the CA below it
            leaves[name] = load_certificate(work / "ldevid.pem")
            assert leaves[name].issuer == sub.subject
            leaves[name].verify_directly_issued_by(sub)
        der = serialization.Encoding.DER
        for me, peer in (("n1", "n3"), ("n3", "n1"), ("n1", "n2")):
            address = lab.acp_address(peer)
            # as charon hands it to acpd: the peer's certificate, the intermediates it holds
            verdict = check_peer(address, [leaves[peer].public_bytes(der)],
                                 [sub.public_bytes(der)], [root], lab.domain)
            assert verdict.ok, (me, peer, verdict.reason)
            # and from this node's own anchors file alone
            mine = load_certificates(lab.nodes[me].workdir / "domain-ca.pem")
            assert check_domain_membership(leaves[peer], [], mine, lab.domain).ok
        status = lab.ask("n2", "registrar")
        assert status["domain_ca"] == sub.subject.rfc4514_string()
        assert status["enrolled"] == 2
    except BaseException:
        print(lab.logs())
        raise
