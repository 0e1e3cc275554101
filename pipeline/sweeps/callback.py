"""A Hydra multirun as one MLflow parent run with one child run per job, stopped cleanly:
the sweep's launching process.

:class:`SweepCallback` (registered in ``conf/config.yaml``) runs in the launching
process: before any job starts it creates the store, the experiment and the parent
run (see :mod:`pipeline.tracking.parent`), and hands the parent's id to every job
through ``hydra.job.env_set`` — the launchers re-compose each job from the Hydra
overrides, so the id reaches jobs on every launcher, a remote Ray cluster included.
A plain environment variable would not. The job's side of that hand-over is
:mod:`pipeline.sweeps.job`.

When the sweep ends — or fails: Hydra skips ``on_multirun_end`` when a job raised,
so ``python -m pipeline`` calls :func:`finish_open_sweep` on its way out — the
parent gets a summary table, seed statistics, the best configuration, comparison plots
and a status, the best job of a lean sweep (``sweep.child_record``) its model and plots,
and the sweep prints its leaderboard and links.

Before the sweeper expands the overrides, the callback may change them:
``sweep.replicates=N`` runs every configuration with N seeds, and ``sweep.resume=<id>``
(or ``last``) reruns a past sweep's overrides under its parent run. Each job asks
:func:`pipeline.sweeps.job.job_gate` first whether to run: a resumed sweep keeps a
configuration that finished, and ``sweep.max_failures`` starts no job once that many have
failed.

Ctrl-C or SIGTERM on the launching process stops the sweep (:func:`_stop_sweep`): the
jobs' worker processes are told to stop (each ends its run KILLED, its journal
complete, and exits), no queued job starts, and the parent ends KILLED with the counts.

During a sweep each shape of job is composed once per process: see
:mod:`pipeline.sweeps.composition`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.config.digest import is_bookkeeping
from pipeline.config.paths import DEFAULT_STORE
from pipeline.config.schema import SweepConfig, validate_sweep
from pipeline.errors import PipelineError, Terminated
from pipeline.interrupts import signals_held
from pipeline.sweeps.composition import check_jobs_cheaply, compose_by_shape
from pipeline.sweeps.job import (
    KEPT,
    NOT_STARTED,
    job_context,
    job_environment,
    stop_with_launcher,
)
from pipeline.sweeps.output import (
    console_warnings_only,
    hide_launch_lines,
    job_line,
    quiet_console,
    warned_kinds,
)
from pipeline.sweeps.preflight import check_jobs
from pipeline.sweeps.selection import check_selection
from pipeline.tracking import record as names

if TYPE_CHECKING:
    from pipeline.tracking.parent import PastSweep, SweepParent

log = logging.getLogger("pipeline.sweep")

# conf/hydra/launcher/joblib.yaml replaces the joblib plugin's config of the same name on
# purpose, and Hydra checks it against that config's fields: only its warning goes.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/joblib' is validated against "
                        "ConfigStore schema", category=UserWarning)

STOP_GRACE_S = 10.0  # how long stopping jobs may take to end their runs
COMPLETE_BEST_TIMEOUT_S = 600.0  # how long the best job's model and plots may take

_open: SweepParent | None = None


def _require_writable(key: str, folder: Path) -> None:
    """Exit with one line if ``folder`` cannot be created or written (Hydra would print a
    traceback from its own mkdir, and exceptions in callbacks only become warnings)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        print(f"{key}: cannot write to {str(folder)!r} ({error.strerror or error}); "
              f"point {key} at a writable folder", file=sys.stderr)
        raise SystemExit(1) from None


