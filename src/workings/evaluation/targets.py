"""Two models on the same questions: paired comparisons per benchmark, and the SFT stage's targets.

Everything here is computed; :mod:`workings.report` turns it into tables and sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from workings.evaluation.scoring import Scored, compare, summarise
from workings.evaluation.stats import PairedComparison


@dataclass(frozen=True)
class BenchmarkComparison:
    """Model ``b`` against model ``a`` on one benchmark: both rates and the paired test."""

    benchmark: str
    a: str
    b: str
    rate_a: float
    rate_b: float
    paired: PairedComparison


def paired_comparisons(results: Mapping[str, Mapping[str, Sequence[Scored]]], a: str = "base", b: str = "tuned",
                       metric: str = "correct") -> list[BenchmarkComparison]:
    """Per benchmark of ``results[a]``, ``b`` against ``a`` on ``metric`` (see :func:`compare`);
    benchmarks without graded questions are left out when the metric is correctness."""
    out = []
    for bench, scored_a in results[a].items():
        scored_b = results[b][bench]
        if metric in ("correct", "last_number_correct") and not any(s.graded for s in scored_a):
            continue
        c = compare(scored_a, scored_b, metric)
        rate = "accuracy" if metric == "correct" else None
        rate_a = summarise(scored_a)[rate] if rate else c.rate_a
        rate_b = summarise(scored_b)[rate] if rate else c.rate_b
        out.append(BenchmarkComparison(bench, a, b, rate_a, rate_b, c))
    return out


@dataclass(frozen=True)
class Target:
    """One target of a stage: what was measured, what was required, and whether it was met."""

    name: str
    measured: str
    evidence: str
    required: str
    met: bool


def sft_targets(base: Sequence[Scored], tuned: Sequence[Scored], min_strict: float) -> list[Target]:
    """The SFT stage's targets on scored greedy replies to the same questions: the tuned model's
    strict-format rate at least ``min_strict``, and its accuracy higher than the base's beyond
    chance (McNemar's exact test, p < 0.05). The base never writes tags, so its answers are read
    format-blind (last number), the tuned model's from its answer block."""
    strict = summarise(tuned)["strict_format"]
    c = compare(base, tuned, metric="correct", metric_a="last_number_correct")
    return [
        Target("strict format (tuned, greedy)", f"{100 * strict:.1f}%", "", f">= {100 * min_strict:g}%",
               strict >= min_strict),
        Target("accuracy, tuned vs base", f"{100 * c.rate_b:.1f}% vs {100 * c.rate_a:.1f}%",
               f"only tuned right {c.only_b}, only base {c.only_a}: p = {c.p_value:.2g}", "higher, p < 0.05",
               c.difference > 0 and c.significant),
    ]


def grpo_targets(sft: Sequence[Scored], grpo: Sequence[Scored], sft_sampled: Sequence[Scored],
                 grpo_sampled: Sequence[Scored], layouts: Mapping[str, Sequence[Scored]], *, min_strict: float,
                 min_layout_strict: float) -> list[Target]:
    """The GRPO stage's targets on the same questions: greedy accuracy above SFT's beyond chance
    (McNemar's exact test, p < 0.05) with a strict-format rate of at least ``min_strict``; sampled
    accuracy above SFT's; and a strict-format rate of at least ``min_layout_strict`` in every prompt
    layout (``layouts``: the GRPO model's greedy replies per layout)."""
    greedy = compare(sft, grpo, metric="correct")
    sampled = compare(sft_sampled, grpo_sampled, metric="correct")
    strict = summarise(grpo)["strict_format"]
    by_layout = {name: summarise(scored)["strict_format"] for name, scored in layouts.items()}
    worst = min(by_layout, key=by_layout.get)

    def accuracy(c: Any) -> str:
        return f"{100 * c.rate_b:.1f}% vs {100 * c.rate_a:.1f}%"

    def evidence(c: Any) -> str:
        return f"only GRPO right {c.only_b}, only SFT {c.only_a}: p = {c.p_value:.2g}"

    return [
        Target("accuracy, greedy, GRPO vs SFT", accuracy(greedy), evidence(greedy), "higher, p < 0.05",
               greedy.difference > 0 and greedy.significant),
        Target("strict format (GRPO, greedy)", f"{100 * strict:.1f}%", "", f">= {100 * min_strict:g}%", strict >= min_strict),
        Target("accuracy, sampled, GRPO vs SFT", accuracy(sampled), evidence(sampled), "higher", sampled.difference > 0),
        Target("strict format in every layout (GRPO, greedy)", f"lowest {100 * by_layout[worst]:.1f}% ({worst})", "",
               f">= {100 * min_layout_strict:g}%", by_layout[worst] >= min_layout_strict),
    ]
