"""Doing things inside a named network namespace: threads, sockets, processes, removal.

A network namespace is a per-thread attribute on Linux, and a socket stays in the namespace it
was created in. So the safe pattern (also the one acpd uses for its DULL and ACP sockets) is:
move one thread into the namespace, create the socket or netlink handle there, and move the
thread back, or let it end. `entered()` does the move and always restores; `call_in()` and
`namespace_executor()` run code on worker threads so the caller's thread never changes.

Named namespaces are the files under /run/netns that `ip netns` and pyroute2 use.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pyroute2_netns

NETNS_RUN_DIR = "/run/netns"
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 0x100000
T = TypeVar("T")


class NamespaceRestoreError(RuntimeError):
    """The thread could not go back to its namespace: it must not be used for anything else."""


def netns_path(name: str) -> str:
    """The bind-mount file of a named namespace (a path is returned unchanged)."""
    if name.startswith("/"):
        return name
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _libc_setns(fd: int, nstype: int) -> None:
    """os.setns arrived in Python 3.12; on 3.11 go through libc."""
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, nstype)
        return
    _check(_libc().setns(fd, nstype), "setns")


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Move the calling thread into namespace `name` for the block, and back afterwards.

    Sockets and pyroute2 handles made in the block stay in `name`. An IPRoute() made here
    without `netns=` must be used from this thread only (pyroute2 opens one socket per thread).
    Prefer `call_in()` or `namespace_executor()`, which never move the caller's thread.
    """
    target = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        # thread-self, not self: /proc/self/ns/net is the main thread's namespace.
        origin = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc_setns(target, CLONE_NEWNET)
            try:
                yield
            finally:
                try:
                    _libc_setns(origin, CLONE_NEWNET)
                except OSError as exc:
                    raise NamespaceRestoreError(
                        f"thread {threading.get_ident()} is stranded in namespace {name}: {exc}"
                    ) from exc
        finally:
            os.close(origin)
    finally:
        os.close(target)


