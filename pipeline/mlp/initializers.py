"""Weight initialisation schemes, keyed by the name used in the config.

Each scheme draws one weight matrix W: (fan_in, fan_out) from the Generator it is given; biases
always start at zero. Draws are made in float64 (then cast to the model's dtype), layer by
layer in order, so a seed gives the same weights in both dtypes up to rounding.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from .validation import lookup

Initializer = Callable[[np.random.Generator, int, int], npt.NDArray[np.float64]]


def uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> npt.NDArray[np.float64]:
    """RustNet's scheme: W ~ U[-0.5, 0.5)."""
    return rng.uniform(-0.5, 0.5, size=(fan_in, fan_out))


def he(rng: np.random.Generator, fan_in: int, fan_out: int) -> npt.NDArray[np.float64]:
    """He et al. (2015), for ReLU layers: W ~ N(0, 2 / fan_in)."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def xavier(rng: np.random.Generator, fan_in: int, fan_out: int) -> npt.NDArray[np.float64]:
    """Glorot & Bengio (2010), uniform: W ~ U[-b, b) with b = sqrt(6 / (fan_in + fan_out))."""
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=(fan_in, fan_out))


INITIALIZERS: dict[str, Initializer] = {"uniform": uniform, "he": he, "xavier": xavier}


def get_initializer(name: str) -> Initializer:
    """The scheme called ``name``; ValueError listing the valid names if none."""
    return lookup(INITIALIZERS, "init", name)


def initial_weights(name: str, layer_sizes: Sequence[int],
                    seed: int) -> list[npt.NDArray[np.float64]]:
    """One W: (layer_sizes[l], layer_sizes[l + 1]) per layer, from default_rng(seed)."""
    draw = get_initializer(name)
    rng = np.random.default_rng(seed)
    return [draw(rng, fan_in, fan_out) for fan_in, fan_out in itertools.pairwise(layer_sizes)]
