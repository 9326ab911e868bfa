"""RPL codec: digest E.9 bodies, round trips, every validation error, and a fuzz loop."""
from __future__ import annotations

import ipaddress
import random

import pytest

from acp_openwrt.rpl import RplDecodeError
from acp_openwrt.rpl import constants as c
from acp_openwrt.rpl.messages import (
    Dao,
    DaoAck,
    Dio,
    Dis,
    decode_message,
    decode_packet,
    encode_body,
    encode_packet,
)
from acp_openwrt.rpl.options import (
    DodagConfiguration,
    PadN,
    PrefixInformation,
    RplTarget,
    SolicitedInformation,
    TransitInformation,
)

ROOT = ipaddress.IPv6Address("fd89:b714:f3db:0:200:0:6400:0")
TARGET = ipaddress.IPv6Network("fd89:b714:f3db:0:200:0:6400:0/127")

# Digest E.9 (bodies after the ICMPv6 header).
E9_DIO = "00f0010093f00000fd89b714f3db00000200000064000000040e0014030a00000100000000ffffff"
E9_DAO = "008000f00512007ffd89b714f3db0000020000006400000006040000f0ff"
E9_NO_PATH = "008000f10512007ffd89b714f3db0000020000006400000006040000f100"
E9_DAO_ACK = "0000f000"
E9_DIS = "0000"
E9 = [(c.CODE_DIO, E9_DIO), (c.CODE_DAO, E9_DAO), (c.CODE_DAO, E9_NO_PATH),
      (c.CODE_DAO_ACK, E9_DAO_ACK), (c.CODE_DIS, E9_DIS)]


def test_e9_dio():
    dio = decode_message(c.CODE_DIO, bytes.fromhex(E9_DIO))
    assert dio == Dio(0, 240, 256, ROOT, grounded=True, mop=2, preference=0b011, dtsn=240,
                      options=(DodagConfiguration(20, 3, 10, 0, 256, 0, 0xFF, 0xFFFF, 0),))
    assert dio.configuration.imin == 0.008
    assert dio.configuration.lifetime_seconds(0xFF) is None


def test_e9_dao_and_no_path():
    dao = decode_message(c.CODE_DAO, bytes.fromhex(E9_DAO))
    assert dao == Dao(0, 240, True, None, (RplTarget(TARGET), TransitInformation(240, 0xFF)))
    assert dao.groups() == [((RplTarget(TARGET),), (TransitInformation(240, 0xFF),))]
    no_path = decode_message(c.CODE_DAO, bytes.fromhex(E9_NO_PATH))
    assert no_path.sequence == 241 and no_path.groups()[0][1][0].path_lifetime == 0


@pytest.mark.parametrize("code,body", E9)
def test_e9_bodies_encode_exactly(code, body):
    message = decode_message(code, bytes.fromhex(body))
    assert message.code == code
    assert encode_body(message).hex() == body
    assert encode_packet(message) == bytes([155, code, 0, 0]) + bytes.fromhex(body)
    assert decode_packet(encode_packet(message)) == message


def test_e9_dao_ack_and_dis():
    assert decode_message(3, bytes.fromhex(E9_DAO_ACK)) == DaoAck(0, 240, 0)
    assert decode_message(0, bytes.fromhex(E9_DIS)) == Dis()


ROUND_TRIPS = [
    Dis((SolicitedInformation(0, ROOT, 241),)),
    Dis((SolicitedInformation(instance_id=0),)),
    Dio(0, 5, 1024, ROOT, False, 2, 1, 7, (DodagConfiguration(), PrefixInformation(
        ipaddress.IPv6Network("fd89:b714:f3db::/64"), True, True, False, 3600, 1800))),
    Dao(0x81, 9, False, ROOT, (RplTarget(ipaddress.IPv6Network("fd00:1::/64")),
                               RplTarget(ipaddress.IPv6Network("fd00:2::100/120")),
                               TransitInformation(3, 0, 1, True),
                               RplTarget(ipaddress.IPv6Network("fd00:3::/112")),
                               TransitInformation(4, 10, 0, False,
                                                  ipaddress.IPv6Address("fe80::1")))),
    DaoAck(0x81, 9, 200, ROOT),
]


@pytest.mark.parametrize("message", ROUND_TRIPS, ids=lambda m: type(m).__name__)
def test_round_trip(message):
    assert decode_message(message.code, encode_body(message)) == message


def test_target_encodings():
    for plen, octets in ((127, 16), (120, 15), (112, 14), (64, 8), (0, 0)):
        prefix = ipaddress.IPv6Network((int(ROOT) >> (128 - plen) << (128 - plen) if plen else 0,
                                        plen))
        body = encode_body(Dao(0, 1, options=(RplTarget(prefix), TransitInformation(1, 1))))
        assert body[5] == 2 + octets
        assert decode_message(2, body).options[0].prefix == prefix
    # Some stacks send 16 octets whatever the length; bits past the length are ignored.
    body = bytes.fromhex("00000001" "0512" "0078") + bytes.fromhex("fd00" + "11" * 14) \
        + bytes.fromhex("0604000001ff")
    assert decode_message(2, body).options[0].prefix == ipaddress.IPv6Network(
        "fd00:1111:1111:1111:1111:1111:1111:1100/120")


