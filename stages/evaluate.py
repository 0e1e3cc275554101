"""A split's metrics, confusion matrix, per-class table and per-row predictions, in NumPy only.

The figures are those of ``mlflow.models.evaluate``'s classifier evaluator, under MLflow's
names where it has one, computed here because MLflow's evaluator gets no probabilities from
this project's pyfunc model. Each is checked against sklearn.metrics in the tests.

Conventions (they match sklearn.metrics where sklearn defines the case):
* Binary (2 classes): the positive class is index 1; proba is (n, 1) P(class 1) or (n, 2);
  a row is predicted 1 when P(class 1) > threshold. ``precision``, ``recall`` and ``f1``
  are class 1's; a zero denominator gives 0.0 (sklearn's zero_division=0).
* Multi-class (k > 2): proba (n, k), prediction = argmax (first on ties). ``precision``,
  ``recall`` and ``f1`` are the macro averages.
* ``*_macro`` / ``*_weighted``: sklearn's average="macro" / "weighted" (zero_division=0) over
  the classes that occur in y_true or in the predictions (sklearn's default labels); weighted
  by each class's support (its rows in y_true). The per-class table has a row for every class.
* ``roc_auc``: the rank statistic, tied scores sharing their average rank; multi-class: the
  one-vs-rest macro average over the classes present in y_true (sklearn raises unless all k
  are; then both agree).
* ``precision_recall_auc``: average precision (sklearn's average_precision_score: precision
  at each threshold weighted by the recall it adds, no interpolation); multi-class: the
  one-vs-rest macro average over the classes present in y_true, as roc_auc.
* Both are NaN when y_true holds a single class: no positive/negative pair exists to rank
  (all negative: nothing to recall; all positive: every ranking scores 1, which says
  nothing about the model).
* ``log_loss`` clips probabilities to [1e-15, 1 - 1e-15]. ``mse`` is the mean over the (n, k)
  one-hot targets. ``brier_score`` is sklearn's brier_score_loss: the mean over rows of
  sum_c (p_c - y_c)^2, halved for 2 classes, so binary Brier = mean((p - y)^2) = mse in
  [0, 1]; for k > 2 it is k * mse, in [0, 2].
* ``calibration_error``: expected calibration error over :data:`CALIBRATION_BINS`
  equal-width bins (b/10, (b+1)/10] of the predicted class's probability (the first bin also
  holds 0): sum over bins of (rows in bin / n) * |accuracy - mean probability| in the bin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_EPS = 1e-15
# The names a split reports, without its prefix (test_, val_): pipeline.config.schema's
# METRIC_NAMES, which this stage cannot import (a test keeps the two equal).
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mse",
                "precision_recall_auc", "brier_score", "calibration_error",
                "precision_macro", "recall_macro", "f1_macro",
                "precision_weighted", "recall_weighted", "f1_weighted")
CALIBRATION_BINS = 10
# predictions.csv: one column per class, named as the served model names its columns.
PROBABILITY_PREFIX = "probability_"
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")
AVERAGES = ("macro", "weighted")  # the per-class table's last rows: "macro avg", ...


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts with rows = actual class, columns = predicted class, both in ``labels`` order."""

    labels: list[str]
    matrix: list[list[int]]

    def to_dict(self) -> dict[str, list]:
        return {"labels": list(self.labels), "matrix": [list(row) for row in self.matrix]}


@dataclass(frozen=True, eq=False)
class Evaluation:
    """metrics (``<prefix>_<name>`` floats, names in :data:`METRIC_NAMES` order), confusion
    matrix, predictions (n rows: probability, predicted_label, actual_label, then
    ``probability_<class>`` per class) and per_class (:data:`PER_CLASS_COLUMNS`: one row per
    class, then "macro avg" and "weighted avg")."""

    metrics: dict[str, float]
    confusion: ConfusionMatrix
    predictions: pd.DataFrame
    per_class: pd.DataFrame
    prefix: str = "test"

    def metric(self, name: str) -> float:
        """The figure ``name`` (a :data:`METRIC_NAMES` entry) under this split's prefix."""
        return self.metrics[f"{self.prefix}_{name}"]


