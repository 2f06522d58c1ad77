"""Training speed of the seed's configuration against faster variants, on one GPU, in one table.

Every variant trains the same rows: randomly initialised weights of the base profile's model
(gemma-2-2b-it's real shapes from its shipped config; no weights are downloaded) and rows of
realistic lengths (a built mix's token lengths with ``--mix``, else a stated log-normal). Each
optimizer step takes the same rows in every variant, so speeds and first-step losses compare.

Per variant the table gives: useful tokens/s (tokens that are not padding), seconds per optimizer
step, padding share, peak GPU memory, MFU (4 x parameters x useful tokens/s over the GPU's dense
bf16 peak: LoRA's forward and input-gradient passes, no weight gradients of the frozen base,
recomputation and attention not counted), the loss of the first step (equal rows, equal LoRA
initialisation: it should agree across variants up to precision), the largest logit difference
between packed and separate examples for padding-free variants (0 means packing keeps them
apart), and the speed over the seed's.

    python benchmarks/train_speed.py                         # every variant of a100 on a GPU
    python benchmarks/train_speed.py --base demo --steps 1 --warmup 0   # CPU smoke run (tiny shapes)

A variant that cannot run here (out of memory, flex attention's backward on a CPU, Liger not
installed) is a row saying why. Not a test: it needs a GPU and minutes.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from pathlib import Path

import yaml

# Changes to the base profile (by its own keys), in the order the table lists them.
VARIANTS: dict[str, dict] = {
    "seed (4-bit, 4 padded, checkpointing)": {},
    "bf16 base": {"quantization": None},
    "bf16, 8 rows, no checkpointing": {"quantization": None,
                                       "sft": {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,
                                               "gradient_checkpointing": False}},
    "bf16, grouped by length": {"quantization": None, "sft": {"train_sampling_strategy": "group_by_length"}},
    "bf16, padding-free 16, flex": {"quantization": None, "model": {"attn_implementation": "flex_attention"},
                                    "sft": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
                                            "padding_free": True}},
    # The a100-fast and h100-fast profiles, as changes to the seed's (tests check they agree).
    "a100-fast (+ Liger, fused AdamW)": {"quantization": None, "model": {"attn_implementation": "flex_attention"},
                                         "sft": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
                                                 "padding_free": True, "use_liger_kernel": True,
                                                 "optim": "adamw_torch_fused"}},
    "h100-fast (no checkpointing)": {"quantization": None, "model": {"attn_implementation": "flex_attention"},
                                     "sft": {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 2,
                                             "padding_free": True, "use_liger_kernel": True,
                                             "optim": "adamw_torch_fused", "gradient_checkpointing": False}},
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def row_lengths(mix: str | None, count: int, max_length: int, seed: int = 0) -> list[int]:
    """Token lengths of ``count`` rows: a built mix's, else log-normal (median 350, sigma 0.6, cut to 64..max_length)."""
    import random

    if mix:
        from workings.data.mix import load_mix

        lengths = list(load_mix(mix)[0]["n_tokens"])
        random.Random(seed).shuffle(lengths)
        return [min(n, max_length) for n in (lengths * math.ceil(count / len(lengths)))[:count]]
    rng = random.Random(seed)
    return [max(64, min(max_length, round(rng.lognormvariate(math.log(350), 0.6)))) for _ in range(count)]


def variant_profile(base: str, change: dict, root: Path, index: int):
    """The profile of a variant: a YAML file extending the base (or the named profile) with ``change``."""
    from workings.config.loading import load_profile

    raw = {"extends": base, "name": f"variant-{index}", **change}
    path = root / f"variant-{index}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path)


def random_model_dir(profile, root: Path) -> Path:
    """A randomly initialised model of the profile's config, saved once in its dtype."""
    import torch
    from transformers import AutoModelForCausalLM

    from workings.models.cost import load_model_config
    from workings.models.loading import model_source
    from workings.models.qlora import torch_dtype

    target = root / f"{profile.model.id.replace('/', '--')}-{profile.model.dtype}"
    if not target.is_dir():
        config = load_model_config(model_source(profile.model))
        torch.manual_seed(0)
        # Initialised on the GPU where there is one, far faster than the CPU for 2.6e9 random numbers.
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(profile.model.dtype))
        model.save_pretrained(target)
        del model
    return target


