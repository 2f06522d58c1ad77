"""Preference optimization after SFT: DPO (TRL's ``DPOTrainer``, any of its loss types) or SimPO (TRL's
``CPOTrainer`` with ``loss_type="simpo"``, the method of the Tunix hackathon's second place), on pairs
that the previous stage's own replies make.

The pairs are on-policy and need no judge: the adapter the stage starts from answers each candidate
prompt a few times (sampled), the project's verifiable rewards score each reply, and a reply that is
right and in the strict format is chosen over one that is wrong or malformed, for the same prompt and
layout. ``preference.gold_chosen`` lets the row's own worked solution be chosen where no reply was
(off-policy, and said so in the report). DPO's reference is the starting adapter itself: TRL, given
a PEFT model, copies the adapter as a frozen ``ref`` adapter; SimPO needs no reference.

The run folder, resume, overwrite, the divergence guard, TensorBoard and checkpoints are every
stage's (:func:`workings.train.runs.run_stage`); ``pairs.jsonl`` keeps the pairs, so a resumed
run trains on the pairs it made.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workings.config.schema import Profile, ProfileError
from workings.config.stages import stage_of_command
from workings.core.chat import END_OF_TURN
from workings.core.rewards import correctness, strict_format
from workings.evaluation.generate import SamplingConfig, generate
from workings.models.loading import renamed_checkpointing_attribute_quiet
from workings.train.prompts import candidate_prompts
from workings.train.runs import (StageRun, TrainResult, adapter_dtype_on_save, check_environment, divergence_guard,
                                 continued_policy, keep_adapter_dtypes_on_resume, made_once, options_list, origin_stage,
                                 run_processes, run_seconds, run_stage, start_adapter)

log = logging.getLogger(__name__)

PAIRS_FILE, PAIRS_REPORT = "pairs.jsonl", "pairs.json"  # the pairs trained on, and how they were made
NO_CHOSEN, NO_REJECTED = "no reply right and strict", "every reply right and strict"
GOLD = "pairs with the worked solution chosen"
PAIR_COUNTS = ("prompts", "pairs", GOLD, NO_CHOSEN, NO_REJECTED)  # the pairs report's counts per source and layout


def preference_pairs(candidates: Sequence[dict[str, Any]], replies: Sequence[Sequence[dict[str, Any]]],
                     per_prompt: int, gold: Sequence[str | None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Pairs of one candidate's replies: each chosen reply (right and strict) against a rejected one
    (wrong or malformed), at most ``per_prompt`` of them, distinct replies first; with ``gold`` (a
    worked solution per candidate, or None) that solution is chosen where no reply was. The report
    counts, per source and layout, the prompts asked, the pairs made and why a prompt made none.

    >>> asked = [{"id": "a", "source": "gsm", "layout": "project", "prompt": "P"}] * 2
    >>> replies = [[{"text": "R", "right": True, "strict": True}, {"text": "W", "right": False, "strict": True}],
    ...            [{"text": "R", "right": True, "strict": True}] * 2]
    >>> pairs, report = preference_pairs(asked, replies, per_prompt=1)
    >>> [(p["chosen"], p["rejected"]) for p in pairs], report["by_source_layout"]["gsm/project"]
    ([('R<end_of_turn>', 'W<end_of_turn>')], {'prompts': 2, 'pairs': 1, 'every reply right and strict': 1})
    """
    pairs: list[dict[str, Any]] = []
    counts: dict[str, Counter] = {}
    for i, (row, answers) in enumerate(zip(candidates, replies, strict=True)):
        tally = counts.setdefault(f"{row['source']}/{row['layout']}", Counter())
        tally["prompts"] += 1
        chosen = list(dict.fromkeys(r["text"] for r in answers if r["right"] and r["strict"]))
        rejected = list(dict.fromkeys(r["text"] for r in answers if not (r["right"] and r["strict"])))
        origin = "policy"
        if not chosen and gold is not None and gold[i] is not None and rejected:
            chosen, origin = [gold[i]], "gold"
        if not chosen or not rejected:
            tally[NO_CHOSEN if not chosen else NO_REJECTED] += 1
            continue
        made = [(chosen[k % len(chosen)], rejected[k % len(rejected)])
                for k in range(min(per_prompt, max(len(chosen), len(rejected))))]
        for good, bad in made:
            pairs.append({"id": row["id"], "source": row["source"], "layout": row["layout"], "prompt": row["prompt"],
                          "chosen": good + END_OF_TURN, "rejected": bad + END_OF_TURN, "chosen_from": origin})
        tally["pairs"] += len(made)
        if origin == "gold":
            tally[GOLD] += len(made)
    report = {"candidates": len(candidates), "pairs": len(pairs),
              "by_source_layout": {key: {k: v for k, v in tally.items() if v} for key, tally in counts.items()}}
    return pairs, report


