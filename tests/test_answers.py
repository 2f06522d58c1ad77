import pytest

from workings.core.answers import equivalent, gsm8k_gold, last_boxed, math_gold, NoGoldAnswer, parse_number


@pytest.mark.parametrize("predicted", ["1080", "1,080", "1080.00", "$1,080", "\\$1,080", "1080.", " 1080 "])
def test_numbers_compare_by_value(predicted):
    assert equivalent(predicted, "1080")


def test_sign_is_kept():
    assert not equivalent("-5", "5")
    assert equivalent("-5", "-5.0")
    assert equivalent("\u22125", "-5")  # unicode minus


def test_trailing_percent_is_dropped_but_never_rescaled():
    assert equivalent("25%", "25")
    assert equivalent("25\\%", "25")
    assert not equivalent("0.25", "25%")


def test_trailing_unit_words_are_dropped():
    assert equivalent("18 dollars", "18")
    assert equivalent("5 hours", "5")
    assert equivalent("$18.00 per week", "18")


def test_two_numbers_are_not_one_answer():
    assert parse_number("3 apples and 4 pears") is None
    assert not equivalent("3 apples and 4 pears", "3")


def test_variable_assignment_and_answer_prefix():
    assert equivalent("x = 5", "5")
    assert equivalent("The answer is: 72", "72")


def test_fractions_compare_as_values():
    assert equivalent("3/4", "0.75")
    assert equivalent("\\frac{3}{4}", "0.75")
    assert equivalent("\\dfrac{1}{2}", "\\frac12")


def test_latex_goes_to_math_verify():
    assert equivalent("2\\sqrt{2}", "\\sqrt{8}")
    assert equivalent("\\{1, 2\\}", "\\{2, 1\\}")
    assert not equivalent("\\sqrt{3}", "\\sqrt{8}")
    assert equivalent("14\\pi", "14\\pi")


def test_missing_or_empty_answers_are_never_equivalent():
    assert not equivalent(None, "4")
    assert not equivalent("4", None)
    assert not equivalent("", "")


def test_free_text_compares_after_normalising_case_and_spacing():
    assert equivalent("Hyperkalaemia.", "hyperkalaemia")
    assert not equivalent("hypokalaemia", "hyperkalaemia")


def test_equivalent_is_safe_in_threads():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: equivalent(p, "\\frac{1}{2}"), ["0.5", "1/2", "\\frac{2}{4}", "0.6"] * 3))
    assert results == [True, True, True, False] * 3


def test_gsm8k_gold_takes_text_after_last_hashes_without_commas():
    assert gsm8k_gold("She has 3 * 4 = <<3*4=12>>12.\n#### 1,200") == "1200"
    assert gsm8k_gold("a\n#### -7") == "-7"


def test_gsm8k_gold_without_hashes_raises():
    with pytest.raises(NoGoldAnswer, match="no '#### <answer>' line"):
        gsm8k_gold("She has 12 apples.")


def test_last_boxed_handles_nested_braces_and_takes_the_last():
    assert last_boxed("first \\boxed{1}, then \\boxed{\\frac{1}{\\sqrt{2}}}.") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed{\\text{(B) }\\{x\\}}") == "\\text{(B) }\\{x\\}"


def test_last_boxed_reads_fbox_and_bare_boxed():
    assert last_boxed("so \\fbox{7}") == "7"
    assert last_boxed("so $\\boxed 5$.") == "5"


def test_last_boxed_unbalanced_or_missing_is_none():
    assert last_boxed("\\boxed{12") is None
    assert last_boxed("no answer here") is None


def test_math_gold_without_boxed_raises():
    with pytest.raises(NoGoldAnswer, match="no \\\\boxed"):
        math_gold("The answer is 3.")
