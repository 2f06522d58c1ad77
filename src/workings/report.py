"""Tables and figures the book shows, built from saved artefacts (mix reports, datasets)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from workings.profiles import Profile


def label(profile: Profile) -> str:
    """One line naming what produced a result: profile, model and data sources."""
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


def contamination_table(report: Mapping[str, Any], limit: int = 10) -> pd.DataFrame:
    """The contaminated training rows found, highest overlap first."""
    rows = sorted(report["contamination"]["rows"], key=lambda r: -r["overlap"])[:limit]
    return pd.DataFrame(rows, columns=["source", "eval_set", "overlap", "question"])


def length_histogram(lengths_by_source: Mapping[str, Sequence[int]], max_length: int, title: str) -> Any:
    """One histogram panel per source of token lengths, with the length limit marked."""
    import matplotlib.pyplot as plt

    names = [n for n, v in lengths_by_source.items() if len(v)]
    ncols = min(4, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False, sharex=True)
    top = max(max_length, *(max(lengths_by_source[n]) for n in names))
    bins = [top * i / 40 for i in range(41)]  # the same bins in every panel
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ax.hist(lengths_by_source[name], bins=bins, color="#4c72b0")
        ax.axvline(max_length, color="#c44e52", linestyle="--", linewidth=1)
        ax.set_title(f"{name} (n={len(lengths_by_source[name])})", fontsize=9)
        ax.set_xlabel("tokens", fontsize=8)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_ylabel("rows", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def lengths_by_source(dataset: Any) -> dict[str, list[int]]:
    """Token lengths of a saved mix split, grouped by source."""
    out: dict[str, list[int]] = {}
    for source, n in zip(dataset["source"], dataset["n_tokens"]):
        out.setdefault(source, []).append(n)
    return out


def origin_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """Where each source's rows came from (Hub id and pinned revision, local file, or generator)."""
    return pd.DataFrame({"origin": {name: s["origin"] for name, s in report["sources"].items()}})


# --- QLoRA configuration ---------------------------------------------------------------

def qlora_table(profiles: Sequence[Profile], configs: Mapping[str, Any]) -> pd.DataFrame:
    """Per profile: base quantization, LoRA shape, predicted trainable parameters and adapter size.

    ``configs`` maps a model id to its config (see :func:`workings.qlora.load_model_config`).
    """
    from workings.qlora import predicted_adapter_bytes, predicted_lora_parameters, total_parameters

    rows = []
    for p in profiles:
        config = configs[p.model.id]
        q = p.quantization
        lora = predicted_lora_parameters(config, p.lora)
        total = total_parameters(config)
        rows.append({
            "profile": p.name, "model": p.model.id,
            "base": f"{q.bits}-bit {q.quant_type}{' +dq' if q.double_quant else ''}" if q else p.model.dtype,
            "r / alpha": f"{p.lora.r} / {p.lora.alpha:g}", "modules": len(p.lora.target_modules),
            "base params": f"{total:,}", "LoRA params": f"{lora:,}", "trainable %": round(100 * lora / total, 2),
            "adapter file (MB)": round(predicted_adapter_bytes(config, p.lora) / 1e6, 2),
            "saved as": p.lora.save_dtype,
        })
    return pd.DataFrame(rows).set_index("profile")


def memory_table(estimates: Sequence[Any]) -> pd.DataFrame:
    """:class:`workings.qlora.MemoryEstimate` rows in GiB."""
    return pd.DataFrame({e.profile: e.as_gib() for e in estimates}).T.round(2)


