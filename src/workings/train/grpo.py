"""GRPO after SFT with TRL's ``GRPOTrainer``: prompts chosen by difficulty, verifiable rewards, the SFT
adapter trained further.

GRPO continues the SFT adapter rather than training a new one on the merged SFT model. Merging into
a 4-bit base would quantize the SFT update along with the base (QLoRA keeps the base frozen in NF4
and the update in the adapter, unquantized), while continuing keeps the SFT policy exactly as it was
trained. TRL, given a PEFT model with ``beta > 0``, copies the adapter as a frozen ``ref`` adapter, so
the KL term is taken against the SFT policy itself, not the base. And what comes out has the shape of
the SFT adapter, so evaluation, export and the Tunix check take it unchanged. The adapter trains in
float32 (:func:`workings.models.qlora.continue_adapter` says why).

:func:`train_grpo` runs a profile's ``grpo:`` and ``reinforcement:`` sections with the same run
folder rules as SFT: checks before loading, checkpoints, ``--resume``, ``--overwrite`` that replaces
the earlier run only once the new one has finished, the divergence guard, TensorBoard.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workings.config.schema import Profile, ProfileError
from workings.core.rewards import correctness, reward_functions
from workings.evaluation.generate import SamplingConfig, generate, nucleus_sampler, vllm_available
from workings.models.loading import renamed_checkpointing_attribute_quiet
from workings.train.prompts import candidate_prompts
from workings.train.runs import (StageRun, TrainResult, adapter_dtype_on_save, check_environment, divergence_guard,
                                 continued_policy, keep_adapter_dtypes_on_resume, made_once, options_list, origin_stage,
                                 run_processes, run_seconds, run_stage, start_adapter, train_profile_stage)

log = logging.getLogger(__name__)


def pass_counts(model: Any, tokenizer: Any, candidates: Sequence[dict[str, Any]], samples: int,
                sampling: SamplingConfig, progress: bool = False, share: tuple[int, int] = (0, 1)) -> list[int]:
    """How many of ``samples`` sampled replies to each candidate earn the correctness reward;
    with ``share`` only those of this process's share of the batches (:func:`generate`)."""
    counts = [0] * len(candidates)
    for layout in dict.fromkeys(c["layout"] for c in candidates):
        index = [i for i, c in enumerate(candidates) if c["layout"] == layout]
        asked = [(i, k) for i in index for k in range(samples)]
        replies = generate(model, tokenizer, [candidates[i]["question"] for i, _ in asked], sampling, progress,
                           ids=[f"{candidates[i]['id']}#{k}" for i, k in asked], layout=layout, share=share)
        answered = [(i, reply) for (i, _), reply in zip(asked, replies) if reply is not None]
        rewards = correctness([r.text for _, r in answered], gold=[candidates[i]["gold"] for i, _ in answered])
        for (i, _), reward in zip(answered, rewards):
            counts[i] += reward == 1.0
    return counts


