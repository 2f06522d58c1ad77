"""The machinery every training stage shares: checks before loading, run folders and checkpoints,
the divergence guard, saving an adapter, the mix a profile trains on, and one run lifecycle
(:func:`run_stage`) that every stage of :mod:`workings.config.stages` trains through.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.loading import profile_command
from workings.config.schema import Profile, ProfileError
from workings.files import MARKER, check_replaceable, check_safetensors, mark, owned, set_aside, write_folder

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or grew far past where it started."""


def _where(profile: Profile) -> str:
    return str(profile.path or profile.name)


def check_environment(profile: Profile, stage: str = "sft") -> None:
    """Fail before any model is loaded when the machine cannot train ``stage`` of the profile as
    written: its launch, the device, and the packages its own trainer options need."""
    from workings.config.environment import fsdp_launch, world_size
    from workings.config.trainer_options import optimizer_name
    from workings.models.loading import check_machine

    if fsdp_launch() != profile.training.fsdp:
        raise ProfileError(
            f"{_where(profile)}: training.fsdp: the profile " + ("shards with FSDP, and this run was launched without it; "
            "launch it with accelerate launch --config_file src/workings/config/accelerate/fsdp-qlora.yaml"
            if profile.training.fsdp else "does not shard, and this run was launched with FSDP; launch it with "
            "accelerate launch --num_processes N (DDP), or use a profile with training.fsdp: true"))
    check_machine(profile, stage)
    processes = world_size()
    if processes != profile.training.processes:
        raise ProfileError(
            f"{_where(profile)}: training.processes: the profile trains with {profile.training.processes} process(es), "
            f"this run has {processes}; launch it with accelerate launch --num_processes {profile.training.processes}, "
            "or write a profile whose batch fits this number")
    from workings.config.stages import stage as registered

    args = registered(stage).trainer_config(profile)
    optim = optimizer_name(args)
    if "bnb" in optim or "paged" in optim or "8bit" in optim:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ProfileError(f"{_where(profile)}: {stage}.optim: {optim} needs bitsandbytes, which does not import ({err})") from None
    attention = profile.model.attn_implementation
    if attention.startswith("flash_attention"):
        _require_package(profile, "flash_attn", f"model.attn_implementation: {attention} needs flash-attn")
    if args.use_liger_kernel:
        _require_package(profile, "liger_kernel", f"{stage}.use_liger_kernel: needs liger-kernel",
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
            f"not {profile.model.id!r}; rebuild it ({profile_command(profile, 'build-mix')})")
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