class SweepCallback(Callback):
    """Hydra callback: one MLflow parent run per multirun (and a writable output dir)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _require_writable("hydra.run.dir", Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns an exception raised here into a warning and runs every job without a
        # parent run, as if each were a single run: a bug here stops the sweep instead.
        try:
            self._start(config)
        except Exception:
            # Ctrl-C during an import can leave a half-built module whose next use fails:
            # once a stop was asked, that error ends the sweep as the interrupt it follows.
            raise_if_stopping()
            traceback.print_exc()
            print("error: the sweep could not start (a bug: the traceback above); no job ran",
                  file=sys.stderr)
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        """Check the sweep, create its parent run and hand every job what it needs."""
        global _open
        raise_if_stopping()  # an interrupt Python dropped while Hydra composed the sweep
        _require_writable("hydra.sweep.dir", Path(str(config.hydra.sweep.dir)))
        tracking = config.get("tracking", {})
        offline = tracking.get("mode", "online") == "offline"
        search_space = _search_space(config)
        try:  # Hydra would only warn about an error here, and run the jobs parentless
            sweep = validate_sweep(config.get("sweep"))
            past = _plan_jobs(config, sweep, offline)
            sweep = validate_sweep(config.get("sweep"))  # a resumed sweep's metric
            biased = check_selection(config, sweep, search_space)
        except PipelineError as error:
            print(error, file=sys.stderr)
            raise SystemExit(1) from None
        refusal = check_jobs(config, search_space)
        if refusal is not None:  # every job would fail before its run: no parent run either
            print(refusal, file=sys.stderr)
            raise SystemExit(1)
        if biased:
            log.warning("%s", biased)
        # Parallel workers import MLflow while this process creates the parent run.
        _start_joblib_workers(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = list(config.hydra.overrides.task)
        name = "sweep " + (" ".join(overrides) if overrides else sweep_dir.name)
        # MLflow (~1 s) only once a sweep starts: this module is imported by every
        # `python -m pipeline`, before its config is checked.
        from pipeline.tracking.parent import SweepParent

        try:
            # Ctrl-C waits until the parent run exists, and then closes it KILLED (cut in
            # the middle, it would leave a parent RUNNING that nothing closes).
            with signals_held():
                _open = SweepParent(
                    uri=tracking.get("uri"), ui_url=tracking.get("ui_url"),
                    experiment=tracking.get("experiment", "mlp-pipeline"), name=name[:250],
                    tags={"sweep_dir": str(sweep_dir), "overrides": " ".join(overrides)[:5000],
                          names.SWEEP_OVERRIDES_TAG: json.dumps(overrides)[:8000],
                          names.SWEEPER_TAG: _sweeper(config)},
                    metric=sweep.metric, direction=sweep.direction, sweep_dir=sweep_dir,
                    offline=offline, resume=past, tie_metric=sweep.tie_metric,
                    search_space=search_space,
                )
        except PipelineError as error:
            print(error, file=sys.stderr)
            raise SystemExit(1) from None
        started = str(int(time.time() * 1000))
        # A lean sweep completes its best job's record at the end (what tracking.* asks).
        completes = {"model": bool(tracking.get("log_model", True)),
                     "plots": bool(tracking.get("plots", True))}
        _open_settings.update(sweep_dir=sweep_dir, max_failures=sweep.max_failures,
                              started=started, complete_best=completes
                              if sweep.child_record == "lean" else None,
                              verbose=sweep.verbose)
        hide_launch_lines(not sweep.verbose)  # each job's own line says what it ran
        env = job_environment(parent_run_id=_open.run_id, parent_journal_id=_open.journal_id,
                              threads=_threads_per_job(config), launcher_pid=os.getpid(),
                              started=started, identity=_open.identity,
                              swept=_swept_keys(config, search_space))
        if not tracking.get("uri") and _open.store is not None:
            # The store MLFLOW_TRACKING_URI named: a Ray cluster's jobs do not inherit it.
            env["MLFLOW_TRACKING_URI"] = _open.store.uri
        hydra_overrides = config.hydra.overrides.hydra
        with open_dict(config):
            for key, value in env.items():
                hydra_overrides.append(f"++hydra.job.env_set.{key}={_override_value(value)}")
                OmegaConf.update(config, f"hydra.job.env_set.{key}", value, force_add=True)
        if past is not None:
            print(f"Resuming sweep {_open.run_id}: finished configurations are kept, the "
                  "others run", flush=True)
        elif _open.run_id:
            print(f"Sweep parent MLflow run: {_open.run_id}", flush=True)
        else:
            print(f"Offline sweep: recorded in {sweep_dir}; send it with: make sync "
                  f"DIR={sweep_dir}", flush=True)
        _stop_on_signals()
        check_jobs_cheaply()
        compose_by_shape()
        if not _waits_for_workers(config):
            wait_for_workers()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """In the job's process: note when the job started; without ``sweep.verbose``, its
        step-by-step lines stay in its log file (warnings still show)."""
        global _job_watch
        job = job_context()  # set for this job's callbacks and task (hydra.job.env_set)
        if job is None:  # a single run
            return
        quiet = OmegaConf.select(config, "sweep.verbose", default=False) is not True
        if quiet:
            quiet_console()
        _job_watch = _JobWatch(time.monotonic(), time.time(), job.swept, job.started, quiet)

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        """In the job's process: the job's one line (see :func:`_job_outcome`)."""
        global _job_watch
        watch, _job_watch = _job_watch, None
        if watch is None:
            return
        warned: list[str] = []
        if watch.quiet:
            quiet_console(False)
            warned = warned_kinds()
        swept = set(watch.swept)
        values = [str(o) for o in config.hydra.overrides.task if _key(str(o)) in swept]
        metric = str(OmegaConf.select(config, "sweep.metric", default="") or "")
        status, value = _job_outcome(job_return, Path(str(config.hydra.runtime.output_dir)),
                                     watch)
        print(job_line(int(config.hydra.job.num), values, metric, value, status,
                       time.monotonic() - watch.monotonic, warned), flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        check_jobs_cheaply(False)
        compose_by_shape(False)
        failed = finish_open_sweep()
        if failed:
            raise SystemExit(1)


@dataclass(frozen=True)
class _JobWatch:
    """A job of this process's, from its start: for its line at its end."""

    monotonic: float
    wall: float  # seconds since the epoch
    swept: tuple[str, ...]
    sweep_started: str  # as handed down (ms since the epoch)
    quiet: bool


