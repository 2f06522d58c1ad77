import re
from collections import Counter

import pytest

from workings.synthetic import generate_synthetic


def test_same_seed_same_problems():
    assert generate_synthetic(50, seed=3) == generate_synthetic(50, seed=3)


def test_different_seeds_differ():
    assert [e.question for e in generate_synthetic(20, 1)] != [e.question for e in generate_synthetic(20, 2)]


def test_every_computation_in_the_reasoning_is_correct():
    checked = 0
    for ex in generate_synthetic(400, seed=7):
        for line in ex.reasoning.splitlines():
            for match in re.finditer(r"((?:\$?\d+ [-+*/] )+\$?\d+) = \$?(\d+)", line):
                expression = match.group(1).replace("$", "")
                assert eval(expression) == int(match.group(2)), line  # noqa: S307 - digits and operators only
                checked += 1
    assert checked > 800


def test_answer_is_the_result_of_the_last_step():
    for ex in generate_synthetic(300, seed=11):
        last = ex.reasoning.splitlines()[-1]
        assert re.search(rf"= \$?{ex.answer}\b", last), (last, ex.answer)


def test_answers_are_non_negative_integers():
    assert all(re.fullmatch(r"\d+", ex.answer) for ex in generate_synthetic(500, seed=5))


def test_step_counts_cover_one_to_four():
    steps = Counter(ex.meta["steps"] for ex in generate_synthetic(400, seed=9))
    assert set(steps) == {1, 2, 3, 4}


def test_varied_enough_not_to_memorise():
    problems = generate_synthetic(2000, seed=13)
    assert len({ex.question for ex in problems}) >= 1950
    openings = Counter(" ".join(ex.question.split()[:2]) for ex in problems)
    assert len(openings) >= 30  # many names, places and phrasings start the problems
    assert len({ex.answer for ex in problems}) >= 300


def test_step_bounds_are_checked():
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        generate_synthetic(1, seed=0, min_steps=3, max_steps=2)
