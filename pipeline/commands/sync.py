"""``python -m pipeline.commands.sync <output folder or journal> [--uri URI]``: send journals
to a store.

A run records everything in ``journal.jsonl`` in its output folder before the store
sees it. This sends a journal (or every journal in a folder: a sweep's parent and
jobs) to the store it was recorded for, or to ``--uri``: runs whose store failed
mid-run, runs killed before they could finish sending, and ``tracking.mode=offline``
runs. Sending twice changes nothing. A journal that is not what a run writes is refused
in one line before anything is sent; Ctrl-C or SIGTERM ends it with one line (exit 130 or
143) and leaves no run RUNNING: sending again finishes the job.
"""

from __future__ import annotations

import _thread
import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def main(argv: list[str] | None = None, *, exiting: bool = False) -> int:
    """The command; ``exiting``: the process ends after it (a Ctrl-C that comes once the
    sync is over is ignored, not restored to Python's)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", type=Path, nargs="+", help="a run's or a sweep's output "
                        "folder, or a journal.jsonl (with --unsent: folders to look in)")
    parser.add_argument("--uri", default=None, help="send to this tracking URI instead of the "
                        "journal's own store (the one the run was recorded for, which "
                        "MLFLOW_TRACKING_URI does not change)")
    parser.add_argument("--unsent", action="store_true", help="send nothing: list the journals "
                        "never sent completely, exit 1 if there is any (make clean asks this)")
    args = parser.parse_args(argv)
    targets = [target.expanduser().absolute() for target in args.target]
    if args.unsent:
        return _report_unsent(targets)
    _quiet_libraries()
    marked: list[str] = []
    stop = _Stop()
    previous = {sig: signal.signal(sig, stop.handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    sys.unraisablehook = stop.unraisable
    try:
        return _send(targets, args.uri, marked, stop)
    except BaseException:
        # Whatever the interrupt became on its way up (an extension module cut short in its
        # import raises ImportError): one line.
        if stop.signal is None:
            raise
        stop.over = True
        print(_interrupted_line(targets, marked), file=sys.stderr, flush=True)
        return 143 if stop.signal == signal.SIGTERM else 130
    finally:
        stop.over = True
        sys.unraisablehook = stop.hook
        if not exiting:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _send(targets: list[Path], uri: str | None, marked: list[str], stop: _Stop) -> int:
    """Send every target; print one line per journal (or one error line)."""
    # Imported here, inside the caller's handling of Ctrl-C: MLflow and Hydra take seconds.
    from pipeline.errors import PipelineError
    from pipeline.tracking.sending import sync

    try:
        results = [sent for target in targets for sent in sync(target, uri, marked=marked)]
    except PipelineError as error:
        if stop.signal is not None:  # a store call the signal cut short: main says so
            raise
        print(f"error: {error}", file=sys.stderr)
        return 1
    stop.over = True  # everything was sent: a signal from now on changes nothing
    readers: dict[str, Any] = {}  # one reader per store
    for sent in results:
        what = ("its sweep is still going (the sweep's end summarises)" if sent.live else
                "summary and status brought up to date" if sent.updated else
                "attached to its sweep" if sent.attached else
                "already sent" if sent.already else
                "sent to a new run" if sent.created else "sent")
        print(f"{what}: {sent.journal} -> run {sent.run_id} ({sent.status}) in {sent.uri}")
        link = _run_link(readers, sent.uri, sent.run_id)
        if link is not None:
            print(f"  in the MLflow UI: {link}")
    return 0


def _run_link(readers: dict[str, Any], uri: str, run_id: str) -> str | None:
    """The UI link of run ``run_id`` in the store ``uri`` (None if it cannot be read now:
    the run was sent, the link is only a convenience)."""
    from pipeline.errors import PipelineError
    from pipeline.tracking.runs import Runs

    try:
        if uri not in readers:
            readers[uri] = Runs(uri)
        return str(readers[uri].url(readers[uri].get(run_id)))
    except PipelineError:
        return None


def _interrupted_line(targets: list[Path], marked: list[str]) -> str:
    """What an interrupted sync left, and the command that finishes it."""
    again = " ".join(f"make sync DIR={t if t.is_dir() else t.parent}" for t in targets)
    left = (f"run(s) {', '.join(marked)} stay incomplete in the store (none RUNNING) until "
            "then" if marked else "nothing was left half-sent")
    return f"interrupted: not every journal was sent, {left}; run {again} again to finish"


def _quiet_libraries() -> None:
    """This package's warnings as plain lines (pipeline.tracking.store silences SQLAlchemy's
    own error log: its errors reach the store calls, which report them in one line)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")


class _Stop:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt while the sync works (``signal`` says
    which came), and are ignored once it is over."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.over = False
        self.hook = sys.unraisablehook

    def handler(self, signum: int, frame: object) -> None:
        if self.over:
            return
        self.signal = signum
        raise KeyboardInterrupt

    def unraisable(self, unraisable: Any) -> None:
        """The interrupt raised where Python cannot pass it on (a weakref callback or a
        ``__del__`` that ran when the signal came) would be lost, with a traceback: it is
        sent again instead, a moment later, and acts at the main thread's next step."""
        if issubclass(unraisable.exc_type, KeyboardInterrupt) and self.signal and not self.over:
            # A thread that does not wait to start: this hook must end before it acts.
            _thread.start_new_thread(_signal_again, (self.signal,))
            return
        self.hook(unraisable)


def _signal_again(signum: int) -> None:
    """Send ``signum`` to this process again once the hook that lost it has returned."""
    time.sleep(0.01)
    os.kill(os.getpid(), signum)


def _report_unsent(targets: list[Path]) -> int:
    from pipeline.tracking.sending import unsent

    found = unsent(targets)
    for path in found:
        print(f"not sent: {path.parent}", file=sys.stderr)
    if found:
        print(f"{len(found)} run(s) exist only in their journals; send them first "
              "(make sync DIR=<folder>), or delete anyway with FORCE=1", file=sys.stderr)
    return 1 if found else 0


def _exit(code: int) -> None:
    """Exit with ``code`` at once, everything written: Python's own finalization (long,
    after MLflow's imports) puts back its default Ctrl-C handler, so a Ctrl-C then would
    end the process by SIGINT; and CPython 3.11 ends it so anyway once a KeyboardInterrupt
    was raised inside ``exec`` (the dataclasses MLflow defines as it is imported run one),
    even when it was handled."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    try:
        status = main(exiting=True)
    except KeyboardInterrupt:  # Ctrl-C before main() took over (while Python started it)
        print("interrupted: nothing was sent", file=sys.stderr)
        status = 130
    _exit(status)
