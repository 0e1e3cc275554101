"""The contenders: the project core, the yardstick, scikit-learn and PyTorch.

Each contender has a ``prepare(workload, X, y, epochs)`` that builds a fresh model (untimed)
and returns ``run()``, which trains it for ``epochs`` epochs on X (n, d), y (n,) of 0/1 (timed).
Optional libraries are imported lazily; :func:`load_contenders` skips those that are missing.
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bench import yardstick
from bench.workloads import Array, Labels, Workload

Run = Callable[[], object]
Prepare = Callable[[Workload, Array, Labels, int], Run]

CLIP_VALUE = 1.0
ALL_KEYS = ("core", "yardstick", "sklearn", "torch")


@dataclass(frozen=True)
class Contender:
    """A named way to train an MLP; ``key`` is one of ALL_KEYS."""

    key: str
    label: str
    prepare: Prepare


def prepare_core(workload: Workload, X: Array, y: Labels, epochs: int) -> Run:
    """``pipeline.mlp.MLP`` with RustNet's settings: uniform init, sgd, value clip 1."""
    from pipeline.mlp import MLP

    model = MLP(list(workload.layer_sizes), hidden_activation="relu", output="sigmoid",
                init="uniform", dtype=workload.dtype, seed=0)

    def run() -> object:
        return model.train(X, y, learning_rate=workload.learning_rate, epochs=epochs,
                           batch_size=workload.batch_size, optimizer="sgd", clip="value",
                           clip_value=CLIP_VALUE)

    return run


def prepare_yardstick(workload: Workload, X: Array, y: Labels, epochs: int) -> Run:
    """The textbook NumPy loop of :mod:`bench.yardstick`."""
    weights, biases = yardstick.initial_parameters(workload.layer_sizes, workload.dtype)

    def run() -> object:
        return yardstick.train(X, y, weights, biases, learning_rate=workload.learning_rate,
                               epochs=epochs, batch_size=workload.batch_size,
                               clip_value=CLIP_VALUE)

    return run


def sklearn_classifier(workload: Workload, n_rows: int, epochs: int) -> object:
    """``MLPClassifier`` doing plain SGD for exactly ``epochs`` epochs (no clipping there)."""
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=workload.layer_sizes[1:-1], activation="relu", solver="sgd",
        momentum=0.0, nesterovs_momentum=False, learning_rate_init=workload.learning_rate,
        batch_size=workload.batch_size or n_rows, alpha=0.0, max_iter=epochs, tol=0.0,
        n_iter_no_change=10**9, shuffle=workload.batch_size is not None, random_state=0,
    )


def prepare_sklearn(workload: Workload, X: Array, y: Labels, epochs: int) -> Run:
    """scikit-learn's ``fit``; its ConvergenceWarning is silenced by the timer."""
    classifier = sklearn_classifier(workload, X.shape[0], epochs)
    return lambda: classifier.fit(X, y)  # type: ignore[attr-defined]


def torch_model(layer_sizes: Sequence[int], dtype: str) -> object:
    """nn.Sequential of Linear layers with ReLU between them (logits out)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    pairs = list(itertools.pairwise(layer_sizes))
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(pairs):
        layers.append(nn.Linear(fan_in, fan_out, dtype=getattr(torch, dtype)))
        if index < len(pairs) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def prepare_torch(workload: Workload, X: Array, y: Labels, epochs: int) -> Run:
    """A manual PyTorch CPU loop: BCEWithLogits, SGD, clip_grad_value_, per-epoch loss."""
    import torch
    from torch import nn

    model = torch_model(workload.layer_sizes, workload.dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=workload.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    X_t = torch.from_numpy(X)
    Y_t = torch.from_numpy(np.asarray(y, dtype=workload.dtype).reshape(-1, 1))
    n = X.shape[0]
    batch = workload.batch_size or n
    generator = torch.Generator().manual_seed(0)

    def step(xb: torch.Tensor, yb: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        nn.utils.clip_grad_value_(model.parameters(), CLIP_VALUE)
        optimizer.step()
        return loss.item()

    def run() -> object:
        history = []
        for _ in range(epochs):
            if batch >= n:
                history.append(step(X_t, Y_t))
                continue
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, batch):
                rows = order[start:start + batch]
                total += step(X_t[rows], Y_t[rows]) * len(rows)
            history.append(total / n)
        return history

    return run


_SPECS: dict[str, tuple[str, str, Prepare]] = {
    "core": ("core (pipeline.mlp)", "pipeline.mlp", prepare_core),
    "yardstick": ("yardstick (textbook NumPy)", "numpy", prepare_yardstick),
    "sklearn": ("scikit-learn MLPClassifier", "sklearn.neural_network", prepare_sklearn),
    "torch": ("PyTorch CPU", "torch", prepare_torch),
}


def unavailable_reason(key: str) -> str | None:
    """None when contender ``key`` can run here, else why not (one line)."""
    module = _SPECS[key][1]
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # an engineer's half-written core may raise anything
        return f"{module} is not importable ({type(error).__name__}: {error})"
    if key == "core" and not hasattr(imported, "MLP"):
        return "pipeline.mlp has no MLP yet"
    return None


def load_contenders(keys: Sequence[str] = ALL_KEYS) -> tuple[list[Contender], list[str]]:
    """The contenders among ``keys`` that can run here, and a note for each skipped one."""
    contenders, notes = [], []
    for key in keys:
        reason = unavailable_reason(key)
        if reason is None:
            label, _, prepare = _SPECS[key]
            contenders.append(Contender(key, label, prepare))
        else:
            notes.append(f"{key} skipped: {reason}")
    return contenders, notes
