"""Command line: ``workings build-mix``, ``workings train``, ``workings evaluate``, ``workings ask "…"``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from workings.config.environment import PROFILE_VARIABLE, profile_name
from workings.config.loading import load_profile, run_dir


def build_mix_command(args: argparse.Namespace) -> int:
    from workings.data.mix import build_mix, mix_provenance, save_mix
    from workings.models.loading import load_tokenizer

    profile = load_profile(args.profile)
    out = args.out or run_dir(profile) / "mix"
    start = time.perf_counter()
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=not args.quiet)
    save_mix(mix, out, mix_provenance(profile.name, profile.data, profile.model.id))
    totals = mix.report["totals"]
    print(f"{out}: {totals['train_rows']} training rows, {totals['heldout']} held out, "
          f"{sum(totals['dropped'].values())} dropped of {totals['rows_in']} in {time.perf_counter() - start:.1f}s")
    if args.verbose:
        print(json.dumps(mix.report["totals"], indent=2))
    return 0


def train_command(args: argparse.Namespace) -> int:
    from workings.train.runs import ensure_profile_mix
    from workings.train.sft import train

    profile = load_profile(args.profile)
    mix_dir = args.mix or ensure_profile_mix(profile, progress=not args.quiet)
    out = args.out or run_dir(profile) / "sft"
    result = train(profile, mix_dir, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    s = result.summary
    print(f"{result.adapter_dir}: {s['steps']} steps in {s['seconds']}s, train loss {s['train_loss']:.3f}, "
          f"held-out loss {s['final_eval_loss']}, {s['tokens_per_second']} tokens/s")
    return 0


def ask_command(args: argparse.Namespace) -> int:
    from workings.evaluation.generate import SamplingConfig, ask
    from workings.models.loading import load_for_inference, load_tokenizer

    profile = load_profile(args.profile)
    tokenizer = load_tokenizer(profile.model)
    model = load_for_inference(profile, args.adapter)
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens or profile.evaluation.max_new_tokens,
                              temperature=args.temperature, top_p=profile.evaluation.top_p, seed=args.seed, batch_size=1)
    print(ask(args.question, model, tokenizer, sampling).as_text())
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from workings.data.mix import load_mix
    from workings.evaluation.benchmarks import profile_benchmarks
    from workings.evaluation.predictions import write_predictions
    from workings.evaluation.runs import default_adapter, run_benchmarks
    from workings.evaluation.scoring import summarise_results
    from workings.report.tables import results_table

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
    print(results_table(summarise_results(results)).to_string())
    print(f"predictions: {out / 'predictions'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="workings", description=__doc__,
                                     epilog=f"Every command runs the profile named by --profile, else ${PROFILE_VARIABLE}, else demo.")
    commands = parser.add_subparsers(dest="command", required=True)
    mix = commands.add_parser("build-mix", help="build the training mix of a profile")
    mix.add_argument("--profile", default=None, help=f"profile name or YAML path (default: ${PROFILE_VARIABLE} or demo)")
    mix.add_argument("--out", default=None, help="output folder (default: runs/<profile>/mix)")
    mix.add_argument("--quiet", action="store_true", help="no progress bars")
    mix.add_argument("--verbose", action="store_true", help="print the drop counts")
    mix.set_defaults(func=build_mix_command)
    run = commands.add_parser("train", help="fine-tune the profile's model on its mix (SFT with LoRA/QLoRA)")
    run.add_argument("--profile", default=None, help=f"profile name or YAML path (default: ${PROFILE_VARIABLE} or demo)")
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
    question.add_argument("--profile", default=None, help=f"profile naming the base model (default: ${PROFILE_VARIABLE} or demo)")
    question.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's evaluation.max_new_tokens")
    question.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    question.add_argument("--seed", type=int, default=0, help="sampling seed")
    question.set_defaults(func=ask_command)
    bench = commands.add_parser("evaluate", help="ask the base and the tuned model every benchmark of the profile")
    bench.add_argument("--profile", default=None, help=f"profile name or YAML path (default: ${PROFILE_VARIABLE} or demo)")
    bench.add_argument("--adapter", default=None, help="adapter folder (default: evaluation.adapter, else runs/<profile>/sft/adapter, else base only)")
    bench.add_argument("--tuned-only", action="store_true", help="skip the base model")
    bench.add_argument("--out", default=None, help="output folder (default: runs/<profile>/eval)")
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=evaluate_command)
    args = parser.parse_args(argv)
    args.profile = args.profile or profile_name()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
