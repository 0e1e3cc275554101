"""split_dataset: RustNet's shuffled 80/20 split, val from the train tail, stratification."""

import numpy as np
import pytest

from stages.dataset import DataError, Dataset
from stages.split import Splits, _sizes, assign_folds, fold_parts, split_dataset


def indexed(y: np.ndarray | list[int], classes: tuple[str, ...] = ("0", "1")) -> Dataset:
    """A Dataset whose first feature is the row index, so splits reveal their indices."""
    y = np.asarray(y)
    X = np.column_stack([np.arange(y.size), np.zeros(y.size)])
    return Dataset(X=X, y=y, feature_names=("i", "z"), label_name="y", classes=classes)


def rows(part: Dataset) -> np.ndarray:
    return part.X[:, 0].astype(int)


def test_matches_rustnet_split_seed_7_n_1000() -> None:
    n = 1000
    y = np.arange(n) % 2
    # RustNet's split, written out
    idx = np.arange(n)
    np.random.default_rng(7).shuffle(idx)
    train_idx, test_idx = idx[: int(0.8 * n)], idx[int(0.8 * n) :]

    splits = split_dataset(indexed(y))
    assert isinstance(splits, Splits) and splits.val is None
    np.testing.assert_array_equal(rows(splits.train), train_idx)
    np.testing.assert_array_equal(rows(splits.test), test_idx)
    np.testing.assert_array_equal(splits.train.y, y[train_idx])


def test_train_size_is_int_0_8_n_for_every_n() -> None:
    for n in range(1, 5001):
        n_train, n_val, n_test = _sizes(n, 0.2, 0.0)
        assert (n_train, n_val, n_test) == (int(0.8 * n), 0, n - int(0.8 * n))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.3, 0.5, 0.7, 0.9])
def test_sizes_are_floor_of_the_train_share(fraction: float) -> None:
    for n in range(1, 2001):
        n_train, _, n_test = _sizes(n, fraction, 0.0)
        assert n_train + n_test == n
        assert n_train == int(round(1 - fraction, 12) * n)


def test_val_comes_from_the_train_tail_and_leaves_test_unchanged() -> None:
    y = np.arange(100) % 2
    plain = split_dataset(indexed(y))
    with_val = split_dataset(indexed(y), val_fraction=0.1)
    assert with_val.val is not None
    np.testing.assert_array_equal(rows(with_val.test), rows(plain.test))
    np.testing.assert_array_equal(
        np.r_[rows(with_val.train), rows(with_val.val)], rows(plain.train)
    )
    assert (with_val.train.n_samples, with_val.val.n_samples) == (70, 10)


def test_partition_and_seed() -> None:
    y = np.arange(50) % 3
    data = indexed(y, ("a", "b", "c"))
    splits = split_dataset(data, test_fraction=0.3, val_fraction=0.2, seed=1)
    assert splits.val is not None
    all_rows = np.r_[rows(splits.train), rows(splits.val), rows(splits.test)]
    assert sorted(all_rows.tolist()) == list(range(50))
    again = split_dataset(data, test_fraction=0.3, val_fraction=0.2, seed=1)
    assert again.train.digest() == splits.train.digest()
    other = split_dataset(data, test_fraction=0.3, val_fraction=0.2, seed=2)
    assert other.train.digest() != splits.train.digest()
    assert splits.train.classes == data.classes


def test_stratified_proportions() -> None:
    y = np.r_[np.zeros(90, int), np.ones(10, int)]
    splits = split_dataset(indexed(y), test_fraction=0.2, val_fraction=0.1, stratify=True)
    assert splits.val is not None
    assert np.bincount(splits.test.y).tolist() == [18, 2]
    assert np.bincount(splits.val.y).tolist() == [9, 1]
    assert np.bincount(splits.train.y).tolist() == [63, 7]
    all_rows = np.r_[rows(splits.train), rows(splits.val), rows(splits.test)]
    assert sorted(all_rows.tolist()) == list(range(100))
    # same sizes as the unstratified split; order is shuffled, not grouped by class
    assert splits.test.n_samples == split_dataset(indexed(y), val_fraction=0.1).test.n_samples
    assert not np.all(np.diff(splits.train.y) >= 0)


def test_stratified_uneven_classes_sum_up() -> None:
    y = np.r_[np.zeros(7, int), np.ones(5, int), np.full(4, 2)]
    splits = split_dataset(indexed(y, ("a", "b", "c")), test_fraction=0.25, stratify=True)
    assert splits.test.n_samples == 16 - int(0.75 * 16)
    assert set(np.unique(splits.train.y)) == {0, 1, 2}


