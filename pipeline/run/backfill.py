"""A stored run's model and plots, added afterwards (``make log-model``, ``make plots``).

A lean sweep job (``sweep.child_record=lean``), and a run made with
``tracking.log_model=false`` or ``tracking.plots=false``, has no MLflow model or no plots.
:func:`complete_run` adds them to the run itself, which keeps its status and end time:

* the model: the pyfunc model, logged from the run's ``checkpoints/final.json`` exactly as
  a full run logs it (``models:/<model_id>``, servable with ``make serve RUN_ID=<id>``);
* the plots: redrawn from the run's own record (its stored ``config.yaml``, the same seeded
  and cached data steps, the final checkpoint and ``history.csv``) and logged at a full
  run's paths, once the redrawn test predictions are found equal to the run's
  ``predictions.csv`` (the plots must describe that run, not a CSV changed since): its
  ``probability`` column and, when it has them, every ``probability_<class>`` column (a
  ``predictions.csv`` written before those columns existed is checked on the first alone).

What a run has already is left as it is; either way the tag ``model_logged`` /
``plots_logged`` ends "true". The command is :mod:`pipeline.commands.complete`; a lean
sweep completes its best job with it (:mod:`pipeline.sweeps.callback`); the store's side is
:mod:`pipeline.tracking.completion`.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from pipeline.config.schema import Config, validate
from pipeline.config.seeds import run_seeds
from pipeline.errors import PipelineError
from pipeline.mlp import MLP, CheckpointError
from pipeline.run.artifacts import PlotInputs, write_plots
from pipeline.run.data import run_data_stages
from pipeline.run.stored_config import (
    NO_DIGEST,
    NO_FILE,
    check_stored_plugins,
    load_stored_config,
    shown_path,
    stored_data_problem,
)
from pipeline.tracking.completion import StoredRun, open_run
from pipeline.tracking.model import model_uri
from pipeline.tracking.record import DATA_DIGEST_TAG, MODEL_LOGGED_TAG, PLOTS_LOGGED_TAG
from pipeline.tracking.runs import HistoryError, Runs, read_history
from stages.dataset import DataError
from stages.evaluate import PROBABILITY_PREFIX, evaluate
from stages.preprocess import Preprocessor
from stages.transforms import StoredMetadataError

CHECKPOINT = "checkpoints/final.json"
CONFIG = "config.yaml"
HISTORY = "history.csv"
PREDICTIONS = "predictions.csv"
RTOL = 1e-9  # redrawn vs recorded test probabilities (same code, same data: equal)
ATOL = 1e-12


@dataclass(frozen=True)
class Completion:
    """What :func:`complete_run` did to one run."""

    run_id: str
    model_uri: str | None = None  # the run's model, logged now or found (None: not asked)
    model_added: bool = False  # logged by this call
    plots: tuple[str, ...] = ()  # the run's plot artifacts, drawn now or found
    plots_added: bool = False  # drawn and logged by this call

    def lines(self) -> list[str]:
        """One line per part done: ``run <id>: model logged (models:/m-...)``, ..."""
        lines = []
        if self.model_uri is not None:
            did = "model logged" if self.model_added else "already has a model"
            lines.append(f"run {self.run_id}: {did} ({self.model_uri})")
        if self.plots:
            did = "plots logged" if self.plots_added else "already has plots"
            count = len(self.plots)
            lines.append(f"run {self.run_id}: {did} ({count} file{'s' if count != 1 else ''})")
        return lines


def complete_run(run_id: str, *, uri: str | None, model: bool, plots: bool,
                 plugins: Sequence[str] = ()) -> Completion:
    """Give run ``run_id`` of the store at ``uri`` (default: the project's) its MLflow model
    (``model``) and its plots (``plots``) unless it has them, and set the ``model_logged`` and
    ``plots_logged`` tags to "true". ``plugins``: the modules of the run's ``pipeline.plugins``
    that the user trusts (redrawing imports them; a stored config alone never makes it).

    Raises :class:`PipelineError` (one line) for a missing store or run, a run still running,
    a run without ``checkpoints/final.json`` (one that failed before its end), and, for the
    plots, a run without its ``config.yaml``, ``history.csv`` or ``predictions.csv``, or whose
    data cannot be rebuilt as it was (a data file gone or changed).
    """
    target = open_run(uri, run_id)
    run_id = target.run_id
    model_uri, model_added, drawn, plots_added = None, False, (), False
    with tempfile.TemporaryDirectory(prefix="pipeline-complete-") as tmp:
        folder = Path(tmp)
        if model:
            model_uri, model_added = _complete_model(target, folder)
        if plots:
            drawn, plots_added = _complete_plots(target, folder, list(plugins))
    return Completion(run_id, model_uri, model_added, tuple(drawn), plots_added)


def _complete_model(target: StoredRun, folder: Path) -> tuple[str, bool]:
    """The run's model URI, and whether it was logged now."""
    found = target.model_id()
    if found is not None:
        if target.tags.get(MODEL_LOGGED_TAG) != "true":
            target.mark(MODEL_LOGGED_TAG)
        return model_uri(found), False
    checkpoint, network = _checkpoint(target, folder)
    meta = network.metadata
    features, classes = meta.get("feature_names"), meta.get("classes")
    if not _strings(features) or not _strings(classes):
        raise PipelineError(f"run {target.run_id}: its {CHECKPOINT} does not name the "
                            "feature columns and classes (not written by this pipeline); "
                            "cannot log a model from it")
    uri = target.log_model(checkpoint, features, classes)
    target.mark(MODEL_LOGGED_TAG)
    return uri, True


def _complete_plots(target: StoredRun, folder: Path, plugins: list[str]
                    ) -> tuple[list[str], bool]:
    """The run's plot artifacts, and whether they were drawn now."""
    found = target.plot_files()
    tag = target.tags.get(PLOTS_LOGGED_TAG)
    # No tag: a run from before the tag, whose plots are those it drew. "false" with plots:
    # some failed to draw (the run logged the others), so all are drawn again.
    if found and (tag == "true" or (tag is None and "plots/training_curves.png" in found)):
        if tag is None:
            target.mark(PLOTS_LOGGED_TAG)
        return found, False
    drawn = folder / "drawn"
    _redraw(target, folder, drawn, plugins)
    logged = target.log_plots(drawn)
    target.mark(PLOTS_LOGGED_TAG)
    return logged, True


# -- reading the run -------------------------------------------------------------------------
def _strings(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _checkpoint(target: StoredRun, folder: Path) -> tuple[Path, MLP]:
    """The run's final checkpoint, downloaded into ``folder``, and the network it holds."""
    path = folder / CHECKPOINT
    if not path.is_file():
        downloaded = target.download(CHECKPOINT, folder)
        if downloaded is None:
            raise PipelineError(
                f"run {target.run_id} ({target.status}) has no {CHECKPOINT}: it ended before "
                "training finished (or was not made by this pipeline); nothing to complete")
        path = downloaded
    try:
        return path, MLP.load(path)
    except (CheckpointError, ValueError, OSError) as error:
        raise PipelineError(f"run {target.run_id}: its {CHECKPOINT} cannot be loaded: "
                            f"{_first_line(error)}") from None


def _text(target: StoredRun, path: str, folder: Path, why: str) -> str:
    """The artifact ``path`` of the run as text; one line if the run has none."""
    downloaded = target.download(path, folder / "read")
    if downloaded is None:
        raise PipelineError(f"run {target.run_id} has no {path} artifact; {why}")
    return downloaded.read_text()


def _history(target: StoredRun) -> dict[str, list[float]]:
    """``history.csv`` as ``plots.plot_training_curves`` wants it: metric -> one value per
    epoch, in epoch order (what ``History.metrics`` holds)."""
    why = "its training curves cannot be drawn"
    try:
        frame = read_history(Runs(target.uri, store=target.store), target.run_id)
    except HistoryError as error:
        raise PipelineError(f"run {target.run_id}: its {HISTORY} {error}; {why}") from None
    if frame is None:
        raise PipelineError(f"run {target.run_id} has no {HISTORY} artifact; {why}")
    frame = frame.sort_values("epoch", kind="stable")
    return {str(key): frame[key].tolist() for key in frame.columns[1:]}


def _recorded_probabilities(target: StoredRun, folder: Path) -> pd.DataFrame:
    """The probability columns of the run's ``predictions.csv`` as floats: ``probability``,
    then the ``probability_<class>`` columns if it has them (older runs' have not)."""
    text = _text(target, PREDICTIONS, folder, "the redrawn predictions cannot be checked "
                 "against the run's, so no plots are drawn")
    try:
        frame = pd.read_csv(io.StringIO(text))
        columns = ["probability", *(c for c in frame.columns
                                    if str(c).startswith(PROBABILITY_PREFIX))]
        return frame[columns].astype(float)
    except (ValueError, KeyError, pd.errors.ParserError) as error:
        raise PipelineError(f"run {target.run_id}: its {PREDICTIONS} has no readable "
                            f"probability column ({_first_line(error)})") from None


def _same_predictions(redrawn: pd.DataFrame, recorded: pd.DataFrame) -> bool:
    """Whether ``recorded`` (:func:`_recorded_probabilities`) holds the redrawn probabilities:
    the same columns (``probability`` alone for an older run's file) and values."""
    columns = list(recorded.columns)
    expected = [c for c in redrawn.columns if c == "probability"
                or str(c).startswith(PROBABILITY_PREFIX)]
    if columns not in (["probability"], expected):
        return False
    ours, theirs = redrawn[columns].to_numpy(dtype=float), recorded.to_numpy(dtype=float)
    return ours.shape == theirs.shape and bool(np.allclose(ours, theirs, rtol=RTOL, atol=ATOL))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- redrawing -------------------------------------------------------------------------------
def _redraw(target: StoredRun, folder: Path, out: Path, plugins: list[str]) -> None:
    """Rebuild what the run's plots were drawn from, check it is that run's, draw into ``out``.

    The stored config is data: it imports only the ``plugins`` the user named, and its data
    file is checked against the run's data digest before the stages read it.
    """
    run_id = target.run_id
    _, network = _checkpoint(target, folder)
    text = _text(target, CONFIG, folder, "the run's data cannot be rebuilt for its plots")
    try:
        stored = load_stored_config(run_id, text)
        check_stored_plugins(run_id, stored, plugins,
                             lambda value: _plots_command(target, value))
    except PipelineError as error:
        raise PipelineError(str(error).removeprefix("rerun: ")) from None
    try:
        config = validate(OmegaConf.create(stored))
        problem = stored_data_problem(stored.get("data"), target.tags.get(DATA_DIGEST_TAG))
    except PipelineError as error:
        raise PipelineError(f"run {run_id}: its stored {CONFIG} is not a valid config here "
                            f"({error})") from None
    history = _history(target)
    recorded = _recorded_probabilities(target, folder)

    seeds = run_seeds(config)
    changed = (f"its data differ from the run's ({_data_source(config)} changed since the "
               "run?); refusing to draw plots that would not describe it")
    if problem is not None:  # before the stages read the file: its content stays unquoted
        path, reason = problem
        if reason == NO_FILE:
            raise PipelineError(f"run {run_id}: its data file {shown_path(path)} (data.path) "
                                "is gone; the plots need the data the run was trained on")
        if reason == NO_DIGEST:
            raise PipelineError(f"run {run_id}: {reason}, so its data file cannot be checked; "
                                "no plots are drawn from a file that may not be its data")
        raise PipelineError(f"run {run_id}: {changed}")
    try:
        data = run_data_stages(config, seeds, folder / "stages", timings={})
    except (DataError, PipelineError) as error:
        raise PipelineError(f"run {run_id}: its data cannot be rebuilt: "
                            f"{_first_line(error)}") from None
    except OSError as error:
        raise PipelineError(f"run {run_id}: its data cannot be rebuilt: could not write "
                            f"{error.filename or ''} ({error.strerror or error})") from None
    prepared = data.normalised
    recorded_digest = target.tags.get("data.test_digest")
    if recorded_digest is not None and recorded_digest != prepared.test.digest():
        raise PipelineError(f"run {run_id}: {changed}")
    try:  # the run's own preprocessor, as its checkpoint stores it (the plugins named)
        preprocessor = Preprocessor.from_metadata(network.metadata,
                                                  where=f"run {run_id}'s {CHECKPOINT}")
    except StoredMetadataError as error:
        raise PipelineError(_first_line(error)) from None
    try:
        proba = network.predict_proba(preprocessor.transform(data.splits.test.X))
    except ValueError as error:
        raise PipelineError(f"run {run_id}: its final checkpoint does not fit its data "
                            f"({_first_line(error)}); {changed}") from None
    evaluation = evaluate(proba, prepared.test.y, prepared.test.classes)
    if not _same_predictions(evaluation.predictions, recorded):
        raise PipelineError(f"run {run_id}: the redrawn test predictions differ from its "
                            f"{PREDICTIONS}: {changed}")
    write_plots(out, PlotInputs(
        evaluation=evaluation, history=history, proba=proba, test=prepared.test,
        raw_test=data.splits.test, raw_train=data.splits.train, model=network,
        preprocessor=preprocessor,
    ))


def _data_source(config: Config) -> str:
    if config.data.source == "csv":
        return f"the CSV {shown_path(Path(config.data.path))}"
    return "the data-generating code"


def _plots_command(target: StoredRun, plugins: str) -> str:
    """The command that redraws the run's plots importing ``plugins`` (given as ``[a,b]``)."""
    return (f"python -m pipeline.commands.complete {target.run_id} --plots "
            f"--uri '{target.uri}' --plugins {plugins.strip('[]')}")
