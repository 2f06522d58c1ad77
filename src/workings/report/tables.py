"""Tables the book shows (pandas frames and HTML), each built from results the other stages computed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from workings.config.schema import Profile


def _markdown_cell(text: str) -> str:
    """A cell's text shown as written: no HTML (``<reasoning>``), math (``$12``), code or column breaks."""
    # A zero-width space after each ">" lets a narrow cell wrap a reply between its tags, not inside a word.
    for char, escaped in (("\\", "\\\\"), ("|", "\\|"), ("$", "\\$"), ("`", "\\`"), ("<", "&lt;"), (">", "&gt;\u200b"),
                          ("\n", " ")):
        text = text.replace(char, escaped)
    return text


def _cell(value: Any) -> str:
    """A value as a reader reads it: a float with four significant digits (thousands with one decimal,
    whole ten-thousands without), never the 16 digits of its repr; everything else as it prints."""
    if isinstance(value, float) and not isinstance(value, bool):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:,.0f}" if abs(value) >= 10_000 else str(value)
        return f"{value:,.1f}" if abs(value) >= 1_000 else f"{value:.4g}"
    return "" if value is None or (not isinstance(value, (list, dict, tuple)) and pd.isna(value)) else str(value)


def markdown_table(table: pd.DataFrame) -> str:
    """A frame as a GitHub-flavoured Markdown table (index levels as the first columns; an unnamed
    index gets an empty header, not pandas' ``index``)."""
    unnamed = [f"level_{i}" if table.index.nlevels > 1 else "index" for i, name in enumerate(table.index.names) if name is None]
    flat = table.reset_index()
    header = ["" if c in unnamed else str(c) for c in flat.columns]
    cells = [header] + [[_cell(v) for v in row] for row in flat.itertuples(index=False)]
    escape = [[_markdown_cell(c) for c in row] for row in cells]
    lines = ["| " + " | ".join(escape[0]) + " |", "|" + "---|" * len(escape[0])]
    lines += ["| " + " | ".join(row) + " |" for row in escape[1:]]
    return "\n".join(lines)


def label(profile: Profile, data: bool = True) -> str:
    """One line naming what produced a result: profile, model and data sources. A chapter prints it
    whole at its top; its captions name profile and model only (``data=False``), the data being that line's."""
    if not data:
        return f"profile `{profile.name}` · model `{profile.model.id}`"
    sources = ", ".join(s.name for s in profile.data.sources)
    return f"profile `{profile.name}` · model `{profile.model.id}` · data: {sources}"


def mix_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Per-source counts of the mix: rows in, converted, dropped, held out, kept for training."""
    rows = []
    for name, s in report["sources"].items():
        rows.append({
            "source": name, "rows in": s["rows_in"], "converted": s["converted"],
            "dropped": sum(s["dropped"].values()), "held out": s["heldout"],
            "train (unique)": s["train_unique"], "train (weighted)": s["train_rows"],
            "tokens p50": s["tokens"].get("p50"), "tokens p99": s["tokens"].get("p99"),
        })
    table = pd.DataFrame(rows).set_index("source")
    table.loc["total"] = table.sum(numeric_only=True).where(~table.columns.str.startswith("tokens"))
    return table.astype("Int64")


def drop_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Rows dropped, by reason (rows) and source (columns)."""
    data = {name: s["dropped"] for name, s in report["sources"].items()}
    table = pd.DataFrame(data).fillna(0).astype(int)
    return table.loc[:, table.sum() > 0].sort_index()


def drop_list(report: Mapping[str, Any]) -> pd.DataFrame:
    """Rows dropped, one line per source and reason that dropped any (narrow enough for a page)."""
    rows = [(name, reason, n) for name, s in report["sources"].items() for reason, n in sorted(s["dropped"].items()) if n]
    return pd.DataFrame(rows, columns=["source", "reason", "rows"]).set_index(["source", "reason"])


def contamination_table(report: Mapping[str, Any], limit: int = 10) -> pd.DataFrame:
    """The contaminated training rows found, highest overlap first."""
    rows = sorted(report["contamination"]["rows"], key=lambda r: -r["overlap"])[:limit]
    return pd.DataFrame(rows, columns=["source", "eval_set", "overlap", "question"])


