"""Loading the tokenizer and model a profile names, for training or for inference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workings.profiles import ModelConfig, Profile

TINY = "tiny"


def model_source(model: ModelConfig) -> str:
    """What ``from_pretrained`` gets: the tiny model's cache folder, a Hub id, or a local path."""
    if model.id == TINY:
        from workings.tiny import tiny_model_dir

        return str(tiny_model_dir())
    return model.id


def _hub_error(model: ModelConfig, what: str, err: Exception) -> OSError:
    return OSError(
        f"could not load the {what} of {model.id!r} (revision {model.revision!r}): {err}. "
        "Gemma models are gated: accept the licence on the Hub and log in, or point model.id at a local copy."
    )


def load_tokenizer(model: ModelConfig) -> Any:
    """The profile's tokenizer: the project's tiny one for ``id: tiny``, else from the Hub or a local path."""
    if model.id == TINY:
        from workings.tiny import tiny_tokenizer

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

    from workings.qlora import bnb_config, torch_dtype

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
        return AutoModelForCausalLM.from_pretrained(model_source(model), **kwargs)
    except OSError as err:
        raise _hub_error(model, "weights", err) from err


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


def engine_name(profile: Profile) -> str:
    """The engine generation will use: ``vllm`` when the profile asks for it and it imports, else ``hf``."""
    from workings.generate import vllm_available

    return "vllm" if profile.evaluation.engine == "vllm" and vllm_available() else "hf"


def load_generator(profile: Profile, adapter: str | Path | None = None) -> Any:
    """What :func:`workings.generate.generate` takes: a vLLM engine when :func:`engine_name` says so,
    else the Hugging Face model of :func:`load_for_inference`."""
    if engine_name(profile) == "hf":
        if profile.evaluation.engine == "vllm":
            print("vLLM is not installed: generating with transformers instead", flush=True)
        return load_for_inference(profile, adapter)
    from workings.generate import VLLMEngine

    return VLLMEngine(
        model_source(profile.model), load_tokenizer(profile.model), adapter=adapter, revision=profile.model.revision,
        dtype=profile.model.dtype, quantized=profile.quantization is not None, max_lora_rank=max(8, profile.lora.r),
        max_model_len=profile.training.max_length + profile.evaluation.max_new_tokens, seed=profile.evaluation.seed,
    )
