"""Supervised fine-tuning with TRL's ``SFTTrainer`` on the mix of the data-curation stage.

One call, :func:`train`, runs a profile: it checks the profile against the machine and
the mix before loading anything, loads the (quantized) base, wraps it with LoRA, trains
on prompt/completion rows with the loss on completion tokens only, evaluates on held-out
rows, logs to TensorBoard, checkpoints, resumes, and saves the adapter.

Completions end exactly at ``<end_of_turn>`` (:data:`workings.core.chat.END_OF_TURN`): it is the
trainer's ``eos_token``, the newline after it is never a target, and no ``<eos>`` is appended (the
model never sees one after a turn in chat).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from workings.config.schema import Profile, ProfileError
from workings.core.chat import END_OF_TURN, tokenizer_adds_bos
from workings.train.runs import (StageRun, TrainResult, adapter_dtype_on_save, check_environment, check_loss, check_mix,
                                 divergence_guard, keep_adapter_dtypes_on_resume, options_list, run_seconds, run_stage,
                                 train_profile_stage, whole_run_loss)

log = logging.getLogger(__name__)


def training_rows(rows: Any, tokenizer: Any) -> Any:
    """Prompt/completion columns for TRL, each completion ending exactly at ``<end_of_turn>``.

    The mix's prompts are rendered by the chat template and so begin with ``<bos>``. TRL
    tokenizes plain-text prompts with the tokenizer's special tokens, and Gemma's tokenizer
    adds ``<bos>`` itself, so the rendered one is dropped here: the model sees one ``<bos>``,
    exactly as at inference.
    """
    bos = tokenizer.bos_token
    adds_bos = tokenizer_adds_bos(tokenizer)

    def cut(row: dict[str, str]) -> dict[str, str]:
        completion = row["completion"].rstrip("\n")
        if not completion.endswith(END_OF_TURN):
            raise ValueError(f"row {row['id']}: completion does not end with {END_OF_TURN}: {completion[-40:]!r}")
        prompt = row["prompt"]
        if adds_bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]
        return {"prompt": prompt, "completion": completion}

    return rows.map(cut, remove_columns=[c for c in rows.column_names if c not in ("prompt", "completion")])


def completion_labels(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Input ids and labels of one row as the trainer builds them: -100 (no loss) on the prompt,
    the token itself on every completion token up to ``<end_of_turn>``.

    ``prompt`` is the rendered prompt with its one ``<bos>``; a test checks this against TRL's collator.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion.rstrip("\n"), add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def sft_config(profile: Profile, out_dir: str | Path, *, progress: bool = True) -> Any:
    """The run's ``trl.SFTConfig``: the profile's ``sft`` section, and what the run sets itself
    (output folder, device, progress bars, completion-only loss ending at ``<end_of_turn>``)."""
    return profile.sft_args(output_dir=str(out_dir), use_cpu=profile.training.device == "cpu",
                            disable_tqdm=not progress, eos_token=END_OF_TURN)


def build_trainer(profile: Profile, mix_dir: str | Path, out_dir: str | Path, *, progress: bool = True,
                  callbacks: list[Any] | None = None) -> Any:
    """Everything :func:`train` does before ``trainer.train()``: checks, data, model, trainer."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    from trl import SFTTrainer

    from workings.data.mix import load_mix
    from workings.models.loading import load_base_model, load_tokenizer
    from workings.models.qlora import prepare_for_training

    check_environment(profile)
    train_rows, heldout_rows, report = load_mix(mix_dir)
    check_mix(profile, train_rows, report)
    eval_rows = profile.training.eval_rows
    if eval_rows is not None and eval_rows < len(heldout_rows):
        heldout_rows = heldout_rows.select(range(eval_rows))

    import transformers

    args = sft_config(profile, out_dir, progress=progress)
    if args.padding_free and not args.packing:
        # TRL refuses a max_length that padding-free batches would not enforce; check_mix has
        # already refused every row longer than sft.max_length, so nothing is left to cut.
        args.max_length = None
    transformers.set_seed(args.seed)
    tokenizer = load_tokenizer(profile.model)
    base = load_base_model(profile)
    if args.packing or args.padding_free:  # measured on the loaded model, not assumed from its name
        probe = [tokenizer(r["prompt"] + r["completion"], add_special_tokens=False)["input_ids"][:64] for r in train_rows.select(range(2))]
        check_packing(base, profile.model.attn_implementation, probe, option="packing" if args.packing else "padding_free")
    model = prepare_for_training(base, profile)
    tensorboard = TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(Path(out_dir) / "tensorboard")))
    import datasets
    from transformers import PrinterCallback

    bars = datasets.is_progress_bar_enabled()
    if not progress:  # TRL's tokenizing passes and the trainer's per-log prints
        datasets.disable_progress_bars()
    try:
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=training_rows(train_rows, tokenizer),
            eval_dataset=training_rows(heldout_rows, tokenizer) if len(heldout_rows) else None,
            processing_class=tokenizer,
            callbacks=[divergence_guard(profile.training.divergence_factor, len(tokenizer)),
                       adapter_dtype_on_save(profile.lora.save_dtype), tensorboard, *(callbacks or [])],
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return keep_adapter_dtypes_on_resume(trainer)


