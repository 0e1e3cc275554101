"""The statistics a sweep's summary reports over seeds: a configuration's mean with an
interval that stays in the metric's range, and paired comparisons of configurations run
under the same seeds.

Intervals: the Student-t interval of the mean over the seeds (``mean ± t_{0.975, n-1} ·
sd / √n``), truncated to the metric's range (:func:`metric_range`: [0, 1] for accuracy,
precision, recall, F1, the AUCs, the MSE of probabilities and the calibration error;
[0, 2] for the Brier score, which sums over the classes; [0, ∞) for losses and spreads).
The true mean lies in that range, so the truncation keeps the t interval's coverage while
it never reports an impossible value; with 2 to 5 seeds the t interval is the one that
widens enough (a percentile bootstrap of 3 to 5 values stays inside [min, max] and covers
far less than 95 %).

Paired comparisons: configurations run under the same seeds share their data, split,
initialisation and shuffling streams, so the differences seed by seed carry the difference
between the configurations without the seeds' own spread. For each comparison: the mean
difference with its 95 % t interval, a paired t-test and a Wilcoxon signed-rank test
(two-sided), both Holm-corrected over the comparisons made, and the number of seeds a paired
t-test would need for 80 % power at alpha 0.05 given the observed mean and sd of the
differences. Differences that are all exactly 0 give difference 0, p = 1 and no seed count
(there is nothing to detect), without a warning or a NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
ALPHA = 0.05  # what "distinguishable" means: Holm-corrected paired t p-value below this
POWER = 0.80
MAX_SEEDS = 10_000  # a power calculation that needs more says "more than" this
STATS = ("mean", "std", "min", "max", "ci95_low", "ci95_high")
INTERVAL_METHOD = ("95 % CI: Student t interval of the mean over the seeds, truncated to the "
                   "metric's range ([0, 1] for scores and probabilities, >= 0 for losses)")
PAIRED_METHOD = ("paired by seed (same data, split, initialisation and shuffling streams): "
                 "mean difference best - other with its 95 % Student t interval; two-sided "
                 "paired t-test and Wilcoxon signed-rank test, Holm-corrected over the "
                 f"comparisons; distinguishable when the corrected t-test p < {ALPHA}; seeds "
                 f"for {POWER:.0%} power: a paired t-test at alpha {ALPHA} with the observed "
                 "difference and sd")

# Metric names (without their split prefix) whose values are fractions or probabilities.
UNIT_INTERVAL = frozenset({
    "accuracy", "precision", "recall", "f1", "roc_auc", "precision_recall_auc", "mse",
    "calibration_error", "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted"})
NON_NEGATIVE = frozenset({"log_loss", "loss"})
# sklearn's Brier score: in [0, 1] for two classes, up to 2 beyond (the sum over classes).
UP_TO_TWO = frozenset({"brier_score"})
_PREFIXES = ("test_", "val_", "train_")


def metric_range(name: str) -> tuple[float, float]:
    """The values ``name`` can take: ``val_accuracy`` -> (0, 1), ``test_log_loss`` and
    ``val_accuracy_std`` -> (0, inf), ``time_train_s`` -> (0, inf), else unbounded."""
    base = name
    if base.startswith("fold") and "_" in base:  # fold<i>_val_<name>
        head, _, rest = base.partition("_")
        if head[4:].isdigit():
            base = rest
    if base.endswith("_std") or base.startswith("time_"):
        return 0.0, math.inf
    for prefix in _PREFIXES:
        if base.startswith(prefix):
            base = base.removeprefix(prefix)
            break
    if base in UNIT_INTERVAL:
        return 0.0, 1.0
    if base in UP_TO_TWO:
        return 0.0, 2.0
    if base in NON_NEGATIVE:
        return 0.0, math.inf
    return -math.inf, math.inf


def _t_quantile(df: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.5 + CONFIDENCE / 2, df))


def mean_interval(values: np.ndarray, bounds: tuple[float, float] = (-math.inf, math.inf)
                  ) -> dict[str, float]:
    """n values -> mean, sample std, min, max and the 95 % Student-t interval of the mean
    truncated to ``bounds`` (see the module docstring); NaN where n is too small."""
    n = len(values)
    nan = float("nan")
    if n == 0:
        return dict.fromkeys(STATS, nan)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else nan
    low = high = nan
    if n > 1:
        half = _t_quantile(n - 1) * std / math.sqrt(n)
        low, high = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return {"mean": mean, "std": std, "min": float(values.min()), "max": float(values.max()),
            "ci95_low": low, "ci95_high": high}


@dataclass(frozen=True)
class Paired:
    """One configuration compared with the best, seed by seed (differences: best - other)."""

    n: int  # seeds both ran
    mean: float
    std: float  # of the differences (NaN below 2 seeds)
    ci95_low: float
    ci95_high: float
    t_p: float
    wilcoxon_p: float
    seeds_needed: int | None  # for 80 % power; None: no difference to detect, or n < 2
    t_p_holm: float = float("nan")
    wilcoxon_p_holm: float = float("nan")

    @property
    def distinguishable(self) -> bool:
        return self.t_p_holm < ALPHA


def paired_difference(best: np.ndarray, other: np.ndarray,
                      bounds: tuple[float, float] = (-math.inf, math.inf)) -> Paired:
    """Compare two configurations' values over the same seeds (``best[i]`` and
    ``other[i]`` ran under seed i); ``bounds``: the metric's range, which bounds the
    differences' interval to ``[low - high, high - low]``."""
    diff = np.asarray(best, float) - np.asarray(other, float)
    n = len(diff)
    nan = float("nan")
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan, None)
    mean = float(diff.mean())
    if not diff.any():  # identical results seed by seed: nothing to detect
        return Paired(n, 0.0, 0.0 if n > 1 else nan, 0.0, 0.0, 1.0, 1.0, None)
    if n < 2:
        return Paired(n, mean, nan, nan, nan, nan, nan, None)
    std = float(diff.std(ddof=1))
    width = bounds[1] - bounds[0]
    half = _t_quantile(n - 1) * std / math.sqrt(n)
    low, high = max(-width, mean - half), min(width, mean + half)
    return Paired(n, mean, std, low, high, _paired_t_p(mean, std, n), _wilcoxon_p(diff),
                  seeds_for_power(mean, std))


