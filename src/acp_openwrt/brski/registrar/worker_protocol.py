"""The link between acpd and its registrar worker (one module, both sides use it).

Transport: the join proxy's (proxy/handover.py): an AF_UNIX SOCK_SEQPACKET socketpair made by
acpd, one end inherited by the worker, one JSON object per datagram, descriptors as SCM_RIGHTS
of the one message that carries them. Only the messages differ, so they are plain dicts with an
"op" field, checked here on receipt (the worker is acpd's own child, not a hostile peer, but
a bug must be a logged line, not a stuck registrar).

acpd -> worker  connection{}+1 fd (an accepted TCP connection that has sent data; the worker
                owns it from then on), request{seq,what,args} (what: revoke, revoked, crl,
                renew), refuse_new{reason} (RFC 8994 §6.11.7.2 conflict, or null),
                exit{} (the answer to `idle`: nothing more comes on this link)
worker -> acpd  hello{pid,state}, state{state} (after every session and every request),
                reply{seq,result|error}, idle{} (no session for IDLE_EXIT s: may it go?)

Idle exit without losing a connection: the worker sends `idle` and keeps serving; acpd sends
no more connections to it (the next one starts a new worker) and answers `exit`; whatever
acpd handed over before that `exit` arrives before it (SEQPACKET keeps order), so the worker
serves those, then ends once its sessions have.
"""
from __future__ import annotations

import _socket
from pathlib import Path
from typing import Any

from ..proxy import handover as ho

TO_WORKER = {"connection": 1, "request": 0, "refuse_new": 0, "exit": 0}
TO_ACPD = {"hello": 0, "state": 0, "reply": 0, "idle": 0}
REQUESTS = ("revoke", "revoked", "crl", "renew")


class LinkError(ValueError):
    """A message that breaks the protocol (one line)."""


def send(sock: _socket.socket, msg: dict[str, Any], fds: tuple[int, ...] = ()) -> None:
    data = ho.json_dumps(msg).encode()
    if len(data) > ho.MAX_MESSAGE:
        raise LinkError(f"{msg.get('op')} message of {len(data)} bytes exceeds {ho.MAX_MESSAGE}")
    ho.send_datagram(sock, data, fds)


def _receiver(table: dict[str, int]) -> Any:
    def receive(sock: _socket.socket) -> tuple[dict[str, Any], list[int]] | None:
        received = ho.recv_datagram(sock)
        if received is None:
            return None
        data, fds, flags = received
        try:
            if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC):
                raise LinkError("message or its descriptors were truncated")
            try:
                msg = ho.json_loads(data.decode())
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise LinkError("message is not JSON") from None
            if not isinstance(msg, dict) or msg.get("op") not in table:
                raise LinkError(f"unexpected message {str(msg)[:80]!r}")
            if len(fds) != table[msg["op"]]:
                raise LinkError(f"{msg['op']} came with {len(fds)} descriptors")
        except LinkError:
            ho.close_all(fds)
            raise
        return msg, fds
    return receive


receive_in_worker = _receiver(TO_WORKER)
receive_in_acpd = _receiver(TO_ACPD)


CRL_FILE_NAME = "acp-crl.der"
# s without a session or request before a worker offers to leave: longer than the pauses
# within one pledge's enrolment (voucher, then EST, then its status reports), short enough
# that acpd is back to its enrolled-node size soon after the last pledge.
IDLE_EXIT = 30.0
# The AcpConfig options the worker needs; acpd passes them as JSON on its command line.
SETTINGS = ("registrar_domain", "registrar_dir", "registrar_ca_cert", "registrar_ca_key",
            "registrar_id", "registrar_masa_url", "ldevid_cert", "ldevid_key", "trust_anchors",
            "manufacturer_trust_anchor", "log_level")


def crl_path(registrar_dir: Path) -> Path:
    """Where the worker writes the signed CRL (DER) and acpd reads what it serves."""
    return registrar_dir / CRL_FILE_NAME


def settings_of(config: Any, address: str | None = None, masa_namespace: str | None = None,
                idle_exit: float = IDLE_EXIT) -> str:
    """The worker's settings (JSON, one argv word): the options above, the ACP address."""
    options = {name: getattr(config, name, None) for name in SETTINGS}
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
    return ho.json_dumps({"config": options, "address": address, "masa_namespace": masa_namespace,
                      "idle_exit": idle_exit})
