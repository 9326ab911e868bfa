"""The parse-only certificate reader (identity/cert_reader.py, der.py) and the OpenSSL-free
signature checks (identity/signature.py): the same view as cryptography's on every kind of
certificate the lab PKI makes, the same verdicts on signatures, and a clear refusal of bytes
that are not DER (truncated, overlong, flipped)."""
from __future__ import annotations

import datetime as dt
import ipaddress
import random
from pathlib import Path

import cryptography
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptographyInvalid
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from acp_openwrt.identity import der, signature
from acp_openwrt.identity.cert_reader import (
    Certificate,
    CertificateError,
    as_certificate,
    load_certificates,
    validity,
)
from acp_openwrt.lab.pki import TestCA

NAME = "fd89b714f3db00000200000064000001+area51@acp.example.com"
DER = serialization.Encoding.DER


def _extension(cert: x509.Certificate, kind: type) -> object | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _same_view(real: x509.Certificate) -> None:
    mine = Certificate(real.public_bytes(DER))
    assert mine.serial_number == real.serial_number
    assert mine.issuer.der == real.issuer.public_bytes()
    assert mine.subject.der == real.subject.public_bytes()
    assert mine.issuer.rfc4514_string() == real.issuer.rfc4514_string()
    assert mine.subject.rfc4514_string() == real.subject.rfc4514_string()
    assert validity(mine) == validity(real)  # (cryptography 41 has only the naive ones)
    assert mine.tbs_bytes == real.tbs_certificate_bytes
    assert mine.signature == real.signature
    assert mine.signature_algorithm_oid == real.signature_algorithm_oid.dotted_string
    key = real.public_key()
    spki = key.public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert mine.public_key.der == spki
    assert mine.public_key.key_size == key.key_size  # type: ignore[union-attr]
    if isinstance(key, ec.EllipticCurvePublicKey):
        assert mine.public_key.curve == key.curve.name
    san = _extension(real, x509.SubjectAlternativeName)
    if san is None:
        assert mine.san == ()
    else:
        others = [(o.type_id.dotted_string, o.value)
                  for o in san.get_values_for_type(x509.OtherName)]  # type: ignore[attr-defined]
        assert mine.san_values("otherName") == others
        assert mine.san_values("rfc822Name") == \
            san.get_values_for_type(x509.RFC822Name)  # type: ignore[attr-defined]
        assert mine.san_values("iPAddress") == \
            san.get_values_for_type(x509.IPAddress)  # type: ignore[attr-defined]
    constraints = _extension(real, x509.BasicConstraints)
    assert mine.basic_constraints == (None if constraints is None else (
        constraints.ca, constraints.path_length))  # type: ignore[attr-defined]
    usage = _extension(real, x509.KeyUsage)
    if usage is None:
        assert mine.key_usage is None
    else:
        assert bool(mine.key_usage & (1 << 5)) == usage.key_cert_sign  # type: ignore[attr-defined]
        assert bool(mine.key_usage & 1) == usage.digital_signature  # type: ignore[attr-defined]
    assert [e.oid for e in mine.extensions] == [e.oid.dotted_string for e in real.extensions]
    assert [e.critical for e in mine.extensions] == [e.critical for e in real.extensions]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[x509.Certificate, object]]:
    """(certificate, issuer certificate) of each kind the lab makes."""
    base = tmp_path_factory.mktemp("pki")
    out: list[tuple[x509.Certificate, object]] = []
    roots = [TestCA.create(base / "ec", domain="acp.example.com"),
             TestCA.create(base / "p384", key_type="ec-p384", path_length=2),
             TestCA.create(base / "p521", key_type="ec-p521"),
             TestCA.create(base / "rsa", key_type="rsa-2048"),
             TestCA.create(base / "pss", key_type="rsa-2048", pss=True)]
    for root in roots:
        out.append((root.certificate, root.certificate))
        sub = root.issue_intermediate("sub", key_type="ec-p256")
        out.append((sub.certificate, root.certificate))
        for kind in ("ec-p256", "ec-p384", "ec-p224", "rsa-2048", "rsa-1024"):
            node = root.issue_node(f"n-{kind}", acp_node_name=NAME, key_type=kind,
                                   ip_address="fd89:b714:f3db:0:200:0:6400:1")
            out.append((node.certificate, root.certificate))
        legacy = root.issue_node("legacy", rfc822_name="rfcSELF+" + NAME,
                                 email_address="x+y@example.com", serial_number="S1 (x)")
        out.append((legacy.certificate, root.certificate))
        out.append((sub.issue_node("leaf", acp_node_name=NAME).certificate, sub.certificate))
    return out


