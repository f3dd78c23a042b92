"""What real models write where JSON is expected, read as the service reads it: the
Python runner's copy of src/runner/lenient.rs (the tolerant JSON reader), of
`without_reasoning` (src/runner/extract.rs) and of the text tool calls (src/runner/calls.rs).
The same recorded transcripts (tests/fixtures/llm/) run through both runners.

A quote inside a string is told from its end by what follows it: a string ends only where
valid JSON could go on. Raw control characters, invalid escapes, trailing and missing
commas, a cut object and Python literals are repaired; what cannot be read is None.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 64
MAX_CALLS = 8
_WS = " \t\r\n"
_VALUE_START = set('"{[-0123456789tfnTFN')


class _Unreadable(Exception):
    pass


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0
        self.repairs: set[str] = set()

    def peek(self) -> str | None:
        return self.text[self.at] if self.at < len(self.text) else None

    def skip_space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in _WS:
            self.at += 1

    def next_solid(self, start: int) -> tuple[int, str] | None:
        i = start
        while i < len(self.text) and self.text[i] in _WS:
            i += 1
        return (i, self.text[i]) if i < len(self.text) else None

    def value(self, place: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _Unreadable
        self.skip_space()
        c = self.peek()
        if c is None:
            raise _Unreadable
        if c == "{":
            return self.object(depth + 1)
        if c == "[":
            return self.array(depth + 1)
        if c == '"':
            return self.string(place, depth)
        if c == "-" or c.isdigit():
            return self.number()
        return self.literal()

    def object(self, depth: int) -> dict:
        self.at += 1
        out: dict[str, Any] = {}
        while True:
            self.skip_space()
            c = self.peek()
            if c is None:
                self.repairs.add("unclosed")
                return out
            if c == "}":
                self.at += 1
                return out
            if c != '"':
                raise _Unreadable
            key = self.string("key", depth)
            self.skip_space()
            c = self.peek()
            if c is None:
                self.repairs.add("unclosed")
                return out
            if c != ":":
                raise _Unreadable
            self.at += 1
            self.skip_space()
            if self.peek() is None:
                self.repairs.add("unclosed")
                return out
            out[key] = self.value("object_value", depth)
            self.skip_space()
            c = self.peek()
            if c == ",":
                self.at += 1
                nxt = self.next_solid(self.at)
                if nxt and nxt[1] == "}":
                    self.repairs.add("trailing_comma")
                    self.at = nxt[0] + 1
                    return out
            elif c == "}":
                self.at += 1
                return out
            elif c == '"':
                self.repairs.add("missing_comma")
            elif c is None:
                self.repairs.add("unclosed")
                return out
            else:
                raise _Unreadable

    def array(self, depth: int) -> list:
        self.at += 1
        out: list[Any] = []
        while True:
            self.skip_space()
            c = self.peek()
            if c is None:
                self.repairs.add("unclosed")
                return out
            if c == "]":
                self.at += 1
                return out
            out.append(self.value("array_item", depth))
            self.skip_space()
            c = self.peek()
            if c == ",":
                self.at += 1
                nxt = self.next_solid(self.at)
                if nxt and nxt[1] == "]":
                    self.repairs.add("trailing_comma")
                    self.at = nxt[0] + 1
                    return out
            elif c == "]":
                self.at += 1
                return out
            elif c in ('"', "{", "["):
                self.repairs.add("missing_comma")
            elif c is None:
                self.repairs.add("unclosed")
                return out
            else:
                raise _Unreadable

    def key_follows(self, at: int) -> bool:
        rest = self.text[at + 1 :]
        for i, ch in enumerate(rest):
            if ch == "\n":
                return False
            if ch == '"':
                nxt = self.next_solid(at + 1 + i + 1)
                return bool(nxt) and nxt[1] == ":"
        return False

    def closes(self, at: int, depth: int) -> bool:
        """Whether the bracket at `at` can close its container at `depth` (as in lenient.rs)."""
        if depth == 0:
            rest = self.text[at + 1 :]
            fence = rest.find("```")
            return '"' not in (rest if fence == -1 else rest[:fence])
        nxt = self.next_solid(at + 1)
        return nxt is None or nxt[1] in ",}]"

    def ends_string(self, at: int, place: str, depth: int) -> bool:
        nxt = self.next_solid(at + 1)
        if nxt is None:
            return True
        i, c = nxt
        if place == "key":
            return c == ":"
        if (place, c) in (("object_value", "}"), ("array_item", "]")):
            return self.closes(i, depth)
        if c == ",":
            after = self.next_solid(i + 1)
            if after is None:
                return True
            if place == "object_value":
                return after[1] in ('"', "}")
            return after[1] in _VALUE_START or after[1] == "]"
        if place == "object_value" and c == '"':
            return self.key_follows(i)
        return False

    def string(self, place: str, depth: int) -> str:
        self.at += 1
        out: list[str] = []
        escapes = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", '"': '"', "\\": "\\", "/": "/"}
        while True:
            c = self.peek()
            if c is None:
                self.repairs.add("unclosed")
                return "".join(out)
            if c == '"':
                if self.ends_string(self.at, place, depth):
                    self.at += 1
                    return "".join(out)
                self.repairs.add("inner_quote")
                out.append('"')
                self.at += 1
            elif c == "\\":
                self.at += 1
                e = self.peek()
                if e is None:
                    self.repairs.add("unclosed")
                    return "".join(out)
                if e in escapes:
                    out.append(escapes[e])
                    self.at += 1
                elif e == "u" and _is_hex(self.text[self.at + 1 : self.at + 5]):
                    code = int(self.text[self.at + 1 : self.at + 5], 16)
                    self.at += 5
                    low = self.text[self.at + 2 : self.at + 6]
                    if 0xD800 <= code < 0xDC00 and self.text[self.at : self.at + 2] == "\\u" and _is_hex(low):
                        low_code = int(low, 16)
                        if 0xDC00 <= low_code <= 0xDFFF:
                            code = 0x10000 + ((code - 0xD800) << 10) + (low_code - 0xDC00)
                            self.at += 6
                    out.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "\ufffd")
                else:
                    self.repairs.add("invalid_escape")
                    out.append("\\")
            elif ord(c) < 0x20:
                self.repairs.add("control_character")
                out.append(c)
                self.at += 1
            else:
                out.append(c)
                self.at += 1

    def number(self) -> Any:
        start = self.at
        while self.at < len(self.text) and self.text[self.at] in "-+.eE0123456789":
            self.at += 1
        try:
            return json.loads(self.text[start : self.at])
        except ValueError as exc:
            raise _Unreadable from exc

    def literal(self) -> Any:
        for word, value, python in (
            ("true", True, False),
            ("false", False, False),
            ("null", None, False),
            ("True", True, True),
            ("False", False, True),
            ("None", None, True),
        ):
            if self.text.startswith(word, self.at):
                if python:
                    self.repairs.add("python_literal")
                self.at += len(word)
                return value
        raise _Unreadable


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)


def read_object(text: str) -> tuple[dict, list[str]] | None:
    """The object that starts `text` (at its `{`), read leniently, with its repairs."""
    if not text.startswith("{"):
        return None
    reader = _Reader(text)
    try:
        value = reader.object(0)
    except (_Unreadable, RecursionError):
        return None
    return value, sorted(reader.repairs)


def without_reasoning(text: str) -> str:
    """The answer without `<think>…</think>`, and without what comes before a lone
    `</think>`; an unclosed `<think>` leaves nothing."""
    opening, closing = "<think>", "</think>"
    close, open_ = text.find(closing), text.find(opening)
    if close != -1 and (open_ == -1 or open_ > close):
        text = text[close + len(closing) :]
    out = []
    while True:
        open_ = text.find(opening)
        if open_ == -1:
            out.append(text)
            return "".join(out)
        out.append(text[:open_])
        close = text.find(closing, open_)
        if close == -1:
            return "".join(out)
        text = text[close + len(closing) :]


def written_calls(text: str, tools: set[str]) -> list[tuple[str, dict]]:
    """Tool calls written as text (a ```json block or `<tool_call>` tags holding
    `{"name", "arguments"}`) of tools the model was given."""
    text = without_reasoning(text)
    found: list[tuple[str, dict]] = []
    start = text.find("{")
    while start != -1 and len(found) < MAX_CALLS:
        read = read_object(text[start:])
        call = _call_of(read[0], tools) if read else None
        if call is None:
            start = text.find("{", start + 1)
            continue
        found.append(call)
        start = text.find("{", start + _object_end(text[start:]))
    return found


def _call_of(value: dict, tools: set[str]) -> tuple[str, dict] | None:
    function = value.get("function")
    if isinstance(function, dict):
        value = function
    name = value.get("name")
    if not isinstance(name, str) or name.strip() not in tools:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        read = read_object(arguments.strip())
        arguments = read[0] if read else None
    if not isinstance(arguments, dict):
        return None
    return name.strip(), arguments


def _object_end(text: str) -> int:
    try:
        _, end = json.JSONDecoder().raw_decode(text)
        return end
    except ValueError:
        for marker in ("</tool_call>", "```"):
            at = text.find(marker)
            if at != -1:
                return at
        return 1
