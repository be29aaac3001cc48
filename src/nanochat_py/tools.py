"""The calculator tool the model calls between <|python_start|> and <|python_end|>.

nanochat evaluates the call with Python's `eval` behind a blocklist. Here it is parsed instead: a small
recursive-descent parser for the two forms nanochat's training data uses, with Python's semantics and
bounded input, nesting and number size, so model output can never run code or take unbounded time.

  arithmetic:   digits, + - * / // ( ) . and spaces ("**" is refused, commas in numbers are dropped)
  string count: "strawberry".count("r"), "Strawberry".lower().count("r")   (single or double quotes)
"""

from __future__ import annotations

import re

MAX_EXPRESSION_CHARS = 256
MAX_NESTING = 32
MAX_DIGITS = 200  # an integer result longer than this is refused (keeps every operation cheap)

_STRING = r"""(?:"(?P<{0}2>[^"\\]*)"|'(?P<{0}1>[^'\\]*)')"""  # no escapes: they would need Python's parser
_COUNT_CALL = re.compile(
    r"\s*"
    + _STRING.format("text")
    + r"\s*(?P<lower>\.\s*lower\s*\(\s*\)\s*)?\.\s*count\s*\(\s*"
    + _STRING.format("sub")
    + r"\s*\)\s*"
)
_TOKEN = re.compile(r" *(?:(?P<num>[0-9]+\.?[0-9]*|\.[0-9]+)|(?P<op>//|\*\*|[-+*/()]))")  # ASCII only, as Python


class _Refused(Exception):
    pass


def calculate(expression: str) -> str | None:
    """The tool's output text for `expression`, or None when it is not a call the tool answers."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None
    count = _COUNT_CALL.fullmatch(expression)
    if count:
        text = count["text1"] if count["text1"] is not None else count["text2"]
        sub = count["sub1"] if count["sub1"] is not None else count["sub2"]
        return str((text.lower() if count["lower"] else text).count(sub))
    try:
        value = _Arithmetic(expression.replace(",", "")).parse()
    except (_Refused, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return str(value)


class _Arithmetic:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|'//') unary)* ; unary := ('+'|'-') unary | atom"""

    def __init__(self, text: str):
        self.tokens = self._tokenize(text)
        self.i = 0
        self.depth = 0

    @staticmethod
    def _tokenize(text: str) -> list[str]:
        tokens, pos = [], 0
        while pos < len(text):
            if text[pos:].strip(" ") == "":
                break
            m = _TOKEN.match(text, pos)
            if not m or m["op"] == "**":
                raise _Refused
            tokens.append(m["num"] or m["op"])
            pos = m.end()
        return tokens

    def parse(self) -> int | float:
        if not self.tokens:
            raise _Refused
        value = self._expr()
        if self.i != len(self.tokens):
            raise _Refused
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> str:
        if self.i >= len(self.tokens):
            raise _Refused
        self.i += 1
        return self.tokens[self.i - 1]

    def _expr(self):
        value = self._term()
        while self._peek() in ("+", "-"):
            op, right = self._take(), self._term()
            value = _checked(value + right if op == "+" else value - right)
        return value

    def _term(self):
        value = self._unary()
        while self._peek() in ("*", "/", "//"):
            op, right = self._take(), self._unary()
            if op == "*":
                value = _checked(value * right)
            elif op == "/":
                value = _checked(value / right)
            else:
                value = _checked(value // right)
        return value

    def _unary(self):
        if self._peek() in ("+", "-"):
            op = self._take()
            self._enter()
            value = self._unary()
            self.depth -= 1
            return -value if op == "-" else +value
        return self._atom()

    def _atom(self):
        token = self._take()
        if token == "(":
            self._enter()
            value = self._expr()
            self.depth -= 1
            if self._take() != ")":
                raise _Refused
            return value
        if token[0].isdigit() or token[0] == ".":
            return _number(token)
        raise _Refused

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise _Refused


def _number(token: str) -> int | float:
    if "." in token:
        return float(token)
    if len(token) > 1 and token[0] == "0" and token.strip("0"):
        raise _Refused  # Python rejects leading zeros such as 007
    if len(token) > MAX_DIGITS:
        raise _Refused
    return int(token)


def _checked(value: int | float) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_DIGITS * 3.33:
        raise _Refused
    return value
