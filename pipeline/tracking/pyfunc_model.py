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

``predicted_label`` keeps the label's type: integers for integer labels (0/1), text for
named classes (see :mod:`pipeline.tracking.labels`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipeline.mlp import MLP
from pipeline.tracking.labels import class_labels
from pipeline.tracking.model import PLUGINS_ENV, plugin_names
from stages.preprocess import Preprocessor


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
        proba = self.model.predict_proba(self.preprocessor.transform(model_input))
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
