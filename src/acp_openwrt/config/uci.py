"""UCI syntax as OpenWrt's libuci reads a config file: text in, sections and options out.

Only the syntax lives here; what the options mean is schema.py's job. The rules follow libuci's
file parser (uci/file.c, strict mode, as `uci` and `uci_load()` use it):

- Statements: `package <name>`, `config <type> [<name>]`, `option <name> [<value>]`,
  `list <name> [<value>]`; libuci also takes the one-letter forms `p`, `c`, `o`, `l`.
- A word is a run of unquoted text, '...' (taken literally, may span lines) and "..." (backslash
  escapes, may span lines), glued together when adjacent: `a'b c'"d"` is `ab cd`.
- Backslash takes the next character literally (`\\n` is `n`; libuci decodes no escapes);
  a backslash at the end of a line joins the next line.
- `#` outside quotes starts a comment, also in the middle of a word (`foo#bar` is `foo`).
- `;` ends a statement (as in `uci batch`).
- Option, list and section names are `[A-Za-z0-9_]+`; a type is printable ASCII without spaces.
- `option x ''` (or no value) deletes x, as uci_set() does with an empty value; a later `option`
  replaces an earlier one (also a list); `list` appends (an earlier `option` becomes item one).
- A named section declared twice is one section (options merge); a different type for the same
  name is an error. `option`/`list` before any `config` is an error. `package` is accepted and,
  as in uci_load() of a single file, does not change which sections are read.
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_FILE_BYTES = 1 << 20  # far above any real UCI file; bounds what a hostile input can cost
_TOO_LARGE = f"larger than {MAX_FILE_BYTES} bytes: not a UCI config file"

_KEYWORDS = {"package": "package", "p": "package", "config": "config", "c": "config",
             "option": "option", "o": "option", "list": "list", "l": "list"}
_BLANK = frozenset(" \t\r\v\f")  # C isspace() without the newline, which ends a statement
_PLAIN = re.compile(r"[^ \t\r\v\f\n'\"\\#;]+")
_DQ_STOP = re.compile(r'["\\]')
_NAME = re.compile(r"[A-Za-z0-9_]+")
_PACKAGE = re.compile(r"[A-Za-z0-9_-]+")
_TYPE = re.compile(r"[\x21-\x7e]+")


class ConfigError(ValueError):
    """A configuration problem; str() is one line: `file:line: message`."""

    def __init__(self, filename: str, line: int | None, message: str) -> None:
        self.filename = filename
        self.line = line
        self.message = message
        super().__init__(f"{filename}:{line}: {message}" if line else f"{filename}: {message}")


def show(text: str, limit: int = 80) -> str:
    """A value quoted for a one-line message: control characters escaped, long values cut."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


@dataclass(frozen=True)
class UciValue:
    """One value and the line of the statement that gave it."""
    text: str
    line: int


@dataclass(frozen=True)
class UciOption:
    """An `option` (one value) or a `list` (one value per `list` line)."""
    name: str
    values: tuple[UciValue, ...]
    is_list: bool

    @property
    def line(self) -> int:
        return self.values[0].line


@dataclass(frozen=True)
class UciSection:
    type: str
    name: str | None  # None: an unnamed section
    line: int
    options: tuple[UciOption, ...]

    def get(self, name: str) -> UciOption | None:
        return next((o for o in self.options if o.name == name), None)


@dataclass(frozen=True)
class UciPackage:
    filename: str
    sections: tuple[UciSection, ...]
    package: str | None = None  # the name from a `package` statement, if any


