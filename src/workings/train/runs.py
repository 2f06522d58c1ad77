"""The machinery every training stage shares: checks before loading, run folders and checkpoints,
the divergence guard, saving an adapter, and the mix a profile trains on.

SFT uses it now; GRPO and DPO will use the same pieces.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.loading import run_dir
from workings.config.schema import Profile, ProfileError
from workings.files import write_folder

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or grew far past where it started."""


def _where(profile: Profile) -> str:
    return str(profile.path or profile.name)


def check_environment(profile: Profile) -> None:
    """Fail before any model is loaded when the machine cannot train the profile as written."""
    from workings.config.environment import fsdp_launch, world_size
    from workings.config.trainer_options import optimizer_name
    from workings.models.loading import check_machine

    if fsdp_launch() != profile.training.fsdp:
        raise ProfileError(
            f"{_where(profile)}: training.fsdp: the profile " + ("shards with FSDP, and this run was launched without it; "
            "launch it with accelerate launch --config_file src/workings/config/accelerate/fsdp-qlora.yaml"
            if profile.training.fsdp else "does not shard, and this run was launched with FSDP; launch it with "
            "accelerate launch --num_processes N (DDP), or use a profile with training.fsdp: true"))
    check_machine(profile)
    processes = world_size()
    if processes != profile.training.processes:
        raise ProfileError(
            f"{_where(profile)}: training.processes: the profile trains with {profile.training.processes} process(es), "
            f"this run has {processes}; launch it with accelerate launch --num_processes {profile.training.processes}, "
            "or write a profile whose batch fits this number")
    sft = profile.sft_args()
    optim = optimizer_name(sft)
    if "bnb" in optim or "paged" in optim or "8bit" in optim:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ProfileError(f"{_where(profile)}: sft.optim: {optim} needs bitsandbytes, which does not import ({err})") from None
    attention = profile.model.attn_implementation
    if attention.startswith("flash_attention"):
        _require_package(profile, "flash_attn", f"model.attn_implementation: {attention} needs flash-attn")
    if sft.use_liger_kernel:
        _require_package(profile, "liger_kernel", "sft.use_liger_kernel: needs liger-kernel",
                         " (pip install liger-kernel, on a GPU machine)")


def _require_package(profile: Profile, module: str, need: str, hint: str = "") -> None:
    """Refuse the run when ``module`` is not installed; ``need`` names the key and the package."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ProfileError(f"{_where(profile)}: {need}, which is not installed{hint}")


def check_mix(profile: Profile, train_rows: Any, report: dict[str, Any]) -> None:
    """The mix must come from the profile's model (same tokenizer) and every row must fit ``training.max_length``."""
    made_for = report.get("model")
    if made_for is not None and made_for != profile.model.id:
        raise ProfileError(
            f"{_where(profile)}: model.id: the mix was built with the tokenizer of {made_for!r}, "
            f"not {profile.model.id!r}; rebuild it (workings build-mix --profile {profile.name})")
    lengths = train_rows["n_tokens"]
    longest = max(lengths)
    max_length = profile.sft_args().max_length
    if longest > max_length:
        row = train_rows[lengths.index(longest)]
        raise ProfileError(
            f"{_where(profile)}: sft.max_length: {max_length} is below the longest "
            f"row of the mix ({longest} tokens, id {row['id']}); raise it or rebuild the mix with a lower data.max_length")


@dataclass
class TrainResult:
    out_dir: Path
    adapter_dir: Path
    steps: int
    seconds: float
    log_history: list[dict[str, Any]]
    summary: dict[str, Any]
    already_finished: bool = False  # asked to resume a run that had finished: nothing was trained


def run_processes(profile: Profile) -> Any:
    """This process's place among the processes training together (accelerate's ``PartialState``).

    Under ``accelerate launch`` or ``torchrun`` it joins their process group (gloo on the CPU,
    NCCL on GPUs) so that only the main process writes the run folder's own files, and the
    others wait for it; alone, it is a group of one.
    """
    from accelerate import PartialState

    return PartialState(cpu=profile.training.device == "cpu")