def select_by_difficulty(candidates: Sequence[dict[str, Any]], passes: Sequence[int],
                         samples: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Keep the candidates solved sometimes but not always; the kept rows and a report of what was dropped and why.

    >>> kept, report = select_by_difficulty([{"id": "a", "layout": "seed"}, {"id": "b", "layout": "seed"},
    ...                                      {"id": "c", "layout": "project"}], [0, 2, 4], samples=4)
    >>> [k["id"] for k in kept], report["dropped"]
    (['b'], {'never solved': 1, 'always solved': 1})
    """
    kept, dropped, by_layout = [], Counter(), {}
    for row, n in zip(candidates, passes, strict=True):
        reason = "never solved" if n == 0 else "always solved" if n == samples else None
        counts = by_layout.setdefault(row["layout"], Counter())
        counts[reason or "kept"] += 1
        if reason:
            dropped[reason] += 1
        else:
            kept.append({**row, "pass_rate": n / samples})
    report = {"candidates": len(candidates), "samples": samples, "kept": len(kept),
              "dropped": {k: dropped[k] for k in ("never solved", "always solved")},
              "by_layout": {layout: {k: c[k] for k in ("kept", "never solved", "always solved")} for layout, c in by_layout.items()}}
    return kept, report


def grpo_config(profile: Profile, out_dir: str | Path, *, progress: bool = True) -> Any:
    """The run's ``trl.GRPOConfig``: the profile's ``grpo`` section and what the run sets itself.
    vLLM generation falls back to transformers, with a warning, where vLLM is not installed."""
    args = profile.grpo_args(output_dir=str(out_dir), use_cpu=profile.training.device == "cpu",
                             disable_tqdm=not progress)
    if args.use_vllm and not vllm_available():
        log.warning("grpo.use_vllm: vLLM is not installed; generating with transformers instead")
        args.use_vllm = False
    return args


def default_sft_adapter(profile: Profile) -> Path:
    """The adapter GRPO continues: ``reinforcement.adapter``, else that of the stage before GRPO in the chain."""
    adapter = start_adapter(profile, "grpo")
    if adapter is None:  # the chain's validation keeps GRPO from coming first
        raise ProfileError(f"{profile.path or profile.name}: training.stages: grpo has no stage before it")
    return adapter


def choose_prompts(profile: Profile, model: Any, tokenizer: Any, train_rows: Any, args: Any, progress: bool,
                   processes: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The candidates (:func:`candidate_prompts`) the SFT model solves sometimes but not always, and
    the report of what was dropped; every candidate when ``reinforcement.difficulty_samples`` is 0.

    Several processes (accelerate's ``PartialState``) each sample their share of the batches and
    add up the counts, so every process keeps the prompts one process alone would keep.
    """
    from accelerate.utils import gather_object

    settings = profile.reinforcement
    candidates = candidate_prompts(profile, train_rows, tokenizer, profile.reinforcement, "reinforcement")
    if not settings.difficulty_samples:
        return candidates, {"candidates": len(candidates), "samples": 0, "kept": len(candidates)}
    sampling = SamplingConfig(max_new_tokens=args.max_completion_length, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed, batch_size=profile.evaluation.batch_size)
    start = time.perf_counter()
    model.eval()
    share = (processes.process_index, processes.num_processes)
    passes = pass_counts(model, tokenizer, candidates, settings.difficulty_samples, sampling,
                         progress and processes.is_main_process, share)
    if processes.num_processes > 1:
        passes = [sum(column) for column in zip(*gather_object([passes]), strict=True)]
    selection, report = select_by_difficulty(candidates, passes, settings.difficulty_samples)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return selection, report


def draw_rollouts_in_the_nucleus(trainer: Any) -> None:
    """Have the trainer's rollouts drawn by :func:`~workings.evaluation.generate.nucleus_sampler`,
    as evaluation's are: the distribution of ``generate``'s temperature, top-p and multinomial, in a
    third of the time on Gemma 3's vocabulary. Nothing changes where the rollouts come from vLLM or
    transformers' paged generation, or where a setting the sampler does not apply (``top_k``,
    ``min_p``, ``repetition_penalty``, ``generation_kwargs``) asks for transformers' own sampling.
    """
    from transformers import GenerationConfig, LogitsProcessorList

    args = trainer.args
    if (args.use_vllm or args.use_transformers_paged or args.top_k or args.min_p is not None
            or args.repetition_penalty != 1.0 or args.generation_kwargs):
        return
    # generate decodes greedily and its argmax takes the sampler's draw; TRL scales the policy's
    # log-probabilities by args.temperature itself, so the loss sees the distribution drawn from.
    kwargs = {**trainer.generation_kwargs, "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
              "min_p": None}
    trainer.generation_kwargs, trainer.generation_config = kwargs, GenerationConfig(**kwargs, disable_compile=True)
    sampler = LogitsProcessorList([nucleus_sampler(args.temperature, args.top_p)])
    trainer.model.generate = functools.partial(trainer.model.generate, logits_processor=sampler)


def build_grpo_trainer(profile: Profile, mix_dir: str | Path, out_dir: str | Path, adapter: str | Path, *,
                       selection: list[dict[str, Any]] | None = None, progress: bool = True,
                       callbacks: list[Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """Everything :func:`train_grpo` does before ``trainer.train()``; the trainer and the prompt report.

    ``selection`` (the prompts of an interrupted run) skips the difficulty estimate, so a resumed
    run trains on the prompts it started with.
    """
    import datasets
    from torch.utils.tensorboard import SummaryWriter
    from transformers import PrinterCallback
    from transformers.integrations import TensorBoardCallback
    from trl import GRPOTrainer

    from workings.models.loading import check_adapter
    from workings.models.qlora import adapter_weights_to_float32

    check_environment(profile, "grpo")
    check_adapter(adapter)
    args = grpo_config(profile, out_dir, progress=progress)
    settings = profile.reinforcement
    processes = run_processes(profile)
    model, tokenizer, train_rows = continued_policy(profile, mix_dir, adapter, args)
    if selection is None:
        selection, report = choose_prompts(profile, model, tokenizer, train_rows, args, progress, processes)
    else:
        report = {"kept": len(selection)}  # the first session's report is read back from prompts.json
    if len(selection) * args.num_generations < args.generation_batch_size:
        raise ProfileError(f"{profile.path or profile.name}: reinforcement: {len(selection)} prompts kept, fewer than one "
                           f"generation batch ({args.generation_batch_size // args.num_generations} prompts); "
                           "raise reinforcement.candidates")
    log.info("GRPO prompts: %d kept of %s candidates", len(selection), report.get("candidates", "the saved selection's"))
    rewards = reward_functions(settings.rewards, max_completion_length=args.max_completion_length,
                               overlong_buffer=settings.overlong_buffer)
    columns = ("id", "layout", "question", "gold", "prompt")
    dataset = datasets.Dataset.from_list([{k: row[k] for k in columns} for row in selection])
    tensorboard = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard")))
    with renamed_checkpointing_attribute_quiet():
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[divergence_guard(None), adapter_dtype_on_save(profile.lora.save_dtype), tensorboard,
                                         *(callbacks or [])])
    adapter_weights_to_float32(trainer.model)  # TRL cast them to bfloat16 over a quantized base
    draw_rollouts_in_the_nucleus(trainer)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return keep_adapter_dtypes_on_resume(trainer), {"report": report, "selection": selection}


PROMPTS_FILE, PROMPTS_REPORT = "prompts.jsonl", "prompts.json"  # the chosen prompts, and how they were chosen


def train_grpo(profile: Profile, mix_dir: str | Path, out_dir: str | Path, adapter: str | Path | None = None, *,
               resume: bool = False, overwrite: bool = False, progress: bool = True,
               callbacks: list[Any] | None = None) -> TrainResult:
    """GRPO on ``adapter`` (default: the adapter of the stage before GRPO in the profile's chain);
    checkpoints, logs, ``prompts.jsonl`` and ``adapter/`` to ``out_dir``.

    The run folder follows every stage's rules (:func:`workings.train.runs.run_stage`): nothing is
    trained over without ``resume`` or ``overwrite``; a finished run with the same settings is
    returned as it is; one process at a time trains in it. A resumed run trains on the prompts it
    chose and reports how they were chosen (``prompts.json``) as the first session did.
    """
    adapter = Path(adapter) if adapter is not None else default_sft_adapter(profile)
    processes = run_processes(profile)

    def build(work_dir: Path, resumed_from: Path | None, callbacks: list[Any]) -> StageRun:
        def with_prompts(saved: list[dict[str, Any]] | None) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
            trainer, prompts = build_grpo_trainer(profile, mix_dir, work_dir, adapter, selection=saved, progress=progress,
                                                  callbacks=callbacks)
            return trainer, prompts["selection"], prompts["report"]

        trainer, _, report = made_once(work_dir, resumed_from, (PROMPTS_FILE, PROMPTS_REPORT), processes, with_prompts)

        def summarise(trainer: Any, output: Any, seconds: float) -> dict[str, Any]:
            history = trainer.state.log_history
            rewards = {name: [h[f"rewards/{name}/mean"] for h in history if f"rewards/{name}/mean" in h]
                       for name in profile.reinforcement.rewards}
            return {
                "prompts": report,
                "rewards_first_logged": {k: v[0] for k, v in rewards.items() if v},
                "rewards_last_logged": {k: v[-1] for k, v in rewards.items() if v},
                "reinforcement": {k: getattr(profile.reinforcement, k) for k in ("rewards", "layouts", "candidates",
                                                                                  "difficulty_samples", "overlong_buffer")},
            }

        return StageRun(trainer, summarise, lambda summary: grpo_run_card(profile, summary))

    return run_stage(profile, "grpo", mix_dir, out_dir, adapter, resume=resume, overwrite=overwrite, build=build,
                     callbacks=callbacks)


def grpo_run_card(profile: Profile, summary: dict[str, Any]) -> str:
    """The GRPO run folder's README: what it started from, the prompts it chose, its rewards, from the run's own files."""
    from workings.models.loading import loading_code

    prompts = summary["prompts"]
    by_layout = "\n".join(f"| {layout} | {c['kept']} | {c['never solved']} | {c['always solved']} |"
                           for layout, c in (prompts.get("by_layout") or {}).items())
    chosen = (f"{prompts['kept']} of {prompts['candidates']} candidate prompts kept: those the SFT model solved in some "
              f"but not all of {prompts['samples']} samples" if prompts.get("samples") else
              f"{prompts['kept']} prompts, all candidates (no difficulty selection)")
    table = ("\n\n| layout | kept | never solved | always solved |\n| --- | --- | --- | --- |\n" + by_layout) if by_layout else ""
    rewards = "\n".join(f"| {name} | {summary['rewards_first_logged'][name]:.3f} | {value:.3f} |"
                         for name, value in summary["rewards_last_logged"].items())
    options = options_list(profile.grpo)
    return f"""# GRPO run of profile `{profile.name}`

LoRA adapter (`adapter/`) for `{profile.model.id}`, trained by workings with TRL's `GRPOTrainer` from the
SFT adapter `{summary['started_from']['adapter']}` (weights digest {summary['started_from']['digest']}),
on rewards a program checks: {', '.join(profile.reinforcement.rewards)}.

- Steps: {summary['steps']} of {summary['max_steps']}; adapter saved in {profile.lora.save_dtype}.
- Prompts: {chosen}.{table}

## Rewards (mean over a step's replies), first and last logged

| reward | first | last |
| --- | --- | --- |
{rewards}

## Trainer options (`grpo:` of the profile, over the project's defaults)

{options}

## Loading

The adapter has the shape of the SFT adapter it started from and loads the same way, from this folder:

```python
{loading_code(profile.model, "adapter")}
```
"""


train = train_grpo  # the name every stage module trains by (workings.config.stages.Stage.module)


def result_line(result: TrainResult) -> str:
    """What ``workings grpo`` prints when the run has finished."""
    s = result.summary
    prompts = s["prompts"]
    resumed = f" (resumed from {s['resumed_from']})" if s["resumed_from"] else ""
    rewards = ", ".join(f"{name} {s['rewards_first_logged'][name]:.2f} -> {s['rewards_last_logged'][name]:.2f}"
                        for name in s["rewards_last_logged"])
    chosen = f" (of {prompts['candidates']} candidates)" if prompts.get("candidates") is not None else ""
    return (f"{result.adapter_dir}: {s['steps']} GRPO steps{resumed} in {run_seconds(s)} on {prompts['kept']} prompts"
            f"{chosen}; rewards, first and last logged: {rewards}")


def describe(profile: Profile, run: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The GRPO paragraph of an export's card, from the run's ``run.json`` (and the one it started from)."""
    started = run.get("started_from") or {}
    origin = origin_stage(run, before)
    prompts = run.get("prompts") or {}
    chosen = (f"{prompts['kept']} prompts kept of {prompts['candidates']} candidates (those its starting model "
              f"solved in some but not all of {prompts['samples']} samples)" if prompts.get("samples") else
              f"{prompts.get('kept', 'its')} prompts")
    rewards = "\n".join(f"| {name} | {run['rewards_first_logged'][name]:.3f} | {value:.3f} |"
                        for name, value in (run.get("rewards_last_logged") or {}).items())
    table = f"\n\n| reward | first logged | last logged |\n| --- | --- | --- |\n{rewards}" if rewards else ""
    options = options_list(run.get("grpo") or profile.grpo)
    return f"""GRPO with TRL's `GRPOTrainer`, continuing the adapter of the {origin} stage (weights digest
{started.get('digest', 'not recorded')}): {run['steps']:,} steps of {run['max_steps']:,} on {chosen}, rewarded by
programs that check the reply: {', '.join((run.get('reinforcement') or {}).get('rewards', profile.reinforcement.rewards))}.
Mean reward of a step's replies, first and last logged:{table}

Trainer options (`trl.GRPOConfig`):

{options}"""


def run_grpo_profile(profile: Profile, *, progress: bool = True) -> TrainResult:
    """GRPO the way the book runs it (:func:`workings.train.runs.train_profile_stage`)."""
    return train_profile_stage(profile, "grpo", progress=progress)
