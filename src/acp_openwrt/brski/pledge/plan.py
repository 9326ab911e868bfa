"""When to renew the LDevID (RFC 8994 §6.2.5): the pure decision, apart from the re-enrolment
itself (renewal.py: EST over TLS, a new key and CSR), which the BRSKI part imports only when a
renewal is due (acpd's memory budget, issue 19)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

    from ...identity.cert_reader import Certificate

RENEW_FRACTION = 0.4
MIN_RETRY = dt.timedelta(seconds=30)


class RenewalError(Exception):
    """A re-enrolment failed; the message is the logged reason. The old identity stays."""


@dataclass(frozen=True)
class RenewalPlan:
    at: dt.datetime
    due: bool
    reason: str


def renewal_time(cert: x509.Certificate | Certificate, now: dt.datetime, *,
                 fraction: float = RENEW_FRACTION, failures: int = 0) -> RenewalPlan:
    """When to (next) try renewing `cert`, given how many tries already failed."""
    from ...identity.cert_reader import validity
    start, end = validity(cert)
    lifetime = end - start
    planned = start + lifetime * fraction
    if failures == 0:
        if now >= end:
            return RenewalPlan(now, True, "certificate expired: re-enrol (RFC 8994 §6.2.5.5)")
        if now < planned:
            return RenewalPlan(planned, False, f"{fraction:.0%} of the lifetime not yet passed")
        return RenewalPlan(now, True, f"{fraction:.0%} of the lifetime passed")
    backoff = max(MIN_RETRY, min(lifetime / 20, MIN_RETRY * (2 ** min(failures - 1, 16))))
    retry = max(now, planned) + backoff
    if now < end:
        retry = min(retry, end)
    return RenewalPlan(retry, retry <= now, f"retry {failures} after a failed renewal")
