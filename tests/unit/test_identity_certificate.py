"""ACP certificates: the digest's DER vectors, name extraction and its fallbacks, loading, keys."""
from __future__ import annotations

import base64
import datetime as dt
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from acp_openwrt.identity.certificate import (
    ID_ON_ACP_NODE_NAME,
    CertificateError,
    acp_node_name_general_name,
    certificate_node_name,
    check_key_strength,
    decode_acp_node_name_value,
    encode_acp_node_name_value,
    find_acp_node_name,
    key_strength_problem,
    load_certificate,
    load_certificates,
)
from acp_openwrt.identity.node_name import NodeNameError
from acp_openwrt.lab.pki import TestCA, generate_key

RFC_NAME = "fd89b714f3db00000200000064000000+area51.research@acp.example.com"
RFC_GENERAL_NAME = (
    "a04e06082b0601050507080aa042164066643839623731346633646230303030303230303030303036343030"
    "303030302b6172656135312e7265736561726368406163702e6578616d706c652e636f6d")
RFC_EXTN_VALUE = "3050" + RFC_GENERAL_NAME
SHORT_NAME = "fd739fc23c3440112233445500000000+@acp.example.com"
SHORT_GENERAL_NAME = (
    "a03f06082b0601050507080aa033163166643733396663323363333434303131323233333434353530303030"
    "303030302b406163702e6578616d706c652e636f6d")
PYASN1_VECTOR = ("oE4GCCsGAQUFBwgKoEIWQGZkODliNzE0RjNkYjAwMDAwMjAwMDAwMDY0MDAwMDAwK2FyZWE1MS5yZXNl"
                 "YXJjaEBhY3AuZXhhbXBsZS5jb20=")


def _san_der(*names: x509.GeneralName) -> bytes:
    return x509.SubjectAlternativeName(list(names)).public_bytes()


def _cert_with_raw_san(extn_value: bytes) -> x509.Certificate:
    """A certificate whose subjectAltName extnValue is exactly these bytes (no re-encoding)."""
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "raw")]))
            .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "raw")]))
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.UnrecognizedExtension(x509.SubjectAlternativeName.oid,
                                                      extn_value), critical=False)
            .sign(key, hashes.SHA256()))
    return x509.load_der_x509_certificate(cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("pki"), domain="acp.example.com")


# --- DER vectors (digest A.4) ----------------------------------------------------------------

def test_rfc_example_general_name_vector() -> None:
    der = _san_der(acp_node_name_general_name(RFC_NAME))
    assert der.hex() == RFC_EXTN_VALUE
    assert der[2:].hex() == RFC_GENERAL_NAME


def test_short_name_general_name_vector() -> None:
    assert _san_der(acp_node_name_general_name(SHORT_NAME))[2:].hex() == SHORT_GENERAL_NAME


def test_pyasn1_vector_decodes_to_uppercase_f_name() -> None:
    general_name = base64.b64decode(PYASN1_VECTOR)
    cert = _cert_with_raw_san(bytes([0x30, len(general_name)]) + general_name)
    found = find_acp_node_name(cert)
    assert found is not None and found.carrier == "otherName"
    assert found.text == "fd89b714F3db00000200000064000000+area51.research@acp.example.com"
    assert found.node_name.acp_address == "fd89b714f3db00000200000064000000"
    assert found.node_name.routing_subdomain == "area51.research.acp.example.com"


def test_rfc_vector_extracted_from_raw_extension() -> None:
    cert = _cert_with_raw_san(bytes.fromhex(RFC_EXTN_VALUE))
    found = find_acp_node_name(cert)
    assert found is not None and found.text == RFC_NAME


# --- the IA5String codec ---------------------------------------------------------------------

def test_long_form_length_round_trip() -> None:
    name = "fd89b714f3db00000200000064000000+" + "a" * 60 + "." + "b" * 60 + "@acp.example.com"
    der = encode_acp_node_name_value(name)
    assert der[:3] == bytes([0x16, 0x81, len(name)])
    assert decode_acp_node_name_value(der) == name


