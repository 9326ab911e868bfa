"""RFC 8994 §6.2.3 domain membership: every refusal asserts its reason."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from acp_openwrt.identity.certificate import CertificateError, encode_acp_node_name_value
from acp_openwrt.identity.membership import check_domain_membership
from acp_openwrt.lab.pki import TestCA

DOMAIN = "acp.example.com"
NAME = "fd89b714f3db00000200000064000000+area51.research@acp.example.com"
UTC = dt.UTC


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA.create(tmp_path_factory.mktemp("ca"), domain=DOMAIN)


def check(node, anchors, domain: str = DOMAIN, **kwargs):
    return check_domain_membership(node.certificate, node.chain, anchors, domain, **kwargs)


def test_good_certificate(ca: TestCA) -> None:
    node = ca.issue_node("good", acp_node_name=NAME)
    result = check(node, [ca.certificate])
    assert result.ok and bool(result)
    assert result.reason == ("member of ACP domain acp.example.com "
                             "(via otherName, 0 intermediate(s))")
    assert result.node_name is not None and result.node_name.acp_address == NAME[:32]
    assert result.carrier == "otherName"
    assert [c.der for c in result.path] == [c.public_bytes(serialization.Encoding.DER)
                                            for c in (node.certificate, ca.certificate)]


def test_accepts_pem_bytes_and_extra_anchors(ca: TestCA, tmp_path: Path) -> None:
    other = TestCA.create(tmp_path, domain=DOMAIN, common_name="Other CA")
    node = ca.issue_node("bytes", acp_node_name=NAME)
    result = check_domain_membership(node.cert_path.read_bytes(), [],
                                     [other.cert_path.read_bytes(), ca.anchor_path.read_bytes()],
                                     DOMAIN)
    assert result.ok, result.reason


def test_other_ca_with_other_name(ca: TestCA, tmp_path: Path) -> None:
    other = TestCA.create(tmp_path, domain=DOMAIN, common_name="Rogue CA")
    result = check(other.issue_node("rogue", acp_node_name=NAME), [ca.certificate])
    assert not result.ok
    assert result.reason == ("not signed by a trusted anchor: issuer 'CN=Rogue CA' is neither "
                             "a trust anchor nor in the chain")


def test_other_ca_with_same_name(ca: TestCA, tmp_path: Path) -> None:
    impostor = TestCA.create(tmp_path, domain=DOMAIN)  # same subject, different key
    assert impostor.certificate.subject == ca.certificate.subject
    result = check(impostor.issue_node("imp", acp_node_name=NAME), [ca.certificate])
    assert not result.ok
    assert result.reason == ("not signed by a trusted anchor: signature does not verify with the "
                             "key of 'CN=ACP domain CA acp.example.com'")


def test_no_trust_anchors(ca: TestCA) -> None:
    result = check(ca.issue_node("lonely", acp_node_name=NAME), [])
    assert result.reason == "not signed by a trusted anchor (no trust anchors configured)"


def test_other_domain(ca: TestCA) -> None:
    node = ca.issue_node("od", acp_node_name=NAME.replace("acp.example.com", "other.example"))
    result = check(node, [ca.certificate])
    assert not result.ok
    assert result.reason == "acp-domain-name other.example differs from ours acp.example.com"
    assert result.node_name is not None and result.node_name.domain == "other.example"


def test_domain_compared_case_insensitively_and_rsub_ignored(ca: TestCA) -> None:
    node = ca.issue_node("uc", acp_node_name="fd89b714f3db00000200000064000000+Lab@ACP.Example.COM")
    result = check(node, [ca.certificate], domain="acp.EXAMPLE.com")
    assert result.ok, result.reason


def test_expired(ca: TestCA) -> None:
    node = ca.issue_node("old", acp_node_name=NAME,
                         not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
                         not_after=dt.datetime(2021, 1, 1, tzinfo=UTC))
    result = check(node, [ca.certificate])
    assert not result.ok and result.reason == "certificate expired at 2021-01-01T00:00:00Z"


def test_not_yet_valid(ca: TestCA) -> None:
    start = dt.datetime.now(UTC) + dt.timedelta(days=2)
    node = ca.issue_node("young", acp_node_name=NAME, not_before=start.replace(microsecond=0))
    result = check(node, [ca.certificate])
    assert not result.ok
    assert result.reason == f"certificate not valid before {start:%Y-%m-%dT%H:%M:%S}Z"


def test_injected_clock(ca: TestCA) -> None:
    node = ca.issue_node("clock", acp_node_name=NAME,
                         not_before=dt.datetime(2030, 1, 1, tzinfo=UTC),
                         not_after=dt.datetime(2030, 6, 1, tzinfo=UTC))
    assert not check(node, [ca.certificate]).ok
    assert check(node, [ca.certificate], now=dt.datetime(2030, 3, 1)).ok  # naive = UTC
    late = check(node, [ca.certificate], now=dt.datetime(2030, 7, 1, tzinfo=UTC))
    assert late.reason == "certificate expired at 2030-06-01T00:00:00Z"


def test_missing_address_depends_on_purpose(ca: TestCA) -> None:
    node = ca.issue_node("noc", acp_node_name="+noc@acp.example.com")
    channel = check(node, [ca.certificate])
    assert not channel.ok
    assert channel.reason == "acp-node-name has no acp-address (not usable for secure channels)"
    member = check(node, [ca.certificate], for_secure_channel=False)
    assert member.ok, member.reason
    assert member.node_name is not None and member.node_name.acp_address is None


def test_zero_address_accepted_for_channels(ca: TestCA) -> None:
    result = check(ca.issue_node("zero", acp_node_name="0@acp.example.com"), [ca.certificate])
    assert result.ok, result.reason
    assert result.node_name is not None and result.node_name.acp_address == "0"


def test_no_name(ca: TestCA) -> None:
    result = check(ca.issue_node("anon", rfc822_name="ops@acp.example.com"), [ca.certificate])
    assert not result.ok and result.reason == "no acp-node-name in certificate"


def test_malformed_other_name(ca: TestCA) -> None:
    node = ca.issue_node("mal", other_name_value=b"\x0c\x03a@b")
    result = check(node, [ca.certificate])
    assert result.reason == "AcpNodeName otherName value has tag 0x0c, expected IA5String (0x16)"
    node2 = ca.issue_node("mal2",
                          other_name_value=encode_acp_node_name_value("xyz@acp.example.com"))
    assert check(node2, [ca.certificate]).reason.startswith(
        "AcpNodeName otherName is malformed: acp-address 'xyz'")


def test_legacy_rfc822_member(ca: TestCA) -> None:
    node = ca.issue_node("legacy", rfc822_name="rfcSELF+fd739fc23c3440112233445500000000+"
                                               "@acp.example.com")
    result = check(node, [ca.certificate])
    assert result.ok and result.carrier == "rfc822Name"


def test_one_and_two_intermediates(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    one = root.issue_intermediate("one")
    two = one.issue_intermediate("two")
    for issuer, hops in ((one, 1), (two, 2)):
        node = issuer.issue_node(f"n{hops}", acp_node_name=NAME)
        result = check(node, [root.certificate])
        assert result.ok, result.reason
        assert len(result.path) == hops + 2
        assert f"{hops} intermediate(s)" in result.reason
        # order of the supplied chain does not matter; missing intermediates do
        shuffled = check_domain_membership(node.certificate, list(reversed(node.chain)),
                                           [root.certificate], DOMAIN)
        assert shuffled.ok, shuffled.reason
        missing = check_domain_membership(node.certificate, [], [root.certificate], DOMAIN)
        assert missing.reason.startswith("not signed by a trusted anchor: issuer 'CN=ACP inter")


def test_three_intermediates_refused(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    deep = root.issue_intermediate("a").issue_intermediate("b").issue_intermediate("c")
    result = check(deep.issue_node("deep", acp_node_name=NAME), [root.certificate])
    assert result.reason == "not signed by a trusted anchor: more than 2 intermediate CAs needed"
    # an intermediate may itself be configured as a trust anchor (TA migration): then it works
    assert check(deep.issue_node("deep2", acp_node_name=NAME), [deep.chain[-1]]).ok


def test_intermediate_that_is_not_a_ca(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    fake = root.issue_intermediate("fake", ca=False, common_name="Fake")
    result = check(fake.issue_node("n", acp_node_name=NAME), [root.certificate])
    assert result.reason == ("not signed by a trusted anchor: intermediate CA 'CN=Fake' is not "
                             "a CA (basicConstraints cA is false)")


def test_intermediate_without_key_cert_sign(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    sub = root.issue_intermediate("nosign", key_cert_sign=False, common_name="NoSign")
    result = check(sub.issue_node("n", acp_node_name=NAME), [root.certificate])
    assert result.reason == ("not signed by a trusted anchor: intermediate CA 'CN=NoSign' "
                             "keyUsage lacks keyCertSign")


def test_path_length_constraint(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path, path_length=0, common_name="Root0")
    sub = root.issue_intermediate("sub")
    result = check(sub.issue_node("n", acp_node_name=NAME), [root.certificate])
    assert result.reason == ("not signed by a trusted anchor: trust anchor 'CN=Root0' allows 0 "
                             "intermediate(s) below it, path has 1")
    assert check(root.issue_node("direct", acp_node_name=NAME), [root.certificate]).ok


def test_expired_intermediate(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    sub = root.issue_intermediate("stale", common_name="Stale",
                                  not_before=dt.datetime(2020, 1, 1, tzinfo=UTC),
                                  not_after=dt.datetime(2021, 1, 1, tzinfo=UTC))
    result = check(sub.issue_node("n", acp_node_name=NAME), [root.certificate])
    assert result.reason == ("not signed by a trusted anchor: intermediate CA 'CN=Stale' expired "
                             "at 2021-01-01T00:00:00Z")


def test_rsa_1024_refused(ca: TestCA) -> None:
    result = check(ca.issue_node("weak", acp_node_name=NAME, key_type="rsa-1024"), [ca.certificate])
    assert not result.ok
    assert result.reason == "RSA key of 1024 bits is too small (minimum 2048)"


def test_small_ec_and_weak_intermediate_refused(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path)
    node = root.issue_node("p224", acp_node_name=NAME, key_type="ec-p224")
    assert check(node, [root.certificate]).reason.startswith("EC key on secp224r1 (224 bits)")
    weak = root.issue_intermediate("weak", key_type="rsa-1024", common_name="Weak")
    result = check(weak.issue_node("n", acp_node_name=NAME), [root.certificate])
    assert result.reason == ("not signed by a trusted anchor: intermediate CA 'CN=Weak': RSA key "
                             "of 1024 bits is too small (minimum 2048)")


def test_rsa_pkcs1_and_pss_chains(tmp_path: Path) -> None:
    root = TestCA.create(tmp_path / "a", key_type="rsa-2048")
    pss_root = TestCA.create(tmp_path / "b", key_type="rsa-2048", pss=True)
    for issuer in (root, pss_root, pss_root.issue_intermediate("p384", key_type="ec-p384")):
        node = issuer.issue_node("n", acp_node_name=NAME, key_type="rsa-2048")
        result = check(node, [root.certificate, pss_root.certificate])
        assert result.ok, result.reason


def test_garbage_bytes_raise(ca: TestCA) -> None:
    with pytest.raises(CertificateError, match="not a valid DER X.509 certificate"):
        check_domain_membership(b"\x30\x03\x02\x01\x00", [], [ca.certificate], DOMAIN)
    good = ca.issue_node("g", acp_node_name=NAME)
    with pytest.raises(CertificateError, match="not a valid PEM"):
        check_domain_membership(good.certificate, [b"-----BEGIN CERTIFICATE-----\n!!"],
                                [ca.certificate], DOMAIN)
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    assert check_domain_membership(good.certificate, [], [der], DOMAIN).ok
