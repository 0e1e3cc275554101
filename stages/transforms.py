"""Feature transforms applied before normalisation, keyed by the name used in the config.

A transform maps the feature matrix X: (n, d_in) to (n, d_out). It is given in the config as a
name or a mapping of the name and its options::

    data.transforms=[log1p]
    data.transforms=[{name: log1p, columns: [age, 2]}, {name: polynomial, degree: 3}]

It is registered as pure functions (see :func:`register_transform`):

* ``apply(X, state, feature_names, **options) -> (n, d_out)``: the transform itself; its
  keyword parameters after the first three ARE the transform's options (their defaults are the
  options' defaults and give their types);
* ``fit(X, feature_names, **options) -> state``: what it learns from the TRAINING split, as a
  JSON-able dict (numbers, strings, lists, dicts; NumPy arrays become lists). Leave it out for
  a stateless transform (state ``{}``);
* ``names_out(feature_names, **options) -> names``: the output columns' names (the input's by
  default); it is also where the options are checked against the columns.

Fitting gives a :class:`FittedTransform`: the name, options (defaults filled in), fitted state
and column names, i.e. everything needed to apply it again. Its :meth:`FittedTransform.to_dict`
form is stored with the model, and :func:`restore_transform` rebuilds it from that untrusted
dict through the same registry entry, so a served model applies the state that training
applied, bit for bit (the state is kept in its JSON form from the start).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations, combinations_with_replacement
from typing import Any

import numpy as np

from stages.dataset import DataError

Apply = Callable[..., Any]  # apply(X, state, feature_names, **options) -> (n, d_out)
Fit = Callable[..., Mapping[str, Any]]  # fit(X, feature_names, **options) -> state
NamesOut = Callable[..., Sequence[str]]  # names_out(feature_names, **options) -> names
CheckState = Callable[..., None]  # check_state(state, feature_names, **options)
CheckOptions = Callable[..., None]  # check_options(**options)

PLUGIN_HINT = "pipeline.plugins=[module]"
BUILTIN_MODULE = __name__
_REQUIRED = inspect.Parameter.empty
_MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")
_MAX_DEPTH = 32  # nesting accepted in options and state (stored dicts are untrusted)


class TransformError(DataError):
    """A transform in the user's config or data: unknown name, bad option, values outside
    its domain. One line naming the problem and the fix."""


class StoredMetadataError(ValueError):
    """Stored preprocessing metadata (a checkpoint's) that is malformed. One line."""


class UnknownTransformError(StoredMetadataError):
    """A stored transform whose name is not registered in this process: its plugin module
    (``module``, as recorded) was not imported."""

    def __init__(self, name: str, module: str) -> None:
        super().__init__(f"the run used transform {name!r} from plugin module {module!r}, "
                         f"which is not imported here: name it again, e.g. "
                         f"pipeline.plugins=[{module}]")
        self.name, self.module = name, module


def _shown(value: Any, limit: int = 60) -> str:
    """repr(value) cut to ``limit`` characters (it goes into a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- JSON values: options and state are kept in the form they are stored in --------------------

def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    """``value`` as plain JSON types (dict with str keys, list, str, int, float, bool, None);
    NumPy arrays and scalars are converted. ValueError (one line) for anything else."""
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where} is nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} holds the non-finite number {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise ValueError(f"{where} has a key that is not a string")
        return {key: _json_value(item, f"{where}.{key}", depth + 1) for key, item in
                value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return [_json_value(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
    raise ValueError(f"{where} holds a {type(value).__name__}, not a JSON value "
                     "(number, string, bool, null, list or mapping)")


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value, exactly as json would read it back."""
    return json.loads(json.dumps(value, allow_nan=False))


def _names(value: Any) -> tuple[str, ...] | None:
    """``value`` as a tuple of distinct strings, or None if it is not one."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return None
    if not all(isinstance(name, str) for name in value) or len(set(value)) != len(value):
        return None
    return tuple(value)


# ---- the registry ----------------------------------------------------------------------------

def _stateless(X: np.ndarray, feature_names: tuple[str, ...], **options: Any) -> dict[str, Any]:
    return {}


def _same_names(feature_names: tuple[str, ...], **options: Any) -> tuple[str, ...]:
    return feature_names


@dataclass(frozen=True)
class Transform:
    """A registered transform: its functions, its options' defaults (``_REQUIRED`` for an
    option without one) and the module it came from (what a stored run names to get it back).
    """

    name: str
    apply: Apply = field(repr=False)
    fit_state: Fit = field(repr=False)
    names_out: NamesOut = field(repr=False)
    defaults: Mapping[str, Any]
    module: str
    stateful: bool
    check_state: CheckState | None = field(default=None, repr=False)
    check_options: CheckOptions | None = field(default=None, repr=False)

    def options(self, given: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``given`` checked against the declared options, defaults filled in, as JSON values.
        TransformError naming ``where`` for an unknown, missing or ill-typed option."""
        try:
            return self._options(given)
        except ValueError as error:
            raise TransformError(f"{where} ({self.name}): {_first_line(error)}") from None

    def _options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        unknown = [key for key in given if key not in self.defaults]
        if unknown:
            raise ValueError(f"unknown option {_shown(unknown[0])}; options: "
                             f"{sorted(self.defaults)}")
        out: dict[str, Any] = {}
        for key, default in self.defaults.items():
            if key in given:
                out[key] = _typed(_json_value(given[key], key), default, key)
            elif default is _REQUIRED:
                raise ValueError(f"option {key!r} is required, e.g. "
                                 f"{{name: {self.name}, {key}: ...}}")
            else:
                out[key] = _json_copy(_json_value(default, key))
        if self.check_options is not None:
            self.check_options(**out)
        return out

    def fit(self, X: np.ndarray, feature_names: Sequence[str], options: Mapping[str, Any],
            where: str = "data.transforms[0]") -> FittedTransform:
        """Fit on X: (n, d_in), the TRAINING features named ``feature_names``; ``options``
        as returned by :meth:`options`. TransformError (one line) for a bad option or state."""
        names = tuple(feature_names)
        here = f"{where} ({self.name})"
        X = _read_only(X, len(names), here)
        names_out = self._names_out(names, options, here, TransformError)
        try:
            state = _json_copy(_json_value(self.fit_state(X, names, **options), "its state"))
        except ValueError as error:  # DataError included: the data are outside its domain
            raise TransformError(f"{here}: {_first_line(error)}") from None
        if not isinstance(state, dict):
            raise TransformError(f"{here}: fit must return a dict of JSON values, got "
                                 f"{type(state).__name__}")
        return FittedTransform(self.name, options, names, names_out, state, self.module,
                               self.apply)

    def restore(self, options: Any, state: Any, feature_names_in: Any,
                where: str = "transforms[0]") -> FittedTransform:
        """The FittedTransform stored as these (untrusted) values; StoredMetadataError (one
        line) for anything that this transform would not have written."""
        here = f"{where} ({self.name})"
        names = _names(feature_names_in)
        if names is None:
            raise StoredMetadataError(f"{here}: 'feature_names_in' must be a list of distinct "
                                      "strings")
        try:
            if not isinstance(options, Mapping) or not isinstance(state, Mapping):
                raise ValueError("'options' and 'state' must be mappings")
            options = self._options(_json_value(options, "options"))
            state = _json_copy(_json_value(state, "state"))
            if not self.stateful and state:
                raise ValueError("it is stateless, but a state is stored for it")
            if self.check_state is not None:
                self.check_state(state, names, **options)
        except (ValueError, LookupError, TypeError) as error:  # check_state reads bad state
            raise StoredMetadataError(f"{here}: {_first_line(error)}") from None
        names_out = self._names_out(names, options, here, StoredMetadataError)
        return FittedTransform(self.name, options, names, names_out, state, self.module,
                               self.apply)

    def _names_out(self, names: tuple[str, ...], options: Mapping[str, Any], here: str,
                   error_type: type[ValueError]) -> tuple[str, ...]:
        try:
            out = self.names_out(names, **options)
        except ValueError as error:
            raise error_type(f"{here}: {_first_line(error)}") from None
        checked = _names(out)
        if checked is None or not checked:
            raise error_type(f"{here}: its output column names are not distinct strings "
                             f"({_shown(out)}); rename the input columns or fix its names_out")
        return checked


