"""The lab PKI writes real, well-formed X.509 with the knobs the refusal tests rely on."""
from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from acp_openwrt.identity.certificate import (
    ID_ON_ACP_NODE_NAME,
    find_acp_node_name,
    load_certificate,
    load_certificates,
    validity,
)
from acp_openwrt.lab.pki import TestCA, generate_key

NAME = "fd89b714f3db00000200000064000000+area51.research@acp.example.com"
UTC = dt.UTC


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_files_and_flags(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path / "pki", domain="acp.example.com")
    assert ca.cert_path == tmp_path / "pki" / "ca.crt" and ca.anchor_path == ca.cert_path
    assert _mode(ca.key_path) == 0o600 and _mode(ca.cert_path) == 0o644
    cert = load_certificate(ca.cert_path)
    assert cert == ca.certificate == ca.anchor and ca.is_root and ca.chain == ()
    assert cert.subject.rfc4514_string() == "CN=ACP domain CA acp.example.com"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert cert.public_key().curve.name == "secp256r1"
    assert b"PRIVATE KEY" in ca.key_path.read_bytes()


def test_node_certificate_contents(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path)
    node = ca.issue_node("n1", acp_node_name=NAME, rfc822_name="rfcSELF+" + NAME,
                         ip_address="fd89:b714:f3db:0:200:0:6400:0", serial_number="PID:1 SN:42")
    assert (node.cert_path.name, node.key_path.name) == ("n1.crt", "n1.key")
    assert _mode(node.key_path) == 0o600
    assert node.chain_path is None and node.chain == () and node.anchor_path == ca.cert_path
    cert = load_certificate(node.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    other = san.get_values_for_type(x509.OtherName)
    assert [o.type_id for o in other] == [ID_ON_ACP_NODE_NAME]
    assert san.get_values_for_type(x509.RFC822Name) == ["rfcSELF+" + NAME]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.IPv6Address("fd89:b714:f3db:0:200:0:6400:0")]
    assert cert.subject.get_attributes_for_oid(x509.NameOID.SERIAL_NUMBER)[0].value == "PID:1 SN:42"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(ca.certificate)
    found = find_acp_node_name(cert)
    assert found is not None and found.text == NAME and node.acp_node_name == NAME


def test_intermediates_and_chain_file(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    one = root.issue_intermediate("one", path_length=1)
    two = one.issue_intermediate("two")
    assert two.chain == (two.certificate, one.certificate) and two.anchor == root.certificate
    assert not two.is_root and two.anchor_path == root.cert_path
    assert one.certificate.extensions.get_extension_for_class(
        x509.BasicConstraints).value.path_length == 1
    node = two.issue_node("leaf", acp_node_name=NAME)
    assert node.chain_path == tmp_path / "leaf-chain.pem"
    assert load_certificates(node.chain_path) == [two.certificate, one.certificate]
    node.certificate.verify_directly_issued_by(two.certificate)
    two.certificate.verify_directly_issued_by(one.certificate)
    one.certificate.verify_directly_issued_by(root.certificate)


def test_validity_window(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path)
    start, end = dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 1, tzinfo=UTC)
    cert = ca.issue_node("old", not_before=start, not_after=end).certificate
    assert validity(cert) == (start, end)
    fresh = ca.issue_node("fresh").certificate
    assert validity(fresh)[0] < dt.datetime.now(UTC) < validity(fresh)[1]


@pytest.mark.parametrize("key_type, check", [
    ("rsa-2048", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048),
    ("rsa-1024", lambda k: isinstance(k, rsa.RSAPublicKey) and k.key_size == 1024),
    ("ec-p384", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.key_size == 384),
    ("ec-p224", lambda k: isinstance(k, ec.EllipticCurvePublicKey) and k.curve.key_size == 224),
])
def test_key_types(tmp_path: Path, key_type: str, check) -> None:
    node = TestCA.create(tmp_path).issue_node("k", key_type=key_type)
    assert check(node.certificate.public_key())


def test_pss_signing(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path, key_type="rsa-2048", pss=True)
    cert = ca.issue_node("p").certificate
    assert isinstance(cert.signature_algorithm_parameters, padding.PSS)
    cert.verify_directly_issued_by(ca.certificate)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown key type 'dsa-1024'"):
        generate_key("dsa-1024")
    with pytest.raises(ValueError, match="unknown key type 'ec-p999'"):
        generate_key("ec-p999")
    ca = TestCA.create(tmp_path)
    for bad in ("../escape", ".hidden", "", "a/b"):
        with pytest.raises(ValueError, match="must be 1-64 characters"):
            ca.issue_node(bad)
    assert not (tmp_path.parent / "escape.crt").exists()


def test_not_collected_as_tests() -> None:
    assert TestCA.__test__ is False
