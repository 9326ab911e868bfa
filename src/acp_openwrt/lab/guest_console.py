"""Separating the command's output from the guest's boot chatter on the serial console.

Sans-I/O: bytes from QEMU go in, the bytes that belong to the command come out. Stage 2 frames
the command between a begin and an end marker carrying a per-run nonce; what comes before is the
boot log (kept for diagnostics), what comes after is power-off noise (kept too).
"""
from __future__ import annotations

import re
from enum import Enum

# Terminal control sequences SeaBIOS and QEMU write; noise in a diagnostic.
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|c)")


class Phase(Enum):
    BOOT = "boot"
    RUN = "run"
    DONE = "done"


class ConsoleFilter:
    """Feed console bytes; get back the command's own output, with the serial line's \\r gone."""

    def __init__(self, begin_marker: str, end_marker: str) -> None:
        self._begin = begin_marker.encode() + b"\n"
        self._end = b"\n" + end_marker.encode()
        self._pending = b""
        self.phase = Phase.BOOT
        self.log = bytearray()  # everything outside the markers

    def feed(self, data: bytes) -> bytes:
        self._pending += data.replace(b"\r", b"")
        out = bytearray()
        while True:
            if self.phase is Phase.BOOT:
                i = self._pending.find(self._begin)
                if i < 0:
                    self._hold(len(self._begin), self.log)
                    return bytes(out)
                self.log += self._pending[:i]
                self._pending = self._pending[i + len(self._begin):]
                self.phase = Phase.RUN
            elif self.phase is Phase.RUN:
                i = self._pending.find(self._end)
                if i < 0:
                    self._hold(len(self._end), out)
                    return bytes(out)
                out += self._pending[:i]
                self._pending = self._pending[i + len(self._end):]
                self.phase = Phase.DONE
            else:
                self.log += self._pending
                self._pending = b""
                return bytes(out)

    def close(self) -> bytes:
        """End of stream: whatever was held back for a possible marker is released."""
        rest, self._pending = self._pending, b""
        if self.phase is Phase.RUN:
            return rest
        self.log += rest
        return b""

    def _hold(self, marker_len: int, sink: bytearray) -> None:
        # Keep just enough to recognise a marker split across reads.
        cut = max(0, len(self._pending) - (marker_len - 1))
        sink += self._pending[:cut]
        self._pending = self._pending[cut:]

    def log_tail(self, lines: int = 30) -> str:
        held = self._pending if self.phase is not Phase.RUN else b""
        text = _ESCAPES.sub("", (bytes(self.log) + held).decode("utf-8", "replace")).strip()
        return "\n".join(text.splitlines()[-lines:])
