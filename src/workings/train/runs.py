"""The machinery every training stage shares: checks before loading, run folders and checkpoints,
the divergence guard, saving an adapter, and the mix a profile trains on.

SFT uses it now; GRPO and DPO will use the same pieces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.loading import run_dir
from workings.config.schema import Profile, ProfileError
from workings.files import write_folder


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or grew far past where it started."""


def _where(profile: Profile) -> str:
    return str(profile.path or profile.name)


def check_environment(profile: Profile) -> None:
    """Fail before any model is loaded when the machine cannot run the profile as written."""
    import torch

    t = profile.training
    optim = getattr(profile.sft_args().optim, "value", profile.sft_args().optim)
    if t.device == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            f"{_where(profile)}: training.device: cuda, but this machine has no CUDA device "
            f"(torch {torch.__version__}); run a cpu profile such as demo, or a GPU machine")
    needs_bnb = profile.quantization is not None or "bnb" in optim or "paged" in optim or "8bit" in optim
    if needs_bnb:
        try:
            import bitsandbytes
        except ImportError as err:
            key = "quantization" if profile.quantization is not None else "sft.optim"
            raise ProfileError(f"{_where(profile)}: {key}: needs bitsandbytes, which does not import ({err})") from None
        if profile.quantization is not None and t.device == "cpu":
            major, minor = (int(x) for x in bitsandbytes.__version__.split(".")[:2])
            if (major, minor) < (0, 46):
                raise ProfileError(
                    f"{_where(profile)}: quantization: 4-bit on cpu needs bitsandbytes >= 0.46 "
                    f"(found {bitsandbytes.__version__}); upgrade it or remove the quantization section")
    if profile.sft_args().packing:
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise ProfileError(f"{_where(profile)}: sft.packing: needs flash-attn, which is not installed")


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


def save_adapter(model: Any, tokenizer: Any, out_dir: Path, dtype: str) -> Path:
    """Save the LoRA adapter (weights cast to ``dtype``) and the tokenizer, atomically.

    The folder loads with ``PeftModel.from_pretrained(base, out_dir)``.
    """
    import torch

    from peft import get_peft_model_state_dict

    state = {k: v.detach().to(getattr(torch, dtype)).contiguous() for k, v in get_peft_model_state_dict(model).items()}

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state)
        tokenizer.save_pretrained(tmp)

    return write_folder(out_dir, write)


def checkpoints(out_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (none when the folder does not exist)."""
    found = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def divergence_guard(factor: float) -> Any:
    """A callback that stops training with :class:`TrainingDiverged` on a NaN/inf or exploding loss."""
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def __init__(self) -> None:
            self.first: float | None = None

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            loss = (logs or {}).get("loss")
            if loss is None:
                return
            step = state.global_step
            saved = checkpoints(args.output_dir)
            checkpoint = f"; the last good checkpoint is {saved[-1]}" if saved else ""
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss became {loss} at step {step}{checkpoint}. "
                    "Lower sft.learning_rate, check sft.max_grad_norm, or look for broken rows in the mix.")
            if self.first is None:
                self.first = loss
            elif loss > factor * self.first:
                raise TrainingDiverged(
                    f"training loss exploded at step {step}: {loss:.3f} is more than {factor}x the first logged "
                    f"loss ({self.first:.3f}){checkpoint}. Lower sft.learning_rate or raise sft.warmup_steps.")

    return DivergenceGuard()




def ensure_profile_mix(profile: Profile, *, progress: bool = True) -> Path:
    """The profile's mix folder (``runs/<profile>/mix``), built first if missing or out of date
    (see :func:`workings.data.mix.ensure_mix`)."""
    from workings.data.mix import ensure_mix, mix_provenance
    from workings.models.loading import load_tokenizer

    return ensure_mix(run_dir(profile) / "mix", mix_provenance(profile.name, profile.data, profile.model.id),
                      profile.data, lambda: load_tokenizer(profile.model), progress=progress)
