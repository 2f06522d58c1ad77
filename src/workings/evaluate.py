"""Scoring generations: format (strict and lenient) and answer accuracy.

Every generation is kept with its verdicts, so a reader can see the failures behind a rate.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from workings.answers import equivalent
from workings.format import parse
from workings.generate import Generation, SamplingConfig, generate
from workings.profiles import EvalSetSpec

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


@dataclass
class Scored:
    question: str
    gold: str
    output: str
    reasoning: str | None
    answer: str | None
    strict: bool  # exactly <reasoning>…</reasoning><answer>…</answer>
    lenient: bool  # an answer could be recovered from a near-miss
    correct: bool  # the parsed answer is equivalent to the gold
    last_number_correct: bool  # the last number anywhere in the output equals the gold (format-blind)
    truncated: bool
    new_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def last_number(text: str) -> str | None:
    """The last number written in ``text`` (commas kept for :func:`equivalent` to read)."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def score(question: str, gold: str, generation: Generation) -> Scored:
    parsed = parse(generation.text)
    return Scored(
        question=question,
        gold=gold,
        output=generation.text,
        reasoning=parsed.reasoning,
        answer=parsed.answer,
        strict=parsed.strict,
        lenient=parsed.has_answer,
        correct=parsed.has_answer and equivalent(parsed.answer, gold),
        last_number_correct=equivalent(last_number(generation.text), gold),
        truncated=generation.truncated,
        new_tokens=generation.new_tokens,
    )


def summarise(scored: list[Scored]) -> dict[str, float]:
    """Rates over a list of scored generations."""
    n = len(scored)
    if n == 0:
        raise ValueError("no generations to summarise")
    strict = [s for s in scored if s.strict]
    return {
        "n": n,
        "strict_format": sum(s.strict for s in scored) / n,
        "lenient_format": sum(s.lenient for s in scored) / n,
        "accuracy": sum(s.correct for s in scored) / n,
        "accuracy_when_strict": sum(s.correct for s in strict) / len(strict) if strict else float("nan"),
        "last_number_accuracy": sum(s.last_number_correct for s in scored) / n,
        "truncated": sum(s.truncated for s in scored) / n,
        "mean_new_tokens": sum(s.new_tokens for s in scored) / n,
    }


def eval_set_rows(spec: EvalSetSpec, limit: int | None = None) -> list[dict[str, str]]:
    """Question and gold answer of every row of an eval set (the profile's ``data.eval_sets``)."""
    from workings.mix import source_rows

    rows = source_rows(spec)[:limit]
    out = []
    for i, row in enumerate(rows):
        question, gold = row.get(spec.question_field), row.get(spec.answer_field)
        if not isinstance(question, str) or gold is None:
            missing = spec.question_field if not isinstance(question, str) else spec.answer_field
            raise ValueError(f"eval set {spec.name!r}: row {i} has no field {missing!r}")
        out.append({"id": str(row.get("id", i)), "question": question, "gold": str(gold)})
    return out


def evaluate_model(model: Any, tokenizer: Any, rows: list[dict[str, str]], sampling: SamplingConfig,
                   progress: bool = False) -> list[Scored]:
    """Generate an answer to every row's question and score it against the row's gold answer."""
    generations = generate(model, tokenizer, [r["question"] for r in rows], sampling, progress=progress)
    return [score(r["question"], r["gold"], g) for r, g in zip(rows, generations)]


def heldout_rows(heldout: Any, limit: int | None = None) -> list[dict[str, str]]:
    """The graded rows of a mix's held-out split (free-text answers are not graded) as question/gold rows."""
    rows = [{"id": r["id"], "source": r["source"], "question": r["question"], "gold": r["answer"]}
            for r in heldout if r["graded"]]
    return rows[:limit]


def sampling_configs(evaluation: Any) -> dict[str, SamplingConfig]:
    """The greedy and the sampled generation settings of a profile's evaluation section."""
    common = {"max_new_tokens": evaluation.max_new_tokens, "batch_size": evaluation.batch_size, "seed": evaluation.seed}
    return {
        "greedy": SamplingConfig(**common),
        f"sampled (T={evaluation.temperature:g}, top-p {evaluation.top_p:g})": SamplingConfig(
            temperature=evaluation.temperature, top_p=evaluation.top_p, **common),
    }
