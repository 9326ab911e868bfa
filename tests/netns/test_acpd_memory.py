"""What a running acpd holds (issue 19's memory budget), read from its /proc/PID/maps: neither
an idle pledge nor an enrolled node loads any OpenSSL (not ssl, hashlib's libcrypto or
cryptography): the pledge's IDevID is checked in a short-lived process, TLS is only for BRSKI
work, and an enrolled node reads and checks certificates, keys and CRLs with the parse-only
readers (identity/cert_reader.py, signature.py, key_reader.py). The import-level twin is
tests/unit/test_acpd_lean_imports.py; this one also sees what the parts import while they
run."""
from __future__ import annotations

from pathlib import Path

from acp_openwrt.lab.acpd_lab import AcpdLab

PYTHON_OPENSSL = ("/_ssl.", "/_hashlib.")  # the ssl and hashlib modules' own
OPENSSL = (*PYTHON_OPENSSL, "/libssl.", "/libcrypto.", "/cryptography/")


def mapped(lab: AcpdLab, name: str, markers: tuple[str, ...]) -> list[str]:
    (pid,) = lab.pids(name, "acpd")
    paths = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
             if len(line.split()) > 5}
    return sorted(p for p in paths if any(m in p for m in markers))


def test_neither_an_idle_pledge_nor_an_enrolled_node_holds_openssl(lab: AcpdLab) -> None:
    lab.start_masa("n1")
    lab.make_pledge("n1")
    lab.enrol("n2")
    lab.start_all(["n1"])  # alone: a pledge next to an ACP node loads the BRSKI work ahead
    try:
        lab.wait("n1 pledging", lambda: lab.ask("n1", "brski")["state"] == "pledging", 20)
        assert mapped(lab, "n1", OPENSSL) == []
        lab.start_all(["n2"])
        lab.wait("n2's parts up", lambda: {"channels", "discovery", "brski"}
                 <= set(lab.ask("n2", "status")["parts"]), 20)
        assert mapped(lab, "n2", OPENSSL) == []
    except BaseException:
        print(lab.logs())
        raise
