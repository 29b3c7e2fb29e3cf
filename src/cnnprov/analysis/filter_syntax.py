"""Reading a run filter (``val_acc > 0.95 and lr < 0.05``) into a tree; :mod:`cnnprov.analysis.run_filter`
compiles the tree to SPARQL. The language is described in docs/filters.md.

Grammar (keywords in any case)::

    filter     := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" or_expr ")" | comparison
    comparison := field OP value                          OP: = == != < <= > >= ~ contains
                | field ["not"] "in" "(" value ("," value)* ")"
                | field ["not"] "between" value "and" value
                | field "not" ("contains" | "~") value
    field      := NAME | ("hp." | "metric." | "run.") NAME
                | ("best" | "last" | "min" | "max" | "hp") "(" (NAME | STRING) ")"
    value      := NUMBER | STRING | WORD                  "true"/"false" unquoted are booleans
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cnnprov.errors import RunFilterError

#: What a metric's field reads from its summary; a bare metric name reads its best.
SUMMARIES = ("best", "last", "min", "max")
#: Operators that compare a field with one value.
COMPARISONS = ("=", "!=", "<", "<=", ">", ">=", "~", "contains")
_KEYWORDS = {"and", "or", "not", "in", "between", "contains"}
_FUNCTIONS = {*SUMMARIES, "hp"}
_PREFIXES = {"hp.": "hp", "metric.": "metric", "run.": "run"}

_TOKENS = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?)
    | (?P<op>==|!=|<>|<=|>=|=|<|>|~)
    | (?P<punct>[(),])
    | (?P<word>[^\s()",'<>=!~]+)
    | (?P<other>.)
    """,
    re.X | re.S,
)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ESCAPE = re.compile(r"\\(.)", re.S)


@dataclass(frozen=True)
class Token:
    kind: str  # "string", "op", "punct", "word", "other", "end"
    text: str
    offset: int

    @property
    def keyword(self) -> str | None:
        """The keyword this token is (lower case), if it is one."""
        lower = self.text.lower()
        return lower if self.kind == "word" and lower in _KEYWORDS else None


@dataclass(frozen=True)
class Field:
    """What a comparison reads of a run.

    ``kind``: ``"run"`` (id, name, status …), ``"hp"``, ``"metric"``, or ``"name"`` for a bare
    name that the compiler resolves (a run field, else a hyperparameter, else a metric's best).
    ``summary``: which value of a metric (best, last, min, max); ``None`` for the rest.
    """

    kind: str
    name: str
    summary: str | None
    offset: int
    text: str


@dataclass(frozen=True)
class Value:
    value: str | int | float | bool
    quoted: bool
    offset: int
    text: str


@dataclass(frozen=True)
class Comparison:
    field: Field
    op: str  # one of COMPARISONS, "in" or "between"
    values: tuple[Value, ...]
    offset: int  # of the operator


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Junction:
    op: str  # "and" or "or"
    operands: tuple[Node, ...]


Node = Comparison | Not | Junction


def parse_filter(text: str) -> Node:
    """The tree of a filter; :class:`RunFilterError` (with the place) when it cannot be read."""
    return _Parser(text).parse()


