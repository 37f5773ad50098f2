"""A small RON (Rusty Object Notation) reader and writer.

gpt-rs kept its configs and vocabularies in RON, and no maintained pure-Python RON library exists, so
this module reads and writes the subset those files (and mlxstory's own) use. Value model:

    (a: 1) / Name(a: 1)   -> Struct, a dict with .name (None when anonymous)
    Name                  -> Struct(name="Name") with no fields (unit struct or enum variant)
    Name(1, 2) / Name()   -> TupleStruct, a tuple with .name
    (1, 2) / (1,) / (1)   -> tuple;  () -> () (unit)
    [1, 2]                -> list;   {k: v} -> dict
    "s", r"s", r#"s"#     -> str;    'c' -> Char (a one-character str)
    1, -0x1F, 1_000       -> int;    1.0, 2e-4, inf, NaN -> float;  true/false -> bool
    Some(x) -> x;  None -> None

The writer maps these types back; an anonymous Struct with no fields writes as `()` and so reads back as
the unit `()` (RON cannot tell them apart). Errors are `RonError` with a 1-based line and column.
Parsing never recurses deeper than MAX_DEPTH nested values, so hostile input cannot raise RecursionError.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from mlxstory.errors import MlxstoryError

MAX_DEPTH = 100  # nested containers; gpt-rs files need 3


class RonError(MlxstoryError):
    """A RON document that cannot be parsed; str() is "LINE:COL: message"."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"{line}:{column}: {message}")
        self.message, self.line, self.column = message, line, column


class Struct(dict):
    """A RON struct: its fields in order, plus the struct's name (None for `(a: 1)`)."""

    def __init__(self, fields: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
                 name: str | None = None) -> None:
        super().__init__(fields)
        self.name = name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Struct) and other.name != self.name:
            return False
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Struct({dict.__repr__(self)}, name={self.name!r})"


class TupleStruct(tuple):
    """A RON tuple struct `Name(1, 2)`: a tuple plus the struct's name."""

    name: str

    def __new__(cls, items: Iterable[Any], name: str) -> TupleStruct:
        self = super().__new__(cls, items)
        self.name = name
        return self

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TupleStruct) and other.name != self.name:
            return False
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((self.name, tuple(self)))

    def __getnewargs__(self) -> tuple[tuple[Any, ...], str]:  # copy and pickle call __new__ with these
        return tuple(self), self.name

    def __repr__(self) -> str:
        return f"TupleStruct({tuple.__repr__(self)}, name={self.name!r})"


class Char(str):
    """A RON char `'a'`: a str of exactly one character that writes back with single quotes."""

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"


# ---------------------------------------------------------------------------------------------- reader

_SPACE = re.compile(r"(?:\s+|//[^\n]*)*")
_COMMENT_MARK = re.compile(r"/\*|\*/")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"[+-]?(?:0x[0-9A-Fa-f_]+|0o[0-7_]+|0b[01_]+|inf|NaN"
    r"|(?:[0-9][0-9_]*(?:\.[0-9][0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?)"
)
_INT_CHARS = re.compile(r"[0-9\s,-]*")  # a list that may be plain ints only
_STR_CHUNK = re.compile(r'[^"\\]+')
_RAW_OPEN = re.compile(r'r(#*)"')
_UNICODE_ESCAPE = re.compile(r"\{([0-9A-Fa-f]{1,6})\}|([0-9A-Fa-f]{4})")  # \u{1F600} or \u00e9
_EXTENSION = re.compile(r"#!\[\s*enable\s*\(\s*(?:[A-Za-z_]\w*\s*(?:,\s*[A-Za-z_]\w*\s*)*,?\s*)?\)\s*\]")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f",
            "\\": "\\", '"': '"', "'": "'", "/": "/"}
_KEYWORDS = {"true", "false", "None", "Some", "inf", "NaN"}


