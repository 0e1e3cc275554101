"""Training behaviour: learning, history, callbacks, early stopping, divergence, determinism."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

from pipeline.mlp import MLP, ConvergenceWarning, TrainingDiverged, TrainSettings, fit, optimizers
from pipeline.mlp.training import CONVERGENCE_ACCURACY

pytestmark = pytest.mark.filterwarnings("ignore::pipeline.mlp.ConvergenceWarning")

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


def blobs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    y = rng.integers(0, 3, n)
    return centers[y] + rng.normal(0.0, 1.0, (n, 2)), y


def small_binary(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)


def params(model: MLP) -> list[np.ndarray]:
    return [p.copy() for p in [*model.weights, *model.biases]]


def assert_same_params(a: MLP, b: MLP) -> None:
    for x, y in zip(params(a), params(b), strict=True):
        np.testing.assert_array_equal(x, y)


# ---- learning --------------------------------------------------------------------------------

def test_learns_xor():
    model = MLP([2, 8, 1], hidden_activation="tanh", seed=0)
    model.train(XOR_X, XOR_Y, learning_rate=0.05, epochs=500, optimizer="adam")
    np.testing.assert_array_equal(model.predict(XOR_X), XOR_Y)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_learns_three_blobs_with_softmax(dtype):
    X, y = blobs()
    model = MLP([2, 16, 3], output="softmax", dtype=dtype, seed=0)
    history = model.train(X[:200], y[:200], learning_rate=0.01, epochs=100, optimizer="adam",
                          batch_size=32, validation=(X[200:], y[200:]), shuffle_seed=1)
    assert model.weights[0].dtype == np.dtype(dtype)
    assert np.mean(model.predict(X[200:]) == y[200:]) >= 0.9
    assert history.metrics["val_accuracy"][-1] >= 0.9
    proba = model.predict_proba(X[200:])
    assert proba.shape == (100, 3) and proba.dtype == np.dtype(dtype)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "rmsprop", "adam"])
def test_every_optimizer_lowers_the_loss(optimizer):
    X, y = small_binary()
    model = MLP([3, 6, 1], seed=0)
    history = model.train(X, y, learning_rate=0.01, epochs=30, optimizer=optimizer,
                          batch_size=8)
    assert history.metrics["train_loss"][-1] < history.metrics["train_loss"][0]


# ---- history and callbacks -------------------------------------------------------------------

def test_history_and_callbacks():
    X, y = small_binary()
    calls = []

    def callback(epoch, metrics, model):
        calls.append((epoch, dict(metrics), model.epoch))
        metrics["train_loss"] = -1.0  # must not leak into the history

    model = MLP([3, 4, 1], seed=0)
    history = model.train(X, y, learning_rate=0.1, epochs=7, batch_size=16,
                          validation=(X[:10], y[:10]), callbacks=[callback])
    keys = {"train_loss", "train_mse", "train_accuracy", "val_loss", "val_mse", "val_accuracy"}
    assert len(history) == 7 and history.epochs == list(range(1, 8))
    assert set(history.metrics) == keys
    assert all(len(v) == 7 for v in history.metrics.values())
    assert -1.0 not in history.metrics["train_loss"]
    assert [c[0] for c in calls] == list(range(1, 8))
    assert all(set(c[1]) == keys and c[2] == c[0] for c in calls)
    assert history.best_epoch == int(np.argmin(history.metrics["val_loss"])) + 1
    assert not history.stopped_early
    assert all(0.0 <= a <= 1.0 for a in history.metrics["val_accuracy"])
    no_val = MLP([3, 4, 1], seed=0).train(X, y, learning_rate=0.1, epochs=3)
    assert set(no_val.metrics) == {"train_loss", "train_mse", "train_accuracy"}
    assert no_val.best_epoch is None


def test_validation_metrics_are_those_of_the_final_parameters():
    X, y = small_binary()
    model = MLP([3, 4, 1], seed=0)
    history = model.train(X, y, learning_rate=0.1, epochs=5, validation=(X, y))
    p = model.predict_proba(X)[:, 0]
    assert history.metrics["val_mse"][-1] == pytest.approx(np.mean((p - y) ** 2), rel=1e-12)
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert history.metrics["val_loss"][-1] == pytest.approx(loss, rel=1e-10)
    assert history.metrics["val_accuracy"][-1] == np.mean(model.predict(X) == y)


def test_softmax_metrics_match_their_definitions():
    X, y = blobs(60)
    model = MLP([2, 5, 3], output="softmax", seed=1)
    P = model.predict_proba(X)
    onehot = np.eye(3)[y]
    history = model.train(X, y, learning_rate=0.1, epochs=1)  # full batch: start-of-epoch
    assert history.metrics["train_mse"][0] == pytest.approx(np.mean((P - onehot) ** 2))
    assert history.metrics["train_loss"][0] == pytest.approx(-np.mean(np.log(P[range(60), y])))
    assert history.metrics["train_accuracy"][0] == np.mean(P.argmax(axis=1) == y)


def test_mini_batches_cover_every_sample_including_a_partial_last_batch():
    X, y = small_binary(n=10)
    model = MLP([3, 4, 1], seed=0)
    before = model.predict_proba(X)[:, 0]
    history = model.train(X, y, learning_rate=1e-12, epochs=1, batch_size=4, clip="none")
    # With a negligible rate the per-batch metrics are those of the initial model.
    assert history.metrics["train_mse"][0] == pytest.approx(np.mean((before - y) ** 2),
                                                            rel=1e-9)


def test_resume_false_restarts_the_epoch_count_and_the_optimiser():
    X, y = small_binary()
    model = MLP([3, 4, 1], seed=0)
    model.train(X, y, learning_rate=0.01, epochs=4, optimizer="adam")
    assert model.epoch == 4 and model.training_state.optimizer.step_count == 4
    history = model.train(X, y, learning_rate=0.01, epochs=2, optimizer="sgd")
    assert history.epochs == [1, 2] and model.epoch == 2


def test_convergence_warning_only_when_still_improving_below_the_accuracy_bar():
    X, y = small_binary()
    with pytest.warns(ConvergenceWarning, match=r"epoch limit.*train_accuracy 0\.\d+ \(< 0.99\)"):
        history = MLP([3, 4, 1], seed=0).train(X, y, learning_rate=0.1, epochs=20)
    assert history.metrics["train_accuracy"][-1] < CONVERGENCE_ACCURACY
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        MLP([3, 4, 1], seed=0).train(X, y, learning_rate=1e-9, epochs=20)  # flat: no warning
        # Still falling, but every training row is right: no reason to train longer.
        model = MLP([3, 8, 1], seed=0)
        history = model.train(X, y, learning_rate=0.01, optimizer="adam", epochs=100)
    assert history.metrics["train_accuracy"][-1] >= CONVERGENCE_ACCURACY
    losses = history.metrics["train_loss"]
    assert losses[-1] < min(losses[:-10]) - 1e-4  # the loss was still falling


# ---- settings --------------------------------------------------------------------------------

def test_train_settings_are_checked_and_normalised_once_built():
    settings = TrainSettings(learning_rate=1, epochs=np.int64(3), optimizer="adam",
                             optimizer_options={"beta1": 0.5}, clip_value=2, resume=np.True_)
    assert settings.learning_rate == 1.0 and isinstance(settings.learning_rate, float)
    assert settings.epochs == 3 and type(settings.epochs) is int
    assert settings.optimizer_options == {"beta1": 0.5, "beta2": 0.999, "eps": 1e-8}
    assert settings.clip_value == 2.0 and settings.resume is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 4  # type: ignore[misc]
    for kwargs, message in [
        (dict(resume="yes"), "resume must be True or False, got 'yes'"),
        (dict(threads=0), "threads must be None or an int >= 1, got 0"),
        (dict(early_stopping_patience=0), "early_stopping_patience must be None or an int >= 1"),
        (dict(optimizer="sgd", learning_rate=-1.0), "learning_rate must be a finite number > 0"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            TrainSettings(**{"learning_rate": 0.1, "epochs": 2, **kwargs})
        assert "\n" not in str(info.value)


def test_the_optimiser_is_checked_without_being_built_and_built_once_per_fresh_run(monkeypatch):
    built = []
    original = optimizers.Optimizer.__init__

    def counting(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(optimizers.Optimizer, "__init__", counting)
    settings = TrainSettings(learning_rate=0.01, epochs=2, optimizer="momentum")
    assert built == []
    X, y = small_binary()
    model = MLP([3, 4, 1], seed=0)
    fit(model, X, y, settings)
    assert built == ["Momentum"]
    fit(model, X, y, dataclasses.replace(settings, epochs=4, resume=True))
    assert built == ["Momentum"]  # resuming keeps the model's own optimiser
    assert model.epoch == 4


def test_train_is_fit_with_train_settings():
    X, y = small_binary()
    val = (X[:10], y[:10])
    options = dict(learning_rate=0.05, epochs=6, optimizer="adam", batch_size=8,
                   weight_decay=1e-3, clip="norm", shuffle_seed=2)
    seen = []
    a, b = MLP([3, 5, 1], seed=1), MLP([3, 5, 1], seed=1)
    history_a = a.train(X, y, validation=val, **options)
    history_b = fit(b, X, y, TrainSettings(**options), validation=val,
                    callbacks=[lambda epoch, metrics, model: seen.append((epoch, model))])
    assert history_a == history_b
    assert a.to_dict() == b.to_dict()
    assert seen == [(epoch, b) for epoch in range(1, 7)]


# ---- early stopping --------------------------------------------------------------------------

def test_early_stopping_restores_the_best_epoch():
    X, y = small_binary()
    X_val, y_val = X[:20], 1 - y[:20]  # flipped labels: fitting the train set hurts val
    settings = dict(learning_rate=0.05, optimizer="adam", batch_size=10, shuffle_seed=3)
    model = MLP([3, 8, 1], seed=0)
    history = model.train(X, y, epochs=200, validation=(X_val, y_val),
                          early_stopping_patience=3, **settings)
    assert history.stopped_early
    best = history.best_epoch
    assert len(history) == best + 3
    assert history.metrics["val_loss"][best - 1] == min(history.metrics["val_loss"])
    assert model.epoch == best
    # Exactly the state of a run that stopped at the best epoch.
    reference = MLP([3, 8, 1], seed=0)
    reference.train(X, y, epochs=best, **settings)
    assert_same_params(model, reference)
    assert model.to_dict() == reference.to_dict()


def test_early_stopping_needs_validation_data():
    X, y = small_binary()
    with pytest.raises(ValueError, match="early_stopping_patience needs validation data"):
        MLP([3, 4, 1]).train(X, y, learning_rate=0.1, epochs=5, early_stopping_patience=2)


# ---- divergence ------------------------------------------------------------------------------

def test_divergence_names_the_epoch_and_keeps_the_last_finite_state():
    X, y = small_binary()
    X = X * 1e100  # un-normalised data, no clipping, an absurd rate
    settings = dict(learning_rate=1e200, clip="none")
    model = MLP([3, 4, 1], seed=0)
    with pytest.raises(TrainingDiverged, match="diverged at epoch 2") as info:
        model.train(X, y, epochs=10, **settings)
    error = info.value
    assert isinstance(error, RuntimeError) and isinstance(error, ArithmeticError)
    assert error.epoch == 2 and len(error.history) == 1
    assert model.epoch == 1
    reference = MLP([3, 4, 1], seed=0)
    reference.train(X, y, epochs=1, **settings)
    assert_same_params(model, reference)
    assert all(np.isfinite(p).all() for p in params(model))


def test_divergence_in_a_mini_batch_rolls_back_the_whole_epoch():
    X, y = small_binary()
    X = X * 1e100
    settings = dict(learning_rate=1e200, clip="none", batch_size=7, optimizer="momentum")
    model = MLP([3, 4, 1], seed=0)
    with pytest.raises(TrainingDiverged) as info:
        model.train(X, y, epochs=10, **settings)
    epoch = info.value.epoch
    assert model.epoch == epoch - 1
    reference = MLP([3, 4, 1], seed=0)
    if epoch > 1:
        reference.train(X, y, epochs=epoch - 1, **settings)
        assert model.to_dict() == reference.to_dict()
    else:
        assert_same_params(model, reference)


# ---- determinism -----------------------------------------------------------------------------

def _train_and_hash(tmp_dir) -> tuple[str, list[float]]:
    X, y = blobs(120, seed=5)
    model = MLP([2, 6, 5, 3], output="softmax", seed=9)
    history = model.train(X, y, learning_rate=0.01, epochs=5, optimizer="adam", batch_size=16,
                          weight_decay=1e-3, clip="norm", validation=(X[:30], y[:30]))
    path = tmp_dir / "model.json"
    model.save(path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), history.metrics["val_loss"]


def test_deterministic_across_models_and_processes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    digest_a, losses_a = _train_and_hash(tmp_path / "a")
    digest_b, losses_b = _train_and_hash(tmp_path / "b")
    assert digest_a == digest_b and losses_a == losses_b
    code = (
        "import pathlib, sys, warnings; warnings.simplefilter('ignore');"
        "sys.path.insert(0, 'tests'); import test_mlp_training as t;"
        f"print(t._train_and_hash(pathlib.Path({str(tmp_path / 'b')!r}))[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(__import__("pathlib").Path(__file__).parents[1]))
    assert out.stdout.strip() == digest_a


def test_repr_shows_the_architecture():
    model = MLP([4, 8, 6, 3], hidden_activation=["relu", "tanh"], output="softmax", seed=2)
    assert repr(model) == ("MLP(4 -> 8 relu -> 6 tanh -> 3 softmax; init=uniform, "
                           "dtype=float64, seed=2, epoch=0)")
