"""Whether the IDevID loads, checked in a short-lived process when the pledge starts.

An idle pledge waits for a join proxy and needs none of the BRSKI work until one is heard
(cryptography, ssl, CMS: about 14 MB of RSS it would keep for good, issue 19). It still says at
once when its IDevID, its key or the manufacturer's anchors cannot be used (state `no-idevid`,
what `acpctl diagnose` reads): `idevid_problem` runs this module's main(CERT, KEY, ANCHORS)
in a new Python, which loads them exactly as an attempt will (client.py's load_pledge_identity)
and answers with the same one-line reason, then exits. The pledge loads them itself at its
first attempt. A node without a dataclass code table yet (code_cache.py) has a copy of the
check fill it meanwhile, off the pledge's path.
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # src/, above acp_openwrt/
EXIT_UNUSABLE = 3  # (1 is what Python exits with on an uncaught exception: a crash, not a verdict)
CHECK_TIMEOUT = 60.0  # a slow router's Python importing cryptography: seconds, not minutes
NICE = 10  # the check is background work: acpd, charon and the node's neighbours go first
# The child finds this package where acpd found it (after everything else on its path), and
# lowers its priority before its imports (a Python start and cryptography: seconds of CPU on
# a small box, while a neighbour's BRSKI exchange may be waiting for the same CPU).
CHILD = ("import os, sys; os.nice(int(sys.argv[2])); sys.path.append(sys.argv[1]); "
         "from acp_openwrt.brski.pledge.idevid_check import main; sys.exit(main(sys.argv[3:]))")


async def idevid_problem(cert_path: str | os.PathLike[str], key_path: str | os.PathLike[str],
                         anchors_path: str | os.PathLike[str]) -> str | None:
    """Why the IDevID cannot be used (load_pledge_identity's ValueError or OSError text), or
    None when it loads."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, PACKAGE_ROOT, str(NICE), os.fspath(cert_path),
        os.fspath(key_path), os.fspath(anchors_path), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHECK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return f"IDevID check took longer than {CHECK_TIMEOUT:.0f} s"
    except asyncio.CancelledError:  # not needed any more (an attempt loaded the IDevID)
        if proc.returncode is None:
            proc.kill()
        raise
    if proc.returncode == 0:
        return None
    if proc.returncode == EXIT_UNUSABLE:
        return out.decode(errors="replace").strip()
    tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    return f"IDevID check failed (exit {proc.returncode}): {tail[0]}"


def main(argv: list[str]) -> int:
    from .client import load_pledge_identity
    try:
        load_pledge_identity(argv[0], argv[1], argv[2])
    except (ValueError, OSError) as exc:
        print(exc)
        return EXIT_UNUSABLE
    warm_code_cache()
    return 0


def warm_code_cache() -> bool:
    """On a node whose dataclass code table (code_cache.py) does not exist yet, fill it in a
    copy of this process left to run on its own (at this process's low priority) after the
    verdict, so that the node's first start with an LDevID, right after its enrolment, finds
    the code of the enrolled parts' dataclasses compiled (issue 19: about 0.5 s of that
    restart under TCG). Whether a copy was started."""
    from ... import code_cache
    if code_cache.cache_path().exists() or not hasattr(os, "fork"):
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        return False
    if pid == 0:  # the copy: the verdict's pipes are acpd's to close, not ours to hold open
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.setsid()
            code = code_cache.main()
        finally:
            os._exit(code)
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
