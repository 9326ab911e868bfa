"""Signature checks on certificates and CRLs without OpenSSL: ECDSA (NIST P-192 to P-521) and
RSA (PKCS#1 v1.5 and PSS) with SHA-224/256/384/512, verification only.

An enrolled acpd checks the signatures on the path behind every new SA and on every CRL it
fetches (identity/membership.py, revocation/crl.py); cryptography would stay loaded for that
(about 8 MB of RSS, issue 19). Verifying needs no secret, so nothing here has to resist timing
attacks; it has to be exact, and it is checked against cryptography's own verdicts
(tests/unit/test_cert_reader.py): every signature the lab PKI makes, and tampered ones.
The digests are the interpreter's own (_sha256/_sha2, _sha512), not hashlib's OpenSSL.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from . import der
from .cert_reader import PublicKey


class InvalidSignature(ValueError):
    """The signature does not verify with the key."""


class UnsupportedSignature(ValueError):
    """An algorithm, key or parameter this module does not check."""


def _builtin(names: tuple[str, ...], attr: str) -> Callable[..., Any]:
    for name in names:
        try:
            return getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError):
            continue
    return getattr(importlib.import_module("hashlib"), attr)


_SHA2 = ("_sha2", "_sha256")   # CPython 3.12 on, 3.11
_SHA512 = ("_sha2", "_sha512")
HASHES: dict[str, tuple[str, Callable[..., Any]]] = {
    "2.16.840.1.101.3.4.2.4": ("sha224", _builtin(_SHA2, "sha224")),
    "2.16.840.1.101.3.4.2.1": ("sha256", _builtin(_SHA2, "sha256")),
    "2.16.840.1.101.3.4.2.2": ("sha384", _builtin(_SHA512, "sha384")),
    "2.16.840.1.101.3.4.2.3": ("sha512", _builtin(_SHA512, "sha512")),
}
_BY_NAME = {name: (oid, make) for oid, (name, make) in HASHES.items()}
# signatureAlgorithm OID -> (key kind, hash name); RSASSA-PSS names its hash in parameters
ALGORITHMS = {
    "1.2.840.10045.4.3.1": ("ec", "sha224"), "1.2.840.10045.4.3.2": ("ec", "sha256"),
    "1.2.840.10045.4.3.3": ("ec", "sha384"), "1.2.840.10045.4.3.4": ("ec", "sha512"),
    "1.2.840.113549.1.1.14": ("rsa", "sha224"), "1.2.840.113549.1.1.11": ("rsa", "sha256"),
    "1.2.840.113549.1.1.12": ("rsa", "sha384"), "1.2.840.113549.1.1.13": ("rsa", "sha512"),
}
# Hash names of algorithms refused for their hash (the message names it as cryptography did)
WEAK = {"1.2.840.10045.4.1": "sha1", "1.2.840.113549.1.1.5": "sha1",
        "1.2.840.113549.1.1.4": "md5"}
RSASSA_PSS = "1.2.840.113549.1.1.10"
MGF1 = "1.2.840.113549.1.1.8"
SHA1 = "1.3.14.3.2.26"


def signature_hash(oid: str, parameters: bytes | None) -> str:
    """The hash name of a signature algorithm ("sha256", ...; "sha1" for the old ones);
    UnsupportedSignature for an unknown algorithm."""
    if oid in ALGORITHMS:
        return ALGORITHMS[oid][1]
    if oid in WEAK:
        return WEAK[oid]
    if oid == RSASSA_PSS:
        return _pss_parameters(parameters)[0]
    raise UnsupportedSignature(f"signature algorithm {oid} is not supported")


def verify(message: bytes, oid: str, parameters: bytes | None, signature: bytes,
           key: PublicKey) -> None:
    """Check `signature` over `message` (a tbsCertificate or tbsCertList) made with algorithm
    `oid` by the holder of `key`; InvalidSignature or UnsupportedSignature if not."""
    if oid == RSASSA_PSS:
        hash_name, mgf_hash, salt = _pss_parameters(parameters)
        if key.kind != "rsa":
            raise InvalidSignature("an RSA-PSS signature, the key is not RSA")
        _verify_pss(message, signature, key, hash_name, mgf_hash, salt)
        return
    if oid not in ALGORITHMS:
        raise UnsupportedSignature(f"signature algorithm {oid} is not supported")
    kind, hash_name = ALGORITHMS[oid]
    if key.kind != kind:
        raise InvalidSignature(f"a {kind.upper()} signature, the key is {key.kind.upper()}")
    if kind == "ec" and parameters is not None:
        raise UnsupportedSignature("ECDSA signature algorithm with parameters")
    if kind == "rsa" and parameters not in (None, b"\x05\x00"):
        raise UnsupportedSignature("RSA signature algorithm with parameters")
    digest = _BY_NAME[hash_name][1](message).digest()
    if kind == "ec":
        _verify_ecdsa(digest, signature, key)
    else:
        _verify_pkcs1(digest, hash_name, signature, key)


# --- RSA -------------------------------------------------------------------------------------

# DER of DigestInfo up to the digest (RFC 8017 §9.2 note 1)
_DIGEST_INFO = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}


MAX_RSA_BITS = 16384       # OpenSSL's limits, which cryptography applied before: a peer's
SMALL_RSA_BITS = 3072      # certificate must not make acpd's loop spend seconds on one
MAX_LARGE_EXPONENT_BITS = 64  # modular exponentiation


def _rsa_open(signature: bytes, key: PublicKey) -> bytes:
    bits = key.n.bit_length()
    if bits > MAX_RSA_BITS:
        raise UnsupportedSignature(f"RSA key of {bits} bits (at most {MAX_RSA_BITS})")
    if bits > SMALL_RSA_BITS and key.e.bit_length() > MAX_LARGE_EXPONENT_BITS:
        raise UnsupportedSignature("RSA key with a public exponent over 64 bits")
    if key.e < 3 or not key.e & 1:
        raise InvalidSignature("RSA public exponent is not odd and at least 3")
    size = (bits + 7) // 8
    if len(signature) != size:
        raise InvalidSignature(f"RSA signature of {len(signature)} bytes, key of {size}")
    s = int.from_bytes(signature, "big")
    if s >= key.n:
        raise InvalidSignature("RSA signature out of range")
    return pow(s, key.e, key.n).to_bytes(size, "big")


def _verify_pkcs1(digest: bytes, hash_name: str, signature: bytes, key: PublicKey) -> None:
    """RSASSA-PKCS1-v1_5: the encoding is rebuilt and compared whole (RFC 8017 §8.2.2)."""
    encoded = _rsa_open(signature, key)
    tail = _DIGEST_INFO[hash_name] + digest
    padding = len(encoded) - len(tail) - 3
    if padding < 8 or encoded != b"\x00\x01" + b"\xff" * padding + b"\x00" + tail:
        raise InvalidSignature("RSA PKCS#1 v1.5 signature does not verify")


def _pss_parameters(parameters: bytes | None) -> tuple[str, str, int]:
    """(hash, MGF1 hash, salt length) of RSASSA-PSS-params (RFC 4055); only SHA-2 and MGF1."""
    what = "RSASSA-PSS parameters"
    if parameters is None:
        raise UnsupportedSignature(f"{what} missing (SHA-1 defaults are not accepted)")
    hash_oid, mgf_hash_oid, salt = SHA1, SHA1, 20
    try:
        for field in der.sequence(der.parse(parameters, what), what):
            inner = field.children()
            if len(inner) != 1:
                raise der.DerError(f"{what}: field is not one element")
            if field.tag == der.context(0):
                hash_oid = der.oid(der.sequence(inner[0], what, range(1, 3))[0], what)
            elif field.tag == der.context(1):
                mgf = der.sequence(inner[0], what, range(2, 3))
                if der.oid(mgf[0], what) != MGF1:
                    raise UnsupportedSignature(f"{what}: mask generation is not MGF1")
                mgf_hash_oid = der.oid(der.sequence(mgf[1], what, range(1, 3))[0], what)
            elif field.tag == der.context(2):
                salt = der.integer(inner[0], what)
            elif field.tag == der.context(3):
                if der.integer(inner[0], what) != 1:
                    raise UnsupportedSignature(f"{what}: trailer field is not 1")
            else:
                raise der.DerError(f"{what}: tag 0x{field.tag:02x}")
    except der.DerError as exc:
        raise UnsupportedSignature(str(exc)) from None
    if hash_oid not in HASHES or mgf_hash_oid not in HASHES:
        raise UnsupportedSignature(f"{what}: hash {hash_oid} / {mgf_hash_oid} is not SHA-2")
    if not 0 <= salt <= 1024:
        raise UnsupportedSignature(f"{what}: salt length {salt}")
    return HASHES[hash_oid][0], HASHES[mgf_hash_oid][0], salt


def _mgf1(seed: bytes, length: int, hash_name: str) -> bytes:
    make = _BY_NAME[hash_name][1]
    out = b""
    counter = 0
    while len(out) < length:
        out += make(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def _verify_pss(message: bytes, signature: bytes, key: PublicKey, hash_name: str,
                mgf_hash: str, salt_length: int) -> None:
    """EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with emBits = modBits - 1."""
    em_bits = key.n.bit_length() - 1
    em_len = (em_bits + 7) // 8
    opened = _rsa_open(signature, key)
    encoded = opened[len(opened) - em_len:]
    if opened[:len(opened) - em_len].strip(b"\x00"):
        raise InvalidSignature("RSA-PSS encoding too long")
    make = _BY_NAME[hash_name][1]
    m_hash = make(message).digest()
    h_len = len(m_hash)
    if em_len < h_len + salt_length + 2 or encoded[-1] != 0xBC:
        raise InvalidSignature("RSA-PSS signature does not verify")
    masked, digest = encoded[:em_len - h_len - 1], encoded[em_len - h_len - 1:-1]
    top_bits = 8 * em_len - em_bits
    if top_bits and masked[0] >> (8 - top_bits):
        raise InvalidSignature("RSA-PSS signature does not verify")
    db = bytearray(a ^ b for a, b in zip(masked, _mgf1(digest, len(masked), mgf_hash), strict=True))
    if top_bits:
        db[0] &= 0xFF >> top_bits
    zeros = em_len - h_len - salt_length - 2
    if any(db[:zeros]) or db[zeros] != 0x01:
        raise InvalidSignature("RSA-PSS signature does not verify")
    salt = bytes(db[len(db) - salt_length:]) if salt_length else b""
    if make(b"\x00" * 8 + m_hash + salt).digest() != digest:
        raise InvalidSignature("RSA-PSS signature does not verify")


# --- ECDSA -----------------------------------------------------------------------------------

# (p, b, Gx, Gy, n); a = -3 on every NIST prime curve (FIPS 186-4 D.1.2)
CURVES = {
    "secp192r1": (
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFFFFFFFFFFFF,
        0x64210519E59C80E70FA7E9AB72243049FEB8DEECC146B9B1,
        0x188DA80EB03090F67CBF20EB43A18800F4FF0AFD82FF1012,
        0x07192B95FFC8DA78631011ED6B24CDD573F977A11E794811,
        0xFFFFFFFFFFFFFFFFFFFFFFFF99DEF836146BC9B1B4D22831),
    "secp224r1": (
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF000000000000000000000001,
        0xB4050A850C04B3ABF54132565044B0B7D7BFD8BA270B39432355FFB4,
        0xB70E0CBD6BB4BF7F321390B94A03C1D356C21122343280D6115C1D21,
        0xBD376388B5F723FB4C22DFE6CD4375A05A07476444D5819985007E34,
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFF16A2E0B8F03E13DD29455C5C2A3D),
    "secp256r1": (
        0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
        0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
        0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
        0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551),
    "secp384r1": (
        int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFE"
            "FFFFFFFF0000000000000000FFFFFFFF", 16),
        int("B3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875A"
            "C656398D8A2ED19D2A85C8EDD3EC2AEF", 16),
        int("AA87CA22BE8B05378EB1C71EF320AD746E1D3B628BA79B9859F741E082542A38"
            "5502F25DBF55296C3A545E3872760AB7", 16),
        int("3617DE4A96262C6F5D9E98BF9292DC29F8F41DBD289A147CE9DA3113B5F0B8C0"
            "0A60B1CE1D7E819D7A431D7C90EA0E5F", 16),
        int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
            "581A0DB248B0A77AECEC196ACCC52973", 16)),
    "secp521r1": (
        (1 << 521) - 1,
        int("0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF1"
            "09E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B50"
            "3F00", 16),
        int("00C6858E06B70404E9CD9E3ECB662395B4429C648139053FB521F828AF606B4D"
            "3DBAA14B5E77EFE75928FE1DC127A2FFA8DE3348B3C1856A429BF97E7E31C2E5"
            "BD66", 16),
        int("011839296A789A3BC0045C8A5FB42C7D1BD998F54449579B446817AFBD17273E"
            "662C97EE72995EF42640C550B9013FAD0761353C7086A272C24088BE94769FD1"
            "6650", 16),
        int("01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
            "FFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E9138"
            "6409", 16)),
}

Point = tuple[int, int, int]  # Jacobian (X, Y, Z); Z = 0 is the point at infinity
INFINITY: Point = (1, 1, 0)


def _double(point: Point, p: int) -> Point:
    x, y, z = point
    if z == 0 or y == 0:
        return INFINITY
    zz = z * z % p
    m = 3 * (x - zz) * (x + zz) % p          # a = -3
    yy = y * y % p
    s = 4 * x * yy % p
    x3 = (m * m - 2 * s) % p
    return x3, (m * (s - x3) - 8 * yy * yy) % p, 2 * y * z % p


def _add(one: Point, two: Point, p: int) -> Point:
    if one[2] == 0:
        return two
    if two[2] == 0:
        return one
    x1, y1, z1 = one
    x2, y2, z2 = two
    z1z1, z2z2 = z1 * z1 % p, z2 * z2 % p
    u1, u2 = x1 * z2z2 % p, x2 * z1z1 % p
    s1, s2 = y1 * z2 * z2z2 % p, y2 * z1 * z1z1 % p
    if u1 == u2:
        return _double(one, p) if s1 == s2 else INFINITY
    h, r = (u2 - u1) % p, (s2 - s1) % p
    hh = h * h % p
    hhh = h * hh % p
    v = u1 * hh % p
    x3 = (r * r - hhh - 2 * v) % p
    return x3, (r * (v - x3) - s1 * hhh) % p, h * z1 * z2 % p


def decode_point(data: bytes, p: int, b: int) -> tuple[int, int]:
    size = (p.bit_length() + 7) // 8
    if data[:1] == b"\x04" and len(data) == 1 + 2 * size:
        x, y = int.from_bytes(data[1:1 + size], "big"), int.from_bytes(data[1 + size:], "big")
    elif data[:1] in (b"\x02", b"\x03") and len(data) == 1 + size and p % 4 == 3:
        x = int.from_bytes(data[1:], "big")
        y = pow((x * x * x - 3 * x + b) % p, (p + 1) // 4, p)
        if y & 1 != data[0] & 1:
            y = p - y
    else:
        raise InvalidSignature("EC public key is not a point encoding this module reads")
    if x >= p or y >= p or (y * y - (x * x * x - 3 * x + b)) % p:
        raise InvalidSignature("EC public key is not on its curve")
    return x, y


def _verify_ecdsa(digest: bytes, signature: bytes, key: PublicKey) -> None:
    """ECDSA verification (SEC 1 v2 §4.1.4, FIPS 186-4 §6.4.2)."""
    if key.curve not in CURVES:
        raise UnsupportedSignature("EC key on a curve this module does not know")
    p, b, gx, gy, n = CURVES[key.curve]
    qx, qy = decode_point(key.point, p, b)
    try:
        r_el, s_el = der.sequence(der.parse(signature, "ECDSA signature"), "ECDSA signature",
                                  range(2, 3))
        r, s = der.integer(r_el, "ECDSA r"), der.integer(s_el, "ECDSA s")
    except der.DerError as exc:
        raise InvalidSignature(str(exc)) from None
    if not (0 < r < n and 0 < s < n):
        raise InvalidSignature("ECDSA signature out of range")
    e = int.from_bytes(digest, "big")
    excess = 8 * len(digest) - n.bit_length()
    if excess > 0:
        e >>= excess
    w = pow(s, -1, n)
    u1, u2 = e * w % n, r * w % n
    g, q = (gx, gy, 1), (qx, qy, 1)
    both = _add(g, q, p)
    total = INFINITY
    for bit in range(max(u1.bit_length(), u2.bit_length()) - 1, -1, -1):
        total = _double(total, p)
        pick = (u1 >> bit & 1, u2 >> bit & 1)
        if pick == (1, 1):
            total = _add(total, both, p)
        elif pick == (1, 0):
            total = _add(total, g, p)
        elif pick == (0, 1):
            total = _add(total, q, p)
    x, _, z = total
    if z == 0:
        raise InvalidSignature("ECDSA signature does not verify")
    affine_x = x * pow(z * z, -1, p) % p
    if affine_x % n != r:
        raise InvalidSignature("ECDSA signature does not verify")


def public_point(curve: str, scalar: int) -> bytes:
    """The uncompressed public point scalar * G (a private key's public key)."""
    p, _, gx, gy, n = CURVES[curve]
    if not 0 < scalar < n:
        raise ValueError("EC private key out of range")
    total, addend = INFINITY, (gx, gy, 1)
    while scalar:
        if scalar & 1:
            total = _add(total, addend, p)
        addend = _double(addend, p)
        scalar >>= 1
    x, y, z = total
    zi = pow(z, -1, p)
    size = (p.bit_length() + 7) // 8
    return (b"\x04" + (x * zi * zi % p).to_bytes(size, "big")
            + (y * zi * zi * zi % p).to_bytes(size, "big"))
