"""The yardstick: a plain textbook NumPy training loop with RustNet's maths.

Weights W: (in, out), biases b: (1, out), rows-by-features data. One operation per line, no
preallocation, no fusing; this is what a careful person writes in an afternoon:

    forward:  Z = A_prev · W + b;  A = relu(Z) (hidden) or sigmoid(Z) (output)
    loss:     MSE = mean((A_out − Y)²), every epoch
    backward: dZ = A_out − Y;  dW = A_prevᵀ · dZ / n;  db = mean(dZ);  dA_prev = dZ · Wᵀ
              (W before its update);  dZ_prev = dA_prev ⊙ [Z_prev > 0]
    update:   dW, db clipped element-wise to [−c, c];  W −= lr·dW;  b −= lr·db

Mini-batches (when ``batch_size`` is set) come from a fresh permutation every epoch; the last
batch may be smaller.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.floating]


def initial_parameters(layer_sizes: Sequence[int], dtype: str = "float64",
                       seed: int = 0) -> tuple[list[Array], list[Array]]:
    """RustNet's init: W ~ U[-0.5, 0.5) of shape (in, out), b = 0 of shape (1, out)."""
    rng = np.random.default_rng(seed)
    pairs = itertools.pairwise(layer_sizes)
    weights = [rng.uniform(-0.5, 0.5, size=(a, b)).astype(dtype) for a, b in pairs]
    biases = [np.zeros((1, w.shape[1]), dtype=dtype) for w in weights]
    return weights, biases


def sigmoid(z: Array) -> Array:
    """1 / (1 + e^−z)."""
    return 1.0 / (1.0 + np.exp(-z))


def train_step(X: Array, Y: Array, weights: list[Array], biases: list[Array],
               learning_rate: float, clip_value: float) -> float:
    """One gradient step on the rows X (m, d), targets Y (m, 1); returns the batch's MSE.

    Updates ``weights`` and ``biases`` in place.
    """
    m = X.shape[0]
    n_layers = len(weights)
    inputs = []
    pre_activations = []
    A = X
    for layer in range(n_layers):
        inputs.append(A)
        Z = A @ weights[layer]
        Z = Z + biases[layer]
        pre_activations.append(Z)
        A = np.maximum(Z, 0.0) if layer < n_layers - 1 else sigmoid(Z)
    error = A - Y
    mse = float(np.mean(error**2))
    dZ = error
    for layer in reversed(range(n_layers)):
        dW = inputs[layer].T @ dZ
        dW = dW / m
        db = np.mean(dZ, axis=0, keepdims=True)
        if layer > 0:
            dA = dZ @ weights[layer].T
            dZ = dA * (pre_activations[layer - 1] > 0)
        dW = np.clip(dW, -clip_value, clip_value)
        db = np.clip(db, -clip_value, clip_value)
        weights[layer] -= learning_rate * dW
        biases[layer] -= learning_rate * db
    return mse


def train(X: Array, y: npt.ArrayLike, weights: list[Array], biases: list[Array], *,
          learning_rate: float, epochs: int, batch_size: int | None = None,
          clip_value: float = 1.0, seed: int = 0) -> list[float]:
    """Train in place for ``epochs``; returns the MSE of every epoch.

    X: (n, d); y: (n,) of 0/1 (cast to X's dtype); full batch when ``batch_size`` is None.
    """
    Y = np.asarray(y, dtype=X.dtype).reshape(-1, 1)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        if batch_size is None or batch_size >= n:
            mse = train_step(X, Y, weights, biases, learning_rate, clip_value)
        else:
            order = rng.permutation(n)
            total = 0.0
            for start in range(0, n, batch_size):
                rows = order[start:start + batch_size]
                batch_mse = train_step(X[rows], Y[rows], weights, biases, learning_rate,
                                       clip_value)
                total += batch_mse * len(rows)
            mse = total / n
        history.append(mse)
    return history
