"""Feature transforms: the registry, the built-ins (log1p, polynomial), config specs checked in
one line, plugins registered from a module, and the stored form read back as untrusted data."""

from __future__ import annotations

import copy
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omegaconf import OmegaConf

from stages.dataset import DataError
from stages.transforms import (
    BUILTIN_MODULE,
    TRANSFORMS,
    FittedTransform,
    StoredMetadataError,
    TransformError,
    UnknownTransformError,
    check_specs,
    fit_transforms,
    register_transform,
    restore_transform,
)

NAMES = ("a", "b", "c")


@pytest.fixture(autouse=True)
def registry() -> Iterator[dict[str, Any]]:
    """The registry as each test found it: what a test registers does not leak."""
    saved = dict(TRANSFORMS)
    yield TRANSFORMS
    TRANSFORMS.clear()
    TRANSFORMS.update(saved)


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert text and "\n" not in text, text
    return text


def data(n: int = 20, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) * 2.0


def fit_one(spec: Any, X: np.ndarray, names: tuple[str, ...] = NAMES) -> FittedTransform:
    fitted, _, _ = fit_transforms([spec], X, names)
    return fitted[0]


# ---- polynomial -----------------------------------------------------------------------------

def test_polynomial_names_in_scikit_learn_order() -> None:
    two = fit_one("polynomial", data(d=2), ("a", "b"))
    assert two.feature_names_out == ("a", "b", "a^2", "a*b", "b^2")
    three = fit_one({"name": "polynomial", "degree": 3}, data(d=2), ("a", "b"))
    assert three.feature_names_out == ("a", "b", "a^2", "a*b", "b^2",
                                       "a^3", "a^2*b", "a*b^2", "b^3")
    only = fit_one({"name": "polynomial", "degree": 3, "interaction_only": True}, data())
    assert only.feature_names_out == (*NAMES, "a*b", "a*c", "b*c", "a*b*c")


def test_polynomial_values_are_the_products() -> None:
    X = np.array([[2.0, 3.0], [-1.0, 0.5]])
    out = fit_one({"name": "polynomial", "degree": 3}, X, ("a", "b")).transform(X)
    a, b = X[:, 0], X[:, 1]
    expected = np.column_stack([a, b, a * a, a * b, b * b, a**3, a * a * b, a * b * b, b**3])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("degree", [2, 3])
@pytest.mark.parametrize("interaction_only", [False, True])
def test_polynomial_matches_scikit_learn_bit_for_bit(degree: int,
                                                     interaction_only: bool) -> None:
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    X = data(n=50, d=4, seed=3) * 7.3
    names = ("w", "x", "y", "z")
    reference = preprocessing.PolynomialFeatures(
        degree=degree, interaction_only=interaction_only, include_bias=False).fit(X)
    fitted = fit_one({"name": "polynomial", "degree": degree,
                      "interaction_only": interaction_only}, X, names)
    assert fitted.feature_names_out == tuple(
        name.replace(" ", "*") for name in reference.get_feature_names_out(list(names)))
    np.testing.assert_array_equal(fitted.transform(X), reference.transform(X))


def test_polynomial_overflow_names_the_feature() -> None:
    X = np.array([[1e200, 1.0], [2.0, 3.0]])
    with pytest.raises(TransformError) as error:
        fit_one("polynomial", X, ("big", "small"))
    assert "'big^2'" in one_line(error) and "rescale" in str(error.value)


def test_polynomial_name_clash_with_an_input_column() -> None:
    with pytest.raises(TransformError) as error:
        fit_one("polynomial", data(d=3), ("a", "b", "a*b"))
    assert "'a*b'" in one_line(error) and "rename" in str(error.value)


# ---- log1p ----------------------------------------------------------------------------------

def test_log1p_on_all_columns_by_default() -> None:
    X = np.abs(data())
    fitted = fit_one("log1p", X)
    np.testing.assert_array_equal(fitted.transform(X), np.log1p(X))
    assert fitted.feature_names_out == NAMES and fitted.state == {}


def test_log1p_on_columns_chosen_by_name_and_position() -> None:
    X = np.abs(data())
    by_name = fit_one({"name": "log1p", "columns": ["c", "a"]}, X)
    by_position = fit_one({"name": "log1p", "columns": [2, 0]}, X)
    mixed = fit_one({"name": "log1p", "columns": ["c", 0]}, X)
    expected = X.copy()
    expected[:, [0, 2]] = np.log1p(X[:, [0, 2]])
    for fitted in (by_name, by_position, mixed):
        np.testing.assert_array_equal(fitted.transform(X), expected)
    assert by_name.options == {"columns": ["c", "a"]}  # recorded as the user wrote them


