"""Test-set metrics, confusion matrix and a per-row prediction table, in NumPy only.

Conventions (they match sklearn.metrics where sklearn defines the case):
* Binary (2 classes): the positive class is index 1; proba is (n, 1) P(class 1) or (n, 2);
  a row is predicted 1 when P(class 1) > threshold. Precision, recall and F1 of class 1;
  a zero denominator gives 0.0 (sklearn's zero_division=0).
* Multi-class (k > 2): proba (n, k), prediction = argmax (first on ties). Precision, recall
  and F1 are macro averages over the classes that occur in y_true or in the predictions
  (sklearn's default labels); ROC AUC is the one-vs-rest macro average over the classes
  present in y_true (sklearn raises unless all k are present; then both agree).
* ROC AUC uses the rank statistic with tied scores given their average rank. It is NaN when
  y_true holds a single class, since no positive/negative pair exists to rank.
* Log loss clips probabilities to [1e-15, 1 - 1e-15]; MSE is the mean over the (n, k)
  one-hot targets, which for binary data equals mean((p - y)^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

_EPS = 1e-15


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts with rows = actual class, columns = predicted class, both in ``labels`` order."""

    labels: list[str]
    matrix: list[list[int]]

    def to_dict(self) -> dict[str, list]:
        return {"labels": list(self.labels), "matrix": [list(row) for row in self.matrix]}


@dataclass(frozen=True, eq=False)
class Evaluation:
    """metrics (test_* floats), confusion matrix, predictions (n rows:
    probability, predicted_label, actual_label)."""

    metrics: dict[str, float]
    confusion: ConfusionMatrix
    predictions: pd.DataFrame


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


def _prf(confusion: np.ndarray, c: int) -> tuple[float, float, float]:
    """Precision, recall, F1 of class c from a (k, k) confusion matrix; 0.0 on 0/0."""
    tp = confusion[c, c]
    fp = confusion[:, c].sum() - tp
    fn = confusion[c, :].sum() - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return float(precision), float(recall), float(f1)


def evaluate(
    proba: np.ndarray,
    y_true: np.ndarray,
    classes: Sequence[str],
    *,
    threshold: float = 0.5,
) -> Evaluation:
    """Score predicted probabilities against class indices (conventions: module docstring).

    proba: (n, 1) sigmoid P(class 1) or (n, k) softmax; y_true: (n,) ints in 0..k-1;
    classes: k class names, used for the confusion labels and the prediction table.
    """
    names = [str(c) for c in classes]
    k = len(names)
    y = np.asarray(y_true)
    if k < 2 or y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"need >= 2 classes and y_true (n >= 1,) of ints; got {k}, {y.shape}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds indices outside 0..{k - 1}")
    P = _full_proba(proba, y.size, k)
    pred = (P[:, 1] > threshold).astype(np.int64) if k == 2 else np.argmax(P, axis=1)
    confusion = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    if k == 2:
        precision, recall, f1 = _prf(confusion, 1)
        auc = _roc_auc(y == 1, P[:, 1])
    else:
        seen = np.union1d(y, pred)
        precision, recall, f1 = (float(v) for v in np.mean([_prf(confusion, c) for c in seen], 0))
        aucs = [_roc_auc(y == c, P[:, c]) for c in np.unique(y)]
        auc = float(np.mean(aucs)) if len(aucs) > 1 else float("nan")
    onehot = np.eye(k)[y]
    picked = np.clip(P[np.arange(y.size), y], _EPS, 1 - _EPS)
    metrics = {
        "test_accuracy": float(np.mean(pred == y)),
        "test_precision": precision,
        "test_recall": recall,
        "test_f1": f1,
        "test_roc_auc": auc,
        "test_log_loss": float(-np.mean(np.log(picked))),
        "test_mse": float(np.mean((P - onehot) ** 2)),
    }
    labels = np.array(names, dtype=object)
    predictions = pd.DataFrame(
        {
            "probability": P[:, 1] if k == 2 else P[np.arange(y.size), pred],
            "predicted_label": labels[pred],
            "actual_label": labels[y],
        }
    )
    return Evaluation(
        metrics=metrics,
        confusion=ConfusionMatrix(labels=names, matrix=confusion.astype(int).tolist()),
        predictions=predictions,
    )
