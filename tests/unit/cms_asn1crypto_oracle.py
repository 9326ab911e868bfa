"""brski/cms.py as it was on asn1crypto (up to 2cda081), kept as the oracle for
test_cms_der.py: the DER writer must produce the same bytes, the reader the same verdicts.
Not a test module (no test_ prefix); loaded by path."""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from asn1crypto import algos, cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

# What did not change (names, limits, the result type, the errors) is the module's own.
from acp_openwrt.brski.cms import (
    _HASHES,
    _HASHLIB,
    ACCEPTED_CONTENT_TYPES,
    ID_CT_ANIMA_JSON_VOUCHER,
    ID_DATA,
    MAX_CERTIFICATES,
    MAX_CMS_BYTES,
    CmsError,
    PrivateKey,
    SignedContent,
    _der,
    _hash_name,
)


def sign(content: bytes, signer: x509.Certificate, key: PrivateKey, *,
         chain: Sequence[x509.Certificate] = (),
         content_type: str = ID_CT_ANIMA_JSON_VOUCHER,
         signing_time: dt.datetime | None = None) -> bytes:
    """DER SignedData over `content`, signed by `key`; certificates = signer + chain."""
    digest_name = _hash_name(key)
    when = signing_time or dt.datetime.now(dt.UTC)
    attributes = [
        cms.CMSAttribute({"type": "content_type", "values": [cms.ContentType(content_type)]}),
        cms.CMSAttribute({"type": "signing_time",
                          "values": [cms.Time({"utc_time": when.replace(microsecond=0)})]}),
        cms.CMSAttribute({"type": "message_digest",
                          "values": [_HASHLIB[digest_name](content).digest()]}),
    ]
    # DER wants a SET OF in the order of its encodings; verifiers hash the bytes we send.
    signed_attrs = cms.CMSAttributes(sorted(attributes, key=lambda a: a.dump()))
    to_sign = signed_attrs.dump()
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(to_sign, ec.ECDSA(_HASHES[digest_name]()))
        signature_algorithm = f"{digest_name}_ecdsa"
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(to_sign, padding.PKCS1v15(), _HASHES[digest_name]())
        signature_algorithm = f"{digest_name}_rsa"
    else:
        raise CmsError(f"cannot sign with a {type(key).__name__} (EC or RSA only)")
    signer_asn1 = asn1_x509.Certificate.load(_der(signer))
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": signer_asn1.issuer, "serial_number": signer_asn1.serial_number})}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest_name}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": signature_algorithm}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v1" if content_type == ID_DATA else "v3",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest_name})],
        "encap_content_info": {"content_type": content_type, "content": content},
        "certificates": _certificate_set([_der(signer)] + [_der(c) for c in chain]),
        "signer_infos": [signer_info],
    })
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _certificate_set(ders: Sequence[bytes]) -> cms.CertificateSet:
    """The certificates, byte for byte, as a SET OF (DER order).

    Never hand asn1crypto (1.5.1) a parsed certificate to encode again: it takes a long-form
    length whose last byte is 0x80 (384, 640, ... bytes of content) for BER's indefinite
    length and re-encodes the whole certificate from its parsed values, and the parsed value of
    a URI with an IPv6 literal (the CRL distribution point `http://[fd..]/acp.crl`) has lost its
    brackets, so the re-encoding fails ("Port could not be cast to integer"). A set loaded from
    bytes and put into SignedData is retagged [0] and keeps those bytes as its contents."""
    body = b"".join(sorted(ders))
    return cms.CertificateSet.load(b"\x31" + _der_length(len(body)) + body)


def _load(der: bytes) -> cms.SignedData:
    if not isinstance(der, (bytes, bytearray)):
        raise CmsError("CMS object must be bytes")
    if len(der) > MAX_CMS_BYTES:
        raise CmsError(f"CMS object of {len(der)} bytes is larger than {MAX_CMS_BYTES}")
    try:
        info = cms.ContentInfo.load(bytes(der), strict=True)
        if info["content_type"].native != "signed_data":
            raise CmsError(f"CMS content type is {info['content_type'].dotted}, not signedData")
        signed = info["content"]
        _ = signed.native  # force a full parse here, so malformed inner parts fail now
        return signed
    except CmsError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on bad DER
        raise CmsError(f"not a DER CMS SignedData ({type(exc).__name__}: {exc})") from None


