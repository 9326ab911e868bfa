"""Vouchers and voucher-requests: JSON build/parse, strict refusals, CMS sign/verify."""
from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from acp_openwrt.brski import cms
from acp_openwrt.brski.voucher import (
    REQUEST_KEY,
    VOUCHER_KEY,
    Voucher,
    VoucherError,
    new_nonce,
    parse_voucher,
)
from acp_openwrt.lab.pki import TestCA

NOW = dt.datetime(2025, 5, 1, 12, 0, 0, 123000, tzinfo=dt.UTC)


def voucher(**changes: object) -> Voucher:
    leaves = dict(serial_number="SN-1", assertion="proximity", created_on=NOW,
                  pinned_domain_cert=b"\x30\x03\x02\x01\x01", nonce=new_nonce())
    leaves.update(changes)
    return Voucher(**leaves)  # type: ignore[arg-type]


def test_voucher_round_trip() -> None:
    original = voucher(idevid_issuer=b"\x01\x02", domain_cert_revocation_checks=False)
    data = original.to_json()
    assert json.loads(data)[VOUCHER_KEY]["created-on"] == "2025-05-01T12:00:00.123Z"
    assert parse_voucher(data) == original


def test_request_round_trip_keeps_request_leaves() -> None:
    original = Voucher(request=True, serial_number="SN-1", nonce=new_nonce(),
                       proximity_registrar_cert=b"cert", prior_signed_voucher_request=b"cms")
    parsed = parse_voucher(original.to_json(), request=True)
    assert parsed == original
    assert list(json.loads(original.to_json())) == [REQUEST_KEY]


def test_rfc8366_example_with_string_boolean_parses() -> None:
    text = json.dumps({VOUCHER_KEY: {
        "created-on": "2016-10-07T19:31:42Z", "expires-on": "2016-10-21T19:31:42Z",
        "assertion": "verified", "serial-number": "JADA123456789",
        "idevid-issuer": "base64encodedvalue==", "pinned-domain-cert": "base64encodedvalue==",
        "domain-cert-revocation-checks": "true", "last-renewal-date": "2017-10-07T19:31:42Z"}})
    parsed = parse_voucher(text.encode())
    assert parsed.domain_cert_revocation_checks is True
    assert parsed.expires_on == dt.datetime(2016, 10, 21, 19, 31, 42, tzinfo=dt.UTC)


def test_unknown_leaves_are_ignored() -> None:
    document = json.loads(voucher().to_json())
    document[VOUCHER_KEY]["future-leaf"] = {"x": 1}
    assert parse_voucher(json.dumps(document).encode()).serial_number == "SN-1"


@pytest.mark.parametrize("mutate, message", [
    (lambda v: v.pop("serial-number"), "serial-number"),
    (lambda v: v.pop("pinned-domain-cert"), "pinned-domain-cert"),
    (lambda v: v.pop("created-on"), "created-on"),
    (lambda v: v.update(assertion="trusted"), "assertion"),
    (lambda v: v.update({"expires-on": "2030-01-01T00:00:00Z"}), "both nonce and expires-on"),
    (lambda v: v.update({"created-on": "yesterday"}), "date-and-time"),
    (lambda v: v.update({"pinned-domain-cert": "not base64!"}), "base64"),
    (lambda v: v.update({"serial-number": 12}), "serial-number"),
    (lambda v: v.update({"nonce": "AAAA"}), "octets"),
    (lambda v: v.update({"domain-cert-revocation-checks": "yes"}), "boolean"),
])
def test_bad_vouchers_are_refused(mutate, message: str) -> None:
    document = json.loads(voucher().to_json())
    mutate(document[VOUCHER_KEY])
    with pytest.raises(VoucherError, match=message):
        parse_voucher(json.dumps(document).encode())


@pytest.mark.parametrize("data", [
    b"", b"[]", b"{", b'{"ietf-voucher:voucher": 1}', b"\xff\xfe",
    b'{"ietf-voucher:voucher": {}, "other": 1}',
    b'{"ietf-voucher:voucher": {"serial-number": "a", "serial-number": "b"}}',
    b"[" * 100000,
])
def test_garbage_is_a_voucher_error(data: bytes) -> None:
    with pytest.raises(VoucherError):
        parse_voucher(data)


def test_request_json_is_not_a_voucher() -> None:
    request = Voucher(request=True, serial_number="SN-1")
    with pytest.raises(VoucherError, match="ietf-voucher:voucher"):
        parse_voucher(request.to_json())


