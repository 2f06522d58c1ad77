"""The GRPO rewards: their docstring examples, what a well-formed right reply earns, and the hacks
users of GRPO have reported, each scored by every reward."""

import doctest

import pytest

from workings.core import rewards
from workings.core.rewards import (REWARD_NAMES, correctness, overlong_penalty, reward_functions, shown_work,
                                 strict_format, tag_structure)

QUESTION = "Ava has 4 pens. She finds 5 more. She gives away 2. How many pens does Ava have now?"
GOLD = "7"
RIGHT = "<reasoning>4 + 5 = 9\n9 - 2 = 7</reasoning>\n<answer>7</answer>"
LIMIT = 64


def scores(text: str, gold: str | None = GOLD, length: int = 30) -> dict[str, float | None]:
    """Every reward of the registry on one reply to QUESTION (``length`` generated tokens)."""
    functions = reward_functions(REWARD_NAMES, max_completion_length=LIMIT, overlong_buffer=16)
    batch = {"prompts": ["<prompt>"], "completions": [text], "completion_ids": [[1] * length],
             "question": [QUESTION], "gold": [gold]}
    return {name: f(**batch)[0] for name, f in zip(REWARD_NAMES, functions)}


def test_the_docstring_examples_hold():
    result = doctest.testmod(rewards, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 9 and result.failed == 0


def test_a_right_well_formed_reply_earns_every_reward():
    assert scores(RIGHT) == {"correctness": 1.0, "strict_format": 1.0, "tag_structure": 1.0, "shown_work": 1.0,
                             "overlong": 0.0}


def test_conversational_completions_are_read_like_text():
    assert correctness([[{"role": "assistant", "content": RIGHT}]], gold=[GOLD]) == [1.0]


def test_an_empty_answer_block_earns_no_answer_and_no_format():
    s = scores("<reasoning>4 + 5 = 9\n9 - 2 = 7</reasoning>\n<answer></answer>")
    assert s["correctness"] == 0.0 and s["strict_format"] == 0.0
    assert s["tag_structure"] == 0.75  # tags once, in order, nothing outside; one block empty
    assert s["shown_work"] == pytest.approx(2 / 3)  # both lines check out, no answer to end on


def test_two_answer_blocks_earn_nothing_for_the_answer_even_if_one_is_right():
    for text in (f"{RIGHT}<answer>8</answer>", "<reasoning>4 + 5 = 9\n9 - 2 = 7</reasoning>\n<answer>8</answer><answer>7</answer>"):
        s = scores(text)
        assert s["correctness"] == 0.0 and s["strict_format"] == 0.0
        assert s["tag_structure"] == 0.5  # in order, first blocks not empty; tags repeat, a block sits outside


def test_the_answer_inside_the_reasoning_is_not_an_answer():
    s = scores("<reasoning>4 + 5 = 9\n9 - 2 = 7 so the answer is <answer>7</answer></reasoning>")
    assert s["correctness"] == 0.0 and s["strict_format"] == 0.0 and s["shown_work"] == 0.0
    assert s["tag_structure"] == 0.25  # each tag once; not in order, so the rest cannot hold


def test_several_reasoning_blocks_are_not_the_format():
    s = scores("<reasoning>4 + 5 = 9</reasoning><reasoning>9 - 2 = 7</reasoning>\n<answer>7</answer>")
    assert s["strict_format"] == 0.0 and s["tag_structure"] == 0.5  # in order, no empty block; tags twice, text outside
    assert s["correctness"] == 1.0  # the one answer block is right: format is the other rewards' business


def test_an_empty_reasoning_block_loses_format_and_shown_work():
    s = scores("<reasoning></reasoning>\n<answer>7</answer>")
    assert s == {"correctness": 1.0, "strict_format": 0.0, "tag_structure": 0.75, "shown_work": 0.0, "overlong": 0.0}


def test_text_after_the_answer_breaks_the_format_only():
    s = scores(f"{RIGHT}\nI hope this helps!")
    assert s["strict_format"] == 0.0 and s["tag_structure"] == 0.75
    assert s["correctness"] == 1.0 and s["shown_work"] == 1.0


def test_a_list_of_candidate_answers_is_wrong():
    for answer in ("6, 7 or 8", "7 or 8", "6; 7"):
        s = scores(f"<reasoning>4 + 5 = 9\n9 - 2 = 7</reasoning>\n<answer>{answer}</answer>")
        assert s["correctness"] == 0.0, answer
        assert s["strict_format"] == 1.0  # well formed, and wrong


def test_a_reply_cut_at_the_length_limit_is_penalised_and_earns_no_answer():
    s = scores("<reasoning>4 + 5 = 9\n9 - 2 = 7\n7 + 0 = 7\n7 + 0 = 7", length=LIMIT)
    assert s["overlong"] == -1.0 and s["correctness"] == 0.0 and s["strict_format"] == 0.0
    assert s["shown_work"] == 0.0  # no closed reasoning block to read


def test_the_overlong_penalty_starts_at_the_buffer_and_is_linear():
    penalty = overlong_penalty(max_completion_length=64, buffer=16)
    assert penalty(completions=[""] * 4, completion_ids=[[0] * 40, [0] * 48, [0] * 56, [0] * 64]) == [0.0, 0.0, -0.5, -1.0]


def test_a_wrong_sum_and_an_ungrounded_number_cost_shown_work():
    wrong_sum = scores("<reasoning>4 + 5 = 10\n10 - 2 = 8</reasoning>\n<answer>8</answer>")
    from_nowhere = scores("<reasoning>4 + 6 = 10\n10 - 3 = 7</reasoning>\n<answer>7</answer>")
    assert wrong_sum["shown_work"] == pytest.approx(2 / 3)  # the second line is right given the first
    assert from_nowhere["shown_work"] == pytest.approx(1 / 3)  # 6 and 3 are not in the question
    assert from_nowhere["correctness"] == 1.0


def test_rewards_that_cannot_be_read_return_none():
    assert scores(RIGHT, gold=None)["correctness"] is None
    assert shown_work([RIGHT], question=["What is the capital of France?"], gold=["Paris"]) == [None]


def test_unknown_reward_names_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="unknown reward 'format'; known: correctness, strict_format"):
        reward_functions(["format"], max_completion_length=64, overlong_buffer=16)


def test_each_registered_reward_is_named_as_trl_logs_it():
    functions = reward_functions(REWARD_NAMES, max_completion_length=64, overlong_buffer=16)
    assert [f.__name__ for f in functions] == list(REWARD_NAMES)
    assert strict_format([""]) == [0.0] and tag_structure([""]) == [0.0]
