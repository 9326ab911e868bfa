"""`acpctl brski voucher FILE`: offline voucher inspection; `acpctl brski` asks the node."""
from __future__ import annotations

import argparse
import base64
import json

import pytest

from acp_openwrt.brski import cms
from acp_openwrt.brski.tls import chain_problem
from acp_openwrt.commands import CommandError, brski
from acp_openwrt.lab.pki import TestCA


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--socket")
    brski.register(p.add_subparsers(dest="command"))
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


def test_voucher_file_is_verified_against_the_anchor(tmp_path, capsys) -> None:
    ca = TestCA.create(tmp_path)
    masa = ca.issue_node("masa")
    other = TestCA.create(tmp_path / "other")
    data = cms.sign(b'{"ietf-voucher:voucher": {"serial-number": "X"}}', masa.certificate,
                    masa.private_key, chain=[ca.certificate])
    (tmp_path / "v.der").write_bytes(data)
    (tmp_path / "v.b64").write_bytes(base64.encodebytes(data))
    assert run(["brski", "voucher", str(tmp_path / "v.der"), "--anchor", str(ca.cert_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["signer_trusted"] is True
    assert shown["content"]["ietf-voucher:voucher"]["serial-number"] == "X"
    run(["brski", "voucher", str(tmp_path / "v.b64"), "--anchor", str(other.cert_path)])
    shown = json.loads(capsys.readouterr().out)
    assert shown["signer_trusted"] is False and shown["trust_problem"]


def test_garbage_file_is_one_line_error(tmp_path) -> None:
    (tmp_path / "junk").write_bytes(b"\x30\x03abc")
    with pytest.raises(CommandError, match="junk"):
        run(["brski", "voucher", str(tmp_path / "junk")])
    with pytest.raises(CommandError, match="missing"):
        run(["brski", "voucher", str(tmp_path / "missing")])


def test_status_without_a_node_is_a_command_error(tmp_path) -> None:
    with pytest.raises(CommandError):
        run(["--socket", str(tmp_path / "none.sock"), "brski", "status"])


def test_end_entity_cannot_act_as_issuer(tmp_path) -> None:
    ca = TestCA.create(tmp_path)
    node = ca.issue_node("a")
    # a certificate "issued" by an end-entity (not a CA) is refused by the pinning check
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from acp_openwrt.lab.pki import generate_key
    key = generate_key()
    now = dt.datetime.now(dt.UTC)
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([]))
            .issuer_name(node.certificate.subject).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1)).sign(node.private_key, hashes.SHA256()))
    assert "not a CA" in chain_problem(leaf, ca.certificate, [node.certificate])
    assert chain_problem(node.certificate, ca.certificate) is None
