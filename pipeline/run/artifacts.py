"""The files a run leaves behind: the folder it owns, and its MLflow artifacts in it.

A run writes only into a folder no other run writes into (:func:`claim_folder`): the
output folder it was given, or, when that folder already holds another run's outputs
or is claimed by a run still going, a run-specific subfolder of it.

The artifacts are written into one folder (``<run folder>/artifacts``) that tracking
logs in one call: confusion matrix (JSON + PNG), predictions.csv, per_class_metrics.csv,
plots, the resolved config and Hydra's overrides, and the environment. (The per-epoch
history artifact is written by tracking, from the run's journal.)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline import environment
from pipeline.errors import PipelineError
from pipeline.files import atomic_path, write_text_atomic
from pipeline.interrupts import signals_held
from pipeline.mlp import MLP
from stages.dataset import DataError, Dataset
from stages.evaluate import Evaluation
from stages.preprocess import Preprocessor

CLAIM_NAME = ".pipeline-run"  # in a run's folder while the run writes there
RUN_PREFIX = "run-"  # a run-specific subfolder: run-<key>
# What says a folder holds a run's outputs: its journal (or a journal set aside by an
# older version of the pipeline) and its checkpoints.
RUN_OUTPUTS = ("journal*.jsonl", "checkpoints")


@dataclass
class Claim:
    """The folder a run writes everything into, held until :meth:`release`."""

    folder: Path
    moved: bool  # a run-specific subfolder: the folder asked for was another run's
    _mark: Path | None = field(default=None, repr=False)

    def release(self) -> None:
        """The run has ended: drop the claim (its outputs keep later runs out)."""
        if self._mark is not None:
            self._mark.unlink(missing_ok=True)
            self._mark = None


def claim_folder(folder: Path, key: str) -> Claim:
    """The folder a run writes into: ``folder`` itself if no other run's outputs are there
    and no other run claims it, else a new subfolder ``folder/run-<key>`` (``key``: short
    and unique to the run, e.g. the start of its journal id).

    The claim is a file created with O_EXCL: of two runs starting at once in one folder,
    exactly one gets it. A claim left by a process that was killed keeps the folder
    taken (the run's journal would anyway).
    """
    folder.mkdir(parents=True, exist_ok=True)
    mark = _mark(folder)
    if mark is not None:
        if not holds_a_run(folder):
            return Claim(folder, False, mark)
        mark.unlink()
    own = _new_subfolder(folder, key)
    return Claim(own, True, _mark(own))


def holds_a_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run's outputs (a journal, checkpoints)."""
    return any(any(folder.glob(pattern)) for pattern in RUN_OUTPUTS)


def _mark(folder: Path) -> Path | None:
    """Create the claim file in ``folder``; None if another run has it."""
    path = folder / CLAIM_NAME
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        os.write(handle, f"{os.getpid()}\n".encode())
    finally:
        os.close(handle)
    return path


def _new_subfolder(folder: Path, key: str) -> Path:
    """A subfolder of ``folder`` that did not exist (mkdir is atomic: it is this run's)."""
    for attempt in range(1000):
        own = folder / (f"{RUN_PREFIX}{key}" if attempt == 0 else f"{RUN_PREFIX}{key}-{attempt}")
        try:
            own.mkdir()
        except FileExistsError:
            continue
        return own
    raise FileExistsError(f"{folder}: no free {RUN_PREFIX}{key}-N subfolder")


def read_folder(folder: Path | None) -> dict[str, bytes]:
    """The files directly in ``folder`` (Hydra's ``.hydra``: a few small YAML files), read
    at the start of a run: another run started in the same folder later rewrites them."""
    if folder is None or not folder.is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


def write_folder(folder: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (name -> content) into ``folder``, each atomically."""
    for name, content in files.items():
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(content)


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
    hydra_files: Mapping[str, bytes],
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
    files["per_class"] = _write_csv(evaluation.per_class, folder / "per_class_metrics.csv")
    files["config"] = write_text_atomic(
        folder / "config.yaml", yaml.safe_dump(dict(config_tree), sort_keys=False)
    )
    files["overrides"] = write_text_atomic(
        folder / "overrides.yaml", yaml.safe_dump(list(overrides), default_flow_style=False)
    )
    if hydra_files:  # Hydra's record of this run, as it was when the run started
        write_folder(folder / "hydra", hydra_files)
    files["environment"] = write_text_atomic(
        folder / "environment.json",
        json.dumps({**environment.describe(), "packages": environment.installed_packages()},
                   indent=2),
    )
    return files


_STOPS = (signal.SIGINT, signal.SIGTERM)


class PlotJob:
    """A forked process that draws a run's plots while the parent logs to MLflow.

    It is forked as the run starts (:func:`start_plot_process`), before the run's threads
    exist, and imports matplotlib at once, on the other core, while the parent opens the
    store and trains; the plots' inputs reach it through a pipe the moment they exist
    (:meth:`draw`), so nothing waits for matplotlib to start. The child only writes PNG
    files and never touches the tracking store. Ctrl-C or SIGTERM end the child silently
    (the run reports the interrupt); a run that ends without plots closes it unused.
    """

    def __init__(self) -> None:
        import multiprocessing

        self._process = self._pipe = None
        if "fork" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("fork")
            receiver, self._pipe = context.Pipe(duplex=False)
            self._process = context.Process(target=_serve, args=(receiver, self._pipe),
                                            daemon=True, name="plots")
            with signals_held():  # Python's at-fork hooks drop what a handler raises
                self._process.start()
            receiver.close()
        self._sent = False
        self._sender: threading.Thread | None = None
        self._inline_ok = True

    def draw(self, folder: Path, inputs: PlotInputs) -> PlotJob:
        """Hand the child the plots' inputs (drawn inline when there is no fork). A thread
        sends them: a child still importing matplotlib does not hold the run up."""
        if self._pipe is None:  # no fork (e.g. Windows): draw inline
            self._inline_ok = _draw(write_plots, (folder, inputs), exit_on_error=False)
            return self
        self._sent = True
        self._sender = threading.Thread(target=self._send, args=((folder, inputs),),
                                        name="plot-inputs", daemon=True)
        self._sender.start()
        return self

    def _send(self, item: tuple[Path, PlotInputs]) -> None:
        """The parent's own objects, pickled into the pipe; a child that ended early (its
        own line says why) leaves the run without plots."""
        assert self._pipe is not None
        try:
            self._pipe.send(item)
        except (OSError, ValueError):
            pass  # wait() sees the child's exit code
        finally:
            self._pipe.close()

    def wait(self) -> bool:
        """Wait for the plots; False if drawing them failed (the run goes on without them)."""
        if self._process is None:
            return self._inline_ok
        if self._sender is not None:
            self._sender.join()
        self._process.join()
        return self._sent and self._process.exitcode == 0

    def close(self) -> None:
        """No plots after all (the run failed first): the child, which has written nothing
        and may still be importing matplotlib, is ended at once (SIGKILL: no handler of the
        run's runs in it, and nothing is printed)."""
        if self._sent:
            return
        if self._pipe is not None:
            self._pipe.close()
        if self._process is not None:
            self._process.kill()
            self._process.join()


def start_plot_process() -> PlotJob:
    """Fork the process that will draw the run's plots (see :class:`PlotJob`)."""
    return PlotJob()


def _serve(receiver: Any, sender: Any) -> None:
    """In the plot process: import matplotlib now, draw when the inputs arrive; exit
    quietly if the run closes the pipe without sending them."""
    for signum in _STOPS:
        signal.signal(signum, signal.SIG_DFL)
    sender.close()  # the fork's copy of the run's end: else the run's close is no EOF
    from pipeline.run import plots  # noqa: F401  (warm: ~0.3 s of imports off the run's path)

    try:
        folder, inputs = receiver.recv()
    except (EOFError, OSError):
        os._exit(0)
    _draw(write_plots, (folder, inputs))


def _draw(target: Any, args: tuple[Any, ...], *, exit_on_error: bool = True) -> bool:
    """Draw; a failure prints one line (the run goes on without plots): the plot process
    exits 1, an inline draw returns False."""
    try:
        target(*args)
    except Exception as error:  # one line, as every failure; the run goes on without plots
        line = str(error) if isinstance(error, PlotsFailed) else (
            f"drawing the plots: {type(error).__name__}: {error}")
        print(line.splitlines()[0], file=sys.stderr, flush=True)
        if exit_on_error:
            os._exit(1)
        return False
    return True


@dataclass(frozen=True)
class PlotInputs:
    """What the plots of one run are drawn from.

    proba: (n_test, 1) or (n_test, k); test: the test split as the model sees it; raw_train
    and raw_test: the splits before preprocessing (the decision boundary is drawn over raw
    features, through ``preprocessor``).
    """

    evaluation: Evaluation
    history: Mapping[str, Sequence[float]]
    proba: np.ndarray
    test: Dataset
    raw_test: Dataset
    raw_train: Dataset
    model: MLP
    preprocessor: Preprocessor


class PlotsFailed(PipelineError):
    """One plot or more could not be drawn (the others were)."""


def start_plots(folder: Path, inputs: PlotInputs) -> PlotJob:
    """Start drawing the run's plots into ``folder`` in a new plot process (see
    :class:`PlotJob`; a run forks it earlier, with :func:`start_plot_process`)."""
    return PlotJob().draw(folder, inputs)


def write_plots(folder: Path, inputs: PlotInputs) -> dict[str, Path]:
    """Draw the run's plots into ``folder`` (``confusion_matrix.png``, ``plots/*.png``, the
    decision boundary for two features only); return their paths by name.

    Each plot is drawn whatever happens to the others; if any failed, :class:`PlotsFailed`
    says which (one line) once the rest are drawn.
    """
    from pipeline.run import plots  # matplotlib (~0.3 s): in the plot process, not the run's

    (folder / "plots").mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    failed: list[str] = []
    for name, path, draw in _plot_steps(folder, inputs, plots):
        try:
            files[name] = Path(draw(path))
        except Exception as error:  # any plot's failure: reported below, in one line
            failed.append(f"{path.relative_to(folder).as_posix()}: {type(error).__name__}: "
                          f"{_first_line(error)}")
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise PlotsFailed(f"drawing the plots: {failed[0]}{more}")
    return files



def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _plot_steps(folder: Path, inputs: PlotInputs, plots: Any
                ) -> list[tuple[str, Path, Callable[[Path], Any]]]:
    """(name, file, draw(file)) for each plot of the run. The calibration curve's title gives
    the evaluation's Brier score and calibration error."""
    evaluation, history, proba, test = inputs.evaluation, inputs.history, inputs.proba, inputs.test
    out = folder / "plots"
    shown = proba[:, 0] if proba.shape[1] == 1 else proba[np.arange(len(proba)), test.y]
    steps: list[tuple[str, Path, Callable[[Path], Any]]] = [
        ("confusion_png", folder / "confusion_matrix.png", lambda path: plots.plot_confusion_matrix(
            evaluation.confusion.labels, evaluation.confusion.matrix, path)),
        ("curves_png", out / "training_curves.png",
         lambda path: plots.plot_training_curves(history, path)),
        ("roc_png", out / "roc_curve.png",
         lambda path: plots.plot_roc_curve(test.y, proba, test.classes, path)),
        ("pr_png", out / "precision_recall_curve.png",
         lambda path: plots.plot_precision_recall_curve(test.y, proba, test.classes, path)),
        ("calibration_png", out / "calibration_curve.png",
         lambda path: plots.plot_calibration_curve(
             test.y, proba, test.classes, path, brier=evaluation.metric("brier_score"),
             ece=evaluation.metric("calibration_error"))),
        ("scatter_png", out / "probability_vs_label.png",
         lambda path: plots.plot_probability_vs_label(shown, test.y, path)),
    ]
    if inputs.raw_test.n_features == 2:
        steps.append(("boundary_png", out / "decision_boundary.png",
                      lambda path: _decision_boundary(inputs, plots, path)))
    return steps


def _decision_boundary(inputs: PlotInputs, plots: Any, path: Path) -> Path:
    """The decision boundary over the raw features of both splits, through the run's
    preprocessor."""
    raw_train, raw_test = inputs.raw_train, inputs.raw_test
    X = np.vstack([raw_train.X, raw_test.X])
    y = np.concatenate([raw_train.y, raw_test.y])

    def predict(raw: np.ndarray) -> np.ndarray:
        return inputs.model.predict_proba(inputs.preprocessor.transform(raw))

    try:
        return plots.plot_decision_boundary(predict, X, y, raw_test.feature_names, path)
    except DataError:  # the margin left a transform's domain (log1p below -1)
        return plots.plot_decision_boundary(predict, X, y, raw_test.feature_names, path,
                                            margin=0.0)
