"""The benchmark's workloads and the data they train on.

Every workload is a binary classification task for an MLP with ReLU hidden layers and one
sigmoid output, trained with plain SGD and element-wise gradient clipping to [-1, 1].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Workload:
    """One timed training job.

    ``batch_size`` None means full batch. ``data`` is "rf" (RustNet's RF task) or "random"
    (standard-normal rows with a noisy linear label). ``repeats``: timed runs, best one kept.
    ``memory_epochs``: epochs run in the subprocess that measures peak memory.
    """

    name: str
    layer_sizes: tuple[int, ...]
    n_rows: int
    epochs: int
    batch_size: int | None = None
    dtype: str = "float64"
    learning_rate: float = 0.01
    data: str = "random"
    repeats: int = 3
    memory_epochs: int = 2

    @property
    def title(self) -> str:
        """The workload's name plus its dtype when that is not float64, e.g. "W3 f32"."""
        return self.name if self.dtype == "float64" else f"{self.name} f{self.dtype[-2:]}"

    @property
    def rows_per_batch(self) -> int:
        """Rows in one (full) batch."""
        return self.n_rows if self.batch_size is None else min(self.batch_size, self.n_rows)

    @property
    def itemsize(self) -> int:
        """Bytes per element of the workload's dtype."""
        return np.dtype(self.dtype).itemsize

    def with_(self, **changes: object) -> Workload:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]


def standard_workloads(quick: bool = False) -> list[Workload]:
    """W1, W2, W3 (float64 and float32), shortened when ``quick``."""
    w1 = Workload("W1", (2, 12, 1), 800, epochs=3000, learning_rate=0.003, data="rf",
                  repeats=3, memory_epochs=5)
    w2 = Workload("W2", (32, 64, 32, 1), 20_000, epochs=200, repeats=2, memory_epochs=2)
    w3 = Workload("W3", (64, 256, 128, 1), 200_000, epochs=2, batch_size=1024, repeats=3,
                  memory_epochs=1)
    if quick:
        w1 = w1.with_(epochs=1000, repeats=2, memory_epochs=2)
        w2 = w2.with_(epochs=5, repeats=1)
        w3 = w3.with_(n_rows=10_000, epochs=1, repeats=1)
    return [w1, w2, w3, w3.with_(dtype="float32")]


def rf_task() -> tuple[Array, Labels]:
    """RustNet's RF training rows: X (800, 2) z-scored, y (800,) of 0/1.

    Frequency = linspace(0, 100, 1000); Amplitude = sin(F) + default_rng(42).normal(0, 0.1);
    label = Amplitude > 0; rows shuffled with default_rng(7), the first 800 kept, then each
    column z-scored with the training rows' mean and population std.
    """
    frequency = np.linspace(0.0, 100.0, 1000)
    amplitude = np.sin(frequency) + np.random.default_rng(42).normal(0.0, 0.1, 1000)
    label = (amplitude > 0).astype(np.int64)
    order = np.arange(1000)
    np.random.default_rng(7).shuffle(order)
    train = order[:800]
    X = np.column_stack([frequency, amplitude])[train]
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, label[train]


def random_task(n_rows: int, n_features: int, dtype: str = "float64",
                seed: int = 0) -> tuple[Array, Labels]:
    """Standard-normal X (n_rows, n_features) and y = [X·w + noise > 0] (n_rows,)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_rows, n_features), dtype=np.dtype(dtype).type)
    w = rng.standard_normal(n_features).astype(dtype)
    noise = rng.standard_normal(n_rows, dtype=np.dtype(dtype).type)
    y = (X @ w + noise > 0).astype(np.int64)
    return X, y


def make_data(workload: Workload) -> tuple[Array, Labels]:
    """The workload's training rows, X in its dtype, C-contiguous, and labels y."""
    if workload.data == "rf":
        X, y = rf_task()
        X, y = X[: workload.n_rows], y[: workload.n_rows]
    else:
        X, y = random_task(workload.n_rows, workload.layer_sizes[0], workload.dtype)
    return np.ascontiguousarray(X, dtype=workload.dtype), y


def data_bytes(workload: Workload) -> int:
    """Size of the training data: X in the workload's dtype plus int64 labels."""
    return workload.n_rows * (workload.layer_sizes[0] * workload.itemsize + 8)


def activation_bytes(workload: Workload) -> int:
    """Size of one batch's activations: Z and A of every layer, rows_per_batch rows."""
    units = sum(workload.layer_sizes[1:])
    return 2 * workload.rows_per_batch * units * workload.itemsize


def flops_per_epoch(layer_sizes: tuple[int, ...], n_rows: int) -> float:
    """Matmul flops of one epoch: forward, weight gradients, and all but the input's delta."""
    pairs = list(itertools.pairwise(layer_sizes))
    per_row = sum(2 * a * b for a, b in pairs)
    return float(n_rows) * (3 * per_row - 2 * pairs[0][0] * pairs[0][1])