def origin_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Where each source's rows came from (Hub id and pinned revision, local file, or generator);
    a local file is shown by its name, not by the path of the machine that built the mix."""
    def short(origin: str) -> str:
        if origin.startswith("local file "):
            return f"local file {origin.removeprefix('local file ').replace(chr(92), '/').rsplit('/', 1)[-1]}"
        return origin

    return pd.DataFrame({"origin": {name: short(s["origin"]) for name, s in report["sources"].items()}})


# --- QLoRA configuration ---------------------------------------------------------------

def qlora_table(predictions: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per profile: base quantization, LoRA shape, the base's and LoRA's parameters in millions and
    the adapter's size (rows of :func:`workings.models.cost.qlora_prediction`)."""
    rows = []
    for p in predictions:
        rows.append({
            "profile": p["profile"], "model": p["model"], "base": p["base"],
            "r / alpha": f"{p['r']} / {p['alpha']:g}", "modules": p["modules"],
            "params (M)": f"{p['base_parameters'] / 1e6:,.1f}", "LoRA (M)": f"{p['lora_parameters'] / 1e6:,.2f}",
            "trainable %": round(100 * p["lora_parameters"] / p["base_parameters"], 2),
            "adapter (MB)": round(p["adapter_bytes"] / 1e6, 2), "saved as": p["save_dtype"],
        })
    return pd.DataFrame(rows).set_index("profile")


