"""The MLflow pyfunc model, logged "from code": this file is the model's code.

MLflow copies this file into the run's ``model/`` artifact and executes it when the
model is loaded, so nothing is pickled. The model reads the JSON checkpoint (weights and
the fitted :class:`~stages.preprocess.Preprocessor`: feature names, classes, transforms,
normaliser) and predicts from raw feature columns through ``Preprocessor.transform``,
exactly as the run's evaluation did.

A model whose transforms come from a plugin module needs that module imported: load_context
imports the modules the user names in the environment variable :data:`PLUGINS_ENV`
(``make serve PLUGINS=my_transforms``), and only those, never a name read from the stored
model. A transform still unknown then fails the load with one line naming its module
(:class:`~stages.transforms.UnknownTransformError`).

The model checks its input itself (the logged signature leaves the inputs to it: MLflow's
schema check drops unknown columns silently and quotes the whole request in its errors): a
bad request gets HTTP 400 and one line naming the column and the problem (:class:`BadInput`).

``predicted_label`` keeps the label's type: integers for integer labels (0/1), text for
named classes (see :mod:`pipeline.tracking.labels`).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.mlp import MLP
from pipeline.tracking.labels import class_labels
from pipeline.tracking.model import PLUGINS_ENV, plugin_names
from stages.dataset import DataError
from stages.preprocess import Preprocessor

SHOWN_NAMES = 8  # column names a message lists before "..."


class BadInput(MlflowException):
    """A request the model refuses: HTTP 400 whose message is exactly ``line``.

    MLflow 3.17's scoring server (``scoring_server.invocations``) rewrites the message of an
    MlflowException raised by ``predict`` into "Failed to predict data '<the whole input>'.
    Error: ..."; it builds the body from ``serialize_as_json``, which keeps the one line.
    (Any other exception becomes a 400 "unexpected error" with the server's traceback.)
    """

    def __init__(self, line: str) -> None:
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)
        self.line = line

    def serialize_as_json(self) -> str:
        body = json.loads(super().serialize_as_json())
        body["message"] = self.line
        return json.dumps(body)


def _names(names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:SHOWN_NAMES])
    return shown + (", ..." if len(names) > SHOWN_NAMES else "")


def checked_input(frame: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    """The feature columns ``names`` of a request, as float64; BadInput (one line naming
    the column and the problem) for no rows, a missing or unknown column, or a value that
    is null, not a number or not finite. Rows sent without column names (as many columns
    as features) are read in order, as :meth:`Preprocessor.features` does."""
    expected = f"the model takes the columns {_names(list(names))}"
    if len(frame) == 0:
        raise BadInput(f"the request has no rows; send at least one row: {expected}")
    columns = [str(c) for c in frame.columns]
    if not set(names) & set(columns) and len(columns) == len(names):
        frame, columns = frame.set_axis(list(names), axis=1), list(names)
    missing = [name for name in names if name not in columns]
    if missing:
        raise BadInput(f"missing column(s) {_names(missing)}: {expected}")
    unknown = [column for column in columns if column not in names]
    if unknown:
        raise BadInput(f"unknown column(s) {_names(unknown)}: {expected} (drop the others)")
    frame = frame.set_axis(columns, axis=1)
    values = {}
    for name in names:
        column = frame[name]
        bad = column.isna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise BadInput(f"column {name!r}: row {row} is null; give a number")
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64,
                                                                   na_value=np.nan)
        bad = np.isnan(numbers)
        if bad.any():
            row = int(np.argmax(bad))
            raise BadInput(f"column {name!r}: row {row} is {column.iloc[row]!r:.40}, not a "
                           "number")
        bad = ~np.isfinite(numbers)
        if bad.any():
            row = int(np.argmax(bad))
            raise BadInput(f"column {name!r}: row {row} is {numbers[row]}; give a finite "
                           "number")
        values[name] = numbers
    return pd.DataFrame(values)


class MLPClassifierModel(mlflow.pyfunc.PythonModel):
    """Raw feature columns in; ``predicted_label``, ``probability`` and per-class columns out."""

    def load_context(self, context: Any) -> None:
        for module in plugin_names(os.environ.get(PLUGINS_ENV, "")):  # the user's, only
            importlib.import_module(module)
        self.model = MLP.load(context.artifacts["checkpoint"])
        self.preprocessor = Preprocessor.from_metadata(self.model.metadata,
                                                       where="the model's checkpoint")
        self.classes: list[str] = [str(c) for c in self.preprocessor.classes]  # column names
        self.labels: list[int] | list[str] = class_labels(self.classes)  # predicted_label

    # pd.DataFrame is a hint MLflow accepts without deriving a schema from it: the logged
    # signature describes the columns.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            model_input = checked_input(model_input, self.preprocessor.feature_names)
        try:
            X = self.preprocessor.transform(model_input)
        except DataError as error:  # input other than a frame; a transform's domain
            raise BadInput(str(error)) from None
        proba = self.model.predict_proba(X)
        if proba.shape[1] == 1:
            positive = proba[:, 0]
            index = (positive > 0.5).astype(int)  # as MLP.predict and evaluate
            columns = {"probability": positive}
            per_class = np.column_stack([1.0 - positive, positive])
        else:
            index = proba.argmax(axis=1)
            columns = {"probability": proba[np.arange(len(proba)), index]}
            per_class = proba
        out = pd.DataFrame(columns)
        if isinstance(self.labels[0], int):
            predicted: Any = np.asarray(self.labels, dtype=np.int64)[index]
        else:
            predicted = [self.labels[i] for i in index]
        out.insert(0, "predicted_label", predicted)
        for k, name in enumerate(self.classes):
            out[f"probability_{name}"] = per_class[:, k]
        return out


mlflow.models.set_model(MLPClassifierModel())
