import json
import math

import pytest

from workings.evaluation.benchmarks import Benchmark, heldout_benchmarks, load_benchmark
from workings.evaluation.runs import run_benchmarks
from workings.evaluation.scoring import breakdown, compare, load_scored, save_scored, score, Scored, summarise
from workings.core.steps import computations
from workings.evaluation.steps import error_counts, error_kind
from workings.evaluation.generate import Generation
from workings.config.schema import EvalSetSpec, SyntheticSpec
from workings.evaluation.stats import wilson_interval

STRICT_RIGHT = "<reasoning>3 + 4 = 7</reasoning>\n<answer>7</answer>"
STRICT_WRONG = "<reasoning>3 + 4 = 8</reasoning>\n<answer>8</answer>"
PROSE = "3 + 4 = 7\nThe answer is 7."


def reply(text, new_tokens=10, truncated=False):
    return Generation(prompt="p", text=text, new_tokens=new_tokens, truncated=truncated)


def made(text, gold="7", id="0", meta=None, **kwargs):
    return score("Ava has 3 apples and buys 4. How many?", gold, reply(text, **kwargs), id=id, meta=meta)


# --- scoring one reply --------------------------------------------------------------------

def test_a_strict_right_reply_is_correct_and_its_reasoning_length_is_counted(tokenizer):
    s = score("q", "7", reply(STRICT_RIGHT), tokenizer, id="a")
    assert (s.strict, s.lenient, s.correct, s.answer, s.reasoning) == (True, True, True, "7", "3 + 4 = 7")
    assert s.reasoning_tokens == len(tokenizer("3 + 4 = 7", add_special_tokens=False)["input_ids"]) > 0


def test_a_prose_reply_has_no_answer_but_its_last_number_is_read():
    s = made(PROSE)
    assert (s.strict, s.lenient, s.correct, s.last_number_correct, s.reasoning_tokens) == (False, False, False, True, 0)


def test_a_reply_to_a_free_text_question_is_not_graded():
    s = made(STRICT_RIGHT, gold=None)
    assert (s.strict, s.correct, s.last_number_correct, s.graded) == (True, None, None, False)


# --- rates ----------------------------------------------------------------------------------

def test_summary_rates_and_intervals_on_four_hand_scored_replies():
    replies = [made(STRICT_RIGHT), made(STRICT_RIGHT), made(STRICT_WRONG), made(PROSE, truncated=True, new_tokens=30)]
    s = summarise(replies)
    assert (s["n"], s["graded"]) == (4, 4)
    assert (s["strict_format"], s["accuracy"], s["accuracy_when_strict"]) == (0.75, 0.5, 2 / 3)
    assert (s["last_number_accuracy"], s["truncated"], s["mean_new_tokens"]) == (0.75, 0.25, 15.0)
    assert (s["accuracy_lo"], s["accuracy_hi"]) == wilson_interval(2, 4)
    assert (s["accuracy_when_strict_lo"], s["accuracy_when_strict_hi"]) == wilson_interval(2, 3)


def test_reasoning_length_percentiles_cover_replies_with_a_reasoning_block_only():
    replies = [made(STRICT_RIGHT), made(STRICT_RIGHT), made(PROSE)]
    for s, n in zip(replies, (10, 20, 0)):
        s.reasoning_tokens = n
    summary = summarise(replies)
    assert (summary["mean_reasoning_tokens"], summary["reasoning_tokens_p50"], summary["reasoning_tokens_p90"]) == (15, 15, 19)


def test_ungraded_replies_have_format_rates_but_no_accuracy():
    s = summarise([made(STRICT_RIGHT, gold=None), made(PROSE, gold=None)])
    assert (s["graded"], s["strict_format"]) == (0, 0.5)
    assert math.isnan(s["accuracy"]) and math.isnan(s["accuracy_lo"])


def test_summarising_nothing_is_an_error():
    with pytest.raises(ValueError, match="no generations"):
        summarise([])


def test_breakdown_summarises_each_level_separately():
    replies = [made(STRICT_RIGHT, meta={"level": 1}), made(STRICT_WRONG, meta={"level": 1}),
               made(STRICT_RIGHT, meta={"level": 2})]
    groups = breakdown(replies, "level")
    assert list(groups) == ["1", "2"]
    assert (groups["1"]["n"], groups["1"]["accuracy"], groups["2"]["accuracy"]) == (2, 0.5, 1.0)


def test_paired_comparison_matches_replies_by_question_id():
    base = [made(PROSE, id="a"), made(PROSE, id="b"), made(STRICT_RIGHT, id="c")]
    tuned = [made(STRICT_RIGHT, id="c"), made(STRICT_RIGHT, id="b"), made(STRICT_WRONG, id="a")]
    c = compare(base, tuned)
    assert (c.both, c.only_a, c.only_b, c.neither) == (1, 0, 1, 1)
    assert compare(base, tuned, "strict").only_b == 2