_job_watch: _JobWatch | None = None


def _job_outcome(job_return: Any, output_dir: Path, watch: _JobWatch
                 ) -> tuple[str, float | None]:
    """A job's status and its ``sweep.metric`` value, from what the job returned (the
    metric; None when its run failed, its error printed) and the marks
    :func:`pipeline.sweeps.job.job_gate` leaves in its folder for a job it skipped."""
    from hydra.core.utils import JobStatus

    if job_return is None or job_return.status != JobStatus.COMPLETED:
        return "FAILED", None
    value = job_return.return_value
    value = float(value) if isinstance(value, int | float) else None
    with contextlib.suppress(OSError, ValueError):
        first, message = (output_dir / NOT_STARTED).read_text().split("\n")[:2]
        if first == watch.sweep_started:
            return message, None
    with contextlib.suppress(OSError):
        kept = output_dir / KEPT
        if kept.stat().st_mtime >= watch.wall - 1:  # this job's, not a reused folder's
            run_id = kept.read_text().strip()
            return f"kept: this configuration finished before as run {run_id}", value
    return ("FINISHED", value) if value is not None else ("FAILED", None)


def _swept_keys(config: DictConfig, search_space: dict[str, str]) -> list[str]:
    """The keys the sweep varies: its sweep overrides (``a=1,2``, ``range(...)``, ...) and
    Optuna's search space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = [str(o) for o in config.hydra.overrides.task]
    keys = [o.key_or_group for o in OverridesParser.create().parse_overrides(task)
            if o.is_sweep_override()]
    return [*keys, *(key for key in search_space if key not in keys)]


def _override_value(value: str) -> str:
    """``value`` as the value of a Hydra override: quoted unless plain (a list of keys has
    commas, which the override grammar reads as a sweep)."""
    if re.fullmatch(r"[\w./-]*", value):
        return value
    return "'" + value.replace("'", "\\'") + "'"


def _sweeper(config: DictConfig) -> str:
    return str(config.hydra.get("sweeper", {}).get("_target_", ""))


def _search_space(config: DictConfig) -> dict[str, str]:
    """The sweeper's ``hydra.sweeper.params`` (Optuna's search space; the basic sweeper
    takes them as overrides too), key -> expression."""
    params = config.hydra.get("sweeper", {}).get("params")
    if not isinstance(params, DictConfig):
        return {}
    return {str(k): str(v) for k, v in params.items()}


def _defining(overrides: list[str]) -> list[str]:
    """The overrides that decide what the jobs compute, in a canonical order (the
    bookkeeping settings that a config digest leaves out are left out here too)."""
    return sorted(o for o in overrides if not is_bookkeeping(_key(o)))


def _plan_jobs(config: DictConfig, sweep: SweepConfig, offline: bool) -> PastSweep | None:
    """Apply ``sweep.replicates`` and ``sweep.resume`` to the overrides the sweeper is about
    to expand; return the past sweep to resume (None for a new sweep).

    Raises :class:`PipelineError` (one line) for settings that cannot work together.
    """
    task = config.hydra.overrides.task
    overrides = [str(o) for o in task]
    if sweep.replicates is not None:
        overrides = _with_replicates(config, overrides, sweep.replicates)
    past = None
    if sweep.resume is not None:
        if offline:
            raise PipelineError("sweep.resume: needs the store (tracking.mode=online); send an "
                                "offline sweep first with make sync DIR=<sweep folder>")
        from pipeline.tracking.parent import find_sweep  # MLflow: only to resume a sweep

        tracking = config.get("tracking", {})
        past = find_sweep(tracking.get("uri"), str(tracking.get("experiment", "mlp-pipeline")),
                          str(sweep.resume))
        overrides = _resumed_overrides(config, overrides, past)
        _continue_optuna_study(config, past)
    with open_dict(config):
        task.clear()
        task.extend(overrides)
    return past


def _with_replicates(config: DictConfig, overrides: list[str], replicates: int) -> list[str]:
    """``overrides`` with the root seed swept over ``seed .. seed+replicates-1``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "BasicSweeper" not in _sweeper(config):
        raise PipelineError("sweep.replicates: works with Hydra's basic sweeper (-m with lists "
                            "of values); with Optuna, sweep seed in hydra.sweeper.params")
    parsed = OverridesParser.create().parse_overrides(overrides)
    seeds = [o for o in parsed if o.key_or_group == "seed"]
    if any(o.is_sweep_override() for o in seeds):
        raise PipelineError("sweep.replicates: the seeds are already swept (seed=...); drop "
                            "one of the two")
    first = int(config.get("seed", 0))
    kept = [text for text, o in zip(overrides, parsed, strict=True) if o.key_or_group != "seed"]
    return [*kept, f"seed=range({first},{first + replicates})"]


