"""IkeDriver over strongSwan's VICI (the PyPI `vici` package, which is blocking).

Two sessions: one for commands (callers serialize it, e.g. a one-thread executor) and one owned
by a listener thread for the event stream, since a vici.Session is not safe across threads.
"""
from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import vici
from vici.exception import CommandException, SessionException

from .driver import ChildSa, ConnInfo, Credentials, DriverError, IkeSa, LogLine, SaEvent

LOG = logging.getLogger("acpd.channels.vici")
EVENTS = ["ike-updown", "child-updown", "ike-rekey", "child-rekey", "log"]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def _int(value: Any) -> int:
    try:
        return int(_text(value) or 0)
    except ValueError:
        return 0


def _child(data: Mapping[str, Any]) -> ChildSa:
    return ChildSa(unique_id=_text(data.get("uniqueid")), state=_text(data.get("state")),
                   bytes_in=_int(data.get("bytes-in")), bytes_out=_int(data.get("bytes-out")),
                   packets_in=_int(data.get("packets-in")),
                   packets_out=_int(data.get("packets-out")),
                   install_time=_int(data.get("install-time")))


def parse_ike(conn: str, data: Mapping[str, Any]) -> IkeSa:
    """One list-sa entry (or the SA part of an event) as an IkeSa."""
    children = tuple(_child(c) for c in (data.get("child-sas") or {}).values()
                     if isinstance(c, Mapping) and "uniqueid" in c)
    return IkeSa(conn=conn, unique_id=_text(data.get("uniqueid")), state=_text(data.get("state")),
                 initiator=_text(data.get("initiator")) == "yes",
                 local_host=_text(data.get("local-host")),
                 remote_host=_text(data.get("remote-host")),
                 remote_id=_text(data.get("remote-id")),
                 established=_int(data.get("established")), children=children)


def parse_event(name: str, msg: Mapping[str, Any]) -> list[SaEvent | LogLine]:
    """A VICI event message as SaEvents (a rekey of several CHILD SAs gives several), or a
    `log` event as one LogLine."""
    if name == "log":
        return [LogLine(_text(msg.get("ikesa-name")), _text(msg.get("msg")),
                        _text(msg.get("ikesa-uniqueid")))]
    out: list[SaEvent | LogLine] = []
    up = _text(msg.get("up")) == "yes"
    for conn, data in msg.items():
        if not isinstance(data, Mapping):
            continue
        if name == "ike-updown":
            out.append(SaEvent("ike", up, parse_ike(conn, data)))
        elif name == "child-updown":
            sa = parse_ike(conn, data)
            out.extend(SaEvent("child", up, sa, child) for child in sa.children)
        elif name == "ike-rekey":
            old, new = data.get("old") or {}, data.get("new") or {}
            out.append(SaEvent("ike-rekey", True, parse_ike(conn, new),
                               old_id=_text(old.get("uniqueid"))))
        elif name == "child-rekey":
            sa = parse_ike(conn, data)
            for pair in (data.get("child-sas") or {}).values():
                if isinstance(pair, Mapping) and "new" in pair:
                    out.append(SaEvent("child-rekey", True, sa, _child(pair["new"]),
                                       old_id=_text((pair.get("old") or {}).get("uniqueid"))))
    return out


