"""acpd's import set stays lean (issue 19: acpd + join proxy within 40 MB, an idle pledge
within 30 MB): the modules of the parts an enrolled node and an idle pledge run, imported as
acpd.main imports them, leave out what only rare work needs. A regression here costs megabytes
of RSS on every node (bench/acpd_memory.py --imports shows how many).

Each check runs in a fresh interpreter: pytest's own process already holds most of these.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from acp_openwrt.lab.pki import TestCA
from acp_openwrt.revocation.crl import RevokedEntry, build_crl

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
    if len(sys.argv) > 2:  # an enrolled node's certificate work, on real files
        work = json.loads(sys.argv[2])
        import datetime as dt
        from acp_openwrt.brski.store import identity_problems, stored_certificate
        from acp_openwrt.channels.ike_identity import local_identity
        from acp_openwrt.channels.peer_check import check_peer
        from acp_openwrt.identity.cert_reader import load_certificates
        from acp_openwrt.identity.summary import load_identity_summary
        from acp_openwrt.revocation.crl import load_crl
        from acp_openwrt.revocation.keeper import CrlKeeper
        now = dt.datetime.now(dt.UTC)
        assert load_identity_summary(work["cert"])["acp_node_name"] == work["name"]
        assert identity_problems(work["cert"], work["key"], now) == []
        assert stored_certificate(work["cert"], work["key"]) is not None
        anchors = load_certificates(work["anchors"])
        assert local_identity(load_certificates(work["cert"])[0]).kind == "ID_IPV6_ADDR"
        peer = load_certificates(work["peer"])[0]
        verdict = check_peer(work["peer_id"], [peer.der], [], anchors, work["domain"])
        assert verdict.ok, verdict.reason
        keeper = CrlKeeper(anchors)
        assert keeper.load([(None, load_crl(bytes.fromhex(work["crl"])))], now) == []
        assert len(keeper.revoked()) == 1
    print(json.dumps({"parts": parts, "modules": sorted(sys.modules)}))
""")

# Only for BRSKI work (enrolment, renewal: TLS, CMS, the voucher, building certificates) or
# never (pyroute2's test and probe helpers); hashlib would load OpenSSL's libcrypto beside
# cryptography's own; the control API's TypedDicts are for acpctl, the docs and the tests;
# importlib.abc (3.11) imports importlib.resources and with it zipfile, tempfile, bz2, lzma;
# ctypes.util (pyroute2's netns: find_library) tempfile, shutil, bz2, lzma; email.utils
# (cryptography: only to check a new RFC822Name) email's charset and quoting modules; shutil
# (pyroute2's ping probe, rpl/unstrung.py's external mode) bz2 and lzma; multiprocessing and
# pickle (pyroute2's fork-based NetNS); pyroute2's traffic-control messages (IPRoute.tc()).
RARE = ("ssl", "_ssl", "unittest", "asn1crypto", "hashlib", "_hashlib", "hmac",
        "acp_openwrt.control.api", "importlib.abc", "importlib.resources", "zipfile", "difflib",
        "ctypes.util", "tempfile", "email.utils", "shutil", "bz2", "lzma", "multiprocessing",
        "pickle", "pyroute2.netlink.rtnl.tcmsg",
        "acp_openwrt.brski.tls",
        "acp_openwrt.brski.cms", "acp_openwrt.brski.csr", "acp_openwrt.brski.voucher",
        "acp_openwrt.brski.pledge.client", "acp_openwrt.brski.pledge.core",
        "acp_openwrt.brski.pledge.renewal")
# An idle pledge needs no OpenSSL at all until a join proxy is heard (the IDevID is checked
# in a short-lived process); an enrolled node reads and checks certificates, keys and CRLs with
# the parse-only readers (identity/cert_reader.py, signature.py, key_reader.py: 8 MB less).
OPENSSL = ("cryptography", "_cffi_backend", "acp_openwrt.identity.certificate")


def loaded(identity: dict[str, str] | None, work: dict[str, str] | None = None) -> dict:
    """The probe without the site module (a machine's .pth hooks would import on their own:
    this sandbox's imports importlib.resources), with this package and the site-packages on
    its path instead; with `work`, it also does an enrolled node's certificate work."""
    path = [str(SRC), *site.getsitepackages()]
    extra = [json.dumps(work)] if work is not None else []
    out = subprocess.run([sys.executable, "-S", "-c", PROBE, json.dumps(identity), *extra],
                         check=True,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_enrolled_node_imports_no_brski_work() -> None:
    got = loaded(IDENTITY)
    assert "brski.pledge.part:PledgePart" in got["parts"]
    assert "channels.part:ChannelPart" in got["parts"]
    assert [m for m in (*RARE, *OPENSSL) if m in got["modules"]] == []


def test_an_enrolled_nodes_certificate_work_needs_no_cryptography(tmp_path: Path) -> None:
    """acpd's start checks of its LDevID and key, the BRSKI part's look at them, the channels'
    own identity and the membership check of a peer (signatures included), a CRL taken: all
    with the parse-only readers (identity/cert_reader.py, signature.py, key_reader.py)."""
    domain = "acp.example.com"
    ca = TestCA.create(tmp_path, domain=domain)
    me = ca.issue_node("me", acp_node_name=IDENTITY["acp_node_name"],
                       ip_address=IDENTITY["acp_address"])
    peer_name = "fd89b714f3db00000200000064000002+@acp.example.com"
    peer = ca.issue_node("peer", acp_node_name=peer_name,
                         ip_address="fd89:b714:f3db:0:200:0:6400:2")
    crl = build_crl(ca.certificate, ca.private_key, [RevokedEntry(5, dt.datetime.now(dt.UTC))],
                    now=dt.datetime.now(dt.UTC), number=1)
    work = {"cert": str(me.cert_path), "key": str(me.key_path), "anchors": str(ca.anchor_path),
            "name": IDENTITY["acp_node_name"], "peer": str(peer.cert_path),
            "peer_id": "fd89:b714:f3db:0:200:0:6400:2", "domain": domain,
            "crl": crl.public_bytes(serialization.Encoding.DER).hex()}
    got = loaded(IDENTITY, work)
    assert [m for m in (*RARE, *OPENSSL) if m in got["modules"]] == []


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


def test_brski_work_imports_no_asn1crypto() -> None:
    """CMS and the CSR attributes are built and read with identity/der.py: the registrar and
    an enrolling pledge do without asn1crypto (4 MB with its decimal and fractions)."""
    out = subprocess.run([sys.executable, "-S", "-c", textwrap.dedent("""
        import json, sys
        import acp_openwrt.brski.registrar.part, acp_openwrt.brski.pledge.client
        import acp_openwrt.brski.pledge.renewal
        print(json.dumps(sorted(sys.modules)))
    """)], check=True, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *site.getsitepackages()])})
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert [m for m in modules if m.split(".")[0] in ("asn1crypto", "decimal", "fractions")] \
        == []
