"""``python -m pipeline``: the Hydra app. Validate the config, run, print a summary.

A config error is reported before MLflow is even imported; user errors print one
line and exit 1 (``HYDRA_FULL_ERROR=1`` shows the traceback); Ctrl-C and SIGTERM
end the MLflow run KILLED and exit 130 / 143, with one line saying where the run's
record is (or that no run had started yet).

In a sweep's job it reads, once, what the sweep's launching process handed the job
(:func:`pipeline.sweeps.job.job_context`), and hands the run its place in the sweep as a
value; nothing below reads the sweep from the environment.
"""

# ruff: noqa: E402  (the signal handlers go in before the imports, which take a second)
from __future__ import annotations

import os
import signal
import sys

NOTHING_RECORDED = "before any run started; nothing was recorded"


def _stopped_while_importing(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while Python still imports the app: nothing exists to close yet."""
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    os.write(2, f"\n{word} {NOTHING_RECORDED}\n".encode())
    os._exit(143 if signum == signal.SIGTERM else 130)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, _stopped_while_importing)
    signal.signal(signal.SIGTERM, _stopped_while_importing)

import errno
import gc
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline.config import paths  # noqa: F401  (registers ${project_root:})
from pipeline.config.schema import (  # importing it gives Hydra the optimisers' options
    typo_line,
    validate,
)
from pipeline.errors import ConfigError, PipelineError, Terminated
from pipeline.sweeps.callback import (
    finish_open_sweep,
    quiet_dropped_interrupts,
    raise_if_stopping,
    remember_stop,
    stop_signal,
    stop_warming,
    sweep_is_open,
)
from pipeline.sweeps.job import JobContext, job_context, job_gate, stop_with_launcher


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    raise_if_stopping()  # a sweep stopped by Ctrl-C starts no further job
    hydra_cfg = HydraConfig.get()
    in_sweep = str(hydra_cfg.mode) == "RunMode.MULTIRUN"
    job = job_context()  # what the sweep's launching process handed this job, read once
    try:
        config = validate(cfg)  # fails here, before any work, on a bad key, type or value
        if not in_sweep:
            for key in ("replicates", "resume", "max_failures"):
                if getattr(config.sweep, key) is not None:
                    raise ConfigError(f"sweep.{key}: applies to a sweep; add -m (python -m "
                                      "pipeline -m ...) or drop it")
        if config.data.transforms:  # checked here too, so a sweep records the job FAILED
            from pipeline.run.data import check_transforms  # brings in pandas

            check_transforms(config)
    except ConfigError as error:
        if in_sweep:
            _record_failed_job(cfg, list(hydra_cfg.overrides.task), str(error), job)
        return _user_error(error, in_sweep)

    # The run brings in MLflow, pandas and the stages: only once the config is valid.
    from pipeline.run.runner import format_summary, run

    output_dir = Path(hydra_cfg.runtime.output_dir)
    worker = job is not None and job.run.worker
    if worker:
        stop_with_launcher(job.launcher_pid)
    try:
        skip = job_gate(config, output_dir, job)
        if skip is not None:
            logging.getLogger("pipeline").info("%s", skip.message)
            return skip.value
        raise_if_stopping()  # an interrupt Python dropped: raised before the run starts
        result = run(
            config,
            output_dir=output_dir,
            overrides=list(hydra_cfg.overrides.task),
            hydra_dir=output_dir / str(hydra_cfg.output_subdir or ".hydra"),
            sweep=job.run if job is not None else None,
        )
    except PipelineError as error:  # the run, if it started, ended FAILED with this line
        return _user_error(error, in_sweep)
    except KeyboardInterrupt as stop:
        if worker:
            # The sweep is stopping (pipeline.sweeps.callback._stop_sweep): the run ended
            # KILLED; this worker must not take the next queued job.
            import multiprocessing

            for note in getattr(stop, "__notes__", ())[-1:]:  # where the job's record is
                logging.getLogger("pipeline").warning("job stopped: %s", note)

            for child in multiprocessing.active_children():  # a plot process, say
                child.terminate()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(143 if isinstance(stop, Terminated) else 130)
        raise
    if not in_sweep or config.sweep.verbose:  # a sweep's job prints one line at its end
        print(format_summary(result), flush=True)
    return result.metrics.get(config.sweep.metric)  # what a sweeper (Optuna) optimises


def _user_error(error: PipelineError, in_sweep: bool) -> None:
    """Print a user error as its one line. A single run exits 1 here, past Hydra's framing
    ("Error executing job with overrides", "Set the environment variable ..."); a sweep's
    job returns, so the other jobs go on and the sweep counts it from its FAILED run.
    With ``HYDRA_FULL_ERROR=1`` it is raised, traceback and all."""
    if os.environ.get(TRACEBACKS_ENV) == "1":
        raise error
    print(error, file=sys.stderr, flush=True)
    if not in_sweep:
        raise SystemExit(1)
    return None


def _record_failed_job(cfg: DictConfig, overrides: list[str], error: str,
                       job: JobContext | None) -> None:
    """A sweep's job whose config is invalid still becomes a FAILED child run carrying the
    error, so the sweep counts it (best effort: the store may be what is misconfigured)."""
    parent = job.parent_run_id if job is not None else None
    if not parent:
        return
    from omegaconf import OmegaConf

    def setting(key: str, default: str | None) -> str | None:
        try:
            value = OmegaConf.select(cfg, key, default=default)
        except Exception:
            return default
        return None if value is None else str(value)

    from pipeline.tracking.parent import record_failed_job  # MLflow (~1 s): only now

    try:
        record_failed_job(uri=setting("tracking.uri", None),
                          experiment=setting("tracking.experiment", "mlp-pipeline") or "",
                          parent_run_id=parent, overrides=overrides, error=error)
    except Exception as problem:
        logging.getLogger("pipeline").warning("could not record the failed job: %s", problem)


# Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1): cli() sets HYDRA_FULL_ERROR
# itself, so that Hydra hands every error to it instead of printing its own framing.
TRACEBACKS_ENV = "PIPELINE_TRACEBACKS"


def compose_error_line(error: BaseException) -> str:
    """Hydra's multi-line message for a config it cannot compose (a key that does not exist,
    an option that is not there, an override it cannot parse) as one line: a key or an
    option that does not exist is answered with the closest valid ones."""
    typo = typo_line(error)
    if typo is not None:
        return typo
    text = "\n".join(str(e) for e in (error, error.__cause__) if e is not None and str(e))
    parts: list[str] = []
    options: list[str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=",
                                        "Config search path", "provider=")):
            continue
        if raw.startswith(("\t", "    ")) and options is not None:
            options.append(line)
            continue
        if options:
            parts[-1] += " " + ", ".join(options)
        options = [] if line.startswith("Available options") else None
        parts.append(line.rstrip("."))
    if options:
        parts[-1] += " " + ", ".join(options)
    override = getattr(error, "override", None)
    if override:
        parts.insert(0, f"cannot parse the override {override!r}")
        key, _, value = str(override).partition("=")
        if value == ",":  # the shell ate the quotes of key=','
            parts = [f"cannot parse the override {override!r}: the shell dropped the quotes "
                     f"around the comma; write \"{key}=','\""
                     + (f" or {key}=comma" if key.endswith("decimal") else "")]
    return "; ".join(dict.fromkeys(parts))


def _raise_on_signals() -> None:
    """From here on, Ctrl-C raises KeyboardInterrupt and SIGTERM :class:`Terminated`, which
    :func:`cli` turns into one line (a run and a sweep install their own on top). The
    interrupt is also remembered: Python drops one raised in a garbage-collection callback
    or a ``__del__``, and the app raises it again before it starts anything."""
    def handler(signum: int, frame: object) -> None:
        stop = (Terminated(f"terminated by signal {signum}") if signum == signal.SIGTERM
                else KeyboardInterrupt())
        remember_stop(stop)
        raise stop

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    quiet_dropped_interrupts()


def _stopped(stop: KeyboardInterrupt) -> int:
    """Print the interrupt's last line; the exit code (130 for Ctrl-C, 143 for SIGTERM)."""
    # The process is on its way out, and every step left is bounded: a second signal
    # would only cut the sweep's summary short or print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"\n{_interrupt_line(stop, sweep_is_open())}", file=sys.stderr)
    return 143 if isinstance(stop, Terminated) else 130


