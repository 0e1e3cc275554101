"""The bench's child processes: each started in a process group of its own, and all of them
ended with the bench.

A sweep that the bench times starts workers of its own (joblib's), and a child that only
heard the terminal's Ctrl-C, or never heard the SIGTERM sent to the bench, could outlive
it. So every command runs in a new session (its process group holds it and everything it
starts), and however the bench stops (Ctrl-C, SIGTERM, an error) each group still running
gets SIGTERM (a run or sweep ends its MLflow runs KILLED), then SIGKILL after a grace
period; :mod:`multiprocessing` children (the peak-memory processes) are ended too.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

GRACE_S = 5.0  # how long a child group may take to end after SIGTERM
_live: set[subprocess.Popen[str]] = set()


class Stopped(KeyboardInterrupt):
    """The bench received SIGTERM (raised like Ctrl-C, so every ``finally`` runs)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped()


def install_stop_handlers() -> None:
    """SIGTERM raises :class:`Stopped`, Ctrl-C KeyboardInterrupt: also when the bench was
    started with SIGINT ignored (a shell's background job), which Python would keep."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def popen(command: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
    """Start ``command`` in a session of its own (text mode), tracked until it is reaped."""
    process = subprocess.Popen(list(command), start_new_session=True, text=True, **kwargs)
    _live.add(process)
    return process


@contextlib.contextmanager
def started(command: Sequence[str], **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """:func:`popen`, with the child's whole group ended when the block ends, however."""
    process = popen(command, **kwargs)
    try:
        yield process
    finally:
        end(process)


def run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run(command, capture_output=True, text=True)``, in a session of its
    own; an interrupt meanwhile ends the child's whole group before it is raised."""
    with started(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs) as process:
        out, err = process.communicate()
    return subprocess.CompletedProcess(list(command), process.returncode, out, err)


def end(process: subprocess.Popen[str], grace_s: float = GRACE_S) -> None:
    """End ``process`` and everything in its group: SIGTERM, then SIGKILL after ``grace_s``.
    A child that exited on its own may have left workers in its group: they go too."""
    try:
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(process):
            time.sleep(0.05)
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.communicate(timeout=grace_s)
    finally:
        _live.discard(process)


def end_all() -> None:
    """End every child still running: each command's group, then multiprocessing's."""
    for process in list(_live):
        end(process)
    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(GRACE_S)
        if child.is_alive():
            child.kill()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_alive(process: subprocess.Popen[str]) -> bool:
    """Whether any process of the group led by ``process`` is still running (its leader is
    reaped as it exits, so that a dead leader does not count)."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return any(_in_group(pid, process.pid) for pid in _pids())


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc: trust killpg's answer
        return [-1]


def _in_group(pid: int, pgid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) member of process group ``pgid``."""
    if pid == -1:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z" and int(fields[2]) == pgid