def peak_memory() -> dict[str, Any]:
    """The peak memory of training so far: the GPU's peak allocation on CUDA, else this process's
    peak resident memory (which counts everything the process holds, not training alone)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return {"peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2), "peak_memory_of": "GPU (allocated)"}
    import resource

    return {"peak_memory_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "peak_memory_of": "process (resident)"}


def torch_threads() -> int:
    """The threads torch computes with in this process (``training.threads``, else torch's default):
    part of what a CPU run produces, since sums are added in another order with another count."""
    import torch

    return torch.get_num_threads()


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

    return write_folder(out_dir, write, what="adapter", recognise=lambda folder: is_run_folder(folder.parent))


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


def keep_adapter_dtypes_on_resume(trainer: Any) -> Any:
    """Make a resumed run train its adapter in the dtype the unbroken run trains it in.

    Over a quantized base TRL casts the LoRA weights to bfloat16 when it builds the trainer, but on
    resume transformers reloads them with PEFT's ``load_adapter``, which upcasts them to float32: the
    resumed run then trains in another precision and drifts from the unbroken one (measured: equal
    losses up to the checkpoint, then 1e-5 apart and growing). The reload is wrapped so that every
    trainable weight is cast back right after it, before the optimizer is built and its state read
    back in the weights' dtype. TRL's running count of training tokens (its ``num_tokens`` metric)
    is not saved in a checkpoint either; it equals the non-padding tokens seen, which are.
    """
    load = trainer._load_from_checkpoint

    def load_keeping_dtypes(checkpoint: str, *args: Any, **kwargs: Any) -> Any:
        dtypes = {n: p.dtype for n, p in trainer.model.named_parameters() if p.requires_grad}
        loaded = load(checkpoint, *args, **kwargs)
        for name, param in trainer.model.named_parameters():
            if name in dtypes and param.dtype != dtypes[name]:
                param.data = param.data.to(dtypes[name])
        if hasattr(trainer, "_total_train_tokens"):
            state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
            trainer._total_train_tokens = state.get("num_input_tokens_seen", 0)
        return loaded

    trainer._load_from_checkpoint = load_keeping_dtypes
    return trainer


CLOCK_FILE = "workings_time.json"  # in each checkpoint: the run's seconds up to it


def run_clock(resumed_from: Path | None) -> Any:
    """A callback that times a run across its sessions: it writes the run's seconds so far into each
    checkpoint (:data:`CLOCK_FILE`), so a run resumed from one counts the earlier sessions too."""
    import time

    from transformers import TrainerCallback

    saved = resumed_from / CLOCK_FILE if resumed_from else None
    before = json.loads(saved.read_text())["seconds"] if saved and saved.is_file() else 0.0

    class RunClock(TrainerCallback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.earlier_sessions_timed = resumed_from is None or (saved is not None and saved.is_file())

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def session_seconds(self) -> float:
            return time.perf_counter() - self.start if self.start is not None else 0.0

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                (folder / CLOCK_FILE).write_text(json.dumps({"seconds": round(before + self.session_seconds(), 1)}))

        def summary(self) -> dict[str, Any]:
            """``seconds`` of the whole run (every session), and of this session alone."""
            this = round(self.session_seconds(), 1)
            whole = round(before + this, 1) if self.earlier_sessions_timed else None
            return {"seconds": whole, "seconds_this_session": this}

    return RunClock()


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
    def __init__(self, out_dir: Path, what: str = "no checkpoint-* folder to resume from"):
        super().__init__(f"{out_dir}: {what}")
        self.out_dir, self.what = out_dir, what


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


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a run folder workings wrote (marked, or an earlier version's run with its
    checkpoints, summary or adapter)."""
    return owned(path) or run_contents(path) is not None


def open_run_folder(out_dir: Path, *, resume: bool, overwrite: bool, section: str, options: dict[str, Any]) -> RunFolder:
    """The run folder rules every training stage shares: ``resume`` on a run that finished with the
    same ``options`` (:func:`finished_run`) returns it untouched; otherwise ``resume`` needs a
    checkpoint that loads (the newest one that does, with a warning naming what is wrong with any
    newer one); a folder that holds a run is never trained over unless ``resume`` or ``overwrite``
    says so; a file, or a folder holding files workings did not write, is never trained in nor
    replaced; ``overwrite`` trains in a staging folder beside the earlier run (see :func:`swap_in`).
    Removing a stale staging folder is left to the caller's main process (:func:`clear_for_overwrite`)."""
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other")
    check_replaceable(out_dir, "--out", recognise=is_run_folder)
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
    return RunFolder(out_dir, work_dir, usable_checkpoint(existing) if resume else None)


@contextmanager
def opened_run(profile: Profile, out_dir: Path, *, resume: bool, overwrite: bool, section: str,
               options: dict[str, Any]) -> Iterator[RunFolder]:
    """The run folder of a training stage, ready to train in, for the duration of the ``with`` block:
    a finished run asked to resume comes back untouched (``finished``); otherwise the folder is
    locked for this process (:func:`run_lock`), checked (:func:`open_run_folder`), cleared where an
    overwrite starts, and claimed, with every process waiting until it is."""
    from contextlib import nullcontext

    done = finished_run(out_dir, section, options) if resume else None
    if done is not None:  # returned untouched, before its folder is even locked
        log.info("%s: finished (%d steps); left unchanged", out_dir, done.steps)
        yield RunFolder(out_dir, out_dir, None, finished=done)
        return
    processes = run_processes(profile)
    with run_lock(out_dir) if processes.is_main_process else nullcontext():
        folder = open_run_folder(out_dir, resume=resume, overwrite=overwrite, section=section, options=options)
        if folder.finished is None:
            if processes.is_main_process:
                clear_for_overwrite(folder, overwrite)
                start_run_folder(folder.work_dir)
            processes.wait_for_everyone()
        yield folder


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What keeps ``checkpoint`` from being resumed (a missing, truncated or damaged file, named),
    or None when every file the trainer reads back is whole.

    torch's ``.pt``/``.pth`` files are zip archives whose members carry CRCs, and a safetensors file
    starts with the length of its header; both are checked without loading any tensor.
    """
    import zipfile

    if not (checkpoint / "trainer_state.json").is_file():
        return f"{checkpoint / 'trainer_state.json'} is missing"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix in (".pt", ".pth", ".bin"):
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return f"{path}: damaged ({bad} fails its checksum)"
            elif path.suffix == ".safetensors":
                check_safetensors(path)
        except (ValueError, zipfile.BadZipFile, OSError, EOFError) as err:
            return f"{path}: truncated or damaged ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    return None


def usable_checkpoint(saved: list[Path]) -> Path:
    """The newest of ``saved`` that loads; a newer damaged one is named in a warning and skipped."""
    for checkpoint in reversed(saved):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint
        log.warning("not resuming from %s: %s; trying the one before it", checkpoint.name, problem)
    raise NothingToResume(saved[-1].parent, "no checkpoint-* folder that loads (each one's problem is logged above)")


def clear_for_overwrite(folder: RunFolder, overwrite: bool) -> None:
    """Clear where an overwriting run will train: a stale staging folder (from an overwrite that did
    not finish), or the run folder itself when it is workings' and holds no run (the leftovers of
    one stopped before its first checkpoint). Only a folder workings wrote is removed."""
    import shutil

    if folder.work_dir != folder.out_dir:
        if folder.work_dir.exists():
            check_replaceable(folder.work_dir, recognise=is_run_folder)
            shutil.rmtree(folder.work_dir)
    elif overwrite and owned(folder.out_dir):
        shutil.rmtree(folder.out_dir)


def start_run_folder(work_dir: Path) -> None:
    """Create the folder a run trains in and claim it as workings' own (see :func:`workings.files.mark`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    mark(work_dir, "run")


