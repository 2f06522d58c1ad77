"""Verifiable rewards for GRPO, in TRL's reward signature, and the registry profiles name them from.

Each reward takes the batch as TRL hands it over (``prompts``, ``completions``, ``completion_ids`` and
every dataset column as a keyword: here ``question`` and ``gold``) and returns one float per
completion, or ``None`` where the reward does not apply (TRL then leaves it out of that reward's
mean). Completions are plain strings or, for conversational prompts, one assistant message.

The rewards are written against the hacks users of GRPO have reported: a reward for the answer is
only paid for a single, closed, exactly spelled answer block holding one answer, so an empty
block, two blocks, an answer left in the reasoning, a list of candidates or a reply cut at the
length limit earn nothing (``tests/test_rewards.py`` holds one test per hack).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from workings.core.answers import equivalent, numbers_in, parse_number
from workings.core.format import ANSWER_CLOSE, ANSWER_OPEN, REASONING_CLOSE, REASONING_OPEN, contains_tag, parse
from workings.core.steps import check_lines

Reward = Callable[..., list[float | None]]
TAGS = (REASONING_OPEN, REASONING_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
_ANY_TAG = re.compile(r"<\s*/?\s*(?:reasoning|answer)\s*>", re.IGNORECASE)
_REASONING_TAG = re.compile(r"<\s*/?\s*reasoning\s*>", re.IGNORECASE)


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or the content of a conversational ``[{"role": ..., "content": ...}]``."""
    if isinstance(completion, str):
        return completion
    return "".join(message["content"] for message in completion)


def _one_block(text: str, open_tag: str, close_tag: str) -> tuple[int, int] | None:
    """Start and end of the content of the text's one ``open_tag … close_tag`` block, or None unless
    each tag occurs exactly once, spelled exactly, in that order, with no other tag inside."""
    if text.count(open_tag) != 1 or text.count(close_tag) != 1:
        return None
    start, end = text.index(open_tag) + len(open_tag), text.index(close_tag)
    if end < start or contains_tag(text[start:end]):
        return None
    return start, end


def answer_block(text: str) -> str | None:
    """The content of the reply's one answer block, or None unless there is exactly one
    ``<answer>`` and one ``</answer>``, spelled exactly, in that order, with no tag inside and no
    reasoning tag after it (an answer written inside or before the reasoning is not the answer).

    >>> answer_block("<reasoning>2 + 3 = 5</reasoning><answer> 5 </answer>")
    '5'
    >>> answer_block("<answer>4</answer><answer>5</answer>"), answer_block("<reasoning>so <answer>5</answer></reasoning>")
    (None, None)
    """
    span = _one_block(text, ANSWER_OPEN, ANSWER_CLOSE)
    if span is None or _REASONING_TAG.search(text, span[0]):
        return None
    return text[span[0]:span[1]].strip()


def reasoning_block(text: str) -> str | None:
    """The content of the reply's one reasoning block, read as exactly as :func:`answer_block`.

    >>> reasoning_block("<reasoning>2 + 3 = 5</reasoning><answer>5</answer>")
    '2 + 3 = 5'
    """
    span = _one_block(text, REASONING_OPEN, REASONING_CLOSE)
    return None if span is None else text[span[0]:span[1]].strip()


def lists_candidates(answer: str, gold: str) -> bool:
    """True when ``answer`` writes more numbers than ``gold`` does: several candidates for one value.

    >>> lists_candidates("12 or 13", "12"), lists_candidates("$1,080", "1080"), lists_candidates(r"\\frac{1}{2}", r"\\frac{1}{2}")
    (True, False, False)
    """
    return len(numbers_in(answer)) > max(1, len(numbers_in(gold)))


