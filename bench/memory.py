"""Peak resident memory of one contender on one workload, each in a fresh spawned process.

The child imports only what its contender needs, builds the data and the model, notes its
RSS, resets the kernel's high-water mark (``/proc/self/clear_refs``; skipped where not
allowed) and trains for ``workload.memory_epochs`` epochs. It reports the process's overall
peak RSS (imports + data + training) and, when the reset worked, the growth during training.

Peaks come from ``VmHWM`` of /proc/self/status, not ``ru_maxrss``: Linux carries ru_maxrss
across exec, so a spawned child's ru_maxrss starts at its parent's RSS at fork time.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

from bench.workloads import Workload

MIB = 1024 * 1024
_IMPORTS = {"core": "pipeline.mlp", "yardstick": "numpy", "sklearn": "sklearn.neural_network",
            "torch": "torch"}


@dataclass(frozen=True)
class MemoryResult:
    """Peak RSS of a child in MiB; ``train_mib`` is the growth while training (None if the
    high-water mark could not be reset); ``error`` is set when the child failed."""

    peak_mib: float = float("nan")
    train_mib: float | None = None
    error: str | None = None


def _status_kib(field: str) -> int | None:
    """A "VmRSS"/"VmHWM"-style field of /proc/self/status in KiB, or None."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def measure_in_child(workload: Workload, key: str, threads: int) -> MemoryResult:
    """Runs inside the spawned child: train ``key`` on ``workload`` and measure."""
    try:
        __import__(_IMPORTS[key])
        from bench.contenders import load_contenders
        from bench.machine import limited_threads
        from bench.timing import time_run
        from bench.workloads import make_data

        contenders, notes = load_contenders([key])
        if not contenders:
            return MemoryResult(error="; ".join(notes))
        X, y = make_data(workload)
        run = contenders[0].prepare(workload, X, y, workload.memory_epochs)
        before_kib = _status_kib("VmRSS")
        setup_peak_kib = _status_kib("VmHWM")
        if before_kib is None or setup_peak_kib is None:
            return MemoryResult(error="no /proc/self/status here")
        was_reset = _reset_peak()
        with limited_threads(threads):
            time_run(run)
        train_peak_kib = _status_kib("VmHWM") or 0
        peak_kib = max(setup_peak_kib, train_peak_kib)
        growth = (train_peak_kib - before_kib) * 1024 / MIB if was_reset else None
        return MemoryResult(peak_mib=peak_kib * 1024 / MIB, train_mib=growth)
    except Exception as error:  # reported in the table, never fatal to the benchmark
        return MemoryResult(error=f"{type(error).__name__}: {error}")


def measure_many(jobs: Sequence[tuple[Workload, str]], threads: int,
                 parallel: int = 2) -> list[MemoryResult]:
    """Peak memory of each (workload, contender key), one fresh spawned process per job.

    Up to ``parallel`` children run at once; peaks are per process, so they do not mix.
    """
    if not jobs:
        return []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=parallel, mp_context=context,
                             max_tasks_per_child=1) as pool:
        futures = [pool.submit(measure_in_child, w, key, threads) for w, key in jobs]
        return [_result(future) for future in futures]


def _result(future: Future[MemoryResult]) -> MemoryResult:
    """The child's result, or an error result if the child died (e.g. killed for memory)."""
    try:
        return future.result()
    except Exception as error:
        return MemoryResult(error=f"child failed: {type(error).__name__}: {error}")
