"""The registrar as the operator's sub-CA: every start check, and LDevIDs that verify to the
operator's root through the chain (no root)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from acp_openwrt.brski.pledge.core import generate_key
from acp_openwrt.brski.registrar.backup import restore_backup, write_backup
from acp_openwrt.brski.registrar.bootstrap import (
    RegistrarSetupError,
    bootstrap_registrar,
    open_registrar_files,
)
from acp_openwrt.brski.registrar.domain_ca import DomainCA, DomainCAError
from acp_openwrt.channels.peer_check import check_peer
from acp_openwrt.config import AcpConfig
from acp_openwrt.identity.certificate import load_certificate, load_certificates
from acp_openwrt.identity.membership import check_domain_membership

pytestmark = pytest.mark.unit
DOMAIN = "acp.example.com"
NOW = dt.datetime.now(dt.UTC)


def make_ca(name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
            *, ca: bool = True, path_length: int | None = None, cert_sign: bool = True,
            days: int = 365, start: dt.datetime | None = None,
            ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    start = start or NOW - dt.timedelta(hours=1)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None),
                           critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=cert_sign,
                                         crl_sign=cert_sign, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(signer_key, hashes.SHA256()))
    return cert, key


def write(tmp: Path, certs: list[x509.Certificate], key: ec.EllipticCurvePrivateKey,
          ) -> tuple[Path, Path]:
    cert_path, key_path = tmp / "registrar-ca-chain.pem", tmp / "registrar-ca.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture
def pki() -> dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]]:
    root = make_ca("Operator Root CA", path_length=1)
    sub = make_ca("ACP registrar sub-CA", root, path_length=0)
    return {"root": root, "sub": sub}


def test_issued_ldevid_verifies_to_the_operator_root_through_the_chain(pki, tmp_path) -> None:
    (root, _), (sub, sub_key) = pki["root"], pki["sub"]
    ca = DomainCA.load_operator(*write(tmp_path, [sub, root], sub_key), domain=DOMAIN)
    assert ca.root == root and ca.cacerts == (sub, root) and ca.trust_anchors == (root, sub)
    key = generate_key()
    name = "fd89b714f3db00000200000064000000@" + DOMAIN
    leaf = ca.issue(key.public_key(), name)
    assert check_domain_membership(leaf, [sub], [root], DOMAIN).ok  # root alone + the chain
    refused = check_domain_membership(leaf, [], [root], DOMAIN)  # without the intermediate
    assert not refused.ok and "trusted anchor" in refused.reason
    other_root = make_ca("Someone else's root")[0]
    assert not check_domain_membership(leaf, [sub], [other_root], DOMAIN).ok
    # what channels do on a new SA: charon's certificates of the peer, our anchors file
    der = serialization.Encoding.DER
    verdict = check_peer("fd89:b714:f3db:0:200:0:6400:0", [leaf.public_bytes(der)],
                         [sub.public_bytes(der)], [root], DOMAIN)
    assert verdict.ok, verdict.reason


@pytest.mark.parametrize("case, match, file_named", [
    ("wrong key", "not the key", "registrar_ca_key"),
    ("not a CA", "CA:FALSE", "registrar_ca_cert"),
    ("no keyCertSign", "keyCertSign", "registrar_ca_cert"),
    ("root pathlen 0", "pathlen:0", "registrar_ca_cert"),
    ("no root", "not self-signed", "registrar_ca_cert"),
    ("expired", "expired", "registrar_ca_cert"),
    ("not yet valid", "not valid before", "registrar_ca_cert"),
    ("wrong issuer", "not issued by", "registrar_ca_cert"),
])
def test_unusable_operator_ca_is_refused_naming_the_file(pki, tmp_path, case: str, match: str,
                                                         file_named: str) -> None:
    root, (sub, sub_key) = pki["root"], pki["sub"]
    chain, key = [sub, root[0]], sub_key
    if case == "wrong key":
        key = ec.generate_private_key(ec.SECP256R1())
    elif case == "not a CA":
        leaf = make_ca("a server", root, ca=False)
        chain, key = [leaf[0], root[0]], leaf[1]
    elif case == "no keyCertSign":
        bad = make_ca("no signing", root, cert_sign=False)
        chain, key = [bad[0], root[0]], bad[1]
    elif case == "root pathlen 0":
        tight = make_ca("Tight Root", path_length=0)
        below = make_ca("sub", tight, path_length=0)
        chain, key = [below[0], tight[0]], below[1]
    elif case == "no root":
        chain = [sub]
    elif case == "expired":
        old = make_ca("old sub", root, start=NOW - dt.timedelta(days=30), days=10)
        chain, key = [old[0], root[0]], old[1]
    elif case == "not yet valid":
        early = make_ca("early sub", root, start=NOW + dt.timedelta(days=1))
        chain, key = [early[0], root[0]], early[1]
    elif case == "wrong issuer":
        chain = [sub, make_ca("Another Root")[0]]
    cert_path, key_path = write(tmp_path, chain, key)
    with pytest.raises(DomainCAError, match=match) as exc:
        DomainCA.load_operator(cert_path, key_path, domain=DOMAIN)
    text = str(exc.value)
    assert "\n" not in text and file_named in text
    assert str(key_path if file_named == "registrar_ca_key" else cert_path) in text


def test_unreadable_operator_files_are_named(pki, tmp_path) -> None:
    cert_path, key_path = write(tmp_path, [pki["sub"][0], pki["root"][0]], pki["sub"][1])
    with pytest.raises(DomainCAError, match=f"registrar_ca_cert {tmp_path / 'nope'}"):
        DomainCA.load_operator(tmp_path / "nope", key_path, domain=DOMAIN)
    key_path.write_text("garbage")
    with pytest.raises(DomainCAError, match=f"registrar_ca_key {key_path}"):
        DomainCA.load_operator(cert_path, key_path, domain=DOMAIN)


def test_a_root_ca_given_by_the_operator_is_its_own_anchor(pki, tmp_path) -> None:
    root, key = pki["root"]
    ca = DomainCA.load_operator(*write(tmp_path, [root], key), domain=DOMAIN)
    assert ca.chain == () and ca.trust_anchors == (root,)


def operator_config(tmp: Path, pki) -> AcpConfig:
    cert_path, key_path = write(tmp, [pki["sub"][0], pki["root"][0]], pki["sub"][1])
    node = tmp / "node"
    return AcpConfig(registrar=True, registrar_domain=DOMAIN, registrar_dir=tmp / "registrar",
                     registrar_ca_cert=cert_path, registrar_ca_key=key_path,
                     ldevid_cert=node / "ldevid.crt", ldevid_key=node / "ldevid.key",
                     trust_anchors=node / "ta.pem")


def test_registrar_node_bootstraps_under_the_operator_root(pki, tmp_path) -> None:
    config = operator_config(tmp_path, pki)
    assert bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key,
                               config.trust_anchors) is True
    root, sub = pki["root"][0], pki["sub"][0]
    assert load_certificates(config.trust_anchors) == [root, sub]
    own = load_certificate(config.ldevid_cert)
    assert check_domain_membership(own, [sub], [root], DOMAIN).ok
    assert not (config.registrar_dir / "domain-ca.key").exists()  # no own CA made
    assert bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key,
                               config.trust_anchors) is False


def test_registrar_node_refuses_an_anchors_file_without_the_root(pki, tmp_path) -> None:
    config = operator_config(tmp_path, pki)
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    config.trust_anchors.write_bytes(pki["sub"][0].public_bytes(serialization.Encoding.PEM))
    with pytest.raises(RegistrarSetupError, match="Operator Root CA"):
        bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)


def test_sub_ca_backup_restores_without_the_operator_options(pki, tmp_path) -> None:
    config = operator_config(tmp_path, pki)
    bootstrap_registrar(config, config.ldevid_cert, config.ldevid_key, config.trust_anchors)
    write_backup(config.registrar_dir, tmp_path / "b", ca_cert=config.registrar_ca_cert,
                 ca_key=config.registrar_ca_key)
    restore_backup(tmp_path / "b", tmp_path / "new", domain=DOMAIN)
    files = open_registrar_files(tmp_path / "new", DOMAIN)  # domain-ca.crt holds the chain
    try:
        assert files.ca.trust_anchors == (pki["root"][0], pki["sub"][0])
    finally:
        files.close()


def test_pledge_keeps_the_root_and_the_cas_below_it_from_cacerts(pki) -> None:
    """What a pledge stores from an operator sub-CA registrar's /cacerts (RFC 7030 §4.1.3)."""
    import base64

    from acp_openwrt.brski import cms
    from acp_openwrt.brski.http import Response
    from acp_openwrt.brski.pledge.core import PledgeAttempt
    (root, _), (sub, _) = pki["root"], pki["sub"]
    stray = make_ca("a CA of another root", make_ca("Another Root"))[0]
    attempt = PledgeAttempt(identity=None)  # type: ignore[arg-type]  # unused by this step
    attempt.pinned, attempt.registrar_cert = sub, sub
    body = base64.b64encode(cms.certs_only([sub, stray, root]))
    attempt._on_cacerts(Response(200, body, {"content-transfer-encoding": "base64"}), NOW)
    assert attempt.anchors == (root, sub)  # the stray CA chains to no root given: dropped
    lone = PledgeAttempt(identity=None)  # type: ignore[arg-type]
    lone.pinned, lone.registrar_cert = sub, sub
    lone._on_cacerts(Response(200, base64.b64encode(cms.certs_only([stray])), {}), NOW)
    assert lone.anchors == (sub,)  # no root at all: the pinned certificate alone, as before


def test_peer_chain_shows_the_chain_a_sub_ca_server_sends(pki, tmp_path) -> None:
    """A pledge sees the registrar's TLS chain (also before Python 3.13), so a voucher pinning
    the operator's root verifies the registrar through its sub-CA."""
    import asyncio
    import ssl

    from acp_openwrt.brski.tls import peer_chain
    (root, _), (sub, sub_key) = pki["root"], pki["sub"]
    cert_path, key_path = write(tmp_path, [sub, root], sub_key)

    async def main() -> list[x509.Certificate]:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert_path, key_path)
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0,
                                            ssl=server_ctx)
        client_ctx = ssl.create_default_context()
        client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE
        _reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.sockets[0].getsockname()[1], ssl=client_ctx)
        try:
            return peer_chain(writer)
        finally:
            writer.close()
            server.close()
    assert asyncio.run(main()) == [sub, root]
