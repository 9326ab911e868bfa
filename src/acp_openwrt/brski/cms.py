"""CMS SignedData (RFC 5652) for vouchers and voucher-requests: sign and verify.

cryptography (48) can build PKCS#7 signatures but neither verify them nor set the
eContentType RFC 8366 §5.4 asks for (id-ct-animaJSONVoucher), so the structure is built and
read here with the strict DER reader and writer (identity/der.py) and only the signature itself
goes through cryptography. (asn1crypto did the structure before: 4 MB of RSS in every
registrar and every enrolling pledge, issue 19; tests/unit/test_cms_der.py keeps it as the
oracle: the same bytes out, the same verdicts in.) Verification is strict about what matters
(one signer, signed attributes present, contentType and messageDigest attributes matching, a
known digest) and names the problem in one line. Certificates go into and out of the object
byte for byte.

Accepted eContentTypes: id-ct-animaJSONVoucher (RFC 8366) and id-data (what RFC 8995
Appendix C's objects use).
"""
from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..identity import der
from ..identity.cert_reader import SUBJECT_KEY_ID, Name, as_certificate

ID_DATA = "1.2.840.113549.1.7.1"
ID_CT_ANIMA_JSON_VOUCHER = "1.2.840.113549.1.9.16.1.40"
ACCEPTED_CONTENT_TYPES = (ID_CT_ANIMA_JSON_VOUCHER, ID_DATA)
MAX_CMS_BYTES = 256 * 1024
MAX_CERTIFICATES = 16

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
_HASHLIB = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


class CmsError(ValueError):
    """A CMS object that cannot be parsed, or whose signature does not verify."""


@dataclass(frozen=True)
class SignedContent:
    """What a verified SignedData carried: the content, who signed it, the certificates."""

    content: bytes
    content_type: str
    signer: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    signing_time: dt.datetime | None


