"""The pipeline run: stages in order, data handed over as Parquet, the result recorded.

``run(config, ...)`` is what ``python -m pipeline`` calls after validating the
config; tests call it too. It opens the run's record first (so an unreachable store
fails before any work), runs the data steps (generate/load_csv -> split -> preprocess, each
cached by content: :data:`pipeline.run.data.DATA_STEPS`) -> [k folds, :mod:`pipeline.run.folds`]
-> train -> evaluate (test, and validation), and reports what it finds to tracking as plain
values (:mod:`pipeline.tracking.record`), which journals and sends them. The run ends
FINISHED, FAILED (with an ``error`` tag) or KILLED.

A sweep's job is handed its place in the sweep as a value
(:class:`~pipeline.run.context.SweepJob`: parent run, thread budget, worker process); the
run reads nothing of the sweep from the environment.
"""

from __future__ import annotations

import errno
import logging
import os
import shlex
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import environment
from pipeline.config.digest import config_dict, config_digest
from pipeline.config.paths import DEFAULT_CACHE, DEFAULT_STORE, resolve_path
from pipeline.config.schema import Config, training_settings
from pipeline.config.seeds import run_seeds
from pipeline.errors import PipelineError, Terminated
from pipeline.files import atomic_path, digest_file
from pipeline.mlp import MLP, CheckpointError, TrainingDiverged
from pipeline.run import artifacts
from pipeline.run.context import WARNINGS_LOGGER, SweepJob
from pipeline.run.data import (
    DataStages,
    check_input_file,
    check_transforms,
    run_data_stages,
    timed,
)
from pipeline.run.folds import cross_validate
from pipeline.run.progress import ProgressBar
from pipeline.run.timeline import process_origin, timing_line, with_other
from pipeline.tracking.journal import find_sweep_journal, new_journal_id
from pipeline.tracking.record import (
    CHILD_RECORD_TAG,
    MODEL_LOGGED_TAG,
    PLOTS_LOGGED_TAG,
    DataSummary,
    InputTable,
    ModelFiles,
    RunOutcome,
    RunSpec,
    TrainingPlan,
    Validation,
)
from pipeline.tracking.recorder import Recorder, start_run
from pipeline.tracking.runs import fetch_checkpoint
from stages.dataset import DataError, Dataset
from stages.evaluate import Evaluation, evaluate
from stages.preprocess import Preprocessor
from stages.train import (
    Architecture,
    TrainResult,
    build_model,
    plan_architecture,
    train_model,
)

log = logging.getLogger("pipeline")


@dataclass
class RunResult:
    """What ``run`` returns: where the run is recorded, its test metrics and files."""

    run_id: str | None  # None for tracking.mode=offline (the journal holds the run)
    experiment_id: str | None
    url: str | None
    metrics: dict[str, float]
    confusion: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None
    journal: Path | None = None
    model_id: str | None = None  # the run's logged model, served as models:/<model_id>
    store_uri: str | None = None  # where the run is recorded (None offline)
    sweep_dir: Path | None = None  # an offline sweep job's: the folder sync sends whole

    @property
    def model_uri(self) -> str | None:
        return f"models:/{self.model_id}" if self.model_id else None


# -- helpers ------------------------------------------------------------------------------
def warnings_as_log_lines() -> None:
    """Show warnings (the core's ConvergenceWarning, say) as one log line each, not as
    Python's two lines with the source line that raised them; the run under way records
    the first of each kind (see :func:`run_warnings`)."""
    global _warnings_recorded
    shown = logging.getLogger(WARNINGS_LOGGER)

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        _warned.setdefault(category.__name__, str(message).splitlines()[0] if message else "")
        shown.warning("%s: %s", category.__name__, message)

    _warned.clear()  # a process runs one run after another (a sweep's jobs)
    _warnings_recorded = ""
    warnings.showwarning = show


_warned: dict[str, str] = {}  # the run's warnings so far: kind -> its first message


def run_warnings() -> str:
    """The run's warnings, one line each (``ConvergenceWarning: <first message>``)."""
    return "\n".join(f"{kind}: {message}" for kind, message in _warned.items())


_warnings_recorded = ""  # what the run under way last recorded of run_warnings()


def _record_warnings(recorder: Recorder) -> None:
    """Tag the run with its warnings, if any came since they were last recorded."""
    global _warnings_recorded
    lines = run_warnings()
    if lines and lines != _warnings_recorded:
        recorder.warned(lines)
    _warnings_recorded = lines


