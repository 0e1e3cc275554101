"""Hidden-layer activations, keyed by the name used in the config.

An activation is a pair of functions on arrays of pre-activations ``z`` (any shape):

* ``forward(z) -> a``, the activation ``a = f(z)``;
* ``derivative(z, a) -> f'(z)``, given both ``z`` and ``a = f(z)`` because most derivatives
  are cheapest from the output (ReLU's is ``a > 0``, tanh's is ``1 - a**2``).

The training loop calls them through in-place methods (``forward_into``, ``scale_delta``,
``derivative_into``) that write into preallocated buffers. The built-ins implement those
directly, reading f'(z) from ``a`` alone, so the training loop can let A_l overwrite Z_l (one
buffer per hidden layer instead of two, and one pass less over memory); an activation added
with :func:`register_activation` gets them derived from its pure functions (correct, a little
slower, and it keeps its own Z buffer because its derivative may need z).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .validation import lookup

Array = npt.NDArray[np.floating]
Forward = Callable[[Array], Array]
Derivative = Callable[[Array, Array], Array]
ForwardInto = Callable[[Array, Array], None]
ScaleDelta = Callable[[Array, Array, Array, npt.NDArray[np.bool_]], None]
DerivativeInto = Callable[[Array, Array, Array], None]

LEAKY_RELU_SLOPE = 0.01


@dataclass(frozen=True)
class Activation:
    """One activation: the pure pair plus the in-place versions the training loop calls.

    forward_into(z, out):            out[...] = f(z)
    scale_delta(z, a, delta, mask):  delta *= f'(z), turning dLoss/dA into dLoss/dZ in place;
                                     ``mask`` is a boolean scratch array shaped like z
    derivative_into(z, a, out):      out[...] = f'(z)
    All arrays are (units, n_samples); ``out`` may be a view. ``in_place``: the three stay
    correct when z and a are one buffer, i.e. after forward_into(z, z) has replaced z by a.
    """

    name: str
    forward: Forward
    derivative: Derivative
    forward_into: ForwardInto = field(repr=False, compare=False)
    scale_delta: ScaleDelta = field(repr=False, compare=False)
    derivative_into: DerivativeInto = field(repr=False, compare=False)
    in_place: bool = False

    @classmethod
    def from_functions(cls, name: str, forward: Forward, derivative: Derivative) -> Activation:
        """An activation whose in-place versions call the pure functions (one temporary each)."""

        def forward_into(z: Array, out: Array) -> None:
            np.copyto(out, forward(z), casting="same_kind")

        def scale_delta(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
            np.multiply(delta, derivative(z, a), out=delta, casting="same_kind")

        def derivative_into(z: Array, a: Array, out: Array) -> None:
            np.copyto(out, derivative(z, a), casting="same_kind")

        return cls(name, forward, derivative, forward_into, scale_delta, derivative_into)


# ---- the built-ins: pure functions first, in-place versions after ----------------------------

def sigmoid(z: Array) -> Array:
    """1 / (1 + e^-z) without overflow: e^-|z| <= 1, so nothing is exponentiated upward."""
    t = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, t) / (1.0 + t)


def _relu(z: Array) -> Array:
    return np.maximum(z, 0.0)


def _relu_derivative(z: Array, a: Array) -> Array:
    return (z > 0.0).astype(z.dtype)


def _relu_into(z: Array, out: Array) -> None:
    np.maximum(z, 0.0, out=out)


def _relu_scale(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
    # a > 0 exactly where z > 0. Multiplying by a boolean mask is several times faster than
    # np.copyto(where=...) or np.where, and filling a preallocated mask avoids a temporary.
    np.greater(a, 0.0, out=mask)
    np.multiply(delta, mask, out=delta)


def _relu_derivative_into(z: Array, a: Array, out: Array) -> None:
    np.copyto(out, a > 0.0)  # faster than np.greater(a, 0.0, out=out) with a float out


def _leaky_relu(z: Array) -> Array:
    return np.where(z > 0.0, z, LEAKY_RELU_SLOPE * z)


def _leaky_relu_derivative(z: Array, a: Array) -> Array:
    return np.where(z > 0.0, 1.0, LEAKY_RELU_SLOPE).astype(z.dtype)


def _leaky_relu_into(z: Array, out: Array) -> None:
    # max(z, slope * z) since 0 < slope < 1; the product is a temporary so that out may be z
    np.maximum(z, np.multiply(z, LEAKY_RELU_SLOPE, dtype=z.dtype), out=out)


def _leaky_relu_scale(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
    np.greater(a, 0.0, out=mask)  # a > 0 exactly where z > 0
    np.multiply(delta, np.where(mask, 1.0, LEAKY_RELU_SLOPE), out=delta, casting="same_kind")


def _leaky_relu_derivative_into(z: Array, a: Array, out: Array) -> None:
    np.copyto(out, np.where(a > 0.0, 1.0, LEAKY_RELU_SLOPE), casting="same_kind")


def _tanh_derivative(z: Array, a: Array) -> Array:
    return 1.0 - a * a


def _tanh_into(z: Array, out: Array) -> None:
    np.tanh(z, out=out)


def _tanh_scale(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
    delta *= 1.0 - a * a


def _tanh_derivative_into(z: Array, a: Array, out: Array) -> None:
    np.multiply(a, a, out=out)
    np.subtract(1.0, out, out=out)


def _sigmoid_into(z: Array, out: Array) -> None:
    np.copyto(out, sigmoid(z), casting="same_kind")


def _sigmoid_derivative(z: Array, a: Array) -> Array:
    return a * (1.0 - a)


def _sigmoid_scale(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
    delta *= a * (1.0 - a)


def _sigmoid_derivative_into(z: Array, a: Array, out: Array) -> None:
    np.subtract(1.0, a, out=out)
    np.multiply(out, a, out=out)


def _identity_derivative_into(z: Array, a: Array, out: Array) -> None:
    out.fill(1.0)


def _identity(z: Array) -> Array:
    return np.array(z, copy=True)


def _identity_derivative(z: Array, a: Array) -> Array:
    return np.ones_like(z)


def _identity_into(z: Array, out: Array) -> None:
    np.copyto(out, z)


def _identity_scale(z: Array, a: Array, delta: Array, mask: npt.NDArray[np.bool_]) -> None:
    pass  # f'(z) = 1


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", _relu, _relu_derivative, _relu_into, _relu_scale,
                       _relu_derivative_into, in_place=True),
    "leaky_relu": Activation("leaky_relu", _leaky_relu, _leaky_relu_derivative,
                             _leaky_relu_into, _leaky_relu_scale, _leaky_relu_derivative_into,
                             in_place=True),
    "tanh": Activation("tanh", np.tanh, _tanh_derivative, _tanh_into, _tanh_scale,
                       _tanh_derivative_into, in_place=True),
    "sigmoid": Activation("sigmoid", sigmoid, _sigmoid_derivative, _sigmoid_into,
                          _sigmoid_scale, _sigmoid_derivative_into, in_place=True),
    "identity": Activation("identity", _identity, _identity_derivative, _identity_into,
                           _identity_scale, _identity_derivative_into, in_place=True),
}


def register_activation(name: str, forward: Forward, derivative: Derivative, *,
                        overwrite: bool = False) -> Activation:
    """Add an activation usable as ``hidden_activation=name``.

    forward(z) -> f(z) and derivative(z, a) -> f'(z) take and return arrays of z's shape,
    without modifying their inputs. Registering an existing name needs ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"an activation name must be a non-empty string, got {name!r}")
    if not callable(forward) or not callable(derivative):
        raise ValueError(f"activation {name!r}: forward and derivative must be callables")
    if name in ACTIVATIONS and not overwrite:
        raise ValueError(f"activation {name!r} is already registered; "
                         "pass overwrite=True to replace it")
    activation = Activation.from_functions(name, forward, derivative)
    ACTIVATIONS[name] = activation
    return activation


def get_activation(name: str) -> Activation:
    """The registered activation called ``name``; ValueError listing the valid names if none."""
    return lookup(ACTIVATIONS, "activation", name)
