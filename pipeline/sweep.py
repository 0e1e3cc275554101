"""A Hydra multirun as one MLflow parent run with one child run per job, stopped cleanly.

:class:`SweepCallback` (registered in ``conf/config.yaml``) runs in the launching
process: before any job starts it creates the store, the experiment and the parent
run (see :mod:`pipeline.tracking.sweep`), and hands the parent's id to every job
through ``hydra.job.env_set`` — the launchers re-compose each job from the Hydra
overrides, so the id reaches jobs on every launcher, a remote Ray cluster included.
A plain environment variable would not.

When the sweep ends — or fails: Hydra skips ``on_multirun_end`` when a job raised,
so ``python -m pipeline`` calls :func:`finish_open_sweep` on its way out — the
parent gets a summary table, the best child, comparison plots and a status.

Ctrl-C or SIGTERM on the launching process stops the sweep (:func:`_stop_sweep`): the
jobs' worker processes are told to stop (each ends its run KILLED, its journal
complete, and exits), no queued job starts, and the parent ends KILLED with the counts.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.errors import PipelineError, Terminated

if TYPE_CHECKING:
    from pipeline.tracking.sweep import SweepParent

log = logging.getLogger("pipeline.sweep")

PARENT_ENV = "PIPELINE_SWEEP_PARENT_RUN_ID"
JOURNAL_ENV = "PIPELINE_SWEEP_PARENT_JOURNAL_ID"
THREADS_ENV = "PIPELINE_DEFAULT_THREADS"
LAUNCHER_PID_ENV = "PIPELINE_SWEEP_LAUNCHER_PID"
STOP_GRACE_S = 10.0  # how long stopping jobs may take to end their runs

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
        global _open
        _require_writable("hydra.sweep.dir", Path(str(config.hydra.sweep.dir)))
        # Parallel workers import MLflow (~2 s) while this process creates the parent run.
        workers = _start_joblib_workers(config)
        tracking = config.get("tracking", {})
        sweep = config.get("sweep", {})
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = list(config.hydra.overrides.task)
        name = "sweep " + (" ".join(overrides) if overrides else sweep_dir.name)
        from pipeline.tracking.sweep import SweepParent

        try:
            _open = SweepParent(
                uri=tracking.get("uri"), experiment=tracking.get("experiment", "mlp-pipeline"),
                name=name[:250], tags={"sweep_dir": str(sweep_dir),
                                       "overrides": " ".join(overrides)[:5000]},
                metric=str(sweep.get("metric", "test_accuracy")),
                direction=str(sweep.get("direction", "maximize")), sweep_dir=sweep_dir,
                offline=tracking.get("mode", "online") == "offline",
            )
        except PipelineError as error:  # Hydra would only warn, and run the jobs parentless
            print(error, file=sys.stderr)
            raise SystemExit(1) from None
        env = {PARENT_ENV: _open.run_id or "", JOURNAL_ENV: _open.journal_id,
               THREADS_ENV: str(_threads_per_job(config)), LAUNCHER_PID_ENV: str(os.getpid())}
        hydra_overrides = config.hydra.overrides.hydra
        with open_dict(config):
            for key, value in env.items():
                hydra_overrides.append(f"++hydra.job.env_set.{key}={value}")
                OmegaConf.update(config, f"hydra.job.env_set.{key}", value, force_add=True)
        if _open.run_id:
            print(f"Sweep parent MLflow run: {_open.run_id}", flush=True)
        else:
            print(f"Offline sweep: recorded in {sweep_dir}; send it with: make sync "
                  f"DIR={sweep_dir}", flush=True)
        _stop_on_signals()
        if workers is not None:
            workers.join(timeout=120)  # a head start only: never hold the sweep for long
        # The summary's imports (matplotlib: ~0.5 s) happen while the jobs run.
        threading.Thread(target=_import_summary, name="import-summary", daemon=True).start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = finish_open_sweep()
        if failed:
            raise SystemExit(1)


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


def _start_joblib_workers(config: DictConfig) -> threading.Thread | None:
    """With the joblib launcher, start its worker processes now and have each import
    what a job needs; return the thread doing it (None for other launchers).

    The launcher's own ``Parallel`` call later finds joblib's reusable executor with
    the same settings and reuses these warm workers instead of starting cold ones.
    """
    settings = joblib_settings(config)
    if settings is None:
        return None
    from joblib import Parallel, delayed, effective_n_jobs

    workers = effective_n_jobs(settings.get("n_jobs", -1))

    def warm() -> None:
        try:
            Parallel(**settings)(delayed(_import_job_modules)() for _ in range(workers))
        except Exception as error:  # only a head start: the sweep works without it
            log.debug("warming up the joblib workers failed: %s", error)

    thread = threading.Thread(target=warm, name="warm-joblib-workers", daemon=True)
    thread.start()
    return thread


def _import_job_modules() -> int:
    """Import what every job runs (MLflow and its SQL store, the runner); return the pid."""
    import pipeline.plots  # forked plot processes inherit matplotlib
    import pipeline.runner
    import pipeline.tracking.shipper  # noqa: F401
    from pipeline.tracking.store import import_sql_store

    import_sql_store()

    # The launcher waits for its workers to exit: spare them the interpreter's last
    # collection over every MLflow object (~0.5 s; see pipeline.__main__.cli).
    atexit.register(gc.freeze)
    return os.getpid()


def _import_summary() -> None:
    try:
        import pipeline.plots
        import pipeline.tracking.summary  # noqa: F401
    except Exception:  # the summary will import (and report) it again
        pass


def finish_open_sweep(*, aborted: bool = False, interrupted: bool = False) -> int:
    """End the sweep started by this process, if any; return how many jobs failed (-1 when
    the summary could not be written)."""
    global _open
    parent, _open = _open, None
    if parent is None:
        return 0
    counts = parent.finish(aborted=aborted, interrupted=interrupted)
    if counts is None:
        return -1 if parent.run_id else 0
    return counts.failed


# -- stopping ---------------------------------------------------------------------------
def in_sweep_worker() -> bool:
    """True in a job's process that is not the sweep's launching process (joblib, Ray)."""
    launcher = os.environ.get(LAUNCHER_PID_ENV)
    return bool(launcher) and launcher != str(os.getpid())


def _stop_on_signals() -> None:
    """From now on, Ctrl-C and SIGTERM stop the whole sweep (see :func:`_stop_sweep`)."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, _stop_sweep)
    signal.signal(signal.SIGTERM, _stop_sweep)


_stopping = False


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
    if _stopping:
        raise interrupt
    _stopping = True
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
