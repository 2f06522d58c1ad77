import json

import pytest
import matplotlib

matplotlib.use("Agg")

from workings.config.loading import load_profile
from workings.report.figures import length_histogram
from workings.report.tables import contamination_table, drop_table, label, mix_table

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


def test_length_histogram_puts_sources_of_a_few_rows_in_one_panel_and_no_title_widens_it():
    fig = length_histogram({"a": list(range(30)), "b": [1, 2], "c": [5], "d": [7, 8]}, 50, min_rows=20)
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["a (n=30)", "3 other sources (n=5)"]
    assert fig._suptitle is None


def test_label_names_profile_model_and_sources():
    assert label(load_profile("demo")).startswith("profile `demo` · model `tiny` · data: synthetic, gsm8k")


def test_origin_table_lists_each_source():
    from workings.report.tables import origin_table

    report = {"sources": {"a": {**REPORT["sources"]["a"], "origin": "local file x.jsonl"}}}
    assert origin_table(report).loc["a", "origin"] == "local file x.jsonl"


def scored(correct):
    from workings.evaluation.scoring import Scored

    return Scored(id="0", question="q", gold="1", output="o", reasoning=None, answer=None, strict=False, lenient=False,
                  correct=correct, last_number_correct=correct, truncated=False, new_tokens=3, reasoning_tokens=0)


def test_log_history_merges_train_and_eval_entries_by_step():
    from workings.train.state import log_history

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
    from workings.report.tables import label_mask_table
    from workings.train.sft import completion_labels

    prompt = "<bos><start_of_turn>user\nWhat is 2 + 3?<end_of_turn>\n<start_of_turn>model\n"
    ids, labels = completion_labels(tokenizer, prompt, "<answer>5</answer><end_of_turn>\n")
    table = label_mask_table(tokenizer, ids, labels, first=2, last=2)
    start = labels.index(next(label for label in labels if label != -100))
    assert table.loc[start - 1, "loss"] == "" and table.loc[start, "loss"] == "yes"
    assert table["token"].iloc[-1] == repr("<end_of_turn>") and table["loss"].iloc[-1] == "yes"


def reply(i, *, strict=False, correct=None, last_number=False):
    from workings.evaluation.scoring import Scored

    return Scored(id=str(i), question="q", gold="1", output="o", reasoning=None, answer=None, strict=strict,
                  lenient=strict, correct=correct, last_number_correct=last_number, truncated=False,
                  new_tokens=3, reasoning_tokens=0)


def target_check(base, tuned, min_strict):
    from workings.evaluation.targets import sft_targets
    from workings.report.tables import target_table

    return target_table(sft_targets(base, tuned, min_strict))


def test_target_check_reads_the_base_format_blind_and_tests_the_gain_with_mcnemar():
    # 20 questions: the base gets 2 right by its last number; the tuned model 10 by its answer block.
    base = [reply(i, correct=False, last_number=i < 2) for i in range(20)]
    tuned = [reply(i, strict=i < 19, correct=i < 10) for i in range(20)]
    table = target_check(base, tuned, min_strict=0.95)
    assert table["met"].tolist() == [True, True]
    assert table.loc["strict format (tuned, greedy)", "measured"] == "95.0%"
    assert table.loc["accuracy, tuned vs base", "measured"] == "50.0% vs 10.0%"
    assert table.loc["accuracy, tuned vs base", "McNemar"] == "only tuned right 8, only base 0: p = 0.0078"


def test_target_check_does_not_count_a_gain_within_chance_as_met():
    base = [reply(i, correct=False, last_number=i < 2) for i in range(20)]
    tuned = [reply(i, strict=i < 18, correct=i < 5) for i in range(20)]  # 3 more right: p = 0.25
    assert target_check(base, tuned, min_strict=0.95)["met"].tolist() == [False, False]


