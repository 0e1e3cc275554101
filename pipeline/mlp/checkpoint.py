"""JSON checkpoints: layout, atomic writing, strict reading.

Layout (``format_version`` 1; keys are written sorted, lists of lists are row-major):

    {
      "format_version": 1,
      "architecture": {"layer_sizes": [2, 12, 1], "activations": ["relu"],
                       "output": "sigmoid", "init": "uniform", "dtype": "float64", "seed": 0},
      "parameters": {"weights": [W_0, W_1, ...],      # W_l: fan_in lists of fan_out numbers
                     "biases":  [b_0, b_1, ...]},     # b_l: 1 list of fan_out numbers
      "training": null | {
        "epoch": 30, "batch_size": null | 32, "weight_decay": 0.0,
        "clip": "value", "clip_value": 1.0,
        "optimizer": {"name": "adam", "learning_rate": 0.01,
                      "options": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-08},
                      "step": 30,
                      "state": {"m": {"weights": [...], "biases": [...]}, "v": {...}}},
        "shuffle": {"seed": null | 7, "generator": <numpy Generator.bit_generator.state>}
      },
      "metadata": {...}                               # free-form, round-trips as JSON
    }

Numbers are written by Python's float repr, which round-trips float64 exactly; float32 values
go through float64, which is exact too, so a loaded model predicts bit-for-bit the same.
Nothing is unpickled or executed on loading.

A checkpoint is untrusted input, so ``load`` checks it before allocating for it: only a
regular file no larger than the memory budget allows is read (its parsed JSON can take ~32
bytes of Python objects per byte of text), and the declared ``layer_sizes`` (a list of at
most ``MAX_LAYERS`` ints >= 1) must fit both the file (every number takes at least 2 bytes of
text) and the memory budget (``default_memory_budget``: a quarter of physical memory) before
any array of that size exists.

A model is read and written through its public surface (``state.Model``); reading builds it
with the class it is given (``MLP.load`` passes ``MLP``), so this module never imports
``model``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import numbers
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from .errors import CheckpointError
from .network import ParameterLayout
from .optimizers import make_optimizer
from .settings import check_setting
from .state import Model, TrainingState
from .validation import SettingError

FORMAT_VERSION = 1
M = TypeVar("M", bound=Model)

# Limits for loading untrusted files (see the module docstring).
MEMORY_FRACTION = 0.25  # of physical memory: the memory budget of one load
PARAMETER_COPIES = 4  # float64 copies of the parameters alive while loading (model, up to two
# optimiser states, one array being decoded)
JSON_EXPANSION = 32  # worst-case bytes of parsed Python objects per byte of JSON ('[],' -> 64)
MIN_BYTES_PER_NUMBER = 2  # a number is >= 1 character, then a ',' or a ']'
MAX_LAYERS = 1024  # entries in layer_sizes


# ---- writing ---------------------------------------------------------------------------------

def _layers_json(layout: ParameterLayout, flat: npt.NDArray[np.floating]) -> dict[str, Any]:
    as64 = flat.astype(np.float64)
    return {"weights": [w.tolist() for w in layout.weights(as64)],
            "biases": [b.tolist() for b in layout.biases(as64)]}


def _json_value(value: Any, where: str) -> Any:
    """``value`` as plain JSON types (NumPy scalars and arrays converted); ValueError naming
    the offending entry if it cannot be stored exactly."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{where} is {number!r}; JSON cannot hold non-finite numbers")
        return number
    if isinstance(value, np.ndarray):
        return _json_value(value.tolist(), where)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} has the key {key!r}; JSON object keys must be str")
            out[key] = _json_value(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where} holds a {type(value).__name__}, which JSON cannot store")


