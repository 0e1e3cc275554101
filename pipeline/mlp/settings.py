"""TrainSettings: how a model is trained, checked once, in one place.

``MLP.train(X, y, **settings)`` builds one from its keyword arguments; the pipeline builds one
from its validated config and hands it to ``training.fit`` through the train stage. The data,
the validation data and the callbacks are arguments of the call, not settings.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .clipping import get_clipper
from .optimizers import Optimizer, get_optimizer
from .validation import SettingError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _check_int(name: str, value: Any, minimum: int, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if not _is_int(value) or value < minimum:
        kind = f"None or an int >= {minimum}" if optional else f"an int >= {minimum}"
        raise SettingError(name, value, kind)
    return int(value)


def _check_real(name: str, value: Any, *, positive: bool) -> float:
    ok = _is_real(value) and math.isfinite(value) and (value > 0 if positive else value >= 0)
    if not ok:
        raise SettingError(name, value, f"a finite number {'> 0' if positive else '>= 0'}")
    return float(value)


def _check_clip(name: str, value: Any) -> str:
    get_clipper(value)  # ValueError naming the valid methods
    return str(value)


# Each setting's rule, by name: TrainSettings checks a given value with it, and the checkpoint
# loader a stored one (a checkpoint's training state holds some of them), so both follow one
# definition. In the order they are checked.
_RULES: dict[str, Callable[[str, Any], Any]] = {
    "clip": _check_clip,
    "epochs": lambda name, value: _check_int(name, value, 1),
    "batch_size": lambda name, value: _check_int(name, value, 1, optional=True),
    "weight_decay": lambda name, value: _check_real(name, value, positive=False),
    "clip_value": lambda name, value: _check_real(name, value, positive=True),
    "early_stopping_patience": lambda name, value: _check_int(name, value, 1, optional=True),
    "shuffle_seed": lambda name, value: _check_int(name, value, 0, optional=True),
    "threads": lambda name, value: _check_int(name, value, 1, optional=True),
}


def check_setting(name: str, value: Any) -> Any:
    """``value`` checked by the rule of the training setting ``name`` and normalised (an int,
    a float); :class:`SettingError` naming the setting, the rule and the value otherwise (a
    ValueError listing the valid names for an unknown ``clip``)."""
    return _RULES[name](name, value)


@dataclass(frozen=True)
class TrainSettings:
    """The settings of one training run; ValueError (one line naming the setting, what it must
    be and the value given) on construction if one is invalid. Values are normalised: numbers
    to float or int, ``optimizer_options`` completed with the optimiser's defaults.

    learning_rate, epochs: the step size (> 0) and the number of passes over the data (>= 1;
    with ``resume``, the TOTAL the run reaches).
    batch_size: None for full batch (RustNet); an int for mini-batches (the last one may be
    smaller; above n_samples it means one shuffled batch), reshuffled every epoch by a
    Generator seeded with shuffle_seed (default: a stream derived from the model seed).
    optimizer: "sgd", "momentum", "rmsprop", "adam" (or a registered one), with
    optimizer_options (see optimizers.py for names and defaults).
    weight_decay: L2 penalty wd/2 |W|^2 on weights (not biases): adds wd W to dW.
    clip: "value" (each gradient into [-clip_value, clip_value], RustNet with 1.0),
    "norm" (all gradients scaled so their global L2 norm <= clip_value) or "none";
    applied after weight decay, before the optimiser.
    early_stopping_patience: p to stop when val_loss has not improved for p epochs and return
    the model to its state at the end of the best epoch (needs validation data).
    resume: False starts at epoch 0 with a fresh optimiser (weights kept). True continues
    the model's stored run (epoch counter, optimiser state, shuffle stream) up to ``epochs``
    in total; it must use the same optimizer and options. A model never trained starts
    fresh. Early-stopping bookkeeping starts over on resuming.
    threads: how many threads a large batch's parts run on (see parallel.py); None: as
    many as NumPy's BLAS is limited to (threadpoolctl). The result does not depend on it.
    """

    learning_rate: float
    epochs: int
    batch_size: int | None = None
    optimizer: str = "sgd"
    optimizer_options: Mapping[str, float | bool] = field(default_factory=dict)
    weight_decay: float = 0.0
    clip: str = "value"
    clip_value: float = 1.0
    early_stopping_patience: int | None = None
    shuffle_seed: int | None = None
    resume: bool = False
    threads: int | None = None

    def __post_init__(self) -> None:
        # The optimiser's own checks (name, learning rate, options), without building one.
        learning_rate, options = get_optimizer(self.optimizer).resolve(
            self.learning_rate, self.optimizer_options)
        clip = check_setting("clip", self.clip)
        if not isinstance(self.resume, bool | np.bool_):
            raise ValueError(f"resume must be True or False, got {self.resume!r}")
        checked = {"learning_rate": learning_rate, "optimizer_options": options, "clip": clip,
                   "resume": bool(self.resume)}
        checked.update({name: check_setting(name, getattr(self, name))
                        for name in _RULES if name != "clip"})
        for name, value in checked.items():  # frozen: the dataclass way to normalise
            object.__setattr__(self, name, value)

    def new_optimizer(self) -> Optimizer:
        """A fresh optimiser with these settings' name, learning rate and options."""
        return get_optimizer(self.optimizer)(self.learning_rate, self.optimizer_options)