def adapter_state(trainer: Any) -> dict[str, Any]:
    """The LoRA weights of a trainer's model. Under FSDP each process holds a shard: every process
    must call this (it gathers the full weights), and only the main process gets them."""
    from peft import get_peft_model_state_dict

    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
        return get_peft_model_state_dict(trainer.model, state_dict=trainer.accelerator.get_state_dict(trainer.model))
    return get_peft_model_state_dict(trainer.model)


def save_adapter(model: Any, tokenizer: Any, out_dir: Path, dtype: str, state: dict[str, Any] | None = None) -> Path:
    """Save the LoRA adapter (weights cast to ``dtype``) and the tokenizer, atomically; ``state``
    gives the weights (:func:`adapter_state`) where the model holds only a shard of them.

    The folder loads with ``PeftModel.from_pretrained(base, out_dir)``.
    """
    import torch

    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model) if state is None else state
    state = {k: v.detach().to(getattr(torch, dtype)).contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)

    return write_folder(out_dir, write)


def checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (none when the folder does not exist)."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


# A loss this many times a uniform guess over the vocabulary (ln V) is a model that knows less than
# nothing: even a randomly initialised one starts near 1x.
WORSE_THAN_UNIFORM = 1.5


def last_good_checkpoint(out_dir: str | Path) -> str:
    saved = checkpoints(out_dir)
    return f"; the last good checkpoint is {saved[-1]}" if saved else "; no checkpoint was saved before it"


def check_loss(name: str, loss: float, step: int, *, vocab_size: int | None, reference: float | None, factor: float,
               out_dir: str | Path, reference_name: str = "the first logged") -> None:
    """Raise :class:`TrainingDiverged` if ``loss`` is not finite, worse than a uniform guess over the
    vocabulary (by :data:`WORSE_THAN_UNIFORM`), or more than ``factor`` times ``reference``."""
    checkpoint = last_good_checkpoint(out_dir)
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"{name} became {loss} at step {step}{checkpoint}. "
            "Lower sft.learning_rate, check sft.max_grad_norm, or look for broken rows in the mix.")
    if vocab_size:
        uniform = math.log(vocab_size)
        if loss > WORSE_THAN_UNIFORM * uniform:
            raise TrainingDiverged(
                f"{name} is {loss:.3f} at step {step}, worse than a uniform guess over the {vocab_size:,}-token "
                f"vocabulary (ln {vocab_size} = {uniform:.2f}){checkpoint}. Lower sft.learning_rate.")
    if reference is not None and loss > factor * reference:
        raise TrainingDiverged(
            f"{name} exploded at step {step}: {loss:.3f} is more than {factor}x {reference_name} "
            f"({reference:.3f}){checkpoint}. Lower sft.learning_rate or raise sft.warmup_steps.")


def divergence_guard(factor: float | None, vocab_size: int | None = None) -> Any:
    """A callback that stops training with :class:`TrainingDiverged` when a loss turns NaN or infinite
    or worse than uniform, when the training loss passes ``factor`` times its first logged value or
    the held-out loss ``factor`` times its best (one training log is a mean over a few batches, too
    noisy to compare with its own best), and, between logs, as soon as a trainable weight is no
    longer finite. Without ``factor`` and ``vocab_size`` only finiteness is checked: a policy-gradient
    loss is not a likelihood and hovers around zero, so neither comparison means anything there."""
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def __init__(self) -> None:
            self.first_train: float | None = None
            self.best_eval: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                check_loss("training loss", logs["loss"], state.global_step, vocab_size=vocab_size,
                           reference=self.first_train if factor else None, factor=factor or math.inf,
                           out_dir=args.output_dir)
                self.first_train = logs["loss"] if self.first_train is None else self.first_train
            if "eval_loss" in logs:
                check_loss("held-out loss", logs["eval_loss"], state.global_step, vocab_size=vocab_size,
                           reference=self.best_eval if factor else None, factor=factor or math.inf, out_dir=args.output_dir,
                           reference_name="the best held-out loss so far")
                self.best_eval = min(logs["eval_loss"], self.best_eval or logs["eval_loss"])

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if model is None:
                return
            import torch

            with torch.no_grad():
                broken = next((n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()), None)
            if broken is not None:
                raise TrainingDiverged(
                    f"weight {broken} is no longer finite after step {state.global_step}{last_good_checkpoint(args.output_dir)}. "
                    "Lower sft.learning_rate or check sft.max_grad_norm.")

    return DivergenceGuard()