def test_error_table_reads_each_model_by_its_own_metric():
    from workings.evaluation.scoring import score
    from workings.evaluation.generate import Generation
    from workings.evaluation.steps import error_counts
    from workings.report.tables import error_table

    question = "Ava has 12 stickers. She finds 3 more. How many stickers does Ava have now?"

    def said(text):
        return score(question, "15", Generation(prompt="p", text=text, new_tokens=5, truncated=False))

    base = [said("The answer is 15."), said("The answer is 14.")]
    tuned = [said("<reasoning>12 + 3 = 15</reasoning>\n<answer>15</answer>"),
             said("<reasoning>12 + 3 = 16</reasoning>\n<answer>16</answer>")]
    table = error_table({"base": error_counts(base, "last_number_correct"), "tuned": error_counts(tuned, "correct")})
    assert table["base"].to_dict() == {"right": 1, "no computation": 1, "wrong sum": 0, "number from nowhere": 0,
                                       "answer is not the last result": 0, "wrong plan": 0}
    assert table.loc["right", "tuned"] == 1 and table.loc["wrong sum", "tuned"] == 1


def test_log_history_keeps_steps_that_also_log_runtime_and_drops_the_closing_summary():
    from workings.train.state import log_history

    state = {"log_history": [  # transformers 5 logs runtime and tokens/s with every training step
        {"step": 10, "loss": 2.0, "train_runtime": 11.0, "num_input_tokens_seen": 1100},
        {"step": 20, "loss": 1.0, "train_runtime": 21.0, "num_input_tokens_seen": 3100},
        {"step": 20, "train_runtime": 21.5, "train_loss": 1.5},
    ]}
    history = log_history(state)
    assert history["loss"].tolist() == [2.0, 1.0] and "train_loss" not in history


def test_tokens_per_second_between_logs():
    from workings.train.state import log_history, tokens_per_second

    history = log_history({"log_history": [
        {"step": 10, "loss": 2.0, "train_runtime": 11.0, "num_input_tokens_seen": 1100},
        {"step": 20, "loss": 1.0, "train_runtime": 21.0, "num_input_tokens_seen": 3100},
    ]})
    assert tokens_per_second(history).tolist() == [100.0, 200.0]


SEED_STATE = {  # the shape of an older run's checkpoint: no token counts logged
    "global_step": 20, "max_steps": 20,
    "log_history": [
        {"epoch": 0.5, "grad_norm": 0.8, "learning_rate": 2e-4, "loss": 1.9, "step": 10},
        {"epoch": 1.0, "grad_norm": 0.5, "learning_rate": 1e-4, "loss": 1.2, "step": 20},
    ],
}


def seed_checkpoint(folder):
    folder.mkdir(parents=True)
    (folder / "trainer_state.json").write_text(json.dumps(SEED_STATE))
    (folder / "training_args.bin").write_bytes(b"not a pickle: opening this would fail")
    return folder


def test_trainer_state_is_read_from_a_checkpoint_folder_as_json_only(tmp_path):
    from workings.train.state import load_trainer_state

    folder = seed_checkpoint(tmp_path / "checkpoint-17835")
    assert load_trainer_state(folder) == SEED_STATE


def test_a_run_folder_gives_its_newest_checkpoints_state(tmp_path):
    from workings.train.state import find_trainer_state

    seed_checkpoint(tmp_path / "checkpoint-9")
    seed_checkpoint(tmp_path / "checkpoint-10")
    assert find_trainer_state(tmp_path) == tmp_path / "checkpoint-10" / "trainer_state.json"


def test_a_folder_without_trainer_state_is_named(tmp_path):
    from workings.train.state import find_trainer_state

    with pytest.raises(FileNotFoundError, match="no trainer_state.json here or in a checkpoint"):
        find_trainer_state(tmp_path)


def test_training_curves_mark_what_the_run_did_not_log():
    from workings.report.figures import training_curves

    fig = training_curves(SEED_STATE, "seed run")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["not logged"]  # tokens/s only: loss, learning rate and grad norm were logged


def replies(flags, ids=None):
    from workings.evaluation.scoring import score
    from workings.evaluation.generate import Generation

    texts = {True: "<reasoning>1 + 1 = 2</reasoning>\n<answer>2</answer>", False: "It is 2, I think."}
    ids = ids or [str(i) for i in range(len(flags))]
    return [score("What is 1 + 1?", "2", Generation("p", texts[f], 5, False), id=i) for i, f in zip(ids, flags)]


