"""Command line: ``workings build-mix``, ``workings train``, ``workings evaluate``, ``workings ask "…"``."""

from __future__ import annotations

import argparse
import json
import sys
import os
import time
from pathlib import Path

from workings.profiles import load_profile, run_dir

DEFAULT_PROFILE = os.environ.get("WORKINGS_PROFILE", "demo")


def build_mix_command(args: argparse.Namespace) -> int:
    from workings.mix import build_mix, mix_provenance, save_mix
    from workings.models import load_tokenizer

    profile = load_profile(args.profile)
    out = args.out or run_dir(profile) / "mix"
    start = time.perf_counter()
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=not args.quiet)
    save_mix(mix, out, mix_provenance(profile))
    totals = mix.report["totals"]
    print(f"{out}: {totals['train_rows']} training rows, {totals['heldout']} held out, "
          f"{sum(totals['dropped'].values())} dropped of {totals['rows_in']} in {time.perf_counter() - start:.1f}s")
    if args.verbose:
        print(json.dumps(mix.report["totals"], indent=2))
    return 0


def train_command(args: argparse.Namespace) -> int:
    from workings.mix import ensure_mix
    from workings.training import train

    profile = load_profile(args.profile)
    mix_dir = args.mix or ensure_mix(profile, progress=not args.quiet)
    out = args.out or run_dir(profile) / "sft"
    result = train(profile, mix_dir, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    s = result.summary
    print(f"{result.adapter_dir}: {s['steps']} steps in {s['seconds']}s, train loss {s['train_loss']:.3f}, "
          f"held-out loss {s['final_eval_loss']}, {s['tokens_per_second']} tokens/s")
    return 0


def ask_command(args: argparse.Namespace) -> int:
    from workings.generate import SamplingConfig, ask
    from workings.models import load_for_inference, load_tokenizer

    profile = load_profile(args.profile)
    tokenizer = load_tokenizer(profile.model)
    model = load_for_inference(profile, args.adapter)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens or profile.evaluation.max_new_tokens,
                              temperature=args.temperature, top_p=profile.evaluation.top_p, seed=args.seed, batch_size=1)
    print(ask(args.question, model, tokenizer, sampling).as_text())
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from workings.evaluate import default_adapter, profile_benchmarks, run_benchmarks
    from workings.mix import load_mix
    from workings.predictions import write_predictions
    from workings.report import results_table

    profile = load_profile(args.profile)
    mix_dir = run_dir(profile) / "mix"
    heldout = load_mix(mix_dir)[1] if (mix_dir / "report.json").is_file() else None
    benchmarks = profile_benchmarks(profile, heldout)
    adapter = args.adapter or default_adapter(profile)
    models = {"tuned": adapter} if args.tuned_only else {"base": None, "tuned": adapter}
    if adapter is None:
        models = {"base": None}
    out = Path(args.out or run_dir(profile) / "eval")
    results = {name: run_benchmarks(profile, benchmarks, path, out_dir=out, progress=not args.quiet)
               for name, path in models.items()}
    for name, by_bench in results.items():
        for bench, scored in by_bench.items():
            write_predictions(out / "predictions" / name / f"{bench.replace(':', '_')}.jsonl", scored)
    print(results_table(results).to_string())
    print(f"predictions: {out / 'predictions'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workings", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    mix = commands.add_parser("build-mix", help="build the training mix of a profile")
    mix.add_argument("--profile", default="demo", help="profile name or YAML path")
    mix.add_argument("--out", default=None, help="output folder (default: runs/<profile>/mix)")
    mix.add_argument("--quiet", action="store_true", help="no progress bars")
    mix.add_argument("--verbose", action="store_true", help="print the drop counts")
    mix.set_defaults(func=build_mix_command)
    run = commands.add_parser("train", help="fine-tune the profile's model on its mix (SFT with LoRA/QLoRA)")
    run.add_argument("--profile", default="demo", help="profile name or YAML path")
    run.add_argument("--mix", default=None, help="mix folder (default: runs/<profile>/mix, built if missing)")
    run.add_argument("--out", default=None, help="run folder (default: runs/<profile>/sft)")
    again = run.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    again.add_argument("--overwrite", action="store_true", help="delete the run folder's checkpoints and start again")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=train_command)
    question = commands.add_parser("ask", help="ask one question; prints the reasoning and the answer separately")
    question.add_argument("question", help="the question, in quotes")
    question.add_argument("--adapter", default=None, help="LoRA adapter folder (default: the base model alone)")
    question.add_argument("--profile", default=DEFAULT_PROFILE, help="profile naming the base model (default: $WORKINGS_PROFILE or demo)")
    question.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's evaluation.max_new_tokens")
    question.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    question.add_argument("--seed", type=int, default=0, help="sampling seed")
    question.set_defaults(func=ask_command)
    bench = commands.add_parser("evaluate", help="ask the base and the tuned model every benchmark of the profile")
    bench.add_argument("--profile", default=DEFAULT_PROFILE, help="profile name or YAML path")
    bench.add_argument("--adapter", default=None, help="adapter folder (default: evaluation.adapter, else runs/<profile>/sft/adapter, else base only)")
    bench.add_argument("--tuned-only", action="store_true", help="skip the base model")
    bench.add_argument("--out", default=None, help="output folder (default: runs/<profile>/eval)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=evaluate_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