def _typed(value: Any, default: Any, key: str) -> Any:
    """``value`` checked against the type of ``default`` (a None or required default accepts
    any JSON value); ValueError "<key> must be ..." otherwise."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
        kind = "true or false"
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
        kind = "a number"
    elif isinstance(default, str):
        ok, kind = isinstance(value, str), "a string"
    elif isinstance(default, list | tuple):
        ok, kind = isinstance(value, list), "a list"
    elif isinstance(default, Mapping):
        ok, kind = isinstance(value, dict), "a mapping"
    else:
        ok, kind = True, ""
    if not ok:
        raise ValueError(f"option {key!r} must be {kind}, got {_shown(value)}")
    return value


TRANSFORMS: dict[str, Transform] = {}


def _option_defaults(name: str, apply: Apply) -> dict[str, Any]:
    """The options of ``apply(X, state, feature_names, **options)``: its parameters after
    the first three, with their defaults."""
    try:
        parameters = list(inspect.signature(apply).parameters.values())
    except (TypeError, ValueError):
        raise ValueError(f"transform {name!r}: apply's signature cannot be read") from None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if len(parameters) < 3 or any(p.kind not in positional for p in parameters[:3]):
        raise ValueError(f"transform {name!r}: apply must take (X, state, feature_names, "
                         "**options)")
    defaults: dict[str, Any] = {}
    for parameter in parameters[3:]:
        if parameter.kind not in (inspect.Parameter.KEYWORD_ONLY,
                                  inspect.Parameter.POSITIONAL_OR_KEYWORD):
            raise ValueError(f"transform {name!r}: declare its options as keyword "
                             f"parameters of apply, not {parameter}")
        defaults[parameter.name] = parameter.default
    return defaults


def register_transform(name: str, apply: Apply, *, fit: Fit | None = None,
                       names_out: NamesOut | None = None,
                       check_state: CheckState | None = None,
                       check_options: CheckOptions | None = None,
                       overwrite: bool = False) -> Transform:
    """Add a transform usable as ``data.transforms=[name]`` (see the module docstring for
    the three functions). Two optional checks raise ValueError (one line):
    ``check_options(**options)`` on the option values, when the config is read (the options'
    types are already checked against their defaults), and ``check_state(state,
    feature_names, **options)`` on a stored state before it is used. Registering an existing name
    needs ``overwrite=True``. The module of ``apply`` is recorded with every fitted use, so a
    stored run can name the plugin module it needs.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a transform name must be an identifier, got {name!r}")
    if not callable(apply) or not all(f is None or callable(f)
                                      for f in (fit, names_out, check_state, check_options)):
        raise ValueError(f"transform {name!r}: apply and the functions given with it must be "
                         "callables")
    if name in TRANSFORMS and not overwrite:
        raise ValueError(f"transform {name!r} is already registered; pass overwrite=True "
                         "to replace it")
    module = getattr(apply, "__module__", None)
    if not isinstance(module, str) or not _MODULE_NAME.match(module):
        raise ValueError(f"transform {name!r}: apply must be a function defined in a module")
    transform = Transform(name, apply, fit or _stateless, names_out or _same_names,
                          _option_defaults(name, apply), module, fit is not None, check_state,
                          check_options)
    TRANSFORMS[name] = transform
    return transform


