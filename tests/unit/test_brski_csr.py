"""EST CSR attributes with the acp-node-name, and the pledge's CSR."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from acp_openwrt.brski import csr

NAME = "fd89b714f3db00000200000064000000+area51.research@acp.example.com"
# ACP-DIGEST D.8 (derived): extensionRequest { subjectAltName critical { otherName } }.
DIGEST_VECTOR = bytes.fromhex(
    "306f306d06092a864886f70d01090e3160305e305c0603551d110101ff04523050a04e06082b06010505"
    "07080aa042164066643839623731346633646230303030303230303030303036343030303030302b6172"
    "656135312e7265736561726368406163702e6578616d706c652e636f6d")
# RFC 9908 examples repository (realistic-acp.csrattr), legacy "rfc8994+" name inside.
RFC9908_VECTOR = bytes.fromhex(
    "3068306606092a864886f70d01090e3159305730550603551d110101ff044b3049a04706082b06010505"
    "07080aa03b1639726663383939342b66643733396663323363333434303131323233333434353530303030"
    "303030302b406163702e6578616d706c652e636f6d")


def test_encoding_matches_the_digest_vector() -> None:
    assert csr.encode_csr_attrs(NAME) == DIGEST_VECTOR


def test_decoding_both_vectors() -> None:
    assert csr.decode_csr_attrs(DIGEST_VECTOR) == NAME
    assert csr.decode_csr_attrs(RFC9908_VECTOR) == \
        "rfc8994+fd739fc23c3440112233445500000000+@acp.example.com"


def test_empty_attrs_and_unknown_entries_name_nothing() -> None:
    assert csr.decode_csr_attrs(bytes.fromhex("3000")) is None
    # one bare OID entry (challengePassword) that a client must ignore
    assert csr.decode_csr_attrs(bytes.fromhex("300b06092a864886f70d010907")) is None


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30\x05abc", DIGEST_VECTOR[:-3],
                                  DIGEST_VECTOR + b"\x00", b"\x30" + b"\x84" + b"\xff" * 4])
def test_garbage_is_a_csr_error(data: bytes) -> None:
    with pytest.raises(csr.CsrError):
        csr.decode_csr_attrs(data)


def test_invalid_name_is_not_encoded() -> None:
    with pytest.raises(ValueError):
        csr.encode_csr_attrs("not a name")


def test_csr_carries_the_name_and_serial() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    request = csr.build_csr(key, NAME, "SN-7")
    loaded = csr.load_csr(request.public_bytes(serialization.Encoding.DER))
    assert csr.csr_node_name(loaded) == NAME
    assert loaded.subject.get_attributes_for_oid(
        csr.x509.NameOID.SERIAL_NUMBER)[0].value == "SN-7"


def test_csr_with_a_broken_signature_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    der = bytearray(csr.build_csr(key, NAME).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x40
    with pytest.raises(csr.CsrError):
        csr.load_csr(bytes(der))
