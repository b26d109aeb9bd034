"""graftnet.stats: Holm, bootstrap intervals, the paired t-test, effect sizes, seeds needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from graftnet import stats


# ------------------------------------------------------------------ Holm
def test_holm_equals_statsmodels_multipletests():
    # statsmodels.stats.multitest.multipletests(p, method="holm")[1] (statsmodels 0.14), run once by hand
    p = [0.012, 0.0004, 0.31, 0.049, 0.02, 0.6]
    assert stats.holm(p) == pytest.approx([0.06, 0.0024, 0.62, 0.147, 0.08, 0.62])


def test_holm_textbook_example_and_missing_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, None, 0.03, 0.005]) == pytest.approx([0.03, 0.06, None, 0.06, 0.02])
    assert stats.holm([0.6, 0.9]) == [1.0, 1.0]  # never above 1
    assert stats.holm([]) == []


def test_holm_is_between_bonferroni_and_unadjusted():
    rng = np.random.default_rng(3)
    p = list(rng.uniform(0, 0.2, 7))
    adjusted = stats.holm(p)
    for raw, adj in zip(p, adjusted):
        assert raw <= adj <= min(1.0, 7 * raw) + 1e-15


# ------------------------------------------------------------------ bootstrap intervals
def test_bootstrap_interval_of_all_100_is_exactly_100():
    iv = stats.bootstrap_interval([100.0] * 5)
    assert (iv.mean, iv.low, iv.high, iv.std) == (100.0, 100.0, 100.0, 0.0)
    assert iv.method == "bootstrap-percentile"


def test_bootstrap_interval_stays_inside_0_100_where_t_does_not():
    values = [100.0, 100.0, 98.5]
    iv = stats.bootstrap_interval(values)
    assert iv.t_high > 100  # the Student-t interval leaves the range of an accuracy
    assert 98.5 <= iv.low <= iv.mean <= iv.high <= 100.0
    low = stats.bootstrap_interval([0.0, 0.0, 1.5])
    assert low.t_low < 0 and 0.0 <= low.low <= low.high <= 1.5


def test_bootstrap_interval_is_reproducible_and_near_scipy_percentile():
    values = [97.1, 98.4, 96.9, 97.7, 98.8, 97.0, 98.1]
    a, b = stats.bootstrap_interval(values), stats.bootstrap_interval(values)
    assert (a.low, a.high) == (b.low, b.high)
    ref = scipy_stats.bootstrap((np.array(values),), np.mean, confidence_level=0.95, n_resamples=20000,
                                method="percentile", random_state=np.random.default_rng(1)).confidence_interval
    assert a.low == pytest.approx(ref.low, abs=0.05) and a.high == pytest.approx(ref.high, abs=0.05)
    assert a.high - a.low < a.t_high - a.t_low  # few values: narrower than t (why verdicts do not use it)


def test_bootstrap_interval_of_one_value_has_none():
    iv = stats.bootstrap_interval([97.5])
    assert (iv.n, iv.low, iv.high) == (1, None, None)


# ------------------------------------------------------------------ paired test, effect size
def test_paired_test_equals_scipy_ttest_rel():
    a = np.array([98.0, 97.5, 99.0, 98.2, 97.9])
    b = np.array([97.0, 97.6, 97.8, 97.1, 96.5])
    test = stats.paired_test(a - b)
    ref = scipy_stats.ttest_rel(a, b)
    assert test.p == pytest.approx(ref.pvalue) and test.t == pytest.approx(ref.statistic)


def test_effect_sizes_by_hand():
    d = [0.4, 0.9, 0.1, 0.6, 0.5]  # mean 0.5, sd sqrt(0.085)
    test = stats.paired_test(d)
    assert test.cohen_dz == pytest.approx(0.5 / math.sqrt(0.085))
    # exact J(4) = Γ(2) / (√2 Γ(1.5)) = 1 / (√2 · √π / 2) = 0.7979, close to the approximation 1 - 3/15 = 0.8
    assert stats.hedges_j(4) == pytest.approx(2 / math.sqrt(2 * math.pi))
    assert test.hedges_g == pytest.approx(test.cohen_dz * 2 / math.sqrt(2 * math.pi))
    assert stats.hedges_j(200) == pytest.approx(1 - 3 / (4 * 200 - 1), rel=1e-5)


def test_paired_test_without_spread():
    assert stats.paired_test([0.5, 0.5, 0.5]).p == 0.0
    assert stats.paired_test([0.0, 0.0]).p == 1.0
    assert stats.paired_test([0.5]).p is None


# ------------------------------------------------------------------ power
def test_seeds_needed_matches_gpower_and_statsmodels():
    # G*Power 3.1, "t tests - Means: difference between two dependent means (matched pairs)", a priori:
    # d_z = 0.5, alpha 0.05 two tails, power 0.80 -> total sample size 34, actual power 0.8078.
    # statsmodels TTestPower().solve_power(0.5, alpha=0.05, power=0.8) = 33.37 -> 34.
    assert stats.seeds_needed(sd=2.0, delta=1.0) == 34
    assert stats.power_paired(34, delta=1.0, sd=2.0) == pytest.approx(0.8077775, abs=1e-6)
    assert stats.power_paired(33, delta=1.0, sd=2.0) < 0.8
    # statsmodels: solve_power(1/1.3, alpha=0.05, power=0.8) = 15.30 -> 16; power(1/1.3, nobs=12) = 0.6800
    assert stats.seeds_needed(sd=1.3, delta=1.0) == 16
    assert stats.power_paired(12, delta=1.0, sd=1.3) == pytest.approx(0.6799987, abs=1e-6)


def test_seeds_needed_edges():
    assert stats.seeds_needed(sd=0.0) == 2
    assert stats.seeds_needed(sd=0.01) == 2
    assert stats.seeds_needed(sd=1000.0, limit=500) is None


def test_docstring_examples_run():
    import doctest

    results = doctest.testmod(stats)
    assert results.failed == 0 and results.attempted >= 8
