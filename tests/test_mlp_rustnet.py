"""Parity with RustNet: its initialisation, its update step, its task, its Python API."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pipeline.mlp import MLP, ConvergenceWarning, PyNeuralNetwork


def rf_task() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """RustNet's RF data set: 1000 points, label = noisy sine > 0; 800 train / 200 test,
    z-scored with the train statistics."""
    frequency = np.linspace(0, 100, 1000)
    amplitude = np.sin(frequency) + np.random.default_rng(42).normal(0, 0.1, 1000)
    label = (amplitude > 0).astype(np.int64)
    X = np.column_stack([frequency, amplitude])
    idx = np.arange(1000)
    np.random.default_rng(7).shuffle(idx)
    train, test = idx[:800], idx[800:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    return (X[train] - mean) / std, label[train], (X[test] - mean) / std, label[test]


def _textbook_step(X, y, Ws, bs, lr):
    """RustNet's full-batch step in plain NumPy, W: (in, out), b: (1, out)."""
    Y = y.reshape(-1, 1).astype(np.float64)
    n = len(X)
    As, Zs = [X], []
    for i, (W, b) in enumerate(zip(Ws, bs, strict=True)):
        Z = As[-1] @ W + b
        Zs.append(Z)
        As.append(np.maximum(Z, 0) if i < len(Ws) - 1 else 1 / (1 + np.exp(-Z)))
    mse = float(np.mean((As[-1] - Y) ** 2))
    dZ = As[-1] - Y
    new_W, new_b, clipped = list(Ws), list(bs), False
    for i in reversed(range(len(Ws))):
        dW = As[i].T @ dZ / n
        db = dZ.sum(axis=0, keepdims=True) / n
        if i > 0:
            dZ = (dZ @ Ws[i].T) * (Zs[i - 1] > 0)  # weights before the update
        clipped |= bool((np.abs(dW) > 1).any() or (np.abs(db) > 1).any())
        new_W[i] = Ws[i] - lr * np.clip(dW, -1, 1)
        new_b[i] = bs[i] - lr * np.clip(db, -1, 1)
    return new_W, new_b, mse, clipped


@pytest.mark.parametrize("layer_sizes", [[2, 12, 1], [3, 5, 4, 1], [4, 1]])
def test_sgd_steps_match_the_textbook_reference(layer_sizes):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, layer_sizes[0])) * 20  # large enough that clipping bites
    y = (X[:, 0] < 0).astype(int)
    model = MLP(layer_sizes, seed=0)
    Ws = [w.copy() for w in model.weights]
    bs = [b.copy() for b in model.biases]
    mses, any_clipped = [], False
    for _ in range(3):
        Ws, bs, mse, clipped = _textbook_step(X, y, Ws, bs, lr=0.2)
        mses.append(mse)
        any_clipped |= clipped
    assert any_clipped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        history = model.train(X, y, learning_rate=0.2, epochs=3)
    for ours, ref in zip([*model.weights, *model.biases], [*Ws, *bs], strict=True):
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)
    # train_mse of epoch e is RustNet's MSE of the parameters at the start of epoch e.
    np.testing.assert_allclose(history.metrics["train_mse"], mses, rtol=1e-12)


def test_uniform_init_is_rustnets():
    model = MLP([5, 40, 30, 1], seed=11)
    rng = np.random.default_rng(11)  # drawn layer by layer, W: (in, out)
    for w, b, (fan_in, fan_out) in zip(model.weights, model.biases,
                                       [(5, 40), (40, 30), (30, 1)], strict=True):
        np.testing.assert_array_equal(w, rng.uniform(-0.5, 0.5, size=(fan_in, fan_out)))
        assert w.min() >= -0.5 and w.max() < 0.5
        assert b.shape == (1, fan_out) and not b.any()


def test_he_and_xavier_scales():
    he = MLP([400, 300, 1], init="he", seed=0).weights[0]
    assert he.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    xavier = MLP([400, 300, 1], init="xavier", seed=0).weights[0]
    bound = np.sqrt(6 / 700)
    assert xavier.min() >= -bound and xavier.max() < bound
    assert xavier.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)
    f32 = MLP([400, 300, 1], init="he", seed=0, dtype="float32").weights[0]
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, he.astype(np.float32))


def test_learns_rustnets_rf_task():
    X_train, y_train, X_test, y_test = rf_task()
    model = MLP([2, 12, 1], init="uniform", seed=0)
    with warnings.catch_warnings():  # the loss still falls, but at >= 0.99 accuracy: no warning
        warnings.simplefilter("error", ConvergenceWarning)
        history = model.train(X_train, y_train, learning_rate=0.003, epochs=3000,
                              optimizer="sgd", clip="value", clip_value=1.0)
    assert len(history) == 3000
    assert history.metrics["train_loss"][-1] < history.metrics["train_loss"][0]
    assert np.mean(model.predict(X_test) == y_test) >= 0.99


def test_py_neural_network_api(tmp_path):
    X_train, y_train, X_test, _ = rf_task()
    net = PyNeuralNetwork([2, 12, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mses = net.train(X_train, y_train.reshape(-1, 1), 0.003, 50)
    assert len(mses) == 50 and mses[-1] < mses[0]
    proba = net.predict(X_test)
    assert proba.shape == (200, 1)
    # The same as MLP with RustNet's defaults.
    model = MLP([2, 12, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.train(X_train, y_train, learning_rate=0.003, epochs=50)
    np.testing.assert_array_equal(proba, model.predict_proba(X_test))
    net.save(tmp_path / "net.json")
    loaded = PyNeuralNetwork.load(tmp_path / "net.json")
    np.testing.assert_array_equal(loaded.predict(X_test), proba)
    assert repr(loaded) == "PyNeuralNetwork([2, 12, 1])"