def tokenize(text: str) -> list[Token]:
    tokens = []
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup or "other"
        if kind == "space":
            continue
        token = Token(kind, match.group(), match.start())
        if kind == "string" and (len(token.text) < 2 or token.text[-1] != token.text[0]):
            raise RunFilterError(f"the string that starts here never ends: expected a closing {token.text[0]}",
                                 text, token.offset)
        if kind == "other":
            raise RunFilterError(f"unexpected '{token.text}'", text, token.offset)
        tokens.append(token)
    tokens.append(Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0

    # -- tokens ---------------------------------------------------------------
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def error(self, expected: str, token: Token | None = None) -> RunFilterError:
        """``expected …`` after the previous token, at ``token`` (the current one by default)."""
        token = token or self.token
        previous = self.tokens[self.index - 1] if self.index > 0 else None
        after = f" after '{previous.text}'" if previous is not None and " after " not in expected else ""
        found = "" if token.kind == "end" else f", found '{token.text}'"
        return RunFilterError(f"expected {expected}{after}{found}", self.text, token.offset)

    def expect_punct(self, text: str, expected: str) -> Token:
        if self.token.kind != "punct" or self.token.text != text:
            raise self.error(expected)
        return self.advance()

    # -- grammar -------------------------------------------------------------------
    def parse(self) -> Node:
        if self.token.kind == "end":
            raise self.error("a condition such as val_acc > 0.9")
        node = self.or_expr()
        if self.token.kind != "end":
            raise self.error("'and', 'or' or the end of the filter")
        return node

    def or_expr(self) -> Node:
        operands = [self.and_expr()]
        while self.token.keyword == "or":
            self.advance()
            operands.append(self.and_expr())
        return operands[0] if len(operands) == 1 else Junction("or", tuple(operands))

    def and_expr(self) -> Node:
        operands = [self.not_expr()]
        while self.token.keyword == "and":
            self.advance()
            operands.append(self.not_expr())
        return operands[0] if len(operands) == 1 else Junction("and", tuple(operands))

    def not_expr(self) -> Node:
        if self.token.keyword == "not":
            self.advance()
            return Not(self.not_expr())
        if self.token.kind == "punct" and self.token.text == "(":
            self.advance()
            node = self.or_expr()
            self.expect_punct(")", "')' or 'and', 'or'")
            return node
        return self.comparison()

    def comparison(self) -> Node:
        field = self.field()
        negated = False
        if self.token.keyword == "not":
            self.advance()
            negated = True
        token = self.token
        op = token.text.lower() if token.kind in ("op", "word") else ""
        op = {"==": "=", "<>": "!="}.get(op, op)
        if op == "in":
            self.advance()
            node: Node = Comparison(field, "in", self.value_list(), token.offset)
        elif op == "between":
            self.advance()
            low = self.value("a value after 'between'")
            if self.token.keyword != "and":
                raise self.error("'and' and the upper end of the range")
            self.advance()
            node = Comparison(field, "between", (low, self.value("a value")), token.offset)
        elif op in COMPARISONS and (not negated or op in ("~", "contains")):
            self.advance()
            node = Comparison(field, op, (self.value("a value"),), token.offset)
        elif negated:
            raise self.error("'in', 'between', 'contains' or '~' after 'not'")
        else:
            raise self.error("an operator (= != < <= > >= ~ contains in between)")
        return Not(node) if negated else node

    def field(self) -> Field:
        token = self.token
        if token.kind != "word" or token.keyword is not None:
            raise self.error("a field (a hyperparameter, a metric, or a run field such as status)")
        self.advance()
        name = token.text
        lower = name.lower()
        if self.token.kind == "punct" and self.token.text == "(":
            if lower not in _FUNCTIONS:
                raise RunFilterError(
                    f"unknown function '{name}': expected best, last, min, max or hp", self.text, token.offset
                )
            self.advance()
            inner = self.token
            if inner.kind not in ("word", "string"):
                raise self.error(f"a name inside '{name}(…)'")
            self.advance()
            self.expect_punct(")", f"')' to close '{name}('")
            text = self.text[token.offset : self.tokens[self.index - 1].offset + 1]
            inner_name = _unquote(inner.text) if inner.kind == "string" else inner.text
            if lower == "hp":
                return Field("hp", inner_name, None, token.offset, text)
            return Field("metric", inner_name, lower, token.offset, text)
        for prefix, kind in _PREFIXES.items():
            if lower.startswith(prefix) and len(name) > len(prefix):
                rest = name[len(prefix) :]
                return Field(kind, rest, "best" if kind == "metric" else None, token.offset, name)
        return Field("name", name, None, token.offset, name)

    def value_list(self) -> tuple[Value, ...]:
        self.expect_punct("(", "'(' and a list of values after 'in'")
        values = [self.value("a value")]
        while self.token.kind == "punct" and self.token.text == ",":
            self.advance()
            values.append(self.value("a value after ','"))
        self.expect_punct(")", "',' or ')' to close the list")
        return tuple(values)

    def value(self, expected: str) -> Value:
        token = self.token
        if token.kind == "string":
            self.advance()
            return Value(_unquote(token.text), True, token.offset, token.text)
        if token.kind != "word":
            raise self.error(expected)
        if token.keyword is not None:
            error = self.error(expected)
            raise RunFilterError(f"{error.reason} (quote it to compare with the word)", self.text, token.offset)
        self.advance()
        return Value(_word_value(token.text), False, token.offset, token.text)


def _unquote(text: str) -> str:
    return _ESCAPE.sub(r"\1", text[1:-1])


def _word_value(text: str) -> str | int | float | bool:
    """A number compares as a number, true and false as booleans; any other word is a string."""
    if _NUMBER.fullmatch(text):
        return float(text) if any(c in text for c in ".eE") else int(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