def _certificates(signed: cms.SignedData) -> list[x509.Certificate]:
    """The certificates as sent: the bytes are cut from the set, not re-encoded by asn1crypto
    (see _certificate_set: it would re-encode one whose length ends in 0x80)."""
    found: list[x509.Certificate] = []
    certificates = signed["certificates"]
    rest = certificates.contents if certificates.contents is not None else b""
    while rest:
        size = parser.peek(rest)
        element, rest = rest[:size], rest[size:]
        if element[0] != 0x30:
            continue  # attribute certificates and others ([0]..[3]) are not used here
        if len(found) >= MAX_CERTIFICATES:
            raise CmsError(f"CMS object carries more than {MAX_CERTIFICATES} certificates")
        try:
            found.append(x509.load_der_x509_certificate(element))
        except ValueError:
            raise CmsError("CMS object carries an undecodable certificate") from None
    return found


def _matches(cert: x509.Certificate, sid: cms.SignerIdentifier) -> bool:
    if sid.name == "issuer_and_serial_number":
        asn1 = asn1_x509.Certificate.load(_der(cert))
        return (asn1.serial_number == sid.chosen["serial_number"].native
                and asn1.issuer == sid.chosen["issuer"])
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return ski == sid.chosen.native


def _attribute(attrs: cms.CMSAttributes, name: str) -> Any:
    """The one value (an asn1crypto object) of signed attribute `name`, or None."""
    values = [a["values"] for a in attrs if a["type"].native == name]
    if len(values) > 1 or (values and len(values[0]) != 1):
        raise CmsError(f"signed attribute {name} must appear once with one value")
    return values[0][0] if values else None


def _check_signature(cert: x509.Certificate, signer_info: cms.SignerInfo, data: bytes,
                     digest_name: str) -> None:
    public_key = cert.public_key()
    algorithm = signer_info["signature_algorithm"]
    signature = signer_info["signature"].native
    try:
        algo = algorithm.signature_algo
    except ValueError:
        raise CmsError(f"unsupported signature algorithm {algorithm['algorithm'].dotted}") from None
    hash_algorithm = _HASHES[digest_name]()
    try:
        if algo == "ecdsa" and isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hash_algorithm))
        elif algo == "rsassa_pkcs1v15" and isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hash_algorithm)
        elif algo == "rsassa_pss" and isinstance(public_key, rsa.RSAPublicKey):
            params = algorithm["parameters"]
            salt = params["salt_length"].native if params.native else hash_algorithm.digest_size
            public_key.verify(signature, data, padding.PSS(padding.MGF1(hash_algorithm), salt),
                              hash_algorithm)
        else:
            raise CmsError(f"signature algorithm {algo} does not fit the signer's "
                           f"{type(public_key).__name__}")
    except InvalidSignature:
        raise CmsError("CMS signature does not verify with the signer's certificate") from None


def verify(der: bytes, *, signer_candidates: Iterable[x509.Certificate] = ()) -> SignedContent:
    """Parse SignedData and check its one signature; the signer is looked up among the
    certificates inside and `signer_candidates`. Who the signer *should* be is the caller's
    decision (trust anchors differ per use)."""
    signed = _load(der)
    encap = signed["encap_content_info"]
    content_type = encap["content_type"].dotted
    if content_type not in ACCEPTED_CONTENT_TYPES:
        raise CmsError(f"eContentType {content_type} is neither id-ct-animaJSONVoucher nor id-data")
    if encap["content"].native is None:
        raise CmsError("CMS SignedData has no encapsulated content (detached is not supported)")
    content = encap["content"].native
    if isinstance(content, core.ParsableOctetString):
        content = content.native
    content = bytes(content)
    infos = signed["signer_infos"]
    if len(infos) != 1:
        raise CmsError(f"CMS SignedData has {len(infos)} signers, expected exactly one")
    info = infos[0]
    digest_name = info["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise CmsError(f"digest algorithm {digest_name} is not accepted (SHA-256/384/512)")
    attrs = info["signed_attrs"]
    if not attrs.native:
        raise CmsError("CMS signer has no signed attributes (required for vouchers)")
    claimed_type = _attribute(attrs, "content_type")
    if claimed_type is None or claimed_type.dotted != content_type:
        raise CmsError("contentType signed attribute is missing or differs from eContentType")
    message_digest = _attribute(attrs, "message_digest")
    if message_digest is None or message_digest.native != _HASHLIB[digest_name](content).digest():
        raise CmsError("messageDigest signed attribute does not match the content")
    time_value = _attribute(attrs, "signing_time")
    signing_time = time_value.native if time_value is not None else None
    certificates = _certificates(signed)
    sid = info["sid"]
    signer = next((c for c in [*certificates, *signer_candidates] if _matches(c, sid)), None)
    if signer is None:
        raise CmsError("the signer's certificate is neither in the CMS object nor known")
    # The signature covers the DER of the attributes as an explicit SET OF (tag 0x31).
    signed_bytes = b"\x31" + attrs.dump()[1:]
    _check_signature(signer, info, signed_bytes, digest_name)
    return SignedContent(content, content_type, signer, tuple(certificates), signing_time)
