"""Why a channel attempt failed, in the operator's words, from charon's own log lines.

charon's answer to a failed initiation is only "establishing CHILD_SA 'acp' failed"; the cause
is in the log lines it emits while it tries (VICI `log` events, level <= 1, tagged with the
connection name). Each line is matched against the strongSwan 5.9 messages that name a cause
(texts as in its sources: credential_manager.c, pubkey_authenticator.c, ike_auth.c,
task_manager.c); everything else is ignored. Pure text in, `Reason` out; no I/O.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

NOT_ANSWERING = "peer not answering"


@dataclass(frozen=True)
class Reason:
    text: str          # what `acpctl channels` / `diagnose` show
    answered: bool     # the peer did answer (False: it never did, a fake or a dead neighbour)
    rank: int          # more specific causes replace vaguer ones seen in the same attempt


_QUOTED = r"['\"](?P<q>[^'\"]*)['\"]"
_RULES: tuple[tuple[re.Pattern[str], str, bool, int], ...] = tuple(
    (re.compile(pattern), text, answered, rank) for pattern, text, answered, rank in (
        (r"^(?:subject )?certificate invalid \(valid from (?P<v>.*)\)$",
         "peer certificate expired or not yet valid (valid from {v})", True, 30),
        (r"^issuer certificate invalid \(valid from (?P<v>.*)\)$",
         "peer's CA certificate expired or not yet valid (valid from {v})", True, 30),
        (r"^issuer is " + _QUOTED + "$",
         "peer certificate not from our CA (issued by {q})", True, 30),
        (r"^no issuer certificate found for " + _QUOTED + "$",
         "peer certificate not from our CA (no issuer known for {q})", True, 25),
        (r"^constraint check failed: peer not authenticated by CA " + _QUOTED + "$",
         "peer certificate not from our CA (required {q})", True, 25),
        (r"^constraint check failed: identity " + _QUOTED + " required$",
         "identity mismatch (required {q})", True, 25),
        (r"^certificate was revoked", "peer certificate revoked", True, 25),
        (r"^received IDr (?P<a>.*), but require (?P<b>.*)$",
         "identity mismatch (got {a}, required {b})", True, 25),
        (r"^no trusted \S+ public key found for " + _QUOTED + "$",
         "peer certificate not trusted for identity {q} (not from our CA, expired, or not "
         "matching the identity)", True, 20),
        (r"^received AUTHENTICATION_FAILED notify error$",
         "the peer refused our certificate or identity (AUTHENTICATION_FAILED)", True, 15),
        (r"^received NO_PROPOSAL_CHOSEN notify error$",
         "no proposal chosen (the peer has no connection for us yet, or other algorithms)",
         True, 10),
        (r"^no (?:acceptable|matching) proposal found", "no proposal chosen (our side)",
         True, 10),
        (r"^received (?P<n>[A-Z_]+) notify error$", "the peer refused: {n}", True, 5),
        (r"^giving up after \d+ retransmits$", NOT_ANSWERING, False, 1),
        (r"^peer not responding", NOT_ANSWERING, False, 1),
    ))
_KNOCK = re.compile(r"^no IKE config found for (?P<me>\S+?)\.\.\.(?P<peer>\S+?), sending")


def reason_from_log(message: str) -> Reason | None:
    """The cause a charon log line names, None for lines that name none."""
    line = message.strip()
    for pattern, text, answered, rank in _RULES:
        found = pattern.search(line)
        if found:
            return Reason(text.format(**found.groupdict()), answered, rank)
    return None


def knock(message: str) -> tuple[str, str] | None:
    """(our address, peer address) of a peer that sent IKE_SA_INIT while we had no connection
    loaded for it: it is alive and worth a prompt attempt of ours."""
    found = _KNOCK.search(message.strip())
    if found is None:
        return None
    return _strip(found["me"]), _strip(found["peer"])


def _strip(host: str) -> str:
    """strongSwan prints a host as `addr[port]` in some places."""
    return host.split("[", 1)[0]


def better(current: Reason | None, new: Reason | None) -> Reason | None:
    """Keep the most specific cause seen during one attempt."""
    if new is None:
        return current
    if current is None or new.rank > current.rank:
        return new
    return current
