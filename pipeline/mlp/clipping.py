"""Gradient clipping strategies, keyed by the name used in the config.

Each works in place on the flat vector of all gradients (see network.ParameterLayout), so one
call covers the whole network.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from .validation import lookup

Array = npt.NDArray[np.floating]
Clipper = Callable[[Array, float], None]


def clip_by_value(grads: Array, limit: float) -> None:
    """Each element into [-limit, limit] (RustNet: limit = 1)."""
    np.minimum(grads, limit, out=grads)  # two ufuncs beat np.clip's Python wrapper
    np.maximum(grads, -limit, out=grads)


def global_norm(grads: Array) -> float:
    """sqrt(sum g^2) over all gradients, without overflowing on huge (finite) values."""
    with np.errstate(over="ignore"):
        norm = math.sqrt(float(np.dot(grads, grads)))
    if math.isinf(norm):  # the squares overflowed: rescale by the largest element first
        scale = float(np.max(np.abs(grads)))
        if math.isfinite(scale):
            scaled = grads / scale
            norm = scale * math.sqrt(float(np.dot(scaled, scaled)))
    return norm


def clip_by_global_norm(grads: Array, limit: float) -> None:
    """Rescale all gradients together so that their global L2 norm is at most ``limit``."""
    norm = global_norm(grads)
    if norm > limit:
        np.multiply(grads, limit / norm, out=grads)


def no_clip(grads: Array, limit: float) -> None:
    """Leave the gradients alone."""


CLIPPERS: dict[str, Clipper] = {"value": clip_by_value, "norm": clip_by_global_norm,
                                "none": no_clip}


def bound_clipper(name: str, limit: float, dtype: npt.DTypeLike) -> Callable[[Array], None]:
    """The strategy ``name`` with its limit fixed, for the training loop: clip(grads).

    For value clipping the bounds are made once, as 0-d arrays of the gradients' dtype (the
    values a Python float would be cast to): a Python float operand costs NumPy a conversion
    on every call, ~0.3 µs, which shows on small networks.
    """
    clipper = get_clipper(name)
    if clipper is not clip_by_value:
        return lambda grads: clipper(grads, limit)
    upper, lower = np.array(limit, dtype=dtype), np.array(-limit, dtype=dtype)

    def clip(grads: Array) -> None:
        np.minimum(grads, upper, out=grads)
        np.maximum(grads, lower, out=grads)

    return clip


def get_clipper(name: str) -> Clipper:
    """The strategy called ``name``; ValueError listing the valid names if none."""
    return lookup(CLIPPERS, "clip", name)
