"""Dataset container: validation, immutability, frame round trip, take, digest."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stages.dataset import DataError, Dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny() -> Dataset:
    return Dataset(
        X=np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]),
        y=np.array([0, 1, 2]),
        feature_names=("a", "b"),
        label_name="species",
        classes=("setosa", "versicolor", "virginica"),
    )


def test_shapes_and_dtypes(tiny: Dataset) -> None:
    assert (tiny.n_samples, tiny.n_features, tiny.n_classes) == (3, 2, 3)
    assert tiny.X.dtype == np.float64 and tiny.y.dtype == np.int64


def test_data_error_is_value_error() -> None:
    assert issubclass(DataError, ValueError)


def test_copies_and_freezes_caller_arrays() -> None:
    X = np.zeros((2, 1))
    y = np.array([0, 1])
    data = Dataset(X=X, y=y, feature_names=("a",), label_name="l", classes=("0", "1"))
    X[0, 0] = 9.0
    assert data.X[0, 0] == 0.0
    assert X.flags.writeable
    with pytest.raises(ValueError):
        data.X[0, 0] = 1.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"X": np.zeros(3)},
        {"y": np.array([0, 1])},
        {"feature_names": ("a",)},
        {"feature_names": ("a", "species")},
        {"y": np.array([0, 1, 3])},
        {"y": np.array([0.0, 1.5, 2.0])},
        {"classes": ("a", "a", "b")},
    ],
)
def test_rejects_inconsistent_fields(tiny: Dataset, kwargs: dict) -> None:
    fields = {
        "X": tiny.X, "y": tiny.y, "feature_names": tiny.feature_names,
        "label_name": tiny.label_name, "classes": tiny.classes,
    }
    with pytest.raises(ValueError):
        Dataset(**{**fields, **kwargs})


def test_frame_round_trip_through_parquet(tiny: Dataset, tmp_path: Path) -> None:
    frame = tiny.to_frame()
    assert list(frame.columns) == ["a", "b", "species"]
    assert frame["species"].tolist() == [0, 1, 2]
    frame.to_parquet(tmp_path / "d.parquet")
    back = Dataset.from_frame(pd.read_parquet(tmp_path / "d.parquet"), "species", tiny.classes)
    assert back.digest() == tiny.digest()


def test_take_keeps_names_and_order(tiny: Dataset) -> None:
    part = tiny.take([2, 0])
    assert part.X.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert part.y.tolist() == [2, 0]
    assert part.classes == tiny.classes and part.feature_names == tiny.feature_names


def test_digest_changes_with_any_field(tiny: Dataset) -> None:
    other = Dataset(tiny.X, tiny.y, ("a", "c"), tiny.label_name, tiny.classes)
    relabelled = Dataset(tiny.X, tiny.y, tiny.feature_names, tiny.label_name, ("x", "y", "z"))
    digests = {tiny.digest(), other.digest(), relabelled.digest(), tiny.take([0, 1]).digest()}
    assert len(digests) == 4


def test_digest_is_stable_across_processes(tiny: Dataset) -> None:
    code = (
        "import numpy as np; from stages.dataset import Dataset; "
        "print(Dataset(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]), np.array([0, 1, 2]), "
        "('a', 'b'), 'species', ('setosa', 'versicolor', 'virginica')).digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == tiny.digest()