def test_log1p_value_at_or_below_minus_one_is_one_line_naming_column_and_fix() -> None:
    X = np.array([[0.0, 5.0, 1.0], [1.0, -1.0, 2.0]])
    with pytest.raises(TransformError) as error:
        fit_one("log1p", X)
    text = one_line(error)
    assert "'b'" in text and "-1.0" in text and "> -1" in text and "columns=[" in text
    assert "train split" in text and isinstance(error.value, DataError)
    # a column left out is not checked
    fit_one({"name": "log1p", "columns": ["a", "c"]}, X)


def test_log1p_checks_its_domain_when_applied_to_new_rows_too() -> None:
    fitted = fit_one("log1p", np.abs(data()))
    with pytest.raises(TransformError) as error:
        fitted.transform(np.array([[0.0, -3.0, 0.0]]))
    assert "'b'" in one_line(error)


@pytest.mark.parametrize(("columns", "fragment"), [
    (["nope"], "'nope' is not a feature"),
    ([3], "outside 0...2"),
    (["a", 0], "'a' is named twice"),
])
def test_log1p_columns_that_are_not_there(columns: list, fragment: str) -> None:
    with pytest.raises(TransformError) as error:
        fit_one({"name": "log1p", "columns": columns}, data())
    assert fragment in one_line(error)
    assert one_line(error).startswith("data.transforms[0] (log1p): ")


# ---- config specs ---------------------------------------------------------------------------

def test_unknown_transform_lists_the_known_ones_and_the_plugin_hint() -> None:
    with pytest.raises(TransformError) as error:
        check_specs(["log1p", "nope"])
    text = one_line(error)
    assert text.startswith("data.transforms[1]: unknown transform 'nope'")
    assert "['log1p', 'polynomial']" in text and "pipeline.plugins=[module]" in text


@pytest.mark.parametrize(("specs", "fragment"), [
    ("log1p", "data.transforms must be a list, e.g. data.transforms=[log1p]"),
    ({"name": "log1p"}, "data.transforms must be a list"),
    ([3], "data.transforms[0]: expected a transform name"),
    ([{"degree": 2}], "data.transforms[0]: a mapping needs the transform's name"),
    ([{"name": "polynomial", "degre": 2}],
     "(polynomial): unknown option 'degre'; options: ['degree', 'interaction_only']"),
    ([{"name": "polynomial", "degree": "2"}], "option 'degree' must be an integer, got '2'"),
    ([{"name": "polynomial", "degree": True}], "option 'degree' must be an integer"),
    ([{"name": "polynomial", "degree": 4}], "option 'degree' must be 2 or 3, got 4"),
    ([{"name": "polynomial", "interaction_only": "yes"}],
     "option 'interaction_only' must be true or false"),
    ([{"name": "log1p", "columns": "a"}], "option 'columns' must be a non-empty list"),
    ([{"name": "log1p", "columns": []}], "option 'columns' must be a non-empty list"),
    ([{"name": "log1p", "columns": [1.5]}], "option 'columns' holds 1.5"),
    ([{"name": "log1p", "columns": [-1]}], "option 'columns' holds -1"),
    ([{"name": "log1p", "columns": {1}}], "option columns holds a set"),
])
def test_bad_specs_are_one_line(specs: Any, fragment: str) -> None:
    with pytest.raises(TransformError) as error:
        check_specs(specs)
    assert fragment in one_line(error)


def test_specs_fill_in_defaults_and_accept_omegaconf_values() -> None:
    cfg = OmegaConf.create({"transforms": ["log1p", {"name": "polynomial", "degree": 3},
                                           {"name": "log1p", "columns": ["a", 1]}]})
    specs = check_specs(cfg.transforms)
    assert [(s.name, dict(s.options)) for s in specs] == [
        ("log1p", {"columns": None}),
        ("polynomial", {"degree": 3, "interaction_only": False}),
        ("log1p", {"columns": ["a", 1]}),
    ]
    assert type(specs[2].options["columns"]) is list  # plain JSON, not a ListConfig
    assert check_specs(None) == () and check_specs([]) == ()


def test_transforms_chain_each_on_the_previous_output() -> None:
    X = np.abs(data(d=2))
    fitted, out, names = fit_transforms(["log1p", "polynomial"], X, ("a", "b"))
    assert [t.name for t in fitted] == ["log1p", "polynomial"]
    assert fitted[1].feature_names_in == ("a", "b") and names == ("a", "b", "a^2", "a*b", "b^2")
    L = np.log1p(X)
    np.testing.assert_array_equal(out[:, 3], L[:, 0] * L[:, 1])
    unchanged, same, same_names = fit_transforms([], X, ("a", "b"))
    assert unchanged == () and same is X and same_names == ("a", "b")


# ---- registration and plugins ---------------------------------------------------------------

def _shift(X: np.ndarray, state: dict, names: tuple, *, by: float = 1.0) -> np.ndarray:
    return X + by