def test_paired_comparison_refuses_different_questions():
    with pytest.raises(ValueError, match="same questions"):
        compare([made(PROSE, id="a")], [made(PROSE, id="b")])


def test_scored_records_round_trip_through_jsonl(tmp_path):
    replies = [made(STRICT_RIGHT, id="a", meta={"subject": "Algebra"}), made(PROSE, gold=None, id="b")]
    assert load_scored(save_scored(tmp_path / "s.jsonl", replies)) == replies


# --- benchmarks as data -------------------------------------------------------------------

def test_gsm8k_gold_is_the_number_after_the_four_hashes(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "2 * 3 = <<2*3=6>>6 sticks\n#### 1,006"}) + "\n")
    bench = load_benchmark(EvalSetSpec(name="gsm8k_test", path=str(path), gold="gsm8k"))
    assert bench.rows == [{"id": "0", "question": "Q?", "gold": "1006", "meta": {}}]


def test_gsm8k_row_without_hashes_is_named(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "6"}) + "\n" + json.dumps({"question": "R?", "answer": "so 6"}) + "\n")
    with pytest.raises(ValueError, match=r"eval set 'g': row 0, field 'answer'"):
        load_benchmark(EvalSetSpec(name="g", path=str(path), gold="gsm8k"))


def test_math500_rows_keep_subject_and_level_for_the_breakdown():
    from workings.config.loading import load_profile

    (spec,) = [s for s in load_profile("demo").data.eval_sets if s.name == "math500"]
    bench = load_benchmark(spec)
    assert bench.group_by == ["subject", "level"]
    assert bench.rows[0]["id"] == "test/prealgebra/fixture-1.json"
    assert bench.rows[0]["meta"] == {"subject": "Prealgebra", "level": 1} and bench.rows[0]["gold"] == "12"


def test_any_local_jsonl_with_question_and_answer_is_a_benchmark(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "What is 2 + 2?", "answer": 4}\n{"question": "And 3 + 3?", "answer": "6"}\n')
    bench = load_benchmark(EvalSetSpec(name="mine", path=str(path)))
    assert [(r["question"], r["gold"]) for r in bench.rows] == [("What is 2 + 2?", "4"), ("And 3 + 3?", "6")]


def test_a_row_without_its_question_field_is_named(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "ok?", "answer": "1"}\n{"prompt": "where?", "answer": "2"}\n')
    with pytest.raises(ValueError, match=r"eval set 'mine': row 1 has no text in field 'question'"):
        load_benchmark(EvalSetSpec(name="mine", path=str(path)))


def test_synthetic_test_set_is_a_benchmark_of_integer_answers():
    bench = load_benchmark(EvalSetSpec(name="synthetic_test", synthetic=SyntheticSpec(n=5, seed=2)))
    assert len(bench.rows) == 5 and all(r["gold"].lstrip("-").isdigit() for r in bench.rows)


def test_heldout_split_gives_one_benchmark_per_source_and_marks_free_text_ungraded():
    heldout = [
        {"id": "s1", "source": "synthetic", "question": "a?", "answer": "1", "graded": True},
        {"id": "m1", "source": "medical_o1_en", "question": "b?", "answer": "Rest and fluids.", "graded": False},
        {"id": "s2", "source": "synthetic", "question": "c?", "answer": "2", "graded": True},
    ]
    synthetic, medical = heldout_benchmarks(heldout)
    assert (synthetic.name, synthetic.graded, [r["gold"] for r in synthetic.rows]) == ("heldout:synthetic", True, ["1", "2"])
    assert (medical.name, medical.graded, medical.rows[0]["gold"]) == ("heldout:medical_o1_en", False, None)
    assert [len(b.rows) for b in heldout_benchmarks(heldout, per_source=1)] == [1, 1]


# --- running benchmarks ----------------------------------------------------------------------

def test_a_finished_benchmark_is_read_back_without_loading_the_model(tiny_profile, tmp_path, monkeypatch):
    import workings.evaluation.runs

    profile = tiny_profile({"quantization": None, "evaluation": {"max_new_tokens": 4, "batch_size": 2}})
    bench = Benchmark("tiny", [{"id": str(i), "question": q, "gold": "1", "meta": {}} for i, q in enumerate(["a?", "b?", "c?"])])
    first = run_benchmarks(profile, [bench], out_dir=tmp_path, progress=False)["tiny"]
    assert [s.id for s in first] == ["0", "1", "2"]

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although every question was answered")

    monkeypatch.setattr(workings.evaluation.runs, "load_generator", refuse)
    assert run_benchmarks(profile, [bench], out_dir=tmp_path, progress=False)["tiny"] == first
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in folder.iterdir()) == ["settings.json", "tiny.jsonl", "tiny.scored.jsonl"]