def test_the_same_view_as_cryptography(pki: list) -> None:
    for cert, _ in pki:
        _same_view(cert)


def test_signatures_verify_as_cryptography_says(pki: list) -> None:
    for cert, issuer in pki:
        mine = Certificate(cert.public_bytes(DER))
        key = Certificate(issuer.public_bytes(DER)).public_key
        signature.verify(mine.tbs_bytes, mine.signature_algorithm_oid,
                         mine.signature_parameters, mine.signature, key)
        flipped = bytearray(mine.tbs_bytes)
        flipped[len(flipped) // 2] ^= 0x01
        with pytest.raises(signature.InvalidSignature):
            signature.verify(bytes(flipped), mine.signature_algorithm_oid,
                             mine.signature_parameters, mine.signature, key)
        with pytest.raises(CryptographyInvalid):
            cert.public_key()  # (the same tampering, as cryptography sees it)
            issuer.public_key().verify(  # type: ignore[union-attr]
                *_verify_args(cert, bytes(flipped)))


def _verify_args(cert: x509.Certificate, data: bytes) -> tuple:
    algorithm = cert.signature_hash_algorithm
    params = cert.signature_algorithm_parameters
    if isinstance(params, ec.ECDSA):
        return cert.signature, data, params
    return cert.signature, data, params, algorithm


@pytest.mark.parametrize("curve", [ec.SECP192R1(), ec.SECP224R1(), ec.SECP256R1(),
                                   ec.SECP384R1(), ec.SECP521R1()])
def test_ecdsa_random_messages(curve: ec.EllipticCurve) -> None:
    rng = random.Random(curve.name)
    key = ec.generate_private_key(curve)
    spki = key.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for hash_name, oid in (("sha256", "1.2.840.10045.4.3.2"), ("sha384", "1.2.840.10045.4.3.3"),
                           ("sha512", "1.2.840.10045.4.3.4")):
        algorithm = {"sha256": hashes.SHA256(), "sha384": hashes.SHA384(),
                     "sha512": hashes.SHA512()}[hash_name]
        for _ in range(3):
            message = rng.randbytes(rng.randrange(1, 200))
            sig = key.sign(message, ec.ECDSA(algorithm))
            public = _spki_key(spki)
            signature.verify(message, oid, None, sig, public)
            with pytest.raises(signature.InvalidSignature):
                signature.verify(message + b"x", oid, None, sig, public)


def _spki_key(spki: bytes) -> object:
    from acp_openwrt.identity.cert_reader import _public_key
    return _public_key(der.parse(spki, "spki"))


def test_ecdsa_refuses_out_of_range_and_wrong_keys(pki: list) -> None:
    cert = Certificate(pki[0][0].public_bytes(DER))  # the P-256 root, self-signed
    key = cert.public_key
    p, _, _, _, n = signature.CURVES["secp256r1"]
    for r, s in ((0, 1), (1, 0), (n, 1), (1, n)):
        encoded = _ecdsa_der(r, s)
        with pytest.raises(signature.InvalidSignature):
            signature.verify(cert.tbs_bytes, cert.signature_algorithm_oid, None, encoded, key)
    off_curve = _spki_key(key.der[:-1] + bytes([key.der[-1] ^ 1]))
    with pytest.raises(signature.InvalidSignature, match="not on its curve"):
        signature.verify(cert.tbs_bytes, cert.signature_algorithm_oid, None, cert.signature,
                         off_curve)
    rsa_key = Certificate(pki[15][0].public_bytes(DER)).public_key
    assert rsa_key.kind == "rsa"
    with pytest.raises(signature.InvalidSignature):
        signature.verify(cert.tbs_bytes, cert.signature_algorithm_oid, None, cert.signature,
                         rsa_key)


def _ecdsa_der(r: int, s: int) -> bytes:
    def integer(value: int) -> bytes:
        body = value.to_bytes(value.bit_length() // 8 + 1, "big")
        return bytes([2, len(body)]) + body
    body = integer(r) + integer(s)
    return bytes([0x30, len(body)]) + body


def test_rsa_pkcs1_and_pss_random_messages() -> None:
    rng = random.Random(8994)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = _spki_key(key.public_key().public_bytes(
        DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    for _ in range(3):
        message = rng.randbytes(100)
        sig = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        signature.verify(message, "1.2.840.113549.1.1.11", b"\x05\x00", sig, public)
        with pytest.raises(signature.InvalidSignature):
            signature.verify(message, "1.2.840.113549.1.1.12", b"\x05\x00", sig, public)
        with pytest.raises(signature.InvalidSignature):
            signature.verify(message, "1.2.840.113549.1.1.11", b"\x05\x00",
                             sig[:-1] + bytes([sig[-1] ^ 1]), public)


def test_the_public_point_of_a_private_key() -> None:
    for curve in (ec.SECP256R1(), ec.SECP384R1(), ec.SECP521R1()):
        key = ec.generate_private_key(curve)
        point = key.public_key().public_bytes(serialization.Encoding.X962,
                                              serialization.PublicFormat.UncompressedPoint)
        assert signature.public_point(curve.name, key.private_numbers().private_value) == point


def test_pem_bundles_and_cryptography_objects(pki: list, tmp_path: Path) -> None:
    bundle = b"junk\n" + b"".join(c.public_bytes(serialization.Encoding.PEM) for c, _ in pki[:3])
    read = load_certificates(bundle)
    assert [c.der for c in read] == [c.public_bytes(DER) for c, _ in pki[:3]]
    assert as_certificate(pki[0][0]) == read[0]
    assert as_certificate(read[0]) is read[0]
    assert load_certificates(read[1].public_bytes(serialization.Encoding.PEM)) == [read[1]]
    with pytest.raises(CertificateError, match="not a valid PEM"):
        load_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n")
    path = tmp_path / "c.pem"
    path.write_bytes(bundle)
    assert load_certificates(path) == read
    with pytest.raises(CertificateError, match="is empty"):
        load_certificates(b"  \n")


def test_truncations_and_flips_are_refused_cleanly(pki: list) -> None:
    """Every truncation of a certificate, and a thousand random byte flips, give a
    CertificateError or (a flip that keeps it DER) a certificate; nothing else escapes."""
    data = pki[4][0].public_bytes(DER)  # a node certificate with SAN, P-256
    for end in range(len(data)):
        with pytest.raises(CertificateError):
            Certificate(data[:end])
    with pytest.raises(CertificateError, match="bytes after the end"):
        Certificate(data + b"\x00")
    rng = random.Random(19)
    for _ in range(1000):
        flipped = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        try:
            Certificate(bytes(flipped))
        except CertificateError:
            pass


@pytest.mark.parametrize(("data", "message"), [
    (b"\x30\x80\x00\x00", "indefinite length"),
    (b"\x30\x81\x03\x02\x01\x00", "not minimally encoded"),
    (b"\x30\x85\x00\x00\x00\x00\x01\x00", "length of 5 octets"),
    (b"\x30\x84\x7f\xff\xff\xff", "claims"),
    (b"\x3f\x01\x00", "high tag number"),
    (b"\x30", "truncated element"),
    (b"\x30\x03\x02\x01", "claims"),
])
def test_der_refusals(data: bytes, message: str) -> None:
    with pytest.raises(der.DerError, match=message):
        der.parse(data, "test").children()


def test_der_values() -> None:
    assert der.integer(der.parse(b"\x02\x01\xff", "i"), "i") == -1
    assert der.integer(der.parse(b"\x02\x02\x00\x80", "i"), "i") == 128
    for bad in (b"\x02\x00", b"\x02\x02\x00\x01", b"\x02\x02\xff\x80"):
        with pytest.raises(der.DerError):
            der.integer(der.parse(bad, "i"), "i")
    assert der.oid(der.parse(b"\x06\x03\x55\x1d\x11", "o"), "o") == "2.5.29.17"
    assert der.oid(der.parse(b"\x06\x03\x88\x37\x01", "o"), "o") == "2.999.1"
    for bad in (b"\x06\x00", b"\x06\x02\x80\x01", b"\x06\x01\x81"):
        with pytest.raises(der.DerError):
            der.oid(der.parse(bad, "o"), "o")
    with pytest.raises(der.DerError):
        der.boolean(der.parse(b"\x01\x01\x01", "b"), "b")
    with pytest.raises(der.DerError, match="unused bits set"):
        der.bit_string(der.parse(b"\x03\x02\x01\x01", "s"), "s")
    assert der.time(der.parse(b"\x17\x0d" + b"491231235959Z", "t"), "t") == \
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert der.time(der.parse(b"\x17\x0d" + b"500101000000Z", "t"), "t").year == 1950
    assert der.time(der.parse(b"\x18\x0f" + b"20500101000000Z", "t"), "t").year == 2050
    for bad in (b"\x17\x0d" + b"491231235959+", b"\x17\x0b" + b"4912312359Z",
                b"\x17\x0d" + b"491331235959Z", b"\x18\x11" + b"20500101000000.5Z",
                b"\x17\x0d" + b"49123123595 Z"):
        with pytest.raises(der.DerError):
            der.time(der.parse(bad, "t"), "t")


def test_ip_and_uri_names(tmp_path: Path) -> None:
    ca = TestCA.create(tmp_path, domain="acp.example.com")
    node = ca.issue_node("n", acp_node_name=NAME, ip_address="fd89:b714:f3db:0:200:0:6400:1")
    mine = as_certificate(node.certificate)
    assert mine.san_values("iPAddress") == [ipaddress.ip_address("fd89:b714:f3db:0:200:0:6400:1")]


def test_peer_check_still_checks_signatures(tmp_path: Path) -> None:
    """charon's cache holds certificates it verified against any issuer (a chain that then
    failed included): a forged leaf with the peer's identity, issued by a look-alike of our CA
    (same name, another key), next to the real one, must not pass where signatures are not
    re-checked; and a certificate charon holds that cannot be read fails no peer check."""
    from acp_openwrt.channels.peer_check import check_peer
    ca = TestCA.create(tmp_path / "real", domain="acp.example.com", common_name="ACP CA")
    twin = TestCA.create(tmp_path / "twin", domain="acp.example.com", common_name="ACP CA")
    address = "fd89:b714:f3db:0:200:0:6400:1"
    real = ca.issue_node("real", acp_node_name=NAME, ip_address=address)
    forged = twin.issue_node("forged", acp_node_name=NAME, ip_address=address)
    leaves = [c.certificate.public_bytes(DER) for c in (real, forged)]
    verdict = check_peer(address, leaves[1:], [twin.certificate.public_bytes(DER)],
                         [ca.certificate], "acp.example.com")
    assert not verdict.ok and "signature does not verify" in verdict.reason
    refused = check_peer(address, leaves, [b"\x30\x03\x02\x01\x01"], [ca.certificate],
                         "acp.example.com", revoked=lambda c: "revoked" if c.der == leaves[0]
                         else None)
    assert not refused.ok and refused.reason == "revoked"
    assert check_peer(address, leaves, [b"not DER"], [ca.certificate], "acp.example.com").ok


def test_names_written_as_cryptography_writes_them(tmp_path: Path) -> None:
    odd = TestCA.create(tmp_path, common_name=' #ACP, "odd"+root; <x> \\ é ')
    node = odd.issue_node("n", email_address="ops@example.com", serial_number="SN-7")
    for real in (odd.certificate, node.certificate):
        mine = as_certificate(real)
        assert mine.subject.rfc4514_string() == real.subject.rfc4514_string()
        assert mine.issuer.rfc4514_string() == real.issuer.rfc4514_string()


def test_the_critical_extensions_known_are_cryptographys() -> None:
    """membership.py refuses a certificate with an unknown critical extension; "known" is what
    cryptography decodes in a certificate (its verdicts before the reader), found here by
    giving each OID an undecodable critical value."""
    from cryptography.x509.oid import ExtensionOID, NameOID

    from acp_openwrt.identity.cert_reader import KNOWN_EXTENSIONS
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    known = set()
    candidates = {v.dotted_string for v in vars(ExtensionOID).values()
                  if isinstance(v, x509.ObjectIdentifier)} | KNOWN_EXTENSIONS
    for oid in candidates:
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(1)
                .not_valid_before(dt.datetime(2020, 1, 1))
                .not_valid_after(dt.datetime(2030, 1, 1))
                .add_extension(x509.UnrecognizedExtension(x509.ObjectIdentifier(oid),
                                                          b"\x05\x00"), critical=True)
                .sign(key, hashes.SHA256()))
        try:
            if not isinstance(next(iter(cert.extensions)).value, x509.UnrecognizedExtension):
                known.add(oid)
        except ValueError:  # decoded, and the value is not what it must be
            known.add(oid)
    # cryptography 48's set; 41 (OpenWrt 24.10) knows two fewer (admissions, private key usage
    # period), which the reader takes as it did with 48
    assert known <= KNOWN_EXTENSIONS
    if int(cryptography.__version__.split(".")[0]) >= 48:
        assert known == KNOWN_EXTENSIONS


def test_crls_read_as_cryptography_reads_them(pki: list) -> None:
    from acp_openwrt.revocation.crl import Crl, CrlError, crl_issuer
    root = pki[0][0]
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(root.subject)
               .last_update(now))
    bare = builder.next_update(now + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    reason = x509.CRLReason(x509.ReasonFlags.key_compromise)
    full = (builder.next_update(now + dt.timedelta(days=1))
            .add_extension(x509.CRLNumber(42), critical=False)
            .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(7)
                                     .revocation_date(now).add_extension(reason, False).build())
            .add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(2 ** 150)
                                     .revocation_date(now).build())
            .sign(key, hashes.SHA384()))
    def utc(obj: object, name: str) -> dt.datetime:  # cryptography 41 has only the naive ones
        aware = getattr(obj, f"{name}_utc", None)
        return aware if aware is not None else getattr(obj, name).replace(tzinfo=dt.UTC)

    for real in (bare, full):
        mine = Crl(real.public_bytes(DER))
        assert mine.issuer.der == real.issuer.public_bytes()
        assert mine.last_update_utc == utc(real, "last_update")
        assert mine.next_update_utc == utc(real, "next_update")
        assert mine.revoked == {r.serial_number: utc(r, "revocation_date") for r in real}
        assert mine.tbs_bytes == real.tbs_certlist_bytes
    assert Crl(full.public_bytes(DER)).number == 42 and Crl(bare.public_bytes(DER)).number == -1
    issuer = _spki_key(key.public_key().public_bytes(
        DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    mine = Crl(full.public_bytes(DER))
    signature.verify(mine.tbs_bytes, mine.signature_algorithm_oid, mine.signature_parameters,
                     mine.signature, issuer)
    with pytest.raises(CrlError, match="not signed by one of our trust anchors"):
        crl_issuer(mine, [root])  # same name, another key
    data = full.public_bytes(DER)
    for end in range(len(data)):
        with pytest.raises(CrlError):
            Crl(data[:end])


def test_rsa_keys_that_would_cost_seconds_are_not_used() -> None:
    """OpenSSL's limits: a modulus over 16384 bits, or over 3072 bits with an exponent over 64
    bits, is refused before any arithmetic (the check runs on acpd's loop)."""
    from acp_openwrt.identity.cert_reader import PublicKey
    oid = "1.2.840.113549.1.1.11"
    huge = PublicKey("1.2.840.113549.1.1.1", b"", "rsa", 16385, n=(1 << 16384) + 1, e=65537)
    wide = PublicKey("1.2.840.113549.1.1.1", b"", "rsa", 4096, n=(1 << 4095) + 1, e=(1 << 65) + 1)
    even = PublicKey("1.2.840.113549.1.1.1", b"", "rsa", 2048, n=(1 << 2047) + 1, e=65536)
    for key, error in ((huge, signature.UnsupportedSignature),
                       (wide, signature.UnsupportedSignature),
                       (even, signature.InvalidSignature)):
        with pytest.raises(error):
            signature.verify(b"x", oid, None, b"\x01" * ((key.n.bit_length() + 7) // 8), key)


def test_names_compare_as_cryptography_compares_them() -> None:
    from cryptography.x509.oid import NameOID

    from acp_openwrt.identity.cert_reader import Name
    utf8 = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACP CA")])
    printable = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACP CA",
                                              x509.name._ASN1Type.PrintableString)])
    other = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACP CB")])

    def mine(name: x509.Name) -> Name:
        return Name(der.parse(name.public_bytes(), "name"), "name")

    assert utf8.public_bytes() != printable.public_bytes()
    assert (mine(utf8) == mine(printable)) == (utf8 == printable)
    assert (mine(utf8) == mine(other)) == (utf8 == other)
    assert hash(mine(utf8)) == hash(mine(printable))
