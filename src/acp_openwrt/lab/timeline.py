"""A node's formation milestones, read from its stamped acpd log (ACPD_LOG_TIME=1).

The formation bench asks where the time of a zero-touch ACP goes (issue 19): per node, when
its pledge heard a join proxy, began the BRSKI exchange that worked, stored its LDevID, saw
its first secure channel and took its first RPL parent. acpd logs each of these at INFO with a
wall-clock stamp to the millisecond, so the bench reads them afterwards instead of polling
every node's control socket during the run (which would itself cost the guest's CPU).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass

# "07:41:02.123 acpd: INFO acp_openwrt.x: message"
_STAMPED = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) acpd: \w+ [\w.]+: (.*)$")

# milestone -> the start of the message that marks it (its first occurrence counts, except
# enrol_start: the last one before `enrolled`, the attempt that worked)
_MARKS = {
    "proxy_heard": "pledge: join proxy ",
    "enrol_start": "pledge: enrolling via ",
    "enrolled": "pledge: enrolled via ",
    "first_channel": "channel ",            # "channel <name> up to <peer> ..."
    "rpl_joined": "RPL: preferred parent ",
    "rpl_root": "RPL started: root ",
}


@dataclass(frozen=True)
class Milestones:
    """Wall-clock times (seconds since the epoch) of one node's milestones; None: not seen."""
    proxy_heard: float | None = None
    enrol_start: float | None = None
    enrolled: float | None = None
    first_channel: float | None = None
    rpl_joined: float | None = None

    @property
    def brski_s(self) -> float | None:
        """The pledge's own BRSKI exchange: the attempt that worked, connect to LDevID stored."""
        if self.enrol_start is None or self.enrolled is None:
            return None
        return self.enrolled - self.enrol_start

    def relative(self, t0: float) -> dict[str, float | None]:
        """Each milestone in seconds after `t0` (rounded to ms), plus brski_s."""
        out: dict[str, float | None] = {
            k: None if v is None else round(v - t0, 3) for k, v in asdict(self).items()}
        brski = self.brski_s
        out["brski_s"] = None if brski is None else round(brski, 3)
        return out


def milestones(lines: Iterable[str], day: dt.date, tz: dt.tzinfo | None = None) -> Milestones:
    """The milestones found in one acpd log's lines, stamped on `day` (local time unless `tz`).
    A stamp earlier than the one before it is taken as past midnight."""
    seen: dict[str, float] = {}
    base = dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp()
    last = None
    for line in lines:
        m = _STAMPED.match(line)
        if m is None:
            continue
        h, mi, s, ms, text = m.groups()
        t = base + int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000
        if last is not None and t < last - 3600:
            base += 86400
            t += 86400
        last = t
        for name, prefix in _MARKS.items():
            if not text.startswith(prefix):
                continue
            if name == "first_channel" and " up to " not in text:
                continue
            if name == "enrol_start" and "enrolled" not in seen:
                seen[name] = t  # the last attempt before the LDevID was stored
            elif name not in seen:
                seen[name] = t
    if "rpl_root" in seen and "rpl_joined" not in seen:
        seen["rpl_joined"] = seen["rpl_root"]  # the root is in its DODAG from the start
    seen.pop("rpl_root", None)
    return Milestones(**seen)


def hop_figures(order: list[str], marks: dict[str, Milestones],
                answered: dict[str, float]) -> list[dict[str, float | str | None]]:
    """Per hop of a line whose first node is the registrar: from the upstream node's first
    channel up (for the registrar's neighbour: from its own acpd answering) to the pledge's
    LDevID stored, beside that pledge's own BRSKI exchange time, and their ratio."""
    hops: list[dict[str, float | str | None]] = []
    for up, down in zip(order, order[1:], strict=False):
        start = answered[down] if up == order[0] else marks[up].first_channel
        enrolled, brski = marks[down].enrolled, marks[down].brski_s
        if start is not None and up != order[0]:
            start = max(start, answered[down])  # the pledge must be running to enrol
        hop = None if start is None or enrolled is None else round(enrolled - start, 3)
        ratio = None if hop is None or not brski else round(hop / brski, 2)
        hops.append({"upstream": up, "pledge": down, "hop_s": hop,
                     "brski_s": None if brski is None else round(brski, 3), "ratio": ratio})
    return hops
