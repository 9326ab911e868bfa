"""`acpd --check` names an unusable LDevID (expired, not yet valid, a key that is not its own)
with exit status 3, and judges an interrupted identity switch by what acpd's start installs."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from acp_openwrt import acpd
from acp_openwrt.brski import file_switch
from acp_openwrt.brski.store import load_identity, store_identity
from acp_openwrt.lab.pki import NodeCredentials, TestCA

NAME_A = "fd89b714f3db00000200000064000001+@acp.example.com"
NAME_B = "fd89b714f3db00000200000064000002+@acp.example.com"
UTC = dt.UTC


class Crash(BaseException):
    """The process dies here: nothing after it runs, no cleanup handler sees it."""


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA.create(tmp_path / "ca", domain="acp.example.com")


def config_file(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    path = tmp_path / "acp.conf"
    path.write_text("config acp 'main'\n"
                    f"\toption ldevid_cert '{etc / 'ldevid.pem'}'\n"
                    f"\toption ldevid_key '{etc / 'ldevid.key'}'\n"
                    f"\toption trust_anchors '{etc / 'domain-ca.pem'}'\n")
    return path


def install(tmp_path: Path, ca: TestCA, node: NodeCredentials) -> None:
    etc = tmp_path / "etc"
    store_identity(node.certificate, node.private_key, [ca.certificate],  # type: ignore[arg-type]
                   cert_path=etc / "ldevid.pem", key_path=etc / "ldevid.key",
                   trust_anchors_path=etc / "domain-ca.pem")


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    rc = acpd.main(["-c", str(config_file(tmp_path)), "--check"])
    out, err = capsys.readouterr()
    return rc, json.loads(out) if out else {}, err


def test_usable_identity_passes(tmp_path: Path, ca: TestCA,
                                capsys: pytest.CaptureFixture[str]) -> None:
    install(tmp_path, ca, ca.issue_node("a", acp_node_name=NAME_A))
    rc, out, err = check(tmp_path, capsys)
    assert rc == 0 and err == ""
    assert out["identity"]["acp_node_name"] == NAME_A and out["identity_problems"] == []
    assert out["identity_switch_pending"] is False


def test_no_identity_yet_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = check(tmp_path, capsys)
    assert rc == 0 and out["identity"] is None and out["identity_problems"] == []


@pytest.mark.parametrize("when,words", [
    ("expired", "expired"), ("future", "not valid before")])
def test_expired_or_not_yet_valid_fails(tmp_path: Path, ca: TestCA, when: str, words: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    now = dt.datetime.now(UTC)
    start, end = ((now - dt.timedelta(days=100), now - dt.timedelta(days=1)) if when == "expired"
                  else (now + dt.timedelta(days=1), now + dt.timedelta(days=100)))
    install(tmp_path, ca, ca.issue_node("a", acp_node_name=NAME_A, not_before=start,
                                        not_after=end))
    rc, out, err = check(tmp_path, capsys)
    assert rc == acpd.EXIT_IDENTITY == 3
    assert len(out["identity_problems"]) == 1 and words in out["identity_problems"][0]
    assert f"acpd: ldevid_cert {tmp_path / 'etc' / 'ldevid.pem'} {words}" in err


def test_key_of_another_certificate_fails(tmp_path: Path, ca: TestCA,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """What a renewal that renamed the new key before the new certificate left behind."""
    install(tmp_path, ca, ca.issue_node("a", acp_node_name=NAME_A))
    other = ca.issue_node("b", acp_node_name=NAME_A)
    (tmp_path / "etc" / "ldevid.key").write_bytes(other.key_path.read_bytes())
    rc, out, err = check(tmp_path, capsys)
    assert rc == 3 and "is not the key of the LDevID certificate" in err
    (tmp_path / "etc" / "ldevid.key").unlink()
    rc, out, err = check(tmp_path, capsys)
    assert rc == 3 and "ldevid_key" in err and "No such file" in err


def test_interrupted_switch_is_judged_as_start_will_finish_it(
        tmp_path: Path, ca: TestCA, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = ca.issue_node("a", acp_node_name=NAME_A), ca.issue_node("b", acp_node_name=NAME_B)
    install(tmp_path, ca, old)

    def crash(*_args: object) -> None:
        raise Crash()
    with monkeypatch.context() as patch:
        patch.setattr(file_switch, "_finish", crash)  # dies right after the commit point
        with pytest.raises(Crash):
            install(tmp_path, ca, new)
    etc = tmp_path / "etc"
    assert load_identity(etc / "ldevid.pem", etc / "ldevid.key")[0] == old.certificate
    before = sorted(p.name for p in etc.iterdir())
    rc, out, err = check(tmp_path, capsys)
    assert rc == 0 and out["identity_switch_pending"] is True
    assert out["identity"]["acp_node_name"] == NAME_B and "finishes it at start" in err
    assert sorted(p.name for p in etc.iterdir()) == before  # --check wrote nothing
    config, identity = acpd.load(config_file(tmp_path))  # what acpd's start does
    assert identity is not None and identity["acp_node_name"] == NAME_B
    assert load_identity(etc / "ldevid.pem", etc / "ldevid.key")[0] == new.certificate
    assert sorted(p.name for p in etc.iterdir()) == ["domain-ca.pem", "ldevid.key", "ldevid.pem"]


def test_damaged_switch_stops_start_with_one_line(tmp_path: Path, ca: TestCA,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, ca, ca.issue_node("a", acp_node_name=NAME_A))

    def crash(*_args: object) -> None:
        raise Crash()
    with monkeypatch.context() as patch:
        patch.setattr(file_switch, "_finish", crash)
        with pytest.raises(Crash):
            install(tmp_path, ca, ca.issue_node("b", acp_node_name=NAME_B))
    (tmp_path / "etc" / ".ldevid.key.new").write_bytes(b"not the key that was committed")
    with pytest.raises(acpd.StartupError, match="does not hold what the switch recorded"):
        acpd.load(config_file(tmp_path))


def test_unreadable_switch_marker_stops_check_and_start(tmp_path: Path, ca: TestCA,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    install(tmp_path, ca, ca.issue_node("a", acp_node_name=NAME_A))
    (tmp_path / "etc" / ".ldevid.pem.switch").write_bytes(b"{not json")
    rc, _, err = check(tmp_path, capsys)
    assert rc == acpd.EXIT_CONFIG and "switch marker" in err and "unreadable" in err
    with pytest.raises(acpd.StartupError, match="unreadable"):
        acpd.load(config_file(tmp_path))


def test_a_registrar_id_the_allocations_refuse_is_a_configuration_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """acpd's start would refuse it (the addresses issued so far carry the stored Registrar-ID):
    --check says so with exit status 2, naming the file and the fix, and changes nothing."""
    from acp_openwrt.brski.registrar.allocation import Allocator
    registrar_dir = tmp_path / "registrar"
    Allocator(registrar_dir / "allocations.db", domain="acp.example.com",
              registrar_id=0x0A0B0C0D0E0F).close()
    before = (registrar_dir / "allocations.db").read_bytes()
    conf = config_file(tmp_path)

    def with_option(registrar_id: str) -> int:
        conf.write_text(config_file(tmp_path).read_text()
                        + "\toption registrar '1'\n\toption registrar_domain 'acp.example.com'\n"
                        + f"\toption registrar_dir '{registrar_dir}'\n"
                        + f"\toption registrar_id '{registrar_id}'\n")
        return acpd.main(["-c", str(conf), "--check"])

    assert with_option("0a0b0c0d0e10") == acpd.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "holds Registrar-ID 0a0b0c0d0e0f" in err and "0a0b0c0d0e10" in err
    assert str(registrar_dir / "allocations.db") in err
    assert with_option("0a0b0c0d0e0f") != acpd.EXIT_CONFIG   # the stored one: fine
    capsys.readouterr()
    assert (registrar_dir / "allocations.db").read_bytes() == before
