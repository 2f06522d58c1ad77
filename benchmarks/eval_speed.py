"""Evaluation generation speed: this project's batched generation against the seed's way.

The seed asked its model one question at a time with ``do_sample=True`` and 500 new tokens.
This script builds a randomly initialised model of the profile's real shapes (gemma-2-2b-it's
shipped config for ``a100``; no weights are needed to time it), puts a LoRA adapter of the
profile's shape on it (saved and loaded the way training saves it), and times:

- ``seed way``: one question at a time, sampled, 500 new tokens;
- ``batched (hf)``: :func:`workings.evaluation.generate.generate` with the profile's batch size, prompts
  sorted by length, the same sampling and the same 500 tokens;
- ``batched (hf, merged)``: the same with the adapter merged into an unquantized base
  (profiles without a quantization section only);
- ``vllm``: the vLLM engine with the adapter as a LoRA request, when vLLM is installed.

Every variant generates exactly ``--new-tokens`` tokens per question (stop tokens are ignored
until then), so all do the same work. Prints one table and the speed-up over the seed's way.

    python benchmarks/eval_speed.py                                   # a100 on a GPU
    python benchmarks/eval_speed.py --profile demo --questions 16 --seed-questions 4 --new-tokens 32   # CPU smoke run

Not a test: it needs a GPU for the real profiles and minutes of time.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_speed import random_model_dir  # noqa: E402


def random_adapter(profile, base_dir: Path, root: Path) -> Path:
    """A LoRA adapter of the profile's shape with random (non-zero) weights, saved like training saves one."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from workings.models.loading import load_tokenizer
    from workings.models.qlora import lora_config, torch_dtype
    from workings.train.runs import save_adapter

    target = root / "adapter"
    if target.is_dir():
        return target
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch_dtype(profile.model.dtype))
    model = get_peft_model(model, lora_config(profile.lora))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    save_adapter(model, load_tokenizer_or_tiny(profile), target, profile.lora.save_dtype)
    del model
    return target


def load_tokenizer_or_tiny(profile):
    """The profile's tokenizer, or the project's tiny one when the Hub cannot be reached (ids stay in range)."""
    from workings.models.loading import load_tokenizer
    from workings.models.tiny import tiny_tokenizer

    try:
        return load_tokenizer(profile.model)
    except OSError:
        return tiny_tokenizer()


def timed(name: str, fn, questions: int, new_tokens: int, device: str) -> dict:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    generations = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    produced = sum(g.new_tokens for g in generations)
    if produced != questions * new_tokens:
        raise RuntimeError(f"{name}: generated {produced} tokens, expected {questions} x {new_tokens}")
    return {
        "variant": name, "questions": questions, "seconds": round(seconds, 2),
        "s / question": round(seconds / questions, 3), "tokens / s": round(produced / seconds, 1),
        "peak GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device.startswith("cuda") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="a100")
    parser.add_argument("--questions", type=int, default=128, help="questions for the batched variants")
    parser.add_argument("--seed-questions", type=int, default=8, help="questions for the seed's way (it is slow)")
    parser.add_argument("--new-tokens", type=int, default=500, help="tokens generated per question (the seed's 500)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the profile's evaluation.batch_size")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--cache", default=None, help="where the random model is saved (default: a temp folder)")
    args = parser.parse_args()

    import torch
    import pandas as pd

    from workings.evaluation.generate import generate, SamplingConfig, vllm_available, VLLMEngine
    from workings.models.loading import device_of, load_for_inference
    from workings.config.loading import load_profile
    from workings.data.synthetic import generate_synthetic

    profile = load_profile(args.profile)
    device = device_of(profile)
    root = Path(args.cache or tempfile.mkdtemp(prefix="eval-speed-"))
    base_dir = random_model_dir(profile, root) if profile.model.id != "tiny" else None
    if base_dir is not None:  # load the random model where the profile's id would be loaded from
        profile.model.id = str(base_dir)
    tokenizer = load_tokenizer_or_tiny(profile)
    from workings.models.loading import model_source

    adapter = random_adapter(profile, Path(model_source(profile.model)), root)
    questions = [e.question for e in generate_synthetic(args.questions, seed=11)]
    batch = args.batch_size or profile.evaluation.batch_size
    sampling = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, temperature=args.temperature,
                    top_p=profile.evaluation.top_p, seed=0)
    print(f"profile {profile.name}: {profile.model.id}, {'4-bit' if profile.quantization else profile.model.dtype} base "
          f"+ LoRA r={profile.lora.r}, {device}, {args.new_tokens} new tokens per question", flush=True)

    rows = []
    model = load_for_inference(profile, adapter)
    seed_set = questions[: args.seed_questions]
    rows.append(timed("seed way (1 at a time, sampled)",
                      lambda: generate(model, tokenizer, seed_set, SamplingConfig(batch_size=1, **sampling)),
                      len(seed_set), args.new_tokens, device))
    print(rows[-1], flush=True)
    rows.append(timed(f"batched (hf, batch {batch})",
                      lambda: generate(model, tokenizer, questions, SamplingConfig(batch_size=batch, **sampling)),
                      len(questions), args.new_tokens, device))
    print(rows[-1], flush=True)
    del model
    gc.collect()
    if profile.quantization is None:
        merged = load_for_inference(profile, adapter, merged=True)
        rows.append(timed(f"batched (hf, merged, batch {batch})",
                          lambda: generate(merged, tokenizer, questions, SamplingConfig(batch_size=batch, **sampling)),
                          len(questions), args.new_tokens, device))
        del merged
        gc.collect()
    if vllm_available() and device.startswith("cuda"):
        torch.cuda.empty_cache()
        engine = VLLMEngine(profile.model.id, tokenizer, adapter=adapter, dtype=profile.model.dtype,
                            quantized=profile.quantization is not None, max_lora_rank=max(8, profile.lora.r))
        rows.append(timed("vllm (LoRA request)",
                          lambda: generate(engine, tokenizer, questions, SamplingConfig(batch_size=len(questions), **sampling)),
                          len(questions), args.new_tokens, device))
    else:
        print("vllm: not run (not installed, or no GPU)")

    table = pd.DataFrame(rows).set_index("variant")
    seed_rate = table["s / question"].iloc[0]
    table["speed-up vs seed"] = (seed_rate / table["s / question"]).round(1)
    print()
    print(table.to_string())
    print(f"\nbatched HF is {table['speed-up vs seed'].iloc[1]:g}x the seed's way per question")


if __name__ == "__main__":
    main()
