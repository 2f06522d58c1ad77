"""Checking shown work line by line: every ``a op b = c`` a reply writes, and why a wrong reply is wrong."""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from workings.core.answers import equivalent, last_number, numbers_in
from workings.evaluation.scoring import Scored

_OPERAND = r"\$?-?\d+(?:\.\d+)?"
_COMPUTATION = re.compile(rf"({_OPERAND}(?:\s*[-+*/×x]\s*{_OPERAND})+)\s*=\s*({_OPERAND})")
_NEXT_OPERAND, _NEXT_OPERATOR = re.compile(rf"\s*({_OPERAND})"), re.compile(r"\s*([-+*/×x])")
_OPERATIONS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "×": operator.mul, "x": operator.mul,
               "/": operator.truediv}
# Numbers a question may give in words ("half of them", "doubles", "a dozen").
NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "dozen": 12, "half": 2, "twice": 2, "double": 2, "doubles": 2, "third": 3,
    "triple": 3, "triples": 3, "quarter": 4, "fifth": 5, "hundred": 100, "percent": 100,
}
ERROR_KINDS = ("no computation", "wrong sum", "number from nowhere", "answer is not the last result", "wrong plan")


@dataclass(frozen=True)
class Computation:
    """One ``a op b op … = c`` written in a reply."""

    operands: tuple[Fraction, ...]
    operators: tuple[str, ...]
    result: Fraction

    @property
    def value(self) -> Fraction | None:
        """What the left side is worth (``*`` and ``/`` before ``+`` and ``-``); None on division by zero."""
        terms, signs = [self.operands[0]], []
        for op, operand in zip(self.operators, self.operands[1:]):
            if op in "+-":
                terms.append(operand)
                signs.append(op)
            elif op == "/" and operand == 0:
                return None
            else:
                terms[-1] = _OPERATIONS[op](terms[-1], operand)
        total = terms[0]
        for sign, term in zip(signs, terms[1:]):
            total = _OPERATIONS[sign](total, term)
        return total


def _number(text: str) -> Fraction:
    return Fraction(text.lstrip("$"))


def computations(text: str) -> list[Computation]:
    """Every ``a op b … = c`` written in ``text`` (``+ - * × x /``, ``$`` before a number allowed), in order."""
    found = []
    for left, right in _COMPUTATION.findall(text):
        pieces, at = [], 0
        while at < len(left):  # operand, operator, operand, ...: a minus after an operator is a sign
            match = (_NEXT_OPERATOR if len(pieces) % 2 else _NEXT_OPERAND).match(left, at)
            pieces.append(match.group(1))
            at = match.end()
        operands, operators = pieces[::2], pieces[1::2]
        found.append(Computation(tuple(map(_number, operands)), tuple(operators), _number(right)))
    return found


def error_kind(scored: Scored, metric: str = "correct") -> str | None:
    """Why a graded wrong reply is wrong, read from the computations it wrote; None if it is right.

    Right and wrong are read from ``metric`` (``last_number_correct`` for a base without tags).

    The first that applies, in the order of :data:`ERROR_KINDS`: no ``a op b = c`` at all; a
    computation whose result is wrong; an operand that is neither a number of the question
    (in digits or in :data:`NUMBER_WORDS`) nor the result of an earlier line; a final answer
    other than the last result; and otherwise a wrong plan (every line right and grounded,
    but the wrong lines).
    """
    if not scored.graded or getattr(scored, metric):
        return None
    lines = computations(scored.reasoning if scored.reasoning is not None else scored.output)
    if not lines:
        return "no computation"
    if any(line.value != line.result for line in lines):
        return "wrong sum"
    known = {Fraction(n.replace(",", "")) for n in numbers_in(scored.question)}
    known.update(Fraction(NUMBER_WORDS[w]) for w in re.findall(r"[a-z]+", scored.question.lower()) if w in NUMBER_WORDS)
    for line in lines:
        if not known.issuperset(line.operands):
            return "number from nowhere"
        known.add(line.result)
    answer = scored.answer if scored.answer is not None else last_number(scored.output)
    if not equivalent(answer, str(lines[-1].result)):
        return "answer is not the last result"
    return "wrong plan"


def error_counts(scored: Sequence[Scored], metric: str = "correct") -> dict[str, int]:
    """How many graded replies are right (by ``metric``) and how many wrong of each :data:`ERROR_KINDS`."""
    kinds = [error_kind(s, metric) for s in scored if s.graded]
    return {"right": kinds.count(None), **{kind: kinds.count(kind) for kind in ERROR_KINDS}}
