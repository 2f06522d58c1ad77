"""Shown work, line by line: every ``a op b = c`` a reply writes, judged right or wrong and grounded or not.

Pure text: the rewards (:mod:`workings.core.rewards`) and the error analysis of evaluation
(:mod:`workings.evaluation.steps`) read replies with it.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from fractions import Fraction

from workings.core.answers import numbers_in

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


@dataclass(frozen=True)
class LineCheck:
    """One computation of a reply, judged: is its result right, and does every operand come from
    the question (in digits or in :data:`NUMBER_WORDS`) or from an earlier line's result?"""

    computation: Computation
    right: bool
    grounded: bool


def known_numbers(question: str) -> set[Fraction]:
    """The numbers a question gives, in digits or in words (:data:`NUMBER_WORDS`)."""
    known = {Fraction(n.replace(",", "")) for n in numbers_in(question)}
    known.update(Fraction(NUMBER_WORDS[w]) for w in re.findall(r"[a-z]+", question.lower()) if w in NUMBER_WORDS)
    return known


def check_lines(text: str, question: str) -> list[LineCheck]:
    """Every ``a op b = c`` of ``text``, in order, each judged right or wrong and grounded or not.

    A line's result becomes a known number for the lines after it, whether it is right or not:
    a wrong sum is one mistake, not a mistake in every line that builds on it.
    """
    known = known_numbers(question)
    checks = []
    for line in computations(text):
        checks.append(LineCheck(line, line.value == line.result, known.issuperset(line.operands)))
        known.add(line.result)
    return checks
