"""EST CSR attributes (RFC 7030 §4.5.2) carrying the acp-node-name, and the pledge's CSR.

The registrar tells the pledge its acp-node-name through /csrattrs (RFC 8995 §5.9.2, RFC 8994
§6.2.5.1): an extensionRequest attribute holding a subjectAltName with the AcpNodeName
otherName, the shape RFC 9908 settled on. Older Minerva code sent a bare subjectAltName
attribute; decoding accepts that too. Unknown entries are ignored, as RFC 7030 asks.
"""
from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ..identity import der
from ..identity.cert_reader import general_names
from ..identity.certificate import (
    CertificateError,
    acp_node_name_general_name,
    certificate_node_name_text,  # noqa: F401 (moved; still here)
    decode_acp_node_name_value,
)

MAX_CSRATTRS_BYTES = 16 * 1024
MAX_CSR_BYTES = 16 * 1024
ID_EXTENSION_REQUEST = "1.2.840.113549.1.9.14"
ID_CE_SUBJECT_ALT_NAME = "2.5.29.17"
ID_ON_ACP_NODE_NAME = "1.3.6.1.5.5.7.8.10"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CsrError(ValueError):
    """CSR attributes or a CSR that cannot be read or do not carry what is needed."""


def _san_der(acp_node_name: str) -> bytes:
    """DER GeneralNames holding the otherName (validated by identity.certificate)."""
    return x509.SubjectAlternativeName([acp_node_name_general_name(acp_node_name)]).public_bytes()


def encode_csr_attrs(acp_node_name: str) -> bytes:
    """DER CsrAttrs: extensionRequest { subjectAltName (critical) { otherName AcpNodeName } }."""
    extension = der.encode(der.SEQUENCE, der.encode_oid(ID_CE_SUBJECT_ALT_NAME)
                           + der.encode(der.BOOLEAN, b"\xff")
                           + der.encode(der.OCTET_STRING, _san_der(acp_node_name)))
    attribute = der.encode(der.SEQUENCE, der.encode_oid(ID_EXTENSION_REQUEST)
                           + der.encode(der.SET, der.encode(der.SEQUENCE, extension)))
    return der.encode(der.SEQUENCE, attribute)


def _name_in_general_names(value: bytes) -> str | None:
    """The AcpNodeName otherName text inside DER GeneralNames, or None."""
    for kind, name in general_names(value, "subjectAltName"):
        if kind == "otherName" and name[0] == ID_ON_ACP_NODE_NAME:
            try:
                return decode_acp_node_name_value(name[1])
            except CertificateError as exc:
                raise CsrError(str(exc)) from None
    return None


def _in_extensions(value: der.Element) -> str | None:
    """The name in the subjectAltName of an extensionRequest's Extensions, or None."""
    for extension in der.sequence(value, "Extensions"):
        fields = der.sequence(extension, "Extension", range(2, 4))
        if len(fields) == 3:
            der.boolean(fields[1], "Extension critical")
        contents = der.octets(fields[-1], "extnValue")
        if der.oid(fields[0], "Extension") == ID_CE_SUBJECT_ALT_NAME:
            found = _name_in_general_names(contents)
            if found:
                return found
    return None


def decode_csr_attrs(data: bytes) -> str | None:
    """The acp-node-name requested by DER CsrAttrs, or None when it asks for none."""
    if len(data) > MAX_CSRATTRS_BYTES:
        raise CsrError(f"CSR attributes of {len(data)} bytes are larger than {MAX_CSRATTRS_BYTES}")
    try:
        found: str | None = None
        for entry in der.sequence(der.parse(data, "CsrAttrs"), "CsrAttrs"):
            if entry.tag == der.OID:
                der.oid(entry, "CsrAttrs")
                continue
            kind_el, values = der.sequence(entry, "Attribute", range(2, 3))
            kind = der.oid(kind_el, "Attribute")
            for value in values.expect(der.SET, "Attribute values").children():
                der.check(value, "Attribute value")
                if found:
                    continue  # (the rest is still read: malformed parts fail)
                if kind == ID_EXTENSION_REQUEST:
                    found = _in_extensions(value)
                elif kind == ID_CE_SUBJECT_ALT_NAME:  # Minerva's bare attribute
                    found = _name_in_general_names(value.raw)
        return found
    except der.DerError as exc:
        raise CsrError(f"CSR attributes are not valid DER CsrAttrs ({exc})") from None


def build_csr(key: PrivateKey, acp_node_name: str,
              serial_number: str | None = None) -> x509.CertificateSigningRequest:
    """The pledge's CSR: the acp-node-name as otherName (RFC 8994 §6.2.2), serialNumber kept."""
    common_name = acp_node_name.split("@")[0][:64] or "acp"
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if serial_number:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, serial_number))
    algorithm = hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey) and \
        key.curve.key_size >= 384 else hashes.SHA256()
    return (x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name(attributes))
            .add_extension(x509.SubjectAlternativeName([acp_node_name_general_name(acp_node_name)]),
                           critical=False)
            .sign(key, algorithm))


def load_csr(der: bytes) -> x509.CertificateSigningRequest:
    """A DER PKCS#10 whose self-signature verifies; CsrError otherwise."""
    if len(der) > MAX_CSR_BYTES:
        raise CsrError(f"CSR of {len(der)} bytes is larger than {MAX_CSR_BYTES}")
    try:
        request = x509.load_der_x509_csr(der)
    except ValueError:
        raise CsrError("not a DER PKCS#10 certificate request") from None
    if not request.is_signature_valid:
        raise CsrError("CSR self-signature does not verify")
    return request


def csr_node_name(request: x509.CertificateSigningRequest) -> str | None:
    """The acp-node-name (otherName) a CSR asks for, or None."""
    try:
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:
        raise CsrError(f"CSR extensions cannot be decoded: {exc}") from None
    values = [n.value for n in san.get_values_for_type(x509.OtherName)
              if n.type_id.dotted_string == ID_ON_ACP_NODE_NAME]
    if len(values) != 1:
        return None
    try:
        return decode_acp_node_name_value(values[0])
    except CertificateError as exc:
        raise CsrError(str(exc)) from None
