"""What training and checkpoints work on: a model's public surface and its training state.

``model.MLP`` owns its parameters and training state and exposes them as the attributes that
``Model`` lists. ``training`` and ``checkpoint`` see a model only through that surface, so they
never import ``model`` (which imports them: ``MLP.train``, ``MLP.save`` and ``MLP.load`` are thin
conveniences over ``training.fit`` and ``checkpoint``), and the imports inside the package
form no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from .network import Network, ParameterLayout
from .optimizers import Optimizer
from .outputs import OutputLayer

Array = npt.NDArray[np.floating]


@dataclass
class TrainingState:
    """What continuing a training run exactly needs; saved in checkpoints."""

    epoch: int  # epochs completed in the current run
    optimizer: Optimizer
    shuffle_rng: np.random.Generator
    shuffle_seed: int | None  # None: derived from the model seed
    batch_size: int | None
    weight_decay: float
    clip: str
    clip_value: float


class Model(Protocol):
    """The part of a model (``model.MLP``) that training and checkpoints read and write.

    Architecture (fixed at construction): layer_sizes, activations, output, init, dtype, seed.
    params: θ: (layout.size,), every layer's [W_l; b_l] block in one flat vector of the
    model's dtype; allocated once and never rebound, so views of it stay valid.
    layout: where each block lives in ``params`` (and in any vector shaped like it, e.g. the
    gradients). network: the views of ``params`` the forward and backward passes use.
    output_layer: the output activation and its loss. training_state: None until trained;
    set by ``training.fit`` and by loading a checkpoint.
    """

    layer_sizes: tuple[int, ...]
    activations: tuple[str, ...]
    output: str
    init: str
    dtype: str
    seed: int
    metadata: dict[str, Any]
    params: Array
    layout: ParameterLayout
    network: Network
    output_layer: OutputLayer
    training_state: TrainingState | None

    @property
    def n_classes(self) -> int: ...
