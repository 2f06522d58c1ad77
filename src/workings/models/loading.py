"""Loading the tokenizer and model a profile names, for training or for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workings.config.schema import ModelConfig, Profile

TINY = "tiny"  # the model id of the project's own tiny Gemma (:mod:`workings.models.tiny`)


def is_tiny(model: ModelConfig) -> bool:
    return model.id == TINY


def model_source(model: ModelConfig) -> str:
    """What ``from_pretrained`` gets: the tiny model's cache folder, a Hub id, or a local path.

    The tiny model is built here if it is not cached yet, with the global random state saved and
    restored around the build, so whatever is seeded next draws the same numbers either way.
    """
    if is_tiny(model):
        import torch

        from workings.models.tiny import tiny_model_dir

        with torch.random.fork_rng(devices=[]):
            return str(tiny_model_dir())
    return model.id


def model_build(model: ModelConfig) -> str | None:
    """What identifies a model's weights beyond its id: the tiny model is built per machine, so
    the digest of its weights file; ``None`` for a Hub id or a local folder (the id says it)."""
    if not is_tiny(model):
        return None
    from workings.files import file_digest

    return file_digest(Path(model_source(model)) / "model.safetensors")


def _hub_error(model: ModelConfig, what: str, err: Exception) -> OSError:
    return OSError(
        f"could not load the {what} of {model.id!r} (revision {model.revision!r}): {err}. "
        "Gemma models are gated: accept the licence on the Hub and log in, or point model.id at a local copy."
    )


def load_tokenizer(model: ModelConfig) -> Any:
    """The profile's tokenizer: the project's tiny one for ``id: tiny``, else from the Hub or a local path."""
    if is_tiny(model):
        from workings.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.id, revision=model.revision)
    except OSError as err:
        raise _hub_error(model, "tokenizer", err) from err


def device_of(profile: Profile) -> str:
    return "cuda:0" if profile.training.device == "cuda" else "cpu"


def load_base_model(profile: Profile) -> Any:
    """The frozen base in ``model.dtype``, quantized by bitsandbytes when the profile has a quantization section."""
    from transformers import AutoModelForCausalLM

    from workings.models.qlora import bnb_config, keep_4bit_weights_plain, torch_dtype

    model = profile.model
    kwargs: dict[str, Any] = {
        "revision": model.revision,
        "dtype": torch_dtype(model.dtype),
        "attn_implementation": model.attn_implementation,
        "device_map": {"": device_of(profile)},
    }
    if profile.quantization is not None:
        kwargs["quantization_config"] = bnb_config(profile.quantization)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model_source(model), **kwargs)
    except OSError as err:
        raise _hub_error(model, "weights", err) from err
    if profile.quantization is not None:
        keep_4bit_weights_plain(loaded)
    return loaded


def load_for_inference(profile: Profile, adapter: str | Path | None = None, merged: bool = False) -> Any:
    """The base for generation, with a saved LoRA adapter on top when ``adapter`` is given.

    With ``merged`` the adapter is folded into the weights (only for an unquantized base).
    """
    model = load_base_model(profile)
    if adapter is not None:
        import warnings

        from peft import PeftModel

        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5; not ours to fix
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(adapter))
        if merged:
            if profile.quantization is not None:
                raise ValueError("merging a LoRA adapter into a quantized base loses precision; load an unquantized base")
            model = model.merge_and_unload()
    model.eval()
    return model
