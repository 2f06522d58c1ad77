import re
from collections import Counter

import pytest

from workings.data.synthetic import generate_synthetic


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


def test_small_numbers_change_small_collections_by_one_digit_amounts():
    for ex in generate_synthetic(300, seed=17, max_steps=3, numbers="small"):
        steps = ex.reasoning.splitlines()
        assert len(steps) == ex.meta["steps"]
        start = int(re.search(r"(\d+) [-+]", steps[0]).group(1))
        assert 2 <= start <= 12
        for line in steps:
            a, op, b, c = re.search(r"(\d+) ([-+]) (\d+) = (\d+)", line).groups()
            assert 1 <= int(b) <= 9 and int(c) == (int(a) + int(b) if op == "+" else int(a) - int(b))
            assert int(c) >= 1


def test_small_numbers_follow_the_story_from_step_to_step():
    for ex in generate_synthetic(200, seed=19, max_steps=3, numbers="small"):
        results = [re.search(r"= (\d+)", line).group(1) for line in ex.reasoning.splitlines()]
        operands = [re.search(r"(\d+) [-+]", line).group(1) for line in ex.reasoning.splitlines()]
        assert operands[1:] == results[:-1] and results[-1] == ex.answer


def test_small_numbers_word_each_kind_of_sentence_one_way():
    pattern = (r"(?P<name>[A-Z][a-z]+) has \d+ (?P<item>[a-z ]+)\."
               r"( (She|He|They) (finds|find) \d more\.| (She|He|They) (gives|give) away \d\.)+"
               r" How many (?P=item) does (?P=name) have now\?")
    for ex in generate_synthetic(200, seed=23, max_steps=3, numbers="small"):
        assert re.fullmatch(pattern, ex.question), ex.question


def test_unknown_number_range_is_refused():
    with pytest.raises(ValueError, match="numbers must be one of"):
        generate_synthetic(1, seed=0, numbers="huge")
