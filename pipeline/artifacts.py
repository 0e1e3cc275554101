"""The files a run leaves behind, laid out as its MLflow artifacts.

Everything is written into one folder (``<output_dir>/artifacts``) that tracking
logs in one call: confusion matrix (JSON + PNG), predictions.csv, plots, the resolved
config and Hydra's overrides, and the environment. (The per-epoch history artifact is
written by tracking, from the run's journal.)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline import environment
from pipeline.datastore import atomic_path, write_text_atomic
from pipeline.mlp import MLP
from stages.dataset import Dataset
from stages.evaluate import Evaluation
from stages.normalise import Normaliser


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path, ".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return path


def write_run_artifacts(
    folder: Path,
    *,
    evaluation: Evaluation,
    config_tree: Mapping[str, Any],
    overrides: Sequence[str],
    hydra_dir: Path | None,
) -> dict[str, Path]:
    """Write the data artifacts of one run into ``folder``; return the main paths by name.

    The plots are drawn separately (:func:`start_plots`), in parallel with the logging.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["confusion_json"] = write_text_atomic(
        folder / "confusion_matrix.json", json.dumps(evaluation.confusion.to_dict(), indent=2)
    )
    files["predictions"] = _write_csv(evaluation.predictions, folder / "predictions.csv")
    files["config"] = write_text_atomic(
        folder / "config.yaml", yaml.safe_dump(dict(config_tree), sort_keys=False)
    )
    files["overrides"] = write_text_atomic(
        folder / "overrides.yaml", yaml.safe_dump(list(overrides), default_flow_style=False)
    )
    if hydra_dir is not None and hydra_dir.is_dir():
        shutil.copytree(hydra_dir, folder / "hydra", dirs_exist_ok=True)
    files["environment"] = write_text_atomic(
        folder / "environment.json",
        json.dumps({**environment.describe(), "packages": environment.installed_packages()},
                   indent=2),
    )
    return files


class PlotJob:
    """Plots drawn in a forked child process while the parent logs to MLflow.

    Matplotlib (import and rendering, ~1 s) is then off the critical path of a run;
    the child only writes PNG files and never touches the tracking store.
    """

    def __init__(self, target: Any, args: tuple[Any, ...]) -> None:
        import multiprocessing

        self._process = None
        if "fork" in multiprocessing.get_all_start_methods():
            self._process = multiprocessing.get_context("fork").Process(
                target=target, args=args, daemon=True)
            self._process.start()
        else:  # no fork (e.g. Windows): draw inline
            target(*args)

    def wait(self) -> bool:
        """Wait for the plots; False if drawing them failed (the run goes on without them)."""
        if self._process is None:
            return True
        self._process.join()
        return self._process.exitcode == 0


@dataclass(frozen=True)
class PlotInputs:
    """What the plots of one run are drawn from.

    proba: (n_test, 1) or (n_test, k); test: the normalised test split; raw_train and
    raw_test: the splits before normalisation (the decision boundary is drawn over raw
    features).
    """

    evaluation: Evaluation
    history: Mapping[str, Sequence[float]]
    proba: np.ndarray
    test: Dataset
    raw_test: Dataset
    raw_train: Dataset
    model: MLP
    normaliser: Normaliser


def start_plots(folder: Path, inputs: PlotInputs) -> PlotJob:
    """Start drawing the run's plots into ``folder`` (see :class:`PlotJob`)."""
    return PlotJob(write_plots, (folder, inputs))


def write_plots(folder: Path, inputs: PlotInputs) -> dict[str, Path]:
    """Draw the run's plots into ``folder`` (``confusion_matrix.png``, ``plots/*.png``, the
    decision boundary for two features only); return their paths by name."""
    evaluation, history, proba = inputs.evaluation, inputs.history, inputs.proba
    test, raw_test, raw_train = inputs.test, inputs.raw_test, inputs.raw_train
    model, normaliser = inputs.model, inputs.normaliser
    from pipeline import plots

    out = folder / "plots"
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "confusion_png": Path(plots.plot_confusion_matrix(
            evaluation.confusion.labels, evaluation.confusion.matrix,
            folder / "confusion_matrix.png")),
        "curves_png": Path(plots.plot_training_curves(history, out / "training_curves.png")),
        "roc_png": Path(plots.plot_roc_curve(test.y, proba, test.classes, out / "roc_curve.png")),
    }
    shown = proba[:, 0] if proba.shape[1] == 1 else proba[np.arange(len(proba)), test.y]
    files["scatter_png"] = Path(plots.plot_probability_vs_label(
        shown, test.y, out / "probability_vs_label.png"))
    if raw_test.n_features == 2:
        X = np.vstack([raw_train.X, raw_test.X])
        y = np.concatenate([raw_train.y, raw_test.y])
        files["boundary_png"] = Path(plots.plot_decision_boundary(
            lambda raw: model.predict_proba(normaliser.transform(raw)), X, y,
            raw_test.feature_names, out / "decision_boundary.png"))
    return files
