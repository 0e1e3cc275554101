"""Optimisers, keyed by the name used in the config (after sklearn's _stochastic_optimizers).

An optimiser works on the flat vectors of all parameters and all gradients (see
network.ParameterLayout). The base class owns the bookkeeping: options and their defaults,
the step count, state arrays (exported and imported for checkpoints) and the update itself,
``params -= step``. A subclass only says how a gradient becomes a step, in ``_step``.

Update rules, for gradient g, learning rate lr and step count t (1 at the first update):

* sgd:      step = lr g                                        (RustNet)
* momentum: v <- mu v - lr g;  step = -v,  or with nesterov  step = -(mu v - lr g)
* rmsprop:  s <- rho s + (1 - rho) g^2;  step = lr g / (sqrt(s) + eps)
* adam:     m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;
            step = lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from .validation import SettingError, lookup

Array = npt.NDArray[np.floating]
Option = float | bool


class Optimizer:
    """Base class. Subclasses set ``name``, ``defaults`` and ``state_names``, implement ``_step``.

    ``defaults`` maps each option to its default; ``state_names`` lists the per-parameter state
    arrays (flat, like the parameters). Options are read once, in ``__init__`` (through the
    classmethod ``resolve``), into ``self.options``; unknown names and out-of-range values
    (the classmethod ``_check_option``) raise ValueError.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[Mapping[str, Option]] = {}
    state_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, learning_rate: float, options: Mapping[str, Option] | None = None) -> None:
        self.learning_rate, self.options = self.resolve(learning_rate, options)
        self.step_count = 0
        self.state: dict[str, Array] = {}
        self._scratch: Array = np.empty(0)

    # ---- what a subclass provides ----------------------------------------------------------

    def _step(self, grads: Array) -> Array:
        """The amount to subtract from the parameters, for gradients ``grads`` (flat).

        May overwrite ``grads`` and ``self._scratch`` and return either of them.
        ``self.step_count`` already counts this update.
        """
        raise NotImplementedError

    @classmethod
    def _check_option(cls, key: str, value: Option) -> None:
        """Raise ValueError if ``value`` is not allowed for option ``key`` (range checks)."""

    # ---- shared machinery ------------------------------------------------------------------

    def reset(self, n_params: int, dtype: npt.DTypeLike) -> None:
        """Fresh state for ``n_params`` parameters: zero moments, step count 0."""
        self.step_count = 0
        self.state = {name: np.zeros(n_params, dtype=dtype) for name in self.state_names}
        self._scratch = np.empty(n_params, dtype=dtype)

    def update(self, params: Array, grads: Array) -> None:
        """One step, in place: ``params -= step(grads)``. ``grads`` is used as scratch."""
        self.step_count += 1
        np.subtract(params, self._step(grads), out=params)

    def on_epoch_end(self, epoch: int) -> None:
        """Hook called after every epoch (1-based), e.g. for a learning-rate schedule."""

    def get_state(self) -> tuple[int, dict[str, Array]]:
        """(step count, copies of the state arrays) for a checkpoint."""
        return self.step_count, {name: array.copy() for name, array in self.state.items()}

    def set_state(self, step_count: int, arrays: Mapping[str, Array]) -> None:
        """Restore what ``get_state`` returned; the arrays must match those ``reset`` made."""
        if sorted(arrays) != sorted(self.state_names):
            raise ValueError(f"optimizer {self.name!r} keeps state {sorted(self.state_names)}, "
                             f"got {sorted(arrays)}")
        for name in self.state_names:
            if np.shape(arrays[name]) != self.state[name].shape:
                raise ValueError(f"optimizer state {name!r} has shape {np.shape(arrays[name])}, "
                                 f"expected {self.state[name].shape}")
            np.copyto(self.state[name], arrays[name], casting="same_kind")
        if isinstance(step_count, bool) or not isinstance(step_count, int) or step_count < 0:
            raise ValueError(f"optimizer step count must be an int >= 0, got {step_count!r}")
        self.step_count = step_count

    @classmethod
    def resolve(cls, learning_rate: float,
                options: Mapping[str, Option] | None = None) -> tuple[float, dict[str, Option]]:
        """(learning rate, options with the defaults filled in), checked; ValueError naming the
        first bad value. ``__init__`` runs it, and ``TrainSettings`` runs it without building
        an optimiser, so that a bad setting fails before training starts."""
        if (isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float)
                or not math.isfinite(learning_rate) or learning_rate <= 0):
            raise SettingError("learning_rate", learning_rate, "a finite number > 0")
        return float(learning_rate), cls._resolve_options(options or {})

    @classmethod
    def _resolve_options(cls, given: Mapping[str, Option]) -> dict[str, Option]:
        unknown = sorted(set(given) - set(cls.defaults))
        if unknown:
            valid = sorted(cls.defaults) or "none"
            raise ValueError(f"unknown option(s) {unknown} for optimizer {cls.name!r}; "
                             f"valid: {valid}")
        options = dict(cls.defaults)
        for key, value in given.items():
            default = cls.defaults[key]
            if isinstance(default, bool):
                if not isinstance(value, bool | np.bool_):
                    raise SettingError(key, value, "true or false")
                value = bool(value)
            else:
                if (isinstance(value, bool | np.bool_) or not isinstance(value, int | float)
                        or not math.isfinite(value)):
                    raise SettingError(key, value, "a finite number")
                value = float(value)
            cls._check_option(key, value)
            options[key] = value
        return options

    def __repr__(self) -> str:
        args = [f"learning_rate={self.learning_rate!r}"]
        args += [f"{k}={v!r}" for k, v in self.options.items()]
        return f"{type(self).__name__}({', '.join(args)})"


