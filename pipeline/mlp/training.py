"""The training loop: ``fit(model, X, y, settings)``, behind ``MLP.train``; epochs, early
stopping, resuming. ``loss_and_gradients`` runs one gradient evaluation through the same code,
for gradient checks.

A model is seen through its public surface (``state.Model``): training reads the parameter
vector, its layout, the network views and the output layer, and sets the training state.

Every epoch starts with a snapshot of the state it will change (parameters, optimiser state,
shuffle generator, epoch counter). If the loss or a parameter turns non-finite, the snapshot
is restored and TrainingDiverged raised, so the model is left exactly as at the end of the
previous epoch. Early stopping uses the same kind of snapshot to return to the best epoch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from .clipping import bound_clipper
from .errors import ConvergenceWarning, TrainingDiverged
from .history import History
from .network import Network, Workspace, backward, forward
from .outputs import BatchSums, OutputLayer
from .parallel import BatchParts, Lanes, blas_limited, plan_threads
from .settings import TrainSettings
from .state import Model, TrainingState
from .validation import check_features, check_labels

Array = npt.NDArray[np.floating]
M = TypeVar("M", bound=Model)
# callback(epoch, metrics, model), after every epoch
Callback = Callable[[int, dict[str, float], M], Any]

# ConvergenceWarning when the monitored loss still fell by more than TOL within the last
# WINDOW epochs before the epoch limit (sklearn's tol and n_iter_no_change defaults) and
# the monitored accuracy is below CONVERGENCE_ACCURACY: a loss that creeps down on a
# model that already classifies (almost) everything right is no reason to train longer.
CONVERGENCE_TOL = 1e-4
CONVERGENCE_WINDOW = 10
CONVERGENCE_ACCURACY = 0.99
# The shuffle stream's default seed is a child of the model seed, independent of the init draws.
_SHUFFLE_SPAWN_KEY = (1,)


def shuffle_generator(model_seed: int, shuffle_seed: int | None) -> np.random.Generator:
    """The Generator that orders mini-batches: from shuffle_seed, else from the model seed."""
    if shuffle_seed is not None:
        return np.random.default_rng(shuffle_seed)
    return np.random.default_rng(np.random.SeedSequence(model_seed, spawn_key=_SHUFFLE_SPAWN_KEY))


# ---- the state to train from -----------------------------------------------------------------

def start_state(model: Model, settings: TrainSettings) -> TrainingState:
    """The state to train from: the model's own when resuming, else a fresh one."""
    prior = model.training_state
    if settings.resume and prior is not None:
        stored = prior.optimizer
        if stored.name != settings.optimizer or stored.options != settings.optimizer_options:
            raise ValueError(
                f"cannot resume: the model was trained with optimizer={stored.name!r} "
                f"{stored.options}, but train() was given optimizer={settings.optimizer!r} "
                f"{settings.optimizer_options}; pass the same optimizer or resume=False")
        if settings.epochs < prior.epoch:
            raise ValueError(f"cannot resume to epochs={settings.epochs}: the model has already "
                             f"run {prior.epoch} epochs (with resume=True, epochs is the total)")
        if settings.shuffle_seed is not None and settings.shuffle_seed != prior.shuffle_seed:
            raise ValueError(f"cannot resume with shuffle_seed={settings.shuffle_seed}: the "
                             f"model's shuffle stream came from shuffle_seed="
                             f"{prior.shuffle_seed} (None: derived from the model seed)")
        stored.learning_rate = settings.learning_rate  # the rate may change between sessions
        return TrainingState(
            epoch=prior.epoch, optimizer=stored, shuffle_rng=prior.shuffle_rng,
            shuffle_seed=prior.shuffle_seed, batch_size=settings.batch_size,
            weight_decay=settings.weight_decay, clip=settings.clip,
            clip_value=settings.clip_value)
    optimizer = settings.new_optimizer()
    optimizer.reset(model.layout.size, model.params.dtype)
    return TrainingState(
        epoch=0, optimizer=optimizer,
        shuffle_rng=shuffle_generator(model.seed, settings.shuffle_seed),
        shuffle_seed=settings.shuffle_seed, batch_size=settings.batch_size,
        weight_decay=settings.weight_decay, clip=settings.clip, clip_value=settings.clip_value)


