"""Optimiser update rules, weight decay and gradient clipping, re-derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.mlp import CLIPPERS, MLP, OPTIMIZERS, Optimizer
from pipeline.mlp.optimizers import make_optimizer
from pipeline.mlp.training import loss_and_gradients

P0 = np.array([1.0, 2.0, -3.0, 0.5])
G1 = np.array([0.5, -2.0, 0.0, 1e-3])
G2 = np.array([-1.0, 0.25, 3.0, 1e-3])
LR = 0.1


def _two_steps(name: str, options=None) -> list[np.ndarray]:
    opt = make_optimizer(name, LR, options)
    opt.reset(P0.size, np.float64)
    p = P0.copy()
    out = []
    for g in (G1, G2):
        opt.update(p, g.copy())  # update may use the gradient buffer as scratch
        out.append(p.copy())
    return out


def test_sgd():
    p1, p2 = _two_steps("sgd")
    np.testing.assert_allclose(p1, [0.95, 2.2, -3.0, 0.4999], rtol=1e-15)  # worked by hand
    np.testing.assert_allclose(p2, P0 - LR * G1 - LR * G2, rtol=1e-15)


def test_momentum():
    mu = 0.8
    p1, p2 = _two_steps("momentum", {"momentum": mu})
    v1 = -LR * G1
    v2 = mu * v1 - LR * G2
    np.testing.assert_allclose(p1, P0 + v1, rtol=1e-15)
    np.testing.assert_allclose(p2, P0 + v1 + v2, rtol=1e-15)


def test_nesterov_momentum():
    mu = 0.8
    p1, p2 = _two_steps("momentum", {"momentum": mu, "nesterov": True})
    v1 = -LR * G1
    e1 = P0 + mu * v1 - LR * G1
    v2 = mu * v1 - LR * G2
    np.testing.assert_allclose(p1, e1, rtol=1e-15)
    np.testing.assert_allclose(p2, e1 + mu * v2 - LR * G2, rtol=1e-15)


def test_rmsprop():
    rho, eps = 0.9, 1e-8
    p1, p2 = _two_steps("rmsprop")  # defaults
    s1 = (1 - rho) * G1**2
    e1 = P0 - LR * G1 / (np.sqrt(s1) + eps)
    s2 = rho * s1 + (1 - rho) * G2**2
    np.testing.assert_allclose(p1, e1, rtol=1e-14)
    np.testing.assert_allclose(p2, e1 - LR * G2 / (np.sqrt(s2) + eps), rtol=1e-14)


def test_adam_with_bias_correction():
    b1, b2, eps = 0.9, 0.999, 1e-8
    p1, p2 = _two_steps("adam")
    m1, v1 = (1 - b1) * G1, (1 - b2) * G1**2
    e1 = P0 - LR * (m1 / (1 - b1)) / (np.sqrt(v1 / (1 - b2)) + eps)
    m2, v2 = b1 * m1 + (1 - b1) * G2, b2 * v1 + (1 - b2) * G2**2
    e2 = e1 - LR * (m2 / (1 - b1**2)) / (np.sqrt(v2 / (1 - b2**2)) + eps)
    np.testing.assert_allclose(p1, e1, rtol=1e-13)
    np.testing.assert_allclose(p2, e2, rtol=1e-13)
    # Bias correction makes the first step lr * sign(g) wherever |g| >> eps.
    np.testing.assert_allclose(p1[[0, 1, 3]], P0[[0, 1, 3]] - LR * np.sign(G1[[0, 1, 3]]),
                               rtol=0, atol=LR * 1e-8 / 1e-3 * 1.01)


def test_state_round_trip_continues_identically():
    a = make_optimizer("adam", LR)
    a.reset(P0.size, np.float64)
    pa = P0.copy()
    a.update(pa, G1.copy())
    step, arrays = a.get_state()
    b = make_optimizer("adam", LR)
    b.reset(P0.size, np.float64)
    b.set_state(step, arrays)
    pb = pa.copy()
    a.update(pa, G2.copy())
    b.update(pb, G2.copy())
    np.testing.assert_array_equal(pa, pb)
    with pytest.raises(ValueError, match="keeps state"):
        b.set_state(1, {"m": arrays["m"]})


@pytest.mark.parametrize("name,options,message", [
    ("adam", {"beta": 0.9}, r"unknown option\(s\) \['beta'\] for optimizer 'adam'; valid: "
                            r"\['beta1', 'beta2', 'eps'\]"),
    ("sgd", {"momentum": 0.9}, "valid: none"),
    ("momentum", {"momentum": 1.0}, "must be in \\[0, 1\\)"),
    ("momentum", {"nesterov": 1}, "must be true or false"),
    ("rmsprop", {"eps": 0.0}, "must be > 0"),
    ("adam", {"beta2": "0.9"}, "must be a finite number"),
])
def test_bad_options_are_rejected(name, options, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(name, LR, options)


def test_unknown_optimizer_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown optimizer 'lbfgs'; valid: \['adam', "):
        make_optimizer("lbfgs", LR)
    with pytest.raises(ValueError, match="learning_rate must be a finite number > 0"):
        make_optimizer("sgd", -1.0)


def test_a_subclass_only_computes_the_step():
    class SignSGD(Optimizer):
        name = "signsgd_test"

        def _step(self, grads):
            return np.multiply(np.sign(grads), self.learning_rate, out=grads)

    opt = SignSGD(LR)
    opt.reset(P0.size, np.float64)
    p = P0.copy()
    opt.update(p, G1.copy())
    np.testing.assert_allclose(p, P0 - LR * np.sign(G1))
    assert opt.step_count == 1
    assert "signsgd_test" not in OPTIMIZERS  # registering is explicit


# ---- clipping --------------------------------------------------------------------------------

def test_clip_by_value():
    g = np.array([3.0, -0.5, -7.0, 1.0, -1.0])
    CLIPPERS["value"](g, 1.0)
    np.testing.assert_array_equal(g, [1.0, -0.5, -1.0, 1.0, -1.0])


def test_clip_by_global_norm():
    g = np.array([3.0, 0.0, -4.0])  # norm 5
    CLIPPERS["norm"](g, 1.0)
    np.testing.assert_allclose(g, [0.6, 0.0, -0.8], rtol=1e-15)
    small = np.array([0.3, 0.4])  # norm 0.5 <= 1: unchanged
    CLIPPERS["norm"](small, 1.0)
    np.testing.assert_array_equal(small, [0.3, 0.4])
    huge = np.array([1e200, -1e200])  # the squares overflow; the norm must not
    CLIPPERS["norm"](huge, 2.0)
    np.testing.assert_allclose(huge, [math.sqrt(2), -math.sqrt(2)], rtol=1e-12)


def test_no_clip():
    g = np.array([30.0, -0.5])
    CLIPPERS["none"](g, 1.0)
    np.testing.assert_array_equal(g, [30.0, -0.5])


# ---- through training: weight decay and clipping of the real gradients ---------------------

def _one_step(clip: str, weight_decay: float):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3)) * 20  # large inputs and labels the initial net gets wrong:
    y = (X[:, 0] < 0).astype(int)  # some gradients exceed 1
    model = MLP([3, 4, 1], seed=0)
    _, dW, db = loss_and_gradients(model, X, y)
    W0 = [w.copy() for w in model.weights]
    b0 = [b.copy() for b in model.biases]
    model.train(X, y, learning_rate=0.5, epochs=1, clip=clip, clip_value=1.0,
                weight_decay=weight_decay)
    return model, W0, b0, dW, db


@pytest.mark.parametrize("weight_decay", [0.0, 0.2])
def test_training_step_value_clip_after_weight_decay(weight_decay):
    model, W0, b0, dW, db = _one_step("value", weight_decay)
    grads_w = [np.clip(g + weight_decay * w, -1, 1) for g, w in zip(dW, W0, strict=True)]
    assert any((np.abs(g + weight_decay * w) > 1).any() for g, w in zip(dW, W0, strict=True))
    for w, w0, g in zip(model.weights, W0, grads_w, strict=True):
        np.testing.assert_allclose(w, w0 - 0.5 * g, rtol=0, atol=1e-12)
    for b, b_0, g in zip(model.biases, b0, db, strict=True):  # no decay on biases
        np.testing.assert_allclose(b, b_0 - 0.5 * np.clip(g, -1, 1), rtol=0, atol=1e-12)


def test_training_step_norm_clip_is_global():
    model, W0, b0, dW, db = _one_step("norm", 0.0)
    norm = math.sqrt(sum(float((g**2).sum()) for g in [*dW, *db]))
    assert norm > 1.0
    for p, p0, g in zip([*model.weights, *model.biases], [*W0, *b0], [*dW, *db], strict=True):
        np.testing.assert_allclose(p, p0 - 0.5 * g / norm, rtol=0, atol=1e-12)


def test_training_step_without_clipping():
    model, W0, b0, dW, db = _one_step("none", 0.0)
    for p, p0, g in zip([*model.weights, *model.biases], [*W0, *b0], [*dW, *db], strict=True):
        np.testing.assert_allclose(p, p0 - 0.5 * g, rtol=0, atol=1e-12)