def get_transform(name: str, where: str = "data.transforms[0]") -> Transform:
    """The registered transform ``name``; TransformError listing the known names if none."""
    try:
        return TRANSFORMS[name]
    except (KeyError, TypeError):  # TypeError: an unhashable name
        raise TransformError(f"{where}: unknown transform {_shown(name)}; known: "
                             f"{sorted(TRANSFORMS)} (a transform from your own module needs "
                             f"{PLUGIN_HINT})") from None


# ---- config specs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class TransformSpec:
    """One checked entry of ``data.transforms``: a registered name and its full options."""

    name: str
    options: Mapping[str, Any]


def check_specs(specs: Any, where: str = "data.transforms") -> tuple[TransformSpec, ...]:
    """The config's transform list checked: each entry a registered name or a mapping
    ``{name: ..., **options}`` with known, well-typed options. None means no transforms.
    TransformError (one line) otherwise."""
    if specs is None:
        return ()
    if isinstance(specs, str | bytes | Mapping) or not isinstance(specs, Sequence):
        raise TransformError(f"{where} must be a list, e.g. {where}=[log1p] or "
                             f"{where}=[{{name: polynomial, degree: 2}}], got {_shown(specs)}")
    return tuple(_check_spec(spec, f"{where}[{i}]") for i, spec in enumerate(specs))


