"""The join proxy process's memory: RSS idle and while it relays N circuits (issue 19).

Run as root: python3 bench/join_proxy_memory.py [--circuits N] [--src DIR] [--json PATH].
Starts the process exactly as acpd does (`python3 -S -m acp_openwrt.brski.proxy.entry`, in a
network namespace, as nobody), hands it a listening socket and a registrar (a threaded echo
server in the same namespace), then reads /proc/<pid>: once idle (listener and registrar
known), once with N circuits open (each has echoed 1 KiB), and after 32 MiB more went through
one circuit. Also: that transfer's speed (through the threaded echo: a loaded host moves it)
and the proxy's CPU time for it (steadier), and the median of 200 connect + 1-byte echo +
close. Twice: with the package compiled to .pyc (as on a node: OpenWrt ships bytecode) and
from source with PYTHONDONTWRITEBYTECODE (compiled at every start, as a checkout run with that
variable set does); the standard library's own .pyc are used either way. --src points the
process at another tree (e.g. `git archive` of an older commit) to compare. Prints JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from acp_openwrt.brski.proxy import handover as ho  # noqa: E402
from acp_openwrt.lab.tcp_echo import serve_echo  # noqa: E402
from acp_openwrt.netns import create_namespace, remove_namespace, socket_in  # noqa: E402

REGISTRAR, PROXY = "fd00:19::1", "fd00:19::2"
BULK = 32 * 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
            out[line.split(":")[0]] = round(int(line.split()[1]) / 1024, 2)
    return out


def echo_server(ns: str) -> tuple[socket.socket, int]:
    lsock = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
    lsock.bind((REGISTRAR, 0))
    lsock.listen(128)
    return lsock, serve_echo(lsock)


def expect(sock: socket.socket, kind: type, within: float = 30) -> Any:
    sock.settimeout(within)
    while True:
        received = ho.recv_message(sock)
        if received is None:
            raise RuntimeError("the proxy process ended")
        if isinstance(received[0], kind):
            return received[0]


def package_copy(src: str, compiled: bool) -> str:
    """The files the process loads, copied where nobody can read them; compiled to .pyc in
    place, or left as source (the process then compiles them at every start)."""
    tmp = tempfile.mkdtemp(prefix="jp-src-")
    for rel in ("acp_openwrt/__init__.py", "acp_openwrt/brski/__init__.py"):
        Path(tmp, rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(src, rel), Path(tmp, rel))
    shutil.copytree(Path(src, "acp_openwrt/brski/proxy"), Path(tmp, "acp_openwrt/brski/proxy"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    if compiled:
        subprocess.run([sys.executable, "-m", "compileall", "-q", tmp], check=True,
                       capture_output=True, env={"PATH": "/usr/bin:/bin"})
    subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
    return tmp


def run_once(ns: str, src: str, circuits: int, compiled: bool) -> dict[str, Any]:
    tree = package_copy(src, compiled)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": tree, "PYTHONDONTWRITEBYTECODE": "1"}
    server, echo_port = echo_server(ns)
    listener = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
    listener.bind((PROXY, 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    argv = [sys.executable, "-S", "-m", "acp_openwrt.brski.proxy.entry",
            "--handover-fd", str(theirs.fileno()), "--netns", ns, "--user", "nobody",
            "--max-connections", str(circuits + 8), "--max-per-pledge", str(circuits + 8),
            "--log-level", "warning"]
    proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), env=env, cwd="/")
    theirs.close()
    clients: list[socket.socket] = []
    try:
        expect(mine, ho.Hello)
        ho.send_message(mine, ho.Listen("bench0", PROXY, port), (listener.fileno(),))
        expect(mine, ho.Listening)
        ho.send_message(mine, ho.Registrar(REGISTRAR, echo_port, 600_000))
        while not expect(mine, ho.RegistrarState).known:
            pass
        time.sleep(0.5)
        idle = memory(proc.pid)
        for _ in range(circuits):
            sock = socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect((PROXY, port))
            sock.sendall(os.urandom(1024))
            got = b""
            while len(got) < 1024:
                got += sock.recv(4096)
            clients.append(sock)
        ho.send_message(mine, ho.StatusRequest(1))
        status = expect(mine, ho.StatusReply).status
        assert len(status["connections"]) == circuits, status["connections"]
        loaded = memory(proc.pid)
        bulk = os.urandom(BULK)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        sender = threading.Thread(target=clients[0].sendall, args=(bulk,))
        sender.start()
        got_n = 0
        while got_n < len(bulk):
            got_n += len(clients[0].recv(1 << 20))
        sender.join()
        seconds = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        after_bulk = memory(proc.pid)
        for sock in clients:
            sock.close()
        clients.clear()
        rtts = []
        for _ in range(200):
            t1 = time.monotonic()
            with socket_in(ns, socket.AF_INET6, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect((PROXY, port))
                sock.sendall(b"x")
                assert sock.recv(1) == b"x"
            rtts.append(time.monotonic() - t1)
            while True:  # the circuit is gone before the next (no per-pledge limit effects)
                ho.send_message(mine, ho.StatusRequest(2))
                if not expect(mine, ho.StatusReply).status["connections"]:
                    break
        rtts.sort()
        return {"idle": idle, f"with_{circuits}_circuits": loaded,
                "after_32MiB_through_one": after_bulk,
                "echo_32MiB_MBps": round(len(bulk) / seconds / 1e6, 1),
                "proxy_cpu_s_per_100MB_each_way": round(cpu / len(bulk) * 1e8, 3),
                "connect_echo_1B_ms_median": round(rtts[len(rtts) // 2] * 1000, 2)}
    finally:
        for sock in clients:
            sock.close()
        mine.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        listener.close()
        server.close()
        shutil.rmtree(tree, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--circuits", type=int, default=50)
    parser.add_argument("--src", default=str(ROOT / "src"),
                        help="package root the proxy process runs from")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("join_proxy_memory: run as root (namespace, user nobody)", file=sys.stderr)
        return 1
    ns = f"jpmem{os.getpid()}"
    create_namespace(ns)
    try:
        for address in (REGISTRAR, PROXY):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/128", "dev", "lo",
                            "nodad"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        started = time.monotonic()
        figures = {"src": args.src, "python": sys.version.split()[0],
                   "bare_interpreter_mb": bare_interpreter(),
                   "compiled": run_once(ns, args.src, args.circuits, compiled=True),
                   "from_source": run_once(ns, args.src, args.circuits, compiled=False)}
        figures["seconds"] = round(time.monotonic() - started, 1)
    finally:
        remove_namespace(ns)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def bare_interpreter() -> float:
    """VmRSS of `python3 -S -c pass`: the floor of any Python process on this machine."""
    out = subprocess.run([sys.executable, "-S", "-c",
                          "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"],
                         check=True, capture_output=True, text=True).stdout
    return round(int(out) / 1024, 2)


if __name__ == "__main__":
    sys.exit(main())
