"""acpd: the ACP node's coordinator daemon (runs in the foreground; procd/systemd supervise it).

It validates its configuration and identity, then runs the node (coordinator.Node) until
SIGTERM/SIGINT, and removes what it created on the way out. Everything that could be wrong
with the configuration is found before any system state is touched: a bad value stops acpd
with one line naming the file, line and option.
"""
from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, asyncio_lean, code_cache, pyroute2_lean, stand_ins
from .config.identity_files import with_identity_files

OPENWRT_CONFIG = Path("/etc/config/acp")
EXIT_CONFIG = 2
EXIT_IDENTITY = 3  # --check: the configuration is fine, the stored LDevID is not
M_ARENA_MAX = -8  # glibc's mallopt parameter
TRIM_AFTER_S = 5.0  # the parts have started and dropped their start-up garbage by then
STOP_DUMP_S = 10.0  # a stop still running after this long dumps every thread's stack
LOG = logging.getLogger("acpd")
# UCI/syslog level names to Python's; syslog's "notice" has no Python twin.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
              "warning": logging.WARNING, "error": logging.ERROR}


class StartupError(Exception):
    """A problem found before acpd changes anything: one line, exit status 2."""


def _load_identity(config: Any, cert_path: Path | None = None) -> dict[str, Any] | None:
    """The node's identity from its LDevID, or None when it has none yet (it will pledge)."""
    cert_path = cert_path or config.ldevid_cert
    if cert_path is None or not cert_path.exists():
        return None
    from .identity.summary import load_identity_summary
    try:
        return load_identity_summary(cert_path)
    except ValueError as exc:
        raise StartupError(f"ldevid_cert {config.ldevid_cert}: {exc}") from exc


def _finish_identity_switch(config: Any) -> None:
    """A crash while the LDevID was being replaced: finish or undo that switch, so that what
    acpd loads is wholly the old identity or wholly the new one."""
    if config.ldevid_cert is None or config.ldevid_key is None or config.trust_anchors is None:
        return
    from .brski.store import StoreError, recover_identity
    try:
        outcome = recover_identity(config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    except StoreError as exc:
        raise StartupError(str(exc)) from exc
    if outcome is not None:
        LOG.warning("an interrupted LDevID switch was %s", outcome)


def load(config_path: Path | None, *, finish_switch: bool = True,
         ) -> tuple[Any, dict[str, Any] | None]:
    """Read and check configuration and identity. Changes nothing, except that (unless
    finish_switch is False, as for --check) an identity switch a crash interrupted is
    finished or undone first."""
    from .config import ConfigError, load_config
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"{config_path}: {exc.strerror}") from exc
    config = with_identity_files(config)
    if finish_switch:
        _finish_identity_switch(config)
    return config, _load_identity(config)


def check_identity(config: Any) -> tuple[dict[str, Any] | None, list[str], bool]:
    """--check's view of the LDevID without writing anything: (identity, problems, whether an
    interrupted switch is pending). A pending switch is judged by the files it will install."""
    cert, key = config.ldevid_cert, config.ldevid_key
    if cert is None:
        return None, [], False
    pending = False
    if key is not None:
        from .brski.store import StoreError, pending_identity
        try:
            cert, key, pending = pending_identity(cert, key)
        except StoreError as exc:  # acpd's start would stop on it: so does --check
            raise StartupError(str(exc)) from exc
    import datetime as dt

    from .brski.store import identity_problems
    identity = _load_identity(config, cert)
    return identity, identity_problems(cert, key, dt.datetime.now(dt.UTC)), pending


