"""GRASP (RFC 8990): the codec and the sans-I/O engine; transports and the ASA API sit on top.

Modules: ``constants`` (RFC numbers), ``messages`` (message values), ``cbor_reader`` (strict
CBOR reader for untrusted input), ``codec`` (bytes <-> messages), ``json_view`` (operator
display), ``session`` (session ids), ``flood_cache``, ``discovery_cache``, ``rate_limit``,
``engine`` (events in, actions out).
"""
from __future__ import annotations

from .codec import GraspDecodeError, decode, encode
from .json_view import decode_hex_to_json, message_to_json

__all__ = ["GraspDecodeError", "decode", "encode", "decode_hex_to_json", "message_to_json"]