# ---- data ------------------------------------------------------------------------------------

@dataclass
class Data:
    """A checked data set. ``features`` may be the caller's own array (when it already has the
    model's dtype): it is only ever read, never written."""

    n: int
    features: Array  # X: (n, n_features) in the model's dtype
    targets: Array  # encoded targets: (k, n)

    def inputs(self) -> Array:
        """[X^T; 1]: (n_features + 1, n), features-by-samples, for a fixed batch (a copy)."""
        inputs = np.ones((self.features.shape[1] + 1, self.n), dtype=self.features.dtype)
        inputs[:-1] = self.features.T
        return inputs

    def target_rows(self) -> Array:
        """The targets samples-major, (n, k), for gathering mini-batches (a copy)."""
        return np.ascontiguousarray(self.targets.T)


def prepare_data(model: Model, X: Any, y: Any, suffix: str = "") -> Data:
    """Check X: (n, n_features) and y: (n,) against the model; never writes into X or y."""
    dtype = model.params.dtype
    features = check_features(X, model.layer_sizes[0], dtype, name="X" + suffix)
    n = features.shape[0]
    labels = check_labels(y, n, model.n_classes, model.output, name="y" + suffix)
    k = model.layer_sizes[-1]
    return Data(n, features, model.output_layer.encode_targets(labels, k, dtype))


# ---- one gradient ----------------------------------------------------------------------------

def gradient_into(net: Network, output: OutputLayer, grad_blocks: Sequence[Array],
                  ws: Workspace) -> BatchSums:
    """grad_blocks[l] = d(mean loss)/d[W_l; b_l] on the batch in ``ws``, unclipped and without
    weight decay; returns the batch's summed loss, squared error and hits."""
    z = forward(net, ws)
    delta = ws.delta[-1]
    sums = output.loss_and_delta(z, ws.targets, delta, ws.scratch)
    np.multiply(delta, ws.inv_n, out=delta)  # (P - Y) / n: the MEAN loss
    backward(net, grad_blocks, ws)
    return sums


def add_sums(sums: Sequence[BatchSums]) -> BatchSums:
    """The loss sums of a batch's parts added up, in part order."""
    loss_sum = sq_sum = 0.0
    n_correct = 0
    for part_loss, part_sq, part_correct in sums:
        loss_sum += part_loss
        sq_sum += part_sq
        n_correct += part_correct
    return loss_sum, sq_sum, n_correct


def batch_gradient(net: Network, output: OutputLayer, parts: BatchParts, grads: Array,
                   grad_blocks: Sequence[Array], lanes: Lanes,
                   load: Callable[[int], None] | None = None,
                   prefetch: Callable[[int], None] | None = None) -> BatchSums:
    """grads (flat; grad_blocks its blocks) = d(mean loss)/dθ on the batch in ``parts``, as
    ``gradient_into``; a split batch's parts run on ``lanes`` and their gradients are added in
    part order. ``load(i)`` first fills part i's workspace (a gathered mini-batch);
    ``prefetch(i)`` then fills it with the next batch's rows, on a worker's lane while the
    caller goes on with the update (that worker's next tasks start after it)."""
    if not parts.split:
        if load is not None:
            load(0)
        return gradient_into(net, output, grad_blocks, parts.workspaces[0])

    def part(i: int) -> BatchSums:
        if load is not None:
            load(i)
        return gradient_into(net, output, parts.grad_blocks[i], parts.workspaces[i])

    sums = lanes.run(part, len(parts.workspaces), prefetch)
    np.add(parts.grads[0], parts.grads[1], out=grads)
    for part_grads in parts.grads[2:]:
        np.add(grads, part_grads, out=grads)
    return add_sums(sums)


