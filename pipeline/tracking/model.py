"""Log the trained network as an MLflow pyfunc model (from code, no pickle)."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ColSpec, Schema

from pipeline.paths import PROJECT_ROOT
from pipeline.tracking.store import Store

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
MODEL_NAME = "model"


def _requirements() -> list[str]:
    """Explicit pins: MLflow would otherwise infer them (slow, and needs the index)."""
    import pyarrow

    return [
        f"mlflow=={mlflow.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"pyarrow=={pyarrow.__version__}",
    ]


def signature(features: Sequence[str], classes: Sequence[str]) -> ModelSignature:
    inputs = Schema([ColSpec("double", name) for name in features])
    outputs = Schema(
        [ColSpec("string", "predicted_label"), ColSpec("double", "probability")]
        + [ColSpec("double", f"probability_{c}") for c in classes]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def logged_model_id(store: Store, experiment_id: str, run_id: str, *,
                    budget_s: float = 60.0) -> str | None:
    """The id of the run's finished ``model``, if it has one (a second sync logs none)."""
    models = store.call("look up the run's model", lambda: store.client.search_logged_models(
        [experiment_id], filter_string=f"source_run_id = '{run_id}'"), budget_s=budget_s)
    ready = [m for m in models if m.name == MODEL_NAME and str(m.status).endswith("READY")]
    return ready[0].model_id if ready else None


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def log_model(store: Store, experiment_id: str, run_id: str, checkpoint: Path,
              features: Sequence[str], classes: Sequence[str], *, budget_s: float = 60.0) -> str:
    """Log ``model/`` for the run: code, checkpoint, the core's source, pins; return its id.

    MLflow copies the run's step-0 metrics into the model by reading each metric's whole
    history, so the shipper logs the model before the epoch metrics when it can.
    """
    def log() -> str:
        # Model.log writes to the global store, and files the model under the global
        # experiment (not the run's) unless the environment names one.
        mlflow.set_tracking_uri(store.uri)
        with warnings.catch_warnings(), _environment(MLFLOW_EXPERIMENT_ID=experiment_id):
            # The signature is explicit; MLflow still nags for an input example.
            warnings.filterwarnings("ignore", message=".*input example.*")
            info = Model.log(
                artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                python_model=str(MODEL_CODE),
                artifacts={"checkpoint": str(checkpoint)},
                code_paths=[str(PROJECT_ROOT / "pipeline"), str(PROJECT_ROOT / "stages")],
                pip_requirements=_requirements(),
                signature=signature(features, classes),
            )
        return str(info.model_id)

    return store.call("log the model", log, budget_s=budget_s)