def _resumed_overrides(config: DictConfig, overrides: list[str], past: PastSweep) -> list[str]:
    """The overrides a resumed sweep runs: the user's, if they define the same jobs as the
    past sweep's, or the past sweep's when the user gave none."""
    command = "python -m pipeline -m " + " ".join([*(past.overrides or ["..."]),
                                                   f"sweep.resume={past.run_id}"])
    if past.sweeper and past.sweeper != _sweeper(config):
        raise PipelineError(f"sweep.resume: sweep {past.run_id} ran with another sweeper "
                            f"({past.sweeper.rsplit('.', 1)[-1]}); resume it with its own "
                            f"overrides: {command}")
    mine = _defining(overrides)
    if not mine:
        if past.overrides is None:
            raise PipelineError(f"sweep.resume: sweep {past.run_id} did not record its "
                                "overrides; pass them again with sweep.resume")
        # The past sweep's overrides, but for keys given now (tracking.uri=..., say).
        given = {_key(o) for o in overrides}
        adopted = [o for o in past.overrides if _key(o) not in given and _key(o) != "sweep.resume"]
        for override in adopted:  # what the parent itself reports on
            if _key(override) in ("sweep.metric", "sweep.direction"):
                with open_dict(config):
                    OmegaConf.update(config, _key(override), override.split("=", 1)[1])
        return [*overrides, *adopted]
    if past.overrides is not None and mine != _defining(past.overrides):
        raise PipelineError(f"sweep.resume: these overrides define other jobs than sweep "
                            f"{past.run_id}'s; give none, or the same: {command}")
    return overrides


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _continue_optuna_study(config: DictConfig, past: PastSweep) -> None:
    """Resume an Optuna sweep.

    With a storage, the study continues: the trials the dead sweep left RUNNING are marked
    FAIL, only the trials still missing run, and the sampler's seed moves on by the number
    of stored trials (the same seed would propose the finished trials again). Without a
    storage, the seeded sampler proposes the same trials again and the finished ones are
    answered from their runs (see :func:`pipeline.sweeps.job.job_gate`).
    """
    sweeper = config.hydra.get("sweeper", {})
    if "optuna" not in _sweeper(config).lower():
        return
    sampler = sweeper.get("sampler", {})
    if not sweeper.get("storage"):
        if sampler.get("seed") is None:
            log.warning("Optuna without a storage or a sampler seed draws new trials: finished "
                        "runs are kept, the new trials run beside them")
        return
    import optuna

    try:
        study = optuna.load_study(study_name=str(sweeper.get("study_name")),
                                  storage=str(sweeper.get("storage")))
    except KeyError:  # no such study in that storage: the sweeper starts it afresh
        return
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    left = max(0, int(sweeper.get("n_trials", 0)) - done)
    with open_dict(config):
        sweeper.n_trials = left
        if sampler.get("seed") is not None:
            sampler.seed = int(sampler.seed) + len(study.trials)
    log.info("Optuna study %s continues from its storage: %d trial(s) done, %d to go",
             study.study_name, done, left)


