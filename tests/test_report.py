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


def scored(correct):
    from workings.evaluate import Scored

    return Scored(question="q", gold="1", output="o", reasoning=None, answer=None, strict=False, lenient=False,
                  correct=correct, last_number_correct=correct, truncated=False, new_tokens=3)


def test_paired_counts_cross_tabulate_the_same_questions():
    from workings.report import paired_counts

    base = [scored(c) for c in (True, False, False, True, False)]
    tuned = [scored(c) for c in (True, True, False, False, True)]
    table = paired_counts(base, tuned)
    assert table.loc["base right", "tuned right"] == 1 and table.loc["base right", "tuned wrong"] == 1
    assert table.loc["base wrong", "tuned right"] == 2 and table.loc["base wrong", "tuned wrong"] == 1


def test_log_history_merges_train_and_eval_entries_by_step():
    from workings.report import log_history

    state = {"log_history": [
        {"step": 10, "loss": 2.0, "learning_rate": 1e-3},
        {"step": 10, "eval_loss": 1.5},
        {"step": 20, "loss": 1.0, "learning_rate": 5e-4},
        {"step": 20, "train_runtime": 3.0, "train_loss": 1.5},
    ]}
    history = log_history(state)
    assert list(history.index) == [10, 20]
    assert history.loc[10, "eval_loss"] == 1.5 and history.loc[20, "loss"] == 1.0
    assert "train_runtime" not in history


def test_label_mask_table_marks_loss_from_the_first_completion_token(tokenizer):
    from workings.report import label_mask_table
    from workings.training import completion_labels

    prompt = "<bos><start_of_turn>user\nWhat is 2 + 3?<end_of_turn>\n<start_of_turn>model\n"
    ids, labels = completion_labels(tokenizer, prompt, "<answer>5</answer><end_of_turn>\n")
    table = label_mask_table(tokenizer, ids, labels, first=2, last=2)
    start = labels.index(next(label for label in labels if label != -100))
    assert table.loc[start - 1, "loss"] == "" and table.loc[start, "loss"] == "yes"
    assert table["token"].iloc[-1] == repr("<end_of_turn>") and table["loss"].iloc[-1] == "yes"


def test_target_check_reports_each_target_met_or_not():
    from workings.report import target_check

    base = {"strict_format": 0.0, "accuracy": 0.0}
    table = target_check(base, {"strict_format": 0.95, "accuracy": 0.0}, min_strict=0.95)
    assert table["met"].tolist() == [True, False]
    assert table.loc["strict format (tuned, greedy)", "measured"] == "95.0%"
    assert table.loc["accuracy, tuned vs base", "measured"] == "0.0% vs 0.0%"
