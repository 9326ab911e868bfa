"""The UCI reader: every syntax form libuci takes, its quoting and escapes, and its errors."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from acp_openwrt.config.uci import MAX_FILE_BYTES, ConfigError, UciPackage, parse_uci, read_uci_file


def options(package: UciPackage, index: int = 0) -> dict[str, object]:
    """A section's options as name -> str (option) or list of str (list)."""
    out: dict[str, object] = {}
    for opt in package.sections[index].options:
        texts = [v.text for v in opt.values]
        out[opt.name] = texts if opt.is_list else texts[0]
    return out


def value(text: str) -> object:
    return options(parse_uci(f"config t 's'\n\toption v {text}\n"))["v"]


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_uci(text, "/etc/config/acp")
    return info.value


def test_sections_named_and_unnamed_with_lines() -> None:
    pkg = parse_uci("# head\n\nconfig acp 'main'\n\toption enabled 1\n\nconfig interface\n"
                    "\toption name eth0\n", "f")
    assert [(s.type, s.name, s.line) for s in pkg.sections] == [("acp", "main", 3),
                                                                 ("interface", None, 6)]
    assert options(pkg, 0) == {"enabled": "1"}
    assert options(pkg, 1) == {"name": "eth0"}
    assert pkg.sections[0].get("enabled").line == 4
    assert pkg.sections[0].get("missing") is None


def test_package_keyword_accepted_and_ignored() -> None:
    pkg = parse_uci("package acp\n\nconfig acp main\n\toption a b\n")
    assert pkg.package == "acp"
    assert [(s.type, s.name) for s in pkg.sections] == [("acp", "main")]


def test_one_letter_keywords() -> None:
    pkg = parse_uci("p acp\nc acp main\no a 1\nl b 2\nl b 3\n")
    assert options(pkg) == {"a": "1", "b": ["2", "3"]}


def test_list_appends_and_option_overrides() -> None:
    pkg = parse_uci("config t s\n option a 1\n option a 2\n list l x\n list l y\n"
                    " option c 1\n list c 2\n list d 1\n option d 9\n")
    opts = options(pkg)
    assert opts["a"] == "2"
    assert opts["l"] == ["x", "y"]
    assert opts["c"] == ["1", "2"]  # an earlier option becomes the first list item
    assert opts["d"] == "9"         # an option replaces a whole list
    lines = [v.line for v in pkg.sections[0].get("l").values]
    assert lines == [4, 5]


def test_empty_option_deletes_like_uci_set() -> None:
    assert options(parse_uci("config t s\n option a 1\n option a ''\n option b\n")) == {}


def test_named_section_twice_merges() -> None:
    pkg = parse_uci("config t s\n option a 1\nconfig u\nconfig t s\n option b 2\n")
    assert len(pkg.sections) == 2
    assert options(pkg, 0) == {"a": "1", "b": "2"}


def test_unnamed_sections_stay_separate() -> None:
    pkg = parse_uci("config t\n option a 1\nconfig t ''\n option a 2\n")
    assert [options(pkg, i) for i in (0, 1)] == [{"a": "1"}, {"a": "2"}]
    assert [s.name for s in pkg.sections] == [None, None]


@pytest.mark.parametrize("text, expected", [
    ("plain", "plain"),
    ("'single quoted value'", "single quoted value"),
    ('"double quoted value"', "double quoted value"),
    ("'it'\\''s'", "it's"),                 # how uci export writes a quote
    ("a'b c'\"d\"", "ab cd"),               # adjacent parts form one word
    ("'x\\ny'", "x\\ny"),                   # no escapes inside single quotes
    ('"a\\"b"', 'a"b'),
    ('"back\\\\slash"', "back\\slash"),
    ('"\\n"', "n"),                         # libuci decodes no escape sequences
    ("a\\ b", "a b"),                       # an escaped blank stays in the word
    ("\\#x", "#x"),
    ("'#not a comment'", "#not a comment"),
    ('"; not a separator"', "; not a separator"),
    ("foo#comment", "foo"),
    ("foo # comment", "foo"),
    ("'ünïcødé'", "ünïcødé"),
    ("'tab\there'", "tab\there"),
])
def test_quoting_and_escapes(text: str, expected: str) -> None:
    assert value(text) == expected


def test_multiline_quotes_keep_the_newline_and_count_lines() -> None:
    pkg = parse_uci("config t s\n option a 'one\ntwo'\n option b \"x\ny\"\n option c z\n")
    opts = options(pkg)
    assert opts["a"] == "one\ntwo" and opts["b"] == "x\ny"
    assert pkg.sections[0].get("c").line == 6


def test_backslash_newline_joins_lines() -> None:
    pkg = parse_uci("config t s\n option a abc\\\ndef\n option b \"x\\\ny\"\n option c 'z'\n")
    assert options(pkg) == {"a": "abcdef", "b": "xy", "c": "z"}
    assert pkg.sections[0].get("c").line == 6


def test_crlf_line_endings() -> None:
    pkg = parse_uci("config t 's'\r\n\toption a 'b'\r\n\toption c d\r\n")
    assert options(pkg) == {"a": "b", "c": "d"}


def test_semicolon_separates_statements() -> None:
    assert options(parse_uci("config t s; option a 1; list b 2;\n")) == {"a": "1", "b": ["2"]}


