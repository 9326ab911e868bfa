"""Text from the network, made fit for one log line.

A peer chooses reason strings, serial numbers, names in certificates, GRASP objective names,
HTTP paths: with a newline it writes a second, forged log line; with an escape sequence it
rewrites the operator's terminal; with a megabyte it floods syslog. Every log call (and every
acpctl table) that shows such text passes it through `logsafe` first.
"""
from __future__ import annotations

DEFAULT_LIMIT = 200


def logsafe(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """`text` on one line: control, format and separator characters (newline, ESC, DEL, C1,
    bidi overrides, U+2028) escaped as repr() escapes them, backslashes doubled so an escape
    cannot be faked, and at most `limit` characters of the original kept (the cut is marked
    with the full length). bytes are shown as repr() shows bytes; anything else via str()."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        cut = repr(raw[:limit])[2:-1]
        return cut if len(raw) <= limit else f"{cut}...[{len(raw)} bytes]"
    value = text if isinstance(text, str) else str(text)
    if value.isprintable() and "\\" not in value and len(value) <= limit:
        return value  # the common case: nothing to escape
    cut = value[:limit]
    escaped = "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in cut)
    return escaped if len(value) <= limit else f"{escaped}...[{len(value)} chars]"