def micro_batches(lengths: list[int], t, vocab: int, seed: int) -> list[dict]:
    """One optimizer step's micro-batches as the trainer would form them from these rows."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    rows = [torch.randint(3, vocab, (n,), generator=generator) for n in lengths]
    if t.train_sampling_strategy == "group_by_length":  # within the step, so every variant sees the same rows
        rows.sort(key=len)
    size = t.per_device_train_batch_size
    batches = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        if t.padding_free:
            ids = torch.cat(chunk)[None]
            positions = torch.cat([torch.arange(len(r)) for r in chunk])[None]
            labels = ids.clone()
            labels[positions == 0] = -100
            batches.append({"input_ids": ids, "position_ids": positions, "labels": labels})
        else:
            width = max(len(r) for r in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, r in enumerate(chunk):
                ids[i, : len(r)], mask[i, : len(r)] = r, 1
            batches.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return batches


def bench(profile, lengths_per_step: list[list[int]], warmup: int) -> dict:
    import torch
    from transformers import TrainingArguments
    from transformers.trainer import Trainer

    from workings.models.cost import count_parameters
    from workings.models.loading import load_base_model
    from workings.models.qlora import prepare_for_training
    from workings.train.sft import attention_leak

    t = profile.sft_args()
    cuda = profile.training.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = load_base_model(profile)
    leak = attention_leak(base, [list(range(3, 3 + n)) for n in (37, 8, 61)], packed=True) if t.padding_free else None
    if t.use_liger_kernel:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance

        _apply_liger_kernel_to_instance(model=base)
    torch.manual_seed(0)  # the same LoRA initialisation in every variant
    model = prepare_for_training(base, profile)
    model.train()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), optim=t.optim, learning_rate=t.learning_rate,
                             weight_decay=t.weight_decay, use_cpu=not cuda, report_to="none")
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], **optimizer_kwargs)
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if t.bf16 else torch.float16, enabled=t.bf16 or t.fp16)

    def step(index: int) -> tuple[float, int, int]:
        batches = micro_batches(lengths_per_step[index], t, vocab, seed=index)
        targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        total, padded = 0.0, sum(b["input_ids"].numel() for b in batches)
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                # summed over this micro-batch's targets, divided by the step's: the trainer's normalisation
                loss = model(**batch, use_cache=False, num_items_in_batch=targets).loss
            loss.backward()
            total += loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total, sum(lengths_per_step[index]), padded

    first_loss, _, _ = step(0)
    for i in range(1, 1 + warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    start, useful, padded = time.perf_counter(), 0, 0
    timed = range(1 + warmup, len(lengths_per_step))
    for i in timed:
        _, u, p = step(i)
        useful, padded = useful + u, padded + p
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    _, frozen = count_parameters(model)
    name = torch.cuda.get_device_name() if cuda else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    tokens_per_second = useful / seconds
    return {
        "useful tok/s": round(tokens_per_second),
        "s/step": round(seconds / len(timed), 3),
        "padding": f"{100 * (1 - useful / padded):.0f}%",
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None,
        "MFU": f"{100 * 4 * frozen * tokens_per_second / (peak * 1e12):.1f}%" if peak else None,
        "step-1 loss": round(first_loss, 4),
        "packing leak": None if leak is None else f"{leak:.1e}",
    }


def failed_row(name: str, err: Exception, first_column: str) -> dict:
    """The table row of a variant that could not run: the reason in short, the whole error printed."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    print(f"{name} failed: {type(err).__name__}: {err}", flush=True)  # the table keeps the first 80 characters
    reason = "out of memory" if "out of memory" in str(err).lower() else f"{type(err).__name__}: {str(err)[:80]}"
    return {first_column: None, "failed": reason}


def print_table(table: list[dict]) -> None:
    """Rows of dicts as one markdown table, "–" where a row has no value."""
    header = list(dict.fromkeys(k for row in table for k in row))
    widths = [max(len(h), *(len(str(r.get(h, ""))) for r in table)) for h in header]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in table:
        print("| " + " | ".join(str(r.get(h) if r.get(h) is not None else "–").ljust(w) for h, w in zip(header, widths)) + " |")


def main() -> None:
    import torch

    from workings.config.loading import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="a100", help="the profile whose model and settings the variants change")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS (default: all)")
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps after the first")
    parser.add_argument("--mix", default=None, help="a built mix folder whose row lengths to use")
    parser.add_argument("--workdir", default=None, help="where the random model is saved (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="train-speed-"))
    base = load_profile(args.base)
    t = base.sft_args()
    rows_per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * base.training.processes
    total_steps = 1 + args.warmup + args.steps
    lengths = row_lengths(args.mix, rows_per_step * total_steps, t.max_length)
    per_step = [lengths[i * rows_per_step : (i + 1) * rows_per_step] for i in range(total_steps)]
    local = random_model_dir(base, root)
    table = []
    for index, name in enumerate(args.variants):
        import dataclasses

        profile = variant_profile(args.base, VARIANTS[name], root, index)
        random_dir = random_model_dir(profile, root) if profile.model.dtype != base.model.dtype else local
        profile = dataclasses.replace(profile, model=dataclasses.replace(profile.model, id=str(random_dir)))
        print(f"{name}: 1 + {args.warmup} + {args.steps} steps ...", flush=True)
        try:
            row = bench(profile, per_step, args.warmup)
        except Exception as err:  # a variant that cannot run here is a row saying why
            row = failed_row(name, err, "useful tok/s")
        table.append({"variant": name, **row})
        print(table[-1], flush=True)  # each row as it comes, so a run cut short still says something
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    seed_speed = table[0].get("useful tok/s")
    for row in table:
        speed = row.get("useful tok/s")
        row["x seed"] = f"{speed / seed_speed:.2f}" if speed and seed_speed else None
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n{args.base} shapes, random weights, {rows_per_step} rows per step of "
          f"{'mix' if args.mix else 'log-normal'} lengths (mean {sum(lengths) / len(lengths):.0f} tokens); "
          f"{device}, torch {torch.__version__}")
    print_table(table)


if __name__ == "__main__":
    main()
