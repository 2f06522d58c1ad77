"""Command line: ``workings build-mix --profile demo``, ``workings train --profile demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from workings.profiles import load_profile, run_dir


def build_mix_command(args: argparse.Namespace) -> int:
    from workings.mix import build_mix, save_mix
    from workings.models import load_tokenizer

    profile = load_profile(args.profile)
    out = args.out or run_dir(profile) / "mix"
    start = time.perf_counter()
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=not args.quiet)
    save_mix(mix, out, {"profile": profile.name, "model": profile.model.id})
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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