def distinct_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``table`` with each repeated row kept once (the first), and for each kept row's index the
    indices of the rows equal to it that were left out."""
    kept: dict[tuple, str] = {}
    same: dict[str, list[str]] = {}
    for name, row in table.iterrows():
        key = tuple(row.astype(str))
        if key in kept:
            same[kept[key]].append(name)
        else:
            kept[key] = name
            same[name] = []
    return table.loc[list(kept.values())], {k: v for k, v in same.items() if v}


def memory_table(estimates: Sequence[Any], limits: Mapping[str, float | None] | None = None) -> pd.DataFrame:
    """:class:`workings.models.cost.MemoryEstimate` rows in GiB; with ``limits`` (GiB per profile,
    the memory of the GPU each is made for) a column of the limit and of what is left under it."""
    table = pd.DataFrame({e.profile: e.as_gib() for e in estimates}).T
    if limits is not None:
        table["gpu"] = [limits.get(name) for name in table.index]
        table["headroom"] = table["gpu"] - table["total"]
    return table.round(2)


# --- the training run ------------------------------------------------------------------

RATES = ("strict_format", "lenient_format", "accuracy", "accuracy_when_strict", "last_number_accuracy", "truncated")
# How a rate is named in a table a reader reads (results.csv keeps the names a program reads).
RATE_LABELS = {"strict_format": "strict format", "lenient_format": "lenient format", "accuracy": "accuracy",
               "accuracy_when_strict": "accuracy when strict", "last_number_accuracy": "accuracy by last number",
               "truncated": "cut at the limit"}


def rate_with_ci(summary: Mapping[str, float], rate: str) -> str:
    """``"95.0 (91.9–96.9)"``: a rate in percent with its 95% interval; ``"–"`` when there is none."""
    value = summary.get(rate, math.nan)
    if value is None or math.isnan(value):
        return "–"
    return f"{100 * value:.1f} ({100 * summary[rate + '_lo']:.1f}–{100 * summary[rate + '_hi']:.1f})"


def metrics_table(results: Mapping[str, Mapping[str, float]], rates: Sequence[str] = RATES,
                  lengths: bool = True) -> pd.DataFrame:
    """Summaries from :func:`workings.evaluation.scoring.summarise`, one row per key: rates in percent with
    Wilson 95% intervals, counts, and reply and reasoning lengths in tokens."""
    rows = {}
    for name, summary in results.items():
        row: dict[str, Any] = {"n": int(summary["n"]), "graded": int(summary.get("graded", summary["n"]))}
        row.update({f"{RATE_LABELS.get(rate, rate)} % (95% CI)": rate_with_ci(summary, rate) for rate in rates})
        if lengths:
            row["mean new tokens"] = round(summary["mean_new_tokens"], 1)
            for key in ("p50", "p90"):
                value = summary.get(f"reasoning_tokens_{key}", math.nan)
                row[f"reasoning tokens {key}"] = "–" if math.isnan(value) else round(value, 1)
        rows[name] = row
    return pd.DataFrame(rows).T


def results_table(summaries: Mapping[tuple[str, str], Mapping[str, float]],
                  rates: Sequence[str] = ("strict_format", "accuracy", "accuracy_when_strict", "truncated"),
                  lengths: bool = True) -> pd.DataFrame:
    """Every benchmark under every model, one row each (``summaries`` keyed (benchmark, model), as
    :func:`workings.evaluation.scoring.summarise_results` gives them)."""
    table = metrics_table({f"{b} | {m}": v for (b, m), v in summaries.items()}, rates, lengths)
    table.index = pd.MultiIndex.from_tuples(list(summaries), names=["benchmark", "model"])
    return table.sort_index(level=0, sort_remaining=False)


def results_numbers(summaries: Mapping[tuple[str, str], Mapping[str, float]], rates: Sequence[str] = RATES) -> pd.DataFrame:
    """:func:`results_table` as numbers a program reads (``results.csv``): one row per benchmark and
    model, each rate in percent with its interval in two columns of its own (empty where a benchmark
    is not graded), counts and lengths in tokens.

    >>> summary = {"n": 4, "graded": 4, "accuracy": 0.5, "accuracy_lo": 0.15, "accuracy_hi": 0.85, "mean_new_tokens": 9.0}
    >>> results_numbers({("few", "base"): summary}, rates=("accuracy",)).iloc[0].to_dict()
    {'benchmark': 'few', 'model': 'base', 'n': 4, 'graded': 4, 'accuracy_pct': 50.0, 'accuracy_ci_low_pct': 15.0, \
'accuracy_ci_high_pct': 85.0, 'mean_new_tokens': 9.0, 'reasoning_tokens_p50': nan, 'reasoning_tokens_p90': nan}
    """
    def percent(value: Any) -> float:
        return math.nan if value is None or math.isnan(value) else round(100 * value, 2)

    rows = []
    for (bench, model), summary in summaries.items():
        row: dict[str, Any] = {"benchmark": bench, "model": model, "n": int(summary["n"]),
                               "graded": int(summary.get("graded", summary["n"]))}
        for rate in rates:
            row[f"{rate}_pct"] = percent(summary.get(rate, math.nan))
            row[f"{rate}_ci_low_pct"] = percent(summary.get(f"{rate}_lo", math.nan))
            row[f"{rate}_ci_high_pct"] = percent(summary.get(f"{rate}_hi", math.nan))
        row["mean_new_tokens"] = round(summary["mean_new_tokens"], 2)
        for key in ("p50", "p90"):
            row[f"reasoning_tokens_{key}"] = summary.get(f"reasoning_tokens_{key}", math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(comparisons: Sequence[Any]) -> pd.DataFrame:
    """Per benchmark, ``b`` against ``a`` on the same questions: paired counts, the difference in
    percentage points with its paired-bootstrap 95% interval, and McNemar's exact p-value
    (:func:`workings.evaluation.targets.paired_comparisons`)."""
    rows = {}
    for cmp in comparisons:
        c, a, b = cmp.paired, cmp.a, cmp.b
        rows[cmp.benchmark] = {
            "n": c.n, f"{a} only": c.only_a, f"{b} only": c.only_b, "both": c.both, "neither": c.neither,
            f"{b} - {a} (pp)": round(100 * c.difference, 1),
            "95% CI (pp)": f"{100 * c.difference_ci[0]:.1f} to {100 * c.difference_ci[1]:.1f}",
            "McNemar p": f"{c.p_value:.2g}", "significant (p<0.05)": c.significant,
        }
    return pd.DataFrame(rows).T


def pipelines_paired_table(comparisons: Sequence[Any]) -> pd.DataFrame:
    """Each pipeline against the same reference on each benchmark (and layout), question by question:
    both accuracies, the questions only one of them got right, the difference with its paired-bootstrap
    95% interval and McNemar's exact p-value; one row per (pipeline, benchmark)."""
    rows = {}
    for cmp in comparisons:
        c = cmp.paired
        rows[(cmp.b, cmp.benchmark)] = {
            "n": c.n, f"accuracy, {cmp.a} to this (%)": f"{100 * cmp.rate_a:.1f} to {100 * cmp.rate_b:.1f}",
            f"only {cmp.a} right": c.only_a, "only this right": c.only_b,
            "difference, pp (95% CI)": f"{100 * c.difference:+.1f} ({100 * c.difference_ci[0]:.1f} to {100 * c.difference_ci[1]:.1f})",
            "McNemar p": f"{c.p_value:.2g}",
        }
    table = pd.DataFrame(rows).T
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["pipeline", "benchmark"])
    return table


