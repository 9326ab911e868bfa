"""GRASP codec: RFC 8990 Appendix A vectors byte for byte, every refusal, and a fuzz loop."""
from __future__ import annotations

import random

import cbor2
import pytest

from acp_openwrt.grasp import constants as c
from acp_openwrt.grasp.codec import GraspDecodeError, _decode_careful, decode, encode, validate
from acp_openwrt.grasp.json_view import decode_hex_to_json
from acp_openwrt.grasp.messages import (
    ABSENT,
    Discovery,
    End,
    Flood,
    Invalid,
    Locator,
    Noop,
    Objective,
    Response,
    TaggedObjective,
    Wait,
)

# RFC 8990 Appendix A (digest B.11) and the RFC 8994 §6.4 AN_ACP example (digest A.9, derived).
VECTORS = {
    "A.1 discovery": "84011a00d4d7485020010db8f000baaa28ccdc4c970367818463455831050200",
    "A.1 response": ("85021a00d4d7485020010db8f000baaa28ccdc4c9703678119ea608418675020010db8"
                     "f000baaaf000baaaf000baaa0619c123"),
    "A.2 flood": ("85091a00357b4e5020010db8f000baaa28ccdc4c97036781192710828463455831050282"
                  "704578616d706c6520312076616c75653d186480"),
    "A.3 req_syn": "83041a003da10e8463455832050500",
    "A.3 synch": "83081a003da10e8463455832050582704578616d706c6520322076616c75653d18c8",
    "A.4 req_neg": "83031a000c3ffd8463455833030682634e5a44182f",
    "A.4 end accept": "83061a000c3ffd811865",
    "A.5 req_neg": "83031a00d214628463455833030682634e5a4419019a",
    "A.5 negotiate 1": "83051a00d214628463455833030682634e5a441850",
    "A.5 negotiate 2": "83051a00d214628463455833030582634e5a44190133",
    "A.5 wait": "83071a00d21462198895",
    "A.5 negotiate 3": "83051a00d214628463455833030482634e5a441878",
    "A.5 negotiate 4": "83051a00d214628463455833030382634e5a4418f6",
    "A.5 end decline": "83061a00d2146282186672496e73756666696369656e742066756e6473",
    "RFC 8994 AN_ACP": ("86091a00bc4e4f50fe80000000000000c0011001feef00001a000334508284664"
                        "14e5f414350040165494b45763284186750fe80000000000000c0011001feef0000"
                        "11193a98828466414e5f41435004016444544c5384186750fe80000000000000c00"
                        "11001feef000011194268"),
}
INIT = bytes.fromhex("20010db8f000baaa28ccdc4c97036781")


@pytest.mark.parametrize("name", VECTORS)
def test_vector_round_trips_byte_for_byte(name: str) -> None:
    data = bytes.fromhex(VECTORS[name])
    msg = decode(data)
    assert encode(msg) == data
    # the careful path agrees, and the fast path vouches for every canonical vector
    assert _decode_careful(data) == msg
    assert validate(cbor2.loads(data), True)[1] == len(data)


def test_vector_contents() -> None:
    flood = decode(bytes.fromhex(VECTORS["A.2 flood"]))
    assert flood == Flood(3504974, INIT, 10000, (TaggedObjective(
        Objective("EX1", c.F_DISC | c.F_SYNCH, 2, ["Example 1 value=", 100]), None),))
    resp = decode(bytes.fromhex(VECTORS["A.1 response"]))
    assert isinstance(resp, Response) and resp.ttl == 60000 and not resp.diverted
    assert str(resp.locators[0].ip_address()) == "2001:db8:f000:baaa:f000:baaa:f000:baaa"
    assert resp.locators[0].protocol == c.IPPROTO_TCP and resp.locators[0].port == 49443
    declined = End(13767778, False, "Insufficient funds")
    assert decode(bytes.fromhex(VECTORS["A.5 end decline"])) == declined
    assert decode(bytes.fromhex(VECTORS["A.5 wait"])) == Wait(13767778, 34965)


