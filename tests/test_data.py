import json

import pytest

from workings.data.example import DataUnavailable, Example, example_id, Unusable
from workings.data.sources import convert, load_rows, multiple_choice_options
from workings.files import read_jsonl

R1 = "<|begin_of_thought|>\n\n{t}\n\n<|end_of_thought|>\n\n<|begin_of_solution|>\n\n{s}\n\n<|end_of_solution|>"


def conversation(user, assistant):
    return {"system": "Think first.", "conversations": [{"from": "user", "value": user}, {"from": "assistant", "value": assistant}]}


# --- GSM8K ---------------------------------------------------------------------------------------


def test_gsm8k_strips_calculator_notes_and_takes_gold_after_hashes():
    row = {"question": "Ann has 3 bags of 4 pears. How many pears?", "answer": "She has 3 * 4 = <<3*4=12>>12 pears.\n#### 12"}
    ex = convert("gsm8k", row)
    assert (ex.question, ex.reasoning, ex.answer, ex.source, ex.graded) == (
        "Ann has 3 bags of 4 pears. How many pears?", "She has 3 * 4 = 12 pears.", "12", "gsm8k", True)


def test_gsm8k_gold_commas_removed():
    ex = convert("gsm8k", {"question": "Q?", "answer": "1000 + 250 = <<1000+250=1250>>1250\n#### 1,250"})
    assert ex.answer == "1250"


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"question": "Q?", "answer": "No final line."}, "no_final_answer"),
        ({"question": "Q?"}, "missing_field:answer"),
        ({"question": "  ", "answer": "x\n#### 1"}, "empty_field:question"),
        ({"question": 7, "answer": "x\n#### 1"}, "bad_field:question"),
        ({"question": "Q?", "answer": "#### 5"}, "empty_reasoning"),
    ],
)
def test_gsm8k_malformed_rows_raise_with_reason(row, reason):
    with pytest.raises(Unusable) as err:
        convert("gsm8k", row)
    assert err.value.reason == reason


def test_row_containing_format_tags_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("gsm8k", {"question": "Write <answer> tags?", "answer": "ok\n#### 1"})
    assert err.value.reason == "contains_format_tag"


# --- OpenThoughts -------------------------------------------------------------------------------


def metadata_row(**overrides):
    row = {
        "problem": "Solve $2x = 10$.",
        "deepseek_reasoning": "Divide both sides by 2: x = 5.",
        "deepseek_solution": "So $x = \\boxed{5}$.",
        "ground_truth_solution": "$x=\\boxed{5}$",
        "domain": "math",
        "source": "fixture",
    }
    return {**row, **overrides}


def test_openthoughts_metadata_takes_reasoning_and_last_boxed():
    ex = convert("openthoughts", metadata_row())
    assert (ex.question, ex.reasoning, ex.answer) == ("Solve $2x = 10$.", "Divide both sides by 2: x = 5.", "5")
    assert ex.meta == {"domain": "math"}


def test_openthoughts_keeps_math_domain_by_default():
    with pytest.raises(Unusable) as err:
        convert("openthoughts", metadata_row(domain="code"))
    assert err.value.reason == "domain_not_kept:code"
    assert convert("openthoughts", metadata_row(domain="science"), keep_domains=("math", "science")).answer == "5"


def test_openthoughts_flags_answers_disagreeing_with_ground_truth():
    ex = convert("openthoughts", metadata_row(ground_truth_solution="$x = \\boxed{6}$"))
    assert ex.meta["disagrees_with_ground_truth"] is True and ex.meta["ground_truth_answer"] == "6"


def test_openthoughts_equivalent_ground_truth_is_not_flagged():
    ex = convert("openthoughts", metadata_row(deepseek_solution="$\\boxed{\\frac{1}{2}}$", ground_truth_solution="$\\boxed{0.5}$"))
    assert "disagrees_with_ground_truth" not in ex.meta


def test_openthoughts_without_boxed_answer_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("openthoughts", metadata_row(deepseek_solution="x is five"))
    assert err.value.reason == "no_boxed_answer"


def test_openthoughts_default_config_reads_conversation_markers():
    row = conversation("Return your final response within \\boxed{}. What is 6 * 7?", R1.format(t="6 * 7 = 42.", s="$\\boxed{42}$"))
    ex = convert("openthoughts", row)
    assert (ex.reasoning, ex.answer) == ("6 * 7 = 42.", "42")


def test_r1_trace_without_markers_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("openthoughts", conversation("Q?", "Just an answer: 4"))
    assert err.value.reason == "no_thought_or_solution_markers"


# --- Bespoke-Stratos ------------------------------------------------------------------------------


