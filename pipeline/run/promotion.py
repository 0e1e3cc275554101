"""The promotion gate: a challenger run against the version that holds an alias, on the same
rows.

Both models predict the challenger's test split, rebuilt from the challenger's stored config
(the same seeded data steps as its run; a CSV is checked against the run's data digest
before it is read, and the rebuilt test split against the run's ``data.test_digest``), each
through its own fitted preprocessing as its final checkpoint stores it. The gate reports
both figures, their difference, McNemar's exact test on the rows' correctness and a paired
bootstrap of the per-row log loss; the challenger passes when it is not worse than the
holder by more than the margin on the chosen metric.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.config.schema import LOWER_IS_BETTER, validate
from pipeline.config.seeds import run_seeds
from pipeline.errors import PipelineError
from pipeline.mlp import MLP, CheckpointError
from pipeline.run.data import run_data_stages
from pipeline.run.stored_config import (
    NO_DIGEST,
    NO_FILE,
    check_stored_plugins,
    load_stored_config,
    shown_path,
    stored_data_problem,
)
from pipeline.tracking.completion import StoredRun
from pipeline.tracking.record import DATA_DIGEST_TAG
from pipeline.tracking.stats import Bootstrap, McNemar, format_p, mcnemar, paired_bootstrap
from stages.dataset import DataError
from stages.preprocess import Preprocessor
from stages.transforms import StoredMetadataError

CHECKPOINT = "checkpoints/final.json"
CONFIG = "config.yaml"
METRICS = ("accuracy", "log_loss")  # what the gate can decide on (per-row figures)
_EPS = 1e-15  # as stages/evaluate.py clips probabilities for the log loss


@dataclass(frozen=True)
class TestRows:
    """The challenger's raw test rows (columns named), their class indices and classes."""

    X: pd.DataFrame
    y: np.ndarray
    classes: tuple[str, ...]


@dataclass(frozen=True)
class RowScores:
    """One model on the test rows: whether each row is right, and each row's log loss."""

    correct: np.ndarray
    loss: np.ndarray

    def value(self, metric: str) -> float:
        return float(np.mean(self.correct if metric == "accuracy" else self.loss))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_model(target: StoredRun, folder: Path) -> tuple[MLP, Preprocessor]:
    """The run's final network and the preprocessor its checkpoint stores."""
    where = folder / target.run_id
    path = target.download(CHECKPOINT, where)
    if path is None:
        raise PipelineError(f"run {target.run_id} has no {CHECKPOINT}: it did not finish "
                            "training, so it cannot be compared")
    try:
        network = MLP.load(path)
        return network, Preprocessor.from_metadata(network.metadata,
                                                   where=f"run {target.run_id}'s {CHECKPOINT}")
    except (CheckpointError, StoredMetadataError, ValueError, OSError) as error:
        raise PipelineError(f"run {target.run_id}: its {CHECKPOINT} cannot be loaded: "
                            f"{_first_line(error)}") from None


def test_rows(target: StoredRun, folder: Path, plugins: Sequence[str] = ()) -> TestRows:
    """The challenger's test split, rebuilt from its stored config (see the module doc);
    PipelineError (one line) when it cannot be rebuilt as it was."""
    run_id = target.run_id
    path = target.download(CONFIG, folder / "config")
    if path is None:
        raise PipelineError(f"run {run_id} has no {CONFIG} artifact; its test rows cannot be "
                            "rebuilt for the gate")
    stored = load_stored_config(run_id, path.read_text())
    check_stored_plugins(run_id, stored, list(plugins),
                         lambda value: f"make promote RUN_ID={run_id} ARGS=\"--plugins "
                                       f"{value.strip('[]')}\"")
    config = validate(OmegaConf.create(stored))
    problem = stored_data_problem(stored.get("data"), target.tags.get(DATA_DIGEST_TAG))
    if problem is not None:  # before the stages read the file
        file, reason = problem
        if reason in (NO_FILE, NO_DIGEST):
            raise PipelineError(f"run {run_id}: its data file {shown_path(file)}: {reason}; "
                                "the gate needs the rows the run was tested on")
        raise PipelineError(f"run {run_id}: its data file {shown_path(file)} changed since "
                            f"the run ({reason}); the gate cannot rebuild its test rows")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the run warned already (dropped rows, ...)
            data = run_data_stages(config, run_seeds(config), folder / "stages", timings={})
    except (DataError, OSError) as error:
        raise PipelineError(f"run {run_id}: its test rows cannot be rebuilt: "
                            f"{_first_line(error)}") from None
    test = data.splits.test
    recorded = target.tags.get("data.test_digest")
    if recorded is not None and recorded != data.normalised.test.digest():
        raise PipelineError(f"run {run_id}: its rebuilt test split differs from the run's "
                            "(data changed since?); the gate cannot compare on its rows")
    return TestRows(pd.DataFrame(test.X, columns=list(test.feature_names)), test.y,
                    tuple(test.classes))


