"""logsafe: network text stays on one log line, cannot fake an escape, and is bounded."""
from __future__ import annotations

import logging

import pytest

from acp_openwrt.logsafe import logsafe


@pytest.mark.parametrize("text, shown", [
    ("SN-0001", "SN-0001"),
    ("fd89b714f3db00000200000064000001+@acp.example.com",
     "fd89b714f3db00000200000064000001+@acp.example.com"),
    ("bad\nacpd: INFO acpd.brski: forged", "bad\\nacpd: INFO acpd.brski: forged"),
    ("a\rb\tc", "a\\rb\\tc"),
    ("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07"),
    ("del\x7f c1\x85", "del\\x7f c1\\x85"),
    ("line\u2028sep \u202egnp.exe", "line\\u2028sep \\u202egnp.exe"),
    ("already \\n escaped", "already \\\\n escaped"),
    ("Grüße, 東京", "Grüße, 東京"),
    ("nul\x00", "nul\\x00"),
    (b"\x00\xffok\n", "\\x00\\xffok\\n"),
    (404, "404"),
])
def test_escapes(text: object, shown: str) -> None:
    assert logsafe(text) == shown


def test_bounded_and_the_cut_is_marked() -> None:
    assert logsafe("x" * 200) == "x" * 200
    assert logsafe("x" * 5000) == "x" * 200 + "...[5000 chars]"
    assert logsafe("\n" * 1000, limit=10) == "\\n" * 10 + "...[1000 chars]"
    assert logsafe(b"y" * 300, limit=4) == "yyyy...[300 bytes]"


def test_no_input_gives_a_second_log_line(caplog: pytest.LogCaptureFixture) -> None:
    hostile = "".join(chr(c) for c in range(0x110000) if not (0xD800 <= c < 0xE000))
    out = logsafe(hostile, limit=len(hostile))
    assert out.isprintable() and len(out.splitlines()) == 1
    with caplog.at_level(logging.INFO):
        logging.getLogger("acpd.test").info("reason %s", logsafe("a\nb\r\nc\x85d\u2029e"))
    assert len(caplog.text.splitlines()) == 1


def test_acpctl_tables_escape_what_peers_sent(capsys: pytest.CaptureFixture[str]) -> None:
    """A refusal reason or a certificate name in a table cell cannot add a line or move the
    cursor on the operator's terminal."""
    from acp_openwrt.commands import print_table
    print_table(("who", "reason"), [("pledge SN\x1b[2J", "a\nfake-row  ok"), (None, 7)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "\x1b" not in "".join(lines)
    assert lines[1].split() == ["pledge", "SN\\x1b[2J", "a\\nfake-row", "ok"]
    assert lines[2].split() == ["-", "7"]
