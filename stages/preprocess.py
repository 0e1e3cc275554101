"""The one fitted preprocessor: raw feature columns in, the model's normalised inputs out.

Everything fitted on the training split and needed at prediction time lives in one value,
:class:`Preprocessor`: the raw feature names, the label name and classes, the feature
transforms (``data.transforms``, see :mod:`stages.transforms`) and the normaliser fitted on
the TRANSFORMED training features. Training, evaluation, plots and the served model all
predict as ``model.predict_proba(preprocessor.transform(raw))``, and the checkpoint stores it
as :meth:`Preprocessor.to_metadata`.

    raw (n, d_raw) --select feature_names--> X --transforms--> X' (n, d_model)
        --normaliser: (X' - mean) / std--> Z (n, d_model)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stages.dataset import DataError, Dataset
from stages.normalise import NormalisedSplits, Normaliser, fit_normaliser, normalise
from stages.split import Splits
from stages.transforms import (
    BUILTIN_MODULE,
    FittedTransform,
    StoredMetadataError,
    TransformError,
    fit_transforms,
    restore_transform,
)

TransformSpecs = Sequence[Any]  # names or {name: ..., **options}, as data.transforms


@dataclass(frozen=True, eq=False)
class Preprocessor:
    """What turns raw feature columns into the model's inputs, fitted on the training split.

    feature_names: the raw input columns, in the order the transforms read them (d_raw).
    label_name, classes: the label column and the original label of each class index.
    normaliser: mean and std (d_model,) of the transformed training features.
    transforms: applied in order before normalising; () when none.
    """

    feature_names: tuple[str, ...]
    label_name: str
    classes: tuple[str, ...]
    normaliser: Normaliser
    transforms: tuple[FittedTransform, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_names", tuple(self.feature_names))
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "transforms", tuple(self.transforms))
        names = self.feature_names
        for i, transform in enumerate(self.transforms):
            if transform.feature_names_in != names:
                raise ValueError(f"transforms[{i}] ({transform.name}) reads the columns "
                                 f"{list(transform.feature_names_in)}, but gets {list(names)}")
            names = transform.feature_names_out
        if self.normaliser.mean.shape != (len(names),):
            raise ValueError(f"the normaliser has {self.normaliser.mean.shape[0]} features, "
                             f"the transformed data {len(names)}")
        if self.label_name in names:
            raise ValueError(f"the label {self.label_name!r} is also a feature name")

    @property
    def feature_names_out(self) -> tuple[str, ...]:
        """The names of the model's input columns (d_model): the last transform's output."""
        return self.transforms[-1].feature_names_out if self.transforms else self.feature_names

    @property
    def plugin_modules(self) -> tuple[str, ...]:
        """The modules that registered its non-built-in transforms (what serving imports)."""
        return tuple(dict.fromkeys(t.module for t in self.transforms
                                   if t.module != BUILTIN_MODULE))

    def features(self, raw: Any) -> np.ndarray:
        """The raw feature columns as a float64 (n, d_raw) array.

        raw: a DataFrame (its ``feature_names`` columns are taken by name, in order, others
        ignored; a frame holding none of them but exactly d_raw columns, e.g. rows sent
        without names, is read in order) or a 2-D array-like (n, d_raw). DataError (one line)
        for a missing column, a non-number, or a missing or non-finite value.
        """
        names = self.feature_names
        if isinstance(raw, pd.DataFrame):
            X = _frame_columns(raw, names)
        else:
            try:
                X = np.asarray(raw, dtype=np.float64)
            except (ValueError, TypeError):
                raise DataError("input: the features must be numbers") from None
            if X.ndim != 2 or X.shape[1] != len(names):
                raise DataError(f"input: expected features of shape (n, {len(names)}) for the "
                                f"columns {list(names)}, got shape {X.shape}")
        finite = np.isfinite(X)
        if not finite.all():
            row, column = np.argwhere(~finite)[0]
            raise DataError(f"input: feature {names[column]!r} holds {float(X[row, column])!r} "
                            f"(row {row}); give a finite number for every feature")
        return X

    def transform(self, raw: Any) -> np.ndarray:
        """raw (n, d_raw) (see :meth:`features`) -> the model's inputs (n, d_model) float64:
        the transforms in order, then (X' - mean) / std with the training statistics."""
        X = self.features(raw)
        for transform in self.transforms:
            X = transform.transform(X)
        return self.normaliser.transform(X)

    def to_metadata(self) -> dict[str, Any]:
        """The stored form (checkpoint metadata), JSON values. Without transforms it is exactly
        what checkpoints held before transforms existed (no ``transforms`` key)."""
        meta: dict[str, Any] = {
            "normaliser": self.normaliser.to_dict(),
            "feature_names": list(self.feature_names),
            "label_name": self.label_name,
            "classes": list(self.classes),
        }
        if self.transforms:
            meta["transforms"] = [transform.to_dict() for transform in self.transforms]
        return meta

    @classmethod
    def from_metadata(cls, meta: Any, where: str = "metadata") -> Preprocessor:
        """The Preprocessor stored as ``meta`` (untrusted: checked, nothing imported; other
        keys are ignored). StoredMetadataError (one line) if it is malformed;
        UnknownTransformError if a transform's plugin module is not imported."""
        if not isinstance(meta, Mapping):
            raise StoredMetadataError(f"{where} must be a mapping, got {type(meta).__name__}")
        names, classes = _distinct(meta.get("feature_names")), _distinct(meta.get("classes"))
        if names is None:
            raise StoredMetadataError(f"{where}: 'feature_names' must be a non-empty list of "
                                      "distinct strings")
        if classes is None:
            raise StoredMetadataError(f"{where}: 'classes' must be a non-empty list of "
                                      "distinct strings")
        label = meta.get("label_name")
        if not isinstance(label, str):
            raise StoredMetadataError(f"{where}: 'label_name' must be a string")
        stored = meta.get("transforms", [])
        if not isinstance(stored, list):
            raise StoredMetadataError(f"{where}: 'transforms' must be a list")
        transforms = tuple(restore_transform(t, f"{where}: transforms[{i}]")
                           for i, t in enumerate(stored))
        try:
            return cls(names, label, classes, _normaliser(meta.get("normaliser")), transforms)
        except ValueError as error:
            raise StoredMetadataError(f"{where}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _distinct(value: Any) -> tuple[str, ...] | None:
    """``value`` as a tuple of distinct strings if it is a non-empty list of them."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, str) for v in value) or len(set(value)) != len(value):
        return None
    return tuple(value)


def _normaliser(stored: Any) -> Normaliser:
    """Normaliser.from_dict of a checked dict: exactly 'mean' and 'std', lists of numbers."""
    if not isinstance(stored, Mapping) or set(stored) != {"mean", "std"}:
        raise ValueError("'normaliser' must be a mapping of exactly 'mean' and 'std'")
    for key in ("mean", "std"):
        values = stored[key]
        if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in values):
            raise ValueError(f"'normaliser.{key}' must be a list of finite numbers")
    return Normaliser.from_dict(stored)


def _frame_columns(frame: pd.DataFrame, names: tuple[str, ...]) -> np.ndarray:
    """The columns ``names`` of ``frame`` by name, in that order, as float64 (n, d)."""
    columns = [str(c) for c in frame.columns]
    missing = [name for name in names if name not in columns]
    if missing and len(missing) == len(names) and len(columns) == len(names):
        selected = frame  # rows sent without column names: taken in order
    elif missing:
        raise DataError(f"input: the feature column {missing[0]!r} is missing; expected the "
                        f"columns {list(names)}")
    else:
        selected = frame.iloc[:, [columns.index(name) for name in names]]
    try:
        return selected.to_numpy(dtype=np.float64, na_value=np.nan)  # pd.NA: reported below
    except (ValueError, TypeError):
        for k in range(selected.shape[1]):
            try:
                selected.iloc[:, k].to_numpy(dtype=np.float64, na_value=np.nan)
            except (ValueError, TypeError):
                raise DataError(f"input: the column {names[k]!r} holds values that are not "
                                "numbers") from None
        raise


# ---- fitting on the training split -----------------------------------------------------------

def _fit_transforms(train: Dataset, transforms: TransformSpecs | None, where: str
                    ) -> tuple[tuple[FittedTransform, ...], Dataset]:
    """The transforms fitted on ``train`` and ``train`` transformed by them."""
    fitted, X, names = fit_transforms(transforms, train.X, train.feature_names, where)
    if not fitted:
        return fitted, train
    if train.label_name in names:
        raise TransformError(f"{where}: a new feature is named {train.label_name!r}, like the "
                             "label column; rename the label column in the file")
    return fitted, dataclasses.replace(train, X=X, feature_names=names)


def _transformed(data: Dataset, fitted: Sequence[FittedTransform], split: str,
                 where: str) -> Dataset:
    """``data`` through the fitted transforms (fitted on the train split)."""
    if not fitted:
        return data
    X = data.X
    for i, transform in enumerate(fitted):
        try:
            X = transform.transform(X)
        except TransformError as error:
            raise TransformError(f"{where}[{i}] on the {split} split: {error}") from None
    return dataclasses.replace(data, X=X, feature_names=fitted[-1].feature_names_out)


def _assemble(train: Dataset, fitted: tuple[FittedTransform, ...],
              normaliser: Normaliser) -> Preprocessor:
    return Preprocessor(feature_names=train.feature_names, label_name=train.label_name,
                        classes=train.classes, normaliser=normaliser, transforms=fitted)


def fit_preprocessor(train: Dataset, transforms: TransformSpecs | None = (), *,
                     where: str = "data.transforms") -> Preprocessor:
    """Fit the transforms, then the normaliser on the transformed features, on ``train``
    (n, d_raw) ONLY. ``transforms``: the ``data.transforms`` list (names or mappings)."""
    fitted, transformed = _fit_transforms(train, transforms, where)
    return _assemble(train, fitted, fit_normaliser(transformed.X))


def preprocess(splits: Splits, transforms: TransformSpecs | None = (), *,
               where: str = "data.transforms") -> tuple[Preprocessor, NormalisedSplits]:
    """Fit the preprocessor on splits.train ONLY and apply it to train, test and val.

    Returns it and the splits as the model sees them, (n, d_model) each, named by
    ``feature_names_out``. Without transforms this is exactly ``normalise(splits)``.
    """
    fitted, train = _fit_transforms(splits.train, transforms, where)
    normalised = normalise(Splits(
        train=train,
        test=_transformed(splits.test, fitted, "test", where),
        val=None if splits.val is None else _transformed(splits.val, fitted, "validation",
                                                           where),
    ))
    return _assemble(splits.train, fitted, normalised.normaliser), normalised
