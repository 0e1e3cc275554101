"""Z-score normalisation fitted on the training split only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stages.dataset import Dataset
from stages.split import Splits


def _frozen_vector(values: np.ndarray | Sequence[float]) -> np.ndarray:
    out = np.array(values, dtype=np.float64, copy=True)
    if out.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {out.shape}")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Normaliser:
    """Per-feature statistics: mean (d,), std (d,), std > 0 and finite."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        mean, std = _frozen_vector(self.mean), _frozen_vector(self.std)
        if mean.shape != std.shape:
            raise ValueError(f"mean {mean.shape} and std {std.shape} differ in shape")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise ValueError("Normaliser needs a finite mean and a finite, positive std")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def _check(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected X of shape (n, {self.mean.shape[0]}), got {X.shape}")
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(X - mean) / std as a new array. X: (n_samples, n_features)."""
        return (self._check(X) - self.mean) / self.std

    def inverse_transform(self, Z: np.ndarray) -> np.ndarray:
        """Z * std + mean as a new array. Z: (n_samples, n_features)."""
        return self._check(Z) * self.std + self.mean

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able lists; Python floats round-trip exactly through json."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[float]]) -> Normaliser:
        return cls(mean=np.asarray(data["mean"], dtype=np.float64),
                   std=np.asarray(data["std"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class NormalisedSplits:
    """Splits with X normalised by ``normaliser`` (fitted on train); val is None if absent."""

    train: Dataset
    test: Dataset
    val: Dataset | None
    normaliser: Normaliser


def fit_normaliser(X_train: np.ndarray) -> Normaliser:
    """Mean and population std (ddof=0) per column of X_train: (n_samples, n_features).

    A constant column (max == min) gets mean = its value and std 1, so it maps to 0 instead
    of to rounding noise; a std that overflows to inf also becomes 1.
    """
    X = np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"fit_normaliser needs X of shape (n >= 1, d), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("fit_normaliser needs finite X; load_csv rejects missing values")
    mean = X.mean(axis=0)
    std = X.std(axis=0)
    constant = X.max(axis=0) == X.min(axis=0)
    mean = np.where(constant, X[0], mean)
    std = np.where(constant | ~np.isfinite(std) | (std <= 0), 1.0, std)
    return Normaliser(mean=mean, std=std)


def _apply(data: Dataset, normaliser: Normaliser) -> Dataset:
    return dataclasses.replace(data, X=normaliser.transform(data.X))


def normalise(splits: Splits) -> NormalisedSplits:
    """Fit a Normaliser on splits.train ONLY and apply it to train, test and val.

    RustNet standardised all rows before splitting, so its test set leaked into the
    statistics; here the test and val rows never influence mean or std.
    """
    normaliser = fit_normaliser(splits.train.X)
    return NormalisedSplits(
        train=_apply(splits.train, normaliser),
        test=_apply(splits.test, normaliser),
        val=None if splits.val is None else _apply(splits.val, normaliser),
        normaliser=normaliser,
    )