class ViciDriver:
    """strongSwan charon behind a VICI Unix socket."""

    def __init__(self, socket_path: Path, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: vici.Session | None = None
        self._listener: threading.Thread | None = None
        self._listen_sock: socket.socket | None = None
        self._closing = False

    def _open(self) -> tuple[vici.Session, socket.socket]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.socket_path))
        except OSError as exc:
            sock.close()
            raise DriverError(f"VICI socket {self.socket_path}: {exc.strerror or exc}") from None
        return vici.Session(sock), sock

    def connect(self) -> None:
        self.close()
        self._closing = False
        self._session = self._open()[0]

    @property
    def session(self) -> vici.Session:
        if self._session is None:
            raise DriverError("not connected to charon")
        return self._session

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except CommandException as exc:
            raise DriverError(f"{what}: {str(exc).removeprefix('Command failed: ')}") from None
        except (SessionException, OSError) as exc:
            raise DriverError(f"{what}: VICI session lost ({exc})") from None

    def close(self) -> None:
        self._closing = True
        for sock in (self._listen_sock,):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._listener is not None:
            self._listener.join(timeout=2.0)
            self._listener = None
        if self._session is not None:
            try:
                self._session.transport.close()
            except OSError:
                pass
            self._session = None

    def load_credentials(self, creds: Credentials) -> None:
        s = self.session
        key_type = "ecdsa" if b"EC PRIVATE KEY" in creds.key_pem else "any"
        self._call("load-key", lambda: s.load_key({"type": key_type, "data": creds.key_pem}))
        self._call("load-cert", lambda: s.load_cert(
            {"type": "X509", "flag": "NONE", "data": creds.cert_pem}))
        for pem in creds.chain_pems:
            self._call("load-cert (intermediate)",
                       partial(s.load_cert, {"type": "X509", "flag": "NONE", "data": pem}))
        for pem in creds.anchor_pems:
            self._call("load-cert (trust anchor)",
                       partial(s.load_cert, {"type": "X509", "flag": "CA", "data": pem}))

    def load_connection(self, name: str, conn: dict[str, Any]) -> None:
        self._call(f"load-conn {name}", lambda: self.session.load_conn({name: conn}))

    def unload_connection(self, name: str) -> None:
        self._call(f"unload-conn {name}", lambda: self.session.unload_conn({"name": name}))

    def initiate(self, conn: str, child: str, timeout: float = 60.0) -> None:
        """Initiate and wait for the outcome: returns once the CHILD SA is up, DriverError when
        the attempt failed. Uses a session of its own, so it can run on any thread while the
        command session serves others."""
        session, sock = self._open()
        sock.settimeout(None)

        def run() -> None:
            for _ in session.initiate({"ike": conn, "child": child,
                                       "timeout": int(timeout * 1000), "init-limits": "no"}):
                pass
        try:
            self._call(f"initiate {conn}", run)
        finally:
            try:
                session.transport.close()
            except OSError:
                pass

    def terminate_ike(self, unique_id: str) -> None:
        def run() -> None:
            # strongSwan 5.x reads "ike-id", 6.x documents "ike_id": send both.
            for _ in self.session.terminate({"ike-id": unique_id, "ike_id": unique_id,
                                             "timeout": -1}):
                pass
        self._call(f"terminate IKE SA {unique_id}", run)

    def terminate_conn(self, conn: str) -> None:
        """Every IKE SA of one connection, at once (half-open ones included: charon would
        otherwise keep retransmitting to a peer that never answered)."""
        def run() -> None:
            for _ in self.session.terminate({"ike": conn, "timeout": -1, "force": "yes"}):
                pass
        self._call(f"terminate {conn}", run)

    def list_sas(self) -> list[IkeSa]:
        def run() -> list[IkeSa]:
            return [parse_ike(conn, data) for entry in self.session.list_sas()
                    for conn, data in entry.items() if isinstance(data, Mapping)]
        return self._call("list-sas", run)

    def list_connections(self) -> list[ConnInfo]:
        def run() -> list[ConnInfo]:
            out = []
            for entry in self.session.list_conns():
                for name, data in entry.items():
                    out.append(ConnInfo(name, tuple(_text(a) for a in data.get("local_addrs", [])),
                                        tuple(_text(a) for a in data.get("remote_addrs", []))))
            return out
        return self._call("list-conns", run)

    def peer_certificates(self, remote_id: str) -> tuple[list[bytes], list[bytes]]:
        """(certificates whose subject or SAN is remote_id, every other certificate charon has).

        charon keeps the certificates of peers it verified in its cache, and list-certs
        enumerates the cache too; the second list lets the membership check find intermediates.
        """
        def certs(**filters: str) -> list[bytes]:
            return [bytes(c["data"]) for c in self.session.list_certs(filters) if "data" in c]
        leaves = self._call("list-certs", lambda: certs(type="X509", subject=remote_id))
        others = self._call("list-certs", lambda: certs(type="X509"))
        return leaves, [c for c in others if c not in leaves]

    def listen(self, on_event: Callable[[SaEvent | LogLine], None],
               on_lost: Callable[[str], None]) -> None:
        """Start the event thread; on_lost(reason) once if the stream ends unexpectedly."""
        session, sock = self._open()
        sock.settimeout(None)
        self._listen_sock = sock

        def run() -> None:
            reason = "event stream closed"
            try:
                for name, msg in session.listen(EVENTS):
                    if name is None:
                        continue
                    for event in parse_event(_text(name), msg):
                        on_event(event)
            except Exception as exc:  # socket closed under us, or charon died
                reason = f"event stream lost: {exc}"
            if not self._closing:
                on_lost(reason)

        self._listener = threading.Thread(target=run, name="vici-events", daemon=True)
        self._listener.start()


def pem_blocks(data: bytes) -> Iterable[bytes]:
    """Each PEM certificate block of a bundle."""
    marker = b"-----END CERTIFICATE-----"
    for part in data.split(marker)[:-1]:
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            yield part[start:] + marker + b"\n"
