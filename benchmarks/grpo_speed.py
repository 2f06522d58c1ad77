"""GRPO speed of a profile's settings on one GPU: seconds per step, generation tokens/s, peak memory.

Each variant runs :func:`workings.train.grpo.build_grpo_trainer`, the code ``workings grpo`` runs,
with the profile's ``grpo:`` section as it is, on:

- a randomly initialised model of the profile's shapes (gemma-2-2b-it's shipped config for
  ``a100``; no weights are downloaded), quantized on load as the profile says;
- a LoRA adapter of the profile's shape with random weights in place of the SFT adapter;
- the project's tiny tokenizer (the Hub's cannot be reached from every machine) and prompts from
  the demo profile's synthetic mix.

Random weights never emit the stop token, so every reply runs to ``max_completion_length``: the
slowest case, and the same work in every step and variant. Random weights solve nothing, so the
difficulty selection (which would drop every prompt) is skipped. Rewards are computed as in a real
run. vLLM is used where the profile asks for it and it is installed; else transformers generates.

Per variant the table gives seconds per optimizer step (timed steps after ``--warmup``), the
seconds of it spent generating, generated tokens/s, replies per step, mean reply length and the
peak GPU memory of the whole run.

    python benchmarks/grpo_speed.py                                   # a100 on a GPU
    python benchmarks/grpo_speed.py --profile demo --steps 1 --warmup 0  # CPU smoke run (tiny model)

Not a test: it needs a GPU for the real profiles and minutes of time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from eval_speed import random_adapter  # noqa: E402
from train_speed import failed_row, print_table, random_model_dir, variant_profile  # noqa: E402

# Changes to the profile (by its own keys), in the order the table lists them.
VARIANTS: dict[str, dict] = {
    "profile as it is": {},
    "bf16 base (no 4-bit)": {"quantization": None},
}


def synchronize() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench(profile, mix_dir: Path, adapter: Path, out_dir: Path, steps: int, warmup: int) -> dict:
    import torch
    from transformers import TrainerCallback

    from workings.train.grpo import build_grpo_trainer

    step_seconds: list[float] = []
    generation: list[tuple[int, float, int, int]] = []  # step, seconds, replies, tokens of each generation call

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            synchronize()
            step_seconds.append(time.perf_counter() - self.start)
            made = [c for c in generation if c[0] == state.global_step - 1]
            print(f"  step {state.global_step}: {step_seconds[-1]:.1f} s, generating {sum(c[1] for c in made):.1f} s "
                  f"({sum(c[3] for c in made)} tokens in {sum(c[2] for c in made)} replies)", flush=True)

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    trainer, _ = build_grpo_trainer(profile, mix_dir, out_dir, adapter, progress=False, callbacks=[StepClock()])
    print(f"  trainer built in {time.perf_counter() - start:.0f} s", flush=True)
    generate = trainer._generate_single_turn  # TRL's one call into vLLM or transformers per generation batch

    def timed_generate(*args, **kwargs):
        synchronize()
        start = time.perf_counter()
        completion_ids, logprobs = generate(*args, **kwargs)
        synchronize()
        generation.append((trainer.state.global_step, time.perf_counter() - start, len(completion_ids),
                           sum(len(c) for c in completion_ids)))
        return completion_ids, logprobs

    trainer._generate_single_turn = timed_generate
    trainer.train()
    seconds = sum(step_seconds[warmup:])
    calls = [c for c in generation if c[0] >= warmup]  # made during the timed steps
    gen_seconds, replies, tokens = (sum(c[i] for c in calls) for i in (1, 2, 3))
    row = {
        "s/step": round(seconds / steps, 2),
        "generating s/step": round(gen_seconds / steps, 2),
        "gen tok/s": round(tokens / gen_seconds) if gen_seconds else None,
        "replies/step": round(replies / steps),
        "mean reply tokens": round(tokens / replies) if replies else None,
        "engine": "vLLM" if trainer.args.use_vllm else "transformers",
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None,
    }
    del trainer
    return row


def main() -> None:
    import torch

    from workings.config.loading import load_profile
    from workings.models.loading import model_source
    from workings.models.tiny import tiny_tokenizer
    from workings.train.runs import ensure_profile_mix

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="a100", help="the profile whose model and grpo settings to time")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), help="names from VARIANTS (default: all)")
    parser.add_argument("--steps", type=int, default=2, help="timed optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first")
    parser.add_argument("--workdir", default=None, help="where the random model is saved (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(args.workdir or tempfile.mkdtemp(prefix="grpo-speed-"))
    root.mkdir(parents=True, exist_ok=True)
    base = load_profile(args.profile)
    mix_dir = ensure_profile_mix(load_profile("demo"), progress=False)  # synthetic, graded, built in seconds
    if base.model.id == "tiny":
        base_dir = Path(model_source(base.model))
    else:
        base_dir = random_model_dir(base, root)
        tiny_tokenizer().save_pretrained(base_dir)  # load_tokenizer reads it from the model's folder
    total = args.warmup + args.steps
    table = []
    for index, name in enumerate(args.variants):
        change = {**VARIANTS[name],
                  "reinforcement": {"sources": ["synthetic"], "difficulty_samples": 0, "candidates": 256},
                  "grpo": {"max_steps": total, "save_steps": 10**6, "logging_steps": 1}}
        profile = variant_profile(args.profile, change, root, index)
        profile = dataclasses.replace(profile, model=dataclasses.replace(profile.model, id=str(base_dir)))
        adapter = random_adapter(profile, base_dir, root)
        print(f"{name}: {args.warmup} + {args.steps} steps ...", flush=True)
        try:
            row = bench(profile, mix_dir, adapter, root / f"run-{index}", args.steps, args.warmup)
        except Exception as err:  # a variant that cannot run here is a row saying why
            row = failed_row(name, err, "s/step")
        table.append({"variant": name, **row})
        print(table[-1], flush=True)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    g = base.grpo
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"\n{args.profile} grpo settings ({g.get('per_device_train_batch_size')} x {g.get('gradient_accumulation_steps', 1)} "
          f"replies per step, {g.get('num_generations')} per prompt, up to {g.get('max_completion_length')} tokens); "
          f"{'the tiny model' if base.model.id == 'tiny' else 'random weights of ' + base.model.id}; {device}, torch {torch.__version__}")
    print_table(table)


if __name__ == "__main__":
    main()