def _fraction(key: str, value: Option) -> None:
    if not 0.0 <= float(value) < 1.0:
        raise SettingError(key, value, "in [0, 1)")


def _positive(key: str, value: Option) -> None:
    if not float(value) > 0.0:
        raise SettingError(key, value, "> 0")


class SGD(Optimizer):
    """Plain gradient descent, RustNet's update: step = lr g."""

    name = "sgd"

    def _step(self, grads: Array) -> Array:
        return np.multiply(grads, self.learning_rate, out=grads)


class Momentum(Optimizer):
    """Heavy-ball momentum, optionally Nesterov's: v <- mu v - lr g; params += v."""

    name = "momentum"
    defaults: ClassVar[Mapping[str, Option]] = {"momentum": 0.9, "nesterov": False}
    state_names = ("velocity",)

    @classmethod
    def _check_option(cls, key: str, value: Option) -> None:
        if key == "momentum":
            _fraction(key, value)

    def _step(self, grads: Array) -> Array:
        mu = float(self.options["momentum"])
        v = self.state["velocity"]
        lr_g = np.multiply(grads, self.learning_rate, out=grads)
        np.multiply(v, mu, out=v)
        np.subtract(v, lr_g, out=v)  # v = mu v - lr g
        if self.options["nesterov"]:
            np.multiply(v, mu, out=self._scratch)
            return np.subtract(lr_g, self._scratch, out=grads)  # -(mu v - lr g)
        return np.negative(v, out=self._scratch)


class RMSprop(Optimizer):
    """Steps scaled by a running RMS of the gradients: s <- rho s + (1 - rho) g^2."""

    name = "rmsprop"
    defaults: ClassVar[Mapping[str, Option]] = {"rho": 0.9, "eps": 1e-8}
    state_names = ("square_avg",)

    @classmethod
    def _check_option(cls, key: str, value: Option) -> None:
        (_fraction if key == "rho" else _positive)(key, value)

    def _step(self, grads: Array) -> Array:
        rho, eps = float(self.options["rho"]), float(self.options["eps"])
        s, tmp = self.state["square_avg"], self._scratch
        np.multiply(grads, grads, out=tmp)
        np.multiply(tmp, 1.0 - rho, out=tmp)
        np.multiply(s, rho, out=s)
        np.add(s, tmp, out=s)  # s = rho s + (1 - rho) g^2
        np.sqrt(s, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(grads, tmp, out=grads)
        return np.multiply(grads, self.learning_rate, out=grads)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias-corrected moments."""

    name = "adam"
    defaults: ClassVar[Mapping[str, Option]] = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    state_names = ("m", "v")

    @classmethod
    def _check_option(cls, key: str, value: Option) -> None:
        (_positive if key == "eps" else _fraction)(key, value)

    def _step(self, grads: Array) -> Array:
        b1, b2 = float(self.options["beta1"]), float(self.options["beta2"])
        eps, t = float(self.options["eps"]), self.step_count
        m, v, tmp = self.state["m"], self.state["v"], self._scratch
        np.multiply(m, b1, out=m)
        np.multiply(grads, 1.0 - b1, out=tmp)
        np.add(m, tmp, out=m)  # m = b1 m + (1 - b1) g
        np.multiply(grads, grads, out=tmp)
        np.multiply(tmp, 1.0 - b2, out=tmp)
        np.multiply(v, b2, out=v)
        np.add(v, tmp, out=v)  # v = b2 v + (1 - b2) g^2
        np.divide(v, 1.0 - b2**t, out=tmp)  # v_hat
        np.sqrt(tmp, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(m, 1.0 - b1**t, out=grads)  # m_hat
        np.divide(grads, tmp, out=grads)
        return np.multiply(grads, self.learning_rate, out=grads)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, RMSprop, Adam)
}


def register_optimizer(cls: type[Optimizer], *, overwrite: bool = False) -> type[Optimizer]:
    """Make a subclass of Optimizer available as ``optimizer=cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Optimizer)) or not cls.name:
        raise ValueError(f"register_optimizer needs an Optimizer subclass with a name, got {cls!r}")
    if cls.name in OPTIMIZERS and not overwrite:
        raise ValueError(f"optimizer {cls.name!r} is already registered; "
                         "pass overwrite=True to replace it")
    OPTIMIZERS[cls.name] = cls
    return cls


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimiser class called ``name``; ValueError listing the valid names if none."""
    return lookup(OPTIMIZERS, "optimizer", name)


def make_optimizer(name: str, learning_rate: float,
                   options: Mapping[str, Option] | None = None) -> Optimizer:
    """A new optimiser called ``name``; ValueError listing the valid names if none."""
    return get_optimizer(name)(learning_rate, options)
