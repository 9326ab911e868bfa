"""brski/cms.py on the DER reader and writer (identity/der.py) against the asn1crypto version it
replaced (cms_asn1crypto_oracle.py): the same bytes signed (RSA PKCS#1 v1.5 is deterministic),
each one's output verified by the other, the same verdicts on damaged objects, never more
lenient, and a clean CmsError for every truncation."""
from __future__ import annotations

import datetime as dt
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

import pytest

from acp_openwrt.brski import cms
from acp_openwrt.lab.pki import TestCA

WHEN = dt.datetime(2026, 12, 6, 10, 0, 0, tzinfo=dt.UTC)


def _oracle() -> ModuleType:
    path = Path(__file__).with_name("cms_asn1crypto_oracle.py")
    spec = importlib.util.spec_from_file_location("cms_asn1crypto_oracle", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


OLD = _oracle()


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    base = tmp_path_factory.mktemp("cms")
    out = {}
    for kind in ("ec-p256", "ec-p384", "rsa-2048"):
        ca = TestCA.create(base / kind, key_type=kind)
        sub = ca.issue_intermediate("sub", key_type=kind)
        node = sub.issue_node("n", acp_node_name="fd89b714f3db00000200000064000001+@acp.example."
                              "com", key_type=kind, ip_address="fd89:b714:f3db:0:200:0:6400:1")
        out[kind] = (node.certificate, node.private_key, [sub.certificate], ca.certificate)
    return out


@pytest.mark.parametrize("content_type", [cms.ID_CT_ANIMA_JSON_VOUCHER, cms.ID_DATA])
def test_the_same_bytes_as_asn1crypto(signers: dict, content_type: str) -> None:
    cert, key, chain, _ = signers["rsa-2048"]
    for content in (b"{}", b'{"ietf-voucher:voucher": {}}' * 40):
        mine = cms.sign(content, cert, key, chain=chain, content_type=content_type,
                        signing_time=WHEN)
        theirs = OLD.sign(content, cert, key, chain=chain, content_type=content_type,
                          signing_time=WHEN)
        assert mine == theirs


@pytest.mark.parametrize("kind", ["ec-p256", "ec-p384", "rsa-2048"])
def test_each_verifies_the_others(signers: dict, kind: str) -> None:
    cert, key, chain, _ = signers[kind]
    content = b'{"ietf-voucher-request:voucher": {"nonce": "x"}}'
    for signed, check in ((cms.sign(content, cert, key, chain=chain, signing_time=WHEN),
                           OLD.verify),
                          (OLD.sign(content, cert, key, chain=chain, signing_time=WHEN),
                           cms.verify)):
        got = check(signed)
        assert got.content == content and got.signer == cert
        assert list(got.certificates) == [*sorted([cert, *chain], key=_der)]
        assert got.signing_time == WHEN


def _der(cert: object) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding
    return cert.public_bytes(Encoding.DER)  # type: ignore[attr-defined]


def _verdict(module: ModuleType, data: bytes, candidates: list) -> str:
    """"accepted", or the refusal; the oracle also crashes on some (ValueError, Unsupported-
    Algorithm from a damaged key: a refusal all the same), cms.py must only say CmsError."""
    try:
        module.verify(data, signer_candidates=candidates)
    except module.CmsError as exc:
        return f"refused: {exc}"
    except Exception as exc:
        assert module is OLD, exc
        return f"refused: {type(exc).__name__}: {exc}"
    return "accepted"


def _appendix_c() -> ModuleType:
    path = Path(__file__).with_name("test_brski_appendix_c.py")
    spec = importlib.util.spec_from_file_location("brski_appendix_c_objects", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["VOUCHER", "PLEDGE_REQUEST", "REGISTRAR_REQUEST"])
def test_damaged_objects_same_verdicts_never_more_lenient(name: str) -> None:
    """RFC 8995 Appendix C's objects (another implementation's bytes), each damaged 1500
    times: where asn1crypto refused, cms.py refuses too, except where asn1crypto knew no OID
    it wanted to decode (a certificate's key algorithm, say) or took only IA5String for a dc:
    neither is bad DER."""
    data = getattr(_appendix_c(), name)
    for end in range(0, len(data), 7):
        with pytest.raises(cms.CmsError):
            cms.verify(data[:end])
    rng = random.Random(name)
    for _ in range(1500):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        mine, theirs = (_verdict(m, bytes(damaged), []) for m in (cms, OLD))
        if mine == "accepted" and theirs != "accepted":
            # asn1crypto knew no OID it wanted to decode, or wanted an IA5String where another
            # string type came (a dc: cryptography takes those too)
            assert "KeyError" in theirs or "DNSName - tag should have been 22" in theirs, theirs


def test_damaged_lab_objects_are_refused_cleanly(signers: dict) -> None:
    """cms.py says CmsError or accepts; nothing else escapes (the oracle let cryptography's
    ValueError and UnsupportedAlgorithm through on damaged keys)."""
    cert, key, chain, _ = signers["ec-p256"]
    data = cms.sign(b'{"a": 1}', cert, key, chain=chain, signing_time=WHEN)
    for end in range(len(data)):
        with pytest.raises(cms.CmsError):
            cms.verify(data[:end])
    rng = random.Random(19)
    for _ in range(600):
        damaged = bytearray(data)
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        _verdict(cms, bytes(damaged), [cert])