def gather(parts: BatchParts, features: Array, target_rows: Array,
           index: npt.NDArray[np.intp]) -> Callable[[int], None]:
    """load(i) for ``batch_gradient``: gather part i's share of the samples ``index`` of
    X: (N, n_features) and target_rows: (N, k) into its workspace."""
    def load(i: int) -> None:
        start, stop = parts.ranges[i]
        parts.workspaces[i].load_batch(features, target_rows, index[start:stop])

    return load


def batch_loss(net: Network, output: OutputLayer, parts: BatchParts, lanes: Lanes) -> BatchSums:
    """Loss sums of the current parameters on the fixed data set in ``parts`` (no gradient)."""
    def part(i: int) -> BatchSums:
        ws = parts.workspaces[i]
        z = forward(net, ws)
        return output.loss_and_delta(z, ws.targets, ws.delta[-1], ws.scratch)

    return add_sums(lanes.run(part, len(parts.workspaces)))


def add_weight_decay(grads: Array, params: Array, decay: Array, scratch: Array) -> None:
    """grads += wd W: the gradient of the L2 penalty wd/2 |W|^2, weights only.

    ``decay`` is the flat vector wd * ParameterLayout.weight_mask (0 at biases).
    """
    np.multiply(params, decay, out=scratch)
    np.add(grads, scratch, out=grads)


# ---- the loop --------------------------------------------------------------------------------

class _NonFinite(Exception):
    """Internal: something became non-finite; the message says what."""


class _Snapshot:
    """A copy of the state one epoch changes, to roll back to."""

    def __init__(self, params: Array, state: TrainingState, with_rng: bool) -> None:
        self._live_params, self._state, self._with_rng = params, state, with_rng
        self._params = np.empty_like(params)
        self._moments = {k: np.empty_like(v) for k, v in state.optimizer.state.items()}
        self._step = self._epoch = 0
        self._rng: Mapping[str, Any] | None = None

    def take(self) -> None:
        np.copyto(self._params, self._live_params)
        optimizer = self._state.optimizer
        if self._moments:
            for name, saved in self._moments.items():
                np.copyto(saved, optimizer.state[name])
        self._step, self._epoch = optimizer.step_count, self._state.epoch
        if self._with_rng:  # a full batch never draws from the generator
            self._rng = self._state.shuffle_rng.bit_generator.state

    def restore(self) -> None:
        np.copyto(self._live_params, self._params)
        optimizer = self._state.optimizer
        for name, saved in self._moments.items():
            np.copyto(optimizer.state[name], saved)
        optimizer.step_count, self._state.epoch = self._step, self._epoch
        if self._rng is not None:
            self._state.shuffle_rng.bit_generator.state = self._rng


TRAIN_METRICS = ("train_loss", "train_mse", "train_accuracy")
VAL_METRICS = ("val_loss", "val_mse", "val_accuracy")


def _metrics(names: tuple[str, str, str], sums: BatchSums, n: int, k: int) -> dict[str, float]:
    """Means from a pass's sums: loss per sample, squared error per output, accuracy."""
    loss_sum, sq_sum, n_correct = sums
    return {names[0]: loss_sum / n, names[1]: sq_sum / (n * k), names[2]: n_correct / n}