def test_results_table_has_a_row_per_benchmark_and_model_with_intervals():
    from workings.evaluation.scoring import summarise_results
    from workings.report.tables import results_table

    results = {"base": {"b1": replies([False] * 4)}, "tuned": {"b1": replies([True, True, True, False])}}
    table = results_table(summarise_results(results))
    assert list(table.index) == [("b1", "base"), ("b1", "tuned")]
    assert table.loc[("b1", "tuned"), "accuracy % (95% CI)"] == "75.0 (30.1–95.4)"
    assert table.loc[("b1", "base"), "accuracy when strict % (95% CI)"] == "–"


def test_comparison_table_reports_paired_counts_and_mcnemar():
    from workings.evaluation.targets import paired_comparisons
    from workings.report.tables import comparison_table

    results = {"base": {"b1": replies([False] * 12)}, "tuned": {"b1": replies([True] * 10 + [False] * 2)}}
    row = comparison_table(paired_comparisons(results)).loc["b1"]
    assert (row["tuned only"], row["base only"], row["tuned - base (pp)"]) == (10, 0, 83.3)
    assert row["McNemar p"] == "0.002" and row["significant (p<0.05)"]


def test_gallery_picks_replies_of_the_asked_kind():
    from workings.report.tables import gallery

    html = gallery(replies([True, False]), "format failure").data
    assert "It is 2, I think." in html and "&lt;answer&gt;2" not in html
    assert "No wrong replies" in gallery(replies([True, False]), "wrong").data


def test_run_summary_of_a_run_without_held_out_loss_leaves_it_out():
    from workings.train.state import run_summary

    summary = run_summary(SEED_STATE)
    assert summary.to_dict() == {"steps": 20, "train loss, first logged": 1.9, "train loss, last logged": 1.2}


def test_an_adapter_saved_in_a_checkpoint_folder_reads_that_folders_state(tmp_path):
    from workings.train.state import adapter_trainer_state

    assert adapter_trainer_state(seed_checkpoint(tmp_path / "checkpoint-17835")) == SEED_STATE


def test_rate_chart_draws_a_bar_per_model_and_benchmark_with_error_bars_at_zero():
    from workings.evaluation.scoring import summarise_results
    from workings.report.figures import rate_chart

    results = {"base": {"b1": replies([False] * 7), "b2": replies([False] * 3)},
               "tuned": {"b1": replies([True] * 7), "b2": replies([True, False, False])}}
    fig = rate_chart(summarise_results(results), ["strict_format", "accuracy"], "t")
    assert [len(ax.patches) for ax in fig.axes] == [4, 4]


def test_verdicts_say_which_model_is_more_accurate_and_whether_it_is_chance():
    from workings.evaluation.targets import paired_comparisons
    from workings.report.tables import verdicts

    results = {"base": {"b1": replies([False] * 12), "b2": replies([False] * 3)},
               "tuned": {"b1": replies([True] * 10 + [False] * 2), "b2": replies([True, False, False])}}
    assert verdicts(paired_comparisons(results)) == [
        "b1 (12 questions): tuned 83.3% vs base 0.0%; only tuned right on 10, only base on 0; McNemar p = 0.002: "
        "tuned is more accurate, beyond chance at the 5% level.",
        "b2 (3 questions): tuned 33.3% vs base 0.0%; only tuned right on 1, only base on 0; McNemar p = 1: "
        "no difference beyond chance at the 5% level.",
    ]


def test_distinct_rows_keeps_the_first_of_equal_rows_and_names_the_others():
    import pandas as pd

    from workings.report.tables import distinct_rows

    table = pd.DataFrame({"r": [32, 32, 16, 32], "saved as": ["bf16", "bf16", "fp32", "fp16"]}, index=["a", "b", "c", "d"])
    shown, same = distinct_rows(table)
    assert list(shown.index) == ["a", "c", "d"]
    assert same == {"a": ["b"]}


