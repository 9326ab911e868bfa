"""The IKE-daemon boundary: what the channel service needs from strongSwan (or, later, pluto).

Small on purpose: credentials, one connection per peer, initiate/terminate, a listing of SAs,
the certificates of an authenticated peer, and a stream of SA up/down events. Implementations
are blocking (VICI is); the service calls them from an executor thread, and events arrive on
the implementation's own thread through the `on_event` callback given to `listen`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class DriverError(RuntimeError):
    """The IKE daemon refused a request or cannot be reached (one line)."""


@dataclass(frozen=True)
class ChildSa:
    unique_id: str
    state: str
    bytes_in: int = 0
    bytes_out: int = 0
    packets_in: int = 0
    packets_out: int = 0
    install_time: int = 0     # seconds since installed


@dataclass(frozen=True)
class IkeSa:
    """One IKE SA as the daemon reports it (list-sas or an up/down event)."""

    conn: str
    unique_id: str
    state: str
    initiator: bool
    local_host: str
    remote_host: str
    remote_id: str
    established: int = 0      # seconds since established
    children: tuple[ChildSa, ...] = ()


@dataclass(frozen=True)
class SaEvent:
    """ike-updown / child-updown / ike-rekey / child-rekey, reduced to what the service needs."""

    kind: str                 # "ike" | "child" | "ike-rekey" | "child-rekey"
    up: bool
    sa: IkeSa
    child: ChildSa | None = None
    old_id: str | None = None  # rekeys: the replaced IKE or CHILD SA id


@dataclass(frozen=True)
class LogLine:
    """One line charon logged (level <= 1), with the connection it concerns ("" if none):
    the only place charon says *why* an attempt failed."""

    conn: str
    text: str
    ike_id: str = ""


@dataclass(frozen=True)
class Credentials:
    """PEM texts handed to the daemon: our certificate and key, intermediates, trust anchors."""

    cert_pem: bytes
    key_pem: bytes
    chain_pems: tuple[bytes, ...] = ()
    anchor_pems: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class ConnInfo:
    """A connection the daemon holds (for reconciling after an acpd restart)."""

    name: str
    local_addrs: tuple[str, ...] = ()
    remote_addrs: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class IkeDriver(Protocol):
    def connect(self) -> None: ...
    def close(self) -> None: ...
    def load_credentials(self, creds: Credentials) -> None: ...
    def load_connection(self, name: str, conn: dict[str, Any]) -> None: ...
    def unload_connection(self, name: str) -> None: ...
    def initiate(self, conn: str, child: str, timeout: float = 60.0) -> None: ...
    def terminate_ike(self, unique_id: str) -> None: ...
    def terminate_conn(self, conn: str) -> None: ...
    def list_sas(self) -> list[IkeSa]: ...
    def list_connections(self) -> list[ConnInfo]: ...
    def peer_certificates(self, remote_id: str) -> tuple[list[bytes], list[bytes]]: ...
    def listen(self, on_event: Callable[[SaEvent | LogLine], None],
               on_lost: Callable[[str], None]) -> None: ...