def _paired_t_p(mean: float, std: float, n: int) -> float:
    """Two-sided p-value of the paired t-test; every seed showing the same non-zero
    difference (sd 0) is as strong as evidence gets: 0."""
    from scipy.stats import t as student_t

    if std == 0:
        return 0.0 if mean != 0 else 1.0
    statistic = mean / (std / math.sqrt(n))
    return float(min(1.0, 2 * student_t.sf(abs(statistic), n - 1)))


def _wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (zero differences dropped, as Wilcoxon did);
    1 when every difference is 0."""
    from scipy.stats import wilcoxon

    nonzero = diff[diff != 0]
    if len(nonzero) == 0:
        return 1.0
    return float(wilcoxon(nonzero).pvalue)


def seeds_for_power(mean: float, std: float, *, power: float = POWER, alpha: float = ALPHA
                    ) -> int | None:
    """The fewest seeds for which a two-sided paired t-test at ``alpha`` detects a mean
    difference ``mean`` with differences of sd ``std`` with probability ``power`` (the
    noncentral t); None when ``mean`` is 0, :data:`MAX_SEEDS` + 1 beyond that."""
    if mean == 0 or not math.isfinite(mean):
        return None
    if std == 0:
        return 2  # every seed shows the same difference: the least a t-test takes
    effect = abs(mean) / std

    def reaches(n: int) -> bool:
        from scipy.stats import nct
        from scipy.stats import t as student_t

        df = n - 1
        critical = float(student_t.ppf(1 - alpha / 2, df))
        shift = effect * math.sqrt(n)
        upper = float(nct.sf(critical, df, shift))
        lower = float(nct.cdf(-critical, df, shift))
        # SciPy's noncentral t gives NaN far in its tails: there the tail is all or nothing.
        if not math.isfinite(upper):
            upper = 1.0 if shift > critical else 0.0
        return upper + (lower if math.isfinite(lower) else 0.0) >= power

    if not reaches(MAX_SEEDS):
        return MAX_SEEDS + 1
    low, high = 2, MAX_SEEDS  # reaches(high); power grows with n
    if reaches(low):
        return low
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reaches(middle) else (middle, high)
    return high


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``p_values`` (NaN stays NaN and is not counted)."""
    indexed = sorted((p, i) for i, p in enumerate(p_values) if math.isfinite(p))
    m = len(indexed)
    adjusted = [float("nan")] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def describe_seeds(paired: Paired) -> str:
    """How many seeds would separate the two: "n/a (no difference)", "about 7", ..."""
    if paired.seeds_needed is None:
        return "n/a (no difference)" if paired.mean == 0 else "n/a"
    if paired.seeds_needed > MAX_SEEDS:
        return f"more than {MAX_SEEDS}"
    return f"about {paired.seeds_needed}"


def format_p(p: float) -> str:
    """A p-value for people: 1, 0.0625, 3.2e-05 (never "nan": n/a)."""
    if not math.isfinite(p):
        return "n/a"
    if p == 1:
        return "1"
    if p == 0:
        return "0"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


# -- two models on the same rows (the promotion gate) ----------------------------------------
@dataclass(frozen=True)
class McNemar:
    """Two classifiers on the same rows: the rows only ``a`` gets right, only ``b`` gets
    right, and the exact two-sided McNemar p-value (a binomial test on those discordant
    rows; 1 when there are none)."""

    a_only: int
    b_only: int
    p: float


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemar:
    """McNemar's exact test of two classifiers' per-row correctness (booleans, same rows)."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if a_only + b_only == 0:
        return McNemar(0, 0, 1.0)
    return McNemar(a_only, b_only, float(binomtest(b_only, a_only + b_only, 0.5).pvalue))


@dataclass(frozen=True)
class Bootstrap:
    """The mean of per-row differences ``a - b`` with its 95 % percentile bootstrap interval
    and a two-sided bootstrap p-value for "no difference"."""

    mean: float
    ci95_low: float
    ci95_high: float
    p: float


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000,
                     seed: int = 0) -> Bootstrap:
    """Resample the rows (the same rows for both, which is what pairs them) ``resamples``
    times with a seeded generator: the interval of the mean difference is the 2.5 and 97.5
    percentiles, the p-value the share of resampled means at least as far from the observed
    mean as the observed mean is from 0 (the bootstrap distribution shifted to the null)."""
    diff = np.asarray(a, float) - np.asarray(b, float)
    if len(diff) == 0:
        nan = float("nan")
        return Bootstrap(nan, nan, nan, nan)
    mean = float(diff.mean())
    if not diff.any():
        return Bootstrap(0.0, 0.0, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    batch = max(1, 2_000_000 // len(diff))  # bounded memory on a large test split
    means = np.concatenate([
        diff[rng.integers(0, len(diff), size=(min(batch, resamples - start), len(diff)))
             ].mean(axis=1) for start in range(0, resamples, batch)])
    low, high = np.percentile(means, [2.5, 97.5])
    p = float(np.mean(np.abs(means - mean) >= abs(mean)))
    return Bootstrap(mean, float(low), float(high), max(p, 1.0 / resamples))
