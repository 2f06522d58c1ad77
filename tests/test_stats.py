import math

import pytest

from workings.evaluation.stats import bootstrap_interval, compare_paired, mcnemar_exact, percentiles, wilson_interval


def test_wilson_interval_of_half_matches_the_textbook_value():
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)


def test_wilson_interval_at_zero_successes_is_not_empty():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.959963984540054**2 / (10 + 1.959963984540054**2))
    assert wilson_interval(300, 300)[1] == 1.0 and wilson_interval(0, 300)[0] == 0.0


def test_wilson_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="successes must be in"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="at least one trial"):
        wilson_interval(0, 0)


def test_mcnemar_exact_on_six_discordant_questions_all_one_way():
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)


def test_mcnemar_exact_counts_both_tails():
    assert mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)
    assert mcnemar_exact(5, 1) == mcnemar_exact(1, 5)


def test_mcnemar_exact_without_discordant_questions_is_one():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0


def test_bootstrap_of_constant_values_is_that_value():
    assert bootstrap_interval([1.0] * 20) == (1.0, 1.0)


def test_bootstrap_is_reproducible_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_interval(values, seed=1)
    assert (lo, hi) == bootstrap_interval(values, seed=1)
    assert lo < 0.3 < hi and 0.15 < lo and hi < 0.45


def test_paired_comparison_counts_the_four_cells_and_the_difference():
    a = [True, True, False, False, False, True]
    b = [True, False, True, True, False, True]
    c = compare_paired(a, b)
    assert (c.n, c.both, c.only_a, c.only_b, c.neither) == (6, 2, 1, 2, 1)
    assert c.difference == pytest.approx(1 / 6)
    assert c.p_value == mcnemar_exact(1, 2) and not c.significant


def test_paired_comparison_of_a_clear_gain_is_significant():
    a = [False] * 20
    b = [True] * 12 + [False] * 8
    c = compare_paired(a, b)
    assert c.p_value == pytest.approx(2 / 2**12) and c.significant
    assert c.difference_ci[0] > 0


def test_paired_comparison_needs_the_same_questions():
    with pytest.raises(ValueError, match="same questions: 2 vs 3"):
        compare_paired([True, False], [True, False, True])


def test_percentiles_interpolate_like_numpy():
    assert percentiles([4, 1, 3, 2], (50, 90)) == {"p50": 2.5, "p90": pytest.approx(3.7)}
    assert all(math.isnan(v) for v in percentiles([]).values())
