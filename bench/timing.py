"""Timing: best of a few repeats, contenders interleaved so drift hits all of them alike."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

from bench.contenders import Contender, Run
from bench.workloads import Array, Labels, Workload

WARMUP_ROWS = 4096
WARMUP_EPOCHS = 5
# Idle time before each timed run. A BLAS or OpenMP pool keeps its threads spinning for a
# while after its last call (OpenBLAS up to ~0.1 s): without the pause, the contender timed
# next shares the cores with the previous one's spinning threads (measured: PyTorch's W2
# epoch 9.7-10.8 ms right after scikit-learn's run, 8.5-9.3 ms after a 0.3 s pause).
SETTLE_SECONDS = 0.3


def time_run(run: Run, settle: float = 0.0) -> float:
    """Seconds one ``run()`` takes, after ``settle`` idle seconds; warnings (e.g.
    ConvergenceWarning) silenced."""
    time.sleep(settle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        run()
        return time.perf_counter() - start


def warm_up(contender: Contender, workload: Workload, X: Array, y: Labels) -> None:
    """A short untimed run on a few rows: loads lazy modules, starts BLAS/OpenMP threads."""
    rows = min(WARMUP_ROWS, X.shape[0])
    time_run(contender.prepare(workload, X[:rows], y[:rows], min(WARMUP_EPOCHS,
                                                               workload.epochs)))


def seconds_per_epoch(contenders: Sequence[Contender], workload: Workload, X: Array,
                      y: Labels, epochs: int | None = None,
                      repeats: int | None = None) -> dict[str, float]:
    """Best-of-``repeats`` seconds per epoch of each contender, keyed by contender key.

    Each repeat trains a freshly built model for ``epochs`` (default: the workload's), the
    contenders taking turns within every repeat.
    """
    epochs = workload.epochs if epochs is None else epochs
    repeats = workload.repeats if repeats is None else repeats
    for contender in contenders:
        warm_up(contender, workload, X, y)
    best = {c.key: float("inf") for c in contenders}
    for _ in range(repeats):
        for contender in contenders:
            run = contender.prepare(workload, X, y, epochs)
            seconds = time_run(run, SETTLE_SECONDS)
            best[contender.key] = min(best[contender.key], seconds / epochs)
    return best