def test_every_message_and_option_round_trips() -> None:
    v6 = Locator(c.O_IPv6_LOCATOR, INIT, c.IPPROTO_TCP, 7017)
    v4 = Locator(c.O_IPv4_LOCATOR, bytes([192, 0, 2, 1]), c.IPPROTO_UDP, 0)
    fqdn = Locator(c.O_FQDN_LOCATOR, "registrar.example", c.IPPROTO_TCP, 443)
    uri = Locator(c.O_URI_LOCATOR, "https://example.com/x", None, None)
    obj = Objective("example.com:EX1", c.F_NEG | c.F_NEG_DRY, 255,
                    {"k": [1.5, None, True, b"\x00"]})
    msgs = [
        Noop(), Discovery(0, bytes(4), Objective("EX1", c.F_DISC, 1)),
        Response(c.UINT32_MAX, INIT, 0, (v6, v4, fqdn, uri), False, obj),
        Response(1, INIT, 5, (v6,), True), End(2, False), End(3, True),
        Invalid(4), Invalid(5, ["why", b"\x01"]), Wait(6, c.UINT32_MAX),
        Flood(7, INIT, 0, (
            TaggedObjective(Objective("EX2", c.F_SYNCH, 6, cbor2.CBORTag(24, b"\x01")), v6),
            TaggedObjective(Objective("EX3", c.F_SYNCH, 1), None))),
    ]
    for msg in msgs:
        data = encode(msg)
        assert decode(data) == msg, msg
        assert encode(decode(data)) == data
    assert decode(encode(Discovery(0, bytes(4), Objective("EX1", 1, 1)))).objective.value is ABSENT


def _bad(obj: object) -> bytes:
    return cbor2.dumps(obj)


