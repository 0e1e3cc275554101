"""Classifier evaluation at parity with ``mlflow.models.evaluate``: a binary and a 3-class run
log MLflow's figures, ``per_class_metrics.csv``, the precision-recall and calibration plots and
per-class probabilities, read back with MlflowClient and checked against scikit-learn; ``make
plots`` draws the new plots, also for a run whose ``predictions.csv`` predates them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn import metrics as skm

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import METRIC_NAMES
from pipeline.run.artifacts import write_run_artifacts
from stages.evaluate import evaluate

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OPENBLAS_NUM_THREADS": "1",
       "OMP_NUM_THREADS": "1"}
NEW_PLOTS = ("plots/precision_recall_curve.png", "plots/calibration_curve.png")
PER_CLASS = "per_class_metrics.csv"


def _expected_per_class(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """scikit-learn's precision_recall_fscore_support, one row per class, then the averages."""
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(len(classes)),
                                                     zero_division=0)
    rows = [[name, p[i], r[i], f[i], s[i]] for i, name in enumerate(classes)]
    for average in ("macro", "weighted"):
        pa, ra, fa, _ = skm.precision_recall_fscore_support(y, pred, average=average,
                                                            zero_division=0)
        rows.append([f"{average} avg", pa, ra, fa, len(y)])
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def test_per_class_metrics_csv_is_sklearns(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    P = rng.dirichlet(np.ones(3), 90)
    write_run_artifacts(tmp_path, evaluation=evaluate(P, y, ["x", "y", "z"]), config_tree={},
                        overrides=[], hydra_files={})
    written = pd.read_csv(tmp_path / PER_CLASS, dtype={"class": str})
    expected = _expected_per_class(y, P.argmax(axis=1), ["x", "y", "z"])
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, rtol=1e-12)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert list(predictions.columns) == ["probability", "predicted_label", "actual_label",
                                         "probability_x", "probability_y", "probability_z"]
    np.testing.assert_allclose(predictions[["probability_x", "probability_y",
                                            "probability_z"]].to_numpy(), P, rtol=1e-15)


# -- end to end ------------------------------------------------------------------------------
def _train(tmp_path: Path, *overrides: str) -> tuple[MlflowClient, str]:
    """One ``python -m pipeline`` run into a store of its own; the client and the run id."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "train.epochs=50", f"tracking.uri={uri}",
         f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'cache'}",
         "train.progress=false", *overrides],
        cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return client, runs[0].info.run_id


def _tree(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _tree(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _check_run(client: MlflowClient, run_id: str, classes: list[str], into: Path) -> None:
    """The run's metrics, per-class CSV and plots, against scikit-learn on its own
    predictions.csv."""
    metrics = client.get_run(run_id).data.metrics
    for name in METRIC_NAMES:
        assert f"test_{name}" in metrics, name
    files = _tree(client, run_id)
    for path in (PER_CLASS, "predictions.csv", *NEW_PLOTS):
        assert path in files, path
    predictions = pd.read_csv(client.download_artifacts(run_id, "predictions.csv", str(into)),
                              dtype={"predicted_label": str, "actual_label": str})
    columns = [f"probability_{name}" for name in classes]
    assert list(predictions.columns) == ["probability", "predicted_label", "actual_label",
                                         *columns]
    P = predictions[columns].to_numpy()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, rtol=1e-9)
    index = {name: i for i, name in enumerate(classes)}
    y = predictions["actual_label"].map(index).to_numpy()
    pred = predictions["predicted_label"].map(index).to_numpy()
    per_class = pd.read_csv(client.download_artifacts(run_id, PER_CLASS, str(into)),
                            dtype={"class": str})
    pd.testing.assert_frame_equal(per_class, _expected_per_class(y, pred, classes),
                                  check_dtype=False, rtol=1e-12)
    for average in ("macro", "weighted"):
        pa, ra, fa, _ = skm.precision_recall_fscore_support(y, pred, average=average,
                                                            zero_division=0)
        assert metrics[f"test_precision_{average}"] == pytest.approx(pa, rel=1e-12)
        assert metrics[f"test_recall_{average}"] == pytest.approx(ra, rel=1e-12)
        assert metrics[f"test_f1_{average}"] == pytest.approx(fa, rel=1e-12)
    if len(classes) == 2:
        ap = skm.average_precision_score(y, P[:, 1])
        brier = skm.brier_score_loss(y, P[:, 1])
        assert metrics["test_mse"] == pytest.approx(brier, rel=1e-9)
    else:
        ap = skm.average_precision_score(y, P, average="macro")
        brier = skm.brier_score_loss(y, P, labels=list(range(len(classes))))
    assert metrics["test_precision_recall_auc"] == pytest.approx(ap, rel=1e-9)
    assert metrics["test_brier_score"] == pytest.approx(brier, rel=1e-9)
    assert 0.0 <= metrics["test_calibration_error"] <= 1.0


@pytest.mark.slow
def test_a_binary_default_run_logs_mlflows_figures(tmp_path: Path) -> None:
    client, run_id = _train(tmp_path)
    _check_run(client, run_id, ["0", "1"], tmp_path / "dl")


def _three_class_csv(path: Path) -> Path:
    """Three well separated blobs in two features, labels as text."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    label = np.arange(300) % 3
    x = centres[label] + rng.normal(size=(300, 2))
    frame = pd.DataFrame({"u": x[:, 0], "v": x[:, 1],
                          "kind": np.array(["ant", "bee", "cat"])[label]})
    frame.to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_a_three_class_run_logs_mlflows_figures(tmp_path: Path) -> None:
    csv = _three_class_csv(tmp_path / "three.csv")
    client, run_id = _train(tmp_path, "data=csv", f"data.path={csv}", "optimizer=adam",
                            "optimizer.lr=0.02")
    _check_run(client, run_id, ["ant", "bee", "cat"], tmp_path / "dl")
    metrics = client.get_run(run_id).data.metrics
    assert metrics["test_accuracy"] > 0.7  # the run learned something: the figures mean it


