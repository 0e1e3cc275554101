"""Scaling: time per epoch against rows and against hidden width, peak memory against rows.

Rows: ``[32, 64, 32, 1]`` on 10²…10⁶ random rows, full batch up to ``full_batch_max`` rows and
mini-batches of 1024 beyond. Width: ``[32, w, w, 1]`` on ``width_rows`` rows, full batch.
Each point runs enough epochs for about ``target_flops`` of matmul work (at least one), best
of ``repeats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.contenders import Contender
from bench.memory import MemoryResult
from bench.timing import seconds_per_epoch
from bench.workloads import Workload, flops_per_epoch, make_data

ROWS_LAYERS = (32, 64, 32, 1)


@dataclass(frozen=True)
class ScalingPlan:
    """What the scaling study runs; ``memory_keys``: contenders whose peak RSS is measured."""

    rows: tuple[int, ...] = (10**2, 10**3, 10**4, 10**5, 10**6)
    widths: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512)
    width_rows: int = 10_000
    full_batch_max: int = 10_000
    batch_size: int = 1024
    target_flops: float = 1e9
    max_epochs: int = 100
    repeats: int = 2
    memory_keys: tuple[str, ...] = ("core", "yardstick", "sklearn", "torch")


@dataclass
class ScalingResults:
    """Seconds per epoch by point and contender key, and peak memory by rows and key."""

    by_rows: dict[int, dict[str, float]] = field(default_factory=dict)
    by_width: dict[int, dict[str, float]] = field(default_factory=dict)
    memory_by_rows: dict[int, dict[str, MemoryResult]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


def _epochs(plan: ScalingPlan, layers: tuple[int, ...], n_rows: int) -> int:
    """Enough epochs for ~target_flops of matmul work, at least one."""
    per_epoch = flops_per_epoch(layers, n_rows)
    return max(1, min(plan.max_epochs, math.ceil(plan.target_flops / per_epoch)))


def rows_workload(plan: ScalingPlan, n_rows: int) -> Workload:
    """The ``[32, 64, 32, 1]`` workload on ``n_rows`` rows."""
    batch = None if n_rows <= plan.full_batch_max else plan.batch_size
    return Workload(f"rows={n_rows}", ROWS_LAYERS, n_rows, epochs=_epochs(plan, ROWS_LAYERS,
                    n_rows), batch_size=batch, repeats=plan.repeats, memory_epochs=1)


def width_workload(plan: ScalingPlan, width: int) -> Workload:
    """The ``[32, width, width, 1]`` full-batch workload on ``plan.width_rows`` rows."""
    layers = (32, width, width, 1)
    return Workload(f"width={width}", layers, plan.width_rows,
                    epochs=_epochs(plan, layers, plan.width_rows), repeats=plan.repeats,
                    memory_epochs=1)


def time_points(workloads: Sequence[Workload],
                contenders: Sequence[Contender]) -> list[dict[str, float]]:
    """Seconds per epoch of every contender at every workload."""
    results = []
    for workload in workloads:
        X, y = make_data(workload)
        results.append(seconds_per_epoch(contenders, workload, X, y))
    return results


def run_scaling_timing(plan: ScalingPlan, contenders: Sequence[Contender]) -> ScalingResults:
    """Time every contender against rows and against width (memory is filled in later)."""
    results = ScalingResults(labels={c.key: c.label for c in contenders})
    row_times = time_points([rows_workload(plan, n) for n in plan.rows], contenders)
    results.by_rows = dict(zip(plan.rows, row_times, strict=True))
    width_times = time_points([width_workload(plan, w) for w in plan.widths], contenders)
    results.by_width = dict(zip(plan.widths, width_times, strict=True))
    return results


def memory_jobs(plan: ScalingPlan, keys: Sequence[str]) -> list[tuple[Workload, str]]:
    """(workload, contender key) pairs whose peak memory the rows study measures."""
    wanted = [k for k in plan.memory_keys if k in keys]
    return [(rows_workload(plan, n), key) for n in plan.rows for key in wanted]


def add_memory(results: ScalingResults, jobs: Sequence[tuple[Workload, str]],
               measured: Sequence[MemoryResult]) -> None:
    """Store the measured peaks of :func:`memory_jobs` in ``results``."""
    for (workload, key), memory in zip(jobs, measured, strict=True):
        results.memory_by_rows.setdefault(workload.n_rows, {})[key] = memory
