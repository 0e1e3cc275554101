"""The Dataset container every stage passes around, and the user-input error type."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


class DataError(ValueError):
    """A problem with the user's data or data config.

    The message is one line that names the problem and the fix, e.g.
    ``data.path: 'foo.csv' does not exist; point data.path at a CSV file``.
    """


def _frozen_copy(values: np.ndarray, dtype: type) -> np.ndarray:
    """A read-only copy of ``values`` as ``dtype`` (the caller's array is never touched)."""
    out = np.array(values, dtype=dtype, copy=True, order="C")
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features, class indices and the names needed to read them back.

    X: (n_samples, n_features) float64, read-only copy.
    y: (n_samples,) int64 class indices in 0..n_classes-1, read-only copy.
    feature_names: one name per column of X.
    label_name: the name of the label column.
    classes: the original label value of each class index, as text (e.g. ("no", "yes")).

    Compare datasets with ``digest()``; ``==`` is identity.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    label_name: str
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        X = _frozen_copy(self.X, np.float64)
        y_raw = np.asarray(self.y)
        integral = np.issubdtype(y_raw.dtype, np.integer)
        if y_raw.size and not integral and not np.all(np.mod(y_raw, 1) == 0):
            raise ValueError("Dataset.y must hold integer class indices")
        y = _frozen_copy(y_raw, np.int64)
        names = tuple(str(name) for name in self.feature_names)
        classes = tuple(str(c) for c in self.classes)
        label = str(self.label_name)
        if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
            raise ValueError(
                f"Dataset needs X (n, d) and y (n,); got X {X.shape} and y {y.shape}"
            )
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} columns of X")
        if len(set(names) | {label}) != len(names) + 1:
            raise ValueError(f"feature and label names must be unique: {names}, {label!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique: {classes}")
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"y holds class indices outside 0..{len(classes) - 1}")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "feature_names", names)
        object.__setattr__(self, "label_name", label)
        object.__setattr__(self, "classes", classes)

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def to_frame(self) -> pd.DataFrame:
        """Feature columns, then the label column holding class indices: (n, d + 1)."""
        frame = pd.DataFrame(np.array(self.X), columns=list(self.feature_names))
        frame[self.label_name] = np.array(self.y)
        return frame

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, label_name: str, classes: Sequence[str]
    ) -> Dataset:
        """Inverse of ``to_frame``: every column but ``label_name`` is a feature."""
        if label_name not in frame.columns:
            raise ValueError(f"label column {label_name!r} not in {list(frame.columns)}")
        features = [c for c in frame.columns if c != label_name]
        return cls(
            X=frame[features].to_numpy(dtype=np.float64),
            y=frame[label_name].to_numpy(),
            feature_names=tuple(str(c) for c in features),
            label_name=label_name,
            classes=tuple(classes),
        )

    def take(self, indices: np.ndarray | Sequence[int]) -> Dataset:
        """The rows at ``indices`` (n_taken,), in that order; names and classes are kept."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            X=self.X[idx],
            y=self.y[idx],
            feature_names=self.feature_names,
            label_name=self.label_name,
            classes=self.classes,
        )

    def digest(self) -> str:
        """sha256 hex of a canonical encoding: names, shapes, little-endian X and y bytes.

        Computed once per Dataset (its arrays are read-only): a run asks for it for cache
        keys, tags and MLflow inputs, and hashing a large table costs ~0.3 s per 100 MB.
        """
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        meta = {
            "format": "stages.Dataset/1",
            "shape": list(self.X.shape),
            "feature_names": list(self.feature_names),
            "label_name": self.label_name,
            "classes": list(self.classes),
        }
        h = hashlib.sha256()
        h.update(json.dumps(meta, sort_keys=True, ensure_ascii=True).encode("ascii"))
        h.update(np.ascontiguousarray(self.X, dtype="<f8").tobytes())
        h.update(np.ascontiguousarray(self.y, dtype="<i8").tobytes())
        return h.hexdigest()