def test_bespoke_strips_boxed_instruction_and_reads_markers_with_any_whitespace():
    row = conversation(
        "Return your final response within \\boxed{}. What is 9 squared?",
        "<|begin_of_thought|>9 * 9 = 81.<|end_of_thought|>\n<|begin_of_solution|>   $\\boxed{81}$\n<|end_of_solution|>",
    )
    ex = convert("bespoke_stratos", row)
    assert (ex.question, ex.reasoning, ex.answer) == ("What is 9 squared?", "9 * 9 = 81.", "81")


def test_bespoke_multiple_choice_letter_takes_option_text():
    question = "Return your final response within \\boxed{}. Pick the even one. $\\textbf{(A) }3\\qquad\\textbf{(B) }4\\qquad\\textbf{(C) }5$"
    ex = convert("bespoke_stratos", conversation(question, R1.format(t="4 is even.", s="$\\boxed{B}$")))
    assert (ex.answer, ex.meta) == ("(B) 4", {"choice": "B"})


def test_bespoke_multiple_choice_letter_without_options_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("bespoke_stratos", conversation("Which is largest?", R1.format(t="D.", s="$\\boxed{D}$")))
    assert err.value.reason == "choice_without_options"


def test_bespoke_multi_turn_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("bespoke_stratos", {"system": "s", "conversations": [{"from": "user", "value": "hi"}]})
    assert err.value.reason == "not_single_turn"


def test_multiple_choice_options_plain_and_amc_styles():
    assert multiple_choice_options("Pick: (A) 1 (B) 2 (C) 3") == {"A": "1", "B": "2", "C": "3"}
    assert multiple_choice_options("$\\textbf{(A)}\\ 8 \\qquad \\textbf{(B)}\\ 10$") == {"A": "8", "B": "10"}
    assert multiple_choice_options("Options (B) 2 (C) 3") == {}  # must start at A


# --- medical-o1 and MetaMathQA --------------------------------------------------------------------


def test_medical_o1_is_free_text_and_not_graded():
    row = {"Question": "Which vitamin prevents scurvy?", "Complex_CoT": "Scurvy is collagen failure; collagen needs vitamin C.", "Response": "Vitamin C."}
    ex = convert("medical_o1", row)
    assert (ex.question, ex.reasoning, ex.answer, ex.graded) == (
        "Which vitamin prevents scurvy?", "Scurvy is collagen failure; collagen needs vitamin C.", "Vitamin C.", False)


def test_medical_o1_missing_response_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("medical_o1", {"Question": "Q?", "Complex_CoT": "think"})
    assert err.value.reason == "missing_field:Response" and "'Response'" in err.value.detail


def test_metamath_gsm_row_drops_hashes_line_and_calculator_notes():
    row = {"type": "GSM_AnsAug", "query": "Q?", "original_question": "Q?",
           "response": "He has 2 + 3 = <<2+3=5>>5.\n#### 5\nThe answer is: 5"}
    ex = convert("metamath", row)
    assert (ex.reasoning, ex.answer, ex.meta) == ("He has 2 + 3 = 5.", "5", {"type": "GSM_AnsAug"})


def test_metamath_gsm_answer_commas_removed():
    row = {"type": "GSM_Rephrased", "query": "Q?", "original_question": "Q?", "response": "So $10,800.\nThe answer is: 10,800"}
    assert convert("metamath", row).answer == "10800"


def test_metamath_math_row_keeps_latex_answer():
    row = {"type": "MATH_AnsAug", "query": "Distance?", "original_question": "Distance?",
           "response": "It is $\\boxed{\\sqrt{5}}$.\nThe answer is: \\sqrt{5}"}
    assert convert("metamath", row).answer == "\\sqrt{5}"


def test_metamath_without_answer_marker_is_unusable():
    row = {"type": "MATH_AnsAug", "query": "Q?", "original_question": "Q?", "response": "x = 1/3"}
    with pytest.raises(Unusable) as err:
        convert("metamath", row)
    assert err.value.reason == "no_final_answer"


# --- dispatch, ids and loading -------------------------------------------------------------------


def test_unknown_source_is_a_key_error():
    with pytest.raises(KeyError, match="unknown source 'gsm9k'"):
        convert("gsm9k", {})


def test_non_mapping_row_is_unusable():
    with pytest.raises(Unusable) as err:
        convert("gsm8k", ["question", "answer"])
    assert err.value.reason == "not_a_mapping"


def test_ids_are_stable_and_depend_on_source_and_text():
    assert example_id("gsm8k", "Q?", "r") == example_id("gsm8k", "Q?", "r")
    assert example_id("gsm8k", "Q?", "r") != example_id("metamath", "Q?", "r")
    assert example_id("gsm8k", "Q?", "r").startswith("gsm8k-")