class RunLocked(RuntimeError):
    """Another process is training in the same run folder."""


LOCK_FILE = ".workings.lock"  # in a run folder, held by the process training there


@contextmanager
def run_lock(out_dir: Path) -> Iterator[None]:
    """Hold the run folder ``out_dir`` for this process: a second process asking for it is refused
    at once, naming the holder. The lock is the operating system's (``flock`` on :data:`LOCK_FILE`),
    so it is released when its holder exits, however it exits, and never blocks a later run. A run
    folder this creates only to hold the lock is removed again if nothing else was written in it."""
    import fcntl
    import os

    check_replaceable(out_dir, "--out", recognise=is_run_folder)  # before anything is created there
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    if created:
        mark(out_dir, "run")
    lock_file = out_dir / LOCK_FILE
    try:
        with lock_file.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLocked(f"{out_dir}: a run is already training here ({holder}); wait for it to finish, "
                                "or give another --out") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                handle.seek(0)
                handle.truncate()
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        if created and out_dir.is_dir() and {p.name for p in out_dir.iterdir()} <= {LOCK_FILE, MARKER}:
            for name in (LOCK_FILE, MARKER):
                (out_dir / name).unlink(missing_ok=True)
            out_dir.rmdir()


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
    """Put the finished run ``new`` in ``out_dir``'s place (a run folder :func:`open_run_folder`
    accepted), removing the earlier run only then."""
    if out_dir.exists():
        set_aside(out_dir, lambda: new.rename(out_dir))
    else:
        new.rename(out_dir)


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