class _SectionBuilder:
    def __init__(self, type_: str, name: str | None, line: int) -> None:
        self.type, self.name, self.line = type_, name, line
        self.options: dict[str, tuple[bool, list[UciValue]]] = {}  # name -> (is_list, values)

    def build(self) -> UciSection:
        options = tuple(UciOption(name, tuple(values), is_list)
                        for name, (is_list, values) in self.options.items())
        return UciSection(self.type, self.name, self.line, options)


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.text, self.filename = text, filename
        self.pos, self.line = 0, 1
        self.sections: list[_SectionBuilder] = []
        self.named: dict[str, _SectionBuilder] = {}
        self.current: _SectionBuilder | None = None
        self.package: str | None = None

    def error(self, message: str, line: int | None = None) -> ConfigError:
        return ConfigError(self.filename, line or self.line, message)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self) -> None:
        while self.peek() in _BLANK and self.pos < len(self.text):
            self.pos += 1

    def skip_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        self.pos = len(self.text) if end < 0 else end

    def run(self) -> UciPackage:
        while True:
            self.skip_blanks()
            c = self.peek()
            if c == "":
                break
            if c == "\n":
                self.pos += 1
                self.line += 1
            elif c == "#":
                self.skip_comment()
            elif c == ";":
                self.pos += 1
            else:
                self.statement()
        return UciPackage(self.filename, tuple(s.build() for s in self.sections), self.package)

    def statement(self) -> None:
        line = self.line
        start = self.pos
        while self.peek() not in _BLANK and self.peek() not in ("", "\n"):
            self.pos += 1
        word = self.text[start:self.pos]
        keyword = _KEYWORDS.get(word)
        if keyword is None:
            raise self.error(f"unknown keyword {show(word)}: "
                             "expected config, option, list or package", line)
        args = self.arguments()
        if keyword == "package":
            self.on_package(args, line)
        elif keyword == "config":
            self.on_config(args, line)
        else:
            self.on_option(keyword, args, line)

    def arguments(self) -> list[str]:
        """The words up to the end of the statement (newline, `;`, comment or end of text)."""
        args: list[str] = []
        while True:
            self.skip_blanks()
            c = self.peek()
            if c in ("", "\n"):
                return args
            if c == ";":
                self.pos += 1
                return args
            if c == "#":
                self.skip_comment()
                return args
            word, ended = self.word()
            args.append(word)
            if ended:
                return args

    def word(self) -> tuple[str, bool]:
        """One word; `ended` is True when a `#` inside it started a comment."""
        parts: list[str] = []
        while True:
            c = self.peek()
            if c == "" or c == "\n" or c == ";" or c in _BLANK:
                return "".join(parts), False
            if c == "#":
                self.skip_comment()
                return "".join(parts), True
            if c == "'":
                self.single_quoted(parts)
            elif c == '"':
                self.double_quoted(parts)
            elif c == "\\":
                self.backslash(parts)
            else:
                m = _PLAIN.match(self.text, self.pos)
                assert m is not None
                parts.append(m.group())
                self.pos = m.end()

    def backslash(self, parts: list[str]) -> None:
        self.pos += 1
        c = self.peek()
        if c == "":
            return
        if c == "\n" or (c == "\r" and self.text[self.pos + 1:self.pos + 2] == "\n"):
            self.pos += 1 if c == "\n" else 2
            self.line += 1
            return
        parts.append(c)
        self.pos += 1

    def single_quoted(self, parts: list[str]) -> None:
        opened = self.line
        end = self.text.find("'", self.pos + 1)
        if end < 0:
            raise self.error("unterminated ' (quote opened here never closes)", opened)
        chunk = self.text[self.pos + 1:end]
        self.line += chunk.count("\n")
        parts.append(chunk)
        self.pos = end + 1

    def double_quoted(self, parts: list[str]) -> None:
        opened = self.line
        self.pos += 1
        while True:
            m = _DQ_STOP.search(self.text, self.pos)
            if m is None:
                raise self.error('unterminated " (quote opened here never closes)', opened)
            chunk = self.text[self.pos:m.start()]
            self.line += chunk.count("\n")
            parts.append(chunk)
            self.pos = m.start()
            if m.group() == '"':
                self.pos += 1
                return
            self.backslash(parts)

    def on_package(self, args: list[str], line: int) -> None:
        if not args or not args[0]:
            raise self.error("package: missing name", line)
        if len(args) > 1:
            raise self.too_many("package", args[1], line)
        if not _PACKAGE.fullmatch(args[0]):
            raise self.error(f"package: invalid name {show(args[0])} (letters, digits, _ and -)",
                             line)
        self.package = args[0]

    def on_config(self, args: list[str], line: int) -> None:
        if not args or not args[0]:
            raise self.error("config: missing section type", line)
        type_ = args[0]
        if not _TYPE.fullmatch(type_):
            raise self.error(f"config: invalid section type {show(type_)} "
                             "(printable ASCII, no spaces)", line)
        name = args[1] if len(args) > 1 and args[1] else None
        if len(args) > 2:
            raise self.too_many("config", args[2], line)
        if name is not None and not _NAME.fullmatch(name):
            raise self.error(f"config: invalid section name {show(name)} (letters, digits and _)",
                             line)
        if name is None:
            section = _SectionBuilder(type_, None, line)
            self.sections.append(section)
        elif name in self.named:
            section = self.named[name]
            if section.type != type_:
                raise self.error(f"config: section {show(name)} already has type "
                                 f"{show(section.type)} (line {section.line}); a name cannot be "
                                 f"reused for type {show(type_)}", line)
        else:
            section = self.named[name] = _SectionBuilder(type_, name, line)
            self.sections.append(section)
        self.current = section

    def on_option(self, keyword: str, args: list[str], line: int) -> None:
        if self.current is None:
            raise self.error(f"{keyword} outside a section: a 'config' line must come first", line)
        if not args or not args[0]:
            raise self.error(f"{keyword}: missing name", line)
        name = args[0]
        if not _NAME.fullmatch(name):
            raise self.error(f"{keyword}: invalid name {show(name)} (letters, digits and _)", line)
        if len(args) > 2:
            raise self.too_many(f"{keyword} {name}", args[2], line)
        value = UciValue(args[1] if len(args) > 1 else "", line)
        options = self.current.options
        if keyword == "option":
            options.pop(name, None)  # a later option replaces; an empty one deletes (uci_set)
            if value.text:
                options[name] = (False, [value])
        else:
            _, values = options.pop(name, (True, []))
            values.append(value)
            options[name] = (True, values)

    def too_many(self, what: str, extra: str, line: int) -> ConfigError:
        return self.error(f"{what}: too many arguments ({show(extra)} is one too many; "
                          "quote a value that contains spaces)", line)


def parse_uci(text: str, filename: str = "<string>") -> UciPackage:
    """Parse UCI text; ConfigError (file, line, message) on anything libuci would not take."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(filename, None, _TOO_LARGE)
    nul = text.find("\0")
    if nul >= 0:
        raise ConfigError(filename, text.count("\n", 0, nul) + 1, "NUL byte: not a UCI text file")
    if text.startswith("\ufeff"):
        raise ConfigError(filename, 1, "starts with a byte-order mark; save as UTF-8 without one")
    return _Parser(text, filename).run()


def decode_uci(data: bytes, filename: str) -> str:
    """Bytes to text; a non-UTF-8 byte is a ConfigError naming its line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        message = f"not UTF-8 text (byte 0x{data[exc.start]:02x})"
        raise ConfigError(filename, line, message) from None


def read_uci_file(path: Path) -> UciPackage:
    """Read and parse a UCI file without changing anything; any failure is a ConfigError."""
    name = str(path)
    try:
        # O_NONBLOCK: a FIFO given by mistake must not hang the open; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(name, None, exc.strerror or str(exc)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(name, None, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(name, None, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(name, None, _TOO_LARGE)
    return parse_uci(decode_uci(data, name), name)