def _check_spec(spec: Any, where: str) -> TransformSpec:
    if isinstance(spec, TransformSpec):
        spec = {"name": spec.name, **spec.options}
    if isinstance(spec, str):
        name, given = spec, {}
    elif isinstance(spec, Mapping):
        given = {str(key): value for key, value in spec.items()}
        name = given.pop("name", None)
        if not isinstance(name, str):
            raise TransformError(f"{where}: a mapping needs the transform's name, e.g. "
                                 f"{{name: polynomial, degree: 2}}, got {_shown(spec)}")
    else:
        raise TransformError(f"{where}: expected a transform name or {{name: ..., options}}, "
                             f"got {_shown(spec)}")
    transform = get_transform(name, where)
    try:
        given = {key: _json_value(value, key) for key, value in given.items()}
    except ValueError as error:
        raise TransformError(f"{where} ({name}): option {_first_line(error)}") from None
    return TransformSpec(name, transform.options(given, where))


# ---- fitted transforms -----------------------------------------------------------------------

def _read_only(X: Any, width: int, where: str) -> np.ndarray:
    """X as a read-only float64 (n, width) array (a view when it already is one): a transform
    cannot modify its caller's data."""
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != width:
        raise TransformError(f"{where}: expected features of shape (n, {width}), got "
                             f"{array.shape}")
    view = array.view()
    view.setflags(write=False)
    return view


@dataclass(frozen=True, eq=False)
class FittedTransform:
    """A transform with its fitted state: everything needed to apply it again.

    options and state are JSON values (as stored); ``module`` is where the transform was
    registered. Compare two with ``to_dict()``.
    """

    name: str
    options: Mapping[str, Any]
    feature_names_in: tuple[str, ...]
    feature_names_out: tuple[str, ...]
    state: Mapping[str, Any]
    module: str
    _apply: Apply = field(repr=False)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """X: (n, d_in) -> (n, d_out) float64, a new array; X is not modified. TransformError
        (one line) for values outside the transform's domain or a non-finite result."""
        X = _read_only(X, len(self.feature_names_in), self.name)
        try:
            out = self._apply(X, self.state, self.feature_names_in, **self.options)
        except ValueError as error:
            raise TransformError(f"{self.name}: {_first_line(error)}") from None
        out = np.asarray(out, dtype=np.float64)
        expected = (X.shape[0], len(self.feature_names_out))
        if out.shape != expected:
            raise TransformError(f"{self.name}: apply returned shape {out.shape} for input "
                                 f"{X.shape}; expected {expected}")
        finite = np.isfinite(out).all(axis=0)
        if not finite.all():
            column = self.feature_names_out[int(np.argmin(finite))]
            raise TransformError(f"{self.name}: feature {column!r} is not finite after the "
                                 "transform (input values too large or outside its domain); "
                                 "rescale or shift that column in the file")
        # a new array even when apply hands back (a view of) its input
        return out.copy() if np.may_share_memory(out, X) else out

    def to_dict(self) -> dict[str, Any]:
        """The stored form: name, module, options, state, feature_names_in (JSON values)."""
        return {
            "name": self.name,
            "module": self.module,
            "options": _json_copy(dict(self.options)),
            "state": _json_copy(dict(self.state)),
            "feature_names_in": list(self.feature_names_in),
        }


