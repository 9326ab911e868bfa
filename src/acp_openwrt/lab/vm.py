"""Run one command inside a QEMU guest booted with Debian's kernel (the `vm` test tier).

The guest's / is the host's / (read-only 9p, tmpfs overlay: writes work and vanish), so the
command sees the same Python, checkout and working directory. Its output is streamed from the
serial console; its exit status and any files it leaves in $ACP_LAB_OUT come back through a
writable per-run share. QEMU is always killed and the share removed, also on timeout or error.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from acp_openwrt.lab.guest_console import ConsoleFilter, Phase
from acp_openwrt.lab.guest_init import (
    HOSTROOT_TAG,
    MODULES_TAG,
    RUN_SCRIPT,
    RUN_TAG,
    STATUS_FILE,
    GuestCommand,
    guest_environment,
    run_script,
)
from acp_openwrt.lab.guest_kernel import GuestKernel, GuestUnavailable, ensure_guest_kernel

QEMU = "qemu-system-x86_64"
DEFAULT_TIMEOUT = 600.0
KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1"
RUN_PREFIX = "acp-lab-run-"
LOCK_FILE = ".lock"

__all__ = ["GuestError", "GuestUnavailable", "GuestTimeout", "GuestFailure", "GuestResult",
           "qemu_argv", "run_in_guest"]


class GuestError(Exception):
    """The guest run itself went wrong (as opposed to the command failing)."""

    def __init__(self, message: str, console: str = "") -> None:
        super().__init__(message)
        self.console = console  # the tail of the boot log, for diagnosis


class GuestTimeout(GuestError):
    pass


class GuestFailure(GuestError):
    """The guest ended without reporting the command's exit status (boot failure, crash)."""


@dataclass
class GuestResult:
    status: int
    boot_seconds: float  # until the command started
    total_seconds: float
    # files the command left in $ACP_LAB_OUT
    outputs: dict[str, bytes] = field(default_factory=dict)
    console_log: str = ""  # boot and power-off chatter, for diagnostics


def qemu_argv(kernel: GuestKernel, run_dir: Path, *, memory_mb: int = 2048, cpus: int = 2,
              qemu: str = QEMU) -> list[str]:
    """The QEMU command line; -accel tcg only, since kvm hangs on this machine kind."""
    def share(path: Path | str, tag: str, readonly: bool) -> list[str]:
        opts = f"local,path={path},mount_tag={tag},security_model=none,multidevs=remap"
        return ["-virtfs", opts + (",readonly=on" if readonly else "")]

    return [
        qemu, "-accel", "tcg", "-m", str(memory_mb), "-smp", str(cpus),
        "-nic", "none", "-device", "virtio-rng-pci", "-nographic", "-no-reboot",
        "-kernel", str(kernel.kernel), "-initrd", str(kernel.initramfs),
        "-append", KERNEL_CMDLINE,
        *share("/", HOSTROOT_TAG, True),
        *share(kernel.modules, MODULES_TAG, True),
        *share(run_dir, RUN_TAG, False),
    ]


def _die_with_parent() -> None:
    """Child side of Popen: QEMU gets SIGKILL if we vanish without cleaning up."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_in_guest(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_output: Callable[[bytes], None] | None = None,
    kernel: GuestKernel | None = None,
) -> GuestResult:
    """Boot a guest, run argv in it as root and return its exit status.

    on_output receives the command's output as it arrives. Raises GuestUnavailable (no qemu or
    kernel), GuestTimeout or GuestFailure; a failing command is a result, not an exception.
    """
    if not argv:
        raise ValueError("no command given")
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise GuestUnavailable(f"{QEMU} not found: apt-get install qemu-system-x86")
    kernel = kernel or ensure_guest_kernel()
    cmd = GuestCommand(
        argv=tuple(argv), cwd=cwd or os.getcwd(),
        env=guest_environment(os.environ if env is None else env, extra_env),
        nonce=secrets.token_hex(8),
    )
    _sweep_abandoned_runs()
    run_dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX))
    # Locked before it gets the name a sweeper looks for, so no sweeper ever sees it unlocked.
    lock = os.open(run_dir / (LOCK_FILE + ".new"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(run_dir / (LOCK_FILE + ".new"), run_dir / LOCK_FILE)
    try:
        script = run_dir / RUN_SCRIPT
        script.write_text(run_script(cmd))
        script.chmod(0o755)
        (run_dir / "out").mkdir()
        result = _boot(qemu_argv(kernel, run_dir, qemu=qemu), cmd, timeout, on_output)
        status_file = run_dir / STATUS_FILE
        if not status_file.exists():
            raise GuestFailure("guest ended without reporting the command's exit status",
                               result.console_log)
        result.status = int(status_file.read_text().strip() or "125")
        result.outputs = {p.name: p.read_bytes() for p in (run_dir / "out").iterdir()
                          if p.is_file()}
        return result
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        os.close(lock)


def _sweep_abandoned_runs() -> None:
    """Remove run dirs left by a runner killed with SIGKILL (QEMU died with it: PDEATHSIG).

    A live run holds the flock on its dir's lock file, so only abandoned ones are taken.
    """
    for run_dir in Path(tempfile.gettempdir()).glob(RUN_PREFIX + "*"):
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # not ours, or being created right now
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        finally:
            os.close(fd)  # closing also drops a lock we just took
        shutil.rmtree(run_dir, ignore_errors=True)


def _boot(qemu_cmd: list[str], cmd: GuestCommand, timeout: float,
          on_output: Callable[[bytes], None] | None) -> GuestResult:
    console = ConsoleFilter(cmd.begin_marker, cmd.end_marker)
    start = time.monotonic()
    boot_seconds = 0.0
    emit = on_output or (lambda _data: None)
    try:
        proc = subprocess.Popen(qemu_cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)
    except OSError as e:
        raise GuestUnavailable(f"cannot start {qemu_cmd[0]}: {e.strerror}") from None
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            left = start + timeout - time.monotonic()
            if left <= 0:
                raise GuestTimeout(f"guest run exceeded {timeout:g} s", console.log_tail())
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                break
            was_booting = console.phase is Phase.BOOT
            chunk = console.feed(data)
            if chunk:
                emit(chunk)
            if was_booting and console.phase is not Phase.BOOT:
                boot_seconds = time.monotonic() - start
        chunk = console.close()
        if chunk:
            emit(chunk)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    return GuestResult(status=-1, boot_seconds=boot_seconds,
                       total_seconds=time.monotonic() - start, console_log=console.log_tail())

