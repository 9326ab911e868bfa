"""Whether a PEM private key is the key of a certificate, without cryptography.

acpd checks at every start, and the BRSKI part whenever it looks at the stored LDevID, that the
key file belongs to the certificate (store.py); that check alone would load cryptography into
an enrolled node for good (issue 19). This reads the unencrypted PEM forms OpenSSL and
cryptography write (PKCS#8 "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY") with the strict
DER reader and compares the public half: RSA's modulus and exponent, or EC's curve and the point
d*G computed from the private scalar (signature.py), not the copy a key file may carry.
"""
from __future__ import annotations

from . import der, signature
from .cert_reader import (
    CURVES,
    EC_PUBLIC_KEY,
    RSA_ENCRYPTION,
    CertificateError,
    PublicKey,
    pem_blocks,
)

_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY")


class KeyFileError(ValueError):
    """A key file this module cannot read (the message says why)."""


def _rsa(element: der.Element) -> tuple[int, int]:
    items = der.sequence(element, "RSAPrivateKey", range(9, 11))
    if der.integer(items[0], "RSAPrivateKey version") != 0:
        raise der.DerError("RSAPrivateKey: multi-prime keys are not read here")
    return der.integer(items[1], "RSA modulus"), der.integer(items[2], "RSA exponent")


def _ec(element: der.Element, curve_oid: str | None) -> tuple[str, bytes]:
    items = der.sequence(element, "ECPrivateKey", range(2, 5))
    if der.integer(items[0], "ECPrivateKey version") != 1:
        raise der.DerError("ECPrivateKey: version is not 1")
    scalar = int.from_bytes(der.octets(items[1], "ECPrivateKey"), "big")
    for extra in items[2:]:
        if extra.tag == der.context(0):
            inner = extra.children()
            if len(inner) != 1:
                raise der.DerError("ECPrivateKey: parameters are not one OID")
            named = der.oid(inner[0], "ECPrivateKey parameters")
            if curve_oid is not None and named != curve_oid:
                raise der.DerError("ECPrivateKey: two different curves")
            curve_oid = named
    if curve_oid is None or curve_oid not in CURVES:
        raise der.DerError("EC private key on a curve this reader does not know")
    curve = CURVES[curve_oid][0]
    try:
        return curve, signature.public_point(curve, scalar)
    except ValueError as exc:
        raise der.DerError(str(exc)) from None


def public_half(data: bytes) -> tuple[str, object]:
    """("rsa", (n, e)) or ("ec", (curve name, uncompressed point)) of the PEM private key."""
    for label in _LABELS:
        try:
            blocks = pem_blocks(data, label)
        except CertificateError as exc:
            raise KeyFileError(str(exc)) from None
        if not blocks:
            continue
        if len(blocks) != 1:
            raise KeyFileError(f"{len(blocks)} PEM {label} blocks")
        try:
            top = der.parse(blocks[0], label)
            if label == "RSA PRIVATE KEY":
                return "rsa", _rsa(top)
            if label == "EC PRIVATE KEY":
                return "ec", _ec(top, None)
            items = der.sequence(top, "PrivateKeyInfo", range(3, 6))
            if der.integer(items[0], "PrivateKeyInfo version") not in (0, 1):
                raise der.DerError("PrivateKeyInfo: unknown version")
            algorithm = der.sequence(items[1], "PrivateKeyInfo algorithm", range(1, 3))
            oid = der.oid(algorithm[0], "PrivateKeyInfo algorithm")
            inner = der.parse(der.octets(items[2], "PrivateKeyInfo"), "privateKey")
            if oid == RSA_ENCRYPTION:
                return "rsa", _rsa(inner)
            if oid == EC_PUBLIC_KEY and len(algorithm) == 2:
                return "ec", _ec(inner, der.oid(algorithm[1], "EC parameters"))
            raise KeyFileError(f"private key algorithm {oid} is not read here")
        except der.DerError as exc:
            raise KeyFileError(str(exc)) from None
    raise KeyFileError("no unencrypted PEM private key (PRIVATE KEY, EC PRIVATE KEY, "
                    "RSA PRIVATE KEY)")


def _point(key: PublicKey) -> bytes:
    """The certificate key's point, uncompressed (a compressed one is expanded)."""
    assert key.curve is not None
    p, b = signature.CURVES[key.curve][:2]
    x, y = signature.decode_point(key.point, p, b)
    size = (p.bit_length() + 7) // 8
    return b"\x04" + x.to_bytes(size, "big") + y.to_bytes(size, "big")


def key_matches(key: PublicKey, data: bytes) -> bool:
    """Whether the PEM private key `data` is the private half of `key`; KeyFileError when the
    key file cannot be read."""
    kind, public = public_half(data)
    if kind != key.kind:
        return False
    if kind == "rsa":
        return public == (key.n, key.e)
    if key.curve is None:
        return False
    try:
        return public == (key.curve, _point(key))
    except signature.InvalidSignature:
        return False
