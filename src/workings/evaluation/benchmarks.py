"""Benchmarks as data: what a model is asked, with gold answers and the fields results are broken down by.

A benchmark is read from an eval set of the profile (GSM8K test, MATH-500, the synthetic test set,
any local JSONL with ``question``/``answer``) or from the held-out split of the mix, one benchmark per
source. Free-text sources (medical-o1) are asked too, but only their format and length are measured:
they are marked ``graded: false`` and have no accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workings.config.schema import EvalSetSpec, Profile
from workings.core.answers import gsm8k_gold, math_gold
from workings.data.mix import source_rows

GOLD_READERS = {"plain": str, "gsm8k": gsm8k_gold, "boxed": math_gold}


@dataclass
class Benchmark:
    name: str
    rows: list[dict[str, Any]]  # id, question, gold (None when ungraded), meta
    graded: bool = True
    group_by: list[str] = field(default_factory=list)


def load_benchmark(spec: EvalSetSpec, limit: int | None = None) -> Benchmark:
    """An eval set of the profile (``data.eval_sets``) as a benchmark; the gold read as ``spec.gold`` says."""
    read_gold = GOLD_READERS[spec.gold]
    rows = []
    for i, row in enumerate(source_rows(spec)[:limit]):
        question, gold = row.get(spec.question_field), row.get(spec.answer_field)
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"eval set {spec.name!r}: row {i} has no text in field {spec.question_field!r}")
        if spec.graded:
            if gold is None or (isinstance(gold, str) and not gold.strip()):
                raise ValueError(f"eval set {spec.name!r}: row {i} has no gold answer in field {spec.answer_field!r}")
            try:
                gold = read_gold(str(gold))
            except ValueError as err:
                raise ValueError(f"eval set {spec.name!r}: row {i}, field {spec.answer_field!r}: {err}") from None
        rows.append({
            "id": str(row.get("id", row.get("unique_id", i))), "question": question,
            "gold": str(gold) if spec.graded else None,
            "meta": {k: row[k] for k in spec.group_by if k in row},
        })
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):  # ids from the file must identify rows; fall back to positions
        for i, r in enumerate(rows):
            r["id"] = str(i)
    return Benchmark(spec.name, rows, graded=spec.graded, group_by=list(spec.group_by))


def heldout_benchmarks(heldout: Any, per_source: int | None = None) -> list[Benchmark]:
    """The mix's held-out split as one benchmark per source (``heldout:<source>``).

    Rows whose answers are free text (``graded`` false in the mix) form ungraded benchmarks.
    """
    by_source: dict[str, list[dict[str, Any]]] = {}
    graded: dict[str, bool] = {}
    for r in heldout:
        rows = by_source.setdefault(r["source"], [])
        graded[r["source"]] = graded.get(r["source"], True) and bool(r["graded"])
        if per_source is None or len(rows) < per_source:
            rows.append({"id": r["id"], "question": r["question"], "gold": r["answer"] if r["graded"] else None,
                         "meta": {"source": r["source"]}})
    return [Benchmark(f"heldout:{name}", rows, graded=graded[name]) for name, rows in by_source.items()]


def profile_benchmarks(profile: Profile, heldout: Any | None = None) -> list[Benchmark]:
    """Every eval set of the profile, then (when given the mix's held-out split) one benchmark per source."""
    benchmarks = [load_benchmark(spec) for spec in profile.data.eval_sets]
    if heldout is not None:
        benchmarks += heldout_benchmarks(heldout, profile.evaluation.heldout_rows)
    return benchmarks
