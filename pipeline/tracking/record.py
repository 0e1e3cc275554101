"""What a run records, and under which names: the one place every param, tag and metric
of a pipeline run is named.

The runner describes a run with plain values (no MLflow here): a :class:`RunSpec`
before any stage, a :class:`DataSummary` once the data stages ran, a
:class:`TrainingPlan` when training starts, per-epoch metrics while it runs, and a
:class:`RunOutcome` at the end. The functions below turn each into journal records
(see :mod:`pipeline.tracking.journal`), which the shipper sends to the store.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.tracking.journal import now_ms

HEARTBEAT_TAG = "pipeline.heartbeat"
HISTORY_ARTIFACT = "history.csv"  # every epoch's metrics, written from the journal
MAX_TAG_LENGTH = 8000  # characters of a tag value the store takes
HEARTBEAT_INTERVAL_S = 15.0  # how often a live run (or sweep parent) refreshes it
# A run whose heartbeat is younger than this is alive, whatever else says (one refresh may
# wait ~20 s on a locked sqlite store); older, its process is gone.
LIVE_WITHIN_S = 3 * HEARTBEAT_INTERVAL_S
STALE_ERROR = "stale: no heartbeat, marked KILLED"  # the error tag make clean-runs sets
JOURNAL_ID_TAG = "pipeline.journal_id"
JOURNAL_TAG = "pipeline.journal"
SWEEP_TAG = "sweep"  # "parent" on a sweep's parent run
SWEEP_OVERRIDES_TAG = "sweep_overrides"  # the parent's: its jobs' overrides, as a JSON list
SWEEPER_TAG = "sweeper"  # the parent's: the Hydra sweeper that chose the jobs
CONFIG_DIGEST_TAG = "config_digest"
ENDED_BY_RESUME_TAG = "ended_by_resume"  # a job left RUNNING by a dead sweep, ended on resume
# What a run's record holds besides its metrics, params and checkpoints ("true"/"false"):
# a lean sweep child has neither until the sweep picks it as the best, or on demand.
MODEL_LOGGED_TAG = "model_logged"
PLOTS_LOGGED_TAG = "plots_logged"
CHILD_RECORD_TAG = "child_record"  # a sweep child's: "lean" or "full" (sweep.child_record)
PARENT_TAG = "mlflow.parentRunId"
ERROR_TAG = "error"
# The Python warnings a run showed (one line each: "ConvergenceWarning: <first message>").
WARNINGS_TAG = "warnings"
INCOMPLETE = "incomplete record: the journal holds the rest"  # the error tag, until synced
RESUMED_FROM_TAG = "resumed_from"
RESUMED_CHECKPOINT_TAG = "resumed_from_checkpoint"
# Read back by reruns: the data, the result files and the environment.
DATA_DIGEST_TAG = "data_digest"  # the raw data set's digest (stages.dataset.Dataset.digest)
DIGEST_TAGS = (DATA_DIGEST_TAG, "data.train_digest", "data.test_digest", "checkpoint_sha256",
               "predictions_sha256")
ENVIRONMENT_TAGS = ("python_version", "platform", "blas", "blas_threads", "git_commit",
                    "git_dirty")
THREADS_TAG = "train_threads"
AUTO_OUTPUT = ("model.output", "auto")  # the param logged once the model is built
REPRODUCES_TAG = "reproduces"
REPRODUCED_TAG = "reproduced"


@dataclass(frozen=True)
class RunSpec:
    """A run before any stage: name, resolved config, seeds and what describes it."""

    name: str
    config: Mapping[str, Any]  # the resolved config as a tree of plain values
    seeds: Mapping[str, int]
    config_digest: str
    environment: Mapping[str, str]  # pipeline.environment.describe()
    output_dir: Path
    threads: int | None
    tags: Mapping[str, str] = field(default_factory=dict)  # the user's and the caller's


@dataclass(frozen=True)
class DataSummary:
    """The data stages' results: digests (sha256 hex), cache hits, rows dropped."""

    data_digest: str
    train_digest: str
    test_digest: str
    cache_hits: Mapping[str, bool]
    dropped_rows: int | None = None


@dataclass(frozen=True)
class TrainingPlan:
    """Training runs epochs ``first..last``; ``checkpoint`` is the file it resumed from."""

    first: int
    last: int
    resumed_from: str | None = None  # train.resume_from as given (a path or a run id)
    checkpoint: Path | None = None
    output: str | None = None  # the model's output layer as built (model.output=auto resolved)


@dataclass(frozen=True)
class InputTable:
    """A table the run trained or tested on, as a run input (``context``: train or test)."""

    context: str
    frame: Any  # pandas.DataFrame: features, then the label as class indices
    digest: str
    targets: str
    source: str | None  # the CSV's path; None for data generated in code