@pytest.mark.parametrize("der, reason", [
    (b"\x0c\x03a@b", r"has tag 0x0c, expected IA5String \(0x16\)"),
    (b"\x16", "truncated"),
    (b"\x16\x05a@b", "length 5 does not match the 3 bytes present"),
    (b"\x16\x02a@b", "length 2 does not match the 3 bytes present"),
    (b"\x16\x81\x03a@b", "not minimally encoded"),
    (b"\x16\x80a@b\x00\x00", "indefinite length"),
    (b"\x16\x00", "AcpNodeName is empty"),
    (b"\x16\x03\xc3\xa9@", "outside IA5"),
])
def test_decoder_rejects_malformed_values(der: bytes, reason: str) -> None:
    with pytest.raises(CertificateError, match=reason):
        decode_acp_node_name_value(der)


def test_builder_refuses_invalid_and_legacy_names() -> None:
    with pytest.raises(NodeNameError):
        acp_node_name_general_name("no-at-sign")
    with pytest.raises(NodeNameError, match="legacy"):
        acp_node_name_general_name("rfc8994+" + SHORT_NAME)
    legacy = acp_node_name_general_name("rfc8994+" + SHORT_NAME, allow_legacy=True)
    assert legacy.type_id == ID_ON_ACP_NODE_NAME


# --- extraction from certificates ------------------------------------------------------------

def test_other_name_extraction(ca: TestCA) -> None:
    node = ca.issue_node("on", acp_node_name=RFC_NAME)
    found = find_acp_node_name(load_certificate(node.cert_path))
    assert found is not None
    assert (found.text, found.carrier) == (RFC_NAME, "otherName")
    assert found.node_name.rsub == "area51.research"


def test_legacy_prefix_inside_other_name(ca: TestCA) -> None:
    node = ca.issue_node("lamps", acp_node_name="rfc8994+" + SHORT_NAME)
    found = find_acp_node_name(node.certificate)
    assert found is not None and found.carrier == "otherName"
    assert found.node_name.acp_address == "fd739fc23c3440112233445500000000"


def test_rfc822_fallback_with_draft_prefix(ca: TestCA) -> None:
    node = ca.issue_node("minerva", rfc822_name="rfcSELF+" + SHORT_NAME)
    found = find_acp_node_name(node.certificate)
    assert found is not None and found.carrier == "rfc822Name"
    assert found.node_name.domain == "acp.example.com"


def test_email_address_fallback(ca: TestCA) -> None:
    node = ca.issue_node("mail", email_address="rfc8994+" + SHORT_NAME)
    found = find_acp_node_name(node.certificate)
    assert found is not None and found.carrier == "emailAddress"


def test_other_name_preferred_over_rfc822(ca: TestCA) -> None:
    node = ca.issue_node("both", acp_node_name=RFC_NAME, rfc822_name="rfcSELF+" + SHORT_NAME,
                         email_address="0+@other.example")
    found = find_acp_node_name(node.certificate)
    assert found is not None and (found.text, found.carrier) == (RFC_NAME, "otherName")


def test_rfc822_preferred_over_email_and_plain_mail_skipped(ca: TestCA) -> None:
    node = ca.issue_node("r", rfc822_name="ops@example.com",
                         email_address="rfc8994+" + SHORT_NAME)
    found = find_acp_node_name(node.certificate)
    assert found is not None and found.carrier == "emailAddress"
    node2 = ca.issue_node("r2", rfc822_name="rfcSELF+0+@acp.example.com",
                          email_address="rfc8994+" + SHORT_NAME)
    found2 = find_acp_node_name(node2.certificate)
    assert found2 is not None and found2.carrier == "rfc822Name"
    assert found2.node_name.acp_address == "0"


def test_missing_name(ca: TestCA) -> None:
    assert find_acp_node_name(ca.issue_node("none").certificate) is None
    plain = ca.issue_node("plain", rfc822_name="ops@example.com", email_address="a@b.example")
    assert find_acp_node_name(plain.certificate) is None


@pytest.mark.parametrize("raw, reason", [
    (b"\x0c\x03a@b", "tag 0x0c"),
    (b"\x16\x00", "empty"),
    (b"\x16\x07garbage", "AcpNodeName otherName is malformed: .*exactly one '@'"),
])
def test_malformed_other_name_in_certificate(ca: TestCA, raw: bytes, reason: str) -> None:
    node = ca.issue_node("bad", other_name_value=raw, rfc822_name="rfcSELF+" + SHORT_NAME)
    with pytest.raises(CertificateError, match=reason):
        find_acp_node_name(node.certificate)  # no fallback past a broken otherName