@dataclass
class StageRun:
    """What a stage hands :func:`run_stage` once built: the trainer, ready to train, and what only
    this stage knows of its run."""

    trainer: Any
    # the stage's own entries of run.json, from the trainer, its train() output and this session's
    # seconds, before anything is saved (a check that refuses the run raises here)
    summarise: Callable[[Any, Any, float], dict[str, Any]]
    card: Callable[[dict[str, Any]], str]  # the run folder's README, from the whole summary


def continued_policy(profile: Profile, mix_dir: str | Path, adapter: str | Path, args: Any) -> tuple[Any, Any, Any]:
    """What a stage after the first starts from: the mix's training rows, the seed of ``args`` set,
    the tokenizer, and the base with ``adapter`` continued (trainable, in float32), its replies
    ending at ``<end_of_turn>``. Returns (model, tokenizer, train_rows)."""
    import transformers

    from workings.core.chat import stop_token_ids
    from workings.data.mix import load_mix
    from workings.models.loading import load_base_model, load_tokenizer
    from workings.models.qlora import continue_adapter

    train_rows, _, _ = load_mix(mix_dir)
    transformers.set_seed(args.seed)
    tokenizer = load_tokenizer(profile.model)
    model = continue_adapter(load_base_model(profile), profile, adapter, bool(args.gradient_checkpointing))
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)  # a reply ends at <end_of_turn>
    return model, tokenizer, train_rows


def made_once(work_dir: Path, resumed_from: Path | None, names: tuple[str, str], processes: Any,
              build: Callable[[list[dict[str, Any]] | None], tuple[Any, list[dict[str, Any]], dict[str, Any]]]
              ) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    """A stage's trainer with the rows it makes before training (GRPO's prompts, the preference
    stage's pairs), made once per run: ``build(None)`` makes them and the first session writes them
    and their report to the run folder (``names``: the JSONL and the JSON file); a resumed session
    reads them back, builds with them, and keeps the first session's report. Returns (trainer, rows, report)."""
    from workings.files import read_jsonl, write_jsonl

    rows_file, report_file = work_dir / names[0], work_dir / names[1]
    saved = read_jsonl(rows_file) if resumed_from and rows_file.is_file() else None
    trainer, rows, report = build(saved)
    if saved is None:
        if processes.is_main_process:
            write_jsonl(rows_file, rows)
            report_file.write_text(json.dumps(report, indent=1))
    elif report_file.is_file():
        report = json.loads(report_file.read_text())
    return trainer, rows, report


