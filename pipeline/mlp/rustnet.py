"""RustNet's Python API (``PyNeuralNetwork``) as a thin wrapper over MLP.

RustNet's behaviour: ReLU hidden layers, a sigmoid output, weights ~ U[-0.5, 0.5) and zero
biases, full-batch gradient descent on binary cross-entropy with every gradient clipped to
[-1, 1]. Here the weights are always drawn from a seeded Generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from .model import MLP


class PyNeuralNetwork:
    """``PyNeuralNetwork([n_inputs, hidden..., 1])``, trained and used like RustNet's."""

    def __init__(self, layer_sizes: Sequence[int], seed: int = 0) -> None:
        self.model = MLP(layer_sizes, hidden_activation="relu", output="sigmoid",
                         init="uniform", seed=seed)

    def train(self, inputs: Any, targets: Any, learning_rate: float, epochs: int) -> list[float]:
        """Full-batch SGD for ``epochs`` more epochs; returns the MSE of each epoch.

        inputs: (n_samples, n_inputs); targets: (n_samples,) or (n_samples, 1) of 0/1.
        """
        history = self.model.train(inputs, targets, learning_rate=learning_rate, epochs=epochs,
                                   optimizer="sgd", clip="value", clip_value=1.0)
        return history.metrics["train_mse"]

    def predict(self, inputs: Any) -> npt.NDArray[np.floating]:
        """Probabilities P(y = 1): (n_samples, 1)."""
        return self.model.predict_proba(inputs)

    def save(self, path: str | PathLike[str]) -> None:
        """Write a JSON checkpoint (MLP's format)."""
        self.model.save(path)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> PyNeuralNetwork:
        """Read a checkpoint written by ``save`` (or by ``MLP.save``)."""
        net = cls.__new__(cls)
        net.model = MLP.load(path)
        return net

    def __repr__(self) -> str:
        return f"PyNeuralNetwork({list(self.model.layer_sizes)})"
