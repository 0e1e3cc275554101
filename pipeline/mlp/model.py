"""The public MLP: construction, parameters, prediction; training and checkpoints as thin
conveniences over ``training.fit`` and ``checkpoint``, which see the model only through the
public surface listed in ``state.Model``."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from . import checkpoint
from .activations import get_activation
from .history import History
from .initializers import initial_weights
from .network import Network, ParameterLayout, Workspace, forward
from .outputs import OutputLayer, get_output
from .settings import TrainSettings
from .state import TrainingState
from .training import fit
from .validation import check_features, check_labels

Array = npt.NDArray[np.floating]

DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32)}
PREDICT_CHUNK = 4096  # samples per forward pass in predict_proba, to bound memory


def _check_layer_sizes(layer_sizes: Any) -> tuple[int, ...]:
    if isinstance(layer_sizes, str) or not isinstance(layer_sizes, Sequence | np.ndarray):
        raise ValueError(f"layer_sizes must be a sequence of ints, got {layer_sizes!r}")
    sizes = list(layer_sizes)
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least 2 entries (inputs, outputs), got {sizes}")
    for i, size in enumerate(sizes):
        if not isinstance(size, numbers.Integral) or isinstance(size, bool | np.bool_) or size < 1:
            raise ValueError(f"layer_sizes[{i}] must be an int >= 1, got {size!r}")
    return tuple(int(s) for s in sizes)


def _check_hidden_activations(hidden_activation: Any, n_hidden: int) -> tuple[str, ...]:
    if isinstance(hidden_activation, str):
        get_activation(hidden_activation)
        return (hidden_activation,) * n_hidden
    if not isinstance(hidden_activation, Sequence):
        raise ValueError("hidden_activation must be a name or a sequence of names, "
                         f"got {hidden_activation!r}")
    names = tuple(hidden_activation)
    if len(names) != n_hidden:
        raise ValueError(f"hidden_activation lists {len(names)} activation(s), but layer_sizes "
                         f"has {n_hidden} hidden layer(s); give one name per hidden layer "
                         "or a single name for all")
    for name in names:
        get_activation(name)
    return names


class MLP:
    """A fully connected network: hidden layers with an activation each, then a sigmoid
    (binary) or softmax (k classes) output trained on cross-entropy.

    layer_sizes: [n_features, hidden..., n_outputs], n_outputs = 1 for output="sigmoid" and the
    number of classes k >= 2 for output="softmax".
    hidden_activation: one name for every hidden layer, or one name per hidden layer
    (see activations.ACTIVATIONS; add more with register_activation).
    init: "uniform" (RustNet: W ~ U[-0.5, 0.5)), "he" or "xavier"; biases start at 0.
    dtype: "float64" or "float32", for parameters and all computation.
    seed: seeds the Generator that draws the initial weights (and, by default, the
    mini-batch order).

    The architecture attributes (layer_sizes, activations, output, init, dtype, seed) are
    read-only. ``metadata`` is a free-form JSON-able dict saved with checkpoints.

    What training and checkpoints work on (never rebound; see ``state.Model``):
    params: θ: (layout.size,), every layer's [W_l; b_l] block in one flat vector of the
    model's dtype (``weights`` and ``biases`` are views of it); layout: where each block
    lives in it; network: the views of it the forward and backward passes use;
    output_layer: the output activation and its loss. training_state: what continuing the
    last training run needs (None before training).
    """

    def __init__(self, layer_sizes: Sequence[int], *,
                 hidden_activation: str | Sequence[str] = "relu", output: str = "sigmoid",
                 init: str = "uniform", dtype: str = "float64", seed: int = 0) -> None:
        sizes = _check_layer_sizes(layer_sizes)
        names = _check_hidden_activations(hidden_activation, len(sizes) - 2)
        output_layer = get_output(output)
        output_layer.check_units(sizes[-1])
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; valid: {sorted(DTYPES)}")
        if not isinstance(seed, numbers.Integral) or isinstance(seed, bool | np.bool_) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        weights = initial_weights(init, sizes, int(seed))  # also checks the init name

        self.layer_sizes: tuple[int, ...] = sizes
        self.activations: tuple[str, ...] = names
        self.output: str = output
        self.init: str = init
        self.dtype: str = dtype
        self.seed: int = int(seed)
        self.metadata: dict[str, Any] = {}
        self._np_dtype: np.dtype = DTYPES[dtype]
        self.output_layer: OutputLayer = output_layer
        self.layout: ParameterLayout = ParameterLayout(sizes)
        biases = [np.zeros((1, fan_out)) for fan_out in sizes[1:]]
        self.params: Array = self.layout.flatten(weights, biases, self._np_dtype)
        self.network: Network = Network(self.layout, self.params,
                                        [get_activation(n) for n in names])
        self.training_state: TrainingState | None = None

    # ---- parameters ----------------------------------------------------------------------

    @property
    def weights(self) -> list[Array]:
        """W_l: (layer_sizes[l], layer_sizes[l + 1]) per layer, as writable VIEWS of the model's
        parameters (writing into them changes the model; copy them to keep a snapshot)."""
        return self.layout.weights(self.params)

    @property
    def biases(self) -> list[Array]:
        """b_l: (1, layer_sizes[l + 1]) per layer, as writable VIEWS (see ``weights``)."""
        return self.layout.biases(self.params)

    @property
    def n_layers(self) -> int:
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def n_classes(self) -> int:
        """Number of classes predicted: 2 for sigmoid, layer_sizes[-1] for softmax."""
        return self.output_layer.n_classes(self.layer_sizes[-1])

    @property
    def epoch(self) -> int:
        """Epochs completed in the current training run (0 before training)."""
        return 0 if self.training_state is None else self.training_state.epoch

    def __repr__(self) -> str:
        hidden = zip(self.layer_sizes[1:-1], self.activations, strict=True)
        arrows = " -> ".join([f"{self.layer_sizes[0]}"]
                             + [f"{units} {act}" for units, act in hidden]
                             + [f"{self.layer_sizes[-1]} {self.output}"])
        return (f"MLP({arrows}; init={self.init}, dtype={self.dtype}, seed={self.seed}, "
                f"epoch={self.epoch})")

    # ---- training ------------------------------------------------------------------------

    def train(self, X: Any, y: Any, *, validation: tuple[Any, Any] | None = None,
              callbacks: Sequence[Callable[[int, dict[str, float], MLP], Any]] = (),
              **settings: Any) -> History:
        """Fit the network by gradient descent on the mean cross-entropy; return the History.

        ``training.fit(self, X, y, TrainSettings(**settings), validation=validation,
        callbacks=callbacks)``: ``settings`` are the fields of TrainSettings, documented there
        (learning_rate and epochs are required, the others have defaults); X: (n_samples,
        n_features), y: (n_samples,), validation and callbacks as documented in ``fit``.

        Raises ValueError for bad arguments or data (the model is then unchanged) and
        TrainingDiverged if the loss or a parameter becomes non-finite. Warns
        (ConvergenceWarning) when the epoch limit is reached while the loss still falls.
        """
        return fit(self, X, y, TrainSettings(**settings), validation=validation,
                   callbacks=callbacks)

    # ---- prediction ----------------------------------------------------------------------

    def predict_proba(self, X: Any) -> Array:
        """Class probabilities: (n_samples, 1) P(y = 1) for sigmoid, (n_samples, k) for softmax.

        X: (n_samples, n_features), cast to the model's dtype. Raises ValueError if X is
        invalid or so large that the network's outputs overflow.
        """
        features = check_features(X, self.layer_sizes[0], self._np_dtype)
        n, k = features.shape[0], self.layer_sizes[-1]
        logits = np.empty((k, n), dtype=self._np_dtype)
        workspaces: dict[int, Workspace] = {}
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, n, PREDICT_CHUNK):
                part = features[start:start + PREDICT_CHUNK]
                m = part.shape[0]
                if m not in workspaces:
                    inputs = np.ones((self.layer_sizes[0] + 1, m), dtype=self._np_dtype)
                    workspaces[m] = Workspace(self.network, m, inputs)
                ws = workspaces[m]
                ws.inputs[:-1] = part.T
                logits[:, start:start + m] = forward(self.network, ws)
        if not np.isfinite(logits).all():
            bad = int(np.argwhere(~np.isfinite(logits))[0][1])
            raise ValueError(
                f"the network's output is not finite for X[{bad}] (largest |X| = "
                f"{float(np.abs(features).max()):.3g}): the inputs are too large for this "
                "network, or its parameters are not finite; normalise X")
        with np.errstate(over="ignore"):  # z - max(z) may round to -inf: exp gives 0, correctly
            proba = self.output_layer.probabilities(logits)
        return np.ascontiguousarray(proba.T)

    def predict(self, X: Any, threshold: float = 0.5) -> npt.NDArray[np.int64]:
        """Class labels: (n_samples,) ints. Sigmoid: 1 where P(y = 1) > threshold; softmax:
        the most probable class (threshold unused)."""
        if not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        return self.output_layer.labels(self.predict_proba(X), float(threshold))

    def score(self, X: Any, y: Any) -> float:
        """Accuracy of ``predict(X)`` against labels y."""
        predicted = self.predict(X)
        labels = check_labels(y, predicted.size, self.n_classes, self.output)
        return float(np.mean(predicted == labels))

    # ---- checkpoints ---------------------------------------------------------------------

    def to_dict(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON-able checkpoint content (see checkpoint.py); metadata defaults to
        ``self.metadata``."""
        return checkpoint.to_dict(self, metadata)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> MLP:
        """A model from ``to_dict`` output; CheckpointError (naming ``source``) if invalid."""
        return checkpoint.from_dict(data, cls, source)

    def save(self, path: str | PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
        """Write a JSON checkpoint atomically: the file appears complete or not at all.

        Stores the architecture, parameters, training state (so that ``MLP.load(path)`` then
        ``train(..., resume=True)`` continues exactly) and ``metadata`` (default:
        ``self.metadata``; must be JSON-able: str keys, finite numbers). The same model gives
        the same bytes.
        """
        checkpoint.save(self, path, metadata)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> MLP:
        """Read a checkpoint written by ``save``; CheckpointError naming the file and the
        problem if it is missing, truncated, corrupt, of another version or inconsistent.
        The file's metadata becomes ``model.metadata``."""
        return checkpoint.load(path, cls)
