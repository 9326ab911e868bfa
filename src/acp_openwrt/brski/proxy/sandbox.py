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

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
NETNS_RUN_DIR = "/run/netns"




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


class _Libc:
    """libc calls of unsigned-long arguments returning int (prctl; setns before Python 3.12):
    Python has no prctl. Built on the _ctypes C module alone: the ctypes package on top of it
    costs the confined process another 0.5 MB that it never gives back. Loaded before the uid
    changes (the new user may not be able to read the library), kept for the process's life."""

    _loaded: _Libc | None = None

    def __init__(self) -> None:
        import _ctypes

        class c_int(_ctypes._SimpleCData):
            _type_ = "i"

        class c_ulong(_ctypes._SimpleCData):
            _type_ = "L"

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = c_int

        self._handle = _ctypes.dlopen(None)  # type: ignore[arg-type]  # the process: libc
        self._function = Function
        self._ulong = c_ulong
        self._get_errno = _ctypes.get_errno

    @classmethod
    def get(cls) -> _Libc:
        if cls._loaded is None:
            cls._loaded = cls()
        return cls._loaded

    def call(self, name: str, *args: int) -> None:
        """Call name(*args); SandboxError with errno's text when it returns non-zero."""
        function = self._function((name, self))  # type: ignore[arg-type]  # has _handle
        function.argtypes = (self._ulong,) * len(args)
        if function(*args) != 0:
            raise SandboxError(f"{name}{args}: {os.strerror(self._get_errno())}")


def _prctl(option: int, value: int) -> None:
    _Libc.get().call("prctl", option, value, 0, 0, 0)


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
            _Libc.get().call("setns", fd, CLONE_NEWNET)
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
    ids = resolve_user(user, group) if user is not None else None
    if netns is not None or (ids is not None and os.geteuid() == 0):
        _Libc.get()  # loaded while the library is still readable: the new user may not see it
    if netns is not None:
        enter_namespace(netns)
    if ids is not None and os.geteuid() == 0:
        drop_privileges(*ids)
    elif ids is not None and os.geteuid() != ids[0]:
        raise SandboxError(f"running as uid {os.geteuid()}, cannot become {user!r}")
    if os.geteuid() == 0 or 0 in os.getresuid():
        raise SandboxError("refusing to run the join proxy as root (give --user)")

