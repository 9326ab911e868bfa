"""acpd's import set stays lean (issue 19: acpd + join proxy within 40 MB, an idle pledge
within 30 MB): the modules of the parts an enrolled node and an idle pledge run, imported as
acpd.main imports them, leave out what only rare work needs. A regression here costs megabytes
of RSS on every node (bench/acpd_memory.py --imports shows how many).

Each check runs in a fresh interpreter: pytest's own process already holds most of these.
"""
from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

IDENTITY = {"acp_node_name": "fd89b714f3db00000200000064000001+@acp.example.com",
            "acp_address": "fd89:b714:f3db:0:200:0:6400:1"}

# As acpd.main: the lean pyroute2 and asyncio first, then the node's parts (coordinator's
# part_names), their modules imported as the coordinator does.
PROBE = textwrap.dedent("""
    import importlib, json, sys
    from acp_openwrt import asyncio_lean, pyroute2_lean, stand_ins
    pyroute2_lean.install()
    asyncio_lean.install()
    stand_ins.install(stand_ins.CRYPTOGRAPHY)
    import acp_openwrt.acpd
    from acp_openwrt.config import AcpConfig
    from acp_openwrt.coordinator import part_names
    identity = json.loads(sys.argv[1])
    parts = part_names(AcpConfig(), identity)
    for part in parts:
        importlib.import_module("acp_openwrt." + part.split(":")[0])
    import pyroute2.iproute.linux  # the links part's IPRoute, opened at its start
    if identity is None:  # a pledge looks for a stored LDevID at its start
        from acp_openwrt.brski.store import load_identity
        assert load_identity("/nonexistent/ldevid.pem", "/nonexistent/ldevid.key") is None
    print(json.dumps({"parts": parts, "modules": sorted(sys.modules)}))
""")

# Only for BRSKI work (enrolment, renewal: TLS, CMS, the voucher, building certificates) or
# never (pyroute2's test and probe helpers); hashlib would load OpenSSL's libcrypto beside
# cryptography's own; the control API's TypedDicts are for acpctl, the docs and the tests;
# importlib.abc (3.11) imports importlib.resources and with it zipfile, tempfile, bz2, lzma;
# ctypes.util (pyroute2's netns: find_library) tempfile, shutil, bz2, lzma; email.utils
# (cryptography: only to check a new RFC822Name) email's charset and quoting modules.
RARE = ("ssl", "_ssl", "unittest", "asn1crypto", "hashlib", "_hashlib", "hmac",
        "acp_openwrt.control.api", "importlib.abc", "importlib.resources", "zipfile", "difflib",
        "ctypes.util", "tempfile", "email.utils",
        "acp_openwrt.brski.tls",
        "acp_openwrt.brski.cms", "acp_openwrt.brski.csr", "acp_openwrt.brski.voucher",
        "acp_openwrt.brski.pledge.client", "acp_openwrt.brski.pledge.core",
        "acp_openwrt.brski.pledge.renewal")
# An idle pledge needs no OpenSSL at all until a join proxy is heard (the IDevID is checked
# in a short-lived process).
OPENSSL = ("cryptography", "_cffi_backend")


def loaded(identity: dict[str, str] | None) -> dict:
    """The probe without the site module (a machine's .pth hooks would import on their own:
    this sandbox's imports importlib.resources), with this package and the site-packages on
    its path instead."""
    path = [str(SRC), *site.getsitepackages()]
    out = subprocess.run([sys.executable, "-S", "-c", PROBE, json.dumps(identity)], check=True,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_enrolled_node_imports_no_brski_work() -> None:
    got = loaded(IDENTITY)
    assert "brski.pledge.part:PledgePart" in got["parts"]
    assert "channels.part:ChannelPart" in got["parts"]
    assert "cryptography.x509" in got["modules"]  # (the peer checks: it is still needed)
    assert [m for m in RARE if m in got["modules"]] == []


def test_an_idle_pledge_imports_no_openssl() -> None:
    got = loaded(None)
    assert "brski.pledge.part:PledgePart" in got["parts"]
    assert [m for m in (*RARE, *OPENSSL) if m in got["modules"]] == []


def test_asyncio_gets_ssl_back_when_ssl_is_imported() -> None:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, sys
        from acp_openwrt import asyncio_lean
        installed = asyncio_lean.install()
        import asyncio.base_events, asyncio.selector_events, asyncio.sslproto
        before = [m.ssl is None for m in (asyncio.base_events, asyncio.selector_events,
                                          asyncio.sslproto)]
        import ssl
        after = [m.ssl is ssl for m in (asyncio.base_events, asyncio.selector_events,
                                        asyncio.sslproto)]
        print(json.dumps({"installed": installed, "before": before, "after": after,
                          "again": asyncio.sslproto.SSLAgainErrors == (
                              ssl.SSLWantReadError, ssl.SSLSyscallError)}))
    """)], check=True, capture_output=True, text=True, timeout=60)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"installed": True, "before": [True] * 3, "after": [True] * 3, "again": True}