def run_stage(profile: Profile, stage: str, mix_dir: str | Path, out_dir: str | Path, start_from: Path | None, *,
              resume: bool, overwrite: bool, build: Callable[[Path, Path | None, list[Any]], StageRun],
              callbacks: list[Any] | None = None) -> TrainResult:
    """The run lifecycle every stage shares: open the run folder by its rules (:func:`opened_run`),
    build the stage's trainer in it (``build(work_dir, resumed_from, callbacks)``), train, save the
    trainer state and the adapter, write ``run.json`` and ``README.md``, and swap the run in.

    ``run.json`` holds what every run records (profile, model, stage, the path of stages behind its
    adapter, what it started from,
    steps, time, threads, memory, the stage's options under its name) and the stage's own entries.
    """
    from workings.files import file_digest
    from workings.models.loading import renamed_checkpointing_attribute_quiet

    out_dir = Path(out_dir)
    options = getattr(profile, stage)
    processes = run_processes(profile)
    with opened_run(profile, out_dir, resume=resume, overwrite=overwrite, section=stage, options=options) as folder:
        if folder.finished is not None:
            return folder.finished
        work_dir, resumed_from = folder.work_dir, folder.resumed_from
        clock = run_clock(resumed_from)
        run = build(work_dir, resumed_from, [clock, *(callbacks or [])])
        trainer = run.trainer
        with renamed_checkpointing_attribute_quiet():  # TRL reads the attribute before every generation
            output = trainer.train(resume_from_checkpoint=str(resumed_from) if resumed_from else None)
        own = run.summarise(trainer, output, clock.session_seconds())
        trainer.save_state()  # trainer_state.json at the top of the run folder (the main process writes it)
        weights = adapter_state(trainer)  # every process: under FSDP this gathers the shards
        if processes.is_main_process:
            save_adapter(trainer.model, trainer.processing_class, work_dir / "adapter", profile.lora.save_dtype, weights)
        state = trainer.state
        before = _run_summary(Path(start_from).parent) if start_from is not None else {}
        summary = {
            "profile": profile.name,
            "model": profile.model.id,
            "stage": stage,
            "path": [*before.get("path", [before["stage"]] if "stage" in before else []), stage],  # the stages behind this adapter
            "mix": str(mix_dir),
            "started_from": None if start_from is None else {
                "stage": before.get("stage"), "adapter": str(start_from),
                "digest": file_digest(Path(start_from) / "adapter_model.safetensors")},
            "steps": state.global_step,
            "max_steps": state.max_steps,
            **own,
            "resumed_from": resumed_from.name if resumed_from else None,
            **clock.summary(),
            "threads": torch_threads(),
            **peak_memory(),
            stage: options,
        }
        if processes.is_main_process:
            (work_dir / "run.json").write_text(json.dumps(summary, indent=1))
            (work_dir / "README.md").write_text(run.card(summary))
            if work_dir != out_dir:
                swap_in(work_dir, out_dir)
        processes.wait_for_everyone()  # no process returns before the run folder is complete
    return TrainResult(out_dir, out_dir / "adapter", state.global_step, summary["seconds"], state.log_history, summary)


def options_list(options: dict[str, Any]) -> str:
    """A stage's trainer options as a Markdown list, by name, for run and export cards."""
    return "\n".join(f"- `{key}`: {value}" for key, value in sorted(options.items()))