def test_other_name_with_inconsistent_lengths_in_certificate() -> None:
    # otherName [0] holds 5 bytes, the IA5String inside claims 9: undecodable SAN
    general_name = (b"\xa0\x13\x06\x08\x2b\x06\x01\x05\x05\x07\x08\x0a"
                    b"\xa0\x07\x16\x09a@b.exa")
    cert = _cert_with_raw_san(bytes([0x30, len(general_name)]) + general_name)
    with pytest.raises(CertificateError, match="not a valid DER X.509 certificate: subjectAltName"):
        find_acp_node_name(cert)


def test_two_acp_other_names_refused(ca: TestCA) -> None:
    node = ca.issue_node("two", acp_node_name=RFC_NAME,
                         other_name_value=encode_acp_node_name_value(SHORT_NAME))
    with pytest.raises(CertificateError, match="2 AcpNodeName otherNames"):
        find_acp_node_name(node.certificate)


# --- loading ---------------------------------------------------------------------------------

def test_load_pem_der_and_file(ca: TestCA) -> None:
    node = ca.issue_node("load", acp_node_name=SHORT_NAME)
    pem = node.cert_path.read_bytes()
    der = node.certificate.public_bytes(serialization.Encoding.DER)
    assert load_certificate(pem) == load_certificate(der) == load_certificate(str(node.cert_path))
    assert load_certificate(node.cert_path) == node.certificate


def test_load_chain_file(tmp_path) -> None:
    root = TestCA.create(tmp_path)
    sub2 = root.issue_intermediate("i1").issue_intermediate("i2")
    node = sub2.issue_node("n", acp_node_name=SHORT_NAME)
    assert node.chain_path is not None
    assert load_certificates(node.chain_path) == list(sub2.chain)
    with pytest.raises(CertificateError, match="expected one certificate, found 2"):
        load_certificate(node.chain_path)


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01garbage\xff", "certificate data is not a valid DER X.509 certificate"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
     "certificate data is not a valid PEM X.509 certificate"),
    (b"  \n", "certificate data is empty"),
])
def test_garbage_is_a_one_line_error(data: bytes, reason: str) -> None:
    with pytest.raises(CertificateError) as info:
        load_certificate(data)
    assert str(info.value) == reason


def test_missing_file(tmp_path) -> None:
    with pytest.raises(CertificateError, match="cannot read certificate file .*nope.pem"):
        load_certificate(tmp_path / "nope.pem")


# --- key strength (§6.2.1) -------------------------------------------------------------------

@pytest.mark.parametrize("key_type, problem", [
    ("rsa-1024", "RSA key of 1024 bits is too small (minimum 2048)"),
    ("ec-p224", "EC key on secp224r1 (224 bits) is too small (minimum 256)"),
    ("ec-p192", "EC key on secp192r1 (192 bits) is too small (minimum 256)"),
    ("rsa-2048", None), ("ec-p256", None), ("ec-p384", None), ("ec-p521", None),
])
def test_key_strength(key_type: str, problem: str | None) -> None:
    public = generate_key(key_type).public_key()
    assert key_strength_problem(public) == problem
    if problem:
        with pytest.raises(CertificateError, match="too small"):
            check_key_strength(public)
    else:
        check_key_strength(public)


def test_other_key_types_refused() -> None:
    assert key_strength_problem(ed25519.Ed25519PrivateKey.generate().public_key()) == (
        "Ed25519PublicKey keys are not accepted (RSA or ECDSA only)")


def test_name_and_address_modules_do_not_import_cryptography() -> None:
    code = ("import sys, acp_openwrt.identity, acp_openwrt.identity.node_name, "
            "acp_openwrt.identity.address; "
            "print([m for m in sys.modules if m.startswith('cryptography')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_certificate_node_name_tuple(ca: TestCA) -> None:
    node = ca.issue_node("tuple", rfc822_name="rfcSELF+" + SHORT_NAME)
    name, carrier = certificate_node_name(node.certificate)
    assert (name.format(), carrier) == (SHORT_NAME, "rfc822Name")
    assert certificate_node_name(ca.issue_node("tuple-none").certificate) is None
