"""Log the trained network as an MLflow pyfunc model (from code, no pickle)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from pipeline.paths import PROJECT_ROOT
from pipeline.tracking import RunTracker

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


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


def log_model(
    tracker: RunTracker, checkpoint: Path, features: Sequence[str], classes: Sequence[str]
) -> str:
    """Log ``model/`` into the tracker's run: code, checkpoint, the core's source, pins.

    Returns the logged model's id. MLflow copies the run's metrics into the model by
    reading each one's whole history, so log the model before the per-epoch metrics.
    """
    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")
    with warnings.catch_warnings():
        # The signature is explicit; MLflow still nags for an input example.
        warnings.filterwarnings("ignore", message=".*input example.*")
        return _log(tracker, checkpoint, features, classes)


def _log(tracker: RunTracker, checkpoint: Path, features: Sequence[str],
         classes: Sequence[str]) -> str:
    return tracker.log_pyfunc_model(
        name="model",
        python_model=str(MODEL_CODE),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(PROJECT_ROOT / "pipeline"), str(PROJECT_ROOT / "stages")],
        pip_requirements=_requirements(),
        signature=signature(features, classes),
    )
