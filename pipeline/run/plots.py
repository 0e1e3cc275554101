"""PNG plots of a run: training curves, probabilities, ROC, precision-recall and calibration
curves, confusion matrix, decision boundary.

Each function draws one figure off-screen (Agg), writes it to ``path``, closes it and returns
the path. Inputs are arrays and plain sequences; nothing here trains or tracks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipeline.files import atomic_path
from stages.evaluate import average_precision, precision_recall_curve, reliability

PathLike = str | os.PathLike[str]


def _save(fig: Figure, path: PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` (parents created; whole or not at all), always
    closing it."""
    out = Path(path)
    try:
        fig.tight_layout()
        with atomic_path(out, ".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return out


def _roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    order = np.argsort(-scores, kind="mergesort")
    pos, ordered = positive[order], scores[order]
    last = np.r_[ordered[1:] != ordered[:-1], True]
    tps, fps = np.cumsum(pos)[last], np.cumsum(~pos)[last]
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def _auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def plot_training_curves(history: Mapping[str, Sequence[float]], path: PathLike) -> Path:
    """Panels for losses (train_loss, val_loss), accuracies (*accuracy*) and train_mse;
    x = epoch (1-based). history: metric name -> one value per epoch."""
    panels = [
        ("loss", [k for k in ("train_loss", "val_loss") if k in history]),
        ("accuracy", [k for k in history if "accuracy" in k]),
        ("mse", [k for k in ("train_mse", "val_mse") if k in history]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        for key in keys:
            values = np.asarray(history[key], dtype=float)
            ax.plot(np.arange(1, values.size + 1), values, label=key)
        ax.set(title=title, xlabel="epoch")
        if keys:
            ax.legend(loc="lower right" if title == "accuracy" else "upper right")
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
    return _save(fig, path)


def plot_probability_vs_label(
    proba_pos: np.ndarray, actual: np.ndarray, path: PathLike, *, threshold: float = 0.5
) -> Path:
    """RustNet's scatter: P(class 1) (n,) against the actual 0/1 label (n,), jittered
    vertically by a fixed-seed generator, with the decision threshold as a line."""
    p = np.asarray(proba_pos, dtype=float).ravel()
    y = np.asarray(actual, dtype=float).ravel()
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, y.size)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(p, y + jitter, s=10, alpha=0.5, c=y, cmap="coolwarm", vmin=0, vmax=1)
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set(xlabel="predicted probability of class 1", ylabel="actual label (jittered)",
           yticks=[0, 1], xlim=(-0.02, 1.02), title="Predicted probability vs actual label")
    ax.legend(loc="center right")
    return _save(fig, path)


def plot_roc_curve(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: PathLike
) -> Path:
    """ROC of proba (n, 1) P(class 1) or (n, k) against y_true (n,): one curve when binary,
    one-vs-rest curves per class otherwise; AUC in the legend."""
    y = np.asarray(y_true).ravel()
    P = np.asarray(proba, dtype=float)
    P = P.reshape(-1, 1) if P.ndim == 1 else P
    columns = [(P.shape[1] - 1, str(classes[-1]))] if P.shape[1] <= 2 else list(
        zip(range(P.shape[1]), map(str, classes), strict=True)
    )
    fig, ax = plt.subplots(figsize=(5, 5))
    for c, name in columns:
        positive = y == (1 if P.shape[1] <= 2 else c)
        if positive.all() or not positive.any():
            continue  # no curve without both positives and negatives
        fpr, tpr = _roc_points(positive, P[:, c])
        ax.plot(fpr, tpr, label=f"class {name} (AUC {_auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _one_vs_rest(y: np.ndarray, P: np.ndarray, classes: Sequence[str]
                 ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(class name, is that class (n,), its scores (n,)): class 1 alone when P is (n, 1) or
    (n, 2), every class otherwise."""
    if P.shape[1] <= 2:
        return [(str(classes[-1]), y == 1, P[:, -1])]
    return [(str(name), y == c, P[:, c]) for c, name in enumerate(classes)]


def _as_columns(proba: np.ndarray) -> np.ndarray:
    P = np.asarray(proba, dtype=float)
    return P.reshape(-1, 1) if P.ndim == 1 else P


def plot_precision_recall_curve(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: PathLike
) -> Path:
    """Precision against recall for proba (n, 1) P(class 1) or (n, k) against y_true (n,):
    one curve when binary, one-vs-rest curves per class otherwise; average precision (the
    evaluate stage's) in the legend, and each class's share of rows as its chance level."""
    y = np.asarray(y_true).ravel()
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, positive, scores in _one_vs_rest(y, _as_columns(proba), classes):
        if positive.all() or not positive.any():
            continue  # no curve without both positives and negatives
        precision, recall = precision_recall_curve(positive, scores)
        line, = ax.plot(recall, precision, drawstyle="steps-pre",
                        label=f"class {name} (AP {average_precision(positive, scores):.3f})")
        ax.axhline(positive.mean(), color=line.get_color(), linestyle=":", linewidth=1,
                   label=f"chance, class {name} ({positive.mean():.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve",
           xlim=(-0.02, 1.02), ylim=(-0.02, 1.05))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_calibration_curve(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: PathLike, *,
    brier: float, ece: float,
) -> Path:
    """Reliability diagram over ten equal-width bins, with the diagonal of a calibrated
    model: binary, the share of class 1 against the mean P(class 1) in each bin; more
    classes, the accuracy against the mean probability of the predicted (argmax) class.
    The Brier score and the expected calibration error (the run's figures) in the title."""
    y = np.asarray(y_true).ravel()
    P = _as_columns(proba)
    if P.shape[1] <= 2:
        hits, scores = y == 1, P[:, -1]
        xlabel, ylabel = f"mean P(class {classes[-1]})", f"share of class {classes[-1]}"
    else:
        pred = np.argmax(P, axis=1)
        hits, scores = pred == y, P[np.arange(len(P)), pred]
        xlabel, ylabel = "mean probability of the predicted class", "accuracy"
    mean_score, hit_rate, counts = reliability(hits, scores)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    ax.plot(mean_score, hit_rate, marker="o", label="model")
    for x, rate, count in zip(mean_score, hit_rate, counts, strict=True):
        ax.annotate(str(count), (x, rate), textcoords="offset points", xytext=(4, -10),
                    fontsize="x-small", color="grey")
    ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
           title=f"Calibration curve (Brier {brier:.3f}, ECE {ece:.3f})")
    ax.legend(loc="upper left", title="rows per bin in grey", title_fontsize="x-small")
    return _save(fig, path)


def plot_confusion_matrix(
    labels: Sequence[str], matrix: Sequence[Sequence[int]], path: PathLike
) -> Path:
    """Heatmap of counts (k, k), rows = actual, columns = predicted, each cell annotated."""
    counts = np.asarray(matrix, dtype=int)
    k = counts.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 * k + 3, 1.2 * k + 2))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    for i in range(k):
        for j in range(k):
            dark = counts[i, j] > counts.max() / 2
            ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                    color="white" if dark else "black")
    ticks = list(range(k))
    ax.set(xticks=ticks, yticks=ticks, xticklabels=list(labels), yticklabels=list(labels),
           xlabel="predicted", ylabel="actual", title="Confusion matrix")
    return _save(fig, path)


def plot_decision_boundary(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    path: PathLike,
    grid: int = 200,
    margin: float = 0.05,
) -> Path:
    """Contour of P(class 1) (or of the predicted class when k > 2) over the raw 2-feature
    space, with the points. X: (n, 2) raw features; y: (n,); predict_proba takes raw
    (m, 2) rows and returns (m, 1) or (m, k). The grid reaches ``margin`` times each
    feature's range beyond the data."""
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"plot_decision_boundary needs X of shape (n, 2), got {X.shape}")
    low, high = X.min(axis=0), X.max(axis=0)
    pad = np.where(high > low, (high - low) * margin, margin * 20)
    xs, ys = (np.linspace(low[i] - pad[i], high[i] + pad[i], grid) for i in range(2))
    gx, gy = np.meshgrid(xs, ys)
    P = np.asarray(predict_proba(np.column_stack([gx.ravel(), gy.ravel()])), dtype=float)
    P = P.reshape(gx.size, -1)
    binary = P.shape[1] <= 2
    surface = (P[:, -1] if binary else np.argmax(P, axis=1)).reshape(gx.shape)
    fig, ax = plt.subplots(figsize=(6, 5))
    levels = np.linspace(0, 1, 11) if binary else np.arange(P.shape[1] + 1) - 0.5
    filled = ax.contourf(gx, gy, surface, levels=levels, cmap="coolwarm", alpha=0.6)
    if binary:
        ax.contour(gx, gy, surface, levels=[0.5], colors="k", linewidths=1)
    fig.colorbar(filled, ax=ax, label="P(class 1)" if binary else "predicted class")
    ax.scatter(X[:, 0], X[:, 1], c=np.asarray(y), cmap="coolwarm", s=8, edgecolors="k",
               linewidths=0.2)
    ax.set(xlabel=feature_names[0], ylabel=feature_names[1], title="Decision boundary")
    return _save(fig, path)
