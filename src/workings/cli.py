"""The ``workings`` command: build a profile's mix, train it, evaluate it, ask it a question.

Every command runs the profile named by ``--profile``, else ``$WORKINGS_PROFILE``, else ``demo``.
Inputs and the machine are checked before anything is loaded. An error is one or two lines in the
command line's own terms (exit 1; 2 for a wrong flag or argument); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from workings import __version__
from workings.config.environment import PROFILE_VARIABLE, profile_from_environment, profile_name
from workings.config.loading import load_profile, profile_command
from workings.config.stages import STAGES, previous, run_layout, stage_of_command
from workings.core.chat import LAYOUTS


class UsageError(Exception):
    """A flag or argument that cannot be used (exit 2, like argparse's own usage errors)."""


def _profile(args: argparse.Namespace):
    """The profile the command runs: ``--profile``, else ``$WORKINGS_PROFILE`` (named in errors), else demo."""
    return load_profile(args.profile, named_by=args.profile_from)


def again(args: argparse.Namespace, profile, *flags: str) -> str:
    """The command line that runs ``args``' command on ``profile`` again with the folders it was
    given, plus ``flags`` (:func:`workings.config.loading.profile_command`, quoted alike)."""
    import shlex

    words = [word for flag in ("mix", "out", "adapter") if getattr(args, flag, None)
             for word in (f"--{flag}", getattr(args, flag))]
    return f"{profile_command(profile, args.command)} {shlex.join([*words, *flags])}"


def _quiet_libraries() -> None:
    """No progress bars from transformers (weight loading) and datasets (map, save)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


# --- commands -------------------------------------------------------------------------------

def usable_cores() -> int:
    """The cores this process may run on (a container's or a job's share, not the machine's count)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_mix_command(args: argparse.Namespace) -> int:
    from workings.data.mix import build_mix, is_saved_mix, mix_provenance, save_mix
    from workings.files import check_replaceable
    from workings.models.loading import load_tokenizer

    profile = _profile(args)
    out = Path(args.out) if args.out else run_layout(profile).mix
    check_replaceable(out, "--out" if args.out else "", recognise=is_saved_mix)  # before the tokenizer is fetched
    start = time.perf_counter()
    mix = build_mix(profile.data, load_tokenizer(profile.model), progress=not args.quiet, num_proc=args.num_proc)
    save_mix(mix, out, mix_provenance(profile.name, profile.data, profile.model.id))
    totals = mix.report["totals"]
    print(f"{out}: {totals['train_rows']} training rows, {totals['heldout']} held out, "
          f"{sum(totals['dropped'].values())} dropped of {totals['rows_in']} in {time.perf_counter() - start:.1f}s")
    if args.verbose:
        print(json.dumps(mix.report["totals"], indent=2))
    return 0


def stage_command(args: argparse.Namespace) -> int:
    """A training command (``train``, ``grpo``, ...): the stage of the profile's chain it names, into its run folder."""
    from workings.files import check_replaceable
    from workings.models.loading import check_adapter
    from workings.train.runs import check_environment, ensure_profile_mix, is_run_folder, start_adapter

    profile = _profile(args)
    stage = stage_of_command(profile, args.command)
    check_environment(profile, stage.name)  # before the tokenizer is downloaded to build the mix
    start = None
    if not stage.fresh:
        start = Path(args.adapter) if args.adapter else start_adapter(profile, stage.name)
        if start is None or (not start.is_dir() and not args.adapter):
            before = previous(profile, stage.name)
            raise UsageError(f"no {before.name.upper()} adapter at {start}: train first "
                             f"({profile_command(profile, before.command)}), or pass --adapter")
        check_adapter(start)  # before the mix is built or anything is loaded
    out = Path(args.out) if args.out else run_layout(profile).stage(stage.name)
    check_replaceable(out, "--out", recognise=is_run_folder)  # before the mix is built
    mix_dir = Path(args.mix) if args.mix else ensure_profile_mix(profile, progress=not args.quiet, num_proc=args.num_proc)
    result = stage.train(profile, mix_dir, out, start, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet)
    s = result.summary
    if result.already_finished:
        print(f"{out}: already finished ({s['steps']} of {s['max_steps']} steps); left unchanged "
              "(--overwrite trains it again)")
        return 0
    print(stage.implementation().result_line(result))
    return 0


def chosen_adapter(args: argparse.Namespace, profile) -> Path | None:
    """The adapter a command answers with: ``--adapter``, else ``--stage``'s (``base``: none), else
    ``evaluation.adapter``, else the last finished stage's; None where no stage has finished."""
    from workings.evaluation.runs import default_adapter

    if args.adapter is not None and args.stage is not None:
        raise UsageError(f"--adapter and --stage {args.stage} both name the model: give one")
    if args.adapter is not None:
        return Path(args.adapter)
    if args.stage == "base":
        return None
    return default_adapter(profile, args.stage)


def ask_command(args: argparse.Namespace) -> int:
    from workings.evaluation.generate import PromptTooLong, SamplingConfig, ask, check_prompt_fits
    from workings.models.loading import check_adapter, check_machine, context_length, load_for_inference, load_tokenizer

    if not args.question.strip():
        raise UsageError("the question is empty")
    if args.max_new_tokens is not None and args.max_new_tokens <= 0:
        raise UsageError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise UsageError(f"--temperature must be 0 (greedy) or positive, got {args.temperature}")
    profile = _profile(args)
    adapter = chosen_adapter(args, profile)
    if adapter is not None:
        check_adapter(adapter)
    check_machine(profile)
    tokenizer = load_tokenizer(profile.model)
    max_new_tokens = args.max_new_tokens or profile.evaluation.max_new_tokens
    try:
        check_prompt_fits(args.question, tokenizer, context_length(profile.model), max_new_tokens,
                          "--max-new-tokens" if args.max_new_tokens else "evaluation.max_new_tokens")
    except PromptTooLong as err:
        raise UsageError(str(err)) from None
    model = load_for_inference(profile, adapter)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=args.temperature,
                              top_p=profile.evaluation.top_p, seed=args.seed, batch_size=1)
    print(ask(args.question, model, tokenizer, sampling).as_text())
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    from workings.data.mix import load_mix
    from workings.evaluation.benchmarks import profile_benchmarks
    from workings.evaluation.predictions import write_predictions
    from workings.evaluation.runs import model_label, run_benchmarks
    from workings.evaluation.scoring import summarise_results
    from workings.files import check_writable, file_digest
    from workings.models.loading import check_adapter, check_machine
    from workings.report.tables import markdown_table, results_numbers, results_table

    profile = _profile(args)
    adapter = chosen_adapter(args, profile)
    if adapter is not None:  # before the base model spends its time on every benchmark
        check_adapter(adapter)
    elif args.tuned_only:
        raise UsageError(f"--tuned-only needs an adapter: pass --adapter, set evaluation.adapter, or train first "
                         f"({profile_command(profile, 'train')})")
    check_machine(profile)
    out = Path(args.out) if args.out else run_layout(profile).evaluation
    check_writable(out, f"--out {out}" if args.out else None)
    mix_dir = run_layout(profile).mix
    heldout = load_mix(mix_dir)[1] if (mix_dir / "report.json").is_file() else None
    benchmarks = profile_benchmarks(profile, heldout)
    models: dict[str, Path | None] = {} if args.tuned_only else {"base": None}
    if adapter is not None:
        models["tuned"] = adapter
    labels = {name: model_label(path) for name, path in models.items()}
    results = {labels[name]: run_benchmarks(profile, benchmarks, path, out_dir=out, progress=not args.quiet,
                                            layout=args.layout)
               for name, path in models.items()}
    # one set of files per model and layout evaluated, named after them, so evaluating another keeps these
    suffix = "" if args.layout == "project" else f"-{args.layout}"
    predictions = {label: out / "predictions" / f"{label}{suffix}" for label in results}
    for label, by_bench in results.items():
        for bench, scored in by_bench.items():
            write_predictions(predictions[label] / f"{bench.replace(':', '_')}.jsonl", scored)
    summaries = summarise_results(results)
    stem = out / f"results-{labels.get('tuned', 'base')}{suffix}"
    results_numbers(summaries).to_csv(stem.with_suffix(".csv"), index=False)
    answered_by = [f"- `base`: {profile.model.id}" + (f" at revision {profile.model.revision}" if profile.model.revision else "")]
    if adapter is not None:
        answered_by.append(f"- `{labels['tuned']}`: the adapter {adapter} (weights sha256 "
                           f"{file_digest(adapter / 'adapter_model.safetensors')}) on that base")
    table = results_table(summaries)
    stem.with_suffix(".md").write_text(f"# Results of profile `{profile.name}`\n\n" + "\n".join(answered_by) +
                                       f"\n\nGreedy replies to prompts in the `{args.layout}` layout; rates in "
                                       "percent with Wilson 95% intervals.\n\n" +
                                       markdown_table(table) + "\n")
    print(table.to_string())
    for name, path in models.items():
        print(f"{labels[name]}: {path or profile.model.id} -> predictions in {predictions[labels[name]]}")
    print(f"table: {stem.with_suffix('.csv')}, {stem.with_suffix('.md')}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    from workings.export.run import export

    profile = _profile(args)
    adapter = chosen_adapter(args, profile)
    if adapter is None:
        raise UsageError(f"no adapter: pass --adapter or train first ({profile_command(profile, 'train')})")
    result = export(profile, adapter, args.to, merge=args.merge, send_it=args.send, dtype=args.dtype)
    if result.cost is not None:
        print(f"cost of --dtype {args.dtype}: {result.cost}")
    print(f"{'merged model' if args.merge else 'adapter'} of {adapter} exported to {result.folder}:")
    for name, size in result.files:
        print(f"  {size:>14,}  {name}")
    print(f"  {sum(size for _, size in result.files):>14,}  bytes in {len(result.files)} files")
    if result.destination.kind == "folder":
        return 0
    print(f"credentials: {result.credentials}")
    print(f"sent to {result.sent_to}" if result.sent_to else f"nothing was sent to {result.destination} (dry run; add --send)")
    return 0


def check_tunix_command(args: argparse.Namespace) -> int:
    """Load a merged export in Tunix's Gemma code and with transformers; compare logits and greedy tokens."""
    from transformers import AutoTokenizer

    from workings.core.chat import render_prompt, stop_token_ids
    from workings.evaluation.benchmarks import profile_benchmarks
    from workings.export.tunix import tunix_parity

    folder = Path(args.folder)
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise UsageError(f"{folder}: not a merged export (no config.json and safetensors); export with --merge first")
    profile = _profile(args)
    graded = [b for b in profile_benchmarks(profile) if b.graded] or profile_benchmarks(profile)
    bench = max(graded, key=lambda b: len(b.rows))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompts = [tokenizer(render_prompt(row["question"], tokenizer), add_special_tokens=False)["input_ids"]
               for row in bench.rows[: args.questions]]
    parity = tunix_parity(folder, prompts, steps=args.steps, stops=stop_token_ids(tokenizer))
    print(f"{folder}: Tunix against transformers (float32) on {parity.prompts} question{'' if parity.prompts == 1 else 's'} of {bench.name}: largest logit "
          f"difference {parity.max_logit_difference:.2g}; greedy continuations identical on {parity.same_greedy} of "
          f"{parity.prompts} ({parity.greedy_tokens} tokens)")
    return 0 if parity.same_greedy == parity.prompts else 1


def profiles_command(args: argparse.Namespace) -> int:
    from workings.config.loading import PROFILE_DIR, profile_names

    rows = []
    for name in profile_names():
        profile = load_profile(PROFILE_DIR / f"{name}.yaml")
        rows.append((name, profile.model.id, profile.training.device, profile.description))
    width = max(len(r[0]) for r in rows)
    for name, model, device, description in rows:
        print(f"{name.ljust(width)}  {device:<4}  {model}: {description}")
    print(f"\nin {PROFILE_DIR}; any YAML file path works too (extends: NAME starts from one of these)")
    return 0


def check_book_command(args: argparse.Namespace) -> int:
    from workings.report.pages import book_pages, check_pages

    problems = check_pages(args.html, args.screenshots)
    for problem in problems:
        print(problem)
    print(f"{len(book_pages(Path(args.html)))} pages checked, {len(problems)} problems; screenshots in {args.screenshots}")
    return 1 if problems else 0


# --- what an interrupt keeps ----------------------------------------------------------------

def _kept_after_interrupt(args: argparse.Namespace) -> str:
    """One line: what an interrupted command left and how to continue."""
    if args.command in {s.command for s in STAGES.values()}:
        from workings.train.runs import checkpoints, staging_dir

        profile = _profile(args)
        out = Path(args.out) if args.out else run_layout(profile).stage(stage_of_command(profile, args.command).name)
        if args.overwrite and staging_dir(out).is_dir():
            return f"the earlier run in {out} is unchanged; the new run's checkpoints are in {staging_dir(out)}"
        saved = checkpoints(out)
        if not saved:
            return f"no checkpoint was saved yet in {out}; run the same command to start again"
        return f"checkpoints are kept in {out} (newest {saved[-1].name}); continue with: {again(args, profile, '--resume')}"
    if args.command == "evaluate":
        return "the replies generated so far are kept under the eval folder; run the same command to continue"
    if args.command == "build-mix":
        return "nothing was written; an earlier mix is unchanged"
    return "nothing was written"


def _message(err: BaseException) -> str:
    """An exception in the command line's own terms."""
    from workings.config.schema import ProfileError
    from workings.data.example import DataUnavailable
    from workings.export.destinations import ExportError
    from workings.files import Damaged
    from workings.models.loading import ModelUnavailable
    from workings.models.packaged import PackageMissing
    from workings.train.runs import NothingToResume, RunExists, RunLocked, TrainingDiverged

    if isinstance(err, RunExists):
        return f"{err.out_dir} already holds {err.what}: add --resume to continue it or --overwrite to train again"
    if isinstance(err, NothingToResume):
        return f"{err.out_dir}: no checkpoint to resume from; run without --resume to start"
    if isinstance(err, (ProfileError, DataUnavailable, TrainingDiverged, FileNotFoundError, FileExistsError, UsageError,
                        ExportError, PermissionError, RunLocked, ModelUnavailable, Damaged,
                        PackageMissing)):
        return str(err)
    return f"{type(err).__name__}: {err} (--debug shows where)"


# --- the parser -----------------------------------------------------------------------------

def _run_folder_flags(command: argparse.ArgumentParser, folder: str, resume_note: str = "") -> None:
    """The flags of a training command: its mix, its run folder, and what to do with a run already there."""
    command.add_argument("--mix", default=None, help="mix folder (default: runs/<profile>/mix, built if missing)")
    command.add_argument("--out", default=None, help=f"run folder (default: runs/<profile>/{folder})")
    command.add_argument("--num-proc", type=positive_int, default=usable_cores(),
                         help="processes for building the mix when it is missing (default: %(default)s)")
    again = command.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"continue from the newest checkpoint in the run folder{resume_note} (a finished run is left as it is)")
    again.add_argument("--overwrite", action="store_true",
                       help="train again; the earlier run is replaced only once the new one has finished")


def _stages_by_command() -> dict[str, list]:
    by_command: dict[str, list] = {}
    for s in STAGES.values():
        by_command.setdefault(s.command, []).append(s)
    return by_command


MODEL_DEFAULT = "evaluation.adapter, else the adapter of the last finished stage of training.stages"


def _stage_flag(command: argparse.ArgumentParser, verb: str, base: bool = False) -> None:
    choices = [*STAGES, *(["base"] if base else [])]
    command.add_argument("--stage", default=None, choices=choices,
                         help=f"{verb} the adapter of this stage's run (runs/<profile>/<stage>/adapter)"
                              + ("; base: the base model alone" if base else ""))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--profile", default=None,
                        help=f"profile name or YAML path (default: ${PROFILE_VARIABLE}, else demo)")
    common.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")

    parser = argparse.ArgumentParser(prog="workings", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"workings {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    mix = commands.add_parser("build-mix", parents=[common], help="build the training mix of a profile")
    mix.add_argument("--out", default=None, help="output folder (default: runs/<profile>/mix)")
    mix.add_argument("--verbose", action="store_true", help="print the drop counts")
    mix.add_argument("--num-proc", type=positive_int, default=usable_cores(),
                     help="processes that render, tokenize and sign rows; the mix is the same for any number "
                          "(default: this machine's usable cores, %(default)s)")
    mix.set_defaults(func=build_mix_command)

    for command, stages in _stages_by_command().items():  # one command per training stage of the registry
        names = "/".join(s.name for s in stages)
        run = commands.add_parser(command, parents=[common], help=stages[0].help)
        if not stages[0].fresh:
            run.add_argument("--adapter", default=None,
                             help="adapter to start from (default: that of the stage before it in training.stages)")
        _run_folder_flags(run, f"<{names}>" if len(stages) > 1 else names)
        run.set_defaults(func=stage_command)

    bench = commands.add_parser("evaluate", parents=[common],
                                help="ask the base and the tuned model every benchmark of the profile")
    bench.add_argument("--adapter", default=None, help=f"adapter folder (default: {MODEL_DEFAULT}, else base only)")
    _stage_flag(bench, "evaluate")
    bench.add_argument("--tuned-only", action="store_true", help="skip the base model")
    bench.add_argument("--layout", default="project", choices=list(LAYOUTS),
                       help="how the question is put (default: project, the prompt SFT trains on); few_shot shows "
                            "three worked exchanges first, a base model's fairest baseline")
    bench.add_argument("--out", default=None, help="output folder (default: runs/<profile>/eval)")
    bench.set_defaults(func=evaluate_command)

    question = commands.add_parser("ask", parents=[common],
                                   help="ask one question; prints the reasoning and the answer separately")
    question.add_argument("question", help="the question, in quotes")
    question.add_argument("--adapter", default=None, help=f"LoRA adapter folder (default: {MODEL_DEFAULT}, else the base model)")
    _stage_flag(question, "ask", base=True)
    question.add_argument("--max-new-tokens", type=int, default=None, help="default: the profile's evaluation.max_new_tokens")
    question.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    question.add_argument("--seed", type=int, default=0, help="sampling seed")
    question.set_defaults(func=ask_command)

    hand_in = commands.add_parser("export", parents=[common],
                                  help="export a run's adapter or merged model with its card; send it to the Hub or Kaggle")
    hand_in.add_argument("--adapter", default=None, help=f"adapter folder (default: {MODEL_DEFAULT})")
    _stage_flag(hand_in, "export")
    hand_in.add_argument("--to", required=True,
                         help="a folder, hub:<user>/<repo>, or kaggle:<owner>/<model>/<framework>/<variation>")
    hand_in.add_argument("--merge", action="store_true",
                         help="merge the adapter into the base instead, in the base's model.dtype unless --dtype says")
    hand_in.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16"),
                         help="the merged weights' dtype, when another than the base's; prints what it changes")
    sending = hand_in.add_mutually_exclusive_group()
    sending.add_argument("--dry-run", action="store_true", help="list what would be sent (the default)")
    sending.add_argument("--send", action="store_true", help="upload to the Hub or Kaggle")
    hand_in.set_defaults(func=export_command)

    pages = commands.add_parser("check-book", help="open the built book's pages in headless Chromium and check them")
    pages.add_argument("html", nargs="?", default="_build/html", help="the built book (default: _build/html)")
    pages.add_argument("--screenshots", default="_build/screenshots", help="where page screenshots go")
    pages.set_defaults(func=check_book_command, profile=None, quiet=False, debug=False)

    tunix = commands.add_parser("check-tunix", parents=[common],
                                help="run a merged export in Tunix's Gemma code (JAX) and compare it with transformers")
    tunix.add_argument("folder", help="a merged export (workings export --merge --to FOLDER)")
    tunix.add_argument("--questions", type=positive_int, default=4, help="questions of the profile's largest benchmark (default 4)")
    tunix.add_argument("--steps", type=positive_int, default=16, help="greedy tokens compared per question (default 16)")
    tunix.set_defaults(func=check_tunix_command)

    listing = commands.add_parser("profiles", help="list the profiles shipped with workings")
    listing.set_defaults(func=profiles_command, profile=None, quiet=False, debug=False)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (it may be replaced meanwhile)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _configure_logging(quiet: bool) -> None:
    """workings' own progress lines to standard error, unless ``--quiet``; other libraries keep theirs."""
    log = logging.getLogger("workings")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    args.profile_from = PROFILE_VARIABLE if args.profile is None and profile_from_environment() else None
    args.profile = args.profile or profile_name()
    try:
        if args.quiet:
            _quiet_libraries()
        return args.func(args)
    except KeyboardInterrupt:
        try:
            kept = _kept_after_interrupt(args)
        except Exception:  # the profile itself may be what was being fixed
            kept = "see the output folder for what was written"
        # a progress bar may have been cut off mid-line: the message starts a line of its own
        print(f"{'' if args.quiet else chr(10)}workings {args.command}: interrupted; {kept}", file=sys.stderr)
        return 130
    except Exception as err:  # every failure becomes one line, unless --debug asks for the traceback
        if args.debug:
            raise
        print(f"workings {args.command}: error: {_message(err)}", file=sys.stderr)
        return 2 if isinstance(err, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())