def memory_plot(estimates: Sequence[Any], limit_gib: float | None, title: str) -> Any:
    """Stacked bars of the memory components per profile, with the device limit marked."""
    import matplotlib.pyplot as plt

    table = memory_table(estimates).drop(columns="total")
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    left = pd.Series(0.0, index=table.index)
    colours = ["#4c72b0", "#55a868", "#8172b2", "#ccb974", "#c44e52", "#64b5cd"]
    for colour, column in zip(colours, table.columns):
        ax.barh(table.index, table[column], left=left, color=colour, label=column.replace("_", " "))
        left += table[column]
    if limit_gib is not None:
        ax.axvline(limit_gib, color="black", linestyle="--", linewidth=1)
        ax.text(limit_gib, -0.6, f" {limit_gib:g} GiB", fontsize=8, va="bottom")
    ax.set_xlabel("GiB (estimated peak)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- the training run ------------------------------------------------------------------

def find_trainer_state(path: str | Path) -> Path:
    """The ``trainer_state.json`` of a run folder, a checkpoint folder (``checkpoint-17835``), or the file.

    A run folder without one of its own gives its newest checkpoint's.
    """
    path = Path(path)
    if path.is_file():
        return path
    if (path / "trainer_state.json").is_file():
        return path / "trainer_state.json"
    from workings.training import checkpoints

    steps = [p for p in checkpoints(path) if (p / "trainer_state.json").is_file()]
    if steps:
        return steps[-1] / "trainer_state.json"
    raise FileNotFoundError(f"{path}: no trainer_state.json here or in a checkpoint-* folder")


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    """Read a trainer state as JSON only (``training_args.bin`` beside it is a pickle and is never opened)."""
    file = find_trainer_state(path)
    try:
        state = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise ValueError(f"{file}: no log_history list; is this a transformers trainer_state.json?")
    return state


def adapter_trainer_state(adapter: str | Path) -> dict[str, Any]:
    """The trainer state of the run that saved ``adapter``: in the folder itself (a checkpoint such as
    ``checkpoint-17835``) or in its parent (this project's ``<run>/adapter``)."""
    adapter = Path(adapter)
    return load_trainer_state(adapter if (adapter / "trainer_state.json").is_file() else adapter.parent)


def run_summary(state: Mapping[str, Any]) -> pd.Series:
    """Steps and first/last logged losses of a run; what the run did not log is left out."""
    history = log_history(state)
    out: dict[str, Any] = {"steps": state.get("global_step", history.index.max() if len(history) else 0)}
    for column, name in (("loss", "train loss"), ("eval_loss", "held-out loss")):
        if column in history and history[column].notna().any():
            values = history[column].dropna()
            out[f"{name}, first logged"] = round(float(values.iloc[0]), 3)
            out[f"{name}, last logged"] = round(float(values.iloc[-1]), 3)
    return pd.Series(out, dtype=object)


def log_history(state: Mapping[str, Any]) -> pd.DataFrame:
    """``trainer_state.json``'s log history as one row per logged step (train and eval entries merged).

    The closing summary entry (``train_loss`` over the whole run) is left out.
    """
    rows: dict[int, dict[str, Any]] = {}
    for entry in state["log_history"]:
        if "step" in entry and "train_loss" not in entry:
            rows.setdefault(entry["step"], {}).update(entry)
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


def tokens_per_second(history: pd.DataFrame) -> pd.Series:
    """Training throughput between consecutive logs, from tokens seen and runtime (empty when not logged)."""
    if {"num_input_tokens_seen", "train_runtime"} <= set(history.columns):
        logged = history[["num_input_tokens_seen", "train_runtime"]].dropna()
        rate = logged["num_input_tokens_seen"].diff() / logged["train_runtime"].diff()
        if len(logged):
            rate.iloc[0] = logged["num_input_tokens_seen"].iloc[0] / logged["train_runtime"].iloc[0]
        return rate.dropna()
    if "train_tokens_per_second" in history:
        return history["train_tokens_per_second"].dropna()
    return pd.Series(dtype=float)


def training_curves(state: Mapping[str, Any], title: str) -> Any:
    """Training and held-out loss, learning rate, gradient norm and tokens/s per optimizer step.

    A panel whose quantity the run did not log says so instead of staying blank.
    """
    import matplotlib.pyplot as plt

    history = log_history(state)
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8))
    loss_ax, lr_ax, grad_ax, speed_ax = axes
    if "loss" in history:
        train = history["loss"].dropna()
        loss_ax.plot(train.index, train.values, label="train", color="#4c72b0")
    if "eval_loss" in history:
        held = history["eval_loss"].dropna()
        loss_ax.plot(held.index, held.values, "o-", label="held out", color="#c44e52")
    loss_ax.set_ylabel("loss (completion tokens)")
    loss_ax.legend(fontsize=8)
    series = {lr_ax: ("learning rate", history.get("learning_rate")), grad_ax: ("gradient norm", history.get("grad_norm")),
              speed_ax: ("tokens / s", tokens_per_second(history))}
    for ax, (name, values) in series.items():
        values = values.dropna() if values is not None else pd.Series(dtype=float)
        if len(values):
            ax.plot(values.index, values.values, color="#55a868")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_ylabel(name)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    for ax in axes:
        ax.set_xlabel("step")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


RATES = ("strict_format", "lenient_format", "accuracy", "accuracy_when_strict", "last_number_accuracy", "truncated")


def rate_with_ci(summary: Mapping[str, float], rate: str) -> str:
    """``"95.0 (91.9–96.9)"``: a rate in percent with its 95% interval; ``"–"`` when there is none."""
    value = summary.get(rate, math.nan)
    if value is None or math.isnan(value):
        return "–"
    return f"{100 * value:.1f} ({100 * summary[rate + '_lo']:.1f}–{100 * summary[rate + '_hi']:.1f})"