def _interrupt_line(stop: KeyboardInterrupt, sweep: bool) -> str:
    """The last line after Ctrl-C or SIGTERM, true to what was recorded: the note the run
    left on the interrupt (where its record is), the sweep's, or that nothing had started."""
    word = "terminated" if isinstance(stop, Terminated) else "interrupted"
    notes = getattr(stop, "__notes__", None)
    note = str(notes[-1]) if notes else None
    if sweep:
        return f"{word}: the sweep was stopped" + (f"; {note}" if note else "")
    return f"{word}: {note}" if note else f"{word} {NOTHING_RECORDED}"


def _too_long_line(error: OSError) -> str:
    """One line for a name longer than the file system takes: most often an override key,
    which Hydra's config search looks up as a file before any setting is read."""
    limit = 255  # NAME_MAX of the usual Linux file systems
    keys = [arg.split("=", 1)[0] for arg in sys.argv[1:] if "=" in arg]
    long = [key for key in keys if any(len(part.encode()) > limit
                                       for part in key.lstrip("+~").split("."))]
    if long:
        shown = ", ".join(f"{key[:30]}... ({len(key)} characters)" for key in long)
        return (f"the override key {shown} is too long: Hydra looks each key up as a config "
                f"file, and a file name has at most {limit} characters; shorten the key")
    name = str(error.filename or "")
    return (f"a file name is too long ({name[:60]}..., {len(name)} characters); shorten the "
            "setting that names it")