class Loop(Generic[M]):
    """Runs epochs on one model with one set of settings; see ``run``."""

    def __init__(self, model: M, settings: TrainSettings, state: TrainingState, train: Data,
                 val: Data | None, callbacks: Sequence[Callback[M]]) -> None:
        self.model, self.settings, self.state = model, settings, state
        self.callbacks = tuple(callbacks)
        self.params, self.net, self.output = model.params, model.network, model.output_layer
        self.k = model.layer_sizes[-1]
        dtype = self.params.dtype
        self.grads = np.empty_like(self.params)
        self.grad_blocks = model.layout.blocks(self.grads)
        self.clip = bound_clipper(state.clip, state.clip_value, dtype)
        self.decay: Array | None = None
        if state.weight_decay > 0:  # wd on weights only: a flat vector of wd or 0 per entry
            self.decay = model.layout.weight_mask(dtype) * state.weight_decay
            self.decay_term = np.empty_like(self.params)
        self.n = train.n
        self.batch_size = None if state.batch_size is None else min(state.batch_size, train.n)
        net, layout = self.net, model.layout
        if self.batch_size is None:
            self.full = BatchParts(net, layout, train.n, train.inputs(), train.targets)
            every = [self.full]
        else:  # batches are gathered from X itself: no copy of the whole data set
            self.features, self.target_rows = train.features, train.target_rows()
            self.batch = BatchParts(net, layout, self.batch_size)
            rest = train.n % self.batch_size
            self.last = BatchParts(net, layout, rest) if rest else self.batch
            every = [self.batch, self.last]
        self.val = None if val is None else BatchParts(net, layout, val.n, val.inputs(),
                                                       val.targets)
        if self.val is not None:
            every.append(self.val)
        # Threads only for batches that split; the thread count never changes the result.
        lanes, self.blas_limit = plan_threads(settings.threads,
                                              max(len(parts.ranges) for parts in every))
        self.lanes = Lanes(lanes)
        self.snapshot = _Snapshot(self.params, state, with_rng=self.batch_size is not None)
        self.best: _Snapshot | None = None
        if settings.early_stopping_patience is not None:
            self.best = _Snapshot(self.params, state, with_rng=True)

    def step(self, parts: BatchParts, index: npt.NDArray[np.intp] | None = None,
             next_index: npt.NDArray[np.intp] | None = None) -> BatchSums:
        """One gradient step on a batch: the fixed one in ``parts``, or the samples ``index``
        of the training data gathered into them (a split batch may have been gathered by the
        previous step, and gathers ``next_index``, the next batch of the same size, if given).
        Its loss sums are from before the step."""
        if not parts.split:  # the common case, inline: small batches are bound by call counts
            ws = parts.workspaces[0]
            if index is not None:
                ws.load_batch(self.features, self.target_rows, index)
            sums = gradient_into(self.net, self.output, self.grad_blocks, ws)
        else:
            load = prefetch = None
            if index is not None and not parts.prefetched:
                load = gather(parts, self.features, self.target_rows, index)
            if next_index is not None:
                prefetch = gather(parts, self.features, self.target_rows, next_index)
            parts.prefetched = prefetch is not None
            sums = batch_gradient(self.net, self.output, parts, self.grads, self.grad_blocks,
                                  self.lanes, load, prefetch)
        if not math.isfinite(sums[0]):
            raise _NonFinite(f"the training loss became {sums[0] / parts.n}")
        grads = self.grads
        if self.decay is not None:
            add_weight_decay(grads, self.params, self.decay, self.decay_term)
        self.clip(grads)
        self.state.optimizer.update(self.params, grads)
        return sums

    def train_epoch(self) -> BatchSums:
        """One pass over the training data; the summed loss, squared error and hits."""
        if self.batch_size is None:
            return self.step(self.full)
        loss_sum = sq_sum = 0.0
        n_correct = 0
        order = self.state.shuffle_rng.permutation(self.n)
        size = self.batch_size
        for start in range(0, self.n, size):
            index = order[start:start + size]
            parts = self.batch if index.size == size else self.last
            following = order[start + size:start + 2 * size]  # gathered ahead if the same size
            batch_loss, batch_sq, batch_correct = self.step(
                parts, index, following if following.size == size else None)
            loss_sum += batch_loss
            sq_sum += batch_sq
            n_correct += batch_correct
        return loss_sum, sq_sum, n_correct

    def evaluate(self, parts: BatchParts) -> BatchSums:
        """Loss sums of the current parameters on a fixed data set (no update)."""
        return batch_loss(self.net, self.output, parts, self.lanes)

    def run(self) -> History:
        """Train for the settings' epochs, BLAS limited as planned (one thread per lane when
        a batch's parts run on two lanes and two cores)."""
        try:
            with blas_limited(self.blas_limit):
                return self._run_epochs()
        finally:
            self.lanes.close()

    def _run_epochs(self) -> History:
        settings, state, params = self.settings, self.state, self.params
        history = History(metrics={name: [] for name in self._metric_names()})
        # Bound methods and columns looked up once: on a small network an epoch is a few
        # dozen NumPy calls of microseconds each, so per-epoch Python bookkeeping is a visible
        # share of it.
        take_snapshot, train_epoch, val = self.snapshot.take, self.train_epoch, self.val
        appends = [history.metrics[name].append for name in self._metric_names()]
        append_epoch, on_epoch_end = history.epochs.append, state.optimizer.on_epoch_end
        n, nk = self.n, self.n * self.k
        patience, callbacks = settings.early_stopping_patience, self.callbacks
        # params . 1 is their sum: inf/nan if any one is (a dot is cheaper than add.reduce)
        ones = np.ones_like(params)
        best_loss = math.inf
        for epoch in range(state.epoch + 1, settings.epochs + 1):
            take_snapshot()
            try:
                loss_sum, sq_sum, n_correct = train_epoch()
                # (the loss itself was checked for each batch in ``step``)
                if not math.isfinite(np.dot(params, ones)):
                    raise _NonFinite("a parameter became non-finite")
                # TRAIN_METRICS, as a literal: cheaper than _metrics' call and zip
                metrics = {"train_loss": loss_sum / n, "train_mse": sq_sum / nk,
                           "train_accuracy": n_correct / n}
                if val is not None:
                    metrics.update(_metrics(VAL_METRICS, self.evaluate(val), val.n, self.k))
                    if not math.isfinite(metrics["val_loss"]):
                        raise _NonFinite(f"the validation loss became {metrics['val_loss']}")
            except _NonFinite as why:
                self.snapshot.restore()
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}: {why} (optimizer="
                    f"{state.optimizer.name}, learning_rate={state.optimizer.learning_rate:g}, "
                    f"clip={state.clip}); the model was left as at the end of epoch "
                    f"{epoch - 1}", epoch=epoch, history=history) from None
            state.epoch = epoch
            on_epoch_end(epoch)
            append_epoch(epoch)
            for append, value in zip(appends, metrics.values(), strict=True):
                append(value)
            stop = False
            if val is not None:
                if metrics["val_loss"] < best_loss:
                    best_loss, history.best_epoch = metrics["val_loss"], epoch
                    if self.best is not None:
                        self.best.take()
                elif (patience is not None and history.best_epoch is not None
                      and epoch - history.best_epoch >= patience):
                    stop = True
            for callback in callbacks:
                callback(epoch, metrics, self.model)
            if stop:
                assert self.best is not None
                self.best.restore()
                history.stopped_early = True
                break
        if not history.stopped_early and history.epochs:
            self._warn_if_still_improving(history)
        return history

    def _metric_names(self) -> tuple[str, ...]:
        return TRAIN_METRICS if self.val is None else TRAIN_METRICS + VAL_METRICS

    def _warn_if_still_improving(self, history: History) -> None:
        prefix = "val" if self.val is not None else "train"
        name = f"{prefix}_loss"
        accuracy = history.metrics.get(f"{prefix}_accuracy")
        if accuracy and accuracy[-1] >= CONVERGENCE_ACCURACY:
            return
        losses = history.metrics[name]
        if len(losses) > CONVERGENCE_WINDOW:
            earlier, recent = losses[:-CONVERGENCE_WINDOW], losses[-CONVERGENCE_WINDOW:]
        else:
            earlier, recent = losses[:1], losses[1:]
        if recent and min(recent) < min(earlier) - CONVERGENCE_TOL:
            warnings.warn(
                f"training stopped at the epoch limit ({self.settings.epochs}) while {name} was "
                f"still falling (by {min(earlier) - min(recent):.3g} over the last "
                f"{len(recent)} epochs) at {prefix}_accuracy "
                f"{accuracy[-1] if accuracy else float('nan'):.3f} "
                f"(< {CONVERGENCE_ACCURACY}); more epochs or a larger learning rate may help",
                ConvergenceWarning, stacklevel=5)  # points at the call to fit (in MLP.train)


