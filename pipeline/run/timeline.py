"""Where a run's wall time goes: start-up, set-up, each stage, results, plots, tracking.

The stages time themselves (:func:`pipeline.run.data.timed`); the run adds the parts
between and around them, so that the parts add up to the time since the process started
(``other`` is what fell between two timed parts). A user sees where a slow run spends its
time in one line; the same figures are logged as ``time_<part>_s`` metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

_IMPORTED = time.perf_counter()  # the fallback origin, where /proc is not available


def process_age() -> float:
    """Seconds since this process started (from /proc; else since this module's import)."""
    try:
        with open("/proc/self/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def process_origin() -> float:
    """The ``time.perf_counter()`` value at which this process started."""
    return time.perf_counter() - process_age()


def with_other(parts: Mapping[str, float], total: float) -> dict[str, float]:
    """``parts`` plus ``other``: what ``total`` holds beyond them (never below 0)."""
    return {**parts, "other": max(0.0, total - sum(parts.values()))}


def timing_line(parts: Mapping[str, float], total: float) -> str:
    """``time total 4.10 s = startup 1.52 + setup 0.80 + ...`` (parts of 5 ms and more)."""
    shown = " + ".join(f"{name} {seconds:.2f}" for name, seconds in parts.items()
                       if seconds >= 0.005)
    return f"time total {total:.2f} s = {shown}"
