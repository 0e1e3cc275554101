"""The final validation figures in a run's record and in its console summary (fast: plain
values, no store; the end-to-end cases are in tests/test_pipeline.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.run.runner import RunResult, format_summary
from pipeline.tracking.journal import now_ms
from pipeline.tracking.record import (
    InputTable,
    ModelFiles,
    RunOutcome,
    Validation,
    fold_metrics,
    outcome_records,
)


def _outcome(tmp_path: Path, validation: Validation | None, last_epoch: int = 300
             ) -> RunOutcome:
    frame = pd.DataFrame({"a": [0.0, 1.0], "y": [0, 1]})
    tables = [InputTable(context, frame, digest * 64, "y", None)
              for context, digest in (("train", "a"), ("val", "b"), ("test", "c"))]
    return RunOutcome(
        metrics={"test_accuracy": 0.9, "test_log_loss": 0.3}, timings={"train": 1.0},
        confusion={}, checkpoint_sha256="0" * 64, predictions_sha256="1" * 64,
        epochs_run=last_epoch, last_epoch=last_epoch, best_epoch=last_epoch - 10,
        artifact_dir=tmp_path, inputs=tables,
        model=ModelFiles(tmp_path / "final.json", ["a"], ["0", "1"]), validation=validation)


def _metric_records(records: list[dict]) -> list[dict]:
    return [r for r in records if r["k"] == "metrics" and not any(
        k.startswith("time_") for k in r["values"])]


def test_validation_figures_are_logged_at_the_last_epoch_after_every_epoch(tmp_path) -> None:
    """The core's per-epoch val_accuracy ends at the last epoch: the final figures go to
    that step, stamped after it, so the store keeps them as the latest values (MLflow
    orders by step, then time); measured on the "val" input, and the logged model's."""
    later = now_ms() + 5000  # an epoch recorded "later" than now: the stamp still follows it
    validation = Validation({"val_accuracy": 0.85, "val_log_loss": 0.4}, after_ms=later,
                            dataset="val")
    test, val = _metric_records(outcome_records(_outcome(tmp_path, validation),
                                                log_model=True, data_seed=7))
    assert test["values"] == {"test_accuracy": 0.9, "test_log_loss": 0.3}
    # Datasets are named after their source: generated data by its seed (issue 27).
    assert test["dataset"] == ["rf(seed=7)", "c" * 36]
    assert (test["step"], test["of_model"]) == (0, True)
    assert val["values"] == {"val_accuracy": 0.85, "val_log_loss": 0.4}
    assert val["step"] == 300 and val["time_ms"] == later + 1
    assert val["dataset"] == ["rf(seed=7)", "b" * 36] and val["of_model"] is True
    early = Validation({"val_accuracy": 0.85}, after_ms=now_ms() - 60_000, dataset="val")
    (_, val), stamp = _metric_records(outcome_records(_outcome(tmp_path, early),
                                                      log_model=False)), now_ms()
    assert stamp - 1000 <= val["time_ms"] <= stamp and val["of_model"] is False


def test_fold_figures_are_not_the_logged_models(tmp_path) -> None:
    validation = Validation({"val_accuracy": 0.8, "fold1_val_accuracy": 0.7},
                            after_ms=now_ms(), dataset=None)
    _, val = _metric_records(outcome_records(_outcome(tmp_path, validation), log_model=True))
    assert val["dataset"] is None and val["of_model"] is False and val["step"] == 300


def test_no_validation_no_record(tmp_path) -> None:
    (test,) = _metric_records(outcome_records(_outcome(tmp_path, None), log_model=True))
    assert test["values"]["test_accuracy"] == 0.9


def test_fold_metrics_are_each_fold_then_mean_and_std() -> None:
    folds = [{"val_accuracy": 0.5, "val_log_loss": 1.0},
             {"val_accuracy": 0.7, "val_log_loss": 3.0}]
    assert fold_metrics(folds) == pytest.approx({
        "fold1_val_accuracy": 0.5, "fold1_val_log_loss": 1.0,
        "fold2_val_accuracy": 0.7, "fold2_val_log_loss": 3.0,
        "val_accuracy": 0.6, "val_accuracy_std": 0.1,
        "val_log_loss": 2.0, "val_log_loss_std": 1.0,
    }, abs=1e-15)
    assert list(fold_metrics(folds))[:4] == ["fold1_val_accuracy", "fold1_val_log_loss",
                                             "fold2_val_accuracy", "fold2_val_log_loss"]


# -- the console summary ---------------------------------------------------------------------
def _summary(metrics: dict[str, float]) -> list[str]:
    text = format_summary(RunResult(run_id=None, experiment_id=None, url=None,
                                    metrics=metrics, journal=Path("j.jsonl")))
    return text.splitlines()


def test_summary_shows_val_and_test_side_by_side() -> None:
    lines = _summary({"val_accuracy": 0.85, "val_log_loss": 0.41234,
                      "test_accuracy": 0.9, "test_log_loss": 0.3})
    header = lines.index(next(line for line in lines if line.startswith("Metrics")))
    assert lines[header].split() == ["Metrics", "val", "test"]
    assert lines[header + 1].split() == ["accuracy", "0.8500", "0.9000"]
    assert lines[header + 2].split() == ["log_loss", "0.4123", "0.3000"]
    widths = {len(line) for line in lines[header:header + 3]}
    assert len(widths) == 1 and max(widths) <= 40  # aligned columns, short lines


def test_summary_without_validation_has_a_test_column_only() -> None:
    lines = _summary({"test_accuracy": 0.9})
    header = lines.index(next(line for line in lines if line.startswith("Metrics")))
    assert lines[header].split() == ["Metrics", "test"]
    assert lines[header + 1].split() == ["accuracy", "0.9000"]


def test_summary_of_k_folds_shows_mean_and_std() -> None:
    metrics = {**fold_metrics([{"val_accuracy": 0.5}, {"val_accuracy": 0.7},
                               {"val_accuracy": 0.6}]), "test_accuracy": 0.9}
    lines = _summary(metrics)
    header = lines.index(next(line for line in lines if line.startswith("Metrics")))
    assert "val, 3 folds (mean ± std)" in lines[header]
    assert lines[header + 1].split() == ["accuracy", "0.6000", "±", "0.0816", "0.9000"]
    assert not any("fold1" in line for line in lines)  # each fold's figures are in the run


def test_inputs_are_named_after_their_source(tmp_path) -> None:
    """A CSV's file name; generated data ``rf(seed=...)``, whose source names the generator
    and its seed instead of copying the run's tags; the context stays the split's."""
    outcome = _outcome(tmp_path, None)
    (inputs,) = [r for r in outcome_records(outcome, log_model=False, data_seed=7)
                 if r["k"] == "inputs"]
    assert [(d["name"], d["context"]) for d in inputs["datasets"]] == [
        ("rf(seed=7)", "train"), ("rf(seed=7)", "val"), ("rf(seed=7)", "test")]
    assert all('"seed": "7"' in d["source"] and "mlflow.user" not in d["source"]
               for d in inputs["datasets"])
    csv = tmp_path / "patients.csv"
    tables = [InputTable(t.context, t.frame, t.digest, "y", str(csv)) for t in outcome.inputs]
    (inputs,) = [r for r in outcome_records(RunOutcome(**{**outcome.__dict__, "inputs": tables}),
                                            log_model=False, data_seed=7) if r["k"] == "inputs"]
    assert {d["name"] for d in inputs["datasets"]} == {"patients.csv"}
    assert {d["source_type"] for d in inputs["datasets"]} == {"local"}