def sampled_replies(profile: Profile, model: Any, tokenizer: Any, candidates: Sequence[dict[str, Any]],
                    sampling: SamplingConfig, progress: bool, processes: Any) -> list[list[dict[str, Any]]]:
    """``preference.samples`` sampled replies to each candidate, in its layout, each scored right
    (the correctness reward) and strict (the strict-format reward). Several processes each sample
    their share of the batches and gather the rest, so every process holds the same replies."""
    from accelerate.utils import gather_object

    samples = profile.preference.samples
    share = (processes.process_index, processes.num_processes)
    scored: dict[tuple[int, int], dict[str, Any]] = {}
    for layout in dict.fromkeys(c["layout"] for c in candidates):
        index = [i for i, c in enumerate(candidates) if c["layout"] == layout]
        asked = [(i, k) for i in index for k in range(samples)]
        answers = generate(model, tokenizer, [candidates[i]["question"] for i, _ in asked], sampling,
                           progress and processes.is_main_process, ids=[f"{candidates[i]['id']}#{k}" for i, k in asked],
                           layout=layout, share=share)
        mine = [(key, reply) for key, reply in zip(asked, answers) if reply is not None]
        texts = [reply.text for _, reply in mine]
        right = correctness(texts, gold=[candidates[i]["gold"] for (i, _), _ in mine])
        strict = strict_format(texts)
        for n, (key, reply) in enumerate(mine):
            scored[key] = {"text": reply.text, "right": right[n] == 1.0, "strict": strict[n] == 1.0,
                           "truncated": reply.truncated}
    if processes.num_processes > 1:
        scored = {k: v for part in gather_object([scored]) for k, v in part.items()}
    return [[scored[(i, k)] for k in range(samples)] for i in range(len(candidates))]


