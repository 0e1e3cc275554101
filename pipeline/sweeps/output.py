"""What a sweep prints: one line per job as it ends, a ``[job N]`` prefix on what a
parallel job prints, and the quieting of per-job detail (``sweep.verbose=false``).

Each job's full record (every metric, the confusion matrix) stays in its run; the console
gets :func:`job_line` from :class:`pipeline.sweeps.callback.SweepCallback` when the job
ends, in the job's own process (the launching one for the basic launcher, a worker for
joblib or Ray). Jobs of the joblib launcher print at the same time into one terminal:
:func:`prefixed_output` marks every line of theirs with the job's number.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import TextIO

from pipeline.run.context import WARNINGS_LOGGER

# What Hydra's launchers (the basic one, and ours for joblib) log for every job they
# start: "\t#3 : optimizer.lr=0.1 ..." (the job's own line at its end says it again), and
# the joblib launcher's every setting of joblib.Parallel.
_LAUNCH_LINES = ("\t#", "Joblib.Parallel(")
LAUNCHER_LOGGERS = ("hydra._internal.core_plugins.basic_launcher", "pipeline.sweeps.launcher")


def job_prefix(num: int) -> str:
    return f"[job {num}]"


def job_line(num: int, values: Sequence[str], metric: str, value: float | None,
             status: str, seconds: float, warned: Sequence[str] = ()) -> str:
    """``[job 3] optimizer.lr=0.1 model.hidden_sizes=[8]  val_accuracy 0.9750  FINISHED
    1.2 s``: the job's swept ``values``, its selection ``metric``, ``status``, time, and
    the kinds of warning its run showed (``warned: ConvergenceWarning``)."""
    parts = [" ".join([job_prefix(num), *values])]
    if value is not None:
        parts.append(f"{metric} {value:.4f}")
    parts += [status, f"{seconds:.1f} s"]
    if warned:
        parts.append(f"warned: {', '.join(warned)}")
    return "  ".join(parts)


class _Prefixed(io.TextIOBase):
    """A text stream that writes each complete line to ``target`` as ``prefix line``, in
    one write each (lines of parallel jobs do not mix), and passes lines that already
    carry the prefix unchanged. Once :meth:`detach_prefix` is called it passes
    everything through (a logging handler may keep it after the job)."""

    def __init__(self, target: TextIO, prefix: str) -> None:
        super().__init__()
        self.target, self.prefix, self.pending, self.active = target, prefix, "", True

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not self.active:
            return self.target.write(text)
        *lines, self.pending = (self.pending + text).split("\n")
        if lines:
            self.target.write("".join(self._marked(line) + "\n" for line in lines))
            self.target.flush()
        return len(text)

    def _marked(self, line: str) -> str:
        return line if not line or line.startswith(self.prefix) else f"{self.prefix} {line}"

    def flush(self) -> None:
        self.target.flush()

    def detach_prefix(self) -> None:
        """Write what is left of a line, and prefix nothing from now on."""
        if self.pending:
            self.target.write(self._marked(self.pending))
            self.pending = ""
        self.active = False
        self.target.flush()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def isatty(self) -> bool:
        return False  # prefixed lines are a log: no progress bars redrawn in place

    def fileno(self) -> int:
        return self.target.fileno()


@contextlib.contextmanager
def prefixed_output(num: int) -> Iterator[None]:
    """Within the block, every line written to ``sys.stdout`` and ``sys.stderr`` (logging
    handlers configured within it included) starts with ``[job num]``."""
    prefix = job_prefix(num)
    out, err = _Prefixed(sys.stdout, prefix), _Prefixed(sys.stderr, prefix)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
        out.detach_prefix()
        err.detach_prefix()


class _NoLaunchLines(logging.Filter):
    """Drops the launchers' line per started job (see :data:`_LAUNCH_LINES`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LAUNCH_LINES)


_no_launch_lines = _NoLaunchLines()


def hide_launch_lines(hide: bool = True) -> None:
    """Leave out (``hide``) or show again the launchers' line per started job (and
    joblib's settings)."""
    for name in LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        if hide:
            logger.addFilter(_no_launch_lines)
        else:
            logger.removeFilter(_no_launch_lines)


class _WarningsOnly(logging.Filter):
    """Passes warnings and errors. A run's Python warnings (the core's ConvergenceWarning,
    one per job of a sweep that stops at its epoch limit) are noted by kind for the job's
    line instead: the job's log file and its run's ``warnings`` tag keep their text."""

    def __init__(self) -> None:
        super().__init__()
        self.warned: dict[str, None] = {}  # the kinds noted, in order

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == WARNINGS_LOGGER:
            kind = record.args[0] if isinstance(record.args, tuple) and record.args else None
            self.warned[str(kind or "warning")] = None
            return False
        return record.levelno >= logging.WARNING


_warnings_only = _WarningsOnly()


def warned_kinds() -> list[str]:
    """The kinds of warning held back from the console since the last call (see
    :func:`quiet_console`)."""
    kinds = list(_warnings_only.warned)
    _warnings_only.warned.clear()
    return kinds


def quiet_console(quiet: bool = True) -> None:
    """Have the console handlers of the root logger pass warnings and errors only
    (``quiet``), or everything again. A run's Python warnings are held back too, by kind
    (:func:`warned_kinds`). The job's log file (Hydra's ``<job dir>/*.log``) and its run
    keep every line."""
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.StreamHandler) or isinstance(
                handler, logging.FileHandler):
            continue
        if quiet:
            _warnings_only.warned.clear()  # an earlier job's
            handler.addFilter(_warnings_only)
        else:
            handler.removeFilter(_warnings_only)


@contextlib.contextmanager
def console_warnings_only(quiet: bool) -> Iterator[None]:
    """:func:`quiet_console` for the duration of the block (when ``quiet``)."""
    if not quiet:
        yield
        return
    quiet_console()
    try:
        yield
    finally:
        quiet_console(False)
