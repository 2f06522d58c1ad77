"""Tables and figures the book shows, built from saved artefacts (mix reports, datasets)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

def log_history(state: Mapping[str, Any]) -> pd.DataFrame:
    """``trainer_state.json``'s log history as one row per logged step (train and eval entries merged)."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in state["log_history"]:
        if "step" in entry and not any(k.startswith("train_runtime") for k in entry):
            rows.setdefault(entry["step"], {}).update(entry)
    return pd.DataFrame.from_dict(rows, orient="index").sort_index()


def training_curves(state: Mapping[str, Any], title: str) -> Any:
    """Training and held-out loss, and the learning rate, per optimizer step."""
    import matplotlib.pyplot as plt

    history = log_history(state)
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(8, 2.8))
    if "loss" in history:
        train = history["loss"].dropna()
        loss_ax.plot(train.index, train.values, label="train", color="#4c72b0")
    if "eval_loss" in history:
        held = history["eval_loss"].dropna()
        loss_ax.plot(held.index, held.values, "o-", label="held out", color="#c44e52")
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss (completion tokens)")
    loss_ax.legend(fontsize=8)
    if "learning_rate" in history:
        lr = history["learning_rate"].dropna()
        lr_ax.plot(lr.index, lr.values, color="#55a868")
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("learning rate")
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def metrics_table(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Rates from :func:`workings.evaluate.summarise`, one row per model, percentages rounded."""
    table = pd.DataFrame(results).T
    rates = [c for c in table.columns if c not in ("n", "mean_new_tokens")]
    table[rates] = (100 * table[rates]).round(1)
    table["n"] = table["n"].astype(int)
    table["mean_new_tokens"] = table["mean_new_tokens"].round(1)
    return table.rename(columns={c: f"{c} %" for c in rates})


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


def paired_counts(base: Sequence[Any], tuned: Sequence[Any]) -> pd.DataFrame:
    """Questions answered correctly by both, one or neither of two models (same questions, same order)."""
    if len(base) != len(tuned):
        raise ValueError(f"paired results need the same questions: {len(base)} vs {len(tuned)}")
    table = pd.DataFrame(0, index=["base right", "base wrong"], columns=["tuned right", "tuned wrong"])
    for b, t in zip(base, tuned):
        table.loc["base right" if b.correct else "base wrong", "tuned right" if t.correct else "tuned wrong"] += 1
    return table


def target_check(base: Mapping[str, float], tuned: Mapping[str, float], min_strict: float) -> pd.DataFrame:
    """The SFT stage's targets on :func:`workings.evaluate.summarise` results: greedy strict format
    at least ``min_strict``, and accuracy above the base's."""
    rows = [
        ("strict format (tuned, greedy)", f"{100 * tuned['strict_format']:.1f}%", f">= {100 * min_strict:g}%",
         tuned["strict_format"] >= min_strict),
        ("accuracy, tuned vs base", f"{100 * tuned['accuracy']:.1f}% vs {100 * base['accuracy']:.1f}%", "higher",
         tuned["accuracy"] > base["accuracy"]),
    ]
    return pd.DataFrame(rows, columns=["target", "measured", "required", "met"]).set_index("target")
