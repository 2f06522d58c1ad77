import matplotlib

matplotlib.use("Agg")

from workings.profiles import load_profile
from workings.report import contamination_table, drop_table, label, length_histogram, mix_table

REPORT = {
    "sources": {
        "a": {"rows_in": 10, "converted": 9, "dropped": {"too_long": 2, "missing_field": 1}, "heldout": 1,
              "train_unique": 6, "train_rows": 12, "tokens": {"p50": 100, "p99": 300}},
        "b": {"rows_in": 4, "converted": 4, "dropped": {}, "heldout": 0, "train_unique": 4, "train_rows": 4,
              "tokens": {"p50": 50, "p99": 60}},
    },
    "contamination": {"rows": [
        {"id": "1", "source": "a", "eval_set": "t", "overlap": 0.6, "question": "q1"},
        {"id": "2", "source": "a", "eval_set": "t", "overlap": 0.9, "question": "q2"},
    ]},
}


def test_mix_table_sums_counts_but_not_token_percentiles():
    table = mix_table(REPORT)
    assert table.loc["total", "rows in"] == 14 and table.loc["total", "train (weighted)"] == 16
    assert table.loc["total", "dropped"] == 3
    assert str(table.loc["total", "tokens p50"]) == "<NA>"


def test_drop_table_keeps_only_sources_with_drops():
    table = drop_table(REPORT)
    assert list(table.columns) == ["a"] and table.loc["too_long", "a"] == 2


def test_contamination_table_sorts_by_overlap():
    assert list(contamination_table(REPORT)["question"]) == ["q2", "q1"]


def test_length_histogram_has_one_panel_per_source_with_rows():
    fig = length_histogram({"a": [10, 20], "b": [], "c": [5]}, 50, "t")
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["a (n=2)", "c (n=1)"]


def test_label_names_profile_model_and_sources():
    assert label(load_profile("demo")).startswith("profile `demo` · model `tiny` · data: synthetic, gsm8k")


def test_origin_table_lists_each_source():
    from workings.report import origin_table

    report = {"sources": {"a": {**REPORT["sources"]["a"], "origin": "local file x.jsonl"}}}
    assert origin_table(report).loc["a", "origin"] == "local file x.jsonl"
