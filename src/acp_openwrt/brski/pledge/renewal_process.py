"""An LDevID renewal in a short-lived process, so the enrolled acpd stays without its imports.

A renewal (renewal.py: EST over TLS, a fresh key and CSR, CMS) imports ssl with OpenSSL and
cryptography: over 10 MB of RSS that an acpd keeps for good once they are in, while it renews
once every few months (issue 19: an enrolled node's steady state holds none of them).
`reenroll` here has renewal.reenroll's signature and outcome but runs `main` in a new Python,
which renews at the EST server given (in the namespace given) and stores the new identity,
then exits; acpd's BRSKI part then publishes IdentityChanged as before. The pattern is the
pledge's IDevID check (idevid_check.py).
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from ..store import StoredIdentity
from .locator import Locator
from .plan import RenewalError

PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # src/, above acp_openwrt/
EXIT_REFUSED = 3  # (1 is what Python exits with on an uncaught exception: a crash)
IO_TIMEOUT = 10.0  # client.py's, per exchange
# A slow router's Python importing ssl and cryptography, then TLS, a new key and the CSR.
RENEWAL_TIMEOUT = 180.0
NICE = 10  # background work, as the IDevID check: acpd, charon and the neighbours go first
# The child finds this package where acpd found it and lowers its priority before its imports.
CHILD = ("import os, sys; os.nice(int(sys.argv[2])); sys.path.append(sys.argv[1]); "
         "from acp_openwrt.brski.pledge.renewal_process import main; sys.exit(main(sys.argv[3:]))")


async def reenroll(locator: Locator, stored: StoredIdentity, *, namespace: str | None = None,
                   io_timeout: float = IO_TIMEOUT, within: float = RENEWAL_TIMEOUT) -> None:
    """Renew the stored LDevID at the EST server `locator`, in a new process; RenewalError
    with the renewal's own one-line reason when it did not."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, PACKAGE_ROOT, str(NICE), locator.address, str(locator.port),
        locator.ifname or "", namespace or "", os.fspath(stored.cert_path),
        os.fspath(stored.key_path), os.fspath(stored.trust_anchors_path), str(io_timeout),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), within)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise RenewalError(f"renewal took longer than {within:.0f} s") from None
    except asyncio.CancelledError:  # acpd stopping: no renewal goes on without it (a switch
        if proc.returncode is None:  # cut short is finished or undone at the next start)
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode == 0:
        return
    if proc.returncode == EXIT_REFUSED:
        raise RenewalError(out.decode(errors="replace").strip() or "renewal failed")
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    raise RenewalError(f"renewal process failed (exit {proc.returncode}): {tail[0]}")


def main(argv: list[str]) -> int:
    """ADDRESS PORT IFNAME NAMESPACE CERT KEY ANCHORS IO_TIMEOUT: renew and store, or print
    why not and exit 1."""
    address, port, ifname, namespace, cert, key, anchors, io_timeout = argv
    from .renewal import reenroll as renew_here
    locator = Locator(address, int(port), ifname or None)
    stored = StoredIdentity(Path(cert), Path(key), Path(anchors))
    try:
        asyncio.run(renew_here(locator, stored, namespace=namespace or None,
                               io_timeout=float(io_timeout)))
    except (RenewalError, OSError, ValueError) as exc:
        print(str(exc).replace("\n", " "))
        return EXIT_REFUSED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
