"""The model card of an export: a Hugging Face ``README.md`` written from the run's own files.

Metadata (base model, library, licence, datasets, tags and a ``model-index`` of the measured
results) come from the profile, the run's ``run.json``, the mix report and the scored evaluation;
no number is typed by hand. ``huggingface_hub.ModelCard`` parses it (a test checks the metrics).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from workings.config.schema import Profile
from workings.core.chat import render_prompt
from workings.core.format import render
from workings.models.loading import is_tiny, loading_code
from workings.models.packaged import is_packaged, packaged
from workings.report.tables import headline_table, markdown_table, mix_table

GEMMA_TERMS = """
Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms;
this model is a derivative of it and is distributed under the same terms.
"""
TAGS = ["workings", "reasoning", "chain-of-thought", "gemma", "lora", "trl", "sft"]


def _dataset_ids(profile: Profile) -> list[str]:
    return list(dict.fromkeys(s.hub_id for s in [*profile.data.sources, *profile.data.eval_sets] if s.hub_id))


def eval_results(profile: Profile, summaries: Mapping[tuple[str, str], Mapping[str, float]], model: str = "tuned") -> list[Any]:
    """The ``model-index`` entries: accuracy and strict-format rate of ``model`` on every graded benchmark."""
    from huggingface_hub import EvalResult

    hub_ids = {s.name: s.hub_id for s in profile.data.eval_sets}
    results = []
    for (bench, name), summary in summaries.items():
        if name != model:
            continue
        for metric in ("accuracy", "strict_format"):
            value = summary[metric]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            results.append(EvalResult(
                task_type="text-generation", task_name="Reasoning with shown work",
                dataset_type=hub_ids.get(bench) or bench, dataset_name=bench,
                metric_type=metric, metric_name=metric.replace("_", " "), metric_value=round(float(value), 4)))
    return results


def hub_base(profile: Profile) -> str | None:
    """The base's Hub id for the card's metadata: a packaged model's source (``google/gemma-3-270m``),
    none for the tiny demo model (not on the Hub), else ``model.id``."""
    if is_tiny(profile.model):
        return None
    if is_packaged(profile.model.id):
        return packaged(profile.model.id).source
    return profile.model.id


def licence(profile: Profile) -> str:
    """The licence an export carries: the project's own (Apache-2.0) for the tiny model workings
    builds itself, a packaged model's own, else Gemma's terms (every Hub base a profile names is a Gemma)."""
    if is_tiny(profile.model):
        return "apache-2.0"
    return packaged(profile.model.id).licence if is_packaged(profile.model.id) else "gemma"


def run_stage_name(run: Mapping[str, Any]) -> str:
    """The stage a ``run.json`` summarises (runs written before stages were recorded: GRPO's hold its options)."""
    return run.get("stage") or ("grpo" if "grpo" in run else "sft")


def stage_paragraph(profile: Profile, run: Mapping[str, Any], before: Mapping[str, Any] | None) -> str:
    """What one stage of the chain did, in the words of the stage's own module (``describe``), from its ``run.json``."""
    from workings.config.stages import stage

    return stage(run_stage_name(run), "run.json: stage").implementation().describe(profile, run, before)


def model_card(profile: Profile, *, merged: bool, run: Mapping[str, Any] | None, mix_report: Mapping[str, Any] | None,
               summaries: Mapping[tuple[str, str], Mapping[str, float]], tokenizer: Any, name: str,
               dtype: str | None = None, earlier: Sequence[Mapping[str, Any]] = ()) -> str:
    """The README of an export named ``name`` (a repository or folder name) of the adapter that ``run``
    (its ``run.json``) produced, after the ``earlier`` runs of its chain (first stage first);
    ``dtype`` is a merged export's (default the base's ``model.dtype``)."""
    from huggingface_hub import ModelCard, ModelCardData

    runs = [*earlier, run] if run else []
    data = ModelCardData(
        base_model=hub_base(profile),
        library_name="transformers" if merged else "peft", license=licence(profile), datasets=_dataset_ids(profile) or None,
        tags=TAGS + [run_stage_name(r) for r in runs[1:]] + (["merged"] if merged else ["adapter"]),
        pipeline_tag="text-generation",
        model_name=name, eval_results=eval_results(profile, summaries) or None)
    question = "Ava has 7 stickers. She finds 3 more. She gives away 2. How many stickers does Ava have now?"
    example = render("7 + 3 = 10\n10 - 2 = 8", "8")
    stages = " -> ".join(run_stage_name(r) for r in runs)
    if len(runs) > 1:
        training = "\n\n".join(f"### {i}. {run_stage_name(r)}\n\n{stage_paragraph(profile, r, runs[i - 2] if i > 1 else None)}"
                                 for i, r in enumerate(runs, 1))
    elif runs:
        training = stage_paragraph(profile, runs[0], None)
    else:
        training = "The run's `run.json` was not found beside the adapter: how it was trained is unknown."
    mix = markdown_table(mix_table(mix_report)) if mix_report else "The mix report was not found beside the run."
    scores = markdown_table(headline_table(summaries)) if summaries else "Not evaluated."
    body = f"""
# {name}

`{profile.model.id}` fine-tuned with workings to show its work: it answers with
its reasoning first and its final answer second, in tags a program can check. This is
{f'the base with the LoRA adapter merged into its weights ({dtype or profile.model.dtype})' if merged else 'the LoRA adapter'}
of the `{profile.name}` profile{f', after its stages {stages}' if len(runs) > 1 else ''}.

## Prompt format

Gemma's chat template, with the instruction in the user turn (Gemma has no system role):

```text
{render_prompt(question, tokenizer)}```

The model answers:

```text
{example}
```

Generation stops at `<end_of_turn>` (see `generation_config.json`).

## How to load

```python
{loading_code(profile.model, name, merged)}
```

## Training data

{mix}

## Training

{training}

## Evaluation

Greedy decoding; rates in percent with Wilson 95% intervals; accuracy compares the parsed answer
with the gold by value.

{scores}

## Limitations

The accuracies above are those of the benchmarks named, at the sizes given; a small benchmark's
interval is wide. The model was trained on arithmetic word problems, competition mathematics and
medical questions: elsewhere its reasoning is untested. Free-text answers (medical) are not graded.
It writes its work in English only.
{'' if is_tiny(profile.model) else GEMMA_TERMS}"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))
