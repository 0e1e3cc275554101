"""Correctness: the core and the yardstick, from the same initial weights, end up with the
same weights on W1 (RustNet's RF task)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bench import yardstick
from bench.workloads import Workload, make_data

TOLERANCE = 1e-10


@dataclass(frozen=True)
class Agreement:
    """Largest |core − yardstick| over all final weights and biases, and how far the weights
    moved from their initial values (to show that training did something)."""

    epochs: int
    max_difference: float
    max_movement: float

    @property
    def passed(self) -> bool:
        """Within ~1e-10 and the weights actually moved."""
        return self.max_difference <= TOLERANCE and self.max_movement > 100 * TOLERANCE

    def line(self) -> str:
        """One Markdown line stating the result."""
        verdict = "PASS" if self.passed else "FAIL"
        return (f"- Correctness, W1 after {self.epochs} epochs from the core's initial "
                f"weights: max |core − yardstick| over W, b = {self.max_difference:.1e} "
                f"(tolerance {TOLERANCE:.0e}; the weights moved by up to "
                f"{self.max_movement:.2g}): **{verdict}**")


def core_matches_yardstick(workload: Workload, epochs: int) -> Agreement:
    """Train the core and the yardstick for ``epochs`` full-batch epochs from the core's
    initial weights (copied) on ``workload``'s data and compare the final parameters."""
    from pipeline.mlp import MLP

    X, y = make_data(workload)
    model = MLP(list(workload.layer_sizes), hidden_activation="relu", output="sigmoid",
                init="uniform", dtype="float64", seed=0)
    initial = [np.array(w, dtype=np.float64) for w in model.weights]
    weights = [w.copy() for w in initial]
    biases = [np.array(b, dtype=np.float64).reshape(1, -1) for b in model.biases]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the core's "loss still falling" ConvergenceWarning
        model.train(X, y, learning_rate=workload.learning_rate, epochs=epochs,
                    batch_size=None, optimizer="sgd", clip="value", clip_value=1.0)
    yardstick.train(X, y, weights, biases, learning_rate=workload.learning_rate, epochs=epochs)
    pairs = [*zip(model.weights, weights, strict=True), *zip(model.biases, biases, strict=True)]
    difference = max(float(np.max(np.abs(np.reshape(c, r.shape) - r))) for c, r in pairs)
    movement = max(float(np.max(np.abs(w - w0))) for w, w0 in zip(weights, initial, strict=True))
    return Agreement(epochs, difference, movement)