def call_in(name: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Run fn(*args, **kwargs) on a fresh thread inside namespace `name`; return or raise its
    outcome."""
    outcome: dict[str, object] = {}

    def worker() -> None:
        try:
            with entered(name):
                outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns:{name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _enter_for_good(path: str) -> None:
    target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _libc_setns(target, CLONE_NEWNET)
    finally:
        os.close(target)


def namespace_executor(name: str, workers: int = 1) -> concurrent.futures.ThreadPoolExecutor:
    """An executor whose threads live in namespace `name` for their whole life.

    Suits an asyncio program: `await loop.run_in_executor(ex, socket.socket, ...)` creates the
    socket inside `name`, and the event loop's thread never changes namespace. If the namespace
    cannot be entered, every submitted call fails with BrokenThreadPool.
    """
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=workers,
        thread_name_prefix=f"netns:{name}",
        initializer=_enter_for_good,
        initargs=(netns_path(name),),
    )


def socket_in(name: str, family: int, type: int, proto: int = 0) -> socket.socket:
    """A socket created inside namespace `name` (usable from any thread afterwards)."""
    return call_in(name, socket.socket, family, type, proto)


def listener_in(name: str, address: str = "::", port: int = 0, backlog: int = 16,
                reuse: bool = False) -> socket.socket:
    """A non-blocking TCP listener on [address]:port made inside namespace `name` (port 0: any;
    `reuse`: SO_REUSEADDR, for a fixed port that must come back at once after a restart)."""
    sock = socket_in(name, socket.AF_INET6, socket.SOCK_STREAM)
    try:
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def wait_link_local(ipr: IPRoute, index: int, timeout: float = 5.0, poll: float = 0.02) -> str:
    """Poll netlink until link `index` has a non-tentative fe80:: address; return it.

    Raises TimeoutError when none appears in time, OSError when DAD failed.
    """
    deadline = time.monotonic() + timeout
    while True:
        for msg in ipr.get_addr(family=socket.AF_INET6, index=index):
            addr = str(msg.get_attr("IFA_ADDRESS"))
            flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
            if not addr.startswith("fe80:"):
                continue
            if flags & IFA_F_DADFAILED:
                raise OSError(errno.EADDRNOTAVAIL, f"DAD failed for {addr}")
            if not flags & IFA_F_TENTATIVE:
                return addr
        if time.monotonic() > deadline:
            raise TimeoutError(f"no usable link-local address in {timeout}s")
        time.sleep(poll)


def netns_argv(name: str, argv: Iterable[str]) -> list[str]:
    """argv prefixed so it runs inside `name` (`ip netns exec` also remounts /sys for it)."""
    return ["ip", "netns", "exec", name, *argv]


def nsenter_argv(name: str, argv: Iterable[str]) -> list[str]:
    """argv prefixed so it runs inside `name` but in the caller's mount namespace.

    Needed for a program that itself creates named namespaces (acpd): under `ip netns exec`
    it would run in a private mount namespace, and its /run/netns bind mounts would not be
    seen by anyone else.
    """
    return ["nsenter", f"--net={netns_path(name)}", *argv]


def list_namespaces() -> list[str]:
    """Names of the namespaces under /run/netns."""
    return sorted(pyroute2_netns.listnetns())


def _share_run_dir() -> None:
    """As `ip netns add` does: /run/netns a shared mount, so other mount namespaces see ours."""
    os.makedirs(NETNS_RUN_DIR, exist_ok=True)
    libc, run_dir = _libc(), NETNS_RUN_DIR.encode()
    if libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None) == 0:
        return
    _check(libc.mount(run_dir, run_dir, b"none", MS_BIND | MS_REC, None), "bind-mount /run/netns")
    _check(libc.mount(b"none", run_dir, None, MS_SHARED | MS_REC, None), "share /run/netns")


def _unshare_and_pin(path: str) -> None:
    """On a throw-away thread: a fresh namespace for this thread, kept alive by a bind mount."""
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    _check(libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
           f"bind-mount {path}")


def create_namespace(name: str) -> None:
    """Create a named namespace; FileExistsError if the name is taken (never adopt someone's).

    No fork: pyroute2's netns.create (and IPRoute(netns=...)) fork the interpreter, and a
    fork child that gets SIGTERM while a Python SIGTERM handler raises (as acp-lab's does)
    escapes into the parent's code. A thread that unshares and then ends avoids all of that.
    """
    path = netns_path(name)
    _share_run_dir()
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, f"namespace {name} already exists") from None
    try:
        result: list[BaseException] = []

        def worker() -> None:
            try:
                _unshare_and_pin(path)
            except BaseException as exc:
                result.append(exc)

        thread = threading.Thread(target=worker, name=f"netns-create:{name}", daemon=True)
        thread.start()
        thread.join()
        if result:
            raise result[0]
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def pids_in(names: Iterable[str]) -> list[int]:
    """Processes whose network namespace is one of `names` (found by the namespace inode)."""
    wanted = set()
    for name in names:
        try:
            st = os.stat(netns_path(name))
        except FileNotFoundError:
            continue
        wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        if (st.st_dev, st.st_ino) in wanted:
            found.append(int(entry))
    return found


def kill_pids(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM each pid, then SIGKILL whatever is left after `grace` seconds."""
    alive = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.add(pid)
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _exists(pid)}
        if alive:
            time.sleep(0.02)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        # Our own children linger as zombies until reaped; reap those we can.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            # A zombie is dead already; its parent (or init) reaps it in its own time.
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def remove_namespace(name: str) -> None:
    """Remove a named namespace, first ending the processes still inside it."""
    kill_pids(pids_in([name]))
    with contextlib.suppress(FileNotFoundError):
        pyroute2_netns.remove(name)


def cleanup_stale(prefix: str) -> list[str]:
    """Remove every namespace named `<prefix>-...` (leftovers of a crashed run); return their
    names."""
    if not prefix or "-" in prefix or "/" in prefix:
        raise ValueError(f"bad prefix {prefix!r}: letters and digits only")
    stale = [name for name in list_namespaces() if name.startswith(prefix + "-")]
    kill_pids(pids_in(stale))
    for name in reversed(stale):
        with contextlib.suppress(FileNotFoundError):
            pyroute2_netns.remove(name)
    return stale
