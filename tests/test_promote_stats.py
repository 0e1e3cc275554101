"""McNemar's test and the paired bootstrap the promotion gate reports (pure functions)."""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest

from pipeline.tracking.stats import mcnemar, paired_bootstrap


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_rows() -> None:
    a = np.array([True] * 10 + [False] * 2 + [True] * 5)
    b = np.array([False] * 10 + [True] * 2 + [True] * 5)
    found = mcnemar(a, b)
    assert (found.a_only, found.b_only) == (10, 2)
    assert found.p == binomtest(2, 12, 0.5).pvalue


def test_mcnemar_of_identical_answers_is_p_one() -> None:
    same = np.array([True, False, True])
    found = mcnemar(same, same)
    assert (found.a_only, found.b_only, found.p) == (0, 0, 1.0)


def test_paired_bootstrap_interval_holds_the_mean_difference_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.3, 200)
    b = a - 0.2 + rng.normal(0, 0.05, 200)
    found = paired_bootstrap(a, b, resamples=1000, seed=3)
    assert abs(found.mean - float(np.mean(a - b))) < 1e-12
    assert found.ci95_low < found.mean < found.ci95_high
    assert found.ci95_low > 0.1
    assert found.ci95_high < 0.3
    assert found.p < 0.01
    assert found == paired_bootstrap(a, b, resamples=1000, seed=3)


def test_paired_bootstrap_of_equal_values_is_no_difference() -> None:
    values = np.array([0.1, 0.5, 0.2])
    found = paired_bootstrap(values, values)
    assert (found.mean, found.ci95_low, found.ci95_high, found.p) == (0.0, 0.0, 0.0, 1.0)


def test_paired_bootstrap_of_noise_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    assert paired_bootstrap(a, b, seed=0).p > 0.05
