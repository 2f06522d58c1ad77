"""Scoring replies: each reply parsed and judged against its gold answer, and rates with 95% intervals.

Every reply is kept as a :class:`Scored` record (question, gold, raw output, parsed reasoning and
answer, verdicts, flags), streamed to disk while a benchmark runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from workings.core.answers import equivalent, last_number
from workings.core.format import parse
from workings.evaluation.generate import Generation, SamplingConfig, generate
from workings.evaluation.stats import PairedComparison, compare_paired, percentiles, wilson_interval
from workings.files import jsonl_records, write_jsonl


@dataclass
class Scored:
    id: str
    question: str
    gold: str | None  # None for free-text rows that are not graded
    output: str
    reasoning: str | None
    answer: str | None
    strict: bool  # exactly <reasoning>…</reasoning><answer>…</answer>
    lenient: bool  # an answer could be recovered from a near-miss
    correct: bool | None  # the parsed answer is equivalent to the gold (None when not graded)
    last_number_correct: bool | None  # the last number anywhere equals the gold (format-blind)
    truncated: bool  # hit max_new_tokens
    new_tokens: int
    reasoning_tokens: int  # tokens inside the reasoning block (0 when there is none)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def graded(self) -> bool:
        return self.correct is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(question: str, gold: str | None, generation: Generation, tokenizer: Any = None, id: str = "",
          meta: Mapping[str, Any] | None = None) -> Scored:
    """Parse one reply and judge it against ``gold`` (``None``: format and length only)."""
    parsed = parse(generation.text)
    reasoning_tokens = 0
    if parsed.reasoning and tokenizer is not None:
        reasoning_tokens = len(tokenizer(parsed.reasoning, add_special_tokens=False)["input_ids"])
    graded = gold is not None
    return Scored(
        id=id, question=question, gold=gold, output=generation.text,
        reasoning=parsed.reasoning, answer=parsed.answer, strict=parsed.strict, lenient=parsed.has_answer,
        correct=(parsed.has_answer and equivalent(parsed.answer, gold)) if graded else None,
        last_number_correct=equivalent(last_number(generation.text), gold) if graded else None,
        truncated=generation.truncated, new_tokens=generation.new_tokens, reasoning_tokens=reasoning_tokens,
        meta=dict(meta or {}),
    )


def _rate(flags: Sequence[bool], name: str, out: dict[str, float]) -> None:
    n = len(flags)
    if n == 0:
        out[name], out[f"{name}_lo"], out[f"{name}_hi"] = math.nan, math.nan, math.nan
        return
    k = sum(flags)
    out[name] = k / n
    out[f"{name}_lo"], out[f"{name}_hi"] = wilson_interval(k, n)


def summarise(scored: Sequence[Scored]) -> dict[str, float]:
    """Rates (with Wilson 95% intervals as ``<rate>_lo``/``<rate>_hi``) and lengths over scored replies.

    Accuracy is over all graded rows, a reply without a recoverable answer counting as wrong;
    ``accuracy_when_strict`` only over strictly formatted replies. Rows that are not graded give
    NaN accuracies. Reasoning lengths are in tokens, over replies that have a reasoning block.
    """
    n = len(scored)
    if n == 0:
        raise ValueError("no generations to summarise")
    out: dict[str, float] = {"n": n}
    _rate([s.strict for s in scored], "strict_format", out)
    _rate([s.lenient for s in scored], "lenient_format", out)
    graded = [s for s in scored if s.graded]
    out["graded"] = len(graded)
    _rate([bool(s.correct) for s in graded], "accuracy", out)
    _rate([bool(s.correct) for s in graded if s.strict], "accuracy_when_strict", out)
    _rate([bool(s.last_number_correct) for s in graded], "last_number_accuracy", out)
    _rate([s.truncated for s in scored], "truncated", out)
    out["mean_new_tokens"] = sum(s.new_tokens for s in scored) / n
    lengths = [s.reasoning_tokens for s in scored if s.reasoning]
    out["mean_reasoning_tokens"] = sum(lengths) / len(lengths) if lengths else math.nan
    out.update({f"reasoning_tokens_{k}": v for k, v in percentiles(lengths).items()})
    return out


def breakdown(scored: Sequence[Scored], by: str) -> dict[str, dict[str, float]]:
    """:func:`summarise` per value of the row field ``by`` (MATH-500's ``subject`` or ``level``)."""
    groups: dict[str, list[Scored]] = {}
    for s in scored:
        groups.setdefault(str(s.meta.get(by, "?")), []).append(s)
    return {key: summarise(groups[key]) for key in sorted(groups, key=lambda k: (len(k), k))}


def compare(a: Sequence[Scored], b: Sequence[Scored], metric: str = "correct",
            metric_a: str | None = None) -> PairedComparison:
    """Paired comparison of two models on the same questions (matched by id): McNemar and bootstrap.

    ``metric`` is a boolean field of :class:`Scored` (``correct``, ``last_number_correct``,
    ``strict``, ``lenient``); ``metric_a``, if given, reads ``a`` differently, e.g. a base
    that never writes tags by ``last_number_correct`` against the tuned model's ``correct``.
    """
    metric_a = metric_a or metric
    by_id = {s.id: s for s in b}
    if len(by_id) != len(b) or len(a) != len(b) or set(by_id) != {s.id for s in a}:
        raise ValueError(f"paired comparison needs the same questions: {len(a)} vs {len(b)} replies with different ids")
    pairs = [(s, by_id[s.id]) for s in a]
    if {metric, metric_a} & {"correct", "last_number_correct"}:
        pairs = [(x, y) for x, y in pairs if x.graded]
        if not pairs:
            raise ValueError("no graded questions to compare")
    return compare_paired([bool(getattr(x, metric_a)) for x, _ in pairs], [bool(getattr(y, metric)) for _, y in pairs])


def evaluate_model(model: Any, tokenizer: Any, rows: Sequence[Mapping[str, Any]], sampling: SamplingConfig,
                   progress: bool = False, *, out: str | Path | None = None,
                   settings: Mapping[str, Any] | None = None, layout: str = "project") -> list[Scored]:
    """Ask every row's question (in the prompt ``layout``) and score the reply against the row's gold answer.

    With ``out`` the generations stream to that JSONL file (an interrupted run resumes there) and
    the scored records are written beside it as ``<name>.scored.jsonl``.
    """
    ids = [str(r.get("id", i)) for i, r in enumerate(rows)]
    generations = generate(model, tokenizer, [r["question"] for r in rows], sampling, progress=progress,
                           out=out, ids=ids, settings=dict(settings or {}), layout=layout)
    scored = [score(r["question"], r.get("gold"), g, tokenizer, id=i, meta=r.get("meta"))
              for i, r, g in zip(ids, rows, generations)]
    if out is not None:
        save_scored(scored_path(out), scored)
    return scored


def scored_path(generations_path: str | Path) -> Path:
    path = Path(generations_path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".scored.jsonl")


def save_scored(path: str | Path, scored: Sequence[Scored]) -> Path:
    """Write scored records as JSONL, replacing the file only once the new one is complete."""
    return write_jsonl(path, (s.as_dict() for s in scored))


def load_scored(path: str | Path) -> list[Scored]:
    """Read records written by :func:`save_scored`; a bad line is named."""
    out = []
    for number, record in jsonl_records(path):
        try:
            out.append(Scored(**record))
        except TypeError as err:
            raise ValueError(f"{path}, line {number}: not a scored record ({err})") from None
    return out


def summarise_results(results: Mapping[str, Mapping[str, Sequence[Scored]]]) -> dict[tuple[str, str], dict[str, float]]:
    """:func:`summarise` of every benchmark under every model (``results[model][benchmark]``), keyed
    ``(benchmark, model)``."""
    return {(bench, model): summarise(scored) for model, by_bench in results.items() for bench, scored in by_bench.items()}
