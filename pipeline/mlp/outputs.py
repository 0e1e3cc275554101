"""Output layers with their losses, keyed by the name used in the config.

Each pairs an output activation with the cross-entropy it is trained on. For both pairs the
gradient of the loss with respect to the logits is simply ``P - Y`` (probabilities minus
targets), which is why the last layer's error signal needs no activation derivative:

* ``sigmoid``: one unit, P = sigmoid(z), binary cross-entropy, targets y in {0, 1};
* ``softmax``: k >= 2 units, P = softmax(z), categorical cross-entropy, one-hot targets.

Arrays are features-by-samples: logits ``z`` and probabilities are (k, n_samples). The loss is
always computed from the logits (softplus / logsumexp), so it never takes log(0).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from .activations import sigmoid
from .validation import lookup

Array = npt.NDArray[np.floating]
Labels = npt.NDArray[np.int64]

# (sum of losses, sum of squared errors (P - Y)^2, number of correctly classified samples)
BatchSums = tuple[float, float, int]

# sum(log(u)) for u in [1, 2] is computed as the log of products of up to _PRODUCT_BLOCK
# factors: at most 2**1000 < 1.8e308, so a float64 product cannot overflow, and its relative
# error (<= 1000 roundings, ~1e-13) is far below what the loss needs. One log per block
# instead of one per sample: a transcendental pass costs as much as several plain ones.
_PRODUCT_BLOCK = 1000


def _sum_log(u: Array) -> float:
    """sum(log(u)) for u: any shape, values in [1, 2]."""
    if u.size <= _PRODUCT_BLOCK:  # axis=None: no flattened view to make
        return math.log(np.multiply.reduce(u, axis=None, dtype=np.float64))
    flat = u.reshape(-1)
    whole = flat.size - flat.size % _PRODUCT_BLOCK
    total = 0.0
    if whole:
        blocks = flat[:whole].reshape(-1, _PRODUCT_BLOCK)
        total += float(np.add.reduce(np.log(np.multiply.reduce(blocks, axis=1,
                                                               dtype=np.float64))))
    if whole < flat.size:
        total += math.log(float(np.multiply.reduce(flat[whole:], dtype=np.float64)))
    return total


class OutputLayer:
    """Interface of an output layer + loss pair; see the two implementations below."""

    name: ClassVar[str]

    def check_units(self, k: int) -> None:
        """Raise ValueError unless the last layer's size ``k`` suits this output."""
        raise NotImplementedError

    def n_classes(self, k: int) -> int:
        """Number of classes a last layer of ``k`` units predicts."""
        raise NotImplementedError

    def encode_targets(self, labels: Labels, k: int, dtype: np.dtype) -> Array:
        """Targets in the form ``loss_and_delta`` wants: (k, n_samples)."""
        raise NotImplementedError

    def probabilities(self, z: Array) -> Array:
        """P: (k, n_samples) from logits z: (k, n_samples); a new array."""
        raise NotImplementedError

    def loss_and_delta(self, z: Array, targets: Array, delta: Array, scratch: Array) -> BatchSums:
        """Fill ``delta`` with P - Y and return the batch's summed loss, squared error, hits.

        z, targets, delta, scratch: (k, n_samples); ``scratch`` may be clobbered. A hit is a
        sample that ``labels`` (below) classifies correctly at threshold 1/2, up to floating
        point ties (see the implementations).
        """
        raise NotImplementedError

    def labels(self, proba: Array, threshold: float) -> Labels:
        """Predicted class per sample from proba: (n_samples, k) -> (n_samples,)."""
        raise NotImplementedError


