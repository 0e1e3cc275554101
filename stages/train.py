"""Train stage: build the MLP for the data and fit it. No tracking here.

The runner passes callbacks (metric logging, checkpoints, a progress bar); this
stage only knows the core's API.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.mlp import MLP, History
from stages.dataset import Dataset


@dataclass(frozen=True)
class TrainResult:
    model: MLP
    history: History


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
    if output == "auto":
        output = "sigmoid" if n_classes == 2 else "softmax"
    out_units = 1 if output == "sigmoid" else n_classes
    return MLP(
        [n_features, *hidden_sizes, out_units],
        hidden_activation=activation if isinstance(activation, str) else list(activation),
        output=output,
        init=init,
        dtype=dtype,
        seed=seed,
    )


def train_model(
    model: MLP,
    train: Dataset,
    val: Dataset | None,
    *,
    learning_rate: float,
    epochs: int,
    batch_size: int | None = None,
    optimizer: str = "sgd",
    optimizer_options: Mapping[str, Any] | None = None,
    weight_decay: float = 0.0,
    clip: str = "value",
    clip_value: float = 1.0,
    early_stopping_patience: int | None = None,
    shuffle_seed: int | None = None,
    callbacks: Sequence[Callable[..., Any]] = (),
    resume: bool = False,
) -> TrainResult:
    """Fit ``model`` on ``train`` (X: (n, d), y: (n,)), validating on ``val`` when given."""
    history = model.train(
        train.X,
        train.y,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        optimizer_options=dict(optimizer_options or {}),
        weight_decay=weight_decay,
        clip=clip,
        clip_value=clip_value,
        validation=(val.X, val.y) if val is not None and val.n_samples else None,
        early_stopping_patience=early_stopping_patience,
        shuffle_seed=shuffle_seed,
        callbacks=callbacks,
        resume=resume,
    )
    return TrainResult(model=model, history=history)
