"""Bare ``np.matmul`` time of one epoch: the floor any NumPy MLP of those shapes sits on.

For a batch of m rows and layers s0 → s1 → … → sL the matmuls of one training step are
(rows-by-features layout, W: (in, out)):

* forward, every layer l:          A_l (m, s_l) · W_l (s_l, s_l+1)
* weight gradient, every layer l:  A_lᵀ (s_l, m) · dZ_l (m, s_l+1)   (transposed view)
* delta, every layer l > 0:        dZ_l (m, s_l+1) · W_lᵀ (s_l+1, s_l) (transposed view)

They are timed in a loop with preallocated outputs (``np.matmul(a, b, out=c)``), best of a
few repeats, then scaled to the epoch's full batches plus its last, smaller batch.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence

import numpy as np

from bench.workloads import Array

MatmulOp = tuple[Array, Array, Array]  # a, b, preallocated out


def step_matmuls(layer_sizes: Sequence[int], rows: int, dtype: str,
                 seed: int = 0) -> list[MatmulOp]:
    """Operands and outputs of the matmuls of one training step on ``rows`` rows."""
    rng = np.random.default_rng(seed)

    def random(*shape: int) -> Array:
        return rng.standard_normal(shape).astype(dtype)

    def empty(*shape: int) -> Array:
        return np.empty(shape, dtype=dtype)

    ops: list[MatmulOp] = []
    pairs = list(itertools.pairwise(layer_sizes))
    for fan_in, fan_out in pairs:
        ops.append((random(rows, fan_in), random(fan_in, fan_out), empty(rows, fan_out)))
    for layer, (fan_in, fan_out) in reversed(list(enumerate(pairs))):
        delta = random(rows, fan_out)
        ops.append((random(rows, fan_in).T, delta, empty(fan_in, fan_out)))
        if layer > 0:
            ops.append((delta, random(fan_in, fan_out).T, empty(rows, fan_in)))
    return ops


def run_ops(ops: Sequence[MatmulOp], iterations: int) -> float:
    """Seconds for ``iterations`` passes over ``ops``."""
    start = time.perf_counter()
    for _ in range(iterations):
        for a, b, out in ops:
            np.matmul(a, b, out=out)
    return time.perf_counter() - start


def seconds_per_step(ops: Sequence[MatmulOp], target: float = 0.1, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one pass over ``ops``, each repeat lasting ~``target``."""
    once = max(run_ops(ops, 1), 1e-7)
    iterations = max(1, min(100_000, math.ceil(target / once)))
    return min(run_ops(ops, iterations) for _ in range(repeats)) / iterations


def matmul_seconds_per_epoch(layer_sizes: Sequence[int], n_rows: int, batch_size: int | None,
                             dtype: str, target: float = 0.1) -> float:
    """Bare matmul seconds of one epoch: n_rows // batch full steps plus the remainder's."""
    batch = n_rows if batch_size is None else min(batch_size, n_rows)
    full, rest = divmod(n_rows, batch)
    total = full * seconds_per_step(step_matmuls(layer_sizes, batch, dtype), target)
    if rest:
        total += seconds_per_step(step_matmuls(layer_sizes, rest, dtype), target)
    return total
