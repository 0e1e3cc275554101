"""A Hydra multirun as one MLflow parent run with one child run per job.

:class:`SweepCallback` (registered in ``conf/config.yaml``) runs in the launching
process: before any job starts it creates the store, the experiment and the parent
run (a new sqlite file migrated by several jobs at once breaks), and hands the
parent's id to every job through ``hydra.job.env_set`` — the launchers re-compose
each job from the Hydra overrides, so the id reaches jobs on every launcher, a
remote Ray cluster included. A plain environment variable would not.

When the sweep ends — or fails: Hydra skips ``on_multirun_end`` when a job raised,
so ``python -m pipeline`` calls :func:`finish_open_sweep` on its way out — the
parent gets a summary table, the best child, comparison plots and a status.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("pipeline.sweep")

PARENT_ENV = "PIPELINE_SWEEP_PARENT_RUN_ID"
THREADS_ENV = "PIPELINE_DEFAULT_THREADS"

_open: SweepParent | None = None


class SweepParent:
    """The parent run of one sweep, and the summary written onto it at the end."""

    def __init__(self, uri: str | None, experiment: str, name: str, tags: dict[str, str],
                 metric: str, direction: str, sweep_dir: Path) -> None:
        from pipeline import tracking

        self.client = tracking.connect(uri)
        self.experiment_id = tracking.experiment_id(self.client, experiment)
        run = tracking.retrying(lambda: self.client.create_run(
            self.experiment_id, run_name=name, tags={**tags, "sweep": "parent"}))
        self.run_id = run.info.run_id
        self.metric, self.direction, self.sweep_dir = metric, direction, sweep_dir

    def finish(self, aborted: bool = False) -> int:
        """Summarise the children onto the parent and end it; return the failed count."""
        from pipeline.sweep_summary import summarise

        try:
            failed = summarise(self.client, self.experiment_id, self.run_id, self.metric,
                               self.direction, self.sweep_dir)
        except Exception as error:  # the summary must never leave the parent RUNNING
            log.warning("sweep summary failed: %s", error)
            self.client.set_tag(self.run_id, "error", f"summary failed: {error}")
            failed = -1
        status = "FAILED" if failed or aborted else "FINISHED"
        if failed > 0:
            self.client.set_tag(self.run_id, "error", f"{failed} job(s) failed")
        self.client.set_terminated(self.run_id, status=status)
        url = f"#/experiments/{self.experiment_id}/runs/{self.run_id}"
        log.info("sweep parent run %s %s (%s)", self.run_id, status, url)
        return failed


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
        _open = SweepParent(
            tracking.get("uri"), tracking.get("experiment", "mlp-pipeline"), name[:250],
            {"sweep_dir": str(sweep_dir), "overrides": " ".join(overrides)[:5000]},
            str(sweep.get("metric", "test_accuracy")), str(sweep.get("direction", "maximize")),
            sweep_dir,
        )
        env = {PARENT_ENV: _open.run_id, THREADS_ENV: str(_threads_per_job(config))}
        hydra_overrides = config.hydra.overrides.hydra
        with open_dict(config):
            for key, value in env.items():
                hydra_overrides.append(f"++hydra.job.env_set.{key}={value}")
                OmegaConf.update(config, f"hydra.job.env_set.{key}", value, force_add=True)
        print(f"Sweep parent MLflow run: {_open.run_id}", flush=True)
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
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401

    import pipeline.plots  # forked plot processes inherit matplotlib
    import pipeline.runner
    import pipeline.serving  # noqa: F401

    # The launcher waits for its workers to exit: spare them the interpreter's last
    # collection over every MLflow object (~0.5 s; see pipeline.__main__.cli).
    atexit.register(gc.freeze)
    return os.getpid()


def _import_summary() -> None:
    try:
        import pipeline.plots
        import pipeline.sweep_summary  # noqa: F401
    except Exception:  # the summary will import (and report) it again
        pass


def finish_open_sweep(aborted: bool = False) -> int:
    """End the sweep started by this process, if any; return how many jobs failed."""
    global _open
    parent, _open = _open, None
    return parent.finish(aborted=aborted) if parent is not None else 0
