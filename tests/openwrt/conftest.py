"""The `openwrt` tier: OpenWrt's own userland, built natively, run for real (issue 14).

../shared/openwrt-userland/build.sh builds ubusd, the ubus CLI, uci, rpcd, uhttpd (with its
/ubus JSON-RPC endpoint), jshn and the python-ubus 0.1.3 / pyuci bindings into PREFIX
(default /var/cache/openwrt-userland; OPENWRT_USERLAND_PREFIX overrides it, and
OPENWRT_USERLAND_SRC the folder holding build.sh). The tier needs root: rpcd and OpenWrt's
scripts read fixed paths (/etc/config, rpcd's compiled-in ACL dir), which the fixtures give them
in private mount namespaces; nothing on the host is written outside tmp_path and PREFIX (and
the build lock file beside PREFIX). Test modules annotate with these classes under
`if TYPE_CHECKING: from conftest import Ubusd, ...` (conftest is not importable at run time).

Fixtures (all processes they start are stopped at teardown, also when a test fails):

openwrt_userland (session) -> Userland
    .prefix: Path; .env: dict (os.environ with PATH=PREFIX/bin:PREFIX/sbin:..., LD_LIBRARY_PATH
    =PREFIX/lib, PYTHONPATH=PREFIX/python:...); .path(name) -> the built binary;
    .run(argv, input=None, timeout=10, check=False, env=None, cwd=None) -> CompletedProcess[str];
    .start(argv, log, env=None) -> Popen (output to `log`; killed at session end at the latest);
    .shell -> OpenWrt's sh as argv (["busybox", "sh"], else ["bash"]: procd.sh needs `let`;
    OPENWRT_SHELL overrides).
    Runs build.sh once per session (a no-op when built; serialised by a lock file). When it
    cannot build (not root, no compiler, apt refused, ...) every test of the tier skips with ONE
    reason naming what is missing.

private_root (function) -> PrivateRoot: run a command with real absolute paths, host untouched.
    .stage(path, content, mode=0o644) puts a file at e.g. /etc/uci-defaults/90-acp or
    /lib/functions/procd.sh (an overlayfs over its top directory, upper in tmp_path);
    .bind(path, host_dir_or_file) binds over a path (created in the overlay if missing);
    .tmpfs(path) (PREFIX and bind sources under it stay visible); .argv(command) -> the
    `unshare --mount` argv that sets it all up and execs command; .upper(path) -> where the
    command's writes under an overlaid path landed (read them after the command ended).

ubusd (function) -> Ubusd: a real ubusd on tmp_path/ubus.sock.
    .socket: Path; .pid; .stop(); .kill() (SIGKILL: the socket file stays, as after a crash);
    .pause() / .resume() (SIGSTOP / SIGCONT); .restart() (a new ubusd on the same path: ubusd
    unlinks a stale socket); .env (the userland's); .call(obj, method, args=None, timeout=5.0)
    -> (returncode, reply) through the real `ubus -s SOCK -t T call`; .call_raw(cli_args,
    timeout=5.0) -> (returncode, stdout if 0 else stderr); .list(path=None) -> object names.
    returncode is the CLI's exit status: 0; the ubus status for a failed lookup (4: not found);
    256 - status for a failed call (254: invalid argument, 249: timeout); 255: could not
    connect; Ubusd.CLI_HUNG (124) when the CLI had to be killed: against a stopped ubusd it
    blocks in ubus_connect() for ever, -t does not cover that. reply is the parsed JSON, else
    the text (stdout on success, stderr on failure).

ubus_object (function) -> make(name, methods, replies=None) -> UbusObject: a stand-in object
    served by python-ubus 0.1.3 (ubus_standin.py) on the ubusd fixture. methods maps each method
    to its signature {arg: "STRING" | "INT32" | "TABLE" | "ARRAY" | ...} (or None: no arguments;
    python-ubus then refuses uhttpd's ubus_rpc_session). .calls() -> [{"method", "args"}];
    .stop().

rpcd (function) -> Rpcd: a real rpcd on the ubusd fixture, in a private mount namespace:
    .config_dir is its /etc/config (holds `rpcd` with the login below; write e.g. `acp` there),
    .acl_dir is its ACL dir (PREFIX/share/rpcd/acl.d is compiled in; a private dir is bound over
    it) holding rpcd's unauthenticated.json and a copy of
    luci/luci-app-acp/root/usr/share/rpcd/acl.d/luci-app-acp.json; /run is a private tmpfs.
    .user / .password: "acpview" / "acpview-secret", whose ONLY access group is luci-app-acp
    (`list read 'luci-app-acp'`, password as a crypt $6$ hash). .add_login(user, password,
    read=(), write=()) and .add_acl(name, groups) take effect at the next login (rpcd reads both
    per login). .stop().

uhttpd (function) -> Uhttpd: `uhttpd -f -p 127.0.0.1:<free port> -u /ubus -U SOCK -h <docroot>`
    on the ubusd fixture, with the rpcd fixture behind it (uhttpd asks rpcd's session object
    before every call). .url, .port, .docroot, .stop(); .login(user, password) -> session id
    (LoginFailed otherwise);
    .rpc_call(session, object, method, args=None) -> the JSON-RPC response dict, the request
    shaped as LuCI's rpc.js shapes it: {"jsonrpc": "2.0", "id": n, "method": "call",
    "params": [sid, object, method, args or {}]}, POSTed as application/json to /ubus (uhttpd
    takes JSON-RPC only at /ubus and /ubus/: rpc.js's /<object>.<method> URL suffix is for
    LuCI's own proxy and gets a 404 here);
    .post(body) -> (HTTP status, parsed JSON). A permitted call answers {"result": [0, {...}]}
    (or [status] without data); a refused one {"error": {"code": -32002, "message":
    "Access denied"}}; an unknown object -32000 "Object not found" (checked before the ACL).
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import fcntl
import itertools
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# beside the checkout (../shared), else where this workplace keeps it (a clone made elsewhere)
SRC = Path(os.environ.get("OPENWRT_USERLAND_SRC") or next(
    (p for p in (ROOT.parent / "shared" / "openwrt-userland",
                 Path("/work/shared/openwrt-userland")) if (p / "build.sh").exists()),
    ROOT.parent / "shared" / "openwrt-userland"))
PREFIX = Path(os.environ.get("OPENWRT_USERLAND_PREFIX", "/var/cache/openwrt-userland"))
LUCI_ACL = ROOT / "luci" / "luci-app-acp" / "root" / "usr" / "share" / "rpcd" / "acl.d" / \
    "luci-app-acp.json"
STANDIN = Path(__file__).with_name("ubus_standin.py")
BUILT = ("bin/ubus", "bin/uci", "bin/uhttpd", "bin/jshn", "sbin/ubusd", "sbin/rpcd",
         "lib/uhttpd_ubus.so", "share/libubox/jshn.sh", "share/rpcd/acl.d/unauthenticated.json")
CLI_HUNG = 124
READY_S = 10.0
_started: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_leftovers() -> None:
    """Last resort (an interrupted session): nothing we started outlives pytest."""
    for proc in list(_started):
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll (20 ms) until condition() holds; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout:g} s)")
        time.sleep(0.02)


def _end(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process we started: CONT (a stopped one never sees TERM), sig, then KILL."""
    if proc.poll() is None:
        for s in (signal.SIGCONT, sig):
            try:
                proc.send_signal(s)
            except ProcessLookupError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in _started:
        _started.remove(proc)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class Userland:
    """The built userland: where it is, the environment that finds it, how to run it."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        env = dict(os.environ)

        def front(var: str, *items: Path) -> str:
            return os.pathsep.join([*map(str, items), *filter(None, [env.get(var)])])
        env["PATH"] = front("PATH", prefix / "bin", prefix / "sbin")
        env["LD_LIBRARY_PATH"] = front("LD_LIBRARY_PATH", prefix / "lib")
        env["PYTHONPATH"] = front("PYTHONPATH", prefix / "python")
        self.env = env

    def path(self, name: str) -> Path:
        for sub in ("bin", "sbin"):
            if (self.prefix / sub / name).exists():
                return self.prefix / sub / name
        raise FileNotFoundError(f"{name} is not in {self.prefix}/bin or /sbin")

    @property
    def shell(self) -> list[str]:
        """OpenWrt's /bin/sh is busybox ash; dash lacks `let` and `&>`, which procd.sh uses.
        OPENWRT_SHELL (e.g. "bash") overrides the choice."""
        if os.environ.get("OPENWRT_SHELL"):
            return shlex.split(os.environ["OPENWRT_SHELL"])
        if shutil.which("busybox"):
            return ["busybox", "sh"]
        return ["bash"]

    def run(self, argv: Sequence[str | Path], *, input: str | None = None, timeout: float = 10.0,
            check: bool = False, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(a) for a in argv], input=input, capture_output=True,
                              text=True, timeout=timeout, env=env or self.env, cwd=cwd)
        if check and proc.returncode != 0:
            raise AssertionError(f"{shlex.join(map(str, argv))} exited {proc.returncode}: "
                                 f"{proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def start(self, argv: Sequence[str | Path], log: Path, *,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=env or self.env)
        _started.append(proc)
        return proc


def _why_not_buildable(output: str) -> str:
    """The one thing missing for build.sh, as a skip reason."""
    if os.geteuid() != 0:
        return "needs root (build.sh apt-installs its tools; the tier mounts /etc/config)"
    tools = {"gcc": "a C compiler (gcc)", "make": "make", "cmake": "cmake",
             "pkg-config": "pkg-config"}
    missing = [what for tool, what in tools.items() if shutil.which(tool) is None]
    if not Path("/usr/include/json-c/json.h").exists():
        missing.append("libjson-c-dev")
    if missing:
        how = "apt-get is not available" if shutil.which("apt-get") is None else \
            "apt-get did not install them"
        return f"cannot build OpenWrt's userland: missing {', '.join(missing)} ({how})"
    include = sysconfig.get_paths().get("include", "")
    if not Path(include, "Python.h").exists():
        return f"cannot build python-ubus/pyuci: no Python.h in {include} (python3-dev)"
    last = output.strip().splitlines()[-1] if output.strip() else "no output"
    return f"{SRC}/build.sh failed: {last}"


def _build() -> Userland:
    if not (SRC / "build.sh").exists():
        pytest.skip(f"OpenWrt's userland sources are not here: no {SRC}/build.sh "
                    "(set OPENWRT_USERLAND_SRC)")
    if os.geteuid() != 0:
        pytest.skip(_why_not_buildable(""))
    PREFIX.parent.mkdir(parents=True, exist_ok=True)
    with open(PREFIX.parent / f".{PREFIX.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions must not build into PREFIX at once
        proc = subprocess.run(["sh", str(SRC / "build.sh"), str(PREFIX)], capture_output=True,
                              text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.skip(_why_not_buildable(proc.stdout + proc.stderr))
    absent = [item for item in BUILT if not (PREFIX / item).exists()]
    if absent or not list((PREFIX / "python").glob("ubus*.so")):
        pytest.fail(f"build.sh succeeded but {PREFIX} lacks {absent or 'python-ubus'}")
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} (util-linux) is missing: the tier needs private mount namespaces")
    return Userland(PREFIX)


@pytest.fixture(scope="session")
def openwrt_userland() -> Iterator[Userland]:
    yield _build()
    for proc in list(_started):  # the safety net: fixtures stop their own processes
        _end(proc, signal.SIGKILL)


class PrivateRoot:
    """Real absolute paths for a command, in a private mount namespace; the host stays as it was.

    Overlays go over whole top-level directories (/etc, /usr), lower = the host's, upper here;
    binds and tmpfs mounts follow. /lib, /sbin and /bin resolve through the host's symlinks
    (/lib/functions.sh is /usr/lib/functions.sh on a merged-/usr Debian). `keep` paths (the
    userland's PREFIX) and bind sources stay visible through a tmpfs laid over them: the tmpfs
    is filled with binds of them first, then moved into place.
    """

    def __init__(self, base: Path, keep: Sequence[Path] = ()) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self._keep = [os.path.realpath(k) for k in keep]
        self._overlays: set[str] = set()
        self._binds: list[tuple[Path, str]] = []
        self._tmpfs: list[str] = []

    @staticmethod
    def _resolve(target: str) -> tuple[str, str]:
        real = os.path.realpath(target)
        top = "/" + real.split("/")[1]
        if real == top or not os.path.isdir(top):
            raise ValueError(f"{target}: no top-level directory to overlay")
        return real, top

    def _overlay(self, top: str) -> None:
        if Path(top) in (self.base, *self.base.parents):
            raise ValueError(f"cannot overlay {top}: it holds {self.base}")
        self._overlays.add(top)

    def upper(self, target: str) -> Path:
        real, top = self._resolve(target)
        return self.base / top.strip("/") / "upper" / real[len(top) + 1:]

    def stage(self, target: str, content: str | bytes | Path, mode: int = 0o644) -> Path:
        _, top = self._resolve(target)
        self._overlay(top)
        path = self.upper(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.read_bytes() if isinstance(content, Path) else \
            content.encode() if isinstance(content, str) else content
        path.write_bytes(data)
        path.chmod(mode)
        return path

    def bind(self, target: str, source: Path) -> None:
        real, top = self._resolve(target)
        if not os.path.exists(real) and not any(real.startswith(t + "/") for t in self._tmpfs):
            self._overlay(top)  # the mount point is made in the overlay, not on the host
        self._binds.append((source, real))

    def tmpfs(self, target: str) -> None:
        self._tmpfs.append(os.path.realpath(target))

    def argv(self, command: Sequence[str | Path]) -> list[str]:
        for path in [self.base, *(src for src, _ in self._binds)]:
            if any(c in str(path) for c in ",:\n"):
                raise ValueError(f"{path}: overlay/mount options cannot take , or :")
        q = shlex.quote
        lines = ["set -eu"]
        for top in sorted(self._overlays):
            upper, work = self.base / top.strip("/") / "upper", self.base / top.strip("/") / "work"
            upper.mkdir(parents=True, exist_ok=True)
            work.mkdir(parents=True, exist_ok=True)
            lines.append(f"mount -n -t overlay overlay -o lowerdir={q(top)},"
                         f"upperdir={q(str(upper))},workdir={q(str(work))} {q(top)}")

        def inside(path: str, top: str) -> bool:
            return path == top or path.startswith(top + "/")

        def under_tmpfs(path: str) -> bool:
            return any(inside(path, t) for t in self._tmpfs)

        def bind_lines(source: str, target: str) -> list[str]:
            make = f"mkdir -p {q(target)}" if os.path.isdir(source) else \
                f"mkdir -p {q(os.path.dirname(target))}; [ -e {q(target)} ] || : > {q(target)}"
            return [make, f"mount -n --bind {q(source)} {q(target)}"]
        for source, target in self._binds:
            if not under_tmpfs(target):
                lines += bind_lines(str(source), target)
        late = [(os.path.realpath(s), t) for s, t in self._binds if under_tmpfs(t)]
        for n, target in enumerate(self._tmpfs):
            staging = self.base / f"tmpfs{n}"
            staging.mkdir(exist_ok=True)
            mode = "1777" if target == "/tmp" else "0755"
            lines.append(f"mount -n -t tmpfs -o mode={mode} tmpfs {q(str(staging))}")
            for kept in sorted({k for k in self._keep + [s for s, _ in late] if inside(k, target)}):
                lines += bind_lines(kept, str(staging / os.path.relpath(kept, target)))
            lines.append(f"mount -n --move {q(str(staging))} {q(target)}")
        for source, target in late:  # binds into a tmpfs: after it
            lines += bind_lines(source, target)
        lines.append('exec "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines),
                "private-root", *map(str, command)]


@pytest.fixture
def private_root(openwrt_userland: Userland, tmp_path: Path) -> PrivateRoot:
    return PrivateRoot(tmp_path / "root", keep=[openwrt_userland.prefix])


class Ubusd:
    """One real ubusd on a socket of its own."""
    CLI_HUNG = CLI_HUNG

    def __init__(self, userland: Userland, socket_path: Path, log: Path) -> None:
        if len(str(socket_path).encode()) > 107:
            raise ValueError(f"{socket_path}: longer than a Unix socket path may be")
        self.userland, self.socket, self.log = userland, socket_path, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.proc = self.userland.start([self.userland.path("ubusd"), "-s", self.socket],
                                        self.log)
        wait_until(self._answers, READY_S, f"ubusd on {self.socket} did not answer: "
                                           f"{_tail(self.log)}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"ubusd exited {self.proc.returncode}: {_tail(self.log)}")
        return self.socket.exists() and self.call_raw(["list"], 2.0)[0] == 0

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def env(self) -> dict[str, str]:
        return self.userland.env

    def call_raw(self, args: Sequence[str], timeout: float = 5.0) -> tuple[int, str]:
        """`ubus -s SOCK -t T <args>`: (exit status, stdout if it is 0 else stderr)."""
        argv = [str(self.userland.path("ubus")), "-s", str(self.socket),
                "-t", str(max(1, round(timeout))), *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 2,
                                  env=self.userland.env)
        except subprocess.TimeoutExpired:
            return CLI_HUNG, f"{shlex.join(argv)}: did not exit within {timeout + 2:g} s"
        return proc.returncode, proc.stdout if proc.returncode == 0 else proc.stderr

    def call(self, obj: str, method: str, args: dict[str, Any] | None = None,
             timeout: float = 5.0) -> tuple[int, Any]:
        cli = ["call", obj, method] + ([json.dumps(args)] if args is not None else [])
        rc, text = self.call_raw(cli, timeout)
        try:
            return rc, json.loads(text) if text.strip() else None
        except ValueError:
            return rc, text.strip()

    def list(self, path: str | None = None, timeout: float = 5.0) -> list[str]:
        rc, text = self.call_raw(["list"] + ([path] if path else []), timeout)
        if rc != 0:
            raise AssertionError(f"ubus list failed ({rc}): {text.strip()}")
        return [line.split()[0].strip("'") for line in text.splitlines()
                if line.strip() and not line[0].isspace()]


@pytest.fixture
def ubusd(openwrt_userland: Userland, tmp_path: Path) -> Iterator[Ubusd]:
    daemon = Ubusd(openwrt_userland, tmp_path / "ubus.sock", tmp_path / "ubusd.log")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


class UbusObject:
    """A stand-in object on ubus, served by python-ubus in a process of its own."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop(self) -> None:
        _end(self.proc, signal.SIGKILL)  # uloop swallows SIGTERM (see ubus_standin.py)


@pytest.fixture
def ubus_object(openwrt_userland: Userland, ubusd: Ubusd,
                tmp_path: Path) -> Iterator[Callable[..., UbusObject]]:
    made: list[UbusObject] = []

    def make(name: str, methods: dict[str, dict[str, str] | None],
             replies: dict[str, dict[str, Any]] | None = None) -> UbusObject:
        spec = {m: {"signature": sig or {}, "reply": (replies or {}).get(m)}
                for m, sig in methods.items()}
        log, out = tmp_path / f"ubus-object-{name}.calls", tmp_path / f"ubus-object-{name}.log"
        proc = openwrt_userland.start([sys.executable, STANDIN, ubusd.socket, name,
                                       json.dumps(spec), log], out)
        obj = UbusObject(name, proc, log)
        made.append(obj)

        def registered() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"stand-in {name} exited {proc.returncode}: {_tail(out)}")
            return ubusd.call_raw(["list", name], 2.0)[0] == 0
        wait_until(registered, READY_S, f"stand-in ubus object {name} did not register")
        return obj

    yield make
    for obj in made:
        obj.stop()