_STORED_KEYS = ("name", "module", "options", "state", "feature_names_in")


def restore_transform(data: Any, where: str = "transforms[0]") -> FittedTransform:
    """The FittedTransform stored as ``data`` (a ``to_dict()`` read back; untrusted: checked,
    nothing imported). UnknownTransformError if its name is not registered here;
    StoredMetadataError (one line) for anything else amiss."""
    if not isinstance(data, Mapping) or set(data) != set(_STORED_KEYS):
        raise StoredMetadataError(f"{where} must be a mapping with exactly the keys "
                                  f"{list(_STORED_KEYS)}")
    name, module = data["name"], data["module"]
    if not isinstance(name, str) or not name.isidentifier():
        raise StoredMetadataError(f"{where}: 'name' must be a transform name, got "
                                  f"{_shown(name)}")
    if not isinstance(module, str) or len(module) > 200 or not _MODULE_NAME.match(module):
        raise StoredMetadataError(f"{where} ({name}): 'module' must be a module name, got "
                                  f"{_shown(module)}")
    transform = TRANSFORMS.get(name)
    if transform is None:
        raise UnknownTransformError(name, module)
    if transform.module != module:
        raise StoredMetadataError(f"{where}: the run used transform {name!r} from module "
                                  f"{module!r}, but here {transform.module!r} registers it; "
                                  f"name the run's module, e.g. pipeline.plugins=[{module}]")
    return transform.restore(data["options"], data["state"], data["feature_names_in"], where)


def fit_transforms(specs: Any, X: np.ndarray, feature_names: Sequence[str],
                   where: str = "data.transforms"
                   ) -> tuple[tuple[FittedTransform, ...], np.ndarray, tuple[str, ...]]:
    """Fit the transforms in order on the TRAINING features X: (n, d), each on the output of
    the one before. Returns (fitted transforms, transformed X (n, d_out), output names); X
    itself when there are none."""
    fitted: list[FittedTransform] = []
    names = tuple(feature_names)
    for i, spec in enumerate(check_specs(specs, where)):
        here = f"{where}[{i}]"
        transform = get_transform(spec.name, here).fit(X, names, spec.options, here)
        try:
            X = transform.transform(X)
        except TransformError as error:
            raise TransformError(f"{here} on the train split: {error}") from None
        fitted.append(transform)
        names = transform.feature_names_out
    return tuple(fitted), X, names


# ---- helpers for transforms that act on chosen columns ---------------------------------------

def check_columns(columns: Any = None) -> None:
    """ValueError unless ``columns`` is None (all) or a non-empty list of feature names and/or
    0-based positions (whether they exist is checked against the data by select_columns)."""
    if columns is None:
        return
    if not isinstance(columns, list) or not columns:
        raise ValueError(f"option 'columns' must be a non-empty list of feature names or "
                         f"0-based positions (or left out for all), got {_shown(columns)}")
    for column in columns:
        if not isinstance(column, str) and (not isinstance(column, int)
                                            or isinstance(column, bool) or column < 0):
            raise ValueError(f"option 'columns' holds {_shown(column)}: give feature names "
                             "or 0-based positions")


def select_columns(columns: Any, feature_names: Sequence[str]) -> tuple[int, ...]:
    """The 0-based positions of ``columns`` (None: all; else a list of feature names and/or
    0-based positions) among ``feature_names``. ValueError (one line) naming a column that is
    not there or is named twice."""
    check_columns(columns)
    if columns is None:
        return tuple(range(len(feature_names)))
    positions: list[int] = []
    for column in columns:
        if isinstance(column, str):
            if column not in feature_names:
                raise ValueError(f"column {_shown(column)} is not a feature; features: "
                                 f"{_shown(list(feature_names), 200)}")
            position = list(feature_names).index(column)
        else:
            if column >= len(feature_names):
                raise ValueError(f"column position {column} is outside 0..."
                                 f"{len(feature_names) - 1} (there are {len(feature_names)} "
                                 "features)")
            position = column
        if position in positions:
            raise ValueError(f"column {feature_names[position]!r} is named twice in 'columns'")
        positions.append(position)
    return tuple(positions)


