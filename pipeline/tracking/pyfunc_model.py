"""The MLflow pyfunc model, logged "from code": this file is the model's code.

MLflow copies this file into the run's ``model/`` artifact and executes it when the
model is loaded, so nothing is pickled. The model reads the JSON checkpoint
(weights, normalisation statistics, class names) and predicts from raw,
un-normalised feature columns, exactly as the pipeline's evaluate stage does.

``predicted_label`` keeps the label's type: integers for integer labels (0/1), text for
named classes (see :mod:`pipeline.tracking.labels`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

from pipeline.mlp import MLP
from pipeline.tracking.labels import class_labels
from stages.normalise import Normaliser


class MLPClassifierModel(mlflow.pyfunc.PythonModel):
    """Raw feature columns in; ``predicted_label``, ``probability`` and per-class columns out."""

    def load_context(self, context: Any) -> None:
        self.model = MLP.load(context.artifacts["checkpoint"])
        meta = self.model.metadata
        self.normaliser = Normaliser.from_dict(meta["normaliser"])
        self.features: list[str] = list(meta["feature_names"])
        self.classes: list[str] = [str(c) for c in meta["classes"]]  # column names
        self.labels: list[int] | list[str] = class_labels(self.classes)  # predicted_label

    # pd.DataFrame is a hint MLflow accepts without deriving a schema from it: the logged
    # signature describes the columns.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            missing = [f for f in self.features if f not in model_input.columns]
            if missing and model_input.shape[1] == len(self.features):
                X = model_input.to_numpy(dtype=np.float64)  # unnamed columns, in order
            elif missing:
                raise ValueError(f"input lacks feature columns {missing}; "
                                 f"expected {self.features}")
            else:
                X = model_input[self.features].to_numpy(dtype=np.float64)
        else:
            X = np.asarray(model_input, dtype=np.float64)
        proba = self.model.predict_proba(self.normaliser.transform(X))
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
