"""Running real acpd processes in lab namespaces: config files, start, control requests, stop."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acp_openwrt.control.client import ControlClientError, request
from acp_openwrt.netns import nsenter_argv


@dataclass
class AcpdNode:
    """One acpd with its own namespaces, run dir and socket (several fit on one machine)."""
    name: str            # also the namespace prefix: <name>-dull, <name>-acp
    host_ns: str         # where acpd runs (its "host" namespace)
    workdir: Path
    extra: str = ""      # more UCI option lines
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.workdir / "run" / "acpd.sock"

    @property
    def dull_ns(self) -> str:
        return f"{self.name}-dull"

    @property
    def acp_ns(self) -> str:
        return f"{self.name}-acp"

    def write_config(self) -> Path:
        path = self.workdir / "acp.conf"
        path.write_text(
            "config acp 'main'\n"
            f"\toption namespace_dull '{self.dull_ns}'\n"
            f"\toption namespace_acp '{self.acp_ns}'\n"
            f"\toption run_dir '{self.workdir / 'run'}'\n"
            f"\toption log_dir '{self.workdir / 'log'}'\n"
            "\toption log_level 'debug'\n" + self.extra)
        return path

    def start(self, *args: str, timeout: float = 10.0) -> None:
        config = self.write_config()
        log = open(self.workdir / "acpd.stderr", "ab")
        self.proc = subprocess.Popen(
            nsenter_argv(self.host_ns, [sys.executable, "-m", "acp_openwrt.acpd",
                                        "-c", str(config), *args]),
            stdout=log, stderr=log, env={**os.environ, "ACPD_LOG_TIME": "1"})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"acpd {self.name} exited {self.proc.returncode}: "
                                   f"{self.stderr()}")
            try:
                request(self.socket, "help", timeout=1)
                return
            except ControlClientError:
                time.sleep(0.05)
        raise TimeoutError(f"acpd {self.name} did not answer: {self.stderr()}")

    def ask(self, cmd: str, **params: Any) -> Any:
        return request(self.socket, cmd, **params)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGUSR1)  # acpd dumps its threads' stacks
                time.sleep(0.5)
                self.proc.kill()
                self.proc.wait()
                # shown by pytest with the failing test: the log tail and the threads' stacks
                print(f"acpd {self.name} ignored signal {sig} for {timeout} s; its stderr:\n"
                      f"{self.stderr()}", file=sys.stderr)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def stderr(self) -> str:
        path = self.workdir / "acpd.stderr"
        return path.read_text()[-8000:] if path.exists() else ""


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