def _threads_per_job(config: DictConfig) -> int:
    """BLAS threads per job: the cores shared among the launcher's parallel jobs."""
    launcher = config.hydra.get("launcher", {})
    n_jobs = launcher.get("n_jobs", 1) if isinstance(launcher, DictConfig) else 1
    cores = os.cpu_count() or 1
    n_jobs = cores if n_jobs in (None, -1) else max(1, int(n_jobs))
    return max(1, cores // n_jobs)


def joblib_settings(config: DictConfig) -> dict[str, Any] | None:
    """The arguments the joblib launcher will give ``joblib.Parallel`` (None for others)."""
    launcher = config.hydra.get("launcher")
    if not isinstance(launcher, DictConfig) or "JoblibLauncher" not in str(
            launcher.get("_target_", "")):
        return None
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg

    settings = OmegaConf.to_container(launcher, resolve=True)
    assert isinstance(settings, dict)
    settings = {str(k): v for k, v in settings.items() if k != "_target_"}
    settings["backend"] = "loky"  # as the launcher does
    process_joblib_cfg(settings)
    return settings


_warming: threading.Thread | None = None  # starting the joblib workers (see below)
_importing: threading.Thread | None = None  # importing what the summary needs


def _start_joblib_workers(config: DictConfig) -> None:
    """With the joblib launcher, start its worker processes now and have each import
    what a job needs; return the thread doing it (None for other launchers).

    The launcher's own ``Parallel`` call later finds joblib's reusable executor with
    the same settings and reuses these warm workers instead of starting cold ones.
    """
    global _warming
    settings = joblib_settings(config)
    if settings is None:
        return None
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(settings.get("n_jobs", -1))
    sweep = config.get("sweep") or {}
    tracking = config.get("tracking") or {}
    # Only full per-job records draw plots (a lean job's are drawn at the sweep's end).
    plots = sweep.get("child_record", "lean") == "full" and bool(tracking.get("plots", True))
    _start_resource_trackers()  # here: the environment is changed while no thread runs

    def warm() -> None:
        try:
            _block_ctrl_c_for_workers()
            Parallel(**settings)(delayed(_import_job_modules)(os.getpid(), plots)
                                 for _ in range(workers))
        except BaseException as error:  # only a head start: the sweep works without it.
            # A worker's KeyboardInterrupt is not this thread's to raise: the main thread
            # gets its own.
            log.debug("warming up the joblib workers failed: %r", error)

    _warming = threading.Thread(target=warm, name="warm-joblib-workers", daemon=True)
    _warming.start()


# The resource trackers unlink what a worker stopped mid-start leaves behind (Ctrl-C while
# the workers import); their "leaked semlock objects" warning as they do is that clean-up
# at work, not a problem of the user's: it would follow the interrupt's one line.
_TRACKER_WARNINGS = ",".join(f"ignore::UserWarning:{module}" for module in (
    "joblib.externals.loky.backend.resource_tracker", "multiprocessing.resource_tracker"))


def _start_resource_trackers() -> None:
    """Start joblib's and Python's resource trackers (before the workers, as they would
    be), each with its clean-up warnings off; nothing else's warnings change."""
    from multiprocessing import resource_tracker

    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    saved = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved, _TRACKER_WARNINGS]))
    try:
        loky_tracker.ensure_running()
        resource_tracker.ensure_running()
    except Exception as error:  # joblib starts them itself if it can: a head start only
        log.debug("starting the resource trackers failed: %r", error)
    finally:
        if saved is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved


