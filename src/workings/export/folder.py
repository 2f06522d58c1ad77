"""An export folder from a run: the adapter as training saved it, or the base with the adapter merged.

Both carry the tokenizer with its chat template, a ``generation_config.json`` that stops at
``<end_of_turn>``, and the model card (:mod:`workings.export.card`). A merged export loads the base
unquantized (merging into 4-bit weights would round the adapter away) in the profile's
``model.dtype``, so that it answers as base + adapter do, merges, and saves sharded safetensors;
another dtype is written only when asked, with its cost measured. Folders are written whole: a
failure leaves no half export, and only a folder workings wrote is ever replaced.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workings.config.schema import Profile
from workings.core.chat import stop_token_ids
from workings.files import write_folder

def merge_profile(profile: Profile, dtype: str | None = None) -> Profile:
    """The profile's base as a merge needs it: unquantized, on the CPU, in ``dtype`` (default the
    profile's ``model.dtype``, the precision its unquantized weights are loaded in everywhere else)."""
    return dataclasses.replace(
        profile, quantization=None, model=dataclasses.replace(profile.model, dtype=dtype or profile.model.dtype),
        training=dataclasses.replace(profile.training, device="cpu"))


def generation_config(tokenizer: Any) -> Any:
    """Greedy by default, stopping at ``<end_of_turn>`` (or ``<eos>``), padding with the tokenizer's pad."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                            eos_token_id=stop_token_ids(tokenizer), do_sample=False)


def export_adapter(profile: Profile, adapter_dir: str | Path, out_dir: str | Path, card: str) -> Path:
    """The PEFT adapter folder as training saved it, with tokenizer, chat template, generation config and card.

    ``adapter_config.json`` names the base by the profile's ``model.id`` (training writes the path
    it loaded the base from, which for a cached model is a folder of the training machine).
    """
    from workings.models.loading import check_adapter, load_tokenizer

    adapter_dir = check_adapter(adapter_dir)
    tokenizer = load_tokenizer(profile.model)

    def write(tmp: Path) -> None:
        shutil.copy2(adapter_dir / "adapter_model.safetensors", tmp / "adapter_model.safetensors")
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = profile.model.id
        (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tokenizer.save_pretrained(tmp)
        generation_config(tokenizer).save_pretrained(tmp)
        (tmp / "README.md").write_text(card)

    return write_folder(out_dir, write, what="export")


# Questions a merge's cost is measured on: one in the project's own world, two beyond it.
COST_QUESTIONS = ("Ava has 7 stickers. She finds 3 more. She gives away 2. How many stickers does Ava have now?",
                  "A shop sells 4 pens at $3 each. How much do the pens cost?",
                  "What is 12 + 30?")


def export_merged(profile: Profile, adapter_dir: str | Path, out_dir: str | Path, card: str,
                  max_shard_size: str = "2GB", dtype: str | None = None) -> Path:
    """The base with the adapter merged, in ``dtype`` (default the profile's ``model.dtype``), as
    sharded safetensors, with tokenizer, generation config and card."""
    from workings.models.loading import check_adapter, load_for_inference, load_tokenizer

    adapter_dir = check_adapter(adapter_dir)
    tokenizer = load_tokenizer(profile.model)
    model = load_for_inference(merge_profile(profile, dtype), adapter_dir, merged=True)
    model.generation_config = generation_config(tokenizer)

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, max_shard_size=max_shard_size, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(card)

    return write_folder(out_dir, write, what="export")


@dataclass
class MergeCost:
    """What writing a merge in another dtype than the base's changes in its answers."""

    dtype: str
    base_dtype: str
    prompts: int
    max_logit_difference: float
    same_greedy_tokens: int  # of the prompts, how many have the same 16 greedy tokens
    greedy_tokens: int = 16

    def __str__(self) -> str:
        return (f"merged in {self.dtype} instead of the base's {self.base_dtype}: logits differ from base + adapter by "
                f"up to {self.max_logit_difference:.3g}, and {self.same_greedy_tokens} of {self.prompts} prompts "
                f"keep their first {self.greedy_tokens} greedy tokens")


def merge_cost(profile: Profile, adapter_dir: str | Path, merged_dir: str | Path,
               questions: tuple[str, ...] = COST_QUESTIONS, greedy_tokens: int = 16) -> MergeCost:
    """Compare the merged export in ``merged_dir`` with base + adapter in the base's own dtype: the
    largest logit difference over the prompts of ``questions`` and, unless ``greedy_tokens`` is 0,
    how many keep their first ``greedy_tokens`` greedy tokens."""
    import torch
    from transformers import AutoModelForCausalLM

    from workings.core.chat import render_prompt
    from workings.models.loading import load_for_inference, load_tokenizer

    tokenizer = load_tokenizer(profile.model)
    unmerged = load_for_inference(merge_profile(profile), adapter_dir)
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype="auto",
                                                  attn_implementation=profile.model.attn_implementation).eval()
    worst, same = 0.0, 0
    with torch.no_grad():
        for question in questions:
            ids = tokenizer(render_prompt(question, tokenizer), add_special_tokens=False, return_tensors="pt")["input_ids"]
            a, b = unmerged(input_ids=ids).logits.float(), merged(input_ids=ids).logits.float()
            worst = max(worst, (a - b).abs().max().item())
            if not greedy_tokens:
                continue
            greedy = [m.generate(ids, max_new_tokens=greedy_tokens, do_sample=False, min_new_tokens=greedy_tokens,
                                 pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:].tolist() for m in (unmerged, merged)]
            same += greedy[0] == greedy[1]
    return MergeCost(str(merged.dtype).removeprefix("torch."), profile.model.dtype, len(questions), worst, same, greedy_tokens)


def logit_difference(profile: Profile, adapter_dir: str | Path, merged_dir: str | Path,
                     questions: list[str]) -> float:
    """Largest absolute difference between the logits of base + adapter (PEFT, unmerged, in the
    profile's ``model.dtype``) and of the merged export in ``merged_dir`` (in the dtype it was saved
    in), over the rendered prompts of ``questions``."""
    return merge_cost(profile, adapter_dir, merged_dir, tuple(questions), greedy_tokens=0).max_logit_difference