def to_dict(model: Model, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint content of ``model`` as plain JSON types; metadata defaults to
    ``model.metadata``."""
    if not np.isfinite(model.params).all():
        raise ValueError("cannot save a model whose parameters are not finite")
    meta = model.metadata if metadata is None else metadata
    if not isinstance(meta, Mapping):
        raise ValueError(f"metadata must be a mapping, got {type(meta).__name__}")
    layout = model.layout
    state = model.training_state
    training = None
    if state is not None:
        optimizer = state.optimizer
        training = {
            "epoch": state.epoch,
            "batch_size": state.batch_size,
            "weight_decay": state.weight_decay,
            "clip": state.clip,
            "clip_value": state.clip_value,
            "optimizer": {
                "name": optimizer.name,
                "learning_rate": optimizer.learning_rate,
                "options": dict(optimizer.options),
                "step": optimizer.step_count,
                "state": {name: _layers_json(layout, array)
                          for name, array in optimizer.state.items()},
            },
            "shuffle": {"seed": state.shuffle_seed,
                        "generator": state.shuffle_rng.bit_generator.state},
        }
    return {
        "format_version": FORMAT_VERSION,
        "architecture": {
            "layer_sizes": list(model.layer_sizes), "activations": list(model.activations),
            "output": model.output, "init": model.init, "dtype": model.dtype,
            "seed": model.seed,
        },
        "parameters": _layers_json(layout, model.params),
        "training": training,
        "metadata": _json_value(dict(meta), "metadata"),
    }


def dumps(data: Mapping[str, Any]) -> str:
    """Deterministic JSON text: sorted keys, fixed separators, exact floats, no NaN."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that it appears complete or not at all.

    The text goes to a temporary file in the same directory, is flushed and fsynced, then
    renamed over ``path`` (atomic on POSIX and Windows). On any error the temporary file is
    removed and ``path`` is untouched.
    """
    target = Path(path)
    # The name is chosen before the file exists, so that a Ctrl-C at any point after its
    # creation (even inside the call that creates it) finds it here and removes it.
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except FileExistsError:  # another writer's temporary file: not ours to remove
        raise
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno and not error.filename:  # say where
            raise OSError(error.errno, error.strerror, str(target)) from error
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX only)
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def save(model: Model, path: str | os.PathLike[str],
         metadata: Mapping[str, Any] | None = None) -> None:
    """``MLP.save``: serialise first (errors leave no file), then write atomically."""
    write_text_atomic(path, dumps(to_dict(model, metadata)))


# ---- reading ---------------------------------------------------------------------------------

class _Problem(Exception):
    """Internal: what is wrong with a checkpoint's content (one line)."""


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _field(obj: dict[str, Any], key: str, where: str, kind: str) -> Any:
    """obj[key], checked to be of ``kind``: object, list, string, int, number, or any."""
    if key not in obj:
        raise _Problem(f"missing key {where}{key!r}")
    value = obj[key]
    ok = {
        "object": isinstance(value, dict),
        "list": isinstance(value, list),
        "string": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "any": True,
    }[kind]
    if not ok:
        raise _Problem(f"{where}{key!r} should be {'an' if kind[0] in 'aio' else 'a'} {kind}, "
                       f"got {_kind(value)}")
    return value


def _matrix(value: Any, shape: tuple[int, int], where: str,
            dtype: np.dtype) -> npt.NDArray[np.floating]:
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise _Problem(f"{where} is not a rectangular list of numbers") from None
    if array.dtype.kind not in "if":
        raise _Problem(f"{where} must hold numbers only")
    if array.shape != shape:
        raise _Problem(f"{where} has shape {array.shape}, but layer_sizes implies {shape}")
    array = array.astype(np.float64)
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if not (np.isfinite(array).all() and np.isfinite(cast).all()):
        raise _Problem(f"{where} contains non-finite values (or values too large for {dtype})")
    return cast


def _layers(obj: Any, layout: ParameterLayout, where: str,
            dtype: np.dtype) -> npt.NDArray[np.floating]:
    """A {"weights": [...], "biases": [...]} object as a flat parameter vector."""
    if not isinstance(obj, dict):
        raise _Problem(f"{where} should be an object, got {_kind(obj)}")
    sizes = layout.layer_sizes
    arrays: dict[str, list[npt.NDArray[np.floating]]] = {}
    for key in ("weights", "biases"):
        layers = _field(obj, key, f"{where}.", "list")
        if len(layers) != len(sizes) - 1:
            raise _Problem(f"{where}.{key} has {len(layers)} layers, but layer_sizes {list(sizes)} "
                           f"implies {len(sizes) - 1}")
        arrays[key] = [
            _matrix(layer, (sizes[i] if key == "weights" else 1, sizes[i + 1]),
                    f"{where}.{key}[{i}]", dtype)
            for i, layer in enumerate(layers)]
    return layout.flatten(arrays["weights"], arrays["biases"], dtype)


def _training_state(obj: Any, model: Model) -> TrainingState:
    if not isinstance(obj, dict):
        raise _Problem(f"'training' should be an object or null, got {_kind(obj)}")
    w = "training."
    epoch = _field(obj, "epoch", w, "int")
    batch_size = _field(obj, "batch_size", w, "any")
    weight_decay = _field(obj, "weight_decay", w, "number")
    clip = _field(obj, "clip", w, "string")
    clip_value = _field(obj, "clip_value", w, "number")
    if epoch < 0:
        raise _Problem(f"training.epoch must be >= 0, got {epoch}")
    batch_size = _stored_setting(w + "batch_size", "batch_size", batch_size)
    weight_decay = _stored_setting(w + "weight_decay", "weight_decay", weight_decay)
    clip = _stored_setting(w + "clip", "clip", clip)
    clip_value = _stored_setting(w + "clip_value", "clip_value", clip_value)

    spec = _field(obj, "optimizer", w, "object")
    w = "training.optimizer."
    name = _field(spec, "name", w, "string")
    learning_rate = _field(spec, "learning_rate", w, "number")
    options = _field(spec, "options", w, "object")
    step = _field(spec, "step", w, "int")
    state = _field(spec, "state", w, "object")
    try:
        optimizer = make_optimizer(name, learning_rate, options)
    except ValueError as error:
        raise _Problem(f"training.optimizer: {error}") from None
    if step < 0:
        raise _Problem(f"training.optimizer.step must be >= 0, got {step}")
    if sorted(state) != sorted(optimizer.state_names):
        raise _Problem(f"training.optimizer.state has {sorted(state)}, but {name!r} keeps "
                       f"{sorted(optimizer.state_names)}")
    optimizer.reset(model.layout.size, model.params.dtype)
    arrays = {key: _layers(value, model.layout, f"training.optimizer.state.{key}",
                           model.params.dtype) for key, value in state.items()}
    optimizer.set_state(step, arrays)

    shuffle = _field(obj, "shuffle", "training.", "object")
    seed = _stored_setting("training.shuffle.seed", "shuffle_seed",
                           _field(shuffle, "seed", "training.shuffle.", "any"))
    generator = _field(shuffle, "generator", "training.shuffle.", "object")
    if generator.get("bit_generator") != "PCG64":
        raise _Problem("training.shuffle.generator must be a PCG64 state, got "
                       f"{generator.get('bit_generator')!r}")
    rng = np.random.Generator(np.random.PCG64())
    try:
        rng.bit_generator.state = generator
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise _Problem(f"training.shuffle.generator is not a valid PCG64 state ({error})") from None
    return TrainingState(epoch=epoch, optimizer=optimizer, shuffle_rng=rng, shuffle_seed=seed,
                         batch_size=batch_size, weight_decay=weight_decay, clip=clip,
                         clip_value=clip_value)


def _stored_setting(where: str, name: str, value: Any) -> Any:
    """A training setting read from a checkpoint at ``where``, checked by the rule that
    :class:`~.settings.TrainSettings` applies to the setting ``name`` (one definition)."""
    try:
        return check_setting(name, value)
    except SettingError as error:
        raise _Problem(f"{where} must be {error.rule}, got {error.value!r}") from None
    except ValueError as error:  # an unknown name (clip): the registry lists the valid ones
        raise _Problem(f"{where}: {error}") from None


def default_memory_budget() -> int:
    """Bytes one checkpoint may take while loading: ``MEMORY_FRACTION`` of physical memory
    (of 4 GiB where the platform does not report it)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        total = 4 * 2**30
    return int(total * MEMORY_FRACTION)


def _bytes(n: int) -> str:
    """A byte count for people: '2,113 bytes', '1.5 MB', '6.4 GB'."""
    if n < 10_000:
        return f"{n:,} bytes"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} KB"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _sizes_text(sizes: list[int]) -> str:
    """layer_sizes as written, shortened when long: '[2, 20000, 20000, 1]'."""
    if len(sizes) <= 12:
        return str(sizes)
    return (f"[{', '.join(map(str, sizes[:6]))}, ... {len(sizes) - 8} more ..., "
            f"{', '.join(map(str, sizes[-2:]))}]")


def _layer_sizes(arch: dict[str, Any]) -> list[int]:
    """architecture.layer_sizes, checked to be 2..MAX_LAYERS ints >= 1."""
    sizes = _field(arch, "layer_sizes", "architecture.", "list")
    if not 2 <= len(sizes) <= MAX_LAYERS:
        raise _Problem(f"architecture.layer_sizes has {len(sizes)} entries; it needs 2 to "
                       f"{MAX_LAYERS} (inputs, hidden layers, outputs)")
    for i, size in enumerate(sizes):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise _Problem(f"architecture.layer_sizes[{i}] must be an int >= 1, "
                           f"got {_short(size)}")
    return sizes


def _check_declared_size(sizes: list[int], file_size: int | None, budget: int) -> None:
    """Refuse layer_sizes whose parameters the file cannot hold or memory cannot take,
    before anything of that size is allocated."""
    n_params = sum((fan_in + 1) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    declared = f"layer_sizes {_sizes_text(sizes)} declares {n_params:,} parameters"
    if file_size is not None and n_params * MIN_BYTES_PER_NUMBER > file_size:
        raise _Problem(f"{declared}, but a file of {_bytes(file_size)} holds at most "
                       f"{file_size // MIN_BYTES_PER_NUMBER:,} numbers; it is truncated or its "
                       "architecture is false")
    need = n_params * np.dtype(np.float64).itemsize * PARAMETER_COPIES
    if need > budget:
        raise _Problem(f"{declared}, which need {_bytes(need)} to load, over the memory "
                       f"budget of {_bytes(budget)} for loading a checkpoint")


def _decode(data: Any, model_class: Callable[..., M], file_size: int | None,
            budget: int) -> M:
    if not isinstance(data, dict):
        raise _Problem(f"expected a JSON object at the top level, got {_kind(data)}")
    version = _field(data, "format_version", "", "int")
    if version != FORMAT_VERSION:
        raise _Problem(f"format_version {version} is not supported "
                       f"(this code reads version {FORMAT_VERSION})")
    arch = _field(data, "architecture", "", "object")
    w = "architecture."
    layer_sizes = _layer_sizes(arch)
    _check_declared_size(layer_sizes, file_size, budget)  # before the model allocates for them
    activations = _field(arch, "activations", w, "list")
    try:
        model = model_class(layer_sizes, hidden_activation=activations,
                    output=_field(arch, "output", w, "string"),
                    init=_field(arch, "init", w, "string"),
                    dtype=_field(arch, "dtype", w, "string"),
                    seed=_field(arch, "seed", w, "int"))
    except ValueError as error:
        raise _Problem(f"architecture: {error}") from None
    params = _layers(_field(data, "parameters", "", "object"), model.layout, "parameters",
                     model.params.dtype)
    np.copyto(model.params, params)
    training = _field(data, "training", "", "any")
    if training is not None:
        model.training_state = _training_state(training, model)
    model.metadata = _field(data, "metadata", "", "object")
    return model


def from_dict(data: Any, model_class: Callable[..., M], source: str = "<dict>", *,
              memory_budget: int | None = None, file_size: int | None = None) -> M:
    """A model (built as ``model_class(layer_sizes, hidden_activation=..., output=..., init=...,
    dtype=..., seed=...)``, e.g. MLP) from checkpoint content; CheckpointError naming
    ``source`` if invalid.

    The declared layer_sizes must fit ``memory_budget`` bytes (default:
    ``default_memory_budget()``) and, when the content came from a file of ``file_size``
    bytes, that file.
    """
    budget = default_memory_budget() if memory_budget is None else memory_budget
    try:
        return _decode(data, model_class, file_size, budget)
    except _Problem as problem:
        raise CheckpointError(source, str(problem)) from None


def _read_bounded(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file ``path`` if it has at most ``limit`` of them."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:  # O_NONBLOCK: a named pipe must not block the open
        with open(os.open(path, flags), "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISDIR(info.st_mode):
                raise CheckpointError(path, "it is a directory, not a checkpoint file")
            if not stat.S_ISREG(info.st_mode):
                raise CheckpointError(path, "not a regular file (a pipe or a device?), so "
                                            "not a checkpoint")
            if info.st_size > limit:
                raise CheckpointError(
                    path, f"the file is {_bytes(info.st_size)}, over the {_bytes(limit)} a "
                          f"checkpoint may be (parsing it must fit the memory budget of "
                          f"{_bytes(limit * JSON_EXPANSION)}); it is not a checkpoint this "
                          "machine can load")
            raw = handle.read(limit + 1)  # the file may have grown since fstat
    except FileNotFoundError:
        raise CheckpointError(path, "no such file") from None
    except IsADirectoryError:
        raise CheckpointError(path, "it is a directory, not a checkpoint file") from None
    except OSError as error:
        raise CheckpointError(path, f"cannot read it ({error.strerror})") from None
    if len(raw) > limit:
        raise CheckpointError(path, f"the file grew past {_bytes(limit)} while being read")
    return raw


def load(path: str | os.PathLike[str], model_class: Callable[..., M], *,
         memory_budget: int | None = None) -> M:
    """``MLP.load``: read and check a checkpoint file, within ``memory_budget`` bytes
    (default: ``default_memory_budget()``; see the module docstring for what is checked),
    and build its model with ``model_class`` (see ``from_dict``)."""
    budget = default_memory_budget() if memory_budget is None else memory_budget
    raw = _read_bounded(path, budget // JSON_EXPANSION)
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(path, "not UTF-8 text, so not a JSON checkpoint") from None
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"not valid JSON ({error.msg} at line {error.lineno}, "
                                    f"column {error.colno}); is it truncated?") from None
    except RecursionError:
        raise CheckpointError(path, "JSON nested too deeply") from None
    except ValueError as error:  # an integer of more than sys.get_int_max_str_digits() digits
        raise CheckpointError(path, f"it holds a number it cannot read "
                                    f"({str(error).split(':')[0]})") from None
    return from_dict(data, model_class, os.fspath(path), memory_budget=budget,
                     file_size=len(raw))