def _hash_name(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {384: "sha384", 521: "sha512"}.get(key.curve.key_size, "sha256")
    return "sha256"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


ID_SIGNED_DATA = "1.2.840.113549.1.7.2"
ID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
ID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
ID_SIGNING_TIME = "1.2.840.113549.1.9.5"
_DIGESTS = {"sha256": "2.16.840.1.101.3.4.2.1", "sha384": "2.16.840.1.101.3.4.2.2",
            "sha512": "2.16.840.1.101.3.4.2.3"}
_DIGEST_NAMES = {oid: name for name, oid in _DIGESTS.items()}
_ECDSA = {"sha256": "1.2.840.10045.4.3.2", "sha384": "1.2.840.10045.4.3.3",
          "sha512": "1.2.840.10045.4.3.4"}
_RSA = {"sha256": "1.2.840.113549.1.1.11", "sha384": "1.2.840.113549.1.1.12",
        "sha512": "1.2.840.113549.1.1.13"}
# signatureAlgorithm in a SignerInfo -> the kind of signature (the hash is digestAlgorithm's)
_SIGNATURE_KINDS = {
    **{oid: "ecdsa" for oid in (*_ECDSA.values(), "1.2.840.10045.4.3.1", "1.2.840.10045.4.1",
                                "1.2.840.10045.2.1")},
    **{oid: "rsassa_pkcs1v15" for oid in (*_RSA.values(), "1.2.840.113549.1.1.14",
                                          "1.2.840.113549.1.1.5", "1.2.840.113549.1.1.1")},
    "1.2.840.113549.1.1.10": "rsassa_pss"}
_NULL = b"\x05\x00"


def _algorithm(oid: str, parameters: bytes | None = None) -> bytes:
    return der.encode(der.SEQUENCE, der.encode_oid(oid) + (parameters or b""))


def _attribute_der(oid: str, value: bytes) -> bytes:
    return der.encode(der.SEQUENCE, der.encode_oid(oid) + der.encode(der.SET, value))


def sign(content: bytes, signer: x509.Certificate, key: PrivateKey, *,
         chain: Sequence[x509.Certificate] = (),
         content_type: str = ID_CT_ANIMA_JSON_VOUCHER,
         signing_time: dt.datetime | None = None) -> bytes:
    """DER SignedData over `content`, signed by `key`; certificates = signer + chain."""
    digest_name = _hash_name(key)
    when = (signing_time or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    # DER wants a SET OF in the order of its encodings; verifiers hash the bytes we send.
    signed_attrs = der.encode_set_of([
        _attribute_der(ID_CONTENT_TYPE, der.encode_oid(content_type)),
        _attribute_der(ID_SIGNING_TIME, der.encode_utc_time(when)),
        _attribute_der(ID_MESSAGE_DIGEST,
                       der.encode(der.OCTET_STRING, _HASHLIB[digest_name](content).digest())),
    ])
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(signed_attrs, ec.ECDSA(_HASHES[digest_name]()))
        signature_algorithm = _algorithm(_ECDSA[digest_name])
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signed_attrs, padding.PKCS1v15(), _HASHES[digest_name]())
        signature_algorithm = _algorithm(_RSA[digest_name], _NULL)
    else:
        raise CmsError(f"cannot sign with a {type(key).__name__} (EC or RSA only)")
    parsed = as_certificate(signer)
    digest_algorithm = _algorithm(_DIGESTS[digest_name], _NULL)
    signer_info = der.encode(der.SEQUENCE, b"".join([
        der.encode_integer(1),
        der.encode(der.SEQUENCE, parsed.issuer.der + der.encode_integer(parsed.serial_number)),
        digest_algorithm,
        der.encode(der.context(0), _contents(signed_attrs)),  # [0] IMPLICIT: same contents
        signature_algorithm,
        der.encode(der.OCTET_STRING, signature),
    ]))
    encap = der.encode(der.SEQUENCE, der.encode_oid(content_type)
                       + der.encode(der.context(0), der.encode(der.OCTET_STRING, content)))
    signed_data = der.encode(der.SEQUENCE, b"".join([
        der.encode_integer(1 if content_type == ID_DATA else 3),
        der.encode_set_of([digest_algorithm]),
        encap,
        _certificate_set([_der(signer)] + [_der(c) for c in chain]),
        der.encode_set_of([signer_info]),
    ]))
    return der.encode(der.SEQUENCE, der.encode_oid(ID_SIGNED_DATA)
                      + der.encode(der.context(0), signed_data))


def _contents(element: bytes) -> bytes:
    """The contents of one DER TLV."""
    return der.parse(element, "CMS").value


def _certificate_set(ders: Sequence[bytes]) -> bytes:
    """certificates [0] IMPLICIT SET OF, the certificates byte for byte in DER order."""
    return der.encode_set_of(list(ders), der.context(0))


class _SignedData:
    """The parts of a parsed SignedData that verify() reads."""

    def __init__(self, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray)):
            raise CmsError("CMS object must be bytes")
        if len(data) > MAX_CMS_BYTES:
            raise CmsError(f"CMS object of {len(data)} bytes is larger than {MAX_CMS_BYTES}")
        try:
            self._parse(bytes(data))
        except der.DerError as exc:
            raise CmsError(f"not a DER CMS SignedData ({exc})") from None

    def _parse(self, data: bytes) -> None:
        content_type, content = der.sequence(der.parse(data, "ContentInfo"), "ContentInfo",
                                             range(2, 3))
        kind = der.oid(content_type, "ContentInfo")
        if kind != ID_SIGNED_DATA:
            raise CmsError(f"CMS content type is {kind}, not signedData")
        inner = content.expect(der.context(0), "ContentInfo content").children()
        if len(inner) != 1:
            raise der.DerError("ContentInfo: content is not one SignedData")
        fields = der.sequence(inner[0], "SignedData", range(4, 7))
        der.integer(fields[0], "SignedData version")
        for algorithm in fields[1].expect(der.SET, "digestAlgorithms").children():
            _digest_algorithm(algorithm)
        encap = der.sequence(fields[2], "encapContentInfo", range(1, 3))
        self.content_type = der.oid(encap[0], "eContentType")
        self.content: bytes | None = None
        if len(encap) == 2:
            wrapped = encap[1].expect(der.context(0), "eContent").children()
            if len(wrapped) != 1:
                raise der.DerError("eContent: not one OCTET STRING")
            self.content = der.octets(wrapped[0], "eContent")
        self.certificates: list[bytes] = []
        rest = fields[3:-1]
        if rest and rest[0].tag == der.context(0):
            self.certificates = [c.raw for c in rest.pop(0).children()]
        if rest and rest[0].tag == der.context(1):
            rest.pop(0)  # crls: not used
        if rest:
            raise der.DerError(f"SignedData: unexpected tag 0x{rest[0].tag:02x}")
        self.signer_infos = fields[-1].expect(der.SET, "signerInfos").children()


def _digest_algorithm(element: der.Element) -> str:
    """A DigestAlgorithmIdentifier's OID; its parameters absent or NULL (RFC 5754 §2)."""
    items = der.sequence(element, "digestAlgorithm", range(1, 3))
    if len(items) == 2:
        der.null(items[1], "digestAlgorithm parameters")
    return der.oid(items[0], "digestAlgorithm")