def metrics_table(results: Mapping[str, Mapping[str, float]], rates: Sequence[str] = RATES) -> pd.DataFrame:
    """Summaries from :func:`workings.evaluate.summarise`, one row per key: rates in percent with
    Wilson 95% intervals, counts, and reply and reasoning lengths in tokens."""
    rows = {}
    for name, summary in results.items():
        row: dict[str, Any] = {"n": int(summary["n"]), "graded": int(summary.get("graded", summary["n"]))}
        row.update({f"{rate} % (95% CI)": rate_with_ci(summary, rate) for rate in rates})
        row["mean new tokens"] = round(summary["mean_new_tokens"], 1)
        for key in ("p50", "p90"):
            value = summary.get(f"reasoning_tokens_{key}", math.nan)
            row[f"reasoning tokens {key}"] = "–" if math.isnan(value) else round(value, 1)
        rows[name] = row
    return pd.DataFrame(rows).T


def results_table(results: Mapping[str, Mapping[str, Sequence[Any]]],
                  rates: Sequence[str] = ("strict_format", "accuracy", "accuracy_when_strict", "truncated")) -> pd.DataFrame:
    """Every benchmark under every model (``results[model][benchmark]`` = scored replies): one row each."""
    from workings.evaluate import summarise

    rows = {(bench, model): summarise(scored) for model, by_bench in results.items() for bench, scored in by_bench.items()}
    table = metrics_table({f"{b} | {m}": v for (b, m), v in rows.items()}, rates)
    table.index = pd.MultiIndex.from_tuples(list(rows), names=["benchmark", "model"])
    return table.sort_index(level=0, sort_remaining=False)


def comparison_table(results: Mapping[str, Mapping[str, Sequence[Any]]], a: str = "base", b: str = "tuned",
                     metric: str = "correct") -> pd.DataFrame:
    """Per benchmark, ``b`` against ``a`` on the same questions: paired counts, the difference in
    percentage points with its paired-bootstrap 95% interval, and McNemar's exact p-value."""
    from workings.evaluate import compare

    rows = {}
    for bench, scored_a in results[a].items():
        scored_b = results[b][bench]
        if metric == "correct" and not any(s.graded for s in scored_a):
            continue
        c = compare(scored_a, scored_b, metric)
        rows[bench] = {
            "n": c.n, f"{a} only": c.only_a, f"{b} only": c.only_b, "both": c.both, "neither": c.neither,
            f"{b} - {a} (pp)": round(100 * c.difference, 1),
            "95% CI (pp)": f"{100 * c.difference_ci[0]:.1f} to {100 * c.difference_ci[1]:.1f}",
            "McNemar p": f"{c.p_value:.2g}", "significant (p<0.05)": c.significant,
        }
    return pd.DataFrame(rows).T


def verdicts(results: Mapping[str, Mapping[str, Sequence[Any]]], a: str = "base", b: str = "tuned") -> list[str]:
    """One sentence per graded benchmark: both accuracies, the discordant questions and what McNemar's test says."""
    from workings.evaluate import compare, summarise

    lines = []
    for bench, scored_a in results[a].items():
        if not any(s.graded for s in scored_a):
            continue
        c = compare(scored_a, results[b][bench])
        acc_a, acc_b = summarise(scored_a)["accuracy"], summarise(results[b][bench])["accuracy"]
        if c.significant:
            meaning = f"{b if c.difference > 0 else a} is more accurate, beyond chance at the 5% level"
        else:
            meaning = "no difference beyond chance at the 5% level"
        lines.append(f"{bench} ({c.n} question{'' if c.n == 1 else 's'}): {b} {100 * acc_b:.1f}% vs {a} {100 * acc_a:.1f}%; only {b} right on "
                     f"{c.only_b}, only {a} on {c.only_a}; McNemar p = {c.p_value:.2g}: {meaning}.")
    return lines


def breakdown_table(results: Mapping[str, Sequence[Any]], by: str) -> pd.DataFrame:
    """Accuracy with its interval per value of ``by`` (MATH-500's subject or level), one column per model."""
    from workings.evaluate import breakdown

    columns = {}
    for model, scored in results.items():
        groups = breakdown(scored, by)
        columns[f"{model} accuracy % (95% CI)"] = {k: rate_with_ci(v, "accuracy") for k, v in groups.items()}
        columns["n"] = {k: int(v["n"]) for k, v in groups.items()}
    table = pd.DataFrame(columns)
    table.index.name = by
    return table[["n", *[c for c in table.columns if c != "n"]]]