def _write_error(error: OSError, output_dir: Path, cache_dir: str | None) -> str:
    """One line for a write that failed: the path, the cause, and the setting that moves
    that folder (the outputs' hydra.run.dir, the stage cache's pipeline.cache_dir)."""
    path = Path(error.filename) if error.filename else output_dir
    cache = resolve_path(cache_dir) if cache_dir else DEFAULT_CACHE
    setting = ("pipeline.cache_dir" if path.is_relative_to(cache)
               else "hydra.run.dir" if path.is_relative_to(output_dir)
               else "hydra.run.dir or pipeline.cache_dir")
    fix = ("free disk space there or point " if error.errno in (errno.ENOSPC, errno.EDQUOT)
           else "make it writable or point ")
    return (f"could not write {path}: {error.strerror or error}; {fix}{setting} at "
            "another folder")


def default_run_name(config: Config) -> str:
    data = config.data.source
    if data == "csv":
        data = Path(config.data.path).stem
    hidden = "x".join(str(h) for h in config.model.hidden_sizes) or "linear"
    return f"{data}-mlp{hidden}-{config.optimizer.name}-lr{config.optimizer.lr:g}"


@contextmanager
def _interrupts_raise(worker: bool) -> Iterator[None]:
    """Within the block, SIGINT raises KeyboardInterrupt and SIGTERM :class:`Terminated`
    (main thread only), so the run can end KILLED.

    In a sweep's ``worker`` process the sweep relays Ctrl-C as one SIGTERM: the terminal's
    own SIGINT is ignored there, and so is any signal after the first, so that ending the run
    is not cut short.
    """
    received: list[int] = []
    _unseen.clear()

    def handler(signum: int, frame: Any) -> None:
        if received and worker:
            return
        received.append(signum)
        stop = (Terminated(f"terminated by signal {signum}") if signum == signal.SIGTERM
                else KeyboardInterrupt())
        _unseen.append(stop)
        raise stop

    try:
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, handler),
                    signal.SIGINT: signal.signal(signal.SIGINT,
                                                 signal.SIG_IGN if worker else handler)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    default_hook = sys.unraisablehook

    def quiet_when_dropped(unraisable: Any) -> None:
        # The interrupt landed in a garbage-collection callback or a __del__, where Python
        # prints "Exception ignored in ..." and a traceback: _raise_if_dropped raises it
        # again, so the user sees one line.
        if not any(unraisable.exc_value is stop for stop in _unseen):
            default_hook(unraisable)

    sys.unraisablehook = quiet_when_dropped
    try:
        yield
    finally:
        sys.unraisablehook = default_hook
        for signum, previous_handler in previous.items():
            signal.signal(signum, previous_handler)


# Interrupts raised by the handler above and not yet seen by the run: Python drops an
# exception raised in a garbage-collection callback, a __del__ or an at-fork hook.
_unseen: list[KeyboardInterrupt] = []


def _raise_if_dropped() -> None:
    """Raise again an interrupt that Python dropped, before the run records its end."""
    if _unseen:
        raise _unseen[0]


