"""A from-scratch NumPy multilayer perceptron (RustNet's successor).

Imports only NumPy and the standard library (and threadpoolctl, when a large batch runs on
several threads). Start with ``MLP``::

    model = MLP([2, 12, 1], seed=0)
    history = model.train(X, y, learning_rate=0.003, epochs=3000)
    model.predict_proba(X_test); model.save("model.json"); MLP.load("model.json")

Modules: model (MLP), training (the loop), network (forward/backward over flat buffers),
parallel (large batches split into parts run on several threads), activations, outputs
(output layer + loss), initializers, optimizers, clipping, validation (input checks),
checkpoint (JSON format), history, errors, rustnet (RustNet's API).
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
    "TrainingDiverged",
    "register_activation",
    "register_optimizer",
]
