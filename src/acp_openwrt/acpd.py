"""acpd: the ACP node's coordinator daemon (runs in the foreground; procd/systemd supervise it).

For now it validates its configuration and identity, reports them, and waits for a signal.
Everything that could be wrong with the configuration is found before any system state is
touched: a bad value stops acpd with one line naming the file, line and option.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__

OPENWRT_CONFIG = Path("/etc/config/acp")
EXIT_CONFIG = 2
LOG = logging.getLogger("acpd")
# UCI/syslog level names to Python's; syslog's "notice" has no Python twin.
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
              "warning": logging.WARNING, "error": logging.ERROR}


class StartupError(Exception):
    """A problem found before acpd changes anything: one line, exit status 2."""


def _load_identity(config: Any) -> dict[str, Any] | None:
    """The node's identity from its LDevID, or None when it has none yet (it will pledge)."""
    if config.ldevid_cert is None:
        return None
    from .identity.certificate import CertificateError, certificate_node_name, load_certificate
    from .identity.summary import identity_summary
    try:
        found = certificate_node_name(load_certificate(config.ldevid_cert))
    except (CertificateError, OSError) as exc:
        raise StartupError(f"ldevid_cert {config.ldevid_cert}: {getattr(exc, 'strerror', None) or exc}")
    if found is None:
        raise StartupError(f"ldevid_cert {config.ldevid_cert}: certificate carries no acp-node-name")
    try:
        return identity_summary(found[0])
    except ValueError as exc:
        raise StartupError(f"ldevid_cert {config.ldevid_cert}: {exc}") from exc


def load(config_path: Path | None) -> tuple[Any, dict[str, Any] | None]:
    """Read and check configuration and identity; pure (no system state changes)."""
    from .config import ConfigError, load_config
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from exc
    except OSError as exc:
        raise StartupError(f"{config_path}: {exc.strerror}") from exc
    return config, _load_identity(config)


async def _run_until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="acpd", description="ACP node daemon (foreground).")
    parser.add_argument("-c", "--config", type=Path, default=None,
                        help=f"UCI config file (default {OPENWRT_CONFIG} when it exists)")
    parser.add_argument("--check", action="store_true",
                        help="validate configuration and identity, print them, and exit")
    parser.add_argument("--version", action="version", version=f"acpd {__version__}")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    config_path = args.config
    if config_path is None and OPENWRT_CONFIG.exists():
        config_path = OPENWRT_CONFIG
    try:
        config, identity = load(config_path)
    except StartupError as exc:
        print(f"acpd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=LOG_LEVELS.get(config.log_level, logging.INFO),
                        format="acpd: %(levelname)s %(message)s")
    if args.check:
        import json
        json.dump({"config": config.to_dict(), "identity": identity}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if not config.enabled:
        LOG.info("disabled in configuration (option enabled 0); exiting")
        return 0
    if identity is None:
        LOG.info("no LDevID configured: this node would enrol (BRSKI) and flood nothing")
    else:
        LOG.info("identity %s, ACP address %s", identity["acp_node_name"], identity["acp_address"])
    asyncio.run(_run_until_signal())
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
