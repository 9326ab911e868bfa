"""Registrar-IDs (RFC 8994 §6.11.7.2, §9.2.2): parsed, derived, read back from addresses.

Two registrars of one ACP domain must never allocate the same prefix, so each needs a
domain-unique Registrar-ID: 46 bits (Zone has room for 48, Vlong for 46; one value serves both).
`option registrar_id` sets it (hex, or an EUI-48 whose lower 46 bits are taken, as the RFC
suggests); unset, the first registrar start derives it from the SHA-256 of the registrar's CA
public key (`derived_registrar_id`): registrars that are sub-CAs of one operator root (§9.2.4),
each with its own key, get distinct IDs without any coordination, and the operator can compute
each one offline with openssl (docs/brski.md). Two registrars sharing one CA key would derive
the same ID: they must set it. `conflict` spots that at run time from the other registrar's
announced ACP address. Pure functions, no I/O.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...identity.address import AcpAddress, AddressError

if TYPE_CHECKING:  # acpd reads Registrar-IDs from addresses without cryptography or hashlib
    from cryptography import x509

REGISTRAR_ID_BITS = 46
REGISTRAR_ID_MAX = (1 << REGISTRAR_ID_BITS) - 1
_HEX = re.compile(r"(0x)?[0-9a-f]{1,12}")
_EUI48 = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


class RegistrarIdError(ValueError):
    """A Registrar-ID that cannot be used; the message says why and what is allowed."""


def format_registrar_id(value: int) -> str:
    """12 hex digits, as `acpctl registrar` shows it and `option registrar_id` takes it."""
    return f"{value:012x}"


def parse_registrar_id(text: str) -> int:
    """`option registrar_id`: 1 to 12 hex digits (0x allowed) or an EUI-48 (aa:bb:cc:dd:ee:ff,
    its lower 46 bits); not 0, at most 3fffffffffff."""
    word = text.strip().lower()
    if _EUI48.fullmatch(word):
        value = int(re.sub("[:-]", "", word), 16) & REGISTRAR_ID_MAX
    elif _HEX.fullmatch(word):
        value = int(word, 16)
    else:
        raise RegistrarIdError(f"{text!r} is not a Registrar-ID (1 to 12 hex digits, e.g. "
                               "1a2b3c4d5e6f, or a MAC address aa:bb:cc:dd:ee:ff)")
    if value > REGISTRAR_ID_MAX:
        raise RegistrarIdError(f"{text!r} does not fit in {REGISTRAR_ID_BITS} bits (RFC 8994 "
                               f"§6.11.7.2): at most {format_registrar_id(REGISTRAR_ID_MAX)}")
    if value == 0:
        raise RegistrarIdError(f"{text!r} is 0: an all-zero Registrar-ID is easily shared by "
                               "mistake; choose another (or leave the option unset)")
    return value


def derived_registrar_id(ca_cert: x509.Certificate) -> int:
    """The first 46 bits of SHA-256 over the CA's DER SubjectPublicKeyInfo (never 0).

    The operator's own check: `openssl x509 -in CA.crt -noout -pubkey | openssl pkey -pubin
    -outform DER | sha256sum`: the first 12 hex digits, shifted right by 2 bits."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    spki = ca_cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    value = int.from_bytes(hashlib.sha256(spki).digest()[:6], "big") >> 2
    return value or 1


def registrar_id_of(address: str) -> int | None:
    """The Registrar-ID in a Zone or Vlong ACP address, None for any other address."""
    try:
        decoded = AcpAddress.decode(address)
    except AddressError:
        return None
    return decoded.registrar_id


def conflict(own_id: int, own_address: str, heard_address: str) -> str | None:
    """Why another registrar announced at `heard_address` collides with us, or None.

    A registrar's own ACP address carries its Registrar-ID (it allocates itself first), so a
    second registrar with our ID announces an address with our ID that is not ours."""
    if heard_address == own_address:
        return None
    other = registrar_id_of(heard_address)
    if other is None or other != own_id:
        return None
    return (f"registrar at {heard_address} uses this registrar's Registrar-ID "
            f"{format_registrar_id(own_id)}: both would allocate the same addresses "
            "(RFC 8994 §6.11.7.2); set a distinct option registrar_id on one of them")
