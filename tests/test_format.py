from hypothesis import given
from hypothesis import strategies as st

from workings.core.format import contains_tag, parse, render


def test_render_writes_reasoning_then_answer():
    assert render("2 + 2 = 4", "4") == "<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>"


def test_render_strips_surrounding_whitespace():
    assert render("\n 2 + 2 = 4 \n", " 4\n") == "<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>"


def test_render_refuses_text_containing_a_tag():
    import pytest

    with pytest.raises(ValueError, match="reasoning text contains a format tag"):
        render("I will write <answer> now", "4")


def test_strict_output_parses_strictly():
    p = parse("<reasoning>2 + 2 = 4</reasoning>\n<answer>4</answer>")
    assert (p.reasoning, p.answer, p.strict, p.issues) == ("2 + 2 = 4", "4", True, ())


def test_whitespace_around_and_between_blocks_is_still_strict():
    p = parse("\n  <reasoning>a</reasoning>\n\n<answer>4</answer>\n")
    assert p.strict and p.answer == "4"


def test_empty_answer_is_not_strict():
    p = parse("<reasoning>a</reasoning><answer>  </answer>")
    assert (p.strict, p.answer, p.issues) == (False, None, ("empty answer",))


def test_empty_reasoning_is_not_strict():
    p = parse("<reasoning></reasoning><answer>4</answer>")
    assert (p.strict, p.reasoning, p.answer, p.issues) == (False, None, "4", ("empty reasoning",))


def test_missing_closing_answer_tag_at_end_recovers_answer():
    p = parse("<reasoning>a</reasoning>\n<answer>42\n")
    assert (p.strict, p.answer, p.issues) == (False, "42", ("missing </answer> at end of text",))


def test_text_after_answer_recovers_answer():
    p = parse("<reasoning>a</reasoning><answer>42</answer>\nHope this helps!")
    assert (p.strict, p.reasoning, p.answer, p.issues) == (False, "a", "42", ("text after the answer block",))


def test_text_before_reasoning_recovers_answer():
    p = parse("Sure. <reasoning>a</reasoning><answer>42</answer>")
    assert (p.strict, p.answer, p.issues) == (False, "42", ("text before the reasoning block",))


def test_whitespace_and_case_inside_tags_is_lenient():
    p = parse("< Reasoning >a</reasoning>\n<answer >42</ANSWER>")
    assert (p.strict, p.reasoning, p.answer, p.issues) == (False, "a", "42", ("malformed tag",))


def test_newline_inside_tag_is_lenient():
    p = parse("<reasoning\n>a</reasoning><answer>42</answer>")
    assert (p.strict, p.answer) == (False, "42")


def test_repeated_answer_blocks_last_one_wins():
    p = parse("<reasoning>a</reasoning><answer>41</answer><answer>42</answer>")
    assert p.answer == "42" and not p.strict
    assert "2 answer blocks; the last is used" in p.issues


def test_repeated_reasoning_uses_last_block_before_answer():
    p = parse("<reasoning>first</reasoning><reasoning>second</reasoning><answer>42</answer>")
    assert (p.reasoning, p.answer, p.strict) == ("second", "42", False)
    assert "2 reasoning blocks; the last before the answer is used" in p.issues


def test_no_tags_gives_no_answer():
    p = parse("The answer is 42.")
    assert (p.reasoning, p.answer, p.strict) == (None, None, False)
    assert p.issues == ("no answer block", "no reasoning block")


def test_answer_without_reasoning_is_lenient():
    p = parse("<answer>42</answer>")
    assert (p.reasoning, p.answer, p.strict, p.issues) == (None, "42", False, ("no reasoning block",))


def test_answer_before_reasoning_is_not_strict():
    p = parse("<answer>42</answer><reasoning>a</reasoning>")
    assert p.answer == "42" and not p.strict


def test_contains_tag_sees_lenient_spellings():
    assert contains_tag("x </ Answer > y") and not contains_tag("an answer, reasoning")


tag_free = st.text().filter(lambda t: not contains_tag(t))


@given(tag_free.filter(lambda t: t.strip()), tag_free.filter(lambda t: t.strip()))
def test_render_then_parse_round_trips(reasoning, answer):
    p = parse(render(reasoning, answer))
    assert (p.reasoning, p.answer, p.strict) == (reasoning.strip(), answer.strip(), True)


@given(tag_free.filter(lambda t: t.strip()), tag_free.filter(lambda t: t.strip()))
def test_parse_then_render_is_the_identity_on_rendered_text(reasoning, answer):
    text = render(reasoning, answer)
    p = parse(text)
    assert render(p.reasoning, p.answer) == text
