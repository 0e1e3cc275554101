"""Steps that Ctrl-C or SIGTERM must not cut in half.

Used by the run (the fork of its plot process) and by a sweep (creating its parent run).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is over, then act as usual; a second one acts
    at once (main thread only; elsewhere a no-op). For steps an interrupt must not cut in
    half: a fork, whose at-fork hooks drop what a signal handler raises (the interrupt would
    be lost, and the child would start with handlers that raise), or creating a record that
    the interrupt must then close."""
    held: list[int] = []
    previous: dict[int, Any] = {}

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)
        if len(held) > 1 and callable(previous.get(signum)):
            previous[signum](signum, frame)

    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, hold)
    except ValueError:  # not the main thread: signals are not this thread's to handle
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if len(held) == 1:  # held until now (a second one has acted already)
            signal.raise_signal(held[0])