def _bootstrap_registrar(config: Any) -> dict[str, Any] | None:
    """A registrar without an LDevID makes its domain CA and issues its own (then loads it).

    In a one-shot registrar worker (brski/registrar/worker.py `bootstrap`): the CA and the
    certificate need cryptography, which acpd would keep for good (issue 19)."""
    from .brski.registrar.supervisor import run_once_sync
    from .brski.registrar.worker_protocol import settings_of
    ok, out = run_once_sync("bootstrap", settings_of(config))
    if not ok:
        raise StartupError(f"registrar: {out}")
    if out == "issued":
        LOG.info("registrar: issued this node's LDevID %s", config.ldevid_cert)
    return _load_identity(config)


async def _run_node(config: Any, identity: dict[str, Any] | None, keep: bool) -> None:
    import asyncio

    from .coordinator import Node
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        stop.set()
        # A shutdown that hangs says where: every thread's stack on stderr (procd's log) once
        # it has taken STOP_DUMP_S; a normal stop exits long before and prints nothing.
        faulthandler.dump_traceback_later(STOP_DUMP_S, exit=False)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping)
    loop.call_later(TRIM_AFTER_S, _started)
    await Node(config, identity, keep=keep, reexec=_run_anew).run(stop)


def _started() -> None:
    """The parts have started: keep what the dataclasses compiled for the next start and
    forget it here, then give the heap's free pages back."""
    try:
        code_cache.finish()
    except Exception:  # a cache is never worth a node
        LOG.debug("code cache not kept", exc_info=True)
    release_free_heap()


