"""An export folder from a run: the adapter as training saved it, or the base with the adapter merged.

Both carry the tokenizer with its chat template, a ``generation_config.json`` that stops at
``<end_of_turn>``, and the model card (:mod:`workings.export.card`). A merged export loads the base
unquantized in bfloat16 (merging into 4-bit weights would round the adapter away), merges, and
saves sharded safetensors. Folders are written whole: a failure leaves no half export.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from workings.config.schema import Profile
from workings.core.chat import stop_token_ids
from workings.files import write_folder

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def merge_profile(profile: Profile) -> Profile:
    """The profile's base as a merge needs it: unquantized, bfloat16, on the CPU."""
    return dataclasses.replace(
        profile, quantization=None, model=dataclasses.replace(profile.model, dtype="bfloat16"),
        training=dataclasses.replace(profile.training, device="cpu"))


def generation_config(tokenizer: Any) -> Any:
    """Greedy by default, stopping at ``<end_of_turn>`` (or ``<eos>``), padding with the tokenizer's pad."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=stop_token_ids(tokenizer), do_sample=False)


def export_adapter(profile: Profile, adapter_dir: str | Path, out_dir: str | Path, card: str) -> Path:
    """The PEFT adapter folder as training saved it, with tokenizer, chat template, generation config and card."""
    from workings.models.loading import check_adapter, load_tokenizer

    adapter_dir = check_adapter(adapter_dir)
    tokenizer = load_tokenizer(profile.model)

    def write(tmp: Path) -> None:
        for name in ADAPTER_FILES:
            shutil.copy2(adapter_dir / name, tmp / name)
        tokenizer.save_pretrained(tmp)
        generation_config(tokenizer).save_pretrained(tmp)
        (tmp / "README.md").write_text(card)

    return write_folder(out_dir, write)


def export_merged(profile: Profile, adapter_dir: str | Path, out_dir: str | Path, card: str,
                  max_shard_size: str = "2GB") -> Path:
    """The base in bfloat16 with the adapter merged, as sharded safetensors, with tokenizer and card."""
    from workings.models.loading import check_adapter, load_for_inference, load_tokenizer

    adapter_dir = check_adapter(adapter_dir)
    tokenizer = load_tokenizer(profile.model)
    model = load_for_inference(merge_profile(profile), adapter_dir, merged=True)
    model.generation_config = generation_config(tokenizer)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, max_shard_size=max_shard_size, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)

    return write_folder(out_dir, write)


def logit_difference(profile: Profile, adapter_dir: str | Path, merged_dir: str | Path,
                     questions: list[str]) -> float:
    """Largest absolute difference between the logits of base + adapter (PEFT, bfloat16, unmerged)
    and of the merged export, over the rendered prompts of ``questions``."""
    import torch
    from transformers import AutoModelForCausalLM

    from workings.core.chat import render_prompt
    from workings.models.loading import load_for_inference, load_tokenizer

    tokenizer = load_tokenizer(profile.model)
    unmerged = load_for_inference(merge_profile(profile), adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.bfloat16,
                                                  attn_implementation=profile.model.attn_implementation)
    merged.eval()
    worst = 0.0
    with torch.no_grad():
        for question in questions:
            ids = tokenizer(render_prompt(question, tokenizer), add_special_tokens=False, return_tensors="pt")["input_ids"]
            a, b = unmerged(input_ids=ids).logits.float(), merged(input_ids=ids).logits.float()
            worst = max(worst, (a - b).abs().max().item())
    return worst