def fit(model: M, X: Any, y: Any, settings: TrainSettings, *,
        validation: tuple[Any, Any] | None = None,
        callbacks: Sequence[Callback[M]] = ()) -> History:
    """Fit ``model`` by gradient descent on the mean cross-entropy; return the History.

    X: (n_samples, n_features); y: (n_samples,) or (n_samples, 1) class indices 0..k-1.
    X and y are never modified (mini-batches are gathered from X without copying it whole,
    so do not change X while training).
    settings: how to train (see TrainSettings).
    validation: (X_val, y_val) evaluated after every epoch (needed for early stopping).
    callbacks: each called as callback(epoch, metrics, model) after every epoch (epoch is
    1-based); the model is then consistent and can be saved (if early stopping then ends
    training, the model is set back to the best epoch after the callbacks ran).

    The model only changes once all checks have passed: ValueError for bad arguments or data
    leaves it as it was. TrainingDiverged if the loss or a parameter becomes non-finite (see
    the module docstring). Warns (ConvergenceWarning) when the epoch limit is reached while
    the loss still falls.
    """
    if validation is not None and (not isinstance(validation, tuple | list)
                                   or len(validation) != 2):
        raise ValueError("validation must be a pair (X_val, y_val) or None")
    if settings.early_stopping_patience is not None and validation is None:
        raise ValueError("early_stopping_patience needs validation data: pass "
                         "validation=(X_val, y_val)")
    if isinstance(callbacks, str) or not all(callable(cb) for cb in callbacks):
        raise ValueError("callbacks must be a sequence of callables "
                         "callback(epoch, metrics, model)")
    train = prepare_data(model, X, y)
    val = None if validation is None else prepare_data(model, *validation, suffix="_val")
    state = start_state(model, settings)
    model.training_state = state
    # Overflow on the way to divergence is detected (TrainingDiverged), not warned about; the
    # setting also covers the callbacks, which run inside the loop.
    with np.errstate(over="ignore", invalid="ignore"):
        return Loop(model, settings, state, train, val, callbacks).run()


