"""Z-score normalisation fitted on the training split only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from stages.dataset import DataError, Dataset
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


# Below this std the squared deviations were subnormal (or 0) and lost their precision.
_EXACT_STD = float(np.sqrt(np.finfo(np.float64).tiny))


def fit_normaliser(X_train: np.ndarray) -> Normaliser:
    """Mean and population std (ddof=0) per column of X_train: (n_samples, n_features).

    A constant column (max == min) gets mean = its value and std 1, so it maps to 0 instead
    of to rounding noise. A column whose plain mean or std is not representable (values near
    1e300 overflow the squares, spreads below 1e-154 underflow them) gets them computed on
    the column divided by its largest magnitude, then scaled back; every other column keeps
    the plain formula's exact bits.
    """
    X = np.asarray(X_train, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"fit_normaliser needs X of shape (n >= 1, d), got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("fit_normaliser needs finite X; load_csv rejects missing values")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        mean = X.mean(axis=0)
        std = X.std(axis=0)
    constant = X.max(axis=0) == X.min(axis=0)
    rescale = ~constant & ~(np.isfinite(mean) & np.isfinite(std) & (std >= _EXACT_STD))
    if np.any(rescale):
        scaled_mean, scaled_std = _scaled_statistics(X[:, rescale])
        mean[rescale] = np.where(np.isfinite(mean[rescale]), mean[rescale], scaled_mean)
        std[rescale] = scaled_std
    mean = np.where(constant, X[0], mean)
    std = np.where(constant, 1.0, std)
    return Normaliser(mean=mean, std=std)


def _scaled_statistics(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of non-constant columns, computed on X / 2**e with 2**e just above
    max|X| (values within [-1, 1], so neither sums nor squares leave float64's range) and
    scaled back. A power of two scales without rounding."""
    _, exponent = np.frexp(np.max(np.abs(X), axis=0))
    unit = np.ldexp(X, -exponent)
    return np.ldexp(unit.mean(axis=0), exponent), np.ldexp(unit.std(axis=0), exponent)


def _apply(data: Dataset, normaliser: Normaliser, split: str) -> Dataset:
    """``data`` with its features normalised; DataError (one line) for a feature whose
    z-scores leave float64's range (values near +-1.8e308 far from the mean)."""
    with np.errstate(over="ignore", invalid="ignore"):
        X = normaliser.transform(data.X)
    finite = np.isfinite(X).all(axis=0)
    if not finite.all():
        column = int(np.argmin(finite))
        raise DataError(
            f"data: feature {data.feature_names[column]!r} of the {split} split cannot be "
            f"normalised in float64 (its values, up to {np.max(np.abs(data.X[:, column])):.3g} "
            f"in magnitude, lie too far from the training mean "
            f"{normaliser.mean[column]:.3g}); rescale that column in the file")
    return dataclasses.replace(data, X=X)


def normalise(splits: Splits) -> NormalisedSplits:
    """Fit a Normaliser on splits.train ONLY and apply it to train, test and val.

    RustNet standardised all rows before splitting, so its test set leaked into the
    statistics; here the test and val rows never influence mean or std.
    """
    normaliser = fit_normaliser(splits.train.X)
    return NormalisedSplits(
        train=_apply(splits.train, normaliser, "train"),
        test=_apply(splits.test, normaliser, "test"),
        val=None if splits.val is None else _apply(splits.val, normaliser, "validation"),
        normaliser=normaliser,
    )