def crypt_sha512(password: str) -> str:
    """A `$6$` hash through libcrypt's crypt(), the function rpcd checks passwords with."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = "$6$" + secrets.token_hex(8)
    hashed = lib.crypt(password.encode(), salt.encode())
    assert hashed and hashed.startswith(b"$6$"), "libcrypt has no sha512-crypt"
    return hashed.decode()


def _uci_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


class Rpcd:
    """A real rpcd with a private /etc/config, ACL dir and /run."""
    user = "acpview"
    password = "acpview-secret"

    def __init__(self, userland: Userland, ubusd: Ubusd, base: Path) -> None:
        self.userland, self.ubusd, self.base = userland, ubusd, base
        self.config_dir = base / "etc-config"
        self.acl_dir = base / "acl.d"
        self.log = base / "rpcd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_dir.mkdir(parents=True)
        self.acl_dir.mkdir()
        shutil.copy(userland.prefix / "share/rpcd/acl.d/unauthenticated.json", self.acl_dir)
        shutil.copy(LUCI_ACL, self.acl_dir)
        (self.config_dir / "rpcd").write_text("")
        self.add_login(self.user, self.password, read=("luci-app-acp",))

    def add_login(self, username: str, password: str, read: Sequence[str] = (),
                  write: Sequence[str] = ()) -> None:
        lines = ["", "config login", f"\toption username {_uci_quote(username)}",
                 f"\toption password {_uci_quote(crypt_sha512(password))}"]
        lines += [f"\tlist read {_uci_quote(g)}" for g in read]
        lines += [f"\tlist write {_uci_quote(g)}" for g in write]
        with open(self.config_dir / "rpcd", "a") as stream:
            stream.write("\n".join(lines) + "\n")

    def add_acl(self, name: str, groups: dict[str, Any]) -> Path:
        path = self.acl_dir / f"{name}.json"
        path.write_text(json.dumps(groups, indent="\t"))
        return path

    def start(self) -> None:
        root = PrivateRoot(self.base / "root", keep=[self.userland.prefix, self.ubusd.socket])
        root.bind("/etc/config", self.config_dir)
        root.bind(str(self.userland.prefix / "share/rpcd/acl.d"), self.acl_dir)
        root.tmpfs("/run")  # /var/run/rpcd: sessions, uci deltas (purged at start)
        self.proc = self.userland.start(
            root.argv([self.userland.path("rpcd"), "-s", self.ubusd.socket]), self.log)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"rpcd exited {self.proc.returncode}: {_tail(self.log)}")
            return self.ubusd.call_raw(["list", "session"], 2.0)[0] == 0
        wait_until(ready, READY_S, "rpcd did not register its session object")

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)


@pytest.fixture
def rpcd(openwrt_userland: Userland, ubusd: Ubusd, tmp_path: Path) -> Iterator[Rpcd]:
    daemon = Rpcd(openwrt_userland, ubusd, tmp_path / "rpcd")
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


class LoginFailed(AssertionError):
    """session login did not answer [0, {ubus_rpc_session: ...}]."""


ANONYMOUS = "00000000000000000000000000000000"


class Uhttpd:
    """A real uhttpd serving /ubus (JSON-RPC over ubus), spoken to as LuCI's rpc.js does."""

    def __init__(self, userland: Userland, ubusd: Ubusd, base: Path) -> None:
        self.userland, self.ubusd = userland, ubusd
        self.docroot = base / "www"
        self.docroot.mkdir(parents=True)
        self.log = base / "uhttpd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ubus"

    def start(self) -> None:
        for _ in range(5):  # a free port can be taken between probe and bind: try another
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            self.proc = self.userland.start(
                [self.userland.path("uhttpd"), "-f", "-p", f"127.0.0.1:{self.port}",
                 "-u", "/ubus", "-U", self.ubusd.socket, "-h", self.docroot], self.log)
            deadline = time.monotonic() + READY_S
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                    return
                except OSError:
                    time.sleep(0.02)
            _end(self.proc)
        raise AssertionError(f"uhttpd did not listen: {_tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            _end(self.proc)

    def post(self, body: Any, timeout: float = 10.0) -> tuple[int, Any]:
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, data = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")

    def rpc_call(self, session: str, obj: str, method: str,
                 args: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": "call",
                "params": [session, obj, method, args or {}]}
        status, reply = self.post(body)
        assert status == 200 and isinstance(reply, dict), (status, reply)
        return reply

    def login(self, username: str, password: str) -> str:
        reply = self.rpc_call(ANONYMOUS, "session", "login",
                              {"username": username, "password": password})
        result = reply.get("result")
        if not (isinstance(result, list) and len(result) == 2 and result[0] == 0
                and isinstance(result[1], dict) and "ubus_rpc_session" in result[1]):
            raise LoginFailed(f"login {username}: {reply}")
        return str(result[1]["ubus_rpc_session"])


@pytest.fixture
def uhttpd(openwrt_userland: Userland, ubusd: Ubusd, rpcd: Rpcd,
           tmp_path: Path) -> Iterator[Uhttpd]:
    server = Uhttpd(openwrt_userland, ubusd, tmp_path / "uhttpd")
    try:
        server.start()
        yield server
    finally:
        server.stop()