# ---- the built-ins ---------------------------------------------------------------------------

def _log1p_names(feature_names: tuple[str, ...], *, columns: list | None = None
                 ) -> tuple[str, ...]:
    select_columns(columns, feature_names)  # the chosen columns exist
    return feature_names


def log1p(X: np.ndarray, state: Mapping[str, Any], feature_names: tuple[str, ...], *,
          columns: list | None = None) -> np.ndarray:
    """x -> ln(1 + x) on the chosen ``columns`` (names or 0-based positions; None: all), the
    other columns unchanged. X: (n, d) -> (n, d). DataError for a value <= -1 (ln undefined)."""
    chosen = list(select_columns(columns, feature_names))
    outside = X[:, chosen] <= -1.0
    if outside.any():
        row, k = np.argwhere(outside)[0]
        column = feature_names[chosen[k]]
        raise DataError(f"feature {column!r} holds {float(X[row, chosen[k]])!r} (row {row}), "
                        "but log1p needs values > -1; shift that column in the file (add a "
                        "constant) or leave it out with columns=[...]")
    out = np.array(X, dtype=np.float64, copy=True)
    out[:, chosen] = np.log1p(X[:, chosen])
    return out


def _polynomial_terms(d: int, degree: int, interaction_only: bool) -> list[tuple[int, ...]]:
    """The products of degree 2..degree of d columns, in scikit-learn's PolynomialFeatures
    order: by degree, then lexicographically (i <= j <= k; i < j < k if interaction_only)."""
    pick = combinations if interaction_only else combinations_with_replacement
    return [term for k in range(2, degree + 1) for term in pick(range(d), k)]


def _term_name(term: tuple[int, ...], feature_names: tuple[str, ...]) -> str:
    """(0, 0, 1) -> 'a^2*b': each column once, with its power when above 1."""
    parts = []
    for i in dict.fromkeys(term):
        power = term.count(i)
        parts.append(feature_names[i] + (f"^{power}" if power > 1 else ""))
    return "*".join(parts)


def _check_polynomial(degree: int = 2, interaction_only: bool = False) -> None:
    if degree not in (2, 3):
        raise ValueError(f"option 'degree' must be 2 or 3, got {degree}")


def _polynomial_names(feature_names: tuple[str, ...], *, degree: int = 2,
                      interaction_only: bool = False) -> tuple[str, ...]:
    terms = _polynomial_terms(len(feature_names), degree, interaction_only)
    names = feature_names + tuple(_term_name(term, feature_names) for term in terms)
    if len(set(names)) != len(names):
        clash = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"its new feature {clash!r} has the name of an input column; rename "
                         "that column in the file")
    return names


def polynomial(X: np.ndarray, state: Mapping[str, Any], feature_names: tuple[str, ...], *,
               degree: int = 2, interaction_only: bool = False) -> np.ndarray:
    """[x_1..x_d, then every product x_i x_j (i <= j), then x_i x_j x_k (i <= j <= k) for
    degree 3] (strict < with interaction_only): X (n, d) -> (n, d + n_terms), named 'a*b',
    'a^2', 'a^2*b', ... in scikit-learn's PolynomialFeatures(include_bias=False) order. A
    product is formed as x_i (x_j x_k), scikit-learn's rounding, so its values match too."""
    d = X.shape[1]
    terms = _polynomial_terms(d, degree, interaction_only)
    out = np.empty((X.shape[0], d + len(terms)), dtype=np.float64)
    out[:, :d] = X
    with np.errstate(over="ignore", invalid="ignore"):  # overflow: one line from the caller
        for column, term in enumerate(terms, start=d):
            product = X[:, term[-1]]
            for i in reversed(term[:-1]):
                product = X[:, i] * product
            out[:, column] = product
    return out


register_transform("log1p", log1p, names_out=_log1p_names, check_options=check_columns)
register_transform("polynomial", polynomial, names_out=_polynomial_names,
                   check_options=_check_polynomial)
