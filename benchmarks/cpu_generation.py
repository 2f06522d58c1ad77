"""Generation on the CPU: plain ``generate`` against workings' engine, on the same prompts, in one process.

    python benchmarks/cpu_generation.py                      # gemma-3-270m, 64 prompts x 48 new tokens
    python benchmarks/cpu_generation.py --prompts 32 --threads 1
    python benchmarks/cpu_generation.py --adapter runs/gemma-3-270m/sft/adapter   # the trained model's replies

Plain is how a script would call ``model.generate`` (sampled: temperature and top-p by
transformers' warpers, which sort the whole vocabulary every step, then ``torch.multinomial`` over it); the engine is
:class:`workings.evaluation.generate.HFEngine` with the same settings. Prints tokens/s of each, the
ratio, and how many replies are identical (greedy replies must all be: the engine changes nothing
there but how they are produced).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="gemma-3-270m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=None, help="default: the profile's training.threads")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter on the base (its replies are more peaked)")
    parser.add_argument("--attn", default=None, help="attention implementation instead of the profile's (sdpa, eager)")
    args = parser.parse_args()

    import torch

    from workings.config.loading import load_profile
    from workings.data.mix import source_rows
    from workings.evaluation.generate import HFEngine, SamplingConfig
    from workings.core.chat import render_prompt, stop_token_ids
    from workings.models.loading import load_for_inference, load_tokenizer

    profile = load_profile(args.profile)
    tokenizer = load_tokenizer(profile.model)
    if args.attn:
        profile.model.attn_implementation = args.attn
    model = load_for_inference(profile, args.adapter)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = profile.data.eval_sets[0]
    questions = [row["question"] for row in source_rows(spec)[: args.prompts]]
    encoded = [tokenizer(render_prompt(q, tokenizer), add_special_tokens=False)["input_ids"] for q in questions]
    width = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    stops = stop_token_ids(tokenizer)
    engine = HFEngine(model, tokenizer)
    print(f"{profile.name}: {profile.model.id}{' + ' + args.adapter if args.adapter else ''} in {profile.model.dtype}, {profile.model.attn_implementation} attention, {torch.get_num_threads()} threads, "
          f"{len(questions)} prompts of {spec.name}, {args.new_tokens} new tokens")

    def plain(sampled: bool) -> list[list[int]]:
        torch.manual_seed(0)
        extra = {"do_sample": True, "temperature": 1.0, "top_p": 0.95} if sampled else {"do_sample": False}
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, eos_token_id=stops, pad_token_id=pad, top_k=None, **extra)
        return [row[width:].tolist() for row in out]

    def ours(sampled: bool) -> list[list[int]]:
        sampling = SamplingConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, batch_size=len(encoded),
                                  temperature=1.0 if sampled else 0.0, top_p=0.95)
        return [kept for kept, _ in engine.generate_batch(encoded, sampling, seed=0)]

    for sampled in (False, True):
        timed = {}
        for name, run in (("plain generate", plain), ("workings engine", ours)):
            run(sampled)  # warm-up: allocations, kernels
            start = time.perf_counter()
            replies = run(sampled)
            timed[name] = (len(questions) * args.new_tokens / (time.perf_counter() - start), replies)
        (a, plain_replies), (b, our_replies) = timed.values()
        same = sum(x[: len(y)] == y for x, y in zip(plain_replies, our_replies))
        print(f"{'sampled (T 1.0, top-p 0.95)' if sampled else 'greedy':<28} plain {a:7.1f} tok/s   engine {b:7.1f} tok/s   "
              f"x{b / a:.2f}   identical replies {same}/{len(questions)}")


if __name__ == "__main__":
    main()
