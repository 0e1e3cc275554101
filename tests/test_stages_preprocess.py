"""The fitted Preprocessor: bit-identical to normalise() without transforms, fitted on train
only, raw columns selected by name, and its stored form (checkpoint metadata) read back as
untrusted data, today's checkpoints included."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stages.dataset import DataError, Dataset
from stages.generate import generate_rf
from stages.normalise import normalise
from stages.preprocess import Preprocessor, fit_preprocessor, preprocess
from stages.split import Splits, split_dataset
from stages.transforms import (
    TRANSFORMS,
    StoredMetadataError,
    TransformError,
    UnknownTransformError,
    register_transform,
)

NAMES = ("a", "b", "c")
ALL = ["log1p", {"name": "polynomial", "degree": 2}]


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    saved = dict(TRANSFORMS)
    yield
    TRANSFORMS.clear()
    TRANSFORMS.update(saved)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert text and "\n" not in text, text
    return text


def dataset(X: np.ndarray, names: tuple[str, ...] = NAMES) -> Dataset:
    return Dataset(X=X, y=np.arange(len(X)) % 2, feature_names=names, label_name="y",
                   classes=("no", "yes"))


def splits(seed: int = 0, val: bool = True) -> Splits:
    """Positive features (log1p applies); test and val far from train, so statistics fitted
    on anything but train would show."""
    rng = np.random.default_rng(seed)
    return Splits(train=dataset(rng.gamma(2.0, 1.0, size=(40, 3))),
                  test=dataset(rng.gamma(9.0, 3.0, size=(15, 3))),
                  val=dataset(rng.gamma(5.0, 2.0, size=(10, 3))) if val else None)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- without transforms: exactly today's normalise and checkpoint metadata ---------------------

def test_without_transforms_preprocess_is_normalise_bit_for_bit() -> None:
    data = generate_rf(n_samples=300, seed=42)
    parts = split_dataset(data, test_fraction=0.2, val_fraction=0.1, seed=7)
    pre, out = preprocess(parts)
    today = normalise(parts)
    for split in ("train", "test", "val"):
        assert getattr(out, split).digest() == getattr(today, split).digest()
    assert same_bits(out.normaliser.mean, today.normaliser.mean)
    assert same_bits(out.normaliser.std, today.normaliser.std)
    assert pre.normaliser is out.normaliser and pre.transforms == ()
    assert pre.feature_names_out == pre.feature_names == data.feature_names
    # serving the raw test split gives the evaluated inputs, bit for bit
    assert same_bits(pre.transform(parts.test.X), out.test.X)
    assert same_bits(pre.transform(parts.test.to_frame()), out.test.X)


def test_without_transforms_metadata_is_todays_checkpoint_metadata() -> None:
    parts = split_dataset(generate_rf(n_samples=200, seed=3), seed=5)
    pre, prepared = preprocess(parts, [])
    # what pipeline/run/data.py writes today, key for key
    today = {
        "normaliser": prepared.normaliser.to_dict(),
        "feature_names": list(prepared.train.feature_names),
        "label_name": prepared.train.label_name,
        "classes": list(prepared.train.classes),
    }
    meta = pre.to_metadata()
    assert meta == today and "transforms" not in meta
    assert json.dumps(meta, sort_keys=True) == json.dumps(today, sort_keys=True)


def test_reads_todays_checkpoint_metadata() -> None:
    parts = splits()
    today = normalise(parts)
    stored = json.loads(json.dumps({
        "normaliser": today.normaliser.to_dict(), "feature_names": list(NAMES),
        "label_name": "y", "classes": ["no", "yes"], "config_digest": "0" * 64,
        "seeds": {"data": 1, "split": 2},
    }))
    pre = Preprocessor.from_metadata(stored)
    assert pre.transforms == () and pre.classes == ("no", "yes") and pre.label_name == "y"
    assert same_bits(pre.transform(parts.test.X), today.test.X)
    assert pre.to_metadata() == {k: stored[k] for k in
                                 ("normaliser", "feature_names", "label_name", "classes")}


# ---- with transforms ------------------------------------------------------------------------

def test_transforms_then_normalise_and_serving_gives_the_evaluated_inputs() -> None:
    parts = splits()
    pre, out = preprocess(parts, ALL)
    assert pre.feature_names == NAMES
    assert pre.feature_names_out == (*NAMES, "a^2", "a*b", "a*c", "b^2", "b*c", "c^2")
    assert out.train.feature_names == pre.feature_names_out
    L = np.log1p(parts.train.X)
    np.testing.assert_allclose(pre.normaliser.mean[:3], L.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(pre.normaliser.mean[3], (L[:, 0] ** 2).mean(), rtol=1e-12)
    for split in ("train", "test", "val"):
        raw, model_inputs = getattr(parts, split), getattr(out, split)
        assert same_bits(pre.transform(raw.X), model_inputs.X), split
    assert pre.plugin_modules == ()


def test_metadata_round_trip_through_json_keeps_the_bits() -> None:
    parts = splits()
    pre, _ = preprocess(parts, [{"name": "log1p", "columns": ["c", 0]},
                                {"name": "polynomial", "degree": 3, "interaction_only": True}])
    meta = pre.to_metadata()
    assert [t["name"] for t in meta["transforms"]] == ["log1p", "polynomial"]
    back = Preprocessor.from_metadata(json.loads(json.dumps(meta)))
    assert back.to_metadata() == meta
    new = np.random.default_rng(8).gamma(3.0, 2.0, size=(25, 3))
    assert same_bits(back.transform(new), pre.transform(new))


def test_fit_preprocessor_is_the_preprocessor_of_preprocess() -> None:
    parts = splits()
    pre, _ = preprocess(parts, ALL)
    assert fit_preprocessor(parts.train, ALL).to_metadata() == pre.to_metadata()
    assert fit_preprocessor(parts.train).to_metadata() == preprocess(parts)[0].to_metadata()


SEEN: list[np.ndarray] = []


def _fit_centre(X: np.ndarray, names: tuple[str, ...]) -> dict[str, Any]:
    SEEN.append(np.array(X))
    return {"median": np.median(X, axis=0)}


def _centre(X: np.ndarray, state: dict[str, Any], names: tuple[str, ...]) -> np.ndarray:
    return X - np.asarray(state["median"])


def test_a_stateful_transform_is_fitted_on_train_only() -> None:
    register_transform("centre", _centre, fit=_fit_centre)
    SEEN.clear()
    parts = splits()
    pre, out = preprocess(parts, ["centre"])
    assert len(SEEN) == 1 and same_bits(SEEN[0], parts.train.X)
    median = np.median(parts.train.X, axis=0)
    assert pre.transforms[0].state == {"median": median.tolist()}
    np.testing.assert_array_equal(pre.normaliser.mean, (parts.train.X - median).mean(axis=0))
    assert same_bits(out.test.X, pre.normaliser.transform(parts.test.X - median))
    assert pre.plugin_modules == (__name__,)
    assert len(SEEN) == 1  # applying to test and val does not fit again


# ---- raw input ------------------------------------------------------------------------------

@pytest.fixture
def fitted() -> tuple[Preprocessor, Splits]:
    parts = splits()
    return preprocess(parts, ALL)[0], parts


def test_frame_columns_are_taken_by_name_in_order(fitted: tuple[Preprocessor, Splits]) -> None:
    pre, parts = fitted
    X = parts.test.X
    expected = pre.transform(X)
    shuffled = pd.DataFrame({"extra": np.ones(len(X)), "c": X[:, 2], "a": X[:, 0],
                             "b": X[:, 1]})
    assert same_bits(pre.transform(shuffled), expected)
    unnamed = pd.DataFrame(X)  # rows sent without column names: read in order
    assert same_bits(pre.transform(unnamed), expected)
    assert same_bits(pre.transform(X.tolist()), expected)


@pytest.mark.parametrize(("raw", "fragment"), [
    (pd.DataFrame({"a": [1.0], "c": [2.0], "x": [3.0]}),
     "input: the feature column 'b' is missing; expected the columns ['a', 'b', 'c']"),
    (pd.DataFrame({"a": [1.0], "b": ["two"], "c": [2.0]}),
     "input: the column 'b' holds values that are not numbers"),
    (pd.DataFrame({"a": [1.0], "b": [np.nan], "c": [2.0]}),
     "input: feature 'b' holds nan (row 0); give a finite number"),
    (pd.DataFrame({"a": [1.0], "b": pd.array([None], dtype="Float64"), "c": [2.0]}),
     "input: feature 'b' holds nan (row 0)"),
    (np.array([1.0, 2.0, 3.0]), "expected features of shape (n, 3)"),
    (np.zeros((2, 4)), "expected features of shape (n, 3) for the columns ['a', 'b', 'c']"),
    ([["x", 1, 2]], "input: the features must be numbers"),
])
def test_bad_raw_input_is_one_line(fitted: tuple[Preprocessor, Splits], raw: Any,
                                   fragment: str) -> None:
    with pytest.raises(DataError) as error:
        fitted[0].transform(raw)
    assert fragment in one_line(error)


def test_raw_input_outside_a_transforms_domain(fitted: tuple[Preprocessor, Splits]) -> None:
    with pytest.raises(TransformError) as error:
        fitted[0].transform(np.array([[1.0, -2.0, 1.0]]))
    assert one_line(error).startswith("log1p: feature 'b' holds -2.0")


def test_a_split_outside_the_domain_names_split_and_transform() -> None:
    parts = splits()
    bad_test = parts.test.X.copy()
    bad_test[3, 2] = -5.0
    with pytest.raises(TransformError) as error:
        preprocess(Splits(parts.train, dataset(bad_test), parts.val), ALL)
    assert one_line(error).startswith(
        "data.transforms[0] on the test split: log1p: feature 'c' holds -5.0 (row 3)")


def test_a_new_feature_named_like_the_label_is_refused() -> None:
    data = Dataset(X=np.ones((4, 1)), y=[0, 1, 0, 1], feature_names=("a",),
                   label_name="a^2", classes=("0", "1"))
    with pytest.raises(TransformError) as error:
        fit_preprocessor(data, ["polynomial"])
    assert "'a^2', like the label column" in one_line(error)


# ---- stored metadata, untrusted -------------------------------------------------------------

def stored() -> dict[str, Any]:
    return preprocess(splits(), ALL)[0].to_metadata()


def _mutations() -> list[tuple[str, Any, str]]:
    good = stored()

    def changed(**fields: Any) -> dict[str, Any]:
        return {**copy.deepcopy(good), **fields}

    def transform(i: int, **fields: Any) -> dict[str, Any]:
        out = copy.deepcopy(good)
        out["transforms"][i].update(fields)
        return out

    without_names = {k: v for k, v in good.items() if k != "feature_names"}
    mean = good["normaliser"]["mean"]
    return [
        ("not a mapping", [good], "metadata must be a mapping"),
        ("no feature names", without_names, "'feature_names' must be a non-empty list"),
        ("feature names repeated", changed(feature_names=["a", "a", "c"]), "'feature_names'"),
        ("feature names empty", changed(feature_names=[]), "'feature_names'"),
        ("classes not strings", changed(classes=[0, 1]), "'classes' must be"),
        ("label not a string", changed(label_name=None), "'label_name' must be a string"),
        ("label is a feature", changed(label_name="a*b"), "the label 'a*b' is also a feature"),
        ("transforms not a list", changed(transforms={"name": "log1p"}),
         "'transforms' must be a list"),
        ("normaliser missing", changed(normaliser=None), "'normaliser' must be a mapping"),
        ("normaliser extra key", changed(normaliser={**good["normaliser"], "x": []}),
         "exactly 'mean' and 'std'"),
        ("mean as text", changed(normaliser={**good["normaliser"], "mean": ["1.5"] * 9}),
         "'normaliser.mean' must be a list of finite numbers"),
        ("std holds a bool", changed(normaliser={**good["normaliser"], "std": [True] * 9}),
         "'normaliser.std' must be"),
        ("std zero", changed(normaliser={**good["normaliser"], "std": [0.0] * 9}),
         "finite, positive std"),
        ("normaliser too short", changed(normaliser={"mean": mean[:3],
                                                     "std": good["normaliser"]["std"][:3]}),
         "the normaliser has 3 features, the transformed data 9"),
        ("transform reads other columns", transform(0, feature_names_in=["a", "b", "d"]),
         "transforms[0] (log1p) reads the columns ['a', 'b', 'd']"),
        ("transforms out of order", changed(transforms=good["transforms"][::-1]),
         "reads the columns"),
        ("transform malformed", transform(1, options={"degree": "3"}),
         "metadata: transforms[1] (polynomial): option 'degree' must be an integer"),
        ("transform with code", transform(0, code="__import__('os')"),
         "must be a mapping with exactly the keys"),
    ]


@pytest.mark.parametrize(("case", "meta", "fragment"), _mutations(),
                         ids=[case for case, _, _ in _mutations()])
def test_malformed_metadata_is_a_one_line_error(case: str, meta: Any, fragment: str) -> None:
    with pytest.raises(StoredMetadataError) as error:
        Preprocessor.from_metadata(meta)
    assert one_line(error).startswith("metadata")
    assert fragment in str(error.value)


def test_fuzzed_metadata_never_escapes_as_another_error() -> None:
    """Random single-leaf mutations: each is read back or refused with one line."""
    good = stored()
    rng = np.random.default_rng(0)
    junk = [None, True, -1, 0.5, "", "x", [], {}, [1, "a"], {"name": "log1p"}, 1e308]

    def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if isinstance(value, dict | list) and value:
                yield from leaves(value, (*path, key))
            yield (*path, key)

    paths = list(leaves(good))
    for _ in range(300):
        meta = copy.deepcopy(good)
        path = paths[rng.integers(len(paths))]
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = junk[rng.integers(len(junk))]
        try:
            Preprocessor.from_metadata(meta)
        except StoredMetadataError as error:
            assert str(error) and "\n" not in str(error)


PLUGIN = '''
import numpy as np
from stages.transforms import register_transform

def fit(X, feature_names):
    return {"low": X.min(axis=0)}

def apply(X, state, feature_names):
    return X - np.asarray(state["low"])

register_transform("from_low", apply, fit=fit)
'''


def test_a_run_whose_plugin_is_missing_names_the_module(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "low_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "low_plugin", raising=False)
    importlib.import_module("low_plugin")
    try:
        pre, _ = preprocess(splits(), ["log1p", "from_low"])
        meta = json.loads(json.dumps(pre.to_metadata()))
        assert pre.plugin_modules == ("low_plugin",)
        assert meta["transforms"][1]["module"] == "low_plugin"
        back = Preprocessor.from_metadata(meta)
        new = splits(seed=4).test.X
        assert same_bits(back.transform(new), pre.transform(new))
        del TRANSFORMS["from_low"]  # serving in a process that did not import the plugin
        with pytest.raises(UnknownTransformError) as error:
            Preprocessor.from_metadata(meta)
        assert "'from_low' from plugin module 'low_plugin'" in one_line(error)
        assert "pipeline.plugins=[low_plugin]" in str(error.value)
    finally:
        sys.modules.pop("low_plugin", None)