class _SignerInfo:
    def __init__(self, element: der.Element) -> None:
        fields = der.sequence(element, "SignerInfo", range(5, 8))
        der.integer(fields[0], "SignerInfo version")
        self.sid = fields[1]
        if self.sid.tag == der.SEQUENCE:
            issuer, serial = der.sequence(self.sid, "issuerAndSerialNumber", range(2, 3))
            self.issuer_serial: tuple[Name, int] | None = (
                Name(issuer, "issuer"), der.integer(serial, "serialNumber"))
            self.key_id = b""
        elif self.sid.tag == der.context(0, False):
            self.issuer_serial, self.key_id = None, self.sid.value
        else:
            raise der.DerError(f"SignerIdentifier: tag 0x{self.sid.tag:02x}")
        self.digest_oid = _digest_algorithm(fields[2])
        self.signed_attrs: der.Element | None = None
        rest = fields[3:]
        if rest[0].tag == der.context(0):
            self.signed_attrs = rest.pop(0)
        if len(rest) not in (2, 3) or (len(rest) == 3 and rest[2].tag != der.context(1)):
            raise der.DerError("SignerInfo: malformed after the signed attributes")
        signature_algorithm = der.sequence(rest[0], "signatureAlgorithm", range(1, 3))
        self.signature_oid = der.oid(signature_algorithm[0], "signatureAlgorithm")
        self.signature_parameters = (signature_algorithm[1].raw
                                     if len(signature_algorithm) == 2 else None)
        kind = _SIGNATURE_KINDS.get(self.signature_oid)
        if kind == "ecdsa" and self.signature_parameters is not None:
            raise der.DerError("signatureAlgorithm: ECDSA with parameters")
        if kind == "rsassa_pkcs1v15" and self.signature_parameters not in (None, _NULL):
            raise der.DerError("signatureAlgorithm: RSA PKCS#1 v1.5 parameters are not NULL")
        self.signature = der.octets(rest[1], "signature")

    def attributes(self) -> dict[str, list[der.Element]]:
        """Each signed attribute's values, by OID; an attribute twice is refused."""
        out: dict[str, list[der.Element]] = {}
        assert self.signed_attrs is not None
        for attribute in self.signed_attrs.children():
            kind_el, values = der.sequence(attribute, "signed attribute", range(2, 3))
            kind = der.oid(kind_el, "signed attribute")
            if kind in out:
                raise CmsError(f"signed attribute {kind} must appear once with one value")
            out[kind] = values.expect(der.SET, "attribute values").children()
        return out


def _one(attributes: dict[str, list[der.Element]], oid: str, name: str) -> der.Element | None:
    """The one value of signed attribute `oid`, or None."""
    values = attributes.get(oid)
    if values is not None and len(values) != 1:
        raise CmsError(f"signed attribute {name} must appear once with one value")
    return values[0] if values else None


def _certificates(ders: Sequence[bytes]) -> list[x509.Certificate]:
    """The certificates as sent (bytes cut from the set, not encoded again)."""
    found: list[x509.Certificate] = []
    for element in ders:
        if element[0] in (0xA0, 0xA1, 0xA2, 0xA3):
            continue  # attribute certificates and others ([0]..[3]) are not used here
        if element[0] != 0x30:
            raise CmsError(f"CMS certificates hold an element of tag 0x{element[0]:02x}")
        if len(found) >= MAX_CERTIFICATES:
            raise CmsError(f"CMS object carries more than {MAX_CERTIFICATES} certificates")
        try:
            as_certificate(element)  # the strict reader: all of it, not only what is read
            found.append(x509.load_der_x509_certificate(element))
        except ValueError:
            raise CmsError("CMS object carries an undecodable certificate") from None
    return found


def _matches(cert: x509.Certificate, info: _SignerInfo) -> bool:
    try:
        parsed = as_certificate(cert)
    except ValueError:
        return False
    if info.issuer_serial is not None:  # names compared as the certificate reader does
        return info.issuer_serial == (parsed.issuer, parsed.serial_number)
    extension = parsed.extension(SUBJECT_KEY_ID)
    if extension is None:
        return False
    try:
        return der.octets(der.parse(extension, "subjectKeyIdentifier"),
                          "subjectKeyIdentifier") == info.key_id
    except der.DerError:
        return False


def _pss_salt(parameters: bytes | None, default: int) -> int:
    """RSASSA-PSS-params' saltLength (RFC 4055: 20 when absent); `default` without them."""
    if parameters is None or parameters == _NULL:
        return default
    salt = 20
    for field in der.sequence(der.parse(parameters, "RSASSA-PSS parameters"),
                              "RSASSA-PSS parameters"):
        if field.tag == der.context(2):
            inner = field.children()
            if len(inner) != 1:
                raise der.DerError("RSASSA-PSS saltLength is not one INTEGER")
            salt = der.integer(inner[0], "saltLength")
    return salt