def adapter_dtype_on_save(dtype: str) -> Any:
    """A callback that rewrites each checkpoint's adapter weights in ``dtype`` (the profile's
    ``lora.save_dtype``) and removes the model cards PEFT and TRL write with it, which know nothing
    of the run ("a fine-tuned version of [None]"); the run's own card is written when it finishes."""
    from transformers import TrainerCallback

    class AdapterDtype(TrainerCallback):
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if not state.is_world_process_zero:  # the one process that wrote the checkpoint rewrites it
                return
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            cast_adapter_file(folder / "adapter_model.safetensors", dtype)
            for card in (folder / "README.md", Path(args.output_dir) / "README.md"):  # PEFT's and TRL's
                card.unlink(missing_ok=True)

    return AdapterDtype()


def cast_adapter_file(path: Path, dtype: str) -> None:
    """Rewrite a safetensors file with every tensor in ``dtype`` (no-op when it already is)."""
    import torch
    from safetensors.torch import load_file, save_file

    if not path.is_file():
        return
    tensors = load_file(str(path))
    target = getattr(torch, dtype)
    if all(t.dtype == target for t in tensors.values()):
        return
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.to(target).contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


class RunExists(FileExistsError):
    """A run folder already holds a run, and neither resuming nor overwriting it was asked for."""

    def __init__(self, out_dir: Path, what: str):
        super().__init__(f"{out_dir} already holds {what}: resume it or overwrite it")
        self.out_dir, self.what = out_dir, what


class NothingToResume(FileNotFoundError):
    def __init__(self, out_dir: Path):
        super().__init__(f"{out_dir}: no checkpoint-* folder to resume from")
        self.out_dir = out_dir


@dataclass
class RunFolder:
    """Where a run trains (``work_dir``: the run folder, or a staging folder beside it when it
    overwrites a run), the checkpoint it resumes from, and, when asked to resume a run that has
    already finished with the same settings, that run (``finished``: nothing is to be trained)."""

    out_dir: Path
    work_dir: Path
    resumed_from: Path | None
    finished: TrainResult | None = None


def finished_run(out_dir: Path, section: str, options: dict[str, Any]) -> TrainResult | None:
    """The run in ``out_dir`` if it finished all its steps with the trainer ``options`` it records
    under ``section`` of its ``run.json`` (``sft``, ``grpo``), else None."""
    import json

    summary_file = out_dir / "run.json"
    if not summary_file.is_file() or not (out_dir / "adapter").is_dir():
        return None
    summary = json.loads(summary_file.read_text())
    if summary.get(section) != options or summary.get("steps", 0) < summary.get("max_steps", math.inf):
        return None
    state_file = out_dir / "trainer_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    return TrainResult(out_dir, out_dir / "adapter", summary["steps"], summary.get("seconds", 0.0),
                       state.get("log_history", []), summary, already_finished=True)


