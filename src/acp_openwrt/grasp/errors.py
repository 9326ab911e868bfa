"""RFC 8991 Appendix A error codes (what every API call returns first)."""
from __future__ import annotations

from enum import IntEnum
from typing import Any


class GraspError(IntEnum):
    ok = 0
    declined = 1
    noReply = 2
    unspec = 3
    ASAfull = 4
    dupASA = 5
    noASA = 6
    notYourASA = 7
    notBoth = 8
    notDry = 9
    notOverlap = 10
    objFull = 11
    objReg = 12
    notYourObj = 13
    notObj = 14
    notNeg = 15
    noSecurity = 16
    noDiscReply = 17
    sockErrNegRq = 18
    noSession = 19
    noSocket = 20
    loopExhausted = 21
    sockErrNegStep = 22
    noPeer = 23
    CBORfail = 24
    invalidNeg = 25
    invalidEnd = 26
    noNegReply = 27
    noValidStep = 28
    sockErrWait = 29
    sockErrEnd = 30
    IDclash = 31
    notSynch = 32
    notFloodDisc = 33
    sockErrSynRq = 34
    noListener = 35
    noSynchReply = 36
    noValidSynch = 37
    invalidLoc = 38


class GraspApiError(Exception):
    """An API call refused; ``code`` is the RFC 8991 error code. ``outputs`` is what the
    engine call did before it refused (rare; empty unless the call says otherwise): the edge
    executes them as it would a return value."""

    def __init__(self, code: GraspError, detail: str = "") -> None:
        super().__init__(f"{code.name}" + (f": {detail}" if detail else ""))
        self.code = code
        self.detail = detail
        self.outputs: list[Any] = []
