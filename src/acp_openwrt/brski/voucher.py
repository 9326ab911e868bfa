"""Vouchers (RFC 8366) and voucher-requests (RFC 8995 §3) as JSON: build, parse, validate.

Parsing is strict about every leaf it knows (type, encoding, the YANG must/when rules) and,
as RFC 8366 asks, ignores leaves it does not know. Binary leaves are base64 (RFC 7951 §6.6);
the nonce is kept as the text that was sent, because RFC 8995 Appendix C carries a base64url
string there and the only thing a pledge does with it is compare it with its own.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from typing import Any

VOUCHER_KEY = "ietf-voucher:voucher"
REQUEST_KEY = "ietf-voucher-request:voucher"
ASSERTIONS = ("verified", "logged", "proximity")
MAX_JSON_BYTES = 64 * 1024
MAX_SERIAL = 128
NONCE_BYTES = (8, 64)

_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)\Z")
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}\Z")

# JSON name -> attribute name, and which ones hold binary (base64) values.
_LEAVES = {
    "created-on": "created_on", "expires-on": "expires_on", "assertion": "assertion",
    "serial-number": "serial_number", "idevid-issuer": "idevid_issuer",
    "pinned-domain-cert": "pinned_domain_cert",
    "domain-cert-revocation-checks": "domain_cert_revocation_checks", "nonce": "nonce",
    "last-renewal-date": "last_renewal_date",
    "prior-signed-voucher-request": "prior_signed_voucher_request",
    "proximity-registrar-cert": "proximity_registrar_cert",
}
_BINARY = {"idevid_issuer", "pinned_domain_cert", "prior_signed_voucher_request",
           "proximity_registrar_cert"}
_DATES = {"created_on", "expires_on", "last_renewal_date"}
_REQUEST_ONLY = {"prior_signed_voucher_request", "proximity_registrar_cert"}


class VoucherError(ValueError):
    """A voucher or voucher-request that is malformed or breaks a YANG rule."""


def new_nonce() -> str:
    """A fresh nonce for one voucher-request attempt: 16 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(16)).decode("ascii")