def test_nonce_is_fresh_and_16_bytes() -> None:
    a, b = new_nonce(), new_nonce()
    assert a != b and len(base64.b64decode(a)) == 16


# --- CMS -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory):
    ca = TestCA.create(tmp_path_factory.mktemp("cms"))
    return ca, ca.issue_node("masa")


def test_cms_sign_verify_uses_the_voucher_content_type(signer) -> None:
    ca, node = signer
    content = voucher().to_json()
    signed = cms.verify(cms.sign(content, node.certificate, node.private_key,
                                 chain=[ca.certificate]))
    assert signed.content == content
    assert signed.content_type == cms.ID_CT_ANIMA_JSON_VOUCHER
    assert signed.signer == node.certificate
    assert signed.certificates == (node.certificate, ca.certificate)
    assert signed.signing_time is not None


def test_cms_with_rsa_and_id_data(tmp_path) -> None:
    ca = TestCA.create(tmp_path, key_type="rsa-2048")
    node = ca.issue_node("r", key_type="rsa-2048")
    signed = cms.verify(cms.sign(b"{}", node.certificate, node.private_key,
                                 content_type=cms.ID_DATA))
    assert signed.content_type == cms.ID_DATA


def test_cms_signer_outside_the_object_must_be_given(signer) -> None:
    ca, node = signer
    data = cms.sign(b"x", node.certificate, node.private_key)
    # drop nothing: the signer is inside; a candidate list with another cert changes nothing
    assert cms.verify(data, signer_candidates=[ca.certificate]).signer == node.certificate


def test_cms_signature_by_another_key_fails(signer, tmp_path) -> None:
    ca, node = signer
    other = TestCA.create(tmp_path).issue_node("other")
    # signed by `other`'s key but claiming `node`'s certificate
    forged = cms.sign(b"x", node.certificate, other.private_key)
    with pytest.raises(cms.CmsError, match="does not verify"):
        cms.verify(forged)


@pytest.mark.parametrize("data", [b"", b"\x30\x00", b"garbage", b"\x30\x82\xff\xff" + b"\x00" * 8])
def test_cms_garbage(data: bytes) -> None:
    with pytest.raises(cms.CmsError):
        cms.verify(data)


def test_certs_only_round_trip(signer) -> None:
    ca, node = signer
    assert cms.load_certs_only(cms.certs_only([node.certificate, ca.certificate])) == \
        [node.certificate, ca.certificate]
    with pytest.raises(cms.CmsError):
        cms.load_certs_only(b"\x30\x03\x02\x01\x00")


def _ipv6_crldp_certificate(key, pad: int):
    """A certificate whose CRL distribution point is an IPv6 literal, `pad` bytes longer."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pledge")])
    url = "http://[fd73:9fc2:3c34:0:c8e:bc89:faa:2]/acp.crl"
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(4242 + pad)
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("p" * (1 + pad))]), False)
            .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(url)], None, None, None)]), False)
            .sign(key, hashes.SHA256()))


def test_cms_keeps_certificates_whose_length_ends_in_0x80() -> None:
    """asn1crypto takes a long-form length ending in 0x80 for an indefinite one and re-encodes
    the certificate, which fails on an IPv6 CRLDP URI: the registrar answered every
    voucher-request 500 for such a certificate (one length in 256)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())

    def size(cert) -> int:
        return len(cert.public_bytes(serialization.Encoding.DER))

    def content_ends_in_0x80(cert) -> bool:   # header: 30 82 <2 length bytes>
        return (size(cert) - 4) & 0xFF == 0x80

    # An ECDSA signature is 70 to 72 bytes at random, so one certificate per pad can skip a
    # size: each pad is signed again until the length fits (the CI once found none in 600).
    lone = next(cert for pad in range(300) for _ in range(16)
                if content_ends_in_0x80(cert := _ipv6_crldp_certificate(key, pad)))
    certs = [_ipv6_crldp_certificate(key, pad) for pad in range(300)]
    plain = [c for c in certs if not content_ends_in_0x80(c)]
    pair = next((a, b) for a in plain for b in plain  # the set's length, neither certificate's
                if (size(a) + size(b)) & 0xFF == 0x80)
    for signer, chain in ((lone, []), (pair[0], [pair[1]])):
        signed = cms.verify(cms.sign(b"{}", signer, key, chain=chain))
        assert signed.signer == signer
        assert set(signed.certificates) == {signer, *chain}