def layout_table(layouts: Mapping[str, Mapping[str, Sequence[Any]]],
                 rates: Sequence[str] = ("strict_format", "accuracy")) -> pd.DataFrame:
    """Each model's greedy replies to one benchmark in each prompt layout (``layouts``: layout ->
    model -> scored replies): rates in percent with Wilson 95% intervals, one row per (layout, model)."""
    from workings.evaluation.scoring import summarise

    summaries = {(layout, model): summarise(scored) for layout, by_model in layouts.items()
                 for model, scored in by_model.items()}
    table = results_table(summaries, rates=rates, lengths=False)
    table.index.names = ["layout", "model"]
    return table


def verdicts(comparisons: Sequence[Any]) -> list[str]:
    """One sentence per compared benchmark: both accuracies, the discordant questions and what McNemar's test says."""
    lines = []
    for cmp in comparisons:
        c, a, b = cmp.paired, cmp.a, cmp.b
        if c.significant:
            meaning = f"{b if c.difference > 0 else a} is more accurate, beyond chance at the 5% level"
        else:
            meaning = "no difference beyond chance at the 5% level"
        lines.append(f"{cmp.benchmark} ({c.n} question{'' if c.n == 1 else 's'}): {b} {100 * cmp.rate_b:.1f}% vs "
                     f"{a} {100 * cmp.rate_a:.1f}%; only {b} right on {c.only_b}, only {a} on {c.only_a}; "
                     f"McNemar p = {c.p_value:.2g}: {meaning}.")
    return lines


def breakdown_table(breakdowns: Mapping[str, Mapping[str, Mapping[str, float]]], by: str) -> pd.DataFrame:
    """Accuracy with its interval per value of ``by`` (MATH-500's subject or level), one column per model
    (``breakdowns[model]`` as :func:`workings.evaluation.scoring.breakdown` gives it)."""
    columns = {}
    for model, groups in breakdowns.items():
        columns[f"{model} accuracy % (95% CI)"] = {k: rate_with_ci(v, "accuracy") for k, v in groups.items()}
        columns["n"] = {k: int(v["n"]) for k, v in groups.items()}
    table = pd.DataFrame(columns)
    table.index.name = by
    return table[["n", *[c for c in table.columns if c != "n"]]]


GALLERY_KINDS = {
    "correct": lambda s: s.strict and s.correct is True,
    "wrong": lambda s: s.strict and s.correct is False,
    "format failure": lambda s: not s.strict,
}


REPLY_STYLE = "white-space:pre-wrap;overflow-wrap:normal;word-break:normal;font-size:80%"


def _reply_html(text: str) -> str:
    """A reply, escaped, whitespace kept, free to wrap after a tag's closing bracket (``<wbr>``,
    which a reader copying the reply does not copy) and between words, never inside one."""
    from html import escape

    return escape(text).replace("&gt;", "&gt;<wbr>")


def gallery(scored: Sequence[Any], kind: str, n: int = 3) -> Any:
    """An HTML table of the first ``n`` replies of one kind: correct, wrong (well formed) or format failure."""
    from html import escape

    from IPython.display import HTML

    if kind not in GALLERY_KINDS:
        raise ValueError(f"kind must be one of {', '.join(GALLERY_KINDS)}, got {kind!r}")
    picked = [s for s in scored if GALLERY_KINDS[kind](s)][:n]
    if not picked:
        return HTML(f"<p><i>No {escape(kind)} replies in this set.</i></p>")
    body = []
    for s in picked:
        verdict = "not graded" if s.correct is None else ("correct" if s.correct else "wrong")
        flags = ", ".join(f for f, on in (("strict", s.strict), ("lenient", s.lenient), ("truncated", s.truncated)) if on)
        body.append(
            f"<tr><td style='vertical-align:top;font-size:85%'>{escape(s.question)}<br><b>gold: {escape(str(s.gold))}</b></td>"
            f"<td style='vertical-align:top'><pre style='{REPLY_STYLE}'>{_reply_html(s.output)}</pre></td>"
            f"<td style='vertical-align:top;font-size:85%'>parsed: {escape(str(s.answer))}<br>{verdict}<br>{escape(flags)}"
            f"<br>{s.new_tokens} tokens</td></tr>")
    return HTML(f"<table><tr><th>question</th><th>reply</th><th>verdict</th></tr>{''.join(body)}</table>")


