"""How the join-proxy process gets into the ACP namespace and gives up root, before any input.

acpd starts the proxy as root (setns needs CAP_SYS_ADMIN); the proxy's first act, while it is
still a single thread and has read nothing from the network, is: enter the namespace, drop all
groups, set real/effective/saved gid and uid, forbid regaining privileges (no_new_privs), and
prove that setuid(0) now fails. Popen's own user=/group= cannot be used: it changes uid before
preexec_fn runs, and a preexec setns in a threaded acpd is not fork-safe.
"""
from __future__ import annotations

import _signal
import grp
import os
import pwd
import sys

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
NETNS_RUN_DIR = "/run/netns"

TYPE_CHECKING = False  # typing itself is no lightweight import
if TYPE_CHECKING:
    from typing import Any


class SandboxError(RuntimeError):
    """The proxy cannot be confined as asked: it must not run at all."""


def resolve_user(user: str, group: str | None = None) -> tuple[int, int]:
    """uid and gid for a user name (or number); the group defaults to the user's primary group."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SandboxError(f"no such user {user!r}") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, ValueError):
            raise SandboxError(f"no such group {group!r}") from None
    if entry.pw_uid == 0 or gid == 0:
        raise SandboxError(f"user {user!r} / group {gid} is root: "
                           "the join proxy must not run as root")
    return entry.pw_uid, gid


def _libc() -> Any:
    """ctypes, loaded only for these few calls (Python has no prctl) and unloaded after them:
    the confined process has no use for it (about 0.7 MB)."""
    import ctypes
    return ctypes, ctypes.CDLL(None, use_errno=True)


def forget_ctypes() -> None:
    """Drop the ctypes modules confine() loaded (their memory goes back with the next gc)."""
    for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.")]:
        del sys.modules[name]


def _prctl(option: int, value: int) -> None:
    ctypes, libc = _libc()
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise SandboxError(f"prctl({option}): {os.strerror(ctypes.get_errno())}")


def enter_namespace(name: str) -> None:
    """Move this (single-threaded) process into a named network namespace for good."""
    path = name if name.startswith("/") else os.path.join(NETNS_RUN_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SandboxError(f"namespace {name}: {exc.strerror}") from None
    try:
        setns = getattr(os, "setns", None)
        if setns is not None:
            setns(fd, CLONE_NEWNET)
        else:
            ctypes, libc = _libc()
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise SandboxError(f"setns {name}: {os.strerror(ctypes.get_errno())}")
    except OSError as exc:
        raise SandboxError(f"setns {name}: {exc.strerror}") from None
    finally:
        os.close(fd)


def drop_privileges(uid: int, gid: int) -> None:
    """Become uid/gid for good, with no supplementary groups; raise if root could come back."""
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise SandboxError(f"cannot become uid {uid} gid {gid}: {exc.strerror}") from None
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    # A uid change clears the parent-death signal; set it now so an acpd crash ends us too.
    _prctl(PR_SET_PDEATHSIG, _signal.SIGTERM)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid) or os.getgroups():
        raise SandboxError("credentials did not change as asked")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SandboxError("setuid(0) still works after dropping privileges")


def confine(netns: str | None, user: str | None, group: str | None = None) -> None:
    """The proxy's first step: namespace, then (if running as root) an unprivileged user.

    Running as root without a user to become is refused: the proxy faces untrusted pledges.
    """
    had_ctypes = "ctypes" in sys.modules
    ids = resolve_user(user, group) if user is not None else None
    if netns is not None or (ids is not None and os.geteuid() == 0):
        _libc()  # imported while the library is still readable: the new user may not see it
    if netns is not None:
        enter_namespace(netns)
    if ids is not None and os.geteuid() == 0:
        drop_privileges(*ids)
    elif ids is not None and os.geteuid() != ids[0]:
        raise SandboxError(f"running as uid {os.geteuid()}, cannot become {user!r}")
    if os.geteuid() == 0 or 0 in os.getresuid():
        raise SandboxError("refusing to run the join proxy as root (give --user)")
    if not had_ctypes and "ctypes" in sys.modules:
        import gc
        forget_ctypes()
        gc.collect()
