"""The public MLP: construction, training, prediction and checkpoints."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import numpy.typing as npt

from . import training
from .activations import get_activation
from .history import History
from .initializers import initial_weights
from .network import Network, ParameterLayout, Workspace, forward
from .outputs import get_output
from .parallel import BatchParts, Lanes
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
        self._np_dtype = DTYPES[dtype]
        self._output_layer = output_layer
        self._layout = ParameterLayout(sizes)
        biases = [np.zeros((1, fan_out)) for fan_out in sizes[1:]]
        self._params = self._layout.flatten(weights, biases, self._np_dtype)  # never reallocated
        self._net = Network(self._layout, self._params, [get_activation(n) for n in names])
        self._training: training.TrainingState | None = None

    # ---- parameters ----------------------------------------------------------------------

    @property
    def weights(self) -> list[Array]:
        """W_l: (layer_sizes[l], layer_sizes[l + 1]) per layer, as writable VIEWS of the model's
        parameters (writing into them changes the model; copy them to keep a snapshot)."""
        return self._layout.weights(self._params)

    @property
    def biases(self) -> list[Array]:
        """b_l: (1, layer_sizes[l + 1]) per layer, as writable VIEWS (see ``weights``)."""
        return self._layout.biases(self._params)

    def set_parameters(self, weights: Sequence[npt.ArrayLike],
                       biases: Sequence[npt.ArrayLike]) -> None:
        """Copy in W_l: (fan_in, fan_out) and b_l: (1, fan_out) (or (fan_out,)) per layer."""
        if len(weights) != self.n_layers or len(biases) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} weight matrices and bias vectors, got "
                             f"{len(weights)} and {len(biases)}")
        new_weights, new_biases = [], []
        for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
            fan_in, fan_out = self.layer_sizes[layer], self.layer_sizes[layer + 1]
            w, b = np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64)
            if w.shape != (fan_in, fan_out) or b.reshape(1, -1).shape != (1, fan_out):
                raise ValueError(f"layer {layer}: expected W {(fan_in, fan_out)} and b "
                                 f"{(1, fan_out)}, got {w.shape} and {b.shape}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"layer {layer}: parameters must be finite")
            new_weights.append(w)
            new_biases.append(b.reshape(1, -1))
        np.copyto(self._params, self._layout.flatten(new_weights, new_biases, self._np_dtype))

    @property
    def n_layers(self) -> int:
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @property
    def n_classes(self) -> int:
        """Number of classes predicted: 2 for sigmoid, layer_sizes[-1] for softmax."""
        return self._output_layer.n_classes(self.layer_sizes[-1])

    @property
    def epoch(self) -> int:
        """Epochs completed in the current training run (0 before training)."""
        return 0 if self._training is None else self._training.epoch

    def __repr__(self) -> str:
        hidden = zip(self.layer_sizes[1:-1], self.activations, strict=True)
        arrows = " -> ".join([f"{self.layer_sizes[0]}"]
                             + [f"{units} {act}" for units, act in hidden]
                             + [f"{self.layer_sizes[-1]} {self.output}"])
        return (f"MLP({arrows}; init={self.init}, dtype={self.dtype}, seed={self.seed}, "
                f"epoch={self.epoch})")

    # ---- training ------------------------------------------------------------------------

    def train(self, X: Any, y: Any, *, learning_rate: float, epochs: int,
              batch_size: int | None = None, optimizer: str = "sgd",
              optimizer_options: Mapping[str, float | bool] | None = None,
              weight_decay: float = 0.0, clip: str = "value", clip_value: float = 1.0,
              validation: tuple[Any, Any] | None = None,
              early_stopping_patience: int | None = None, shuffle_seed: int | None = None,
              callbacks: Sequence[Callable[[int, dict[str, float], MLP], Any]] = (),
              resume: bool = False, threads: int | None = None) -> History:
        """Fit the network by gradient descent on the mean cross-entropy; return the History.

        X: (n_samples, n_features); y: (n_samples,) or (n_samples, 1) class indices 0..k-1.
        X and y are never modified (mini-batches are gathered from X without copying it whole,
        so do not change X while training).
        batch_size: None for full batch (RustNet); an int for mini-batches (the last one may be
        smaller; above n_samples it means one shuffled batch), reshuffled every epoch by a
        Generator seeded with shuffle_seed (default: a stream derived from the model seed).
        optimizer: "sgd", "momentum", "rmsprop", "adam", with optimizer_options (see
        optimizers.py for names and defaults).
        weight_decay: L2 penalty wd/2 |W|^2 on weights (not biases): adds wd W to dW.
        clip: "value" (each gradient into [-clip_value, clip_value], RustNet with 1.0),
        "norm" (all gradients scaled so their global L2 norm <= clip_value) or "none";
        applied after weight decay, before the optimiser.
        validation: (X_val, y_val) evaluated after every epoch; with early_stopping_patience=p,
        training stops when val_loss has not improved for p epochs and the model returns to
        its state at the end of the best epoch.
        callbacks: each called as callback(epoch, metrics, model) after every epoch (epoch is
        1-based); the model is then consistent and can be saved (if early stopping then ends
        training, the model is set back to the best epoch after the callbacks ran).
        resume: False starts at epoch 0 with a fresh optimiser (weights kept). True continues
        the stored run (epoch counter, optimiser state, shuffle stream) up to a TOTAL of
        ``epochs``; it must use the same optimizer and options. A model never trained starts
        fresh. Early-stopping bookkeeping starts over on resuming.
        threads: how many threads a large batch's parts run on (see parallel.py); None: as
        many as NumPy's BLAS is limited to (threadpoolctl). The result does not depend on it.

        Raises ValueError for bad arguments or data (the model is then unchanged) and
        TrainingDiverged if the loss or a parameter becomes non-finite. Warns
        (ConvergenceWarning) when the epoch limit is reached while the loss still falls.
        """
        return training.fit(
            self, X, y, validation=validation, learning_rate=learning_rate, epochs=epochs,
            batch_size=batch_size, optimizer=optimizer, optimizer_options=optimizer_options,
            weight_decay=weight_decay, clip=clip, clip_value=clip_value,
            early_stopping_patience=early_stopping_patience, shuffle_seed=shuffle_seed,
            callbacks=callbacks, resume=resume, threads=threads)

    def _loss_and_gradients(self, X: Any, y: Any, *, weight_decay: float = 0.0,
                            indices: npt.ArrayLike | None = None, parts: int | None = None,
                            threads: int = 1) -> tuple[float, list[Array], list[Array]]:
        """Mean loss (+ wd/2 |W|^2) and its gradients, unclipped, on X, y (or rows ``indices``).

        Uses the training code paths (the full-batch layout, or the mini-batch gather when
        ``indices`` is given; the batch split into ``parts`` run on ``threads``, see
        parallel.py). Returns (loss, [dW_l: (fan_in, fan_out)], [db_l: (1, fan_out)]).
        For gradient checks.
        """
        data = training.prepare_data(self, X, y)
        load = None
        if indices is None:
            batch = BatchParts(self._net, self._layout, data.n, data.inputs(), data.targets,
                               parts=parts)
        else:
            index = np.asarray(indices, dtype=np.intp)
            batch = BatchParts(self._net, self._layout, index.size, parts=parts)
            load = training.gather(batch, data.features, data.target_rows(), index)
        grads = np.empty_like(self._params)
        lanes = Lanes(threads)
        try:
            loss_sum, _, _ = training.batch_gradient(self._net, self._output_layer, batch, grads,
                                                     self._layout.blocks(grads), lanes, load)
        finally:
            lanes.close()
        loss = loss_sum / batch.n
        if weight_decay:
            decay = self._layout.weight_mask(self._np_dtype) * weight_decay
            loss += 0.5 * float(np.dot(self._params * decay, self._params))
            training.add_weight_decay(grads, self._params, decay, np.empty_like(grads))
        weights = [w.copy() for w in self._layout.weights(grads)]
        biases = [b.copy() for b in self._layout.biases(grads)]
        return loss, weights, biases

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
                    workspaces[m] = Workspace(self._net, m, inputs)
                ws = workspaces[m]
                ws.inputs[:-1] = part.T
                logits[:, start:start + m] = forward(self._net, ws)
        if not np.isfinite(logits).all():
            bad = int(np.argwhere(~np.isfinite(logits))[0][1])
            raise ValueError(
                f"the network's output is not finite for X[{bad}] (largest |X| = "
                f"{float(np.abs(features).max()):.3g}): the inputs are too large for this "
                "network, or its parameters are not finite; normalise X")
        with np.errstate(over="ignore"):  # z - max(z) may round to -inf: exp gives 0, correctly
            proba = self._output_layer.probabilities(logits)
        return np.ascontiguousarray(proba.T)

    def predict(self, X: Any, threshold: float = 0.5) -> npt.NDArray[np.int64]:
        """Class labels: (n_samples,) ints. Sigmoid: 1 where P(y = 1) > threshold; softmax:
        the most probable class (threshold unused)."""
        if not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
        return self._output_layer.labels(self.predict_proba(X), float(threshold))

    def score(self, X: Any, y: Any) -> float:
        """Accuracy of ``predict(X)`` against labels y."""
        predicted = self.predict(X)
        labels = check_labels(y, predicted.size, self.n_classes, self.output)
        return float(np.mean(predicted == labels))

    # ---- checkpoints ---------------------------------------------------------------------

    def to_dict(self, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON-able checkpoint content (see checkpoint.py); metadata defaults to
        ``self.metadata``."""
        from .checkpoint import to_dict

        return to_dict(self, metadata)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> MLP:
        """A model from ``to_dict`` output; CheckpointError (naming ``source``) if invalid."""
        from .checkpoint import from_dict

        return from_dict(data, source)

    def save(self, path: str | PathLike[str], metadata: Mapping[str, Any] | None = None) -> None:
        """Write a JSON checkpoint atomically: the file appears complete or not at all.

        Stores the architecture, parameters, training state (so that ``MLP.load(path)`` then
        ``train(..., resume=True)`` continues exactly) and ``metadata`` (default:
        ``self.metadata``; must be JSON-able: str keys, finite numbers). The same model gives
        the same bytes.
        """
        from .checkpoint import save

        save(self, path, metadata)

    @classmethod
    def load(cls, path: str | PathLike[str]) -> MLP:
        """Read a checkpoint written by ``save``; CheckpointError naming the file and the
        problem if it is missing, truncated, corrupt, of another version or inconsistent.
        The file's metadata becomes ``model.metadata``."""
        from .checkpoint import load

        return load(path)