def format_time(value: dt.datetime) -> str:
    """yang:date-and-time in UTC with a Z."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(name: str, text: object) -> dt.datetime:
    if not isinstance(text, str) or not _DATE_TIME.match(text):
        raise VoucherError(f"{name} {text!r} is not a yang:date-and-time")
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VoucherError(f"{name} {text!r} is not a valid date and time") from None


def _parse_binary(name: str, text: object) -> bytes:
    if not isinstance(text, str) or not text:
        raise VoucherError(f"{name} must be a non-empty base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VoucherError(f"{name} is not valid base64") from None


def _check_nonce(text: object) -> str:
    """Base64 or base64url text of 8 to 64 octets (padding optional)."""
    if not isinstance(text, str) or not _B64URL.match(text.replace("+", "-").replace("/", "_")):
        raise VoucherError(f"nonce {text!r} is not base64 text")
    body = text.rstrip("=").replace("+", "-").replace("/", "_")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise VoucherError(f"nonce {text!r} is not base64 text") from None
    if not NONCE_BYTES[0] <= len(raw) <= NONCE_BYTES[1]:
        raise VoucherError(f"nonce holds {len(raw)} octets (8 to 64 accepted)")
    return text


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise VoucherError(f"JSON member {key!r} appears twice")
        out[key] = value
    return out


@dataclass(frozen=True)
class Voucher:
    """The leaves of a voucher or voucher-request; `request` tells which of the two."""

    serial_number: str
    assertion: str | None = None
    created_on: dt.datetime | None = None
    expires_on: dt.datetime | None = None
    idevid_issuer: bytes | None = None
    pinned_domain_cert: bytes | None = None
    domain_cert_revocation_checks: bool | None = None
    nonce: str | None = None
    last_renewal_date: dt.datetime | None = None
    prior_signed_voucher_request: bytes | None = None
    proximity_registrar_cert: bytes | None = None
    request: bool = field(default=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        kind = "voucher-request" if self.request else "voucher"
        if not isinstance(self.serial_number, str) or not 0 < len(self.serial_number) <= MAX_SERIAL:
            raise VoucherError(f"{kind} serial-number must be a string of 1 to {MAX_SERIAL} "
                               "characters")
        if self.assertion is not None and self.assertion not in ASSERTIONS:
            raise VoucherError(f"{kind} assertion {self.assertion!r} is not one of "
                               f"{', '.join(ASSERTIONS)}")
        if self.nonce is not None:
            _check_nonce(self.nonce)
        if self.domain_cert_revocation_checks is not None and \
                not isinstance(self.domain_cert_revocation_checks, bool):
            raise VoucherError("domain-cert-revocation-checks must be a boolean")
        if self.request:
            return
        for name, value in (("created-on", self.created_on), ("assertion", self.assertion),
                            ("pinned-domain-cert", self.pinned_domain_cert)):
            if value is None:
                raise VoucherError(f"voucher lacks the mandatory {name}")
        if self.nonce is not None and self.expires_on is not None:
            raise VoucherError("voucher has both nonce and expires-on (RFC 8366 forbids it)")
        if self.last_renewal_date is not None and self.expires_on is None:
            raise VoucherError("voucher has last-renewal-date without expires-on")
        for name in _REQUEST_ONLY:
            if getattr(self, name) is not None:
                raise VoucherError(f"voucher carries {name.replace('_', '-')}, "
                                   "a voucher-request leaf")

    def to_dict(self) -> dict[str, Any]:
        leaves: dict[str, Any] = {}
        for json_name, attr in _LEAVES.items():
            value = getattr(self, attr)
            if value is None:
                continue
            if attr in _BINARY:
                value = base64.b64encode(value).decode("ascii")
            elif attr in _DATES:
                value = format_time(value)
            leaves[json_name] = value
        return {REQUEST_KEY if self.request else VOUCHER_KEY: leaves}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("ascii")

    def with_(self, **changes: Any) -> Voucher:
        return replace(self, **changes)


def parse_voucher(data: bytes, *, request: bool = False) -> Voucher:
    """A Voucher from JSON bytes (request=True: a voucher-request); VoucherError otherwise."""
    kind = "voucher-request" if request else "voucher"
    if len(data) > MAX_JSON_BYTES:
        raise VoucherError(f"{kind} JSON of {len(data)} bytes is larger than {MAX_JSON_BYTES}")
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except VoucherError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise VoucherError(f"{kind} is not valid UTF-8 JSON ({exc.__class__.__name__})") from None
    container = REQUEST_KEY if request else VOUCHER_KEY
    if not isinstance(document, dict) or list(document) != [container]:
        raise VoucherError(f"{kind} JSON must be an object with the one member {container!r}")
    leaves = document[container]
    if not isinstance(leaves, dict):
        raise VoucherError(f"{container} must be an object")
    values: dict[str, Any] = {}
    for json_name, attr in _LEAVES.items():
        if json_name not in leaves:
            continue
        raw = leaves[json_name]
        if attr in _BINARY:
            values[attr] = _parse_binary(json_name, raw)
        elif attr in _DATES:
            values[attr] = _parse_time(json_name, raw)
        elif attr == "domain_cert_revocation_checks":
            # RFC 8366's own example writes the boolean as the string "true".
            if raw in ("true", "false"):
                raw = raw == "true"
            if not isinstance(raw, bool):
                raise VoucherError("domain-cert-revocation-checks must be a boolean")
            values[attr] = raw
        else:
            if not isinstance(raw, str):
                raise VoucherError(f"{json_name} must be a string")
            values[attr] = raw
    if "serial_number" not in values:
        raise VoucherError(f"{kind} lacks the mandatory serial-number")
    if not request:
        for attr in _REQUEST_ONLY:
            values.pop(attr, None)  # unknown to a voucher: ignored like any unknown leaf
    return Voucher(request=request, **values)


def leaf_names() -> list[str]:
    """The JSON leaf names this module knows (for documentation and tests)."""
    return [f.name for f in fields(Voucher)]