def side_by_side(questions: Sequence[str], golds: Sequence[str], columns: Mapping[str, Sequence[str]]) -> Any:
    """An HTML table: question and gold answer, then each model's raw output, whitespace kept."""
    from html import escape

    from IPython.display import HTML

    head = "".join(f"<th>{escape(name)}</th>" for name in columns)
    body = []
    for i, (question, gold) in enumerate(zip(questions, golds)):
        cells = "".join(
            f"<td style='vertical-align:top'><pre style='{REPLY_STYLE}'>{_reply_html(outputs[i])}</pre></td>"
            for outputs in columns.values())
        body.append(f"<tr><td style='vertical-align:top;font-size:85%'>{escape(question)}<br><b>gold: {escape(gold)}</b></td>{cells}</tr>")
    return HTML(f"<table><tr><th>question</th>{head}</tr>{''.join(body)}</table>")


def label_mask_table(tokenizer: Any, ids: Sequence[int], labels: Sequence[int], first: int = 6, last: int = 8) -> pd.DataFrame:
    """The first and last tokens of a training row and those around the prompt/completion boundary,
    each with whether it carries loss."""
    start = next(i for i, label in enumerate(labels) if label != -100)
    keep = sorted({*range(first), *range(start - 3, start + 3), *range(len(ids) - last, len(ids))})
    return pd.DataFrame({
        "position": keep,
        "token": [repr(tokenizer.convert_ids_to_tokens(ids[i])) for i in keep],
        "loss": ["yes" if labels[i] != -100 else "" for i in keep],
    }).set_index("position")


def target_table(targets: Sequence[Any]) -> pd.DataFrame:
    """Targets (:class:`workings.evaluation.targets.Target`) as a table: measured, evidence, required, met."""
    rows = [(t.name, t.measured, t.evidence, t.required, t.met) for t in targets]
    return pd.DataFrame(rows, columns=["target", "measured", "McNemar", "required", "met"]).set_index("target")


