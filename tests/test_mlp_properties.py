"""Property tests: whatever finite data comes in, the core answers with probabilities, a
documented ValueError or (training only) TrainingDiverged, never another exception."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.mlp import MLP, ConvergenceWarning, TrainingDiverged

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "sigmoid", "identity"]
# The documented data errors of predict_proba for finite inputs.
INPUT_ERRORS = ("the inputs are too large", "does not fit in float32")


@st.composite
def models(draw) -> MLP:
    n_features = draw(st.integers(1, 4))
    hidden = draw(st.lists(st.integers(1, 5), max_size=2))
    output = draw(st.sampled_from(["sigmoid", "softmax"]))
    k = 1 if output == "sigmoid" else draw(st.integers(2, 4))
    return MLP([n_features, *hidden, k], output=output,
               hidden_activation=draw(st.sampled_from(ACTIVATIONS)),
               init=draw(st.sampled_from(["uniform", "he", "xavier"])),
               dtype=draw(st.sampled_from(["float64", "float32"])),
               seed=draw(st.integers(0, 2**32)))


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(model=models(), data=st.data())
def test_predict_proba_is_a_probability_or_a_documented_error(model, data):
    n = data.draw(st.integers(1, 6))
    X = data.draw(arrays(np.float64, (n, model.layer_sizes[0]), elements=finite))
    try:
        proba = model.predict_proba(X)
    except ValueError as error:
        assert any(text in str(error) for text in INPUT_ERRORS), str(error)
        return
    k = model.layer_sizes[-1]
    assert proba.shape == (n, k)
    assert np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()
    if model.output == "softmax":
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    labels = model.predict(X)
    assert labels.shape == (n,) and ((labels >= 0) & (labels < model.n_classes)).all()


@settings(max_examples=60, deadline=None)
@given(model=models(), data=st.data())
def test_training_ends_in_a_history_or_a_documented_error(model, data):
    n = data.draw(st.integers(1, 8))
    X = data.draw(arrays(np.float64, (n, model.layer_sizes[0]),
                         elements=st.floats(-1e6, 1e6, allow_nan=False)))
    y = data.draw(arrays(np.int64, (n,), elements=st.integers(0, model.n_classes - 1)))
    options = dict(
        learning_rate=data.draw(st.floats(1e-6, 1e3)),
        epochs=data.draw(st.integers(1, 3)),
        batch_size=data.draw(st.none() | st.integers(1, 10)),
        optimizer=data.draw(st.sampled_from(["sgd", "momentum", "rmsprop", "adam"])),
        clip=data.draw(st.sampled_from(["value", "norm", "none"])),
        weight_decay=data.draw(st.sampled_from([0.0, 1e-2])),
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            history = model.train(X, y, **options)
    except TrainingDiverged as error:
        assert f"epoch {error.epoch}" in str(error)
        assert all(np.isfinite(w).all() for w in model.weights)
        return
    except ValueError as error:  # float32 cannot hold the data
        assert "does not fit in float32" in str(error), str(error)
        return
    assert len(history) == options["epochs"]
    assert all(np.isfinite(w).all() for w in model.weights)
