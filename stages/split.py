"""Split a Dataset into train / (val) / test, reproducing RustNet's shuffled 80/20 split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.dataset import DataError, Dataset


@dataclass(frozen=True, eq=False)
class Splits:
    """train, test and an optional val Dataset (None when split.val_fraction is 0)."""

    train: Dataset
    test: Dataset
    val: Dataset | None


def _sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """(n_train, n_val, n_test). n_train + n_val == int(0.8 * n) for test_fraction 0.2,
    exactly as RustNet: rounding 1 - test_fraction to 12 digits gives the literal 0.8."""
    n_train_total = int(round(1.0 - test_fraction, 12) * n)
    n_val = round(val_fraction * n)
    return n_train_total - n_val, n_val, n - n_train_total


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integers proportional to ``weights`` (k,) summing to ``total`` (exact arithmetic)."""
    w = [int(v) for v in weights]
    whole = sum(w)
    if whole == 0:
        return np.zeros(len(w), dtype=np.int64)
    base = np.array([total * v // whole for v in w], dtype=np.int64)
    fraction = np.array([total * v % whole for v in w], dtype=np.int64)
    order = np.argsort(-fraction, kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base


def _stratified_indices(
    y: np.ndarray, n_val: int, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class shuffle and proportional allocation; each split is then shuffled once more."""
    members = [rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)]
    counts = np.array([len(m) for m in members])
    n_test_c = _largest_remainder(n_test, counts)
    n_val_c = _largest_remainder(n_val, counts - n_test_c)
    n_train_c = counts - n_test_c - n_val_c
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for m, a, b in zip(members, n_train_c, n_val_c, strict=True):
        parts[0].append(m[:a])
        parts[1].append(m[a : a + b])
        parts[2].append(m[a + b :])
    train, val, test = (rng.permutation(np.concatenate(p)) for p in parts)
    return train, val, test


def _check_train_classes(
    data: Dataset, train: np.ndarray, stratify: bool, context: str
) -> None:
    present = np.unique(data.y)
    in_train = np.unique(data.y[train])
    if len(present) < 2:
        raise DataError(
            f"the data holds a single class ({data.classes[present[0]]!r}); a classifier needs "
            "at least 2: check data.label_column"
        )
    if stratify and len(in_train) < len(present):
        lost = int(np.setdiff1d(present, in_train)[0])
        raise DataError(
            f"{context}: train would have no rows of class {data.classes[lost]!r} "
            f"({int(np.sum(data.y == lost))} rows in the data); use more rows or lower the "
            "fractions"
        )
    if len(in_train) < 2:
        raise DataError(
            f"{context}: train would hold only class {data.classes[in_train[0]]!r}; use more "
            "rows, lower the fractions, or set split.stratify=true"
        )


def split_dataset(
    data: Dataset,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.0,
    stratify: bool = False,
    seed: int = 7,
) -> Splits:
    """Shuffle with ``default_rng(seed)`` and cut train | val | test, test last.

    Unstratified (RustNet): ``idx = arange(n); rng.shuffle(idx)``; the first
    ``int((1 - test_fraction) * n)`` shuffled rows are train+val, the rest test; val is the
    last ``round(val_fraction * n)`` rows of that part, so the test split does not depend on
    val_fraction. Stratified: the same sizes, shared out over classes by largest remainder
    after shuffling each class; each split is then shuffled with the same generator.
    The fractions arrive checked (``pipeline.config.schema.SplitConfig``: test in (0, 1), val in
    [0, 1), their sum < 1); what depends on the data (enough rows for each split) is checked
    here.
    Returns Splits of Datasets: train (n_train, d), test (n_test, d), val (n_val, d) | None.
    """
    tf, vf = test_fraction, val_fraction  # checked by pipeline.config.schema.SplitConfig
    n = data.n_samples
    n_train, n_val, n_test = _sizes(n, tf, vf)
    context = f"{n} rows is too few for split.test_fraction={tf:g}" + (
        f" and split.val_fraction={vf:g}" if vf else ""
    )
    if n_train < 1 or n_test < 1 or (vf > 0 and n_val < 1):
        raise DataError(
            f"{context} (train would have {n_train} rows, val {n_val}, test {n_test}); "
            "use more rows or change the fractions"
        )
    rng = np.random.default_rng(seed)
    if stratify:
        train, val, test = _stratified_indices(data.y, n_val, n_test, rng)
    else:
        idx = np.arange(n)
        rng.shuffle(idx)
        train, val, test = idx[:n_train], idx[n_train : n - n_test], idx[n - n_test :]
    _check_train_classes(data, train, stratify, context)
    return Splits(
        train=data.take(train),
        test=data.take(test),
        val=data.take(val) if vf > 0 else None,
    )


# -- k folds over the training rows (split.folds) ----------------------------------------------
def assign_folds(data: Dataset, folds: int, *, stratify: bool, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each row of ``data`` (the rows outside the test split).

    ``default_rng(seed)`` shuffles the rows (stratified: each class's rows, classes in index
    order), then deals them to the folds in turn, so fold sizes differ by at most one (and,
    stratified, each class's count per fold too). DataError (one line naming split.folds)
    when a fold cannot be trained or held out: fewer rows than folds, or a class whose rows
    all fall into one fold (that fold's training part would not know it).
    Returns an int64 array (n,).
    """
    n = data.n_samples
    if n < folds:
        raise DataError(f"split.folds={folds}: the {n} rows outside the test split are fewer "
                        f"than {folds} folds; use fewer folds or more rows")
    rng = np.random.default_rng(seed)
    if stratify:
        order = np.concatenate([rng.permutation(np.flatnonzero(data.y == c))
                                for c in np.unique(data.y)])
    else:
        order = rng.permutation(n)
    assignment = np.empty(n, dtype=np.int64)
    assignment[order] = np.arange(n) % folds
    _check_fold_classes(data, assignment, folds, stratify)
    return assignment


def _check_fold_classes(data: Dataset, assignment: np.ndarray, folds: int,
                        stratify: bool) -> None:
    """Every class of ``data`` is in the training part (the other folds) of every fold."""
    for c in np.unique(data.y):
        holding = np.unique(assignment[data.y == c])
        if len(holding) == 1:
            fix = "more rows of that class" + ("" if stratify else ", split.stratify=true")
            raise DataError(
                f"split.folds={folds}: the training part of fold {int(holding[0]) + 1} has no "
                f"rows of class {data.classes[c]!r} ({int(np.sum(data.y == c))} of the "
                f"{data.n_samples} rows); use {fix} or split.folds=null")


def fold_parts(data: Dataset, assignment: np.ndarray, fold: int) -> tuple[Dataset, Dataset]:
    """(training part, held-out part) of fold ``fold`` (0-based): the rows of the other
    folds and the fold's own, each in the order of ``data``."""
    held = assignment == fold
    return data.take(np.flatnonzero(~held)), data.take(np.flatnonzero(held))