def loss_and_gradients(model: Model, X: Any, y: Any, *, weight_decay: float = 0.0,
                       indices: npt.ArrayLike | None = None, parts: int | None = None,
                       threads: int = 1) -> tuple[float, list[Array], list[Array]]:
    """Mean loss (+ wd/2 |W|^2) and its gradients, unclipped, on X, y (or rows ``indices``);
    the model is not changed. For gradient checks.

    Runs the training code paths: the full-batch layout, or the mini-batch gather when
    ``indices`` is given; the batch split into ``parts`` (default: as training splits it)
    run on ``threads`` (see parallel.py); weight decay as the loop adds it.
    Returns (loss, [dW_l: (fan_in, fan_out)], [db_l: (1, fan_out)]), copies.
    """
    data = prepare_data(model, X, y)
    net, layout = model.network, model.layout
    load = None
    if indices is None:
        batch = BatchParts(net, layout, data.n, data.inputs(), data.targets, parts=parts)
    else:
        index = np.asarray(indices, dtype=np.intp)
        batch = BatchParts(net, layout, index.size, parts=parts)
        load = gather(batch, data.features, data.target_rows(), index)
    grads = np.empty_like(model.params)
    lanes = Lanes(threads)
    try:
        loss_sum, _, _ = batch_gradient(net, model.output_layer, batch, grads,
                                        layout.blocks(grads), lanes, load)
    finally:
        lanes.close()
    loss = loss_sum / batch.n
    if weight_decay:
        decay = layout.weight_mask(model.params.dtype) * weight_decay
        loss += 0.5 * float(np.dot(model.params * decay, model.params))
        add_weight_decay(grads, model.params, decay, np.empty_like(grads))
    weights = [w.copy() for w in layout.weights(grads)]
    biases = [b.copy() for b in layout.biases(grads)]
    return loss, weights, biases