def open_run_folder(out_dir: Path, *, resume: bool, overwrite: bool, section: str, options: dict[str, Any]) -> RunFolder:
    """The run folder rules every training stage shares: ``resume`` on a run that finished with the
    same ``options`` (:func:`finished_run`) returns it untouched; otherwise ``resume`` needs a
    checkpoint; a folder that holds a run is never trained over unless ``resume`` or ``overwrite``
    says so; ``overwrite`` trains in a staging folder beside the earlier run (see :func:`swap_in`).
    Removing a stale staging or empty run folder is left to the caller's main process
    (:func:`clear_for_overwrite`)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    if resume:
        done = finished_run(out_dir, section, options)
        if done is not None:
            log.info("%s: finished (%d steps); left unchanged", out_dir, done.steps)
            return RunFolder(out_dir, out_dir, None, finished=done)
    existing = checkpoints(out_dir)
    if resume and not existing:
        raise NothingToResume(out_dir)
    held = run_contents(out_dir)
    if held is not None and not (resume or overwrite):
        raise RunExists(out_dir, held)
    work_dir = staging_dir(out_dir) if (overwrite and held is not None) else out_dir
    return RunFolder(out_dir, work_dir, existing[-1] if resume else None)


def clear_for_overwrite(folder: RunFolder, overwrite: bool) -> None:
    """Remove a stale staging folder, or an empty run folder an overwriting run starts in."""
    import shutil

    if folder.work_dir != folder.out_dir or (overwrite and folder.out_dir.is_dir()):
        shutil.rmtree(folder.work_dir, ignore_errors=True)


def run_contents(out_dir: Path) -> str | None:
    """What a run folder holds that a new run would replace (its newest checkpoint, a finished
    run's summary or adapter), or None when it holds none of these."""
    saved = checkpoints(out_dir)
    if saved:
        return saved[-1].name
    for name in ("run.json", "adapter"):
        if (out_dir / name).exists():
            return name
    return None


def staging_dir(out_dir: Path) -> Path:
    """Where an overwriting run trains until it has finished: beside ``out_dir``, hidden."""
    return out_dir.with_name(f".{out_dir.name}-overwrite")


def swap_in(new: Path, out_dir: Path) -> None:
    """Put the finished run ``new`` in ``out_dir``'s place, removing the earlier run only then."""
    import shutil

    old = out_dir.with_name(f".{out_dir.name}-replaced")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    new.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def whole_run_loss(history: list[dict[str, Any]], resumed_at: int, steps: int, loss_this_call: float) -> float:
    """Mean training loss over all ``steps`` of a run resumed at step ``resumed_at``.

    The trainer's own ``training_loss`` covers only the steps of the call that finished. The steps
    before ``resumed_at`` are read from the logged losses (each a mean over its logging interval);
    steps between the last log and the checkpoint, if any, count at the last logged mean.
    """
    if resumed_at <= 0:
        return loss_this_call
    total, last_step, last_loss = 0.0, 0, None
    for entry in history:
        if "loss" in entry and "step" in entry and entry["step"] <= resumed_at:
            total += entry["loss"] * (entry["step"] - last_step)
            last_step, last_loss = entry["step"], entry["loss"]
    if last_loss is not None:
        total += last_loss * (resumed_at - last_step)
    return (total + loss_this_call * (steps - resumed_at)) / steps


def ensure_profile_mix(profile: Profile, *, progress: bool = True, num_proc: int = 1) -> Path:
    """The profile's mix folder (``runs/<profile>/mix``), built first if missing or out of date
    (see :func:`workings.data.mix.ensure_mix`)."""
    from workings.config.environment import world_size
    from workings.data.mix import ensure_mix, mix_provenance, mix_is_current
    from workings.models.loading import load_tokenizer

    mix_dir = run_dir(profile) / "mix"
    provenance = mix_provenance(profile.name, profile.data, profile.model.id)
    processes = world_size()
    if processes > 1 and not mix_is_current(mix_dir, provenance):
        # Several processes would each build and write it at once: one command builds it first.
        raise ProfileError(f"{_where(profile)}: data: {mix_dir} is missing or out of date, and {processes} processes "
                           f"would each build it; build it first with: workings build-mix --profile {profile.name}")
    return ensure_mix(mix_dir, provenance, profile.data, lambda: load_tokenizer(profile.model), progress=progress, num_proc=num_proc)
