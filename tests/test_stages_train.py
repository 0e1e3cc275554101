"""train_model: the stage hands its TrainSettings, data and callbacks to the core unchanged."""

import warnings

import numpy as np
import pytest

from pipeline.mlp import ConvergenceWarning, TrainSettings
from stages.dataset import Dataset
from stages.train import build_model, train_model


def dataset(n: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] - X[:, 2] > 0).astype(int)
    return Dataset(X=X, y=y, feature_names=("a", "b", "c"), label_name="y", classes=("0", "1"))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


SETTINGS = TrainSettings(learning_rate=0.05, epochs=5, batch_size=16, optimizer="adam",
                         shuffle_seed=1)


def test_the_stage_trains_as_the_core_does_with_the_same_settings() -> None:
    train, val = dataset(80, 0), dataset(20, 1)
    seen: list[int] = []
    result = train_model(build_model(3, 2, hidden_sizes=[6], seed=4), train, val, SETTINGS,
                         callbacks=[lambda epoch, metrics, model: seen.append(epoch)])
    reference = build_model(3, 2, hidden_sizes=[6], seed=4)
    history = reference.train(train.X, train.y, validation=(val.X, val.y), learning_rate=0.05,
                              epochs=5, batch_size=16, optimizer="adam", shuffle_seed=1)
    assert result.history == history
    assert result.model.to_dict() == reference.to_dict()
    assert seen == [1, 2, 3, 4, 5]


def test_an_empty_validation_split_means_no_validation() -> None:
    empty = dataset(20, 1).take(np.arange(0))
    result = train_model(build_model(3, 2, hidden_sizes=[6], seed=4), dataset(80, 0), empty,
                         SETTINGS)
    assert set(result.history.metrics) == {"train_loss", "train_mse", "train_accuracy"}
    with pytest.raises(ValueError, match="early_stopping_patience needs validation data"):
        train_model(build_model(3, 2, hidden_sizes=[6]), dataset(80, 0), None,
                    TrainSettings(learning_rate=0.05, epochs=5, early_stopping_patience=2))