def train(profile: Profile, mix_dir: str | Path, out_dir: str | Path, start_from: str | Path | None = None, *,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          callbacks: list[Any] | None = None) -> TrainResult:
    """Fine-tune the profile's model on the mix in ``mix_dir``; write checkpoints, logs and ``adapter/`` to ``out_dir``.

    SFT trains a fresh adapter on the base: ``start_from`` is refused (the registry's stages share
    one signature). The run folder follows every stage's rules (:func:`workings.train.runs.run_stage`):
    ``resume`` continues from the newest checkpoint in ``out_dir`` that loads; a run that already
    finished with the same settings is returned as it is, unchanged. A folder that already holds a
    run is never trained over unless ``resume`` or ``overwrite`` says so, and a folder holding files
    workings did not write is refused; with ``overwrite`` the new run trains beside the earlier one
    and replaces it only once it has finished, so a failure or an interrupt leaves the earlier result
    in place. One process at a time trains in a run folder (:func:`run_lock`).
    """
    if start_from is not None:
        raise ValueError(f"SFT trains a fresh adapter on the base; it does not start from {start_from}")

    def build(work_dir: Path, resumed_from: Path | None, callbacks: list[Any]) -> StageRun:
        trainer = build_trainer(profile, mix_dir, work_dir, progress=progress, callbacks=callbacks)
        resumed_at = int(resumed_from.name.split("-")[-1]) if resumed_from else 0

        def summarise(trainer: Any, output: Any, seconds: float) -> dict[str, Any]:
            state = trainer.state
            train_loss = whole_run_loss(state.log_history, resumed_at, state.global_step, output.training_loss)
            # A run shorter than one logging interval is judged here, on its mean loss.
            check_loss("mean training loss", train_loss, state.global_step, vocab_size=len(trainer.processing_class),
                       reference=None, factor=profile.training.divergence_factor, out_dir=work_dir)
            evals = [h["eval_loss"] for h in state.log_history if "eval_loss" in h]
            tokens_before = _tokens_seen(resumed_from)
            return {
                "train_loss": train_loss,
                "final_eval_loss": evals[-1] if evals else None,
                "tokens_seen": state.num_input_tokens_seen,
                "steps_this_session": state.global_step - resumed_at,
                # the speed of this session: the tokens it trained on over its own time
                "tokens_per_second": round((state.num_input_tokens_seen - tokens_before) / seconds, 1) if seconds else None,
            }

        return StageRun(trainer, summarise, lambda summary: run_card(profile, summary, mix_dir))

    return run_stage(profile, "sft", mix_dir, out_dir, None, resume=resume, overwrite=overwrite, build=build,
                     callbacks=callbacks)


def _tokens_seen(checkpoint: Path | None) -> int:
    if checkpoint is None or not (checkpoint / "trainer_state.json").is_file():
        return 0
    return int(json.loads((checkpoint / "trainer_state.json").read_text()).get("num_input_tokens_seen", 0))


def run_card(profile: Profile, summary: dict[str, Any], mix_dir: str | Path) -> str:
    """The run folder's README: what was trained, on what, how, and what came out, from the run's own files."""
    from workings.models.loading import loading_code

    report_file = Path(mix_dir) / "report.json"
    sources = json.loads(report_file.read_text())["sources"] if report_file.is_file() else {}
    q = profile.quantization
    base = f"{q.bits}-bit {q.quant_type}{' (double quantization)' if q.double_quant else ''}" if q else profile.model.dtype
    rows = "\n".join(f"| {name} | {s['train_rows']} | {s['heldout']} |" for name, s in sources.items())
    options = options_list(profile.sft)
    eval_loss = summary["final_eval_loss"]
    return f"""# SFT run of profile `{profile.name}`

LoRA adapter (`adapter/`) for `{profile.model.id}`{f' at revision {profile.model.revision}' if profile.model.revision else ''},
trained by workings with TRL's `SFTTrainer` to answer as `<reasoning>…</reasoning><answer>…</answer>`.

- Base: {base}; LoRA r={profile.lora.r}, alpha={profile.lora.alpha:g}, dropout={profile.lora.dropout:g} on
  {', '.join(profile.lora.target_modules)}; adapter saved in {profile.lora.save_dtype}.
- Steps: {summary['steps']} of {summary['max_steps']}; mean training loss {summary['train_loss']:.4f};
  last held-out loss {'n/a' if eval_loss is None else f'{eval_loss:.4f}'}; {summary['tokens_seen']:,} tokens seen.

## Data (`{mix_dir}`)

| source | training rows | held out |
| --- | --- | --- |
{rows}

## Trainer options (`sft:` of the profile, over the project's defaults)

{options}

## Loading

From this folder:

```python
{loading_code(profile.model, "adapter")}
```
"""