# --- why a wrong reply is wrong -----------------------------------------------------------------

QUESTION = "Ava has 12 stickers. She finds 3 more. She gives away 5. How many stickers does Ava have now?"


def judged(output, gold="10"):
    return score(QUESTION, gold, reply(output))


def test_computations_are_read_in_order_with_their_operators():
    from fractions import Fraction

    from workings.core.steps import Computation

    assert computations("12 + 3 = 15\nThen 4 * $5 = $20, and 7 / 2 = 3.5") == [
        Computation((Fraction(12), Fraction(3)), ("+",), Fraction(15)),
        Computation((Fraction(4), Fraction(5)), ("*",), Fraction(20)),
        Computation((Fraction(7), Fraction(2)), ("/",), Fraction(7, 2)),
    ]


def test_a_chained_computation_is_one_line_with_every_operand():
    from fractions import Fraction

    (line,) = computations("Altogether $12 + $8 + $5 = $25.")
    assert line.operands == (Fraction(12), Fraction(8), Fraction(5)) and line.value == line.result == 25


def test_a_computation_is_worth_its_left_side_with_products_first_and_signed_operands():
    assert [line.value for line in computations("2 + 3 * 4 = 14, 5 - -2 = 7, 10 / 0 = 1")] == [14, 7, None]


def test_a_right_reply_has_no_error_kind():
    assert error_kind(judged("<reasoning>12 + 3 = 15\n15 - 5 = 10</reasoning>\n<answer>10</answer>")) is None


def test_a_base_reply_can_be_judged_by_its_last_number():
    assert error_kind(judged("The answer is 10."), metric="last_number_correct") is None
    assert error_kind(judged("The answer is 10.")) == "no computation"


def test_a_reply_without_any_computation():
    assert error_kind(judged("The answer is 9.")) == "no computation"


def test_a_wrong_result_in_any_line_is_a_wrong_sum():
    assert error_kind(judged("<reasoning>12 + 3 = 16\n16 - 5 = 11</reasoning>\n<answer>11</answer>")) == "wrong sum"


def test_an_operand_from_neither_the_question_nor_an_earlier_line():
    assert error_kind(judged("<reasoning>12 + 3 = 15\n16 - 5 = 11</reasoning>\n<answer>11</answer>")) == "number from nowhere"


def test_an_answer_that_does_not_follow_from_the_last_line():
    assert error_kind(judged("<reasoning>12 + 3 = 15\n15 - 5 = 10</reasoning>\n<answer>9</answer>", gold="10")) == (
        "answer is not the last result")


def test_the_worked_steps_of_every_synthetic_family_are_right_and_grounded():
    from workings.data.synthetic import generate_synthetic

    # The gold steps with another final answer: only the answer can be blamed, so every line
    # (chains, $ amounts, "half", "doubles") was read, computed and found in the question.
    for ex in generate_synthetic(300, seed=29):
        wrong = str(int(ex.answer) + 1)
        reply_text = f"<reasoning>{ex.reasoning}</reasoning>\n<answer>{wrong}</answer>"
        assert error_kind(score(ex.question, ex.answer, reply(reply_text))) == "answer is not the last result", ex.reasoning


def test_right_and_grounded_lines_that_solve_the_wrong_problem_are_a_wrong_plan():
    assert error_kind(judged("<reasoning>12 + 3 = 15\n15 + 5 = 20</reasoning>\n<answer>20</answer>")) == "wrong plan"


def test_error_counts_cover_every_graded_reply_and_skip_ungraded_ones():
    replies = [judged("<reasoning>12 + 3 = 15\n15 - 5 = 10</reasoning>\n<answer>10</answer>"),
               judged("The answer is 9."), judged("12 + 3 = 16"),
               score(QUESTION, None, reply("no gold"))]
    assert error_counts(replies) == {"right": 1, "no computation": 1, "wrong sum": 1, "number from nowhere": 0,
                                     "answer is not the last result": 0, "wrong plan": 0}


def test_replies_to_another_prompt_layout_are_kept_apart_and_the_projects_keep_their_folder(tiny_profile):
    from workings.evaluation.generate import SamplingConfig
    from workings.evaluation.runs import replies_folder

    profile, settings, sampling = tiny_profile(), {"model": "m"}, SamplingConfig()
    project = replies_folder(profile, settings, sampling, "/eval")
    assert replies_folder(profile, settings, sampling, "/eval", "project") == project
    assert replies_folder(profile, settings, sampling, "/eval", "seed") != project
    assert project.name == __import__("workings.files", fromlist=["json_digest"]).json_digest(
        {"model": "m", "sampling": __import__("dataclasses").asdict(sampling)}, 10)