def _block_ctrl_c_for_workers() -> None:
    """Block SIGINT in this (non-main) thread, so that the workers it starts never see it.

    A worker is forked from the thread that starts it and keeps that thread's signal mask
    through exec: the terminal's Ctrl-C, sent to the whole process group, then never reaches
    it, not even while Python is still starting in it (a traceback otherwise). The launching
    process stops its workers itself (SIGTERM: :func:`_stop_sweep`, :func:`stop_warming`).
    The resource trackers, which unblock SIGINT in the thread that starts them, are running
    already (:func:`_start_resource_trackers`).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def stop_warming(grace_s: float = 10.0) -> None:
    """On the way out of a sweep stopped before it handed out jobs (Ctrl-C, a bad setting):
    end the joblib warm-up, its workers included, before the interpreter exits. Exiting
    while joblib still cleans up after it would race that clean-up (a warning about its
    temporary folder, a traceback from its resource tracker)."""
    global _warming
    warming, _warming = _warming, None
    if warming is None:
        return
    deadline = time.monotonic() + grace_s
    stopped: set[int] = set()
    while warming.is_alive() and time.monotonic() < deadline:
        executor = _joblib_executor()  # created by the warm-up thread, perhaps only now
        for pid in set(getattr(executor, "_processes", {}) or {}) - stopped:
            _signal(pid, signal.SIGTERM)  # joblib sees its pool broken and cleans up
            stopped.add(pid)
        warming.join(timeout=0.05)


def sweep_is_open() -> bool:
    """Whether this process started a sweep whose parent run is not closed yet."""
    return _open is not None


def open_sweep() -> SweepParent | None:
    """The parent of the sweep this process runs (None outside a sweep)."""
    return _open


def wait_for_workers() -> None:
    """Let the joblib workers started by :func:`_start_joblib_workers` finish starting
    (a head start only: never hold the sweep for long), then import what the summary
    needs while the jobs run, instead of beside the workers' own imports."""
    global _warming, _importing
    if _warming is not None:
        _warming.join(timeout=120)
        _warming = None
    if _importing is None:
        _importing = threading.Thread(target=_import_summary, name="import-summary",
                                      daemon=True)
        _importing.start()


def _waits_for_workers(config: DictConfig) -> bool:
    """Whether the sweep's launcher calls :func:`wait_for_workers` itself right before it
    hands out jobs (this project's joblib launcher), so that the sweeper's checks run
    while the workers start."""
    launcher = config.hydra.get("launcher")
    return isinstance(launcher, DictConfig) and "pipeline_joblib_launcher" in str(
        launcher.get("_target_", ""))


def _import_job_modules(launcher: int, plots: bool = True) -> int:
    """Import what every job runs (MLflow and its SQL store, the runner, matplotlib if the
    jobs draw ``plots``) and watch the ``launcher`` process (see
    :func:`pipeline.sweeps.job.stop_with_launcher`); return this worker's pid."""
    stop_with_launcher(launcher)
    # Imported here, in the worker, for the jobs to come (matplotlib, MLflow): that is
    # the point of warming it up.
    if plots:
        import pipeline.run.plots  # forked plot processes inherit matplotlib
    import pipeline.run.runner
    import pipeline.tracking.shipper  # noqa: F401
    from pipeline.tracking.store import import_sql_store

    import_sql_store()
    compose_by_shape()

    # Everything imported so far lives as long as the worker: keep it out of every later
    # collection. loky collects garbage in full about once a second in its workers, and a
    # full pass over MLflow, SQLAlchemy and pandas takes a good share of a small job.
    gc.collect()
    gc.freeze()
    # The launcher waits for its workers to exit: spare them the interpreter's last
    # collection over what the jobs left (see pipeline.__main__.cli).
    atexit.register(gc.freeze)
    return os.getpid()


def _import_summary() -> None:
    """Import, in a thread while the jobs run, what the sweep's end needs (the summary, its
    statistics and plots): that is the point of it."""
    try:
        import scipy.stats  # noqa: F401  (the seed groups' intervals)

        import pipeline.run.plots
        import pipeline.tracking.model
        import pipeline.tracking.summary  # noqa: F401
    except Exception:  # the summary will import (and report) it again
        pass


_open_settings: dict[str, Any] = {}