def _run_anew() -> None:
    """acpd again in this process, with the same command line (after enrolment: a fresh
    interpreter holds only what an enrolled node imports). Raises OSError if exec fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def _glibc(name: str) -> Any:
    """glibc's function `name` from the running process, or None (musl, OpenWrt's C library,
    has neither mallopt nor malloc_trim, and needs neither)."""
    import ctypes
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def one_malloc_arena() -> bool:
    """One C heap for every thread (glibc's mallopt M_ARENA_MAX = 1): each thread acpd starts
    (netns workers, the executor's, vici's) would otherwise get an arena of its own, a few
    hundred kB of RSS each (issue 19; the GIL serialises nearly every allocation anyway)."""
    mallopt = _glibc("mallopt")
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, 1))


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim): starting the
    parts leaves about 1 MB of freed memory inside the heap that glibc would otherwise keep
    (issue 19; musl returns free memory by itself)."""
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def _private_mount_namespace() -> bool:
    try:
        return os.stat("/proc/self/ns/mnt").st_ino != os.stat("/proc/1/ns/mnt").st_ino
    except OSError:  # in a container /proc/1 may not be ours to look at
        return False


def _setup_logging(level: str, use_syslog: bool) -> None:
    if use_syslog:
        from logging.handlers import SysLogHandler
        handler: logging.Handler = SysLogHandler(address="/dev/log")
        handler.setFormatter(logging.Formatter("acpd[%(process)d]: %(levelname)s %(message)s"))
    else:
        handler = logging.StreamHandler()
        # procd, systemd and syslog stamp each line themselves; a bare terminal or a test
        # bench's log file asks for it (ACPD_LOG_TIME=1: wall clock to the ms, to line up nodes).
        stamp = "%(asctime)s.%(msecs)03d " if os.environ.get("ACPD_LOG_TIME") == "1" else ""
        handler.setFormatter(logging.Formatter(stamp + "acpd: %(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
    logging.basicConfig(level=LOG_LEVELS.get(level, logging.INFO), handlers=[handler])
    # pyroute2's debug output would drown ours
    handler.addFilter(lambda r: r.levelno >= logging.WARNING or not r.name.startswith("pyroute2"))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="acpd", description="ACP node daemon (foreground).")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help=f"UCI config file (default {OPENWRT_CONFIG} when it exists)")
    parser.add_argument("--check", action="store_true",
                        help="validate configuration and identity, print them, and exit")
    parser.add_argument("--keep", action="store_true",
                        help="on exit leave namespaces and interfaces in place (for a restart)")
    parser.add_argument("--syslog", action="store_true", help="log to syslog instead of stderr")
    parser.add_argument("--version", action="version", version=f"acpd {__version__}")
    return parser.parse_args(argv)


def _check_registrar_id(config: Any) -> None:
    """A registrar_id option that its allocations file would refuse at start (the addresses
    already issued carry the stored one): a configuration error for --check as for acpd."""
    if not config.registrar or config.registrar_id is None:
        return
    from .brski.registrar.allocation import (
        AllocationError,
        registrar_id_refusal,
        stored_registrar_id,
    )
    from .brski.registrar.bootstrap import ALLOCATIONS_NAME
    path = Path(config.registrar_dir) / ALLOCATIONS_NAME
    try:
        stored = stored_registrar_id(path)
    except AllocationError as exc:
        raise StartupError(f"registrar: allocations {exc}") from None
    if stored is not None and stored != config.registrar_id:
        why = registrar_id_refusal(path, stored, config.registrar_id)
        raise StartupError(f"registrar: allocations {why}")


def _check(config_path: Path | None) -> int:
    """--check: configuration and identity as JSON; 2 for a bad configuration, 3 for an
    unusable LDevID (expired, not yet valid, a key that is not its own), each problem also
    one line on stderr."""
    try:
        config, _ = load(config_path, finish_switch=False)
        _check_registrar_id(config)
        identity, problems, pending = check_identity(config)
    except StartupError as exc:
        print(f"acpd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    import json
    json.dump({"config": config.to_dict(), "identity": identity, "identity_problems": problems,
               "identity_switch_pending": pending}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    if pending:
        print("acpd: an interrupted LDevID switch is pending; acpd finishes it at start "
              "(checked as it will be)", file=sys.stderr)
    for problem in problems:
        print(f"acpd: {problem}", file=sys.stderr)
    return EXIT_IDENTITY if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    pyroute2_lean.install()  # before anything imports pyroute2: 6 MB less RSS
    asyncio_lean.install()  # before anything imports asyncio: ssl only once TLS is needed
    stand_ins.install(stand_ins.CRYPTOGRAPHY)  # no hashlib (OpenSSL's libcrypto) until used
    one_malloc_arena()  # before any thread starts
    args = _parse_args(argv)
    config_path = args.config
    if config_path is None and OPENWRT_CONFIG.exists():
        config_path = OPENWRT_CONFIG
    if args.check:
        return _check(config_path)
    code_cache.install()  # dataclasses' methods compiled by an earlier start (issue 19)
    try:
        return _run(args, config_path)
    finally:
        code_cache.finish()  # (normally done once the parts have started)


def _run(args: argparse.Namespace, config_path: Path | None) -> int:
    try:
        config, identity = load(config_path)
    except StartupError as exc:
        print(f"acpd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    _setup_logging(config.log_level, args.syslog)
    if not config.enabled:
        LOG.info("disabled in configuration (option enabled 0); exiting")
        return 0
    if os.geteuid() != 0:
        print("acpd: must run as root (it creates namespaces and interfaces)", file=sys.stderr)
        return EXIT_CONFIG
    if config.registrar:
        try:
            identity = _bootstrap_registrar(config)
        except StartupError as exc:
            print(f"acpd: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    if identity is None:
        LOG.info("no LDevID (%s): this node enrols with BRSKI and floods nothing until then",
                 config.ldevid_cert)
    else:
        LOG.info("identity %s, ACP address %s", identity["acp_node_name"], identity["acp_address"])
        for problem in check_identity(config)[1]:  # BRSKI renews or re-enrols; say why
            LOG.error("LDevID unusable: %s", problem)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <acpd>` dumps every thread's stack
    if _private_mount_namespace():
        LOG.warning("running in a private mount namespace (ip netns exec?): the namespaces "
                    "acpd creates will not be visible outside it; use nsenter --net= instead")
    import asyncio
    try:
        asyncio.run(_run_node(config, identity, args.keep))
    except OSError as exc:
        LOG.error("%s", exc)
        return 1
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
