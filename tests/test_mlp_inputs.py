"""Checks on constructor arguments, training settings and data: one named error per mistake."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.mlp import MLP

pytestmark = pytest.mark.filterwarnings("ignore::pipeline.mlp.ConvergenceWarning")

X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, -1.0]])
Y = np.array([0, 1, 1, 0])


def _train(model: MLP, X_, y_, **kwargs):
    return model.train(X_, y_, **{"learning_rate": 0.1, "epochs": 2, **kwargs})


# ---- constructor -----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(layer_sizes=[2]), "at least 2 entries"),
    (dict(layer_sizes=[2, 0, 1]), r"layer_sizes\[1\] must be an int >= 1, got 0"),
    (dict(layer_sizes=[2, 3.5, 1]), r"layer_sizes\[1\] must be an int >= 1, got 3.5"),
    (dict(layer_sizes="21"), "sequence of ints"),
    (dict(layer_sizes=[2, 3, 1], hidden_activation="gelu"),
     r"unknown activation 'gelu'; valid: \['identity', 'leaky_relu', 'relu', 'sigmoid', 'tanh'"),
    (dict(layer_sizes=[2, 3, 4, 1], hidden_activation=["relu"]),
     r"lists 1 activation\(s\), but layer_sizes has 2 hidden layer\(s\)"),
    (dict(layer_sizes=[2, 3, 2]), r"output='sigmoid' needs 1 unit .* got layer_sizes\[-1\]=2"),
    (dict(layer_sizes=[2, 3, 1], output="softmax"), "needs at least 2 units"),
    (dict(layer_sizes=[2, 3, 1], output="linear"),
     r"unknown output 'linear'; valid: \['sigmoid', 'softmax'\]"),
    (dict(layer_sizes=[2, 3, 1], init="zeros"),
     r"unknown init 'zeros'; valid: \['he', 'uniform', 'xavier'\]"),
    (dict(layer_sizes=[2, 3, 1], dtype="float16"),
     r"unknown dtype 'float16'; valid: \['float32', 'float64'\]"),
    (dict(layer_sizes=[2, 3, 1], seed=-1), "seed must be an int >= 0"),
])
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MLP(**kwargs)


# ---- training settings -----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(learning_rate=0.0), "learning_rate must be a finite number > 0, got 0.0"),
    (dict(learning_rate=float("nan")), "learning_rate must be a finite number > 0"),
    (dict(epochs=0), "epochs must be an int >= 1, got 0"),
    (dict(epochs=2.0), "epochs must be an int >= 1, got 2.0"),
    (dict(batch_size=0), "batch_size must be None or an int >= 1, got 0"),
    (dict(optimizer="adamw"), r"unknown optimizer 'adamw'; valid: \["),
    (dict(optimizer="adam", optimizer_options={"momentum": 0.9}),
     r"unknown option\(s\) \['momentum'\] for optimizer 'adam'"),
    (dict(clip="l2"), r"unknown clip 'l2'; valid: \['none', 'norm', 'value'\]"),
    (dict(clip_value=-1.0), "clip_value must be a finite number > 0, got -1.0"),
    (dict(weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
    (dict(shuffle_seed=-3), "shuffle_seed must be None or an int >= 0"),
    (dict(callbacks=[1]), "callbacks must be a sequence of callables"),
    (dict(validation=(X,)), r"validation must be a pair \(X_val, y_val\)"),
])
def test_training_setting_errors_leave_the_model_unchanged(kwargs, message):
    model = MLP([2, 3, 1])
    before = model.to_dict()
    with pytest.raises(ValueError, match=message):
        _train(model, X, Y, **kwargs)
    assert model.to_dict() == before


# ---- data ------------------------------------------------------------------------------------

@pytest.mark.parametrize("X_,y_,message", [
    (X[:, 0], Y, r"X must be 2-D \(n_samples, n_features\), got 1-D with shape \(4,\); use "
                 r"X.reshape\(-1, 1\)"),
    (X[None], Y, "X must be 2-D"),
    (np.hstack([X, X[:, :1]]), Y, r"X has 3 features, but the network expects 2 "
                                  r"\(layer_sizes\[0\]\)"),
    (X[:0], Y[:0], "X is empty: it has 0 samples"),
    (np.where(X == 2.0, np.nan, X), Y, r"X must be finite, but X\[2, 0\] = nan"),
    (np.where(X == 3.0, np.inf, X), Y, r"X must be finite, but X\[3, 0\] = inf"),
    (np.array([["a", "b"]] * 4), Y, "X must hold real numbers"),
    ([[0, 1], [1]], Y[:2], "X could not be read as an array of numbers"),
    (X, Y[:3], "X has 4 samples but y has 3"),
    (X, np.array([0, 1, 2, 0]), r"y must hold class indices 0..1 \(2 classes for "
                                r"output='sigmoid'\), got \[2\]"),
    (X, np.array([0, 1, -1, 0]), r"got \[-1\]"),
    (X, np.array([0.0, 1.0, 0.5, 0.0]), r"got 0.5 \(1 such value\(s\)\)"),
    (X, np.array([0.0, 1.0, np.nan, 0.0]), "got nan"),
    (X, np.eye(2)[Y], r"y must have shape \(n_samples,\) or \(n_samples, 1\) .* not one-hot"),
    (X, np.array(["a", "b", "a", "b"]), "encode the labels as integers first"),
])
def test_data_errors_say_what_was_expected(X_, y_, message):
    with pytest.raises(ValueError, match=message):
        _train(MLP([2, 3, 1]), X_, y_)


def test_validation_data_errors_name_it():
    with pytest.raises(ValueError, match="X_val has 1 features, but the network expects 2"):
        _train(MLP([2, 3, 1]), X, Y, validation=(X[:, :1], Y))
    with pytest.raises(ValueError, match="X has 4 samples but y_val has 2"):
        _train(MLP([2, 3, 1]), X, Y, validation=(X, Y[:2]))


def test_softmax_label_range():
    with pytest.raises(ValueError, match=r"class indices 0..2 \(3 classes for output='softmax'\)"
                                         r", got \[3\]"):
        _train(MLP([2, 3, 3], output="softmax"), X, np.array([0, 1, 3, 2]))


def test_float32_overflow_is_named():
    big = X.copy()
    big[1, 1] = 1e39
    with pytest.raises(ValueError, match=r"X\[1, 1\] = 1e\+39 does not fit in float32"):
        MLP([2, 3, 1], dtype="float32").predict_proba(big)


def test_predict_errors():
    model = MLP([2, 3, 1])
    with pytest.raises(ValueError, match="X has 1 features"):
        model.predict(X[:, :1])
    with pytest.raises(ValueError, match=r"threshold must be a number in \[0, 1\]"):
        model.predict(X, threshold=1.5)
    with pytest.raises(ValueError, match="the inputs are too large"):
        MLP([2, 30, 30, 1], hidden_activation="identity").predict_proba(np.full((1, 2), 1e308))


def test_accepts_lists_pandas_and_bools_and_never_writes_to_the_inputs():
    Xr = X.copy()
    Xr.flags.writeable = False  # any write into the caller's array would raise
    Yr = Y.copy()
    Yr.flags.writeable = False
    model = MLP([2, 3, 1], seed=0)
    a = _train(model, Xr, Yr, validation=(Xr, Yr), batch_size=3)
    frame = pd.DataFrame(X, columns=["f", "a"])
    b = _train(MLP([2, 3, 1], seed=0), frame, pd.Series(Y), validation=(frame, Y), batch_size=3)
    c = _train(MLP([2, 3, 1], seed=0), X.tolist(), Y.reshape(-1, 1).tolist(),
               validation=(X.tolist(), Y.astype(bool)), batch_size=3)
    assert a.metrics == b.metrics == c.metrics
    np.testing.assert_array_equal(Xr, X)
    proba = model.predict_proba(Xr)
    np.testing.assert_array_equal(model.predict_proba(frame), proba)
    np.testing.assert_array_equal(model.predict(X.tolist()), (proba[:, 0] > 0.5).astype(int))
    assert model.predict(X).dtype == np.int64
    assert model.score(X, Y) == np.mean(model.predict(X) == Y)