def test_register_rules() -> None:
    with pytest.raises(ValueError, match="already registered; pass overwrite=True"):
        register_transform("log1p", _shift)
    register_transform("log1p", _shift, overwrite=True)
    assert TRANSFORMS["log1p"].module == __name__
    with pytest.raises(ValueError, match="must be an identifier"):
        register_transform("not a name", _shift)
    with pytest.raises(ValueError, match=r"apply must take \(X, state, feature_names"):
        register_transform("two", lambda X, state: X)
    with pytest.raises(ValueError, match="keyword parameters"):
        register_transform("star", lambda X, state, names, **options: X)
    with pytest.raises(ValueError, match="callables"):
        register_transform("bad", _shift, fit=3)  # type: ignore[arg-type]


def test_options_come_from_apply_and_are_typed_by_their_defaults() -> None:
    register_transform("shift", _shift)
    assert check_specs([{"name": "shift", "by": 2}])[0].options == {"by": 2.0}
    with pytest.raises(TransformError, match="option 'by' must be a number"):
        check_specs([{"name": "shift", "by": "2"}])

    def scaled(X: np.ndarray, state: dict, names: tuple, *, factor: float) -> np.ndarray:
        return X * factor

    register_transform("scaled", scaled)
    with pytest.raises(TransformError) as error:
        check_specs(["scaled"])
    assert "option 'factor' is required, e.g. {name: scaled, factor: ...}" in one_line(error)


