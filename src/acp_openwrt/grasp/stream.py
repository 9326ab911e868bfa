"""Framing GRASP messages out of a TCP byte stream (RFC 8990 §2.5.3: back-to-back CBOR items,
no other framing), for the asyncio edge: bytes in, one complete message's bytes out at a time.
"""
from __future__ import annotations

from . import constants as c
from .cbor_reader import CborError, CborIncomplete, read_item
from .codec import GraspDecodeError, decode


class StreamFramer:
    """Accumulates received bytes and splits them into whole CBOR items.

    A peer that sends an item larger than ``max_size`` or bytes that are not CBOR gets a
    GraspDecodeError (the edge then closes the connection); the buffer never grows past
    ``max_size`` plus one read.
    """

    __slots__ = ("max_size", "_buf")

    def __init__(self, max_size: int = c.DEFAULT_TCP_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete messages now available (maybe none)."""
        if not self._buf and len(data) <= self.max_size:
            # the usual case: one segment carries exactly one GRASP message, which the codec's
            # C fast path recognises (a valid message with no trailing bytes) far quicker than
            # the item walk below; anything else takes the walk
            try:
                decode(data, self.max_size)
            except GraspDecodeError:
                pass
            else:
                return [bytes(data)]
        buf = self._buf + data if self._buf else bytes(data)
        out: list[bytes] = []
        pos = 0
        while pos < len(buf):
            try:
                _, end = read_item(buf, pos)
            except CborIncomplete:
                if len(buf) - pos > self.max_size:
                    raise GraspDecodeError(
                        f"message exceeds the limit of {self.max_size}") from None
                break
            except CborError as exc:
                raise GraspDecodeError(str(exc)) from None
            if end - pos > self.max_size:
                raise GraspDecodeError(f"message exceeds the limit of {self.max_size}")
            out.append(buf[pos:end])
            pos = end
        self._buf = buf[pos:]
        return out

    @property
    def pending(self) -> int:
        """Bytes held of an incomplete message."""
        return len(self._buf)
