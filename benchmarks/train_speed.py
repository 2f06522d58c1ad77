"""Training speed of profiles on a randomly initialised model of their real shapes.

Builds the profile's model from its config (no weights needed: gemma-2-2b-it's shipped
config gives the real shapes), saves it once in the profile's dtype, loads it the way
training does (4-bit NF4 for ``a100``, bfloat16 for ``a100-bf16``), wraps it with the
profile's LoRA, and runs optimizer steps of the profile's batch, gradient accumulation,
sequence length, mixed precision, gradient checkpointing and optimizer on random tokens.
Prints one table: seconds per optimizer step, tokens per second, peak GPU memory, and
the hours the seed's 17,835 steps would take at that speed.

    python benchmarks/train_speed.py                        # a100 and a100-bf16 on a GPU
    python benchmarks/train_speed.py --profiles demo demo-bf16 --steps 2 --warmup 1   # CPU smoke run

Not a test: it needs a GPU for the real profiles and minutes of time.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

SEED_STEPS = 17_835


def random_model_dir(profile, root: Path) -> Path:
    """Save a randomly initialised model with the profile's config and tokenizer (once per model and dtype)."""
    import torch
    from transformers import AutoModelForCausalLM

    from workings.models.loading import model_source
    from workings.models.cost import load_model_config
    from workings.models.qlora import torch_dtype

    target = root / f"{profile.model.id.replace('/', '--')}-{profile.model.dtype}"
    if target.is_dir():
        return target
    config = load_model_config(model_source(profile.model))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(profile.model.dtype))
    model.save_pretrained(target)
    del model
    return target


def bench(profile, steps: int, warmup: int, accumulation: int | None) -> dict:
    import torch
    from transformers import TrainingArguments
    from transformers.trainer import Trainer

    from workings.models.loading import load_base_model
    from workings.models.cost import count_parameters
    from workings.models.qlora import prepare_for_training

    t = profile.sft_args()  # the trl.SFTConfig the profile trains with
    accumulation = accumulation or t.gradient_accumulation_steps
    cuda = profile.training.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = prepare_for_training(load_base_model(profile), profile)
    model.train()
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), optim=t.optim, learning_rate=t.learning_rate,
                             weight_decay=t.weight_decay, use_cpu=not cuda, report_to="none")
    optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    optimizer = optimizer_cls([p for p in model.parameters() if p.requires_grad], **optimizer_kwargs)
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=t.bf16)

    def step() -> None:
        for _ in range(accumulation):
            ids = torch.randint(3, vocab, (t.per_device_train_batch_size, t.max_length), generator=generator).to(device)
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss / accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    tokens = t.per_device_train_batch_size * t.max_length * accumulation
    trainable, _ = count_parameters(model)
    return {
        "profile": profile.name,
        "base": f"{profile.quantization.bits}-bit {profile.quantization.quant_type}" if profile.quantization else profile.model.dtype,
        "batch x accum x len": f"{t.per_device_train_batch_size} x {accumulation} x {t.max_length}",
        "trainable": f"{trainable:,}",
        "s/step": round(seconds, 3),
        "tokens/s": round(tokens / seconds),
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        f"hours for {SEED_STEPS} steps": round(seconds * SEED_STEPS / 3600, 2),
    }


def main() -> None:
    import gc

    import torch

    from workings.config.loading import load_profile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", nargs="+", default=["a100", "a100-bf16"])
    parser.add_argument("--steps", type=int, default=5, help="timed optimizer steps per profile")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--accumulation", type=int, default=None, help="override gradient accumulation (default: the profile's)")
    parser.add_argument("--workdir", default=None, help="where the random models are saved (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="train-speed-"))
    rows = []
    for name in args.profiles:
        profile = load_profile(name)
        local = random_model_dir(profile, root)
        profile = dataclasses.replace(profile, model=dataclasses.replace(profile.model, id=str(local)))
        print(f"{name}: {args.warmup} warm-up + {args.steps} timed steps ...", flush=True)
        rows.append(bench(profile, args.steps, args.warmup, args.accumulation))
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\nrandomly initialised models of the profiles' shapes, random tokens; device: {device}, torch {torch.__version__}")
    header = list(rows[0])
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(str(r[h]).ljust(w) for h, w in zip(header, widths)))


if __name__ == "__main__":
    main()