def grpo_target_check(sft, grpo, sft_sampled, grpo_sampled, layouts):
    from workings.evaluation.targets import grpo_targets
    from workings.report.tables import target_table

    return target_table(grpo_targets(sft, grpo, sft_sampled, grpo_sampled, layouts, min_strict=0.99,
                                     min_layout_strict=0.95))


def test_grpo_targets_need_a_greedy_gain_beyond_chance_a_sampled_gain_and_the_format_in_every_layout():
    sft = [reply(i, strict=True, correct=i < 10) for i in range(40)]
    grpo = [reply(i, strict=True, correct=i < 20) for i in range(40)]  # 10 more right, none lost: p = 0.002
    sampled_sft = [reply(i, strict=True, correct=i < 5) for i in range(40)]
    sampled_grpo = [reply(i, strict=True, correct=i < 6) for i in range(40)]
    layouts = {"project": grpo, "seed": [reply(i, strict=i < 38) for i in range(40)]}
    table = grpo_target_check(sft, grpo, sampled_sft, sampled_grpo, layouts)
    assert table["met"].tolist() == [True, True, True, True]
    assert table.loc["accuracy, greedy, GRPO vs SFT", "McNemar"] == "only GRPO right 10, only SFT 0: p = 0.002"
    assert table.loc["strict format in every layout (GRPO, greedy)", "measured"] == "lowest 95.0% (seed)"


def test_grpo_targets_fail_a_gain_within_chance_a_sampled_loss_and_one_layout_below_the_bar():
    sft = [reply(i, strict=True, correct=i < 10) for i in range(40)]
    grpo = [reply(i, strict=True, correct=i < 12) for i in range(40)]  # 2 more right: p = 0.5
    sampled = [reply(i, strict=True, correct=i < 5) for i in range(40)]
    layouts = {"project": grpo, "seed": [reply(i, strict=i < 37) for i in range(40)]}  # 92.5%
    table = grpo_target_check(sft, grpo, sampled, sampled, layouts)
    assert table["met"].tolist() == [False, True, False, False]


def test_reward_table_shows_each_reward_per_case_with_a_dash_where_it_does_not_apply():
    from workings.core.rewards import score_replies, weighted_reward
    from workings.report.tables import reward_table

    replies = ["<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>", "<reasoning>2 + 2 = 4</reasoning><answer></answer>"]
    scores = score_replies(["correctness", "shown_work", "overlong"], replies, question=["What is 2 + 2?"] * 2,
                           gold=["four", "four"], completion_ids=[[0] * 10, [0] * 64], max_completion_length=64,
                           overlong_buffer=16)
    table = reward_table(["honest", "empty answer"], scores, weighted_reward(scores, [1.0, 0.5, 1.0]))
    assert table.loc["honest", "shown_work"] == "–"  # the gold is not a number
    assert table.loc["honest", "correctness"] == 0.0  # "four" is no answer a program can read as 4
    assert table.loc["empty answer", "overlong"] == -1.0 and table.loc["empty answer", "total"] == -1.0


def test_options_table_shows_an_enum_option_by_its_value():
    from trl import GRPOConfig

    from workings.report.tables import options_table

    args = GRPOConfig(output_dir="unused", lr_scheduler_type="constant", use_cpu=True, report_to="none")
    table = options_table(args, ["lr_scheduler_type", "beta"], "option")
    assert table["value"].tolist() == ["constant", str(args.beta)] and table.index.name == "option"


def test_selection_table_counts_candidates_per_layout_and_in_all():
    from workings.report.tables import selection_table

    report = {"by_layout": {"project": {"kept": 5, "never solved": 1, "always solved": 2},
                            "seed": {"kept": 3, "never solved": 4, "always solved": 0}}}
    table = selection_table(report)
    assert table.loc["all layouts"].tolist() == [15, 8, 5, 2]
    assert table.loc["seed", "candidates"] == 7