OBJ = ["EX1", 5, 2, 0]
LOC = [103, INIT, 6, 80]
REFUSALS = {
    "not an array": (_bad({"a": 1}), "not a CBOR array"),
    "empty array": (_bad([]), "empty array"),
    "unknown type": (_bad([42, 1, INIT]), "unknown message type 42"),
    "type is text": (_bad(["9", 1]), "message type"),
    "type is bool": (_bad([True, 1]), "message type"),
    "noop with fields": (_bad([0, 1]), "M_NOOP"),
    "missing session": (_bad([9]), "missing session id"),
    "negative session": (_bad([4, -1, OBJ]), "session id"),
    "session too big": (_bad([4, 2**32, OBJ]), "session id"),
    "session is float": (_bad([4, 1.0, OBJ]), "session id"),
    "session is bool": (_bad([4, True, OBJ]), "session id"),
    "session is bignum tag": (bytes.fromhex("83 04 c2 41 05") + _bad(OBJ), "session id"),
    "initiator 15 bytes": (_bad([1, 1, bytes(15), OBJ]), "initiator"),
    "initiator text": (_bad([1, 1, "fe80::1", OBJ]), "initiator"),
    "discovery extra": (_bad([1, 1, INIT, OBJ, OBJ]), "M_DISCOVERY has 5"),
    "ttl negative": (_bad([9, 1, INIT, -5, [OBJ, []]]), "ttl"),
    "ttl too big": (_bad([9, 1, INIT, 2**32, [OBJ, []]]), "ttl"),
    "flood no objective": (_bad([9, 1, INIT, 5]), "at least one objective"),
    "flood bad pair": (_bad([9, 1, INIT, 5, [OBJ]]), "pair"),
    "flags too big": (_bad([4, 1, ["EX1", 16, 2]]), "flags"),
    "flags bool": (_bad([4, 1, ["EX1", True, 2]]), "flags"),
    "loop count 256": (_bad([4, 1, ["EX1", 4, 256]]), "loop count"),
    "loop count negative": (_bad([4, 1, ["EX1", 4, -1]]), "loop count"),
    "objective name empty": (_bad([4, 1, ["", 4, 1]]), "objective name"),
    "objective name bytes": (_bad([4, 1, [b"EX1", 4, 1]]), "objective name"),
    "objective too long": (_bad([4, 1, ["EX1", 4, 1, 0, 0]]), "3 or 4"),
    "locator short address": (_bad([9, 1, INIT, 5, [OBJ, [103, bytes(4), 6, 80]]]), "16 bytes"),
    "locator v4 long": (_bad([9, 1, INIT, 5, [OBJ, [104, bytes(16), 6, 80]]]), "4 bytes"),
    "locator protocol": (_bad([9, 1, INIT, 5, [OBJ, [103, INIT, 41, 80]]]), "protocol"),
    "locator port": (_bad([9, 1, INIT, 5, [OBJ, [103, INIT, 6, 65536]]]), "port"),
    # RFC 8990 §2.8.2: a pair whose locator type is unknown is skipped; here none is left
    "locator unknown": (_bad([9, 1, INIT, 5, [OBJ, [107, INIT, 6, 80]]]), "no objective besides"),
    "fqdn locator null proto": (_bad([9, 1, INIT, 5, [OBJ, [105, "x", None, None]]]), "protocol"),
    "response divert empty": (_bad([2, 1, INIT, 5, [100]]), "O_DIVERT without"),
    "response divert and more": (_bad([2, 1, INIT, 5, [100, LOC], LOC]), "only option"),
    "response no locator": (_bad([2, 1, INIT, 5, OBJ]), "without a locator"),
    "end no option": (_bad([6, 1, []]), "M_END option"),
    "end accept fields": (_bad([6, 1, [101, "x"]]), "O_ACCEPT"),
    "end reason bytes": (_bad([6, 1, [102, b"x"]]), "reason"),
    "end other option": (_bad([6, 1, [100]]), "O_ACCEPT or O_DECLINE"),
    "wait float": (_bad([7, 1, 1.5]), "waiting time"),
    "invalid extra": (_bad([99, 1, 2, 3]), "M_INVALID has 4"),
    "trailing bytes": (bytes.fromhex(VECTORS["A.5 wait"]) + b"\x00", "1 trailing"),
    "truncated": (bytes.fromhex(VECTORS["A.2 flood"])[:-3], "truncated"),
    "empty input": (b"", "empty message"),
    "bad utf-8": (bytes.fromhex("8304 01 83 62 fffe 04 01"), "UTF-8"),
    "tag around message": (b"\xd9\xd9\xf7" + bytes.fromhex(VECTORS["A.5 wait"]),
                           "not a CBOR array"),
    "tag around objective": (bytes.fromhex("8304 01 c1") + _bad(OBJ), "objective is not an array"),
    "reserved ai": (b"\x1c", "reserved"),
    "stray break": (b"\x82\x00\xff", "break"),
    "nesting bomb": (b"\x81" * 1000 + b"\x00", "nesting too deep"),
    "map bomb": (b"\xa1\x00" * 600 + b"\x00", "nesting too deep"),
    "tag bomb": (b"\xc6" * 1000 + b"\x00", "nesting too deep"),
    "huge array length": (b"\x9b" + b"\xff" * 8, "truncated"),
    "huge byte string": (b"\x5b\x00\x00\x00\xff\xff\xff\xff\xff", "truncated"),
    "duplicate map key": (bytes.fromhex("8304 01 84 63455831 04 01 a2 0000 0001"), "duplicate"),
    "unhashable map key": (bytes.fromhex("8304 01 84 63455831 04 01 a1 80 00"), "map key"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_refusals_give_one_typed_error_with_reason(name: str) -> None:
    data, reason = REFUSALS[name]
    with pytest.raises(GraspDecodeError) as info:
        decode(data)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)


def test_size_limits() -> None:
    big = encode(Invalid(1, b"x" * 3000))
    with pytest.raises(GraspDecodeError, match="exceeds the limit of 2048"):
        decode(big)
    assert decode(big, max_size=c.DEFAULT_TCP_MAX_SIZE) == Invalid(1, b"x" * 3000)


def test_non_canonical_input_is_accepted_through_the_careful_path() -> None:
    # session id 5 in a 4-byte head, and an indefinite-length objective array: valid CBOR
    data = bytes.fromhex("83 04 1a00000005 9f 63455832 05 05 00 ff")
    msg = decode(data)
    assert msg.session_id == 5 and msg.objective == Objective("EX2", 5, 5, 0)
    assert encode(msg) == bytes.fromhex("83 04 05 84 63455832 05 05 00")


def test_tags_and_floats_inside_values_are_kept_raw() -> None:
    # a datetime tag (1) and a bignum tag (2) inside a value stay tags, so relays re-encode them
    data = bytes.fromhex("83 08 01 84 63455832 04 01 82 c1 00 c2 41 05")
    msg = decode(data)
    assert msg.objective.value == [cbor2.CBORTag(1, 0), cbor2.CBORTag(2, b"\x05")]
    assert encode(msg) == data
    assert decode(encode(Invalid(1, 1.5))).content == 1.5


def _mutations(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    op = rng.randrange(5)
    if op == 0 and data:
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == 1:
        data = data[:rng.randrange(len(data) + 1)]
    elif op == 2:
        data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
    elif op == 3 and data:
        del data[rng.randrange(len(data))]
    else:
        data = bytearray(rng.randbytes(rng.randrange(1, 64)))
    return bytes(data)


def test_fuzz_only_typed_errors_escape() -> None:
    rng = random.Random(8990)
    seeds = [bytes.fromhex(h) for h in VECTORS.values()] + [data for data, _ in REFUSALS.values()]
    accepted = refused = 0
    for _ in range(30000):
        data = _mutations(rng, rng.choice(seeds))
        for _ in range(rng.randrange(3)):
            data = _mutations(rng, data)
        try:
            msg = decode(data)
        except GraspDecodeError as exc:
            assert str(exc) and "\n" not in str(exc)
            refused += 1
        else:
            accepted += 1
            # whatever is accepted re-encodes and decodes to the same message
            assert decode(encode(msg), max_size=1 << 16) == msg
    assert accepted > 100 and refused > 10000


def test_hex_to_json() -> None:
    out = decode_hex_to_json("h'" + VECTORS["A.1 response"] + "'")
    assert out["type"] == "M_RESPONSE"
    assert out["initiator"] == "2001:db8:f000:baaa:28cc:dc4c:9703:6781"
    assert out["locators"] == [{"type": "O_IPv6_LOCATOR",
                                "address": "2001:db8:f000:baaa:f000:baaa:f000:baaa",
                                "protocol": "tcp", "port": 49443}]
    flood = decode_hex_to_json(VECTORS["A.2 flood"])
    assert flood["objectives"][0]["objective"] == {
        "name": "EX1", "flags": ["F_DISC", "F_SYNCH"], "loop_count": 2,
        "value": ["Example 1 value=", 100]}
    assert decode_hex_to_json(encode(Invalid(1, b"\xab")).hex())["content"] == {"hex": "ab"}
    for bad, reason in (("xyz", "not hexadecimal"), ("", "no hex"), ("8301", "truncated")):
        with pytest.raises(GraspDecodeError, match=reason):
            decode_hex_to_json(bad)


def test_stream_framer_splits_back_to_back_messages() -> None:
    from acp_openwrt.grasp.stream import StreamFramer

    framer = StreamFramer(max_size=100)
    stream = b"".join(bytes.fromhex(VECTORS[k])
                      for k in ("A.5 req_neg", "A.5 wait", "A.5 end decline"))
    got: list[bytes] = []
    for i in range(0, len(stream), 7):  # arrives in 7-byte pieces
        got.extend(framer.feed(stream[i:i + 7]))
    assert [decode(m) for m in got] == [decode(bytes.fromhex(VECTORS[k]))
                                        for k in ("A.5 req_neg", "A.5 wait", "A.5 end decline")]
    assert framer.pending == 0
    with pytest.raises(GraspDecodeError, match="limit"):
        StreamFramer(max_size=100).feed(encode(Invalid(1, b"x" * 200))[:150])
    with pytest.raises(GraspDecodeError, match="reserved"):
        StreamFramer().feed(b"\x1c")
