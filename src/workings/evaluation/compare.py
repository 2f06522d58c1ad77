"""Adapters compared on the same questions. SFT against SFT + GRPO: every benchmark greedy, the
largest graded one sampled and in every prompt layout, and the GRPO stage's targets on it. Any number
of pipelines (SFT, SFT + DPO, SFT + GRPO, ...): every benchmark greedy and the largest in every layout.

Replies come from :func:`workings.evaluation.runs.run_benchmarks`, so what the book's GRPO chapter
generated is read back by the writeup instead of asked again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.schema import Profile
from workings.core.chat import PROMPT_LAYOUTS
from workings.evaluation.benchmarks import Benchmark
from workings.evaluation.runs import run_benchmarks, sampling_configs
from workings.evaluation.scoring import Scored
from workings.evaluation.targets import BenchmarkComparison, Target, grpo_targets, paired_comparisons

SFT, GRPO = "SFT", "SFT + GRPO"
# The demo's targets (issue: strict format on 99% of greedy replies; 95% in every layout).
MIN_STRICT, MIN_LAYOUT_STRICT = 0.99, 0.95


@dataclass
class GRPOComparison:
    """Replies of both adapters, keyed by model name (:data:`SFT`, :data:`GRPO`)."""

    largest: str
    greedy: dict[str, dict[str, list[Scored]]]  # model -> benchmark -> replies
    sampled: dict[str, list[Scored]]  # model -> replies to the largest benchmark
    layouts: dict[str, dict[str, list[Scored]]]  # layout -> model -> greedy replies to the largest benchmark

    def targets(self, min_strict: float = MIN_STRICT, min_layout_strict: float = MIN_LAYOUT_STRICT) -> list[Target]:
        return grpo_targets(self.greedy[SFT][self.largest], self.greedy[GRPO][self.largest], self.sampled[SFT],
                            self.sampled[GRPO], {layout: by_model[GRPO] for layout, by_model in self.layouts.items()},
                            min_strict=min_strict, min_layout_strict=min_layout_strict)


def compare_with_sft(profile: Profile, benchmarks: Sequence[Benchmark], sft_adapter: str | Path,
                     grpo_adapter: str | Path, layouts: Sequence[str] = tuple(PROMPT_LAYOUTS),
                     progress: bool = False) -> GRPOComparison:
    """Ask both adapters every benchmark greedily in the project's prompt, and the largest graded
    benchmark sampled (``evaluation.temperature``) and greedily in each of ``layouts``."""
    graded = [b for b in benchmarks if b.graded]
    if not graded:
        raise ValueError(f"{profile.name}: no graded benchmark to compare SFT and GRPO on")
    largest = max(graded, key=lambda b: len(b.rows))
    adapters: dict[str, Any] = {SFT: sft_adapter, GRPO: grpo_adapter}
    sampled = next(config for name, config in sampling_configs(profile.evaluation).items() if name != "greedy")
    return GRPOComparison(
        largest=largest.name,
        greedy={m: run_benchmarks(profile, benchmarks, a, progress=progress) for m, a in adapters.items()},
        sampled={m: run_benchmarks(profile, [largest], a, sampling=sampled, progress=progress)[largest.name]
                 for m, a in adapters.items()},
        layouts={layout: {m: run_benchmarks(profile, [largest], a, progress=progress, layout=layout)[largest.name]
                          for m, a in adapters.items()} for layout in layouts},
    )


@dataclass
class PipelineComparison:
    """Greedy replies of several adapters (the pipelines that trained them), keyed by pipeline name:
    every benchmark in the project's prompt, and the largest graded one in each layout."""

    largest: str
    greedy: dict[str, dict[str, list[Scored]]]  # pipeline -> benchmark -> replies
    layouts: dict[str, dict[str, list[Scored]]]  # layout -> pipeline -> greedy replies to the largest benchmark

    def paired(self, against: str, metric: str = "correct") -> list[BenchmarkComparison]:
        """Every other pipeline against ``against``, question by question, on every graded benchmark
        and, for the largest, in every layout (named ``<benchmark> (<layout>)``)."""
        out = []
        for name in self.greedy:
            if name == against:
                continue
            out += paired_comparisons(self.greedy, a=against, b=name, metric=metric)
            for layout, by_pipeline in self.layouts.items():
                if layout == "project":
                    continue
                (c,) = paired_comparisons({m: {f"{self.largest} ({layout})": r} for m, r in by_pipeline.items()},
                                          a=against, b=name, metric=metric)
                out.append(c)
        return out


def compare_pipelines(profile: Profile, benchmarks: Sequence[Benchmark], adapters: Mapping[str, str | Path],
                      layouts: Sequence[str] = tuple(PROMPT_LAYOUTS), progress: bool = False) -> PipelineComparison:
    """Ask each adapter (keyed by the pipeline that trained it) every benchmark greedily in the
    project's prompt, and the largest graded benchmark greedily in each of ``layouts``. Replies
    already generated (by another chapter, for the same adapter) are read back."""
    graded = [b for b in benchmarks if b.graded]
    if not graded:
        raise ValueError(f"{profile.name}: no graded benchmark to compare pipelines on")
    largest = max(graded, key=lambda b: len(b.rows))
    return PipelineComparison(
        largest=largest.name,
        greedy={m: run_benchmarks(profile, benchmarks, a, progress=progress) for m, a in adapters.items()},
        layouts={layout: {m: run_benchmarks(profile, [largest], a, progress=progress, layout=layout)[largest.name]
                          for m, a in adapters.items()} for layout in layouts},
    )
