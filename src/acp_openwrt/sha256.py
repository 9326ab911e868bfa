"""SHA-256 without OpenSSL: the interpreter's own implementation when it has one.

hashlib prefers OpenSSL's, and importing it loads libcrypto and initialises OpenSSL: about
3.5 MB of RSS, which an acpd that hashes a few names and files (the ULA prefix, the identity
switch's checksums) need not pay for (issue 19; the idle pledge holds no other OpenSSL user).
The digests are the same (FIPS 180-4).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def _builtin_sha256() -> Callable[..., Any]:
    # _sha2 from CPython 3.12 on, _sha256 in 3.11; a build without them: hashlib's (OpenSSL)
    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
    from hashlib import sha256 as openssl_sha256
    return openssl_sha256


sha256 = _builtin_sha256()
