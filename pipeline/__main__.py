"""``python -m pipeline``: the Hydra app. Validate the config, run, print a summary.

A config error is reported before MLflow is even imported; user errors print one
line and exit 1 (``HYDRA_FULL_ERROR=1`` shows the traceback); Ctrl-C and SIGTERM
end the MLflow run KILLED and exit 130 / 143.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pipeline import paths  # noqa: F401  (registers ${project_root:})
from pipeline.errors import ConfigError, Terminated
from pipeline.sweep import (
    JOURNAL_ENV,
    PARENT_ENV,
    in_sweep_worker,
    job_gate,
    stop_with_launcher,
)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from pipeline.schema import validate

    config = validate(cfg)  # fails here, before any work, on a bad key, type or value
    _warnings_as_log_lines()

    from pipeline.runner import format_summary, run

    hydra_cfg = HydraConfig.get()
    if str(hydra_cfg.mode) != "RunMode.MULTIRUN":
        for key in ("replicates", "resume", "max_failures"):
            if getattr(config.sweep, key) is not None:
                raise ConfigError(f"sweep.{key}: applies to a sweep; add -m (python -m "
                                  "pipeline -m ...) or drop it")
    output_dir = Path(hydra_cfg.runtime.output_dir)
    stop_with_launcher()
    skip = job_gate(config, output_dir)
    if skip is not None:
        logging.getLogger("pipeline").info("%s", skip.message)
        return skip.value
    try:
        result = run(
            config,
            output_dir=output_dir,
            overrides=list(hydra_cfg.overrides.task),
            hydra_dir=output_dir / str(hydra_cfg.output_subdir or ".hydra"),
            parent_run_id=os.environ.get(PARENT_ENV) or None,
            parent_journal_id=os.environ.get(JOURNAL_ENV) or None,
        )
    except KeyboardInterrupt as stop:
        if in_sweep_worker():
            # The sweep is stopping (pipeline.sweep._stop_sweep): the run ended KILLED; this
            # worker must not take the next queued job.
            import multiprocessing

            for child in multiprocessing.active_children():  # a plot process, say
                child.terminate()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(143 if isinstance(stop, Terminated) else 130)
        raise
    print(format_summary(result), flush=True)
    return result.metrics.get(config.sweep.metric)  # what a sweeper (Optuna) optimises


def _warnings_as_log_lines() -> None:
    """Show warnings (e.g. the core's ConvergenceWarning) as one log line each."""
    import warnings

    log = logging.getLogger("pipeline")

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        log.warning("%s: %s", category.__name__, message)

    warnings.showwarning = show


def cli() -> None:
    from pipeline.sweep import finish_open_sweep

    code = 0
    try:
        main()
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"\n{what}: the run was marked KILLED; its journal and checkpoints so far "
              "were kept", file=sys.stderr)
        code = 143 if isinstance(stop, Terminated) else 130
    except SystemExit as done:  # Hydra exits 1 after reporting a failed job or a user error
        code = done.code if isinstance(done.code, int) else 1
    finally:
        # Hydra skips on_multirun_end when a job failed: close the sweep's parent run here.
        failed = finish_open_sweep(aborted=code != 0, interrupted=code in (130, 143))
        if failed != 0 and code == 0:
            code = 1
    # Nothing is left to collect that matters: everything is flushed, closed and logged.
    # Without this the interpreter's last garbage collection walks every object MLflow,
    # SQLAlchemy and Hydra made (~0.5 s, a seventh of a default run).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    cli()