def test_comments_blank_lines_and_indentation() -> None:
    pkg = parse_uci("   # indented comment\n\n\t\n  config t s   # trailing\n"
                    "\t\t option a 1 #x\n#end")
    assert options(pkg) == {"a": "1"}


def test_empty_text_has_no_sections() -> None:
    assert parse_uci("").sections == ()
    assert parse_uci("# only a comment\n").sections == ()


@pytest.mark.parametrize("text, line, words", [
    ("option a b\n", 1, "outside a section"),
    ("# c\nlist a b\n", 2, "outside a section"),
    ("config t s\n option a 'unterminated\n option b c\n", 2, "unterminated '"),
    ('config t s\n\n option a "open\n', 3, 'unterminated "'),
    ('config t s\n option a "x\\"\n', 2, 'unterminated "'),
    ("config t s\n option a b c\n", 2, "too many arguments ('c'"),
    ("config t s x\n", 1, "too many arguments"),
    ("config\n", 1, "missing section type"),
    ("config ''\n", 1, "missing section type"),
    ("config t s\n option\n", 2, "missing name"),
    ("config t s\n option '' x\n", 2, "missing name"),
    ("config t s\n option a-b 1\n", 2, "invalid name 'a-b'"),
    ("config t 'my-sec'\n", 1, "invalid section name"),
    ("config 'a b'\n", 1, "invalid section type"),
    ("confg t s\n", 1, "unknown keyword 'confg'"),
    ("config t s\n\toptions a b\n", 2, "unknown keyword 'options'"),
    ("package 'a b'\n", 1, "package: invalid name"),
    ("package\n", 1, "package: missing name"),
    ("config a s\nconfig b s\n", 2, "already has type 'a' (line 1)"),
])
def test_syntax_errors_name_file_and_line(text: str, line: int, words: str) -> None:
    exc = error(text)
    assert isinstance(exc, ValueError)
    assert (exc.filename, exc.line) == ("/etc/config/acp", line)
    assert words in exc.message
    assert str(exc).startswith(f"/etc/config/acp:{line}: ")
    assert "\n" not in str(exc)


def test_long_lines_parse() -> None:
    long = "x" * 200_000
    assert value(f"'{long}'") == long
    assert value(long) == long
    assert value(f'"{long}"') == long


def test_long_bad_value_gives_a_short_error() -> None:
    exc = error("config t s\n option a b " + "c" * 100_000 + "\n")
    assert len(str(exc)) < 300


def test_nul_byte_is_an_error() -> None:
    exc = error("config t s\n option a 'b\0c'\n")
    assert exc.line == 2 and "NUL" in exc.message


def test_byte_order_mark_is_an_error() -> None:
    assert "byte-order mark" in error("\ufeffconfig t s\n").message


def test_oversized_text_is_an_error() -> None:
    exc = error("#" * (MAX_FILE_BYTES + 1))
    assert exc.line is None and "larger than" in str(exc)


def test_control_characters_are_escaped_in_messages() -> None:
    exc = error("config t s\n opt\x1b[2Jion a b\n")
    assert "\x1b" not in str(exc) and "\\x1b" in str(exc)


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "acp"
    path.write_bytes(b"config acp 'main'\n\toption a '\xc3\xa9'\n")
    pkg = read_uci_file(path)
    assert pkg.filename == str(path)
    assert options(pkg) == {"a": "é"}


def test_read_file_non_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "acp"
    path.write_bytes(b"config acp 'main'\n\toption a 'ok'\n\toption b '\xff\xfe'\n")
    with pytest.raises(ConfigError) as info:
        read_uci_file(path)
    assert info.value.line == 3 and "0xff" in str(info.value)


def test_read_file_nul_bytes(tmp_path: Path) -> None:
    path = tmp_path / "acp"
    path.write_bytes(b"config acp 'main'\n\0\0\0")
    with pytest.raises(ConfigError, match=r":2: NUL"):
        read_uci_file(path)


def test_read_file_oversized(tmp_path: Path) -> None:
    path = tmp_path / "acp"
    path.write_bytes(b"#" * (MAX_FILE_BYTES + 10))
    with pytest.raises(ConfigError, match="larger than"):
        read_uci_file(path)


def test_read_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_uci_file(tmp_path / "absent")
    assert str(info.value) == f"{tmp_path / 'absent'}: No such file or directory"
    with pytest.raises(ConfigError, match="not a regular file"):
        read_uci_file(tmp_path)


def test_read_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        read_uci_file(fifo)


@pytest.mark.parametrize("junk", [
    bytes(range(256)),
    b"config \x80\x81 'main'\n",
    b"'" * 1000,
    b'"\\' * 1000,
    b"\\" * 5000,
    b"config a b\n" + b"list x y\n" * 20000,
])
def test_hostile_bytes_give_config_error_or_parse(tmp_path: Path, junk: bytes) -> None:
    path = tmp_path / "junk"
    path.write_bytes(junk)
    try:
        read_uci_file(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_a_megabyte_of_list_lines_parses_in_linear_time() -> None:
    text = "config a b\n" + "\tlist x 'y z'\n" * 70_000  # just under MAX_FILE_BYTES
    started = time.perf_counter()
    pkg = parse_uci(text)
    elapsed = time.perf_counter() - started
    assert len(pkg.sections[0].get("x").values) == 70_000
    assert elapsed < 5, f"{elapsed:.1f} s: appending to a list must not be quadratic"
