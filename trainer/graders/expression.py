"""The ``calculate_output`` formula of multi graders: a small Pratt parser and evaluator (never ``eval``).

Grammar: numbers, grader names, ``+ - * / ^`` (``^`` is power, right-associative and binding tighter than
unary minus, so ``-2^2 == -4``), parentheses, and the functions ``min max abs floor ceil exp sqrt log``
(``min``/``max`` take one or more arguments, the others exactly one; ``log`` is the natural logarithm).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Union

FUNCTIONS: dict[str, tuple[Callable[..., float], int | None]] = {
    # name: (implementation, arity; None = one or more)
    "min": (lambda *xs: min(xs), None),
    "max": (lambda *xs: max(xs), None),
    "abs": (abs, 1),
    "floor": (lambda x: float(math.floor(x)), 1),
    "ceil": (lambda x: float(math.ceil(x)), 1),
    "exp": (math.exp, 1),
    "sqrt": (math.sqrt, 1),
    "log": (math.log, 1),
}

_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*)|(.))")
_MAX_LENGTH = 10_000


class FormulaError(ValueError):
    """The formula cannot be parsed (or names an unknown grader)."""


class FormulaEvalError(ArithmeticError):
    """The formula cannot be evaluated for these scores (division by zero, log of a negative, ...)."""


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[Node, ...]


Node = Union[Num, Name, Unary, Binary, Call]  # noqa: UP007 (used at runtime before 3.12)

# Binding powers (left, right): right < left makes an operator right-associative.
_INFIX = {"+": (10, 11), "-": (10, 11), "*": (20, 21), "/": (20, 21), "^": (41, 40)}
_PREFIX_BP = 30  # unary +/-: looser than ^, tighter than * and /


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:  # only trailing whitespace left
            break
        number, name, symbol = m.groups()
        if number is not None:
            tokens.append(("num", number))
        elif name is not None:
            tokens.append(("name", name))
        elif symbol is not None:
            if symbol not in "+-*/^(),":
                raise FormulaError(f"unexpected character {symbol!r} at position {m.start(3)}")
            tokens.append(("op", symbol))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def next(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise FormulaError("unexpected end of formula")
        self.pos += 1
        return tok

    def expect(self, symbol: str) -> None:
        tok = self.next()
        if tok != ("op", symbol):
            raise FormulaError(f"expected {symbol!r}, got {tok[1]!r}")

    def expression(self, min_bp: int = 0) -> Node:
        kind, text = self.next()
        left: Node
        if kind == "num":
            left = Num(float(text))
        elif kind == "name":
            if text in FUNCTIONS:
                left = self.call(text)
            elif self.peek() == ("op", "("):
                raise FormulaError(f"unknown function {text!r} (allowed: {', '.join(FUNCTIONS)})")
            else:
                left = Name(text)
        elif text in ("+", "-"):
            left = Unary(text, self.expression(_PREFIX_BP))
        elif text == "(":
            left = self.expression(0)
            self.expect(")")
        else:
            raise FormulaError(f"unexpected {text!r}")
        while (tok := self.peek()) is not None:
            kind, text = tok
            if kind != "op" or text not in _INFIX:
                if kind != "op" or text not in "),":
                    raise FormulaError(f"expected an operator before {text!r}")
                break
            lbp, rbp = _INFIX[text]
            if lbp < min_bp:
                break
            self.pos += 1
            left = Binary(text, left, self.expression(rbp))
        return left

    def call(self, func: str) -> Call:
        self.expect("(")
        args: list[Node] = []
        if self.peek() != ("op", ")"):
            args.append(self.expression(0))
            while self.peek() == ("op", ","):
                self.pos += 1
                args.append(self.expression(0))
        self.expect(")")
        arity = FUNCTIONS[func][1]
        if (arity is None and not args) or (arity is not None and len(args) != arity):
            want = "one or more arguments" if arity is None else f"{arity} argument"
            raise FormulaError(f"{func}() takes {want}, got {len(args)}")
        return Call(func, tuple(args))


def parse_formula(text: str) -> Node:
    """Parse a formula into a tree; raises FormulaError."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty")
    if len(text) > _MAX_LENGTH:
        raise FormulaError(f"the formula is longer than {_MAX_LENGTH} characters")
    parser = _Parser(_tokenize(text))
    try:
        tree = parser.expression(0)
    except RecursionError:
        raise FormulaError("the formula is nested too deeply") from None
    if parser.peek() is not None:
        raise FormulaError(f"unexpected {parser.peek()[1]!r}")  # type: ignore[index]
    return tree


def names_in(tree: Node) -> set[str]:
    """The variable names a formula uses."""
    if isinstance(tree, Name):
        return {tree.name}
    if isinstance(tree, Unary):
        return names_in(tree.operand)
    if isinstance(tree, Binary):
        return names_in(tree.left) | names_in(tree.right)
    if isinstance(tree, Call):
        return set().union(*(names_in(a) for a in tree.args))
    return set()


def evaluate(tree: Node, values: Mapping[str, float]) -> float:
    """Evaluate a parsed formula; raises FormulaEvalError for undefined results."""
    try:
        result = _eval(tree, values)
    except (ZeroDivisionError, OverflowError, ValueError, RecursionError) as exc:
        raise FormulaEvalError(str(exc) or type(exc).__name__) from None
    if not math.isfinite(result):
        raise FormulaEvalError(f"the result is {result}")
    return result


def _eval(tree: Node, values: Mapping[str, float]) -> float:
    if isinstance(tree, Num):
        return tree.value
    if isinstance(tree, Name):
        if tree.name not in values:
            raise ValueError(f"unknown name {tree.name!r}")
        return float(values[tree.name])
    if isinstance(tree, Unary):
        operand = _eval(tree.operand, values)
        return -operand if tree.op == "-" else operand
    if isinstance(tree, Binary):
        a, b = _eval(tree.left, values), _eval(tree.right, values)
        if tree.op == "+":
            return a + b
        if tree.op == "-":
            return a - b
        if tree.op == "*":
            return a * b
        if tree.op == "/":
            return a / b
        result = a**b
        if isinstance(result, complex):
            raise ValueError(f"{a} ^ {b} is not a real number")
        return float(result)
    func = FUNCTIONS[tree.func][0]
    return float(func(*(_eval(a, values) for a in tree.args)))