def _forget_unhandled_interrupt() -> None:
    """The exit code is the one :func:`cli` chose. CPython 3.11 marks a KeyboardInterrupt
    that leaves code run by ``exec()`` (a dataclass being created while a module imports,
    say) as unhandled even when it is caught later, and then ends the process by SIGINT at
    exit (status -2 instead of 130): that mark is cleared."""
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, AttributeError, ValueError):  # another Python keeps no such mark
        pass


def cli() -> None:
    _raise_on_signals()
    from hydra.errors import HydraException

    tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ[TRACEBACKS_ENV] = "1" if tracebacks else "0"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    code = 0
    stopped_on: str | None = None  # the one line a sweep stopped on, for its parent's tag
    try:
        main()
    except KeyboardInterrupt as stop:
        code = _stopped(stop)
    except SystemExit as done:  # a user error (one line printed), or a failed sweep job
        code = done.code if isinstance(done.code, int) else 1
    except HydraException as error:  # Hydra could not compose the config: the user's to fix
        code = 1
        if tracebacks:
            raise
        stopped_on = compose_error_line(error)
        print(stopped_on, file=sys.stderr)
    except OSError as error:
        if error.errno != errno.ENAMETOOLONG or tracebacks:
            code = 1
            raise
        code = 1  # Hydra's config search, given a key longer than a file name
        print(_too_long_line(error), file=sys.stderr)
    except BaseException:
        stopped = stop_signal()
        if stopped is None or tracebacks:  # a bug: its traceback, after the sweep is closed
            code = 1
            raise
        # Ctrl-C cut a library short mid-step (Hydra building a job's config, say) and what
        # failed next is its consequence, not a bug: the interrupt's one line.
        code = _stopped(stopped)
    finally:
        stopped = stop_signal()
        if stopped is not None and code == 0:  # Ctrl-C that only a garbage collection saw
            code = 143 if isinstance(stopped, Terminated) else 130
        stop_warming()  # joblib workers still starting: ended before the interpreter exits
        # Hydra skips on_multirun_end when a job failed: close the sweep's parent run here.
        failed = finish_open_sweep(aborted=code != 0, interrupted=code in (130, 143),
                                   error=stopped_on)
        if failed != 0 and code == 0:
            code = 1
    _forget_unhandled_interrupt()
    # Nothing is left to collect that matters: everything is flushed, closed and logged.
    # Without this the interpreter's last garbage collection walks every object MLflow,
    # SQLAlchemy and Hydra made, a visible share of a default run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    cli()