def scores(network: MLP, preprocessor: Preprocessor, rows: TestRows, who: str) -> RowScores:
    """Per-row correctness and log loss of a model on ``rows``, predicted as its served model
    and its evaluation predict (threshold 0.5 on a sigmoid output, argmax on a softmax)."""
    if tuple(preprocessor.classes) != rows.classes:
        raise PipelineError(f"{who} predicts the classes {list(preprocessor.classes)}, the "
                            f"challenger's test rows hold {list(rows.classes)}: not comparable")
    try:
        proba = network.predict_proba(preprocessor.transform(rows.X))
    except (DataError, ValueError) as error:
        raise PipelineError(f"{who} cannot predict the challenger's test rows: "
                            f"{_first_line(error)}") from None
    full = np.column_stack([1.0 - proba[:, 0], proba[:, 0]]) if proba.shape[1] == 1 else proba
    predicted = (full[:, 1] > 0.5).astype(np.int64) if proba.shape[1] == 1 else \
        np.argmax(full, axis=1)
    picked = np.clip(full[np.arange(len(rows.y)), rows.y], _EPS, 1 - _EPS)
    return RowScores(predicted == rows.y, -np.log(picked))


@dataclass(frozen=True)
class GateResult:
    """The challenger against the holder on the same rows, and the decision."""

    metric: str
    margin: float
    rows: int
    challenger: dict[str, float]  # accuracy and log_loss
    holder: dict[str, float]
    mcnemar: McNemar
    bootstrap: Bootstrap  # per-row log loss, challenger - holder
    passed: bool

    def difference(self, metric: str) -> float:
        return self.challenger[metric] - self.holder[metric]

    def summary(self) -> str:
        """One line: both figures of the metric, the difference and the paired test."""
        m = self.metric
        test = (f"McNemar p={format_p(self.mcnemar.p)} ({self.mcnemar.b_only} rows only the "
                f"challenger gets right, {self.mcnemar.a_only} only the holder)"
                if m == "accuracy" else
                f"paired bootstrap p={format_p(self.bootstrap.p)}, 95% CI "
                f"[{self.bootstrap.ci95_low:+.4f}, {self.bootstrap.ci95_high:+.4f}]")
        return (f"{m} on the challenger's {self.rows} test rows: challenger "
                f"{self.challenger[m]:.4f}, holder {self.holder[m]:.4f}, difference "
                f"{self.difference(m):+.4f} (margin {self.margin:g}); {test}")


def gate(challenger: RowScores, holder: RowScores, *, metric: str, margin: float
         ) -> GateResult:
    """Compare two models' per-row scores on the same rows; passes when the challenger is
    not worse than the holder by more than ``margin`` on ``metric``."""
    if metric not in METRICS:
        raise PipelineError(f"--metric {metric!r}: the gate decides on one of {list(METRICS)}")
    values = {m: challenger.value(m) for m in METRICS}
    held = {m: holder.value(m) for m in METRICS}
    change = values[metric] - held[metric]
    worse = change > margin if metric in LOWER_IS_BETTER else -change > margin
    # McNemar as (holder, challenger): b_only counts the rows only the challenger gets right
    return GateResult(metric, margin, len(challenger.correct), values, held,
                      mcnemar(holder.correct, challenger.correct),
                      paired_bootstrap(challenger.loss, holder.loss), not worse)