def finish_open_sweep(*, aborted: bool = False, interrupted: bool = False,
                      error: str | None = None) -> int:
    """End the sweep started by this process, if any, and print its leaderboard and links;
    return how many jobs failed (-1 when the summary could not be written). ``error``: the
    line the sweep stopped on, if it stopped on one (it names the failure)."""
    global _open
    parent, _open = _open, None
    if parent is None:
        return 0
    hide_launch_lines(False)
    not_started = _count_not_started(_open_settings.get("sweep_dir"),
                                     _open_settings.get("started", ""))
    parts = _open_settings.get("complete_best")
    quiet = not _open_settings.get("verbose", False)
    best = _BestCompletion(parent.store.uri, parts, quiet) if (
        parent.store is not None and parts and any(parts.values()) and not interrupted) else None
    summary = parent.finish(aborted=aborted, interrupted=interrupted, not_started=not_started,
                            max_failures=_open_settings.get("max_failures"),
                            on_best=best.start if best is not None else None,
                            error=error if aborted else None)
    if summary is None:
        if parent.run_id:
            log.info("sweep parent run %s %s", parent.run_id, parent.status)
        return -1 if parent.run_id else 0
    model = best.result() if best is not None else None
    _print_leaderboard(parent, summary, not_started, model, error if aborted else None)
    return summary.counts.failed + not_started


class _BestCompletion:
    """Gives a lean sweep's best job what a single run records: its model and its plots
    (``make log-model`` / ``make plots`` do it for any other job).

    :meth:`start` runs as soon as the summary knows the best job: with the joblib
    launcher, one of its warm workers completes the job while this process writes the rest
    of the summary; otherwise :meth:`result` completes it here. A failure is a warning: the
    sweep's results stand without them.
    """

    def __init__(self, uri: str, parts: dict[str, bool], quiet: bool = False) -> None:
        self.uri, self.model, self.plots = uri, parts["model"], parts["plots"]
        self.quiet = quiet  # its data steps' lines: not after the sweep's own
        self.run_id: str | None = None
        self.future: Any = None

    def start(self, run_id: str) -> None:
        self.run_id = run_id
        executor = _joblib_executor()
        if executor is None or not getattr(executor, "_processes", None):
            return
        try:
            self.future = executor.submit(_complete_best, run_id, self.uri, self.model,
                                          self.plots, self.quiet)
        except Exception as error:  # a pool shut down or broken: complete it here
            log.debug("completing the best run in a worker failed to start: %s", error)

    def result(self) -> str | None:
        """The best run's model URI once it is complete (None without one)."""
        if self.run_id is None:
            return None
        try:
            return (self.future.result(timeout=COMPLETE_BEST_TIMEOUT_S)
                    if self.future is not None else
                    _complete_best(self.run_id, self.uri, self.model, self.plots,
                                   self.quiet))
        except Exception as error:  # the store, a CSV gone since: the sweep's results stand
            log.warning("the best run %s is kept without its model and plots: %s; "
                        "make log-model RUN_ID=%s and make plots RUN_ID=%s add them",
                        self.run_id, error, self.run_id, self.run_id)
            return None


def _complete_best(run_id: str, uri: str, model: bool, plots: bool,
                   quiet: bool = False) -> str | None:
    """Complete the best run's record where this runs (a warm joblib worker, else the
    launching process); return its model URI. The run layer, its data steps and MLflow are
    imported here, in that process: the launching process of a joblib sweep never needs
    them, and a plain string comes back."""
    from pipeline.run.backfill import complete_run

    with console_warnings_only(quiet):
        return complete_run(run_id, uri=uri, model=model, plots=plots).model_uri


def _count_not_started(sweep_dir: Path | None, started: str) -> int:
    """Jobs of this sweep that :func:`pipeline.sweeps.job.job_gate` did not start (a reused
    sweep folder may hold another sweep's marks)."""
    if sweep_dir is None:
        return 0
    count = 0
    for mark in sweep_dir.rglob(NOT_STARTED):
        with contextlib.suppress(OSError):
            count += mark.read_text().split("\n", 1)[0] == started
    return count


