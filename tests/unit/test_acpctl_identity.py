"""`acpctl identity`: JSON for a name or a certificate; one-line errors with exit status 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acp_openwrt.acpctl import main

KEYS = {"acp_address", "prefix_length", "scheme", "routing_subdomain", "acp_domain", "ula_prefix"}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_name_rfc_example(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "identity",
                     "fd89b714f3db00000200000064000000+area51.research@acp.example.com")
    assert rc == 0
    data = json.loads(out)
    assert KEYS <= data.keys()
    assert data["acp_address"] == "fd89:b714:f3db:0:200:0:6400:0"
    assert data["prefix_length"] == 127
    assert data["scheme"] == "zone"
    assert data["routing_subdomain"] == "area51.research.acp.example.com"
    assert data["acp_domain"] == "acp.example.com"
    assert data["ula_prefix"] == "fd89:b714:f3db::/48"


@pytest.mark.parametrize("name,scheme,plen", [
    ("fd739fc23c3440112233445500000000+@acp.example.com", "vlong8", 120),
    ("fd739fc23c3440112233445580030000+@acp.example.com", "vlong16", 112),
    ("fd739fc23c3420010000000000000000+@acp.example.com", "manual", 64),
    ("fd739fc23c3400000200000064000002+@acp.example.com", "zone", 127),
])
def test_name_schemes(capsys: pytest.CaptureFixture[str], name: str, scheme: str,
                      plen: int) -> None:
    rc, out, _ = run(capsys, "identity", name)
    assert rc == 0
    data = json.loads(out)
    assert (data["scheme"], data["prefix_length"]) == (scheme, plen)


@pytest.mark.parametrize("argv", [
    ["identity", "not-a-name"],
    ["identity", "fd89b714f3db000002000000640000+@acp.example.com"],
    ["identity", "fd73ffffffffc0000000000000000000+@acp.example.com"],  # reserved type 3
    ["identity", "fe800000000000000000000000000001+@acp.example.com"],  # not a ULA
    ["identity"],
])
def test_bad_names_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert out == ""
    assert err.startswith("acpctl: ") and err.count("\n") == 1


@pytest.mark.parametrize("content", [
    b"", b"garbage\x00\xff", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_bad_certificate_files(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                               content: bytes) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_bytes(content)
    rc, out, err = run(capsys, "identity", "--cert", str(bad))
    assert rc == 2 and out == ""
    assert err.startswith("acpctl: ") and err.count("\n") == 1


def test_missing_certificate_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "identity", "--cert", str(tmp_path / "nope.pem"))
    assert rc == 2 and "nope.pem" in err and err.count("\n") == 1


def test_console_script_exit_status() -> None:
    proc = subprocess.run([sys.executable, "-m", "acp_openwrt.acpctl", "identity", "x@"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_grasp_decode_appendix_vector(capsys: pytest.CaptureFixture[str]) -> None:
    # RFC 8990 Appendix A.2: an M_FLOOD of objective "EX1".
    rc, out, _ = run(capsys, "grasp", "decode",
                     "85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710828463455831050282"
                     "704578616d706c6520312076616c75653d186480")
    assert rc == 0
    assert "EX1" in out and json.loads(out)
    rc, out, err = run(capsys, "grasp", "decode", "zz")
    assert rc == 2 and err.startswith("acpctl: not a GRASP message:") and err.count("\n") == 1
    rc, out, err = run(capsys, "grasp", "decode", "83041a003da10e84634558")  # truncated
    assert rc == 2 and err.count("\n") == 1 and out == ""


def test_no_daemon_socket(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, _, err = run(capsys, "--socket", str(tmp_path / "none.sock"), "identity", "--cert",
                     str(tmp_path / "missing.pem"))
    assert rc == 2 and "missing.pem" in err
