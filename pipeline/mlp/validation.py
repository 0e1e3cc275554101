"""Checks on user data: features X and class labels y.

Accepts NumPy arrays, pandas DataFrames/Series (through ``.to_numpy()``, duck-typed) and lists.
Errors say what was expected and what was given. Nothing here modifies its input; the result
may share memory with it, so callers copy before writing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")


class SettingError(ValueError):
    """A training setting out of range: which one (``name``, the keyword or the optimiser
    option), the ``value`` given and the ``rule`` it breaks, so that a caller can name the
    setting its own way (the pipeline says ``optimizer.lr``)."""

    def __init__(self, name: str, value: Any, rule: str) -> None:
        super().__init__(f"{name} must be {rule}, got {value!r}")
        self.name, self.value, self.rule = name, value, rule


def lookup(registry: Mapping[str, T], kind: str, name: str) -> T:
    """``registry[name]``; ValueError "unknown <kind> 'x'; valid: [...]" if it is not there."""
    try:
        return registry[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(registry)}") from None


def _as_array(data: Any, name: str) -> np.ndarray:
    if hasattr(data, "to_numpy"):  # pandas DataFrame / Series, without importing pandas
        data = data.to_numpy()
    try:
        return np.asarray(data)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name} could not be read as an array of numbers: {error}") from None


def check_features(X: Any, n_features: int, dtype: npt.DTypeLike,
                   name: str = "X") -> npt.NDArray[np.floating]:
    """X as a finite (n_samples, n_features) array of ``dtype``; ValueError otherwise."""
    array = _as_array(X, name)
    if array.ndim != 2:
        hint = (f"; use {name}.reshape(-1, 1) for one feature or {name}.reshape(1, -1) "
                "for one sample") if array.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got {array.ndim}-D "
                         f"with shape {array.shape}{hint}")
    if array.dtype.kind not in "biuf":
        if array.dtype.kind != "O":
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
        try:
            array = array.astype(np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"{name} must hold real numbers, got values of dtype object "
                             "that are not numbers") from None
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty: it has 0 samples")
    if array.shape[1] != n_features:
        raise ValueError(f"{name} has {array.shape[1]} features, but the network expects "
                         f"{n_features} (layer_sizes[0])")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(dtype, copy=False)
    finite = np.isfinite(converted)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        bad = array[row, col].item()
        if math.isfinite(bad):
            raise ValueError(f"{name}[{row}, {col}] = {bad!r} does not fit in {np.dtype(dtype)} "
                             "(this network's dtype); scale the inputs")
        raise ValueError(f"{name} must be finite, but {name}[{row}, {col}] = {bad!r} "
                         f"({int((~finite).sum())} non-finite value(s) in all)")
    return converted


def check_labels(y: Any, n_samples: int, n_classes: int, output: str,
                 name: str = "y") -> npt.NDArray[np.int64]:
    """y as (n_samples,) int64 class indices in 0..n_classes-1; ValueError otherwise."""
    array = _as_array(y, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        hint = "; pass class indices, not one-hot rows" if array.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (n_samples,) or (n_samples, 1) of class "
                         f"indices, got shape {array.shape}{hint}")
    if array.shape[0] != n_samples:
        raise ValueError(f"X has {n_samples} samples but {name} has {array.shape[0]}")
    expected = f"class indices 0..{n_classes - 1} ({n_classes} classes for output={output!r})"
    if array.dtype.kind not in "biuf":
        example = array.flat[0] if array.size else None
        raise ValueError(f"{name} must hold {expected}, got dtype {array.dtype} "
                         f"(e.g. {example!r}); encode the labels as integers first")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(f"{name} must hold {expected}, got {array[bad][0].item()!r} "
                             f"({int(bad.sum())} such value(s))")
    outside = (array < 0) | (array > n_classes - 1)
    if outside.any():
        found = np.unique(array[outside])[:5].tolist()
        raise ValueError(f"{name} must hold {expected}, got {found} "
                         f"({int(outside.sum())} value(s) outside the range)")
    return array.astype(np.int64)