PLUGIN = '''
import numpy as np
from stages.transforms import register_transform

SEEN = []

def fit(X, feature_names, *, quantile=0.5):
    SEEN.append(np.array(X))
    return {"centre": np.quantile(X, quantile, axis=0)}

def apply(X, state, feature_names, *, quantile=0.5):
    return X - np.asarray(state["centre"])

def check_state(state, feature_names, **options):
    if set(state) != {"centre"} or len(state["centre"]) != len(feature_names):
        raise ValueError("'centre' must hold one number per feature")

register_transform("centre", apply, fit=fit, check_state=check_state)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A plugin module ``centre_plugin`` in tmp_path, imported as pipeline.plugins would."""
    (tmp_path / "centre_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "centre_plugin", raising=False)
    module = importlib.import_module("centre_plugin")
    yield module
    sys.modules.pop("centre_plugin", None)


def test_plugin_transform_is_fitted_and_records_its_module(plugin: Any) -> None:
    X = data(n=11)
    fitted = fit_one({"name": "centre", "quantile": 0.25}, X)
    assert fitted.module == "centre_plugin" and TRANSFORMS["centre"].module == "centre_plugin"
    assert len(plugin.SEEN) == 1
    np.testing.assert_array_equal(plugin.SEEN[0], X)
    centre = np.quantile(X, 0.25, axis=0)
    assert fitted.state == {"centre": centre.tolist()}  # NumPy arrays kept as JSON lists
    np.testing.assert_array_equal(fitted.transform(X), X - centre)
    stored = fitted.to_dict()
    assert stored["module"] == "centre_plugin"
    back = restore_transform(json.loads(json.dumps(stored)))
    assert back.to_dict() == stored
    new = data(n=5, seed=9)
    assert back.transform(new).tobytes() == fitted.transform(new).tobytes()
    assert len(plugin.SEEN) == 1  # restoring does not fit again


def test_a_missing_plugin_names_its_module(plugin: Any) -> None:
    stored = fit_one("centre", data()).to_dict()
    del TRANSFORMS["centre"]  # a process that did not import the plugin
    with pytest.raises(UnknownTransformError) as error:
        restore_transform(stored)
    assert one_line(error) == (
        "the run used transform 'centre' from plugin module 'centre_plugin', which is not "
        "imported here: name it again, e.g. pipeline.plugins=[centre_plugin]")
    assert error.value.module == "centre_plugin" and isinstance(error.value, ValueError)


def test_a_transform_registered_by_another_module_is_refused(plugin: Any) -> None:
    stored = fit_one("centre", data()).to_dict()
    register_transform("centre", _shift, overwrite=True)
    with pytest.raises(StoredMetadataError) as error:
        restore_transform(stored)
    assert "from module 'centre_plugin', but here" in one_line(error)


def test_check_state_guards_a_stored_state(plugin: Any) -> None:
    stored = fit_one("centre", data()).to_dict()
    stored["state"] = {"centre": [1.0]}
    with pytest.raises(StoredMetadataError) as error:
        restore_transform(stored)
    assert "one number per feature" in one_line(error)
    stored["state"] = {}  # check_state reads a key that is not there: still one line
    with pytest.raises(StoredMetadataError):
        restore_transform(stored)


def test_plugin_bugs_are_caught_in_one_line() -> None:
    def wide(X: np.ndarray, state: dict, names: tuple) -> np.ndarray:
        return np.hstack([X, X])

    def in_place(X: np.ndarray, state: dict, names: tuple) -> np.ndarray:
        X += 1.0
        return X

    def nan(X: np.ndarray, state: dict, names: tuple) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.sqrt(X - 10.0)

    def not_json(X: np.ndarray, names: tuple, **options: Any) -> dict:
        return {"when": object()}

    for name, apply in (("wide", wide), ("in_place", in_place), ("nan", nan)):
        register_transform(name, apply)
    register_transform("not_json", _shift, fit=not_json)
    X = data()
    original = X.copy()
    for name, fragment in (("wide", "apply returned shape (20, 6)"),
                           ("in_place", "read-only"),
                           ("nan", "feature 'a' is not finite after the transform"),
                           ("not_json", "holds a object, not a JSON value")):
        with pytest.raises(TransformError) as error:
            fit_one(name, X)
        assert fragment in one_line(error), name
    np.testing.assert_array_equal(X, original)  # the caller's data untouched


def test_output_is_a_new_array_even_for_an_identity_plugin() -> None:
    register_transform("same", lambda X, state, names: X)
    X = data()
    out = fit_one("same", X).transform(X)
    assert not np.shares_memory(out, X)
    out[0, 0] = 99.0
    assert X[0, 0] != 99.0


# ---- the stored form, untrusted -------------------------------------------------------------

def stored_log1p() -> dict[str, Any]:
    return fit_one({"name": "log1p", "columns": ["b"]}, np.abs(data())).to_dict()


def test_stored_form_round_trips_through_json() -> None:
    stored = stored_log1p()
    assert stored == {"name": "log1p", "module": BUILTIN_MODULE, "options": {"columns": ["b"]},
                      "state": {}, "feature_names_in": ["a", "b", "c"]}
    back = restore_transform(json.loads(json.dumps(stored)))
    X = np.abs(data(seed=4))
    assert back.transform(X).tobytes() == fit_one(
        {"name": "log1p", "columns": ["b"]}, np.abs(data())).transform(X).tobytes()


def _mutations() -> list[tuple[str, Any, str]]:
    """(case, a stored transform with one thing wrong, what the error must say)."""
    good = stored_log1p()

    def changed(**fields: Any) -> dict[str, Any]:
        return {**copy.deepcopy(good), **fields}

    without = {k: v for k, v in good.items() if k != "state"}
    deep: Any = [1.0]
    for _ in range(40):
        deep = [deep]
    keys = "must be a mapping with exactly the keys"
    return [
        ("not a mapping", [good], keys),
        ("a key missing", without, keys),
        ("an extra key", changed(code="import os"), keys),
        ("name not a string", changed(name=7), "'name' must be a transform name, got 7"),
        ("name with a newline", changed(name="log1p\nx"), "'name' must be a transform name"),
        ("module not a module name", changed(module="os; rm -rf /"),
         "'module' must be a module name"),
        ("module a list", changed(module=["stages"]), "'module' must be a module name"),
        ("options not a mapping", changed(options=[1]), "'options' and 'state' must be"),
        ("unknown option", changed(options={"columns": None, "evil": 1}),
         "unknown option 'evil'"),
        ("column not a feature", changed(options={"columns": ["zzz"]}),
         "column 'zzz' is not a feature"),
        ("column position out of range", changed(options={"columns": [9]}),
         "column position 9 is outside"),
        ("column ill-typed", changed(options={"columns": [True]}), "'columns' holds True"),
        ("state for a stateless transform", changed(state={"x": 1}), "it is stateless"),
        ("state not a mapping", changed(state="{}"), "'options' and 'state' must be"),
        ("state nested too deep", changed(state={"x": deep}), "nested more than 32 levels"),
        ("state with NaN", changed(state={"x": float("nan")}), "non-finite number nan"),
        ("names not a list", changed(feature_names_in="abc"), "'feature_names_in' must be"),
        ("names repeated", changed(feature_names_in=["a", "a", "c"]),
         "'feature_names_in' must be"),
        ("names not strings", changed(feature_names_in=[1, 2, 3]),
         "'feature_names_in' must be"),
        ("degree out of range", {**copy.deepcopy(good), "name": "polynomial",
                                 "options": {"degree": 9, "interaction_only": False}},
         "option 'degree' must be 2 or 3, got 9"),
    ]


@pytest.mark.parametrize(("case", "stored", "fragment"), _mutations(),
                         ids=[case for case, _, _ in _mutations()])
def test_malformed_stored_transforms_are_one_line_errors(case: str, stored: Any,
                                                         fragment: str) -> None:
    with pytest.raises(StoredMetadataError) as error:
        restore_transform(stored, "metadata: transforms[0]")
    assert one_line(error).startswith("metadata: transforms[0]")
    assert fragment in str(error.value) and len(str(error.value)) < 300