def error_table(counts: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """Graded replies per model that were right, and the wrong ones by kind (one column per model,
    from :func:`workings.evaluation.steps.error_counts`)."""
    return pd.DataFrame({name: dict(c) for name, c in counts.items()})


def headline_table(summaries: Mapping[tuple[str, str], Mapping[str, float]],
                   models: Sequence[str] = ("base", "tuned")) -> pd.DataFrame:
    """One row per benchmark: strict format and accuracy of each model, in percent with 95% intervals
    (``summaries`` keyed (benchmark, model), as :func:`workings.evaluation.scoring.summarise_results` gives them)."""
    benches = list(dict.fromkeys(b for b, _ in summaries))
    rows = {}
    for bench in benches:
        row: dict[str, Any] = {"questions": int(summaries[(bench, models[0])]["n"])}
        for rate, name in (("strict_format", "strict format"), ("accuracy", "accuracy")):
            for model in models:
                row[f"{name}, {model}"] = rate_with_ci(summaries[(bench, model)], rate)
        rows[bench] = row
    return pd.DataFrame(rows).T.rename_axis("benchmark")


def fair_headline(summaries: Mapping[tuple[str, str], Mapping[str, float]], models: Sequence[str],
                  format_blind: Sequence[str] = ("base",), min_questions: int = 30) -> tuple[pd.DataFrame, dict[str, int]]:
    """The headline: one row per graded benchmark of at least ``min_questions`` questions and model,
    the strict format and accuracy in percent with 95% intervals; a model in ``format_blind`` (the
    base, which never writes the tags) is read by the last number of its reply, its fairest reading.
    Returns the table and the benchmarks left out as too small to say anything, with their sizes.

    >>> s = {"n": 300, "graded": 300, "strict_format": 0.0, "strict_format_lo": 0.0, "strict_format_hi": 0.013,
    ...      "accuracy": 0.0, "accuracy_lo": 0.0, "accuracy_hi": 0.013, "last_number_accuracy": 0.2,
    ...      "last_number_accuracy_lo": 0.16, "last_number_accuracy_hi": 0.25}
    >>> table, small = fair_headline({("sums", "base"): s, ("tiny", "base"): {**s, "n": 4, "graded": 4}}, ["base"])
    >>> table.loc[("sums", "base (by its last number)"), "accuracy % (95% CI)"], small
    ('20.0 (16.0–25.0)', {'tiny': 4})
    """
    benches = list(dict.fromkeys(b for b, _ in summaries))
    rows, small = {}, {}
    for bench in benches:
        first = summaries[(bench, models[0])]
        graded = int(first.get("graded", first["n"]))
        if graded < min_questions:
            if graded:
                small[bench] = graded
            continue
        for model in models:
            blind = model in format_blind
            summary = summaries[(bench, model)]
            rows[(bench, f"{model} (by its last number)" if blind else model)] = {
                "questions": graded, "strict format % (95% CI)": rate_with_ci(summary, "strict_format"),
                "accuracy % (95% CI)": rate_with_ci(summary, "last_number_accuracy" if blind else "accuracy")}
    table = pd.DataFrame(rows).T
    if rows:
        table.index = pd.MultiIndex.from_tuples(list(rows), names=["benchmark", "model"])
    return table, small


def run_cost_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """What a training run cost, from its ``run.json``: steps, time, throughput, peak memory."""
    return pd.DataFrame({"value": {
        "optimizer steps": f"{summary['steps']:,}",
        "training time (this session)": f"{summary['seconds']:,.0f} s",
        "tokens seen": f"{summary['tokens_seen']:,}",
        "tokens per second": f"{summary['tokens_per_second']:,.0f}",
        f"peak memory ({summary.get('peak_memory_of', 'n/a')})": (
            f"{summary['peak_memory_gib']:.2f} GiB" if summary.get("peak_memory_gib") is not None else "not recorded"),
    }}).rename_axis("training")


# --- GRPO ------------------------------------------------------------------------------

def reward_table(cases: Sequence[str], scores: Mapping[str, Sequence[float | None]],
                 total: Sequence[float]) -> pd.DataFrame:
    """One row per case: each reward its reply earns ("–" where a reward does not apply) and the
    weighted sum GRPO ranks it by, as ``total`` (``scores`` from :func:`workings.core.rewards.score_replies`)."""
    rows = {}
    for i, case in enumerate(cases):
        row: dict[str, Any] = {reward: "–" if values[i] is None else round(values[i], 2) for reward, values in scores.items()}
        row["total"] = round(total[i], 2)
        rows[case] = row
    return pd.DataFrame(rows).T.rename_axis("case")


def options_table(args: Any, names: Sequence[str], header: str) -> pd.DataFrame:
    """The values of a trainer config's options ``names`` (enums by their value), one row each."""
    values = {name: getattr(args, name) for name in names}
    return pd.DataFrame({"value": {k: str(getattr(v, "value", v)) for k, v in values.items()}}).rename_axis(header)


def selection_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """GRPO's prompt selection by layout (``run.json``'s ``prompts``): candidates kept, and those
    dropped because every sampled reply was wrong or every one was right."""
    table = pd.DataFrame(report["by_layout"]).T
    table.loc["all layouts"] = table.sum()
    table.insert(0, "candidates", table.sum(axis=1))
    return table.astype(int).rename_axis("layout")


def never_solved_in_words(report: Mapping[str, Any]) -> str:
    """How many candidates of each prompt layout the SFT model never solved, for a sentence.

    >>> never_solved_in_words({"by_layout": {"project": {"kept": 60, "never solved": 22, "always solved": 4},
    ...                                      "seed": {"kept": 33, "never solved": 52, "always solved": 0}}})
    '22 of 86 asked as project, 52 of 85 asked as seed'
    """
    return ", ".join(f"{c['never solved']} of {sum(c.values())} asked as {layout}"
                     for layout, c in report["by_layout"].items())


def change_in_words(before: float, after: float) -> str:
    """A rate's change for a sentence, in percent.

    >>> change_in_words(0.44, 0.47), change_in_words(0.5, 0.25), change_in_words(0.9, 0.9)
    ('rises from 44.0% to 47.0%', 'falls from 50.0% to 25.0%', 'stays at 90.0%')
    """
    if after == before:
        return f"stays at {100 * after:.1f}%"
    return f"{'rises' if after > before else 'falls'} from {100 * before:.1f}% to {100 * after:.1f}%"