def make_pairs(profile: Profile, model: Any, tokenizer: Any, train_rows: Any, args: Any, progress: bool,
               processes: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The pairs of the candidates (:func:`~workings.train.prompts.candidate_prompts` of ``preference``)
    from the starting adapter's sampled replies, and the report of how they were made."""
    settings = profile.preference
    candidates = candidate_prompts(profile, train_rows, tokenizer, settings, "preference")
    sampling = SamplingConfig(max_new_tokens=settings.max_new_tokens or profile.evaluation.max_new_tokens,
                              temperature=settings.temperature, top_p=settings.top_p, seed=args.seed,
                              batch_size=profile.evaluation.batch_size)
    start = time.perf_counter()
    model.eval()
    replies = sampled_replies(profile, model, tokenizer, candidates, sampling, progress, processes)
    gold = None
    if settings.gold_chosen:  # the row's worked solution, as SFT trained on it (without the turn's end)
        completions = {r["id"]: r["completion"] for r in train_rows}
        gold = [completions[c["id"]].rstrip("\n").removesuffix(END_OF_TURN) for c in candidates]
    pairs, report = preference_pairs(candidates, replies, settings.pairs_per_prompt, gold)
    report.update(samples=settings.samples, temperature=settings.temperature, top_p=settings.top_p,
                  right_and_strict=sum(r["right"] and r["strict"] for answers in replies for r in answers),
                  replies=sum(len(answers) for answers in replies), seconds=round(time.perf_counter() - start, 1))
    return pairs, report


def preference_config(profile: Profile, stage: str, out_dir: str | Path, *, progress: bool = True) -> Any:
    """The run's TRL config (``DPOConfig``, or ``CPOConfig`` with ``loss_type="simpo"``) and what the run sets itself."""
    from workings.config.stages import stage as registered

    return registered(stage).trainer_config(profile, output_dir=str(out_dir), use_cpu=profile.training.device == "cpu",
                                            disable_tqdm=not progress)


def build_preference_trainer(profile: Profile, stage: str, mix_dir: str | Path, out_dir: str | Path, adapter: str | Path,
                             *, pairs: list[dict[str, Any]] | None = None, progress: bool = True,
                             callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Everything :func:`train` does before ``trainer.train()``; the trainer and the pairs with their report.
    ``pairs`` (those of an interrupted run) skips making them again."""
    import datasets
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PrinterCallback
    from transformers.integrations import TensorBoardCallback

    from workings.models.loading import check_adapter
    from workings.models.qlora import adapter_weights_to_float32

    check_environment(profile, stage)
    check_adapter(adapter)
    args = preference_config(profile, stage, out_dir, progress=progress)
    processes = run_processes(profile)
    model, tokenizer, train_rows = continued_policy(profile, mix_dir, adapter, args)
    report: dict[str, Any] = {"pairs": len(pairs or [])}
    if pairs is None:
        pairs, report = make_pairs(profile, model, tokenizer, train_rows, args, progress, processes)
    if not pairs:
        raise ProfileError(f"{profile.path or profile.name}: preference: no pairs: of {report.get('replies')} sampled "
                           f"replies {report.get('right_and_strict')} were right and strict "
                           f"({json.dumps(report.get('by_source_layout'))}); raise preference.samples or "
                           "preference.candidates, or set preference.gold_chosen: true")
    log.info("preference pairs: %d from %s candidates", len(pairs), report.get("candidates", "the saved pairs'"))
    tokenizer.eos_token = END_OF_TURN  # a reply ends at <end_of_turn>, as SFT trained it: nothing is appended after
    model.config.get_text_config().eos_token_id = tokenizer.eos_token_id  # as SFT's trainer sets it
    dataset = datasets.Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    tensorboard = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard")))
    guards = [divergence_guard(profile.training.divergence_factor), adapter_dtype_on_save(profile.lora.save_dtype),
              tensorboard, *(callbacks or [])]
    bars = datasets.is_progress_bar_enabled()
    if not progress:  # TRL's tokenizing passes
        datasets.disable_progress_bars()
    try:
        with renamed_checkpointing_attribute_quiet():
            if stage == "simpo":
                with warnings.catch_warnings():  # TRL keeps CPO among its experimental trainers and says so
                    warnings.simplefilter("ignore")
                    from trl.experimental.cpo import CPOTrainer
                trainer = CPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=guards)
            else:
                from trl import DPOTrainer

                trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                     callbacks=guards)
    finally:
        if bars:
            datasets.enable_progress_bars()
    adapter_weights_to_float32(trainer.model)  # TRL cast them to bfloat16 over a quantized base
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return keep_adapter_dtypes_on_resume(trainer), {"pairs": pairs, "report": report}


def train(profile: Profile, mix_dir: str | Path, out_dir: str | Path, start_from: str | Path | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True, stage: str | None = None,
          callbacks: list[Any] | None = None) -> TrainResult:
    """The preference stage (``stage``: ``dpo`` or ``simpo``, by default the one of the profile's chain,
    else ``dpo``) on ``start_from`` (default: the adapter of the stage before it in the chain);
    checkpoints, logs, ``pairs.jsonl`` and ``adapter/`` to ``out_dir``, by every stage's run folder rules."""
    if stage is None:
        stage = stage_of_command(profile, "prefer").name
    adapter = Path(start_from) if start_from is not None else start_adapter(profile, stage)
    if adapter is None:
        raise ProfileError(f"{profile.path or profile.name}: training.stages: {stage} has no stage before it")
    processes = run_processes(profile)

    def build(work_dir: Path, resumed_from: Path | None, callbacks: list[Any]) -> StageRun:
        def with_pairs(saved: list[dict[str, Any]] | None) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
            trainer, made = build_preference_trainer(profile, stage, mix_dir, work_dir, adapter, pairs=saved,
                                                     progress=progress, callbacks=callbacks)
            return trainer, made["pairs"], made["report"]

        trainer, _, report = made_once(work_dir, resumed_from, (PAIRS_FILE, PAIRS_REPORT), processes, with_pairs)

        def summarise(trainer: Any, output: Any, seconds: float) -> dict[str, Any]:
            logged = [h for h in trainer.state.log_history if "loss" in h and "rewards/margins" in h]
            keys = {"loss": "loss", "reward_margin": "rewards/margins", "reward_accuracy": "rewards/accuracies"}
            return {"pairs": report,
                    "first_logged": {k: logged[0][v] for k, v in keys.items()} if logged else {},
                    "last_logged": {k: logged[-1][v] for k, v in keys.items()} if logged else {},
                    "preference": {k: getattr(profile.preference, k) for k in (
                        "sources", "candidates", "samples", "pairs_per_prompt", "layouts", "temperature", "top_p",
                        "max_new_tokens", "gold_chosen")}}

        return StageRun(trainer, summarise, lambda summary: run_card(profile, summary))

    return run_stage(profile, stage, mix_dir, out_dir, adapter, resume=resume, overwrite=overwrite, build=build,
                     callbacks=callbacks)


def train_dpo(profile: Profile, mix_dir: str | Path, out_dir: str | Path, start_from: str | Path | None = None,
              **kwargs: Any) -> TrainResult:
    """The ``dpo`` stage (:func:`train`)."""
    return train(profile, mix_dir, out_dir, start_from, stage="dpo", **kwargs)


def train_simpo(profile: Profile, mix_dir: str | Path, out_dir: str | Path, start_from: str | Path | None = None,
                **kwargs: Any) -> TrainResult:
    """The ``simpo`` stage (:func:`train`)."""
    return train(profile, mix_dir, out_dir, start_from, stage="simpo", **kwargs)


def compared_pipelines(stage: str = "dpo") -> dict[str, list[str]]:
    """The pipelines a preference stage is judged among: SFT alone, then each later stage, and both
    (the preference stage before GRPO), by name, each as its path of stages."""
    name = stage.upper() if stage == "dpo" else "SimPO"
    return {"SFT": ["sft"], f"SFT + {name}": ["sft", stage], "SFT + GRPO": ["sft", "grpo"],
            f"SFT + {name} + GRPO": ["sft", stage, "grpo"]}


def pairs_frame(report: dict[str, Any]) -> Any:
    """The pairs report as a table: one row per source and layout, the prompts asked, the pairs made
    and why a prompt made none."""
    import pandas as pd

    rows = {key: {c: counts.get(c, 0) for c in PAIR_COUNTS} for key, counts in (report.get("by_source_layout") or {}).items()}
    table = pd.DataFrame(rows, index=list(PAIR_COUNTS)).T
    if not any(r[GOLD] for r in rows.values()):
        table = table.drop(columns=[GOLD])
    table.index.name = "source / layout"
    return table


def _pairs_table(report: dict[str, Any]) -> str:
    rows = "\n".join(f"| {key} | " + " | ".join(str(c.get(r, 0)) for r in PAIR_COUNTS) + " |"
                     for key, c in (report.get("by_source_layout") or {}).items())
    head = "| source/layout | " + " | ".join(PAIR_COUNTS) + " |\n|" + " --- |" * (len(PAIR_COUNTS) + 1)
    return f"{head}\n{rows}" if rows else ""


def describe(profile: Profile, run: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The paragraph of an export's card on this stage, from its ``run.json``."""
    stage = run.get("stage", "dpo")
    started = run.get("started_from") or {}
    origin = origin_stage(run, before)
    pairs = run.get("pairs") or {}
    loss = (run.get("dpo") or {}).get("loss_type", "sigmoid")
    method = ("SimPO (TRL's `CPOTrainer`, `loss_type: simpo`)" if stage == "simpo" else
              f"DPO with TRL's `DPOTrainer` (loss {', '.join(loss) if isinstance(loss, list) else loss})")
    first, last = run.get("first_logged") or {}, run.get("last_logged") or {}
    progress = (f" Loss {first['loss']:.3f} -> {last['loss']:.3f}; reward margin {first['reward_margin']:.3f} -> "
                f"{last['reward_margin']:.3f}; pairs ranked right {first['reward_accuracy']:.2f} -> "
                f"{last['reward_accuracy']:.2f} (first and last logged step)." if first and last else "")
    options = options_list(run.get(stage) or getattr(profile, stage))
    return f"""{method}, continuing the adapter of the {origin} stage (weights digest
{started.get('digest', 'not recorded')}): {run['steps']:,} steps on {pairs.get('pairs', 0)} pairs of its own sampled
replies ({pairs.get('samples', '?')} per prompt of {pairs.get('candidates', '?')}), a reply right and in the strict format
chosen over a wrong or malformed one.{progress}

{_pairs_table(pairs)}

Trainer options (`{stage}:` of the profile):

{options or '- (the project defaults)'}"""


def run_card(profile: Profile, summary: dict[str, Any]) -> str:
    """The run folder's README: what it started from, the pairs it made, how training went."""
    from workings.models.loading import loading_code

    return f"""# {summary['stage'].upper()} run of profile `{profile.name}`

LoRA adapter (`adapter/`) for `{profile.model.id}`, trained by workings.

{describe(profile, summary, None)}

## Loading

The adapter has the shape of the adapter it started from and loads the same way, from this folder:

```python
{loading_code(profile.model, "adapter")}
```
"""


def result_line(result: TrainResult) -> str:
    """What ``workings prefer`` prints when the run has finished."""
    s = result.summary
    resumed = f" (resumed from {s['resumed_from']})" if s["resumed_from"] else ""
    first, last = s.get("first_logged") or {}, s.get("last_logged") or {}
    trend = (f"; loss {first['loss']:.3f} -> {last['loss']:.3f}, reward margin {first['reward_margin']:.3f} -> "
             f"{last['reward_margin']:.3f}" if first and last else "")
    return (f"{result.adapter_dir}: {s['steps']} {s['stage'].upper()} steps{resumed} in {run_seconds(s)} on "
            f"{s['pairs']['pairs']} pairs (of {s['pairs'].get('candidates', '?')} prompts){trend}")