def _full_proba(proba: np.ndarray, n: int, k: int) -> np.ndarray:
    """(n, k) class probabilities from (n,), (n, 1) binary or (n, k) input."""
    P = np.asarray(proba, dtype=np.float64)
    if P.ndim == 1:
        P = P[:, None]
    if P.ndim != 2 or P.shape[0] != n or P.shape[1] not in ({1, k} if k == 2 else {k}):
        raise ValueError(f"proba must be (n={n}, 1) for 2 classes or (n, {k}); got {P.shape}")
    if not np.all(np.isfinite(P)) or P.min() < 0 or P.max() > 1:
        raise ValueError("proba must hold finite probabilities in [0, 1]")
    return np.column_stack([1.0 - P[:, 0], P[:, 0]]) if P.shape[1] == 1 else P


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of scores (n,), ties sharing their average rank."""
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts_group = np.r_[True, ordered[1:] != ordered[:-1]]
    group = np.cumsum(starts_group) - 1
    starts = np.flatnonzero(starts_group)
    ends = np.r_[starts[1:], len(scores)]
    ranks = np.empty(len(scores))
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def _roc_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUC of scores (n,) for the boolean mask ``positive`` (n,); NaN if one class."""
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(scores)[positive].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def precision_recall_curve(positive: np.ndarray, scores: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold of ``scores`` (n,), highest first,
    after the point (recall 0, precision 1); ``positive``: boolean (n,) with a True."""
    order = np.argsort(-scores, kind="mergesort")
    hits, ordered = positive[order], scores[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]  # a threshold's last row (ties at once)
    tps, seen = np.cumsum(hits)[last], np.flatnonzero(last) + 1.0
    return np.r_[1.0, tps / seen], np.r_[0.0, tps / tps[-1]]


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of ``scores`` (n,) for the boolean mask ``positive`` (n,): sum of
    precision x recall gained over the thresholds; NaN if one class (module docstring)."""
    if positive.all() or not positive.any():
        return float("nan")
    precision, recall = precision_recall_curve(positive, scores)
    return float(np.sum(np.diff(recall) * precision[1:]))


def reliability(hits: np.ndarray, scores: np.ndarray, n_bins: int = CALIBRATION_BINS
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per non-empty bin (b/n_bins, (b+1)/n_bins] of ``scores`` (n,) in [0, 1]: the mean
    score, the share of ``hits`` (boolean (n,)) and the row count."""
    bins = np.searchsorted(np.arange(1, n_bins) / n_bins, scores, side="left")
    counts = np.bincount(bins, minlength=n_bins)
    filled = counts > 0
    score_sums = np.bincount(bins, weights=scores, minlength=n_bins)
    hit_sums = np.bincount(bins, weights=hits.astype(np.float64), minlength=n_bins)
    counts = counts[filled]
    return score_sums[filled] / counts, hit_sums[filled] / counts, counts


def _calibration_error(hits: np.ndarray, confidence: np.ndarray) -> float:
    """Expected calibration error (module docstring) of the predicted class's probability."""
    mean_score, hit_rate, counts = reliability(hits, confidence)
    return float(np.sum(counts * np.abs(hit_rate - mean_score)) / confidence.size)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """top / bottom elementwise, 0.0 where bottom is 0 (sklearn's zero_division=0)."""
    out = np.zeros(top.shape, dtype=np.float64)
    np.divide(top, bottom, out=out, where=bottom != 0)
    return out


def _per_class(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision, recall, F1 (rows of a (3, k) array) and support (k,) of each class."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, support = confusion.sum(axis=0), confusion.sum(axis=1)
    fp, fn = predicted - tp, support - tp
    scores = np.vstack([_ratio(tp, tp + fp), _ratio(tp, tp + fn), _ratio(2 * tp, 2 * tp + fp + fn)])
    return scores, support


def _averages(scores: np.ndarray, support: np.ndarray, seen: np.ndarray) -> dict[str, np.ndarray]:
    """Macro and support-weighted averages of ``scores`` (3, k) over the ``seen`` classes."""
    return {"macro": scores[:, seen].mean(axis=1),
            "weighted": scores[:, seen] @ support[seen] / support[seen].sum()}


def _per_class_table(names: list[str], scores: np.ndarray, support: np.ndarray,
                     averages: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per class, then one per average (support: all rows, as sklearn's report)."""
    rows = [[name, *scores[:, c], int(support[c])] for c, name in enumerate(names)]
    rows += [[f"{kind} avg", *averages[kind], int(support.sum())] for kind in AVERAGES]
    return pd.DataFrame(rows, columns=list(PER_CLASS_COLUMNS))


def _ranking(P: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision (module docstring: binary, one-vs-rest, NaN)."""
    if P.shape[1] == 2:
        return _roc_auc(y == 1, P[:, 1]), average_precision(y == 1, P[:, 1])
    present = np.unique(y)
    if present.size < 2:
        return float("nan"), float("nan")
    aucs = [_roc_auc(y == c, P[:, c]) for c in present]
    aps = [average_precision(y == c, P[:, c]) for c in present]
    return float(np.mean(aucs)), float(np.mean(aps))


def _predictions(P: np.ndarray, pred: np.ndarray, y: np.ndarray, names: list[str]
                 ) -> pd.DataFrame:
    """The per-row table: the first three columns as before per-class columns existed."""
    labels = np.array(names, dtype=object)
    rows = np.arange(y.size)
    columns = {
        "probability": P[:, 1] if len(names) == 2 else P[rows, pred],
        "predicted_label": labels[pred],
        "actual_label": labels[y],
    }
    columns.update({f"{PROBABILITY_PREFIX}{name}": P[:, c] for c, name in enumerate(names)})
    return pd.DataFrame(columns)


def evaluate(
    proba: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    *,
    threshold: float = 0.5,
    prefix: str = "test",
) -> Evaluation:
    """Score predicted probabilities against class indices (conventions: module docstring).

    proba: (n, 1) sigmoid P(class 1) or (n, k) softmax; y_true: (n,) ints in 0..k-1;
    classes: k class names, used for the confusion labels and the tables; prefix: the
    split the metrics are named after (``test_accuracy``, ``val_accuracy``).
    """
    names = [str(c) for c in classes]
    k = len(names)
    y = np.asarray(y_true)
    if k < 2 or y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"need >= 2 classes and y_true (n >= 1,) of ints; got {k}, {y.shape}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds indices outside 0..{k - 1}")
    P = _full_proba(proba, y.size, k)
    rows = np.arange(y.size)
    pred = (P[:, 1] > threshold).astype(np.int64) if k == 2 else np.argmax(P, axis=1)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    scores, support = _per_class(confusion)
    seen = np.zeros(k, dtype=bool)
    seen[np.union1d(y, pred)] = True
    averages = _averages(scores, support, seen)
    precision, recall, f1 = scores[:, 1] if k == 2 else averages["macro"]
    auc, ap = _ranking(P, y)
    squared = (P - np.eye(k)[y]) ** 2
    picked = np.clip(P[rows, y], _EPS, 1 - _EPS)
    values = {
        "accuracy": float(np.mean(pred == y)),
        "precision": float(precision), "recall": float(recall), "f1": float(f1),
        "roc_auc": auc,
        "log_loss": float(-np.mean(np.log(picked))),
        "mse": float(np.mean(squared)),
        "precision_recall_auc": ap,
        "brier_score": float(np.mean(squared.sum(axis=1)) * (0.5 if k == 2 else 1.0)),
        "calibration_error": _calibration_error(pred == y, P[rows, pred]),
    }
    for kind in AVERAGES:
        for name, value in zip(("precision", "recall", "f1"), averages[kind], strict=True):
            values[f"{name}_{kind}"] = float(value)
    return Evaluation(
        metrics={f"{prefix}_{name}": values[name] for name in METRIC_NAMES},
        confusion=ConfusionMatrix(labels=names, matrix=confusion.astype(int).tolist()),
        predictions=_predictions(P, pred, y, names),
        per_class=_per_class_table(names, scores, support, averages),
        prefix=prefix,
    )
