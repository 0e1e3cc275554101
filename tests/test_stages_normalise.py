"""Normaliser: fitted on train only, constant columns, exact dict round trip."""

import json

import numpy as np
import pytest

from stages.dataset import Dataset
from stages.normalise import NormalisedSplits, Normaliser, fit_normaliser, normalise
from stages.split import Splits


def dataset(X: np.ndarray) -> Dataset:
    y = np.arange(len(X)) % 2
    names = tuple(f"f{j}" for j in range(X.shape[1]))
    return Dataset(X=X, y=y, feature_names=names, label_name="y", classes=("0", "1"))


def test_fit_is_population_z_score() -> None:
    X = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 3))
    norm = fit_normaliser(X)
    np.testing.assert_allclose(norm.mean, X.mean(axis=0))
    np.testing.assert_allclose(norm.std, X.std(axis=0, ddof=0))
    Z = norm.transform(X)
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0)
    np.testing.assert_allclose(norm.inverse_transform(Z), X)


def test_constant_column_gets_std_one_and_maps_to_zero() -> None:
    X = np.column_stack([np.full(5, 0.1), np.arange(5.0)])
    norm = fit_normaliser(X)
    assert norm.std[0] == 1.0 and norm.mean[0] == 0.1
    assert np.all(norm.transform(X)[:, 0] == 0.0)


def test_normalise_fits_on_train_only() -> None:
    train = dataset(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]))
    test = dataset(np.array([[100.0, -50.0], [300.0, 70.0]]))
    val = dataset(np.array([[1.0, 1.0], [2.0, 2.0]]))
    out = normalise(Splits(train=train, test=test, val=val))
    assert isinstance(out, NormalisedSplits)
    np.testing.assert_array_equal(out.normaliser.mean, [2.0, 3.0])
    np.testing.assert_allclose(out.normaliser.std, np.sqrt([8 / 3, 8 / 3]))
    # test statistics are not used: test rows are far from mean 0 / std 1
    np.testing.assert_allclose(out.test.X, (test.X - [2.0, 3.0]) / np.sqrt(8 / 3))
    assert out.val is not None
    np.testing.assert_allclose(out.val.X, (val.X - [2.0, 3.0]) / np.sqrt(8 / 3))
    assert out.train.classes == train.classes
    np.testing.assert_array_equal(out.test.y, test.y)
    # inputs untouched
    assert train.X[0, 0] == 0.0 and test.X[0, 0] == 100.0


def test_normalise_without_val() -> None:
    data = dataset(np.arange(8.0).reshape(4, 2))
    assert normalise(Splits(train=data, test=data, val=None)).val is None


def test_dict_round_trip_is_exact_through_json() -> None:
    norm = fit_normaliser(np.random.default_rng(1).normal(size=(7, 4)) * 1e-3 + 1 / 3)
    back = Normaliser.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)


def test_transform_does_not_modify_input_and_checks_width() -> None:
    X = np.arange(6.0).reshape(3, 2)
    norm = fit_normaliser(X)
    norm.transform(X)
    assert X.tolist() == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        norm.transform(np.zeros((3, 3)))


def test_rejects_non_finite_training_data() -> None:
    with pytest.raises(ValueError, match="finite"):
        fit_normaliser(np.array([[1.0], [np.nan]]))