def _check_signature(cert: x509.Certificate, info: _SignerInfo, data: bytes,
                     digest_name: str) -> None:
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CmsError(f"the signer's public key cannot be used ({exc})") from None
    algo = _SIGNATURE_KINDS.get(info.signature_oid)
    if algo is None:
        raise CmsError(f"unsupported signature algorithm {info.signature_oid}")
    hash_algorithm = _HASHES[digest_name]()
    try:
        if algo == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(info.signature, data, ec.ECDSA(hash_algorithm))
        elif algo == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(info.signature, data, padding.PKCS1v15(), hash_algorithm)
        elif algo == "rsassa_pss" and isinstance(public_key, rsa.RSAPublicKey):
            try:
                salt = _pss_salt(info.signature_parameters, hash_algorithm.digest_size)
            except der.DerError as exc:
                raise CmsError(f"RSASSA-PSS parameters cannot be read ({exc})") from None
            public_key.verify(info.signature, data,
                              padding.PSS(padding.MGF1(hash_algorithm), salt), hash_algorithm)
        else:
            raise CmsError(f"signature algorithm {algo} does not fit the signer's "
                           f"{type(public_key).__name__}")
    except InvalidSignature:
        raise CmsError("CMS signature does not verify with the signer's certificate") from None


def verify(der_bytes: bytes, *,
           signer_candidates: Iterable[x509.Certificate] = ()) -> SignedContent:
    """Parse SignedData and check its one signature; the signer is looked up among the
    certificates inside and `signer_candidates`. Who the signer *should* be is the caller's
    decision (trust anchors differ per use)."""
    signed = _SignedData(der_bytes)
    content_type = signed.content_type
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise CmsError(f"eContentType {content_type} is neither id-ct-animaJSONVoucher nor id-data")
    if signed.content is None:
        raise CmsError("CMS SignedData has no encapsulated content (detached is not supported)")
    content = signed.content
    if len(signed.signer_infos) != 1:
        raise CmsError(f"CMS SignedData has {len(signed.signer_infos)} signers, expected "
                       f"exactly one")
    try:
        info = _SignerInfo(signed.signer_infos[0])
        digest_name = _DIGEST_NAMES.get(info.digest_oid, info.digest_oid)
        if digest_name not in _HASHES:
            raise CmsError(f"digest algorithm {digest_name} is not accepted (SHA-256/384/512)")
        if info.signed_attrs is None or not info.signed_attrs.value:
            raise CmsError("CMS signer has no signed attributes (required for vouchers)")
        attributes = info.attributes()
        claimed_type = _one(attributes, ID_CONTENT_TYPE, "content_type")
        if claimed_type is None or der.oid(claimed_type, "contentType") != content_type:
            raise CmsError("contentType signed attribute is missing or differs from eContentType")
        message_digest = _one(attributes, ID_MESSAGE_DIGEST, "message_digest")
        if message_digest is None or der.octets(message_digest, "messageDigest") != \
                _HASHLIB[digest_name](content).digest():
            raise CmsError("messageDigest signed attribute does not match the content")
        time_value = _one(attributes, ID_SIGNING_TIME, "signing_time")
        signing_time = der.time(time_value, "signingTime") if time_value is not None else None
    except der.DerError as exc:
        raise CmsError(f"not a DER CMS SignedData ({exc})") from None
    certificates = _certificates(signed.certificates)
    signer = next((c for c in [*certificates, *signer_candidates] if _matches(c, info)), None)
    if signer is None:
        raise CmsError("the signer's certificate is neither in the CMS object nor known")
    # The signature covers the DER of the attributes as an explicit SET OF (tag 0x31).
    signed_bytes = b"\x31" + info.signed_attrs.raw[1:]
    _check_signature(signer, info, signed_bytes, digest_name)
    return SignedContent(content, content_type, signer, tuple(certificates), signing_time)


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """DER PKCS#7 certs-only (EST /cacerts and /simpleenroll responses)."""
    from cryptography.hazmat.primitives.serialization import pkcs7
    return pkcs7.serialize_certificates(list(certificates), serialization.Encoding.DER)


def load_certs_only(der: bytes) -> list[x509.Certificate]:
    """The certificates of a DER PKCS#7 certs-only object; CmsError when it is not one."""
    from cryptography.hazmat.primitives.serialization import pkcs7
    if len(der) > MAX_CMS_BYTES:
        raise CmsError(f"PKCS#7 object of {len(der)} bytes is larger than {MAX_CMS_BYTES}")
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(der)
    except ValueError:
        raise CmsError("not a DER PKCS#7 certs-only object") from None
    if not certificates:
        raise CmsError("PKCS#7 certs-only object holds no certificate")
    if len(certificates) > MAX_CERTIFICATES:
        raise CmsError(f"PKCS#7 object carries more than {MAX_CERTIFICATES} certificates")
    return certificates