class _Parser:
    """Recursive descent over the text with an index; `depth` bounds the recursion."""

    def __init__(self, text: str) -> None:
        self.text, self.pos, self.depth = text, 0, 0

    def error(self, message: str, pos: int | None = None) -> RonError:
        pos = self.pos if pos is None else pos
        line = self.text.count("\n", 0, pos) + 1
        return RonError(message, line, pos - self.text.rfind("\n", 0, pos))

    def found(self) -> str:
        return "end of input" if self.pos >= len(self.text) else repr(self.text[self.pos])

    def skip(self) -> str:
        """Skip whitespace and comments; return the next character ('' at the end)."""
        text = self.text
        while True:
            self.pos = _SPACE.match(text, self.pos).end()
            if not text.startswith("/*", self.pos):
                return text[self.pos:self.pos + 1]
            start, nesting = self.pos, 0
            for mark in _COMMENT_MARK.finditer(text, self.pos):
                nesting += 1 if mark.group() == "/*" else -1
                if nesting == 0:
                    self.pos = mark.end()
                    break
            else:
                raise self.error("unterminated /* block comment", start)

    def expect(self, char: str, what: str) -> None:
        if self.skip() != char:
            raise self.error(f"expected {char!r} {what}, found {self.found()}")
        self.pos += 1

    def document(self) -> Any:
        if self.text.startswith("\ufeff"):
            self.pos = 1
        while self.skip() == "#":
            match = _EXTENSION.match(self.text, self.pos)
            if not match:
                raise self.error("malformed extension attribute; expected #![enable(name, ...)]")
            self.pos = match.end()
        value = self.value()
        if self.skip():
            raise self.error(f"unexpected {self.found()} after the value; a RON file holds one value")
        return value

    def value(self) -> Any:
        char = self.skip()
        if char in ("[", "{", "("):
            self.pos += 1
            return self.nested(self.list if char == "[" else self.map if char == "{" else self.parens)
        if char == '"':
            return self.string()
        if char == "'":
            return self.char()
        if char == "r" and self.text[self.pos + 1:self.pos + 2] in ('"', "#"):
            return self.raw_string()
        if char and (char in "+-." or char.isdigit()):
            return self.number()
        if _IDENT.match(self.text, self.pos):
            return self.identifier()
        raise self.error(f"expected a value, found {self.found()}")

    def nested(self, parse: Callable[..., Any], *args: Any) -> Any:
        """Parse a container's inside, refusing to go deeper than MAX_DEPTH (never a RecursionError)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"values nested deeper than {MAX_DEPTH} levels")
        value = parse(*args)
        self.depth -= 1
        return value

    def items(self, close: str, item: Any) -> None:
        """Call item() for each comma-separated element up to `close` (trailing comma allowed)."""
        while True:
            if self.skip() == close:
                self.pos += 1
                return
            item()
            char = self.skip()
            if char == ",":
                self.pos += 1
            elif char != close:
                raise self.error(f"expected ',' or {close!r}, found {self.found()}")

    def list(self) -> list[Any]:
        first = self.skip()
        if first and (first == "-" or first.isdigit()):  # fast path: gpt-rs token lists hold millions
            end = self.text.find("]", self.pos)
            if end > 0 and _INT_CHARS.fullmatch(self.text, self.pos, end):
                pieces = self.text[self.pos:end].split(",")
                if len(pieces) > 1 and not pieces[-1].strip():
                    pieces.pop()  # trailing comma
                try:
                    result = list(map(int, pieces))
                except ValueError:
                    pass  # e.g. "1 2" or "1,,2": the general path below says where
                else:
                    self.pos = end + 1
                    return result
        result: list[Any] = []
        self.items("]", lambda: result.append(self.value()))
        return result

    def map(self) -> dict[Any, Any]:
        result: dict[Any, Any] = {}

        def entry() -> None:
            start = self.pos
            key = self.value()
            try:
                duplicate = key in result
            except TypeError:
                raise self.error("a map key cannot be a list, map or struct", start) from None
            if duplicate:
                raise self.error(f"duplicate map key {repr(key)[:60]}", start)
            self.expect(":", "after a map key")
            result[key] = self.value()

        self.items("}", entry)
        return result

    def parens(self, name: str | None = None) -> Any:
        """After `(`: struct fields `a: 1, ...` or tuple elements; `name` is the struct's name if any."""
        self.skip()
        ident = _IDENT.match(self.text, self.pos)
        raw = ident and ident.group() == "r" and self.text[ident.end():ident.end() + 1] in ('"', "#")
        if ident and not raw:
            # `(name: ...` starts a struct; `(name 1` is a struct with a missing ':' (a clearer error
            # than "expected ','"); `(Name,` / `(Name)` / `(Name(` / `(true,` are tuple elements.
            self.pos = ident.end()
            char = self.skip()
            self.pos = ident.start()
            if char == ":" or (ident.group() not in _KEYWORDS and char and char not in ",)("):
                return self.fields(name)
        elements: list[Any] = []
        self.items(")", lambda: elements.append(self.value()))
        if name is not None:
            return TupleStruct(elements, name)
        return tuple(elements)

    def fields(self, name: str | None) -> Struct:
        result = Struct(name=name)

        def field() -> None:
            ident = _IDENT.match(self.text, self.pos)
            if not ident:
                raise self.error(f"expected a field name, found {self.found()}")
            if ident.group() in result:
                raise self.error(f"duplicate field {ident.group()!r}")
            self.pos = ident.end()
            self.expect(":", f"after field name {ident.group()!r}")
            result[ident.group()] = self.value()

        self.items(")", field)
        return result

    def identifier(self) -> Any:
        word = _IDENT.match(self.text, self.pos).group()
        self.pos += len(word)
        if word in ("true", "false"):
            return word == "true"
        if word in ("inf", "NaN"):
            return float(word)
        if word == "None":
            return None
        if word == "Some":
            self.expect("(", "after Some")
            return self.nested(self.some)
        if self.skip() != "(":
            return Struct(name=word)
        self.pos += 1
        return self.nested(self.parens, word)

    def some(self) -> Any:
        value = self.value()
        if self.skip() == ",":
            self.pos += 1
        self.expect(")", "to close Some(")
        return value

    def number(self) -> int | float:
        start = self.pos
        match = _NUMBER.match(self.text, self.pos)
        if not match or _IDENT.match(self.text, match.end()) or self.text.startswith(".", match.end()):
            word = re.match(r"[\w.+-]*", self.text[start:start + 40]).group()
            raise self.error(f"invalid number {word!r}", start)
        self.pos = match.end()
        token = match.group().replace("_", "")
        sign = -1 if token.startswith("-") else 1
        digits = token.lstrip("+-")
        try:
            if digits[:2] in ("0x", "0o", "0b"):
                return sign * int(digits[2:], {"x": 16, "o": 8, "b": 2}[digits[1]])
            if digits in ("inf", "NaN") or any(c in digits for c in ".eE"):
                return sign * float(digits)
            return sign * int(digits)
        except ValueError:
            raise self.error(f"invalid number {match.group()[:40]!r}", start) from None

    def escape(self, quote_start: int) -> str:
        """Read one escape after a backslash (self.pos is on the backslash)."""
        start = self.pos
        kind = self.text[self.pos + 1:self.pos + 2]
        if kind in _ESCAPES:
            self.pos += 2
            return _ESCAPES[kind]
        if kind == "x":
            digits, self.pos = self.text[start + 2:start + 4], start + 4
            if not re.fullmatch(r"[0-9A-Fa-f]{2}", digits):
                raise self.error("\\x needs two hex digits", start)
            return chr(int(digits, 16))
        if kind == "u":
            match = _UNICODE_ESCAPE.match(self.text, start + 2)
            if not match:
                raise self.error("\\u needs hex digits like \\u{1F600}", start)
            code = int(match.group(1) or match.group(2), 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise self.error(f"\\u{{{code:X}}} is not a Unicode scalar value", start)
            self.pos = match.end()
            return chr(code)
        if not kind:
            raise self.error("unterminated string or char", quote_start)
        shown = kind if kind.isprintable() else ascii(kind)[1:-1]  # a line break must not split the message
        raise self.error(f"unknown escape \\{shown}", start)

    def string(self) -> str:
        start = self.pos
        self.pos += 1
        parts: list[str] = []
        while True:
            chunk = _STR_CHUNK.match(self.text, self.pos)
            if chunk:
                parts.append(chunk.group())
                self.pos = chunk.end()
            char = self.text[self.pos:self.pos + 1]
            if char == '"':
                self.pos += 1
                return "".join(parts)
            if not char:
                raise self.error("unterminated string", start)
            parts.append(self.escape(start))

    def raw_string(self) -> str:
        start = self.pos
        opening = _RAW_OPEN.match(self.text, start)
        if not opening:
            raise self.error("expected '\"' after r and #s of a raw string", start)
        terminator = '"' + opening.group(1)
        close = self.text.find(terminator, opening.end())
        if close < 0:
            raise self.error("unterminated raw string", start)
        self.pos = close + len(terminator)
        return self.text[opening.end():close]

    def char(self) -> Char:
        start = self.pos
        self.pos += 1
        char = self.text[self.pos:self.pos + 1]
        if char == "\\":
            value = self.escape(start)
        elif char in ("", "'"):
            raise self.error("empty or unterminated char literal", start)
        else:
            value, self.pos = char, self.pos + 1
        if self.text[self.pos:self.pos + 1] != "'":
            raise self.error("a char literal holds one character; use \"...\" for strings", start)
        self.pos += 1
        return Char(value)


def loads(text: str) -> Any:
    """Parse one RON value from text."""
    if not isinstance(text, str):
        raise TypeError(f"ron.loads takes str, not {type(text).__name__}")
    return _Parser(text).document()


def load(path: str | os.PathLike[str]) -> Any:
    """Parse a RON file (UTF-8). A missing file raises FileNotFoundError for the caller to word."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        raise RonError(f"not UTF-8 text (byte {error.start})", line, column) from None
    return loads(text)


# ---------------------------------------------------------------------------------------------- writer

_NEEDS_ESCAPE = re.compile("[\"'\\\\\x00-\x1f\x7f\ud800-\udfff]")
_WRITE_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}
_INDENT = "    "


def _quote(text: str, quote: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char == quote:
            return "\\" + char
        if char in "\"'":
            return char
        if "\ud800" <= char <= "\udfff":
            raise ValueError(f"cannot write the lone surrogate {char!r} in {text[:40]!r}")
        return _WRITE_ESCAPES.get(char) or f"\\u{{{ord(char):x}}}"

    return quote + _NEEDS_ESCAPE.sub(escape, text) + quote


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = float.__repr__(value)  # shortest text that reads back to the same float
    return text if any(c in text for c in ".e") else text + ".0"


def _name(name: str) -> str:
    if not isinstance(name, str) or not _IDENT.fullmatch(name) or name in _KEYWORDS:
        raise ValueError(f"{name!r} cannot be a RON struct name; use an identifier that is not a keyword")
    return name


def _join(parts: list[str], open_: str, close: str, multiline: bool, level: int) -> str:
    if not multiline:
        return open_ + ", ".join(parts) + close
    inner = _INDENT * (level + 1)
    return open_ + "\n" + ",\n".join(inner + part for part in parts) + "\n" + _INDENT * level + close


def _is_container(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict)) and len(value) > 0


def _format(value: Any, pretty: bool, level: int) -> str:
    if level > MAX_DEPTH:
        raise ValueError(f"value nested deeper than {MAX_DEPTH} levels (or it contains itself)")
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Char):
        if len(value) != 1:
            raise ValueError(f"a Char holds exactly one character, got {str.__repr__(value)}")
        return _quote(value, "'")
    if isinstance(value, str):
        return _quote(value, '"')
    if type(value) is list and all(type(item) is int for item in value):  # fast path for token lists
        return "[" + ", ".join(map(str, value)) + "]"
    # Structs and maps go one entry per line in pretty mode; sequences only when they hold containers.
    if isinstance(value, Struct):
        name = "" if value.name is None else _name(value.name)
        if not value:
            return name or "()"
        parts = []
        for key, item in value.items():
            if not isinstance(key, str) or not _IDENT.fullmatch(key):
                raise ValueError(f"struct field name {key!r} is not an identifier; use a dict for a map")
            parts.append(f"{key}: {_format(item, pretty, level + 1)}")
        return _join(parts, name + "(", ")", pretty, level)
    if isinstance(value, dict):
        parts = [f"{_format(k, pretty, level + 1)}: {_format(v, pretty, level + 1)}"
                 for k, v in value.items()]
        return _join(parts, "{", "}", pretty and bool(parts), level)
    if isinstance(value, (list, tuple)):
        parts = [_format(item, pretty, level + 1) for item in value]
        multiline = pretty and any(_is_container(item) for item in value)
        if isinstance(value, list):
            return _join(parts, "[", "]", multiline, level)
        if isinstance(value, TupleStruct):
            return _join(parts, _name(value.name) + "(", ")", multiline, level)
        if len(parts) == 1 and not multiline:
            return f"({parts[0]},)"
        return _join(parts, "(", ")", multiline, level)
    raise TypeError(f"cannot write {type(value).__name__} as RON; convert it to a supported type first")


def dumps(value: Any, *, pretty: bool = False) -> str:
    """RON text for value (types as in the module docstring); pretty: one field per line, 4-space indents.

    Raises TypeError for types RON has no form for, ValueError for values it cannot express.
    """
    return _format(value, pretty, 0)


def dump(value: Any, path: str | os.PathLike[str], *, pretty: bool = True) -> None:
    """Write value to path atomically (a temp file in the same folder, then os.replace)."""
    path = Path(path)
    text = dumps(value, pretty=pretty) + "\n"
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(temp, path.stat().st_mode & 0o777 if path.exists() else 0o644)  # mkstemp makes 0600
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