def test_padding_and_unknown_options_are_skipped():
    dio = bytes.fromhex(E9_DIO)
    extra = bytes([0]) + bytes([1, 3, 0, 0, 0]) + bytes([0x42, 2, 9, 9]) + bytes([0x05, 2, 0, 0]) \
        + bytes([0x02, 1, 0])
    decoded = decode_message(1, dio + extra)
    assert decoded.configuration is not None
    assert decoded.skipped == 3  # unknown 0x42, a Target (not allowed in a DIO), a metric container
    dao_ack = decode_message(3, bytes.fromhex(E9_DAO_ACK) + bytes([0x99, 0]))
    assert dao_ack.skipped == 1


ERRORS = [
    ("DIS truncated", 0, ""),
    ("DIO truncated", 1, E9_DIO[:46]),
    ("DAO truncated", 2, "0080"),
    ("DAO-ACK truncated", 3, "0000f0"),
    ("DODAGID", 2, "004000f0" + "fd" * 8),             # D set, DODAGID cut short
    ("DODAGID", 3, "8000f000"),                         # local instance without D
    ("DODAGID", 2, "800000f0"),
    ("truncated at offset", 0, "0000" + "05"),        # type octet without length
    ("runs past the end", 1, E9_DIO[:48] + "040e0014"),
    ("expected 14", 1, E9_DIO[:48] + "040d" + "00" * 13),
    ("expected 30", 1, E9_DIO[:48] + "081d" + "00" * 29),
    ("expected 19", 0, "0000" + "0712" + "00" * 18),
    ("expected 4 or 20", 2, "000000f0" + "05020000" + "060500000000" + "00"),
    ("PadN length", 0, "0000" + "0106" + "00" * 6),
    ("prefix length", 2, "000000f0" + "05120081" + "00" * 16),
    ("octets for prefix length", 2, "000000f0" + "05060040" + "00" * 4),
    ("octets for prefix length", 2, "000000f0" + "05140080" + "00" * 18),
    ("PIO prefix length", 1, E9_DIO[:48] + "081e" + "81" + "00" * 29),
    ("transit information before any target", 2, "000000f0" + "06040000f0ff"),
    ("authentication", 1, E9_DIO[:48] + "040e0814030a00000100000000ffffff"),
    ("MinHopRankIncrease 0", 1, E9_DIO[:48] + "040e0014030a00000000000000ffffff"),
    ("DIO interval", 1, E9_DIO[:48] + "040e0020030a00000100000000ffffff"),
    ("secure RPL", 0x80, E9_DIS), ("secure RPL", 0x81, E9_DIO), ("secure RPL", 0x82, E9_DAO),
    ("secure RPL", 0x83, E9_DAO_ACK), ("secure RPL", 0x8A, "00" * 24),
    ("unknown RPL code", 4, "0000"), ("unknown RPL code", 0x7F, "0000"),
]


@pytest.mark.parametrize("reason,code,body", ERRORS)
def test_validation_errors(reason, code, body):
    with pytest.raises(RplDecodeError, match=reason):
        decode_message(code, bytes.fromhex(body))


@pytest.mark.parametrize("mop", range(8))
def test_every_mop_decodes(mop):
    """Which MOPs a node joins is the engine's choice (MOP 2 and 3), not a decode error."""
    body = E9_DIO[:8] + f"{0x80 | mop << 3 | 0b011:02x}" + E9_DIO[10:]
    assert decode_message(1, bytes.fromhex(body)).mop == mop


def test_packet_level_errors():
    with pytest.raises(RplDecodeError, match="truncated"):
        decode_packet(b"\x9b\x01")
    with pytest.raises(RplDecodeError, match="not RPL"):
        decode_packet(b"\x80\x00\x00\x00")
    with pytest.raises(RplDecodeError, match="not bytes"):
        decode_message(0, "0000")  # type: ignore[arg-type]
    with pytest.raises(RplDecodeError, match="code"):
        decode_message("1", b"\0\0")  # type: ignore[arg-type]


def test_encoder_refuses_out_of_range_fields():
    with pytest.raises(ValueError):
        encode_body(Dio(0, 300, 256, ROOT))
    with pytest.raises(ValueError):
        encode_body(Dio(0, 1, 0x10000, ROOT))
    with pytest.raises(ValueError):
        encode_body(Dis((PadN(9),)))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2:
            del buf[rng.randrange(len(buf) + 1):]
        elif op == 3:
            pos = rng.randrange(len(buf) + 1)
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 20)))
        elif buf:
            pos = rng.randrange(len(buf))
            del buf[pos:pos + rng.randint(1, 8)]
    return bytes(buf)


def test_fuzz_only_rpl_decode_error():
    rng = random.Random(6550)
    seeds = [(code, bytes.fromhex(body)) for code, body in E9] + \
        [(m.code, encode_body(m)) for m in ROUND_TRIPS]
    decoded = rejected = 0
    for i in range(30000):
        if i % 3 == 0:
            code = rng.choice((0, 1, 2, 3, 0x80, 4, 0xFF))
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        else:
            code, data = rng.choice(seeds)
            data = _mutate(rng, data)
            if rng.random() < 0.05:
                code = rng.randrange(256)
        try:
            message = decode_message(code, data)
        except RplDecodeError:
            rejected += 1
            continue
        decoded += 1
        # Whatever is accepted re-encodes, and the encoding decodes to the same message.
        assert decode_message(message.code, encode_body(message)) == message
    assert decoded > 3000 and rejected > 3000