def result_line(result: TrainResult) -> str:
    """What ``workings train`` prints when the run has finished."""
    s = result.summary
    eval_loss = "n/a" if s["final_eval_loss"] is None else f"{s['final_eval_loss']:.3f}"
    resumed = (f" (resumed from {s['resumed_from']}: {s['steps_this_session']} steps in {s['seconds_this_session']}s this time)"
               if s["resumed_from"] else "")
    return (f"{result.adapter_dir}: {s['steps']} steps{resumed} in {run_seconds(s)}, train loss {s['train_loss']:.3f}, "
            f"held-out loss {eval_loss}, {s['tokens_per_second']:,.0f} tokens/s")


def describe(profile: Profile, run: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The SFT paragraph of an export's card, from the run's ``run.json``."""
    options = options_list(run.get("sft") or profile.sft)
    q = profile.quantization
    base = f"{q.bits}-bit {q.quant_type}{' with double quantization' if q.double_quant else ''}" if q else profile.model.dtype
    return f"""QLoRA SFT with TRL's `SFTTrainer`: the base frozen in {base}, LoRA r={profile.lora.r},
alpha={profile.lora.alpha:g}, dropout={profile.lora.dropout:g} on {', '.join(profile.lora.target_modules)};
loss on the completion only. {run['steps']:,} optimizer steps, mean training loss {run['train_loss']:.4f}. Trainer options (`trl.SFTConfig`):

{options}"""


def run_profile(profile: Profile, *, progress: bool = True) -> TrainResult:
    """Train a profile's SFT stage the way the book does (:func:`workings.train.runs.train_profile_stage`)."""
    return train_profile_stage(profile, "sft", progress=progress)


def attention_leak(model: Any, sequences: list[list[int]], packed: bool = True) -> float:
    """Largest logit difference between running ``sequences`` one by one and together.

    ``packed`` concatenates them into one row with positions restarting at 0 for each, as
    TRL's padding-free packing does; otherwise they are right-padded into a batch with an
    attention mask. Zero (up to float error) means examples cannot see each other.

    The model runs as TRL's trainer runs it, without a cache: transformers reads the example
    boundaries from the restarting positions only then, and only if the attention honours the
    mask it builds from them.
    """
    import torch

    model_device = next(model.parameters()).device
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([s], device=model_device), use_cache=False).logits[0] for s in sequences]
        if packed:
            ids = torch.tensor([[t for s in sequences for t in s]], device=model_device)
            positions = torch.tensor([[p for s in sequences for p in range(len(s))]], device=model_device)
            together = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
            rows, start = [], 0
            for s in sequences:
                rows.append(together[start : start + len(s)])
                start += len(s)
        else:
            width = max(len(s) for s in sequences)
            ids = torch.zeros((len(sequences), width), dtype=torch.long, device=model_device)
            mask = torch.zeros_like(ids)
            for i, s in enumerate(sequences):
                ids[i, : len(s)] = torch.tensor(s)
                mask[i, : len(s)] = 1
            together = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            rows = [together[i, : len(s)] for i, s in enumerate(sequences)]
    return max((a.float() - b.float()).abs().max().item() for a, b in zip(alone, rows))


def check_packing(model: Any, attn_implementation: str, sequences: list[list[int]], tolerance: float = 1e-2,
                  option: str = "packing") -> None:
    """Refuse ``sft.<option>`` (``packing`` or ``padding_free``, which both lay examples end to end
    in one row) when packed examples attend to each other with this attention implementation."""
    leak = attention_leak(model, sequences, packed=True)
    if leak > tolerance:
        raise ProfileError(
            f"sft.{option}: packed examples attend to each other with {attn_implementation!r} attention "
            f"(logits differ by up to {leak:.2f} from unpacked); turn packing off or use eager or flex_attention")