def _user_error(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# -- training ---------------------------------------------------------------------------
def _start_model(config: Config, n_features: int, n_classes: int, seeds: Mapping[str, int],
                 output_dir: Path) -> tuple[MLP, TrainingPlan]:
    """A new model, or the one ``train.resume_from`` names (a checkpoint file, or the newest
    checkpoint of a run), and the epochs training will run."""
    spec = config.train.resume_from
    if spec is None:
        model = build_model(
            n_features, n_classes, hidden_sizes=config.model.hidden_sizes,
            activation=config.model.activations, output=config.model.output,
            init=config.model.init, dtype=config.model.dtype, seed=seeds["init"],
        )
        return model, TrainingPlan(first=1, last=config.train.epochs, output=model.output)
    path = resolve_path(spec)
    if path.exists():
        checkpoint, label = path, str(path)
    else:
        checkpoint, label = fetch_checkpoint(config.tracking.uri, spec, output_dir / "resume")
    model = MLP.load(checkpoint)
    planned = plan_architecture(
        n_features, n_classes, hidden_sizes=config.model.hidden_sizes,
        activation=config.model.activations, output=config.model.output,
        dtype=config.model.dtype,
    )
    mismatch = _architecture_mismatch(label, Architecture.of(model), planned, config,
                                      n_classes)
    if mismatch is not None:
        raise PipelineError(mismatch)
    log.info("resuming from %s (epoch %d)", label, model.epoch)
    return model, TrainingPlan(first=model.epoch + 1, last=config.train.epochs,
                               resumed_from=spec, checkpoint=label, output=model.output)


def _architecture_mismatch(label: str, found: Architecture, planned: Architecture,
                           config: Config, n_classes: int) -> str | None:
    """One line when the checkpoint's architecture is not the configured one (the run's
    params and name would describe a model it did not train), with the overrides that make
    the config match it; None when they agree."""
    if found == planned:
        return None
    fixes, data = [], []
    if found.layer_sizes[0] != planned.layer_sizes[0]:
        data.append(f"it takes {found.layer_sizes[0]} input features, the data has "
                    f"{planned.layer_sizes[0]}")
    if found.hidden_sizes != planned.hidden_sizes:
        fixes.append(f"model.hidden_sizes=[{','.join(map(str, found.hidden_sizes))}]")
    setting = config.model.activations
    names = ((setting,) * len(found.activations) if isinstance(setting, str)
             else tuple(setting))
    if names != found.activations:
        fixes.append(f"model.activation={found.activations[0]}"
                     if len(set(found.activations)) == 1
                     else f"model.activation=[{','.join(found.activations)}]")
    classes = 2 if found.output == "sigmoid" else found.layer_sizes[-1]
    if classes != n_classes:
        data.append(f"it predicts {classes} classes, the data has {n_classes}")
    elif found.output != planned.output:
        fixes.append(f"model.output={found.output}")
    if found.dtype != planned.dtype:
        fixes.append(f"model.dtype={found.dtype}")
    head = (f"train.resume_from: the checkpoint {label} holds {found}, but the config "
            f"builds {planned}")
    if data:
        also = f", with {' '.join(fixes)}" if fixes else ""
        return (f"{head}; {' and '.join(data)}: resume it on the data it was trained on"
                f"{also}, or drop train.resume_from")
    return f"{head}; to resume it, add {' '.join(fixes)} (or drop train.resume_from)"


class _Checkpointer:
    """Writes ``checkpoints/epoch_NNNNNNN.json`` every ``every`` epochs (atomically), and adds
    each file's path to ``saved``. Seven digits, so that names sort by epoch (in the MLflow
    UI too) up to 9,999,999; readers take any number of digits (old runs wrote five)."""

    def __init__(self, folder: Path, every: int, metadata: Mapping[str, Any],
                 saved: list[Path]) -> None:
        self.folder, self.every, self.metadata, self.saved = folder, every, metadata, saved

    def __call__(self, epoch: int, metrics: Mapping[str, float], model: MLP) -> None:
        if self.every and epoch % self.every == 0:
            path = self.folder / f"epoch_{epoch:07d}.json"
            # Listed first: Ctrl-C right after the save must not leave it out (a file that
            # a save cut short never got its name, and is not sent).
            self.saved.append(path)
            model.save(path, metadata=self.metadata)


def _threads(config: Config, sweep: SweepJob | None) -> int | None:
    """train.threads, else a sweep job's share of the cores."""
    return config.train.threads or (sweep.threads if sweep is not None else None)


def _threadpool(threads: int | None) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas") if threads else nullcontext()


def _show_progress(setting: str, in_sweep: bool = False) -> bool:
    """``train.progress``: true, false, or auto (a terminal's, outside CI and sweeps)."""
    if setting in ("true", "false"):
        return setting == "true"
    return sys.stderr.isatty() and not os.environ.get("CI") and not in_sweep


LEAN_MAX_POINTS = 100  # points per metric a lean sweep child sends (history.csv has all)


@dataclass(frozen=True)
class RecordPlan:
    """What a run records beside its params, metrics, checkpoints and result files."""

    model: bool  # the MLflow pyfunc model
    plots: bool
    max_points: int | None  # per metric, in the store
    tags: dict[str, str]


def record_plan(config: Config, *, in_sweep: bool) -> RecordPlan:
    """A single run (and a sweep job with ``sweep.child_record=full``) records what
    ``tracking.*`` asks; a lean sweep job skips the model and the plots, which cost more
    than a small model's training, and sends fewer points (the sweep completes its best
    job; ``make log-model`` / ``make plots`` any other)."""
    lean = in_sweep and config.sweep.child_record == "lean"
    points = config.tracking.max_points
    if lean:
        points = LEAN_MAX_POINTS if points is None else min(points, LEAN_MAX_POINTS)
    tags = {MODEL_LOGGED_TAG: "false", PLOTS_LOGGED_TAG: "false"}  # until they are logged
    if in_sweep:
        tags[CHILD_RECORD_TAG] = config.sweep.child_record
    return RecordPlan(model=config.tracking.log_model and not lean,
                      plots=config.tracking.plots and not lean, max_points=points, tags=tags)


# -- the run ------------------------------------------------------------------------------
def run(
    config: Config,
    *,
    output_dir: Path,
    overrides: Sequence[str] = (),
    hydra_dir: Path | None = None,
    sweep: SweepJob | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Run every stage for ``config`` as one recorded run; return where it is and its test
    metrics. ``sweep``: the run is that job of a sweep (None: a single run).

    The run writes into ``output_dir``, or into a subfolder of its own when another run's
    outputs are there (see :func:`pipeline.run.artifacts.claim_folder`). Ctrl-C or SIGTERM end
    it KILLED and are raised with a note: one line saying where its record is.
    """
    entered = time.perf_counter()  # start-up ends here (see pipeline.run.timeline)
    warnings_as_log_lines()
    check_transforms(config)  # before any work: one line for a bad data.transforms entry
    if sweep is None:  # a sweep's job fails as a FAILED child run, which the sweep counts
        check_input_file(config)  # the CSV's path, header and label: no run yet
    hydra_files = artifacts.read_folder(hydra_dir)  # before another run rewrites them
    journal_id = new_journal_id()
    with _interrupts_raise(sweep is not None and sweep.worker):
        claim = _claim(output_dir, journal_id, config)
        try:
            if claim.moved:
                log.info("%s holds another run's outputs: this run writes into %s",
                         output_dir, claim.folder)
                artifacts.write_folder(claim.folder / ".hydra", hydra_files)
            return _recorded_run(config, claim.folder, overrides, hydra_files, journal_id,
                                 sweep, extra_tags, entered=entered)
        finally:
            claim.release()


def _claim(output_dir: Path, journal_id: str, config: Config) -> artifacts.Claim:
    try:
        return artifacts.claim_folder(output_dir, journal_id[:8])
    except OSError as error:
        raise PipelineError(_write_error(error, output_dir, config.pipeline.cache_dir)) from None


def _recorded_run(config: Config, output_dir: Path, overrides: Sequence[str],
                  hydra_files: Mapping[str, bytes], journal_id: str,
                  sweep: SweepJob | None, extra_tags: Mapping[str, str] | None, *,
                  entered: float) -> RunResult:
    """The run in the folder it owns: its record opened, the stages, its end recorded.
    ``entered``: when :func:`run` was called (``time.perf_counter()``)."""
    in_sweep = sweep is not None
    parent_journal_id = sweep.parent_journal_id if sweep is not None else None
    recording = record_plan(config, in_sweep=in_sweep)
    seeds = run_seeds(config)
    spec = RunSpec(
        name=config.tracking.run_name or default_run_name(config), config=config_dict(config),
        seeds=seeds, config_digest=config_digest(config), environment=environment.describe(),
        output_dir=output_dir, threads=_threads(config, sweep),
        tags={**config.tags, **(extra_tags or {}), **recording.tags},
    )
    # Forked before the run's threads exist; it imports matplotlib while the store opens.
    plotter = artifacts.start_plot_process() if recording.plots else None
    try:
        recorder = _start_recorder(config, spec, recording, output_dir, journal_id, sweep)
    except BaseException:
        if plotter is not None:
            plotter.close()
        raise
    global _last_run_ended
    # A process that runs several jobs (a sweep's): a job's start-up is the time since the
    # previous one ended, not since the process started.
    origin = max(process_origin(), _last_run_ended)
    timings = {"startup": max(0.0, entered - origin), "setup": time.perf_counter() - entered}
    try:
        return _record(config, recorder, spec, recording, seeds, output_dir, overrides,
                       hydra_files, plotter, in_sweep=in_sweep,
                       parent_journal_id=parent_journal_id, timings=timings, origin=origin)
    finally:
        _last_run_ended = time.perf_counter()


_last_run_ended = 0.0  # time.perf_counter() when this process's last run ended


def _start_recorder(config: Config, spec: RunSpec, recording: RecordPlan, output_dir: Path,
                    journal_id: str, sweep: SweepJob | None) -> Recorder:
    """The run created in its store (or offline journal)."""
    parent_run_id = sweep.parent_run_id if sweep is not None else None
    parent_journal_id = sweep.parent_journal_id if sweep is not None else None
    recorder = start_run(
        uri=config.tracking.uri, experiment=config.tracking.experiment, run_name=spec.name,
        output_dir=output_dir, tags=spec.tags, parent_run_id=parent_run_id,
        parent_journal_id=parent_journal_id, offline=config.tracking.mode == "offline",
        max_points=recording.max_points, log_model=recording.model, journal_id=journal_id,
        ui_url=config.tracking.ui_url,
    )
    if recorder.run_id is not None:
        log.info("MLflow run %s in %s", recorder.run_id, recorder.store_uri)
    else:
        log.info("offline run: journal %s", recorder.journal_path)
    return recorder


_dirty_tree_told = False  # once per process: a sweep's jobs share the tree


def _tell_dirty_tree() -> None:
    """Warn (once per process) that the run's commit does not hold the code it ran."""
    global _dirty_tree_told
    _dirty_tree_told = True
    log.warning("the git tree is dirty: this run may not be reproducible from its commit")


def _record(config: Config, recorder: Recorder, spec: RunSpec, recording: RecordPlan,
            seeds: Mapping[str, int], output_dir: Path, overrides: Sequence[str],
            hydra_files: Mapping[str, bytes], plotter: artifacts.PlotJob | None, *,
            in_sweep: bool, parent_journal_id: str | None, timings: dict[str, float],
            origin: float) -> RunResult:
    """The stages and the run's end, recorded; the plot process closed if unused.
    ``timings``: the parts so far (every part is added to it); ``origin``: when the process
    started (``time.perf_counter()``)."""
    saved: list[Path] = []  # the checkpoints this run wrote: all a failed run sends of them
    try:
        recorder.describe(spec)
        if spec.environment.get("git_dirty") == "true" and not _dirty_tree_told:
            _tell_dirty_tree()
        outcome = execute(config, seeds, output_dir, overrides, hydra_files, recorder,
                          threads=spec.threads, plots=recording.plots, saved=saved,
                          in_sweep=in_sweep, plotter=plotter, timings=timings)
        _raise_if_dropped()
        started = time.perf_counter()

        def late_timings() -> dict[str, float]:
            """The parts the outcome's metrics could not hold yet, as the run ends."""
            now = time.perf_counter()
            parts = with_other({**timings, "tracking": now - started}, now - origin)
            return {**{k: parts[k] for k in parts if k not in outcome.timings},
                    "total": now - origin}

        _record_warnings(recorder)  # any since the results were recorded
        recorder.finish(outcome, late_timings)
        timings["tracking"] = time.perf_counter() - started
        log.info("stage %-9s %.3f s", "tracking", timings["tracking"])
        total = time.perf_counter() - origin
        log.info("%s", timing_line(with_other(timings, total), total))
    except KeyboardInterrupt as stop:
        _end_killed(recorder, stop, saved)
        raise
    except (DataError, CheckpointError, PipelineError) as error:
        _end_failed(recorder, _user_error(error), saved)
        if isinstance(error, PipelineError):
            raise
        raise PipelineError(_user_error(error)) from error
    except TrainingDiverged as error:
        message = f"{_user_error(error)}; lower optimizer.lr or use train.clip=value/norm"
        _end_failed(recorder, message, saved)
        raise PipelineError(message) from error
    except MemoryError:  # the data stages name their own (see run_data_stages)
        message = ("out of memory while training: the model or a batch does not fit in this "
                   "machine's memory; use smaller model.hidden_sizes or a smaller "
                   "train.batch_size")
        _end_failed(recorder, message, saved)
        raise PipelineError(message) from None
    except OSError as error:  # disk full, unwritable folder: the user's to fix
        message = _write_error(error, output_dir, config.pipeline.cache_dir)
        _end_failed(recorder, message, saved)
        raise PipelineError(message) from error
    except BaseException as error:
        _end_failed(recorder, f"{type(error).__name__}: {_user_error(error)}", saved)
        raise
    finally:
        if plotter is not None:
            plotter.close()  # a run that failed before its plots: the process exits
    return RunResult(
        run_id=recorder.run_id, experiment_id=recorder.experiment_id, url=recorder.url,
        metrics=outcome.final_metrics, confusion=dict(outcome.confusion),
        output_dir=output_dir, journal=recorder.journal_path,
        model_id=recorder.model_id, store_uri=recorder.store_uri,
        sweep_dir=_offline_sweep_dir(recorder, parent_journal_id),
    )


def _offline_sweep_dir(recorder: Recorder, parent_journal_id: str | None) -> Path | None:
    """The folder of the offline sweep this run is a job of (None: not one)."""
    if recorder.run_id is not None or parent_journal_id is None:
        return None
    found = find_sweep_journal(recorder.journal_path, parent_journal_id)
    return found.parent if found is not None else None


def _end_killed(recorder: Recorder, stop: KeyboardInterrupt, saved: Sequence[Path]) -> None:
    """End the run KILLED; the interrupt carries the line saying where its record is, the
    epoch of its last checkpoint and the command that resumes from it."""
    _unseen.clear()
    reason = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted (SIGINT)"
    ending = recorder.kill(f"{reason}; metrics and checkpoints so far were kept", saved)
    reached = "" if recorder.last_epoch is None else f"reached epoch {recorder.last_epoch}; "
    stop.add_note(f"{ending}; {reached}{_resume_hint(saved)}")


def _resume_hint(saved: Sequence[Path]) -> str:
    """Where an interrupted run can go on from: its newest checkpoint on disk, and the
    command that resumes from it (this process's own, when it was ``-m pipeline``)."""
    kept = [path for path in saved if path.is_file() and path.stem[6:].isdigit()
            and path.stem.startswith("epoch_")]
    if not kept:
        return "no checkpoint was written yet (train.checkpoint_every): run it again"
    newest = kept[-1]
    epoch = int(newest.stem[6:])
    resume = f"train.resume_from={newest}"
    args = sys.argv[1:]
    if Path(sys.argv[0]).parent.name != "pipeline" or {"-m", "--multirun"} & set(args):
        return f"last checkpoint: epoch {epoch}; to resume it, add {shlex.quote(resume)}"
    kept_args = [a for a in args if not a.lstrip("+~").startswith("train.resume_from=")]
    command = shlex.join([".venv/bin/python", "-m", "pipeline", *kept_args, resume])
    return f"last checkpoint: epoch {epoch}; resume it with: {command}"


def _end_failed(recorder: Recorder, message: str, saved: Sequence[Path]) -> None:
    """End the run FAILED; Ctrl-C meanwhile ends it KILLED instead, and is raised."""
    try:
        recorder.fail(message, saved)
    except KeyboardInterrupt as stop:
        _end_killed(recorder, stop, saved)
        raise


def checkpoint_metadata(preprocessor: Preprocessor, config: Config,
                        seeds: Mapping[str, int]) -> dict[str, Any]:
    """What every checkpoint of the run stores beside the weights: the fitted preprocessor
    (whatever predicts later restores it from there), the config digest and the seeds."""
    return {**preprocessor.to_metadata(), "config_digest": config_digest(config),
            "seeds": dict(seeds)}


def execute(
    config: Config,
    seeds: Mapping[str, int],
    output_dir: Path,
    overrides: Sequence[str],
    hydra_files: Mapping[str, bytes],
    recorder: Recorder,
    *,
    threads: int | None,
    plots: bool = True,
    saved: list[Path] | None = None,
    in_sweep: bool = False,
    plotter: artifacts.PlotJob | None = None,
    timings: dict[str, float] | None = None,
) -> RunOutcome:
    """The stages, in order; ``recorder`` hears of the data, the plan and every epoch.
    ``saved`` gets the path of every checkpoint written, as it is written. ``in_sweep``:
    the run is a sweep's job (no progress bar; its process runs more jobs). ``plotter``: the
    run's plot process, already started (else one is forked when the plots' inputs exist)."""
    saved = [] if saved is None else saved
    timings = {} if timings is None else timings  # each stage's seconds are added to it
    data = run_data_stages(config, seeds, output_dir, timings)
    prepared = data.normalised
    recorder.data_prepared(DataSummary(
        data_digest=data.raw.digest(), train_digest=prepared.train.digest(),
        test_digest=prepared.test.digest(), cache_hits=data.cache_hits,
        dropped_rows=data.dropped_rows,
    ))
    log.info("cache: %s", ", ".join(f"{s} {'hit' if h else 'miss'}"
                                     for s, h in data.cache_hits.items()))
    folds = None
    if config.split.folds is not None:  # before the refit: the folds' figures, then all rows
        with timed(timings, "folds"), _threadpool(threads):
            folds = cross_validate(config, seeds, data.splits, threads=threads)

    artifact_dir = output_dir / "artifacts"
    metadata = checkpoint_metadata(data.preprocessor, config, seeds)
    trained = _train(config, seeds, data, output_dir, recorder, metadata, saved,
                     threads=threads, in_sweep=in_sweep, timings=timings)
    trained_ms = time.time() * 1000.0  # after every epoch was recorded
    final_ckpt = output_dir / "checkpoints" / "final.json"
    saved.append(final_ckpt)
    trained.model.save(final_ckpt, metadata=metadata)

    with timed(timings, "evaluate"):
        # Raw rows through the preprocessor as the checkpoint stores it: what the served
        # model and `make plots` do (bit for bit the preprocess step's test split).
        preprocessor = Preprocessor.from_metadata(metadata, where="the checkpoint metadata")
        proba = trained.model.predict_proba(preprocessor.transform(data.splits.test.X))
        evaluation: Evaluation = evaluate(proba, prepared.test.y, prepared.test.classes)
        validation = (Validation(folds, trained_ms, dataset=None) if folds is not None
                      else _validation(trained.model, preprocessor, data.splits.val,
                                       trained_ms))

    results_started = time.perf_counter()  # the results: written, handed over, recorded
    plot_inputs = artifacts.PlotInputs(
        evaluation=evaluation, history=trained.history.metrics, proba=proba,
        test=prepared.test, raw_test=data.splits.test, raw_train=data.splits.train,
        model=trained.model, preprocessor=preprocessor,
    )
    drawing = None
    if plots:
        drawing = (plotter.draw(artifact_dir, plot_inputs) if plotter is not None
                   else artifacts.start_plots(artifact_dir, plot_inputs))
    files = artifacts.write_run_artifacts(
        artifact_dir, evaluation=evaluation, config_tree=config_dict(config),
        overrides=overrides, hydra_files=hydra_files,
    )
    (artifact_dir / "checkpoints").mkdir(exist_ok=True)
    for path in dict.fromkeys(saved):  # this run's checkpoints, whatever else is there
        # Whole or not at all: a full disk must not leave an empty copy behind.
        with atomic_path(artifact_dir / "checkpoints" / path.name) as copy:
            shutil.copy2(path, copy)
    history = trained.history
    tables = (("train", data.splits.train), ("val", data.splits.val), ("test", data.splits.test))
    outcome = RunOutcome(
        metrics=dict(evaluation.metrics), timings=dict(timings),
        confusion=evaluation.confusion.to_dict(),
        checkpoint_sha256=digest_file(final_ckpt),
        predictions_sha256=digest_file(files["predictions"]),
        epochs_run=len(history), last_epoch=history.epochs[-1] if history.epochs else None,
        best_epoch=history.best_epoch, artifact_dir=artifact_dir,
        inputs=[InputTable(context, split.to_frame(), split.digest(), data.raw.label_name,
                           data.source)
                for context, split in tables if split is not None],
        model=ModelFiles(final_ckpt, data.raw.feature_names, data.raw.classes),
        validation=validation,
    )
    # The results go to the store while the plots are drawn; the artifact folder after.
    _record_warnings(recorder)  # in the results' batch: no store call of its own
    recorder.record(outcome)
    timings["results"] = time.perf_counter() - results_started
    # A plot that failed printed its own line (pipeline.run.artifacts); the others are
    # logged, and `make plots` draws them all again.
    if drawing is not None:
        with timed(timings, "plots"):  # what is left of drawing them once the results are out
            drawn = drawing.wait()
        if drawn:
            recorder.plots_drawn()
    return outcome


def _train(config: Config, seeds: Mapping[str, int], data: DataStages, output_dir: Path,
           recorder: Recorder, metadata: Mapping[str, Any], saved: list[Path], *,
           threads: int | None, in_sweep: bool, timings: dict[str, float]) -> TrainResult:
    """The run's model (new, or resumed) trained on the training split, validated on the
    validation split if any; every epoch to ``recorder``, checkpoints into ``saved``."""
    prepared = data.normalised
    checkpoints = output_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    model, plan = _start_model(config, prepared.train.n_features, prepared.train.n_classes,
                               seeds, output_dir)
    recorder.training_started(plan)
    callbacks: list[Callable[..., Any]] = [
        recorder.log_epoch,
        _Checkpointer(checkpoints, config.train.checkpoint_every, metadata, saved),
    ]
    shown = _show_progress(config.train.progress, in_sweep)
    progress = ProgressBar(config.train.epochs) if shown else None
    if progress is not None:
        callbacks.append(progress)
    try:
        settings = training_settings(config, shuffle_seed=seeds["shuffle"],
                                     resume=plan.resumed_from is not None, threads=threads)
        # The bar closes (last in, first out) before the stage's time is logged.
        with timed(timings, "train"), _threadpool(threads), progress or nullcontext():
            return train_model(model, prepared.train, prepared.val, settings,
                               callbacks=callbacks)
    except ValueError as error:  # the core's input checks (e.g. a resumed model's shape)
        if isinstance(error, CheckpointError | DataError):
            raise
        raise PipelineError(f"train: {_user_error(error)}") from error


def _validation(model: MLP, preprocessor: Preprocessor, val: Dataset | None,
                after_ms: float) -> Validation | None:
    """The evaluate stage's ``val_*`` figures of the run's model on the raw validation rows,
    through the preprocessor the test rows go through (None: no validation split)."""
    if val is None:
        return None
    proba = model.predict_proba(preprocessor.transform(val.X))
    figures = evaluate(proba, val.y, val.classes, prefix="val")
    return Validation(dict(figures.metrics), after_ms, dataset="val")


def _metric_table(metrics: Mapping[str, float]) -> list[str]:
    """One row per metric name, its validation figure beside its test figure; with k folds
    the validation column is their mean ± std."""
    names = [key.removeprefix("test_") for key in metrics if key.startswith("test_")]
    names += [key.removeprefix("val_") for key in metrics
              if key.startswith("val_") and not key.endswith("_std")
              and key.removeprefix("val_") not in names]
    folds = len({key.split("_", 1)[0] for key in metrics if key.startswith("fold")})

    def shown(key: str) -> str:
        value = metrics.get(key)
        return "-" if value is None else f"{value:.4f}"

    columns: list[tuple[str, list[str]]] = []
    if any(f"val_{name}" in metrics for name in names):
        cells = [shown(f"val_{name}") + (f" ± {shown(f'val_{name}_std')}" if folds else "")
                 for name in names]
        columns.append((f"val, {folds} folds (mean ± std)" if folds else "val", cells))
    if any(f"test_{name}" in metrics for name in names):
        columns.append(("test", [shown(f"test_{name}") for name in names]))
    first = max(len("Metrics"), *(len(name) + 2 for name in names))
    widths = [max(len(title), *(len(cell) for cell in cells)) for title, cells in columns]
    lines = ["Metrics".ljust(first) + "".join(f"  {title:>{width}}" for (title, _), width
                                             in zip(columns, widths, strict=True))]
    for row, name in enumerate(names):
        lines.append(f"  {name}".ljust(first) + "".join(
            f"  {cells[row]:>{width}}" for (_, cells), width in zip(columns, widths,
                                                                     strict=True)))
    return lines


def format_summary(result: RunResult) -> str:
    """The end-of-run console summary: validation and test metrics side by side, the
    confusion matrix (test), where to look."""
    lines = ["", *(_metric_table(result.metrics) if result.metrics else [])]
    labels = [str(label) for label in result.confusion.get("labels", [])]
    matrix = result.confusion.get("matrix", [])
    if labels:
        width = max(6, *(len(label) for label in labels), *(len(str(v)) for row in matrix
                                                            for v in row))
        lines.append("Confusion matrix (rows = actual, columns = predicted)")
        lines.append(" " * (width + 2) + " ".join(f"{label:>{width}}" for label in labels))
        for label, row in zip(labels, matrix, strict=True):
            lines.append(f"  {label:>{width}}" + " ".join(f"{v:>{width}}" for v in row))
    if result.run_id is not None:
        lines.append(f"MLflow run {result.run_id}")
        served = (result.store_uri or "").startswith(("http://", "https://"))
        lines.append(f"  open it: {'' if served else 'make ui, then '}{result.url}")
        if result.model_uri is not None:
            # `make serve` reads the project's store unless told another (STORE=).
            other = result.store_uri not in (None, f"sqlite:///{DEFAULT_STORE}")
            store = f" STORE={result.store_uri}" if other else ""
            lines.append(f"  model: {result.model_uri}")
            lines.append(f"  serve it: make serve MODEL={result.model_uri}{store}")
    else:
        lines.append(f"Offline run: recorded in {result.journal}")
        if result.sweep_dir is not None:  # its parent goes first: sync the whole sweep
            lines.append(f"  send the sweep to the store: make sync DIR={result.sweep_dir} "
                         f"(this job alone: make sync DIR={result.output_dir})")
        else:
            lines.append(f"  send it to the store: make sync DIR={result.output_dir}")
    if result.output_dir is not None:
        lines.append(f"  outputs: {result.output_dir}")
    return "\n".join(lines)