@dataclass(frozen=True)
class ModelFiles:
    checkpoint: Path
    features: Sequence[str]
    classes: Sequence[str]


@dataclass(frozen=True)
class Validation:
    """A run's final validation figures: ``val_<name>`` of the model the run returns on its
    validation split, or, with k folds (:func:`fold_metrics`), each fold's
    ``fold<i>_val_<name>``, their mean ``val_<name>`` and std ``val_<name>_std``.

    They are logged at the run's last epoch, where the core's per-epoch ``val_*`` curves end,
    stamped after ``after_ms`` (when that epoch was recorded): MLflow keeps the point with the
    highest (step, time) as a metric's value, so these are the run's ``val_accuracy`` and
    not the last epoch's (with early stopping the model is the best epoch's).
    """

    metrics: Mapping[str, float]
    after_ms: float
    dataset: str | None  # the input table they were measured on; None: the folds'


def fold_metrics(folds: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each fold's ``val_<name>`` as ``fold<i>_val_<name>`` (i from 1), then ``val_<name>``
    (their mean) and ``val_<name>_std`` (their population std, as scikit-learn's
    ``GridSearchCV`` reports it) for every name the folds share. NaN in a fold (ROC AUC of a
    fold holding one class) makes its mean and std NaN."""
    metrics = {f"fold{i}_{key}": value for i, fold in enumerate(folds, start=1)
               for key, value in fold.items()}
    for key in folds[0]:
        values = np.array([fold[key] for fold in folds], dtype=np.float64)
        metrics[key] = float(np.mean(values))
        metrics[f"{key}_std"] = float(np.std(values))
    return metrics


@dataclass(frozen=True)
class RunOutcome:
    """A finished run: test metrics, stage times, result files and what to log."""

    metrics: Mapping[str, float]  # test_<name>: the final estimate
    timings: Mapping[str, float]
    confusion: Mapping[str, Any]
    checkpoint_sha256: str
    predictions_sha256: str
    epochs_run: int
    last_epoch: int | None
    best_epoch: int | None
    artifact_dir: Path
    inputs: Sequence[InputTable]
    model: ModelFiles | None
    validation: Validation | None = None  # None: no validation split and no folds

    @property
    def final_metrics(self) -> dict[str, float]:
        """The test metrics, then the validation figures (what a run returns)."""
        return {**self.metrics, **(self.validation.metrics if self.validation else {})}


def clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as the store takes them: text, at most :data:`MAX_TAG_LENGTH` characters."""
    return {str(k): str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def spec_records(spec: RunSpec) -> list[dict[str, Any]]:
    """Params (the config flattened to dotted keys, tracking.* left out, and the seeds used)
    and the tags that describe the run's environment.

    Params are values as used: an unset one (None) is logged empty, and ``model.output=auto``
    waits for :func:`plan_records`, which logs the output the model was built with (a param
    cannot change once logged). The stored config keeps the user's values."""
    params = {k: "" if v is None else v for k, v in flatten(spec.config).items()
              if not k.startswith("tracking.")}
    if params.get(AUTO_OUTPUT[0]) == AUTO_OUTPUT[1]:
        del params[AUTO_OUTPUT[0]]
    params.update({f"seeds.{k}": v for k, v in spec.seeds.items()})
    tags = {**spec.environment, CONFIG_DIGEST_TAG: spec.config_digest,
            "output_dir": str(spec.output_dir),
            THREADS_TAG: str(spec.threads) if spec.threads else "default"}
    return [{"k": "params", "params": params}, {"k": "tags", "tags": tags}]


def data_records(data: DataSummary) -> list[dict[str, Any]]:
    tags = {DATA_DIGEST_TAG: data.data_digest, "data.train_digest": data.train_digest,
            "data.test_digest": data.test_digest,
            **{f"cache.{stage}": "hit" if hit else "miss"
               for stage, hit in data.cache_hits.items()}}
    if data.dropped_rows is not None:
        tags["data.dropped_rows"] = str(data.dropped_rows)
    return [{"k": "tags", "tags": tags}]


def plan_records(plan: TrainingPlan, max_points: int | None) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = [{"k": "plan", "first": plan.first, "last": plan.last,
                                      "max_points": max_points}]
    if plan.output is not None:  # the same value again when the user chose it: harmless
        records.append({"k": "params", "params": {AUTO_OUTPUT[0]: plan.output}})
    if plan.resumed_from is not None:
        records.append({"k": "tags", "tags": {
            RESUMED_FROM_TAG: plan.resumed_from,
            RESUMED_CHECKPOINT_TAG: str(plan.checkpoint or plan.resumed_from)}})
    return records


def dataset_name(source: str | None, data_seed: int | None) -> str:
    """An input table's dataset name: its CSV file's name, or ``rf(seed=<data seed>)`` for
    the RF data generated in code (its splits share the name; the context tells them apart)."""
    return Path(source).name if source is not None else f"rf(seed={data_seed})"


def _generated_tags(data_seed: int | None) -> dict[str, str]:
    """The tags of generated data's code source: the generator and its seed (MLflow's own
    default would copy the run's tags)."""
    return {"mlflow.source.name": "stages/generate.py", "generator": "generate_rf",
            "seed": str(data_seed)}


def _dataset(table: InputTable, data_seed: int | None) -> dict[str, Any]:
    """The MLflow dataset entity of one input table, as plain values."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.pandas_dataset import from_pandas

    # A CSV's path resolves to MLflow's local source; generated data gets its own code source
    # (with source=None MLflow would take the run's context tags).
    source = table.source if table.source is not None else CodeDatasetSource(
        _generated_tags(data_seed))
    with warnings.catch_warnings():  # integer label columns are fine here
        warnings.simplefilter("ignore", UserWarning)
        entity = from_pandas(table.frame, source=source, targets=table.targets,
                             name=dataset_name(table.source, data_seed),
                             digest=table.digest[:36])._to_mlflow_entity()
    return {"name": entity.name, "digest": entity.digest, "source_type": entity.source_type,
            "source": entity.source, "schema": entity.schema, "profile": entity.profile,
            "context": table.context}


def outcome_records(outcome: RunOutcome, *, log_model: bool,
                    data_seed: int | None = None) -> list[dict[str, Any]]:
    """What a finished run adds but its files: result digests, inputs (named by
    :func:`dataset_name`, ``data_seed``: the run's data seed), the model, the test metrics
    (also the model's, measured on the test input), the final validation figures (see
    :class:`Validation`) and the stage times."""
    stamp = now_ms()
    tested_on = _input(outcome, "test", data_seed)
    records: list[dict[str, Any]] = [
        {"k": "tags", "tags": {"checkpoint_sha256": outcome.checkpoint_sha256,
                               "predictions_sha256": outcome.predictions_sha256,
                               "epochs_run": str(outcome.epochs_run)}},
        {"k": "inputs", "datasets": [_dataset(table, data_seed) for table in outcome.inputs]},
    ]
    if log_model and outcome.model is not None:
        records.append({"k": "model", "checkpoint": str(outcome.model.checkpoint),
                        "features": list(outcome.model.features),
                        "classes": list(outcome.model.classes)})
    records.append({"k": "metrics", "values": dict(outcome.metrics), "step": 0,
                    "time_ms": stamp, "of_model": log_model and outcome.model is not None,
                    "dataset": tested_on})
    if outcome.validation is not None:
        records.append(_validation_record(outcome, outcome.validation, log_model, stamp,
                                          data_seed))
    records.append({"k": "metrics", "values": {f"time_{stage}_s": seconds for stage, seconds
                                               in outcome.timings.items()},
                    "step": 0, "time_ms": stamp, "of_model": False, "dataset": None})
    return records


def _input(outcome: RunOutcome, context: str, data_seed: int | None) -> list[str] | None:
    """[name, digest] of the run's input table ``context``, as a metric's dataset."""
    return next(([dataset_name(t.source, data_seed), t.digest[:36]]
                 for t in outcome.inputs if t.context == context), None)


def _validation_record(outcome: RunOutcome, validation: Validation, log_model: bool,
                       stamp: int, data_seed: int | None) -> dict[str, Any]:
    """The final validation figures at the last epoch, stamped after it (see Validation)."""
    measured_on = (None if validation.dataset is None
                   else _input(outcome, validation.dataset, data_seed))
    return {"k": "metrics", "values": dict(validation.metrics),
            "step": outcome.last_epoch or 0,
            "time_ms": max(stamp, int(validation.after_ms) + 1),
            "of_model": log_model and outcome.model is not None and measured_on is not None,
            "dataset": measured_on}


def artifact_records(outcome: RunOutcome) -> list[dict[str, Any]]:
    """The run's artifact folder, logged at the run's root."""
    return [{"k": "artifacts", "path": str(outcome.artifact_dir), "dest": None}]


def partial_records(checkpoints: Sequence[Path]) -> list[dict[str, Any]]:
    """What a failed or interrupted run keeps: the checkpoints it wrote (never whatever else
    lies in its folder), one record per file, newest first, so that a store that gets only
    some of them before the process exits has the one a resume needs."""
    return [{"k": "artifacts", "path": str(path), "dest": "checkpoints"}
            for path in reversed(checkpoints) if path.is_file()]


def end_record(status: str, error: str | None, *, last_epoch: int | None = None,
               best_epoch: int | None = None) -> dict[str, Any]:
    return {"k": "end", "status": status, "error": error, "time_ms": now_ms(),
            "last_epoch": last_epoch, "best_epoch": best_epoch}