def test_does_not_modify_input() -> None:
    data = indexed(np.arange(20) % 2)
    before = data.digest()
    split_dataset(data, stratify=True)
    assert data.digest() == before


def test_too_few_rows() -> None:
    with pytest.raises(DataError, match=r"3 rows is too few for split\.test_fraction=0\.7 "
                                        r"\(train would have 0 rows, val 0, test 3\)"):
        split_dataset(indexed([0, 1, 0]), test_fraction=0.7)
    with pytest.raises(DataError, match="too few"):
        split_dataset(indexed([0, 1, 0, 1]), test_fraction=0.2, val_fraction=0.1)


def test_train_with_a_single_class() -> None:
    y = np.r_[np.zeros(9, int), 1]
    # a seed whose shuffle puts the only class-1 row (row 9) into the test split
    seed = next(
        s for s in range(100)
        if 9 in np.random.default_rng(s).permutation(10)[int(0.8 * 10) :]
    )
    with pytest.raises(DataError, match=r"train would hold only class '0'.*split\.stratify"):
        split_dataset(indexed(y), seed=seed)


def test_stratified_class_too_small_for_train() -> None:
    y = np.r_[np.zeros(20, int), 1]
    with pytest.raises(DataError, match="train would have no rows of class '1'"):
        split_dataset(indexed(y), test_fraction=0.5, val_fraction=0.45, stratify=True)


def test_single_class_data() -> None:
    with pytest.raises(DataError, match="single class"):
        split_dataset(indexed(np.zeros(10, int)))


# -- k folds over the rows outside the test split ---------------------------------------------
def test_folds_cover_every_row_once_in_near_equal_sizes() -> None:
    data = indexed(np.arange(103) % 2)
    assignment = assign_folds(data, 5, stratify=False, seed=11)
    assert assignment.shape == (103,) and set(assignment.tolist()) == set(range(5))
    assert sorted(np.bincount(assignment).tolist()) == [20, 20, 21, 21, 21]
    for fold in range(5):
        train, held = fold_parts(data, assignment, fold)
        assert sorted(np.r_[rows(train), rows(held)].tolist()) == list(range(103))
        assert set(rows(held).tolist()) == set(np.flatnonzero(assignment == fold).tolist())
        # the training part keeps the rows' order: the other folds in the split's order
        assert np.all(np.diff(rows(train)) > 0)


def test_folds_are_seeded() -> None:
    data = indexed(np.arange(60) % 3, ("a", "b", "c"))
    first = assign_folds(data, 4, stratify=False, seed=3)
    np.testing.assert_array_equal(first, assign_folds(data, 4, stratify=False, seed=3))
    assert not np.array_equal(first, assign_folds(data, 4, stratify=False, seed=4))
    assert not np.array_equal(first, np.arange(60) % 4)  # shuffled, not dealt in order


def test_stratified_folds_keep_the_class_proportions() -> None:
    y = np.r_[np.zeros(80, int), np.ones(20, int)]
    rng = np.random.default_rng(0)
    data = indexed(rng.permutation(y))
    assignment = assign_folds(data, 5, stratify=True, seed=1)
    for fold in range(5):
        assert np.bincount(data.y[assignment == fold]).tolist() == [16, 4]
    uneven = indexed(np.r_[np.zeros(7, int), np.ones(5, int), np.full(4, 2)], ("a", "b", "c"))
    assignment = assign_folds(uneven, 3, stratify=True, seed=2)
    for c in range(3):  # each class spread as evenly as its count allows
        counts = np.bincount(assignment[uneven.y == c], minlength=3)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(assignment).max() - np.bincount(assignment).min() <= 1


def test_fewer_rows_than_folds_names_split_folds() -> None:
    with pytest.raises(DataError, match=r"^split\.folds=5: the 4 rows outside the test split "
                                        r"are fewer than 5 folds"):
        assign_folds(indexed([0, 1, 0, 1]), 5, stratify=False, seed=0)


@pytest.mark.parametrize("stratify", [False, True])
def test_a_class_missing_from_a_folds_training_part_names_split_folds(stratify: bool) -> None:
    y = np.r_[np.zeros(11, int), 1]  # one row of class 1: the fold holding it trains without
    with pytest.raises(DataError, match=r"^split\.folds=3: the training part of fold \d "
                                        r"has no rows of class '1' \(1 of the 12 rows\)"):
        assign_folds(indexed(y), 3, stratify=stratify, seed=0)