def _print_leaderboard(parent: SweepParent, summary: Any, not_started: int,
                       model: str | None = None, error: str | None = None) -> None:
    """The sweep's outcome: counts (and the ``error`` it stopped on), the top
    configurations, and links to the parent, the best run (its ``model``, the commands that
    serve and promote it) and the comparison of its children."""
    counts = summary.counts
    line = (f"Sweep {parent.run_id} {parent.status}: {counts.children} run(s), "
            f"{counts.failed} failed, {counts.killed} killed")
    if counts.runs > counts.children:
        line += f", {counts.runs - counts.children} earlier attempt(s) superseded"
    if not_started:
        line += f", {not_started} not started (sweep.max_failures)"
    if error:
        line += f"; stopped on: {error}"
    print(line, flush=True)
    board = summary.leaderboard
    if not board.empty:
        print(f"Top {len(board)} by {summary.ranked_by}:")
        board = board.copy()
        board.index = range(1, len(board) + 1)
        print(board.to_string(), flush=True)
    for line in (summary.final_estimate, summary.comparison, summary.warnings):
        if line:
            print(line, flush=True)
    if parent.url:
        print(f"Parent:  {parent.url}")
    best = parent.url_of(summary.best_run_id)
    if best:
        print(f"Best:    {best}")
        if model and parent.store is not None:
            # `make serve` reads the project's store unless told another (STORE=).
            other = parent.store.uri != f"sqlite:///{DEFAULT_STORE}"
            store = f" STORE={parent.store.uri}" if other else ""
            print(f"  model: {model}  serve it: make serve RUN_ID={summary.best_run_id}{store}")
            print(f"  promote it: make promote RUN_ID={summary.best_run_id}{store}")
    link = parent.compare_url(summary.ranked_run_ids)
    if link:
        shown = min(len(summary.ranked_run_ids), 50)
        print(f"Compare: {link}" + (f"  (best {shown})" if shown < len(summary.ranked_run_ids)
                                    else ""), flush=True)


# -- stopping ---------------------------------------------------------------------------
def _stop_on_signals() -> None:
    """From now on, Ctrl-C and SIGTERM stop the whole sweep (see :func:`_stop_sweep`)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _stop_sweep)
    signal.signal(signal.SIGTERM, _stop_sweep)


_stopping: KeyboardInterrupt | None = None  # the interrupt that stops this sweep


def stop_signal() -> KeyboardInterrupt | None:
    """The interrupt that stopped this process's sweep, if any."""
    return _stopping


def remember_stop(stop: KeyboardInterrupt) -> None:
    """Keep the first Ctrl-C or SIGTERM this process got, for :func:`raise_if_stopping`
    (``python -m pipeline`` calls this from its handler, before any sweep starts)."""
    global _stopping
    if _stopping is None:
        _stopping = stop


def quiet_dropped_interrupts() -> None:
    """Once Ctrl-C or SIGTERM came, an interrupt that Python drops (raised by a signal
    handler inside a ``__del__`` or a garbage-collection callback, where Python prints
    "Exception ignored in ..." and a traceback) is not printed: the process raises it again
    (:func:`raise_if_stopping`, and its exit code says so), so the user sees one line."""
    default_hook = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if _stopping is not None and isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        default_hook(unraisable)

    sys.unraisablehook = hook


def raise_if_stopping() -> None:
    """Raise the sweep's interrupt again if Ctrl-C or SIGTERM came: Python drops an
    exception raised by a signal handler that interrupted a garbage-collection callback,
    and the next job of the basic launcher must not start then."""
    if _stopping is not None:
        raise _stopping


def _stop_sweep(signum: int, frame: Any) -> None:
    """Stop every job, then raise in the launching process (exit 130 / 143).

    Each joblib worker gets SIGTERM: its run ends KILLED with its journal complete and the
    worker exits (see ``pipeline.__main__``), so it takes no queued job. Meanwhile the
    executor's shutdown lock is held: the executor would otherwise see the first worker
    that exits as a broken pool and kill the others mid-way. Workers still there after
    ``STOP_GRACE_S`` are killed. A second signal skips the wait.
    """
    global _stopping
    interrupt: KeyboardInterrupt = (Terminated(f"terminated by signal {signum}")
                                    if signum == signal.SIGTERM else KeyboardInterrupt())
    if _stopping is not None:
        raise interrupt
    _stopping = interrupt
    executor = _joblib_executor()
    workers = list(getattr(executor, "_processes", {}) or {})
    if not workers:
        raise interrupt  # jobs run in this process (basic launcher): the interrupt stops them
    print(f"\nstopping the sweep: {len(workers)} worker process(es) end their runs",
          file=sys.stderr, flush=True)
    lock = getattr(executor, "_shutdown_lock", None)
    # The main thread may hold it already (inside the executor); never deadlock on it.
    locked = lock.acquire(timeout=1) if lock is not None else False
    try:
        for pid in workers:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.05)
        for pid in workers:
            if _alive(pid):
                _signal(pid, signal.SIGKILL)
    finally:
        if locked:
            lock.release()
    raise interrupt


def _joblib_executor() -> Any:
    """joblib's reusable loky executor if this process started one (never a new one)."""
    module = sys.modules.get("joblib.externals.loky.reusable_executor")
    return getattr(module, "_executor", None) if module is not None else None


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