def test_grpo_curves_plot_every_logged_reward_and_say_when_there_is_no_kl():
    from workings.report.figures import grpo_curves

    state = {"log_history": [
        {"step": s, "rewards/correctness/mean": 0.1 * s, "rewards/strict_format/mean": 1.0, "frac_reward_zero_std": 0.5,
         "completions/mean_length": 20 + s, "completions/clipped_ratio": 0.0, "entropy": 0.2} for s in (1, 2, 3)]}
    fig = grpo_curves(state, ["correctness", "strict_format", "shown_work"], "run")
    reward_ax, length_ax, drift_ax, gone = fig.axes[:4]
    assert [line.get_label() for line in reward_ax.get_lines()] == ["correctness", "strict_format"]
    assert length_ax.get_ylabel() == "completion tokens (mean)" and not gone.get_visible()
    # a panel whose value never changed is left out, its value said in the title
    assert fig._suptitle.get_text() == ("run; constant: groups with equal rewards 0.5 at every step; "
                                        "entropy 0.2 at every step")


def test_grpo_curves_keep_the_panel_of_a_value_that_changed():
    from workings.report.figures import grpo_curves

    state = {"log_history": [{"step": s, "rewards/correctness/mean": 0.1 * s, "frac_reward_zero_std": 0.2 * s,
                              "completions/mean_length": 20 + s, "kl": 0.01 * s} for s in (1, 2, 3)]}
    fig = grpo_curves(state, ["correctness"], "run")
    assert [ax.get_ylabel() for ax in fig.axes[:4]] == ["reward (mean of the step)", "groups with equal rewards",
                                                         "completion tokens (mean)", "kl"]
    assert fig.axes[1].get_ylim() == (0, 1) and fig._suptitle.get_text() == "run"


@pytest.mark.parametrize("module", ["workings.report.tables", "workings.train.grpo"])
def test_the_docstring_examples_hold(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_pipelines_are_each_paired_with_the_reference_on_every_benchmark_and_layout():
    from workings.evaluation.compare import PipelineComparison
    from workings.report.tables import layout_table, pipelines_paired_table

    # 10 questions: SFT right on the first 4, SFT + DPO on the first 9; in the seed layout DPO on the first 2 only.
    sft = [reply(i, strict=True, correct=i < 4) for i in range(10)]
    dpo = [reply(i, strict=True, correct=i < 9) for i in range(10)]
    seed = {"SFT": [reply(i, strict=False, correct=False) for i in range(10)],
            "SFT + DPO": [reply(i, strict=i < 5, correct=i < 2) for i in range(10)]}
    comparison = PipelineComparison(largest="sums", greedy={"SFT": {"sums": sft}, "SFT + DPO": {"sums": dpo}},
                                    layouts={"project": {"SFT": sft, "SFT + DPO": dpo}, "seed": seed})
    table = pipelines_paired_table(comparison.paired(against="SFT"))
    assert list(table.index) == [("SFT + DPO", "sums"), ("SFT + DPO", "sums (seed)")]
    assert table.loc[("SFT + DPO", "sums"), "only this right"] == 5 and table.loc[("SFT + DPO", "sums"), "only SFT right"] == 0
    assert table.loc[("SFT + DPO", "sums"), "McNemar p"] == "0.062"  # 5 discordant, all one way: 2 x 0.5^5
    assert table.loc[("SFT + DPO", "sums (seed)"), "accuracy, SFT to this (%)"] == "0.0 to 20.0"
    layouts = layout_table(comparison.layouts)
    assert layouts.loc[("seed", "SFT + DPO"), "strict format % (95% CI)"].startswith("50.0 (")
    assert layouts.loc[("project", "SFT"), "accuracy % (95% CI)"].startswith("40.0 (")


def test_length_distributions_end_at_the_99th_percentile_and_say_how_many_lie_beyond():
    from workings.report.figures import length_distributions

    replies = [reply(i, correct=True) for i in range(200)]
    for i, s in enumerate(replies):
        s.new_tokens = 250 if i < 2 else 20 + i % 20  # two replies ran to the limit
    fig = length_distributions({"tuned": {"b": replies}}, "lengths")
    reply_ax = fig.axes[0]
    assert reply_ax.get_xlim()[1] < 60
    assert reply_ax.get_xlabel() == f"reply length (new tokens)\n2 longer beyond {reply_ax.get_xlim()[1]:.0f}, not shown"
