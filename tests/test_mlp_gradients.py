"""Backprop against central differences and against the plain textbook passes, for every
hidden activation and both outputs.

The analytic gradient is the one training uses (``training.loss_and_gradients``: forward,
loss, backward, weight decay; unclipped). The numerical one perturbs each parameter through
the public ``weights``/``biases`` views by +-1e-6 and differences the loss. The plain one is
``network.plain_forward``/``plain_backward`` with a textbook cross-entropy.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.mlp import ACTIVATIONS, MLP, register_activation
from pipeline.mlp.network import Workspace, plain_backward, plain_forward
from pipeline.mlp.training import loss_and_gradients

BUILT_IN = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]
EPS = 1e-6
MINI_BATCH = [0, 2, 3, 5, 6]


def _data(n_features: int, n_classes: int, n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    y = np.arange(n) % n_classes  # every class present
    rng.shuffle(y)
    return X, y


def _numerical_gradients(model: MLP, X, y, weight_decay: float, indices):
    def loss() -> float:
        return loss_and_gradients(model, X, y, weight_decay=weight_decay, indices=indices)[0]

    grads = []
    for param in [*model.weights, *model.biases]:  # views: writing perturbs the model
        g = np.empty_like(param)
        for idx in np.ndindex(param.shape):
            original = param[idx]
            param[idx] = original + EPS
            plus = loss()
            param[idx] = original - EPS
            minus = loss()
            param[idx] = original
            g[idx] = (plus - minus) / (2 * EPS)
        grads.append(g)
    return grads


def _relative_error(analytic, numerical) -> float:
    a = np.concatenate([g.ravel() for g in analytic])
    n = np.concatenate([g.ravel() for g in numerical])
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n)))


def _check(model: MLP, X, y, weight_decay: float = 0.0, indices=None) -> None:
    _, dW, db = loss_and_gradients(model, X, y, weight_decay=weight_decay, indices=indices)
    numerical = _numerical_gradients(model, X, y, weight_decay, indices)
    assert _relative_error([*dW, *db], numerical) < 1e-6


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
@pytest.mark.parametrize("indices", [None, MINI_BATCH], ids=["full", "mini"])
@pytest.mark.parametrize("output,k", [("sigmoid", 1), ("softmax", 3)])
@pytest.mark.parametrize("activation", BUILT_IN)
def test_gradient_matches_central_differences(activation, output, k, indices, weight_decay):
    X, y = _data(3, 2 if k == 1 else k)
    model = MLP([3, 4, 5, k], hidden_activation=activation, output=output, seed=1)
    _check(model, X, y, weight_decay, indices)


@pytest.mark.parametrize("layer_sizes", [[3, 5, 1], [6, 3, 1], [4, 1], [2, 3, 1, 4, 1]])
@pytest.mark.parametrize("indices", [None, MINI_BATCH], ids=["full", "mini"])
def test_gradient_on_every_backward_path(layer_sizes, indices):
    # [3, 5, 1] takes backward's rank-one shortcut for the first layer, [6, 3, 1] does not;
    # [4, 1] has no hidden layer; [2, 3, 1, 4, 1] has a hidden layer of one unit.
    X, y = _data(layer_sizes[0], 2)
    model = MLP(layer_sizes, hidden_activation="tanh", seed=2)
    _check(model, X, y, 0.05, indices)


def test_gradient_with_mixed_activations():
    X, y = _data(3, 3)
    model = MLP([3, 4, 4, 3], hidden_activation=["tanh", "leaky_relu"], output="softmax",
                seed=3)
    _check(model, X, y)


def test_mini_batch_gradient_equals_full_batch_gradient_of_those_rows():
    X, y = _data(3, 2, n=9)
    model = MLP([3, 4, 1], seed=4)
    loss_a, dW_a, db_a = loss_and_gradients(model, X, y, indices=MINI_BATCH)
    loss_b, dW_b, db_b = loss_and_gradients(model, X[MINI_BATCH], y[MINI_BATCH])
    assert loss_a == pytest.approx(loss_b, rel=1e-12)
    for a, b in zip([*dW_a, *db_a], [*dW_b, *db_b], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_weight_decay_adds_wd_times_w_to_weights_only():
    X, y = _data(3, 2)
    model = MLP([3, 4, 1], seed=5)
    loss0, dW0, db0 = loss_and_gradients(model, X, y)
    loss1, dW1, db1 = loss_and_gradients(model, X, y, weight_decay=0.3)
    assert loss1 == pytest.approx(loss0 + 0.15 * sum(float((w**2).sum()) for w in model.weights))
    for w, g0, g1 in zip(model.weights, dW0, dW1, strict=True):
        np.testing.assert_allclose(g1, g0 + 0.3 * w, rtol=1e-12)
    for g0, g1 in zip(db0, db1, strict=True):
        np.testing.assert_array_equal(g1, g0)


# ---- the fast passes against the plain ones -------------------------------------------------

def _plain_loss_and_gradients(model: MLP, X, y, weight_decay: float = 0.0):
    """The textbook version in float64: plain_forward, P, mean cross-entropy (+ wd/2 |W|^2),
    dZ = (P - Y) / n, plain_backward (+ wd W); and P: (n, k)."""
    weights = [np.asarray(w, dtype=np.float64) for w in model.weights]
    biases = [np.asarray(b, dtype=np.float64) for b in model.biases]
    activations = [ACTIVATIONS[name] for name in model.activations]
    X = np.asarray(X, dtype=np.float64)
    n, k = X.shape[0], model.layer_sizes[-1]
    Z, A = plain_forward(weights, biases, activations, X)
    if model.output == "sigmoid":
        P = 1.0 / (1.0 + np.exp(-Z[-1]))
        Y = y.reshape(-1, 1).astype(np.float64)
        loss = -np.mean(Y * np.log(P) + (1 - Y) * np.log(1 - P))
    else:
        E = np.exp(Z[-1] - Z[-1].max(axis=1, keepdims=True))
        P = E / E.sum(axis=1, keepdims=True)
        Y = np.eye(k)[y]
        loss = -np.mean(np.log(P[np.arange(n), y]))
    dW, db = plain_backward(weights, activations, Z, A, (P - Y) / n)
    loss += 0.5 * weight_decay * sum(float((w**2).sum()) for w in weights)
    dW = [g + weight_decay * w for g, w in zip(dW, weights, strict=True)]
    return loss, dW, db, P


@pytest.mark.parametrize("parts", [None, 3], ids=["whole", "3 parts"])
@pytest.mark.parametrize("indices", [None, MINI_BATCH * 3], ids=["full", "gathered"])
@pytest.mark.parametrize("layer_sizes,output", [
    ([3, 5, 1], "sigmoid"),  # backward's rank-one shortcut for the first layer
    ([2, 12, 1], "sigmoid"),  # RustNet's, the shortcut too
    ([6, 3, 1], "sigmoid"),  # no shortcut
    ([4, 1], "sigmoid"),  # no hidden layer
    ([2, 3, 1, 4, 1], "sigmoid"),  # a hidden layer of one unit
    ([3, 4, 5, 3], "softmax"),
])
@pytest.mark.parametrize("activation", BUILT_IN)
def test_fast_passes_match_the_plain_ones(activation, layer_sizes, output, indices, parts):
    X, y = _data(layer_sizes[0], 2 if output == "sigmoid" else layer_sizes[-1], n=15)
    model = MLP(layer_sizes, hidden_activation=activation, output=output, seed=7)
    rows = slice(None) if indices is None else np.asarray(indices)
    loss, dW, db, P = _plain_loss_and_gradients(model, X[rows], y[rows], weight_decay=0.1)
    fast = loss_and_gradients(model, X, y, weight_decay=0.1, indices=indices, parts=parts,
                              threads=2)
    assert fast[0] == pytest.approx(loss, rel=1e-12)
    for got, want in zip([*fast[1], *fast[2]], [*dW, *db], strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(model.predict_proba(X[rows]), P, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("output,k", [("sigmoid", 1), ("softmax", 3)])
def test_fast_passes_in_float32_match_the_plain_ones_in_float64(output, k):
    X, y = _data(3, 2 if k == 1 else k, n=40)
    model = MLP([3, 8, 6, k], hidden_activation="tanh", output=output, dtype="float32", seed=8)
    loss, dW, db, P = _plain_loss_and_gradients(model, X, y)
    fast = loss_and_gradients(model, X, y)
    assert fast[1][0].dtype == np.float32
    assert fast[0] == pytest.approx(loss, rel=1e-5)
    for got, want in zip([*fast[1], *fast[2]], [*dW, *db], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(X), P, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", BUILT_IN)
def test_activation_derivatives_and_in_place_versions(name):
    act = ACTIVATIONS[name]
    z = np.random.default_rng(0).normal(size=(3, 11)) * 3
    z[np.abs(z) < 1e-3] = 0.5  # keep away from the ReLU kinks
    a = act.forward(z)
    numerical = (act.forward(z + EPS) - act.forward(z - EPS)) / (2 * EPS)
    np.testing.assert_allclose(act.derivative(z, a), numerical, rtol=1e-6, atol=1e-9)
    out = np.empty_like(z)
    act.forward_into(z, out)
    np.testing.assert_array_equal(out, a)
    act.derivative_into(z, a, out)
    np.testing.assert_allclose(out, act.derivative(z, a), rtol=1e-15)
    delta = np.ones_like(z) * 2.0
    act.scale_delta(z, a, delta, np.empty(z.shape, dtype=bool))
    np.testing.assert_allclose(delta, 2.0 * act.derivative(z, a), rtol=1e-15)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_activations_work_with_a_overwriting_z(name):
    # The training workspace lets A_l overwrite Z_l for these: one buffer serves as both.
    act = ACTIVATIONS[name]
    assert act.in_place
    z = np.random.default_rng(1).normal(size=(4, 9)) * 3
    a = act.forward(z)
    buffer = z.copy()
    act.forward_into(buffer, buffer)
    np.testing.assert_array_equal(buffer, a)
    out = np.empty_like(z)
    act.derivative_into(buffer, buffer, out)
    np.testing.assert_array_equal(out, act.derivative(z, a))
    delta = np.full_like(z, 2.0)
    act.scale_delta(buffer, buffer, delta, np.empty(z.shape, dtype=bool))
    np.testing.assert_array_equal(delta, 2.0 * act.derivative(z, a))


def test_workspace_shares_z_and_a_only_for_in_place_activations():
    def softplus(z):
        return np.logaddexp(0.0, z)

    register_activation("softplus_ws", softplus, lambda z, a: 1.0 / (1.0 + np.exp(-z)))
    try:
        for name, shared in [("relu", True), ("tanh", True), ("softplus_ws", False)]:
            net = MLP([3, 6, 4, 1], hidden_activation=name, seed=0).network
            ws = Workspace(net, 5)
            for z, a_units in zip(ws.z[:-1], ws.a_units, strict=True):
                assert np.shares_memory(z, a_units) is shared, name
            assert not np.shares_memory(ws.z[-1], ws.a[-1])  # the logits have their own
    finally:
        ACTIVATIONS.pop("softplus_ws")


def test_registered_activation_is_usable_and_gradient_checked():
    def softplus(z):
        return np.logaddexp(0.0, z)

    def softplus_derivative(z, a):
        return 1.0 / (1.0 + np.exp(-z))

    register_activation("softplus_test", softplus, softplus_derivative)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_activation("softplus_test", softplus, softplus_derivative)
        X, y = _data(3, 2)
        model = MLP([3, 4, 5, 1], hidden_activation="softplus_test", seed=6)
        _check(model, X, y)
        _check(MLP([3, 5, 1], hidden_activation="softplus_test", seed=6), X, y)
    finally:
        ACTIVATIONS.pop("softplus_test")
