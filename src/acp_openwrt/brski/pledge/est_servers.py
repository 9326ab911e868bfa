"""The EST servers an enrolled node may renew at, and in which order (sans-I/O).

With more than one registrar in the ACP (RFC 8994 §6.11.7, §9.2.3) every one announces itself
(AN_join_registrar, SRV.est) and any of them renews a node's LDevID keeping its address. The
book remembers each EST server heard (at most MAX_SERVERS, the longest unheard dropped) and
orders them for a renewal: servers that did not fail since they were last heard first (the
one that last worked, then the registrar that issued our certificate (`prefer`: RFC 8994
§6.2.5.1 has a node keep talking to its registrar), then the most recently heard), then those
that failed (the longest failed first). So a renewal goes on at the registrar that still
answers, and a dead one is tried last until it is heard again. Time is passed in, never read here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_SERVERS = 8


@dataclass(frozen=True, order=True)
class EstServer:
    """An EST server's ACP address and TCP port."""
    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}"


@dataclass
class _Entry:
    heard: float
    failed: float | None = None
    worked: float | None = None
    error: str | None = None


class EstServerBook:
    """EST servers heard, with what each did last."""

    def __init__(self) -> None:
        self._servers: dict[EstServer, _Entry] = {}
        self._preferred: str | None = None

    def prefer(self, address: str | None) -> None:
        """The ACP address of the registrar that issued our certificate (its CRL distribution
        point names it), tried before others that have not worked yet."""
        self._preferred = address

    def heard(self, server: EstServer, now: float) -> None:
        """Announced (a flood, a discovery answer): a failure before this is forgotten."""
        entry = self._servers.get(server)
        if entry is None:
            if len(self._servers) >= MAX_SERVERS:
                oldest = min(self._servers, key=lambda s: self._servers[s].heard)
                del self._servers[oldest]
            self._servers[server] = _Entry(now)
            return
        entry.heard = now
        if entry.failed is not None and entry.failed < now:
            entry.failed = None

    def failed(self, server: EstServer, now: float, error: str) -> None:
        entry = self._servers.setdefault(server, _Entry(now))
        entry.failed, entry.error = now, error

    def worked(self, server: EstServer, now: float) -> None:
        entry = self._servers.setdefault(server, _Entry(now))
        entry.worked, entry.failed, entry.error = now, None, None

    def candidates(self) -> list[EstServer]:
        """Every server, in the order to try them now."""
        def rank(server: EstServer) -> tuple[bool, float, float, bool, float, EstServer]:
            entry = self._servers[server]
            if entry.failed is not None:
                return (True, entry.failed, 0.0, False, 0.0, server)
            return (False, 0.0, -(entry.worked or float("-inf")),
                    server.address != self._preferred, -entry.heard, server)
        return sorted(self._servers, key=rank)

    def __len__(self) -> int:
        return len(self._servers)

    def status(self, now: float) -> list[dict[str, Any]]:
        out = []
        for server in self.candidates():
            entry = self._servers[server]
            out.append({"address": server.address, "port": server.port,
                        "heard_ago": round(now - entry.heard, 1),
                        "worked_ago": None if entry.worked is None
                        else round(now - entry.worked, 1),
                        "failed_ago": None if entry.failed is None
                        else round(now - entry.failed, 1),
                        "last_error": entry.error})
        return out
