"""The acpd <-> join proxy handover protocol: messages, checks, descriptors over SCM_RIGHTS."""
from __future__ import annotations

import asyncio
import os
import socket

import pytest

from acp_openwrt.brski.proxy import handover as ho

MESSAGES = [
    ho.Listen("eth0", "fe80::1", 4443),
    ho.Unlisten("eth0"),
    ho.Registrar("fd00::1", 8443, 180000),
    ho.StatusRequest(7),
    ho.Hello(1234, 65534, 65534),
    ho.Listening("eth0", "fe80::1", 4443),
    ho.ListenFailed("eth0", "bad descriptor"),
    ho.RegistrarState(True, "fd00::1", 8443),
    ho.RegistrarState(False),
    ho.StatusReply(7, {"connections": [], "totals": {"accepted": 3}}),
]


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: m.op)
def test_every_message_round_trips(msg: ho.Message) -> None:
    fds = 1 if msg.op == "listen" else 0
    assert ho.decode(ho.encode(msg), fds) == msg


def test_address_is_normalised() -> None:
    msg = ho.decode(b'{"op":"registrar","address":"FD00:0::1","port":1,"ttl_ms":5}')
    assert msg == ho.Registrar("fd00::1", 1, 5)


@pytest.mark.parametrize("data, fds, error", [
    (b"not json", 0, "not JSON"),
    (b"[1]", 0, "object"),
    (b'{"op":"reboot"}', 0, "unknown op"),
    (b'{"op":"unlisten"}', 0, "missing ifname"),
    (b'{"op":"unlisten","ifname":"eth0","x":1}', 0, "unexpected field"),
    (b'{"op":"unlisten","ifname":"a/b"}', 0, "interface name"),
    (b'{"op":"unlisten","ifname":"abcdefghijklmnop"}', 0, "interface name"),
    (b'{"op":"listen","ifname":"eth0","address":"fe80::1","port":1}', 0, "0 descriptors"),
    (b'{"op":"unlisten","ifname":"eth0"}', 1, "1 descriptors"),
    (b'{"op":"registrar","address":"10.0.0.1","port":1,"ttl_ms":5}', 0, "not an IPv6"),
    (b'{"op":"registrar","address":"fd00::1","port":70000,"ttl_ms":5}', 0, "port"),
    (b'{"op":"registrar","address":"fd00::1","port":true,"ttl_ms":5}', 0, "port"),
    (b'{"op":"registrar_state","known":"yes"}', 0, "known"),
])
def test_bad_messages_are_refused_with_one_line(data: bytes, fds: int, error: str) -> None:
    with pytest.raises(ho.HandoverError, match=error) as info:
        ho.decode(data, fds)
    assert "\n" not in str(info.value)


def test_listening_socket_crosses_the_socketpair_and_still_accepts(pair) -> None:
    a, b = pair
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as listener:
        listener.bind(("::1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        ho.send_message(a, ho.Listen("eth0", "::1", port), (listener.fileno(),))
    # The sender's copy is closed now; the receiver's descriptor alone keeps it listening.
    received = ho.recv_message(b)
    assert received is not None
    msg, fds = received
    assert msg == ho.Listen("eth0", "::1", port) and len(fds) == 1
    with socket.socket(fileno=fds[0]) as got, socket.create_connection(("::1", port), 2) as client:
        conn, _ = got.accept()
        with conn:
            client.sendall(b"hi")
            assert conn.recv(2) == b"hi"


def test_descriptors_of_a_refused_message_are_closed(pair) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        socket.send_fds(a, [b'{"op":"unlisten","ifname":"eth0"}'], [r])
        with pytest.raises(ho.HandoverError, match="descriptors"):
            ho.recv_message(b)
        # Our r is still open; the received duplicate was closed, so only r and w remain.
        # Closing r must leave the write end with no reader at all.
        os.close(r)
        r = -1
        with pytest.raises(BrokenPipeError):
            os.write(w, b"x")
    finally:
        for fd in (r, w):
            if fd >= 0:
                os.close(fd)


def test_end_of_stream_is_none(pair) -> None:
    a, b = pair
    a.close()
    assert ho.recv_message(b) is None


def test_oversized_message_is_refused() -> None:
    with pytest.raises(ho.HandoverError, match="exceeds"):
        ho.encode(ho.StatusReply(1, {"x": "y" * ho.MAX_MESSAGE}))


def test_async_channel_in_order(pair) -> None:
    a, b = pair

    async def scenario() -> None:
        left, right = ho.HandoverChannel(a), ho.HandoverChannel(b)
        for msg in MESSAGES[1:4]:
            await left.send(msg)
        got = [await right.receive() for _ in range(3)]
        assert [m for m, _ in got] == MESSAGES[1:4]
        left.close()
        assert await right.receive() is None

    asyncio.run(scenario())
