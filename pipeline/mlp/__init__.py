"""A from-scratch NumPy multilayer perceptron (RustNet's successor).

Imports only NumPy and the standard library (and threadpoolctl, when a large batch runs on
several threads). Start with ``MLP``::

    model = MLP([2, 12, 1], seed=0)
    history = model.train(X, y, learning_rate=0.003, epochs=3000)
    model.predict_proba(X_test); model.save("model.json"); MLP.load("model.json")

``model.train(X, y, **settings)`` is ``fit(model, X, y, TrainSettings(**settings))``.

Modules, each importing only those listed after it: model (MLP), training (the loop: fit),
checkpoint (JSON format), state (what training and checkpoints see of a model), settings
(TrainSettings), parallel (large batches split into parts run on several threads), network
(forward/backward over flat buffers, and the plain version they are tested against),
outputs (output layer + loss), activations, optimizers, clipping, initializers, validation
(input checks), errors, history; rustnet (RustNet's API) sits on top of model.
"""

from .activations import ACTIVATIONS, Activation, register_activation
from .checkpoint import FORMAT_VERSION
from .clipping import CLIPPERS
from .errors import CheckpointError, ConvergenceWarning, TrainingDiverged
from .history import History
from .initializers import INITIALIZERS
from .model import MLP
from .optimizers import OPTIMIZERS, Optimizer, register_optimizer
from .outputs import OUTPUTS
from .rustnet import PyNeuralNetwork
from .settings import TrainSettings
from .training import fit
from .validation import SettingError

__all__ = [
    "ACTIVATIONS",
    "CLIPPERS",
    "FORMAT_VERSION",
    "INITIALIZERS",
    "MLP",
    "OPTIMIZERS",
    "OUTPUTS",
    "Activation",
    "CheckpointError",
    "ConvergenceWarning",
    "History",
    "Optimizer",
    "PyNeuralNetwork",
    "SettingError",
    "TrainSettings",
    "TrainingDiverged",
    "fit",
    "register_activation",
    "register_optimizer",
]