def origin_stage(run: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The stage a run continued, for a card: that of the run before it in the exported chain (its
    ``run.json``), else the one its own ``started_from`` records."""
    if before:
        return before.get("stage") or "sft"
    return (run.get("started_from") or {}).get("stage") or "earlier"


def run_seconds(summary: dict[str, Any]) -> str:
    """A run's time for a result line: the whole run's, or this session's where earlier sessions were not timed."""
    if summary.get("seconds") is not None:
        return f"{summary['seconds']}s"
    return f"{summary['seconds_this_session']}s (this session; earlier ones were not timed)"


def _run_summary(folder: Path) -> dict[str, Any]:
    """A run folder's ``run.json`` (an adapter from elsewhere has none: empty)."""
    file = folder / "run.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def start_adapter(profile: Profile, stage: str) -> Path | None:
    """The adapter ``stage`` continues: the one before it in the profile's chain (None for a stage
    that trains a fresh adapter); ``reinforcement.adapter`` overrides it for GRPO."""
    from workings.config.stages import previous, run_layout

    if stage == "grpo" and profile.reinforcement.adapter:
        return Path(profile.reinforcement.adapter)
    before = previous(profile, stage)
    return run_layout(profile).adapter(before.name) if before else None


def train_profile_stage(profile: Profile, stage: str, *, progress: bool = True) -> TrainResult:
    """Train one stage of a profile the way the book does: the profile's mix (built if missing) into
    the stage's run folder, from the adapter of the stage before it, restarted or resumed as
    ``training.rerun`` says."""
    from workings.config.stages import run_layout, stage as registered

    mix_dir = ensure_profile_mix(profile, progress=progress)
    out_dir = run_layout(profile).stage(stage)
    resume = bool(checkpoints(out_dir)) and profile.training.rerun == "resume"
    return registered(stage).train(profile, mix_dir, out_dir, start_adapter(profile, stage), resume=resume,
                                   overwrite=not resume, progress=progress)


def stage_adapter(profile: Profile, stage: str, *, progress: bool = True) -> Path:
    """The adapter of ``stage``'s finished run in the profile's run folder, trained first where it has
    not finished (after the stages before it, where they have not either): how a chapter that reads
    a stage's model opens, whether or not the chapter that trains it ran before."""
    from workings.config.stages import previous, run_layout

    layout = run_layout(profile)
    if layout.finished(stage):
        return layout.adapter(stage)
    before = previous(profile, stage)
    if before is not None and start_adapter(profile, stage) == layout.adapter(before.name):
        stage_adapter(profile, before.name, progress=progress)
    return train_profile_stage(profile, stage, progress=progress).adapter_dir


def path_adapter(profile: Profile, path: Sequence[str], *, progress: bool = True) -> Path:
    """The adapter at the end of a path of stages (``["sft", "dpo", "grpo"]``: SFT, then DPO from its
    adapter, then GRPO from DPO's), into the folder :meth:`~workings.config.stages.RunLayout.stage`
    gives the path. A stage is trained where its run has not finished, or where it finished from
    another adapter than the one before it holds now (that one was trained again since); stages
    shared with another path (the profile's own SFT) are trained once."""
    from workings.config.stages import check_chain, run_layout, stage as registered
    from workings.files import file_digest

    path = list(path)
    check_chain(path, "stages")
    layout = run_layout(profile)
    start = path_adapter(profile, path[:-1], progress=progress) if len(path) > 1 else None
    if layout.finished(path):
        started = layout.summary(path).get("started_from") or {}
        if start is None or started.get("digest") == file_digest(start / "adapter_model.safetensors"):
            return layout.adapter(path)
    out_dir = layout.stage(path)
    resume = bool(checkpoints(out_dir)) and profile.training.rerun == "resume" and not layout.finished(path)
    return registered(path[-1]).train(profile, ensure_profile_mix(profile, progress=progress), out_dir, start,
                                      resume=resume, overwrite=not resume, progress=progress).adapter_dir


def mix_benchmarks(profile: Profile, *, progress: bool = True) -> list[Any]:
    """The profile's benchmarks (:func:`workings.evaluation.benchmarks.profile_benchmarks`) with the
    held-out rows of its mix, built first if missing."""
    from workings.data.mix import load_mix
    from workings.evaluation.benchmarks import profile_benchmarks

    _, heldout, _ = load_mix(ensure_profile_mix(profile, progress=progress))
    return profile_benchmarks(profile, heldout)


def ensure_profile_mix(profile: Profile, *, progress: bool = True, num_proc: int = 1) -> Path:
    """The profile's mix folder (``runs/<profile>/mix``), built first if missing or out of date
    (see :func:`workings.data.mix.ensure_mix`)."""
    from workings.config.environment import world_size
    from workings.data.mix import ensure_mix, mix_provenance, mix_is_current
    from workings.models.loading import load_tokenizer

    from workings.config.stages import run_layout

    mix_dir = run_layout(profile).mix
    provenance = mix_provenance(profile.name, profile.data, profile.model.id)
    processes = world_size()
    if processes > 1 and not mix_is_current(mix_dir, provenance):
        # Several processes would each build and write it at once: one command builds it first.
        raise ProfileError(f"{_where(profile)}: data: {mix_dir} is missing or out of date, and {processes} processes "
                           f"would each build it; build it first with: {profile_command(profile, 'build-mix')}")
    return ensure_mix(mix_dir, provenance, profile.data, lambda: load_tokenizer(profile.model), progress=progress, num_proc=num_proc)
