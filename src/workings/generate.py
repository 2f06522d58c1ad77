"""Batched generation: the chat template applied once, left padding, stop at ``<end_of_turn>``.

Prompts are sorted by length so each batch pads little, generated in batches, and
returned in the caller's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workings.chat import render_prompt


@dataclass
class SamplingConfig:
    """Greedy when ``temperature`` is 0; otherwise sampled with ``top_p`` from ``seed``."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 16


@dataclass
class Generation:
    prompt: str
    text: str  # the model's turn, special tokens removed
    new_tokens: int
    truncated: bool  # stopped at max_new_tokens instead of at a stop token


def stop_token_ids(tokenizer: Any) -> list[int]:
    """``<end_of_turn>`` ends a chat turn; ``<eos>`` ends a document. Either stops generation."""
    ids = [tokenizer.convert_tokens_to_ids("<end_of_turn>"), tokenizer.convert_tokens_to_ids("<eos>")]
    return [i for i in dict.fromkeys(ids) if i is not None and i != tokenizer.unk_token_id]


def generate(model: Any, tokenizer: Any, questions: list[str], sampling: SamplingConfig | None = None,
             progress: bool = False) -> list[Generation]:
    """Answer every question (rendered with the chat template) and return the generations in order."""
    import torch

    sampling = sampling or SamplingConfig()
    prompts = [render_prompt(q, tokenizer) for q in questions]
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    results: list[Generation | None] = [None] * len(prompts)
    batches = [order[i : i + sampling.batch_size] for i in range(0, len(order), sampling.batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="generating", unit="batch")
    torch.manual_seed(sampling.seed)
    for batch in batches:
        width = max(len(encoded[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):  # left padding: every prompt ends where generation starts
            input_ids[row, width - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]) :] = 1
        kwargs: dict[str, Any] = {"do_sample": False}
        if sampling.temperature > 0:
            kwargs = {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids.to(device), attention_mask=mask.to(device),
                max_new_tokens=sampling.max_new_tokens, eos_token_id=stops, pad_token_id=pad,
                top_k=None, **kwargs,
            )
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            ended = next((k for k, t in enumerate(new) if t in stops), None)
            kept = new[:ended] if ended is not None else new
            results[i] = Generation(
                prompt=prompts[i],
                text=tokenizer.decode(kept, skip_special_tokens=True),
                new_tokens=len(kept) + (ended is not None),
                truncated=ended is None,
            )
    return [r for r in results if r is not None]