# -- make plots, old and new predictions.csv -------------------------------------------------
def _complete_plots(uri: str, run_id: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.commands.complete", run_id, "--plots", "--uri", uri],
        cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=600)


def _replace_predictions(client: MlflowClient, run_id: str, frame: pd.DataFrame,
                         into: Path) -> None:
    """Log ``frame`` over the run's predictions.csv (as an older pipeline would have left it)."""
    into.mkdir(parents=True, exist_ok=True)
    frame.to_csv(into / "predictions.csv", index=False)
    client.log_artifact(run_id, str(into / "predictions.csv"))


@pytest.mark.slow
def test_make_plots_draws_the_new_plots_from_an_old_predictions_csv(tmp_path: Path) -> None:
    client, run_id = _train(tmp_path, "tracking.plots=false", "tracking.log_model=false")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    assert not set(NEW_PLOTS) & _tree(client, run_id)
    current = pd.read_csv(client.download_artifacts(run_id, "predictions.csv",
                                                    str(tmp_path / "now")))
    old = current[["probability", "predicted_label", "actual_label"]]
    _replace_predictions(client, run_id, old, tmp_path / "old")
    reread = pd.read_csv(client.download_artifacts(run_id, "predictions.csv",
                                                   str(tmp_path / "check")))
    assert list(reread.columns) == ["probability", "predicted_label", "actual_label"]

    done = _complete_plots(uri, run_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run {run_id}: plots logged (7 files)"
    assert set(NEW_PLOTS) <= _tree(client, run_id)


@pytest.mark.slow
def test_make_plots_checks_the_per_class_probabilities(tmp_path: Path) -> None:
    """A predictions.csv whose per-class columns were changed does not describe the run."""
    client, run_id = _train(tmp_path, "tracking.plots=false", "tracking.log_model=false")
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    frame = pd.read_csv(client.download_artifacts(run_id, "predictions.csv",
                                                  str(tmp_path / "now")))
    frame.loc[0, "probability_0"] = 0.5 if frame.loc[0, "probability_0"] != 0.5 else 0.25
    _replace_predictions(client, run_id, frame, tmp_path / "changed")

    done = _complete_plots(uri, run_id)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "the redrawn test predictions differ from its predictions.csv" \
        in lines[0], done.stderr
    assert not set(NEW_PLOTS) & _tree(client, run_id)


# -- a plot that fails -----------------------------------------------------------------------
ALL_PLOTS = {"confusion_matrix.png", "plots/training_curves.png", "plots/roc_curve.png",
             "plots/probability_vs_label.png", "plots/decision_boundary.png", *NEW_PLOTS}


@pytest.mark.slow
def test_a_failing_plot_is_one_line_and_make_plots_draws_it_later(
        tmp_path: Path, compose_cfg, isolated: list[str], store: str, capfd, monkeypatch
) -> None:
    """The plot process (forked: it inherits the patch) draws every other plot, says in one
    line which failed and why; the run is not marked as having its plots, so ``make plots``
    draws them all."""
    from pipeline.config.schema import validate
    from pipeline.run import plots
    from pipeline.run.runner import run

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(plots, "plot_calibration_curve", boom)
    config = validate(compose_cfg(*isolated, "train.epochs=50", "train.progress=false",
                                  "tracking.log_model=false"))
    result = run(config, output_dir=tmp_path / "out")
    err = capfd.readouterr().err.splitlines()
    ours = [line for line in err if "boom" in line or "calibration" in line]
    assert ours == ["drawing the plots: plots/calibration_curve.png: RuntimeError: boom"], err
    client = MlflowClient(store)
    run_ = client.get_run(result.run_id)
    assert run_.info.status == "FINISHED"
    assert run_.data.tags["plots_logged"] == "false"
    assert _tree(client, result.run_id) & ALL_PLOTS == ALL_PLOTS - {NEW_PLOTS[1]}

    monkeypatch.undo()
    done = _complete_plots(store, result.run_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"run {result.run_id}: plots logged (7 files)"
    assert _tree(client, result.run_id) & ALL_PLOTS == ALL_PLOTS
    assert client.get_run(result.run_id).data.tags["plots_logged"] == "true"
