"""A sweep's job, in its own process: what the launching process hands it, whether it runs,
and its watch on the launcher.

The launching process (:class:`pipeline.sweeps.callback.SweepCallback`) hands every job the
sweep's parent run, the parent's journal, the job's share of the cores, its own pid and when
the sweep began, as environment variables set through ``hydra.job.env_set``: the launchers
re-compose each job from the Hydra overrides, so that reaches jobs on every launcher, a
remote Ray cluster included. :func:`job_context` reads them, once, for ``python -m
pipeline``; the run is handed what it needs as a value (:class:`SweepJob`) and reads
nothing of the sweep from the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.digest import config_digest
from pipeline.config.schema import Config
from pipeline.files import write_text_atomic
from pipeline.run.context import SweepJob

log = logging.getLogger("pipeline.sweep")

# What the launching process hands each job (see the module docstring).
PARENT_ENV = "PIPELINE_SWEEP_PARENT_RUN_ID"  # empty for an offline sweep
JOURNAL_ENV = "PIPELINE_SWEEP_PARENT_JOURNAL_ID"
THREADS_ENV = "PIPELINE_DEFAULT_THREADS"
LAUNCHER_PID_ENV = "PIPELINE_SWEEP_LAUNCHER_PID"
STARTED_ENV = "PIPELINE_SWEEP_STARTED_MS"  # when this sweep (or this resume of it) began
# The swept keys that tell jobs apart besides their config digest (comma-separated).
IDENTITY_ENV = "PIPELINE_SWEEP_IDENTITY"
SWEPT_ENV = "PIPELINE_SWEEP_KEYS"  # the keys the sweep varies, shown in each job's line
NOT_STARTED = "not_started.txt"  # in a job's folder: sweep.max_failures stopped it
KEPT = "kept.txt"  # in a job's folder: the run a resumed sweep kept for it (its id)


@dataclass(frozen=True)
class JobContext:
    """What the sweep's launching process handed this job."""

    run: SweepJob  # what the run is told
    launcher_pid: int | None
    started: str  # when the sweep began (ms since the epoch), as handed down
    identity: tuple[str, ...] = ()  # swept keys that the config digest leaves out
    swept: tuple[str, ...] = ()  # every key the sweep varies

    @property
    def parent_run_id(self) -> str | None:
        return self.run.parent_run_id


def job_environment(*, parent_run_id: str | None, parent_journal_id: str, threads: int,
                    launcher_pid: int, started: str, identity: Sequence[str] = (),
                    swept: Sequence[str] = ()) -> dict[str, str]:
    """What the launching process hands every job, as environment variables (read back by
    :func:`job_context`)."""
    return {PARENT_ENV: parent_run_id or "", JOURNAL_ENV: parent_journal_id,
            THREADS_ENV: str(threads), LAUNCHER_PID_ENV: str(launcher_pid),
            STARTED_ENV: started, IDENTITY_ENV: ",".join(identity),
            SWEPT_ENV: ",".join(swept)}


def job_context(environ: Mapping[str, str] = os.environ) -> JobContext | None:
    """The sweep this process runs a job of, read from what the launching process handed
    down (None: not a sweep's job)."""
    if PARENT_ENV not in environ:
        return None
    launcher = environ.get(LAUNCHER_PID_ENV)
    threads = environ.get(THREADS_ENV)
    return JobContext(
        run=SweepJob(parent_run_id=environ.get(PARENT_ENV) or None,
                     parent_journal_id=environ.get(JOURNAL_ENV) or None,
                     threads=int(threads) if threads else None,
                     # not the sweep's launching process: a joblib or Ray worker
                     worker=bool(launcher) and launcher != str(os.getpid())),
        launcher_pid=int(launcher) if launcher else None,
        started=environ.get(STARTED_ENV) or "0",
        identity=tuple(k for k in (environ.get(IDENTITY_ENV) or "").split(",") if k),
        swept=tuple(k for k in (environ.get(SWEPT_ENV) or "").split(",") if k),
    )


@dataclass(frozen=True)
class Skip:
    """A sweep job that does not run: why, and the value to hand the sweeper."""

    message: str
    value: float | None = None


def job_gate(config: Config, output_dir: Path, job: JobContext | None) -> Skip | None:
    """In a sweep's ``job``: whether to skip it, asked of the store before any work (None
    for a single run: it always runs).

    ``sweep.max_failures``: once that many jobs of this sweep failed, no job starts (the
    job leaves :data:`NOT_STARTED` in its folder for the count). ``sweep.resume``: a
    configuration that already finished under the parent is kept, and its metric answers
    the sweeper (Optuna replays its study from it).
    """
    parent = job.parent_run_id if job is not None else None
    sweep = config.sweep
    if job is None or not parent or (sweep.max_failures is None and sweep.resume is None):
        return None
    # The store brings in MLflow (~1 s); this module is imported before the config is
    # checked, which must stay fast.
    from pipeline.tracking.parent import failed_children, finished_child

    uri = config.tracking.uri
    mark = output_dir / NOT_STARTED
    mark.unlink(missing_ok=True)  # a reused sweep folder's
    if sweep.max_failures is not None:
        failed = failed_children(uri, parent, int(job.started))
        if failed >= sweep.max_failures:
            message = (f"not started: {failed} job(s) of this sweep failed "
                       f"(sweep.max_failures={sweep.max_failures})")
            output_dir.mkdir(parents=True, exist_ok=True)
            mark.write_text(f"{job.started}\n{message}\n")  # the sweep counts its own marks
            return Skip(message)
    if sweep.resume is not None:
        found = finished_child(uri, parent, config_digest(config),
                               params=_identity(config, job.identity))
        if found is not None:
            run_id, metrics = found
            output_dir.mkdir(parents=True, exist_ok=True)
            # What the sweeper's best trial is matched by (pipeline.sweeps.tuning).
            write_text_atomic(output_dir / KEPT, f"{run_id}\n")
            return Skip(f"kept: this configuration finished before as run {run_id}",
                        metrics.get(sweep.metric))
    return None


def _identity(config: Config, keys: Sequence[str]) -> dict[str, str]:
    """This job's values of the swept ``keys`` the config digest leaves out, as its run
    records them (params are text)."""
    values = {}
    for key in keys:
        node: object = config
        for part in key.split("."):
            node = getattr(node, part, _MISSING)
        if node is not _MISSING:
            values[key] = str(node)
    return values


_MISSING = object()
_watching = False


def stop_with_launcher(launcher: int | None) -> None:
    """In a sweep's worker process: end this worker's job KILLED (SIGTERM to itself) once
    the launching process (pid ``launcher``) is gone, say SIGKILLed, instead of finishing it
    as an orphan that a resumed sweep would race.

    Only a worker the launcher started itself (joblib's) is watched: its parent process
    changes when the launcher dies.
    """
    global _watching
    if launcher is None or launcher == os.getpid():
        return
    if _watching or os.getppid() != launcher:
        return
    _watching = True

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        log.warning("the sweep's launching process is gone: stopping this job")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="watch-launcher", daemon=True).start()