def strict_format(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """1.0 for a reply that is exactly one reasoning block then one answer block, both non-empty
    (:func:`workings.core.format.parse`'s strict reading), else 0.0.

    >>> strict_format(["<reasoning>4 + 5 = 9</reasoning>\\n<answer>9</answer>", "The answer is 9."])
    [1.0, 0.0]
    """
    return [1.0 if parse(completion_text(c)).strict else 0.0 for c in completions]


def tag_structure(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """A quarter for each of four checks: every tag exactly once (and no misspelt tag), the tags in
    order, nothing but whitespace outside the two blocks, and neither block empty. A reply without
    any tag scores 0.0.

    >>> tag_structure(["<reasoning>4 + 5 = 9</reasoning>\\n<answer>9</answer>",
    ...                "<reasoning>4 + 5 = 9</reasoning>\\n<answer>9</answer> Hope this helps!",
    ...                "<reasoning></reasoning><answer>9</answer>", "9"])
    [1.0, 0.75, 0.75, 0.0]
    """
    return [_tag_checks(completion_text(c)) for c in completions]


def _tag_checks(text: str) -> float:
    found = _ANY_TAG.findall(text)
    if not found:
        return 0.0
    once = all(text.count(tag) == 1 for tag in TAGS) and len(found) == len(TAGS)
    positions = [text.find(tag) for tag in TAGS]
    in_order = -1 not in positions and positions == sorted(positions)
    if in_order:
        r_open, r_close, a_open, a_close = positions
        reasoning = text[r_open + len(REASONING_OPEN): r_close]
        answer = text[a_open + len(ANSWER_OPEN): a_close]
        outside = text[:r_open] + text[r_close + len(REASONING_CLOSE): a_open] + text[a_close + len(ANSWER_CLOSE):]
        nothing_outside = not outside.strip()
        none_empty = bool(reasoning.strip()) and bool(answer.strip())
    else:
        nothing_outside = none_empty = False
    return (once + in_order + nothing_outside + none_empty) / 4


def correctness(completions: Sequence[Any], gold: Sequence[str | None], **kwargs: Any) -> list[float | None]:
    """1.0 when the reply's one answer block (:func:`answer_block`) holds one answer equal to
    ``gold`` by :func:`workings.core.answers.equivalent`; 0.0 otherwise, including an answer that
    lists several candidates (:func:`lists_candidates`); None when there is no gold to read.

    >>> correctness(["<reasoning>4 + 5 = 9</reasoning><answer>$9</answer>",
    ...              "<reasoning>4 + 5 = 9</reasoning><answer>9 or 10</answer>",
    ...              "<reasoning>4 + 5 = 9</reasoning><answer>9</answer>"], gold=["9", "9", None])
    [1.0, 0.0, None]
    """
    rewards: list[float | None] = []
    for completion, answer_gold in zip(completions, gold, strict=True):
        if answer_gold is None or not str(answer_gold).strip():
            rewards.append(None)
            continue
        answer = answer_block(completion_text(completion))
        right = bool(answer) and not lists_candidates(answer, answer_gold) and equivalent(answer, answer_gold)
        rewards.append(1.0 if right else 0.0)
    return rewards


def shown_work(completions: Sequence[Any], question: Sequence[str], gold: Sequence[str | None],
               **kwargs: Any) -> list[float | None]:
    """How much of the shown work checks out: each ``a op b = c`` of the reasoning block that is
    right and grounded (its operands come from the question or from earlier lines;
    :func:`workings.core.steps.check_lines`), plus one check that the answer block is the
    last line's result, as a share of the lines plus one. 0.0 without one reasoning block
    (:func:`reasoning_block`) or without a computation in it; None for a question whose gold is not a number (the lines are arithmetic).

    >>> shown_work(["<reasoning>4 + 5 = 9\\n9 - 2 = 7</reasoning><answer>7</answer>",
    ...             "<reasoning>4 + 5 = 9\\n9 - 2 = 6</reasoning><answer>7</answer>",
    ...             "<reasoning>4 + 5 = 9\\n9 - 3 = 6</reasoning><answer>6</answer>"],
    ...            question=["Ava has 4 pens. She finds 5 more. She gives away 2. How many pens does she have now?"] * 3,
    ...            gold=["7"] * 3)
    [1.0, 0.3333333333333333, 0.6666666666666666]
    """
    rewards: list[float | None] = []
    for completion, text_question, answer_gold in zip(completions, question, gold, strict=True):
        if answer_gold is None or parse_number(str(answer_gold)) is None:
            rewards.append(None)
            continue
        text = completion_text(completion)
        reasoning = reasoning_block(text)
        lines = check_lines(reasoning, text_question) if reasoning else []
        if not lines:
            rewards.append(0.0)
            continue
        answer = answer_block(text)
        ends_on_last = answer is not None and equivalent(answer, str(lines[-1].computation.result))
        rewards.append((sum(line.right and line.grounded for line in lines) + ends_on_last) / (len(lines) + 1))
    return rewards


def overlong_penalty(max_completion_length: int, buffer: int) -> Reward:
    """DAPO's soft overlong punishment: 0 up to ``max_completion_length - buffer`` tokens, then
    falling linearly to -1 at the limit, where generation was cut (the completion's token ids count).

    >>> penalty = overlong_penalty(max_completion_length=100, buffer=20)
    >>> penalty(completions=["", "", ""], completion_ids=[[0] * 80, [0] * 90, [0] * 100])
    [0.0, -0.5, -1.0]
    """
    if not 0 < buffer <= max_completion_length:
        raise ValueError(f"the overlong buffer must be in (0, {max_completion_length}], got {buffer}")
    start = max_completion_length - buffer

    def overlong(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kwargs: Any) -> list[float | None]:
        return [min(0.0, (start - len(ids)) / buffer) for ids in completion_ids]

    return overlong


# The rewards a profile names under reinforcement.rewards. A factory takes the run's lengths.
REWARDS: dict[str, Reward] = {
    "correctness": correctness,
    "strict_format": strict_format,
    "tag_structure": tag_structure,
    "shown_work": shown_work,
}
REWARD_FACTORIES: dict[str, Callable[..., Reward]] = {"overlong": overlong_penalty}
REWARD_NAMES = (*REWARDS, *REWARD_FACTORIES)


def reward_functions(names: Sequence[str], *, max_completion_length: int, overlong_buffer: int) -> list[Reward]:
    """The reward functions ``names`` lists, in order, each named as TRL logs it (``rewards/<name>/mean``)."""
    functions = []
    for name in names:
        if name in REWARDS:
            functions.append(REWARDS[name])
        elif name in REWARD_FACTORIES:
            function = REWARD_FACTORIES[name](max_completion_length=max_completion_length, buffer=overlong_buffer)
            function.__name__ = name
            functions.append(function)
        else:
            raise KeyError(f"unknown reward {name!r}; known: {', '.join(REWARD_NAMES)}")
    return functions


def score_replies(names: Sequence[str], replies: Sequence[str], *, question: Sequence[str], gold: Sequence[str | None],
                  completion_ids: Sequence[Sequence[int]], max_completion_length: int,
                  overlong_buffer: int) -> dict[str, list[float | None]]:
    """Every reward ``names`` lists, on every reply, called as TRL calls them: one list per reward.

    >>> score_replies(["correctness", "strict_format"], ["<reasoning>2 + 2 = 4</reasoning><answer>4</answer>", "4"],
    ...               question=["What is 2 + 2?"] * 2, gold=["4"] * 2, completion_ids=[[0] * 9, [0]],
    ...               max_completion_length=64, overlong_buffer=16)
    {'correctness': [1.0, 0.0], 'strict_format': [1.0, 0.0]}
    """
    functions = reward_functions(names, max_completion_length=max_completion_length, overlong_buffer=overlong_buffer)
    return {name: function(completions=list(replies), question=list(question), gold=list(gold),
                           completion_ids=list(completion_ids))
            for name, function in zip(names, functions)}


def weighted_reward(scores: dict[str, list[float | None]], weights: Sequence[float] | None = None) -> list[float]:
    """The reward GRPO ranks replies by: the weighted sum of the rewards that apply (TRL's ``nansum``;
    a reward that is ``None`` for a reply adds nothing). ``weights`` default to 1 each.

    >>> weighted_reward({"correctness": [1.0, None], "strict_format": [1.0, 0.0]}, [1.0, 0.5])
    [1.5, 0.0]
    """
    weights = [1.0] * len(scores) if weights is None else list(weights)
    if len(weights) != len(scores):
        raise ValueError(f"{len(weights)} weights for {len(scores)} rewards")
    columns = list(scores.values())
    return [sum(w * column[i] for w, column in zip(weights, columns) if column[i] is not None)
            for i in range(len(columns[0]) if columns else 0)]
