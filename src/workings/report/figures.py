"""Figures the book shows, each from results the other stages computed; sized for the page."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from workings.report.tables import memory_table
from workings.train.state import log_history, tokens_per_second


def length_histogram(lengths_by_source: Mapping[str, Sequence[int]], max_length: int, title: str = "",
                     min_rows: int = 0) -> Any:
    """One histogram panel per source of token lengths, with the length limit marked; sources with
    fewer than ``min_rows`` rows share one panel (a histogram of a handful of rows says nothing alone).
    ``title`` is left out when empty: a caption says what the figure is, at the column's width."""
    import matplotlib.pyplot as plt

    kept = {n: list(v) for n, v in lengths_by_source.items() if len(v) >= max(min_rows, 1)}
    few = [n for n, v in lengths_by_source.items() if 0 < len(v) < min_rows]
    if few:
        kept[f"{len(few)} other sources" if len(few) > 1 else few[0]] = [x for n in few for x in lengths_by_source[n]]
    names = list(kept)
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(7.0, 1.9 * nrows + (0.5 if title else 0.2)), squeeze=False,
                             sharex=True)
    top = max(max_length, *(max(kept[n]) for n in names))
    bins = [top * i / 40 for i in range(41)]  # the same bins in every panel
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        ax.hist(kept[name], bins=bins, color="#4c72b0")
        ax.axvline(max_length, color="#c44e52", linestyle="--", linewidth=1)
        ax.set_title(f"{name} (n={len(kept[name])})")
        ax.set_xlabel("tokens")
    for row in axes:
        row[0].set_ylabel("rows")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def memory_plot(estimates: Sequence[Any], limits: Mapping[str, float | None], title: str) -> Any:
    """Stacked bars of the memory components per profile, each with its GPU's memory marked."""
    import matplotlib.pyplot as plt

    table = memory_table(estimates).drop(columns="total")
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(table) + 1.6))
    left = pd.Series(0.0, index=table.index)
    colours = ["#4c72b0", "#55a868", "#8172b2", "#ccb974", "#c44e52", "#64b5cd"]
    for colour, column in zip(colours, table.columns):
        ax.barh(table.index, table[column], left=left, color=colour, label=column.replace("_", " "))
        left += table[column]
    for row, name in enumerate(table.index):
        if limits.get(name) is not None:
            ax.plot([limits[name]] * 2, [row - 0.45, row + 0.45], color="black", linestyle="--", linewidth=1.2)
    ax.plot([], [], color="black", linestyle="--", linewidth=1.2, label="GPU memory")
    ax.set_xlabel("GiB (estimated peak per GPU)")
    ax.invert_yaxis()
    ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(table) > 3 else -0.35), fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def training_curves(state: Mapping[str, Any], title: str) -> Any:
    """Training and held-out loss, learning rate, gradient norm and tokens/s per optimizer step.

    A panel whose quantity the run did not log says so instead of staying blank.
    """
    import matplotlib.pyplot as plt

    history = log_history(state)
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.0), sharex=True)
    loss_ax, lr_ax, grad_ax, speed_ax = axes.flat
    if "loss" in history:
        train = history["loss"].dropna()
        loss_ax.plot(train.index, train.values, label="train", color="#4c72b0")
    if "eval_loss" in history:
        held = history["eval_loss"].dropna()
        loss_ax.plot(held.index, held.values, "o-", label="held out", color="#c44e52")
    loss_ax.set_ylabel("loss (completion tokens)")
    loss_ax.legend()
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
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def rate_chart(summaries: Mapping[tuple[str, str], Mapping[str, float]], rates: Sequence[str], title: str) -> Any:
    """Grouped bars per benchmark, one bar per model, with Wilson 95% intervals as error bars.

    ``summaries`` maps (benchmark, model) to a summary (:func:`workings.evaluation.scoring.summarise_results`).
    """
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(m for _, m in summaries))
    benches = list(dict.fromkeys(b for b, _ in summaries))
    colours = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52"]
    fig, axes = plt.subplots(len(rates), 1, figsize=(7.0, 2.8 * len(rates)), squeeze=False, sharex=True)
    for ax, rate in zip(axes[:, 0], rates):
        width = 0.8 / len(models)
        for k, model in enumerate(models):
            rows = [summaries[(b, model)] for b in benches]
            values = [100 * s[rate] if not math.isnan(s[rate]) else 0 for s in rows]
            # max(0, …): at 0% the interval's lower end may differ from 0 by rounding alone
            lo = [max(0.0, v - 100 * s[f"{rate}_lo"]) if not math.isnan(s[rate]) else 0 for v, s in zip(values, rows)]
            hi = [max(0.0, 100 * s[f"{rate}_hi"] - v) if not math.isnan(s[rate]) else 0 for v, s in zip(values, rows)]
            xs = [i + (k - (len(models) - 1) / 2) * width for i in range(len(benches))]
            ax.bar(xs, values, width, yerr=[lo, hi], capsize=2, label=model, color=colours[k % len(colours)])
            for x, s in zip(xs, rows):
                if math.isnan(s[rate]):
                    ax.text(x, 2, "n/g", ha="center", rotation=90)
        ax.set_xticks(range(len(benches)))
        ax.set_xticklabels(benches, rotation=30, ha="right")
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{rate.replace('_', ' ')} %")
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def length_distributions(results: Mapping[str, Mapping[str, Sequence[Any]]], title: str) -> Any:
    """Histograms over all benchmarks, per model: reply length and reasoning-block length in tokens.
    Each axis ends at the 99th percentile of its lengths, so a few long replies do not squeeze the
    rest into one bar; how many lie beyond is said under the axis."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (reply_ax, reasoning_ax) = plt.subplots(1, 2, figsize=(7.0, 3.0))
    colours = ["#8c8c8c", "#4c72b0", "#55a868", "#c44e52"]
    lengths = {"reply": {}, "reasoning": {}}
    for model, by_bench in results.items():
        scored = [s for replies in by_bench.values() for s in replies]
        lengths["reply"][model] = [s.new_tokens for s in scored]
        lengths["reasoning"][model] = [s.reasoning_tokens for s in scored if s.reasoning]
    for ax, kind, label in ((reply_ax, "reply", "reply length (new tokens)"),
                            (reasoning_ax, "reasoning", "reasoning length (tokens)")):
        every = [x for values in lengths[kind].values() for x in values]
        if not every:
            ax.set_xlabel(label)
            continue
        end = max(1.0, float(np.percentile(every, 99)))
        bins = np.linspace(0, end, 31)
        for k, (model, values) in enumerate(lengths[kind].items()):
            if values:
                name = model if kind == "reply" else f"{model} ({len(values)} with a block)"
                ax.hist([min(x, end) for x in values if x <= end], bins=bins, alpha=0.6, label=name,
                        color=colours[k % len(colours)])
        beyond = sum(x > end for x in every)
        ax.set_xlim(0, end)
        ax.set_xlabel(label + (f"\n{beyond} longer beyond {end:.0f}, not shown" if beyond else ""))
    for ax in (reply_ax, reasoning_ax):
        ax.set_ylabel("replies")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def grpo_curves(state: Mapping[str, Any], rewards: Sequence[str], title: str) -> Any:
    """A GRPO run per optimizer step: each reward's mean over the step's replies; the fraction of
    groups whose replies all earned the same reward (they teach nothing); completion length with
    the share cut at the limit; and the KL to the reference policy (or, without one, the entropy).
    A panel whose value never changed carries no curve: it is left out and its value said in the title."""
    import matplotlib.pyplot as plt

    history = log_history(state)
    drift = "kl" if "kl" in history and history["kl"].notna().any() else "entropy"
    wanted = [("frac_reward_zero_std", "groups with equal rewards"), ("completions/mean_length", "completion tokens (mean)"),
              (drift, drift)]
    shown, constant = [], []
    for column, name in wanted:
        values = history[column].dropna() if column in history else pd.Series(dtype=float)
        if len(values) > 1 and values.nunique() == 1:
            constant.append(f"{name} {values.iloc[0]:g} at every step")
        else:
            shown.append((column, name, values))
    fig, axes = plt.subplots(2, 2, figsize=(7.0, 5.0), sharex=True)
    reward_ax, others = axes.flat[0], list(axes.flat[1:])
    for name in rewards:
        column = f"rewards/{name}/mean"
        if column in history:
            values = history[column].dropna()
            reward_ax.plot(values.index, values.values, label=name)
    reward_ax.set_ylabel("reward (mean of the step)")
    for ax, (column, name, values) in zip(others, shown):
        if len(values):
            ax.plot(values.index, values.values, color="#55a868")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_ylabel(name)
        if column == "frac_reward_zero_std":
            ax.set_ylim(0, 1)
        if column == "completions/mean_length" and "completions/clipped_ratio" in history:
            clipped = history["completions/clipped_ratio"].dropna()
            share = ax.twinx()
            share.plot(clipped.index, clipped.values, color="#c44e52", linestyle=":")
            share.set_ylabel("cut at the limit (share)", color="#c44e52")
            share.set_ylim(0, 1)
    for ax in others[len(shown):]:
        ax.set_visible(False)
    for ax in axes[1]:
        ax.set_xlabel("step")
    axes[0][1].tick_params(labelbottom=True)  # the lower right panel may be gone: label the step axis above it too
    # the legend below the panels, where it covers no curve
    handles, labels = reward_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)) or 1, fontsize=8, frameon=False)
    fig.suptitle(title + ("; constant: " + "; ".join(constant) if constant else ""), fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
