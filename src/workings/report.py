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