def test_a_local_source_names_file_and_line_of_bad_json(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "a"}\n\n{"question": \n')
    with pytest.raises(DataUnavailable, match=r"rows\.jsonl, line 3: not valid JSON"):
        load_rows(path=path)


def test_a_local_source_names_line_of_non_object(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"question": "a"}\n[1, 2]\n')
    with pytest.raises(DataUnavailable, match=r"line 2: a JSON object was expected, got list"):
        load_rows(path=path)


def test_read_jsonl_skips_blank_lines_and_keeps_order(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"n": 1}\n\n{"n": 2}\n')
    assert read_jsonl(path) == [{"n": 1}, {"n": 2}]


def test_load_rows_reads_local_jsonl_and_parquet(tmp_path):
    import datasets

    rows = [{"question": "a", "answer": "b\n#### 1"}]
    (tmp_path / "r.jsonl").write_text(json.dumps(rows[0]) + "\n")
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "r.parquet"))
    assert load_rows(path=tmp_path / "r.jsonl") == rows
    assert load_rows(path=tmp_path / "r.parquet") == rows


def test_load_rows_unknown_file_type(tmp_path):
    (tmp_path / "r.csv").write_text("a,b\n")
    with pytest.raises(DataUnavailable, match="unsupported file type"):
        load_rows(path=tmp_path / "r.csv")


def test_load_rows_from_unreachable_hub_says_so():
    # conftest puts the Hub offline, as on a machine without network.
    with pytest.raises(DataUnavailable, match=r"could not load workings-test/no-such-dataset .*set 'path'"):
        load_rows(hub_id="workings-test/no-such-dataset", split="train", revision="0" * 40)


def test_synthetic_rows_round_trip_through_convert():
    ex = Example(id="synthetic-1", source="synthetic", question="Q?", reasoning="r", answer="1", meta={"steps": 1})
    assert convert("synthetic", ex.to_dict()) == ex


# --- reasoning-gym ------------------------------------------------------------------------------

def test_reasoning_gym_rows_are_the_same_for_a_seed_and_carry_their_dataset():
    from workings.data.sources import reasoning_gym_rows

    rows = reasoning_gym_rows("chain_sum", 3, 7, {"min_terms": 3, "max_terms": 3})
    assert rows == reasoning_gym_rows("chain_sum", 3, 7, {"min_terms": 3, "max_terms": 3})
    assert [r["dataset"] for r in rows] == ["chain_sum"] * 3 and all(isinstance(r["answer"], str) for r in rows)


def test_a_chain_sum_is_worked_left_to_right_one_line_a_step():
    from workings.data.sources import convert_reasoning_gym

    row = {"question": "State the final answer to the following arithmetic problem: 12 - 5 + 30 =", "answer": "37",
           "dataset": "chain_sum", "metadata": {"expression": "12 - 5 + 30"}}
    example = convert_reasoning_gym(row)
    assert (example.source, example.reasoning, example.answer) == ("chain_sum", "12 - 5 = 7\n7 + 30 = 37", "37")


def test_a_worked_solution_is_the_reasoning_up_to_its_final_answer_line():
    from workings.data.sources import convert_reasoning_gym

    row = {"question": "Ann has 3 apples and buys 4. How many?", "answer": "7", "dataset": "gsm_symbolic",
           "metadata": {"answer_cot": "Ann has 3 apples.\nShe buys 4: 3 + 4 = 7.\n#### 7"}}
    assert convert_reasoning_gym(row).reasoning == "Ann has 3 apples.\nShe buys 4: 3 + 4 = 7."


def test_a_product_is_one_line_giving_its_value_and_a_task_without_either_is_unusable():
    from workings.data.example import Unusable
    from workings.data.sources import convert_reasoning_gym

    row = {"question": "Calculate 3 * 4 - 2.", "answer": "10", "dataset": "basic_arithmetic",
           "metadata": {"expression": "3 * 4 - 2"}}
    assert convert_reasoning_gym(row).reasoning == "3 * 4 - 2 = 10"
    with pytest.raises(Unusable, match="no_worked_solution"):
        convert_reasoning_gym({**row, "metadata": {}})


@pytest.mark.parametrize("spec, message", [
    ({"dataset": "chain_summ", "size": 4, "seed": 0}, r"reasoning_gym\.dataset: 'chain_summ' is not a reasoning-gym dataset"),
    ({"dataset": "chain_sum", "size": 0, "seed": 0}, r"reasoning_gym\.size: must be positive, got 0"),
    ({"dataset": "chain_sum", "size": 4, "seed": 0, "config": {"max_termz": 3}}, r"reasoning_gym\.config: .*max_termz"),
    ({"dataset": "chain_sum", "size": 4, "seed": 0, "config": {"seed": 3}}, r"reasoning_gym\.config\.seed: is set by"),
])
def test_a_reasoning_gym_source_is_checked_by_the_library_naming_the_key(tiny_profile, spec, message):
    from workings.config.schema import ProfileError

    source = {"name": "sums", "converter": "reasoning_gym", "reasoning_gym": spec}
    with pytest.raises(ProfileError, match=r"data\.sources\[0\]\." + message):
        tiny_profile({"data": {"sources": [source], "eval_sets": []}})
