"""Train stage: build the MLP for the data and fit it. No tracking here.

The runner passes the training settings (a ``TrainSettings``, built once from the validated
config) and callbacks (metric logging, checkpoints, a progress bar); this stage only knows
the core's API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.mlp import MLP, History, TrainSettings, fit
from stages.dataset import Dataset


@dataclass(frozen=True)
class TrainResult:
    model: MLP
    history: History


@dataclass(frozen=True)
class Architecture:
    """What fixes a model's function and numerics: sizes, activations, output, dtype.

    ``init`` and ``seed`` are not part of it: they only draw the starting weights.
    """

    layer_sizes: tuple[int, ...]  # [n_features, *hidden_sizes, n_outputs]
    activations: tuple[str, ...]  # one per hidden layer
    output: str  # "sigmoid" or "softmax"
    dtype: str

    @classmethod
    def of(cls, model: MLP) -> Architecture:
        return cls(tuple(model.layer_sizes), tuple(model.activations), model.output,
                   model.dtype)

    @property
    def hidden_sizes(self) -> list[int]:
        return list(self.layer_sizes[1:-1])

    def __str__(self) -> str:
        hidden = zip(self.layer_sizes[1:-1], self.activations, strict=True)
        arrows = " -> ".join([f"{self.layer_sizes[0]}"]
                             + [f"{units} {act}" for units, act in hidden]
                             + [f"{self.layer_sizes[-1]} {self.output}"])
        return f"{arrows} ({self.dtype})"


def plan_architecture(
    n_features: int,
    n_classes: int,
    *,
    hidden_sizes: Sequence[int],
    activation: str | Sequence[str] = "relu",
    output: str = "auto",
    dtype: str = "float64",
) -> Architecture:
    """The architecture ``build_model`` gives for these settings (nothing is allocated):
    ``[n_features, *hidden_sizes, out]``, out = 1 (sigmoid) or n_classes (softmax)."""
    if output == "auto":
        output = "sigmoid" if n_classes == 2 else "softmax"
    out_units = 1 if output == "sigmoid" else n_classes
    names = ((activation,) * len(hidden_sizes) if isinstance(activation, str)
             else tuple(activation))
    return Architecture((n_features, *hidden_sizes, out_units), names, output, dtype)


def build_model(
    n_features: int,
    n_classes: int,
    *,
    hidden_sizes: Sequence[int],
    activation: str | Sequence[str] = "relu",
    output: str = "auto",
    init: str = "uniform",
    dtype: str = "float64",
    seed: int = 0,
) -> MLP:
    """An MLP ``[n_features, *hidden_sizes, out]``: out = 1 (sigmoid) or n_classes (softmax)."""
    plan = plan_architecture(n_features, n_classes, hidden_sizes=hidden_sizes,
                             activation=activation, output=output, dtype=dtype)
    return MLP(
        list(plan.layer_sizes),
        hidden_activation=activation if isinstance(activation, str) else list(activation),
        output=plan.output,
        init=init,
        dtype=dtype,
        seed=seed,
    )


def train_model(
    model: MLP,
    train: Dataset,
    val: Dataset | None,
    settings: TrainSettings,
    *,
    callbacks: Sequence[Callable[[int, dict[str, float], MLP], Any]] = (),
) -> TrainResult:
    """Fit ``model`` on ``train`` (X: (n, d), y: (n,)) with ``settings``, validating on ``val``
    when it has samples."""
    validation = (val.X, val.y) if val is not None and val.n_samples else None
    history = fit(model, train.X, train.y, settings, validation=validation, callbacks=callbacks)
    return TrainResult(model=model, history=history)