class SigmoidCrossEntropy(OutputLayer):
    """One sigmoid unit trained on binary cross-entropy: loss = softplus(z) - y z."""

    name = "sigmoid"

    def check_units(self, k: int) -> None:
        if k != 1:
            raise ValueError(f"output='sigmoid' needs 1 unit in the last layer, got "
                             f"layer_sizes[-1]={k}; use output='softmax' for {k} classes")

    def n_classes(self, k: int) -> int:
        return 2

    def encode_targets(self, labels: Labels, k: int, dtype: np.dtype) -> Array:
        # Stored as c = 1/2 - y: loss_and_delta turns it into [z > 0] - y in two calls.
        return (0.5 - labels.astype(dtype))[None, :]

    def probabilities(self, z: Array) -> Array:
        return sigmoid(z)

    def loss_and_delta(self, z: Array, targets: Array, delta: Array, scratch: Array) -> BatchSums:
        # One exp and one log (per block of samples, see _sum_log) give the loss, the gradient
        # and the metrics, via t = e^-|z| (<= 1: no overflow) and w = [z > 0] - y:
        #   softplus(z) - y z = log(1 + t) + max(z, 0) - y z = log(1 + t) + w z
        #   sigmoid(z) - y    = w - sign(z) t / (1 + t),   t / (1 + t) = sigmoid(-|z|)
        # and w = 0 exactly when the logit is on y's side of 0 (a correct prediction).
        # With targets c = 1/2 - y (|c| = 1/2): w = copysign(c, z) + c, exactly.
        t = scratch
        np.abs(z, out=t)
        np.negative(t, out=t)
        np.exp(t, out=t)  # t = e^-|z|
        np.add(t, 1.0, out=delta)  # 1 + t, in [1, 2]; delta is free until the end
        # _sum_log(delta), its one-block case inlined (a Python call is ~1% of a small epoch)
        log_sum = (math.log(np.multiply.reduce(delta, axis=None, dtype=np.float64))
                   if delta.size <= _PRODUCT_BLOCK else _sum_log(delta))
        np.divide(t, delta, out=t)  # sigmoid(-|z|)
        np.copysign(targets, z, out=delta)
        np.add(delta, targets, out=delta)  # w = [z > 0] - y, in {-1, 0, 1}
        loss_sum = log_sum + float(np.vdot(delta, z))
        n_correct = z.size - int(np.count_nonzero(delta))
        np.copysign(t, z, out=t)
        np.subtract(delta, t, out=delta)  # sigmoid(z) - y
        sq_sum = float(np.vdot(delta, delta))
        return loss_sum, sq_sum, n_correct

    def labels(self, proba: Array, threshold: float) -> Labels:
        # p > 1/2 exactly when z > 0, except for |z| below ~1e-16 where p rounds to 1/2 (class
        # 0 here, while loss_and_delta counts a logit of +0 as class 1).
        return (proba[:, 0] > threshold).astype(np.int64)


class SoftmaxCrossEntropy(OutputLayer):
    """k softmax units trained on categorical cross-entropy: loss = logsumexp(z) - z_y."""

    name = "softmax"

    def check_units(self, k: int) -> None:
        if k < 2:
            raise ValueError(f"output='softmax' needs at least 2 units in the last layer, got "
                             f"layer_sizes[-1]={k}; use output='sigmoid' for a binary problem")

    def n_classes(self, k: int) -> int:
        return k

    def encode_targets(self, labels: Labels, k: int, dtype: np.dtype) -> Array:
        onehot = np.zeros((k, labels.size), dtype=dtype)
        onehot[labels, np.arange(labels.size)] = 1.0
        return onehot

    def probabilities(self, z: Array) -> Array:
        e = np.exp(z - z.max(axis=0, keepdims=True))
        e /= e.sum(axis=0, keepdims=True)
        return e

    def loss_and_delta(self, z: Array, targets: Array, delta: Array, scratch: Array) -> BatchSums:
        # logsumexp(z) = m + log(sum(e^(z - m))) with m = max(z): every exponent is <= 0 and
        # the sum is >= 1, so neither exp nor log can overflow or see 0.
        m = z.max(axis=0, keepdims=True)
        np.subtract(z, m, out=delta)
        np.exp(delta, out=delta)
        s = np.add.reduce(delta, axis=0, keepdims=True)
        loss_sum = (float(np.add.reduce(m, axis=None)) + float(np.add.reduce(np.log(s), axis=None))
                    - float(np.vdot(targets, z)))
        np.divide(delta, s, out=delta)  # P
        n_correct = int(np.count_nonzero(delta.argmax(axis=0) == targets.argmax(axis=0)))
        np.subtract(delta, targets, out=delta)  # P - Y
        sq_sum = float(np.vdot(delta, delta))
        return loss_sum, sq_sum, n_correct

    def labels(self, proba: Array, threshold: float) -> Labels:
        return proba.argmax(axis=1).astype(np.int64)


OUTPUTS: dict[str, OutputLayer] = {
    "sigmoid": SigmoidCrossEntropy(),
    "softmax": SoftmaxCrossEntropy(),
}


def get_output(name: str) -> OutputLayer:
    """The output layer called ``name``; ValueError listing the valid names if none."""
    return lookup(OUTPUTS, "output", name)