def rate_chart(results: Mapping[str, Mapping[str, Sequence[Any]]], rates: Sequence[str], title: str) -> Any:
    """Grouped bars per benchmark, one bar per model, with Wilson 95% intervals as error bars."""
    import matplotlib.pyplot as plt

    from workings.evaluate import summarise

    models = list(results)
    benches = list(next(iter(results.values())))
    colours = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52"]
    fig, axes = plt.subplots(1, len(rates), figsize=(max(4.5, 0.9 * len(benches)) * len(rates), 3.2), squeeze=False)
    for ax, rate in zip(axes[0], rates):
        width = 0.8 / len(models)
        for k, model in enumerate(models):
            summaries = [summarise(results[model][b]) for b in benches]
            values = [100 * s[rate] if not math.isnan(s[rate]) else 0 for s in summaries]
            # max(0, …): at 0% the interval's lower end may differ from 0 by rounding alone
            lo = [max(0.0, v - 100 * s[f"{rate}_lo"]) if not math.isnan(s[rate]) else 0 for v, s in zip(values, summaries)]
            hi = [max(0.0, 100 * s[f"{rate}_hi"] - v) if not math.isnan(s[rate]) else 0 for v, s in zip(values, summaries)]
            xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(benches))]
            ax.bar(xs, values, width, yerr=[lo, hi], capsize=2, label=model, color=colours[k % len(colours)])
            for x, s in zip(xs, summaries):
                if math.isnan(s[rate]):
                    ax.text(x, 2, "n/g", ha="center", fontsize=6, rotation=90)
        ax.set_xticks(range(len(benches)))
        ax.set_xticklabels(benches, rotation=30, ha="right", fontsize=7)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{rate.replace('_', ' ')} %")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def length_distributions(results: Mapping[str, Mapping[str, Sequence[Any]]], title: str) -> Any:
    """Histograms over all benchmarks, per model: reply length and reasoning-block length in tokens."""
    import matplotlib.pyplot as plt

    fig, (reply_ax, reasoning_ax) = plt.subplots(1, 2, figsize=(9, 2.8))
    colours = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52"]
    for k, (model, by_bench) in enumerate(results.items()):
        scored = [s for replies in by_bench.values() for s in replies]
        reply_ax.hist([s.new_tokens for s in scored], bins=30, alpha=0.6, label=model, color=colours[k % len(colours)])
        reasoning = [s.reasoning_tokens for s in scored if s.reasoning]
        if reasoning:
            reasoning_ax.hist(reasoning, bins=30, alpha=0.6, label=f"{model} ({len(reasoning)} with a block)",
                              color=colours[k % len(colours)])
    reply_ax.set_xlabel("reply length (new tokens)")
    reasoning_ax.set_xlabel("reasoning length (tokens inside <reasoning>)")
    for ax in (reply_ax, reasoning_ax):
        ax.set_ylabel("replies")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


GALLERY_KINDS = {
    "correct": lambda s: s.strict and s.correct is True,
    "wrong": lambda s: s.strict and s.correct is False,
    "format failure": lambda s: not s.strict,
}


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
            f"<td style='vertical-align:top'><pre style='white-space:pre-wrap;font-size:80%'>{escape(s.output)}</pre></td>"
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
            f"<td style='vertical-align:top'><pre style='white-space:pre-wrap;font-size:80%'>{escape(outputs[i])}</pre></td>"
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


def target_check(base: Sequence[Any], tuned: Sequence[Any], min_strict: float) -> pd.DataFrame:
    """The SFT stage's targets on scored greedy replies to the same questions: the tuned model's
    strict-format rate at least ``min_strict``, and its accuracy higher than the base's beyond
    chance (McNemar's exact test, p < 0.05). The base never writes tags, so its answers are read
    format-blind (last number), the tuned model's from its answer block."""
    from workings.evaluate import compare, summarise

    strict = summarise(tuned)["strict_format"]
    c = compare(base, tuned, metric="correct", metric_a="last_number_correct")
    acc_base, acc_tuned = (c.both + c.only_a) / c.n, (c.both + c.only_b) / c.n
    rows = [
        ("strict format (tuned, greedy)", f"{100 * strict:.1f}%", "", f">= {100 * min_strict:g}%", strict >= min_strict),
        ("accuracy, tuned vs base", f"{100 * acc_tuned:.1f}% vs {100 * acc_base:.1f}%",
         f"only tuned right {c.only_b}, only base {c.only_a}: p = {c.p_value:.2g}", "higher, p < 0.05",
         c.difference > 0 and c.significant),
    ]
    return pd.DataFrame(rows, columns=["target", "measured", "McNemar", "required", "met"]).set_index("target")


def error_table(results: Mapping[str, tuple[Sequence[Any], str]]) -> pd.DataFrame:
    """Graded replies per model that were right, and the wrong ones by :func:`workings.evaluate.error_kind`.

    ``results`` maps a column name to (scored replies, the metric that says right), e.g.
    ``{"base": (base_scores, "last_number_correct"), "tuned": (tuned_scores, "correct")}``.
    """
    from workings.evaluate import error_counts

    return pd.DataFrame({name: error_counts(scored, metric) for name, (scored, metric) in results.items()})
