"""Why a wrong reply is wrong, read from the shown work it wrote (:mod:`workings.core.steps`)."""

from __future__ import annotations

from collections.abc import Sequence

from workings.core.answers import equivalent, last_number
from workings.core.steps import check_lines
from workings.evaluation.scoring import Scored

ERROR_KINDS = ("no computation", "wrong sum", "number from nowhere", "answer is not the last result", "wrong plan")


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
    lines = check_lines(scored.reasoning if scored.reasoning is not None else scored.output, scored.question)
    if not lines:
        return "no computation"
    if not all(line.right for line in lines):
        return "wrong sum"
    if not all(line.grounded for line in lines):
        return "number from nowhere"
    answer = scored.answer if scored.answer is not None else last_number(scored.output)
    if not equivalent(answer, str(lines[-1].computation.result)):
        return "answer is not the last result"
    return "wrong plan"


def error_counts(scored: Sequence[Scored], metric: str = "correct") -> dict[str, int]:
    """How many graded replies are right (by ``metric``) and how many wrong of each :data:`ERROR_KINDS`."""
    kinds = [error_kind(s, metric) for s in scored if s.graded]
    return {"right": kinds.count(None), **{kind: kinds.count(kind) for kind in ERROR_KINDS}}
