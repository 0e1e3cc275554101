"""The config schema: typed dataclasses and one validation pass before any work.

Hydra composes ``conf/`` into a DictConfig; :func:`validate` merges it onto these
dataclasses (OmegaConf rejects unknown keys and wrong types) and then checks values
in each ``__post_init__``. Every problem becomes a :class:`ConfigError` whose one-line
message names the key, the value received and what is allowed.

Each setting is defined once: its default in ``conf/`` (these fields are ``MISSING``), an
optimiser's own options with the core's defaults (:func:`register_optimizer_options`),
the names a key accepts in the core's registries, and the training values' checks in the
core's ``TrainSettings`` (:func:`training_settings`).

This module imports neither MLflow nor the stages, so a bad config is reported fast.
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra.errors import MissingConfigException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from pipeline.config.addresses import ui_url_problem
from pipeline.errors import ConfigError
from pipeline.mlp import (
    ACTIVATIONS,
    CLIPPERS,
    INITIALIZERS,
    OPTIMIZERS,
    OUTPUTS,
    SettingError,
    TrainSettings,
)

DTYPES = ("float64", "float32")
# Spellings a shell makes easier to type, and what they stand for.
DELIMITER_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
DECIMAL_ALIASES = {"comma": ",", "point": ".", "dot": "."}


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}: got {value!r}; {allowed}")


def _check_positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and ok):
        _fail(key, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))


def _check_choice(key: str, value: Any, choices: Iterable[str]) -> None:
    """``value`` must be one of ``choices`` (a registry's names: what is registered now)."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        _fail(key, value, "one of " + ", ".join(choices))


MAX_EXPERIMENT_NAME = 256
MAX_RUN_NAME = 250
MAX_TAG_KEY, MAX_TAG_VALUE = 250, 8000
# A model whose parameters, gradients and optimiser state alone need more than this share
# of the machine's memory is refused before any work (it would end in a MemoryError).
MEMORY_SHARE = 0.8


def _check_length(key: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise ConfigError(f"{key}: {len(value)} characters ({value[:40]!r}...); MLflow stores "
                          f"at most {limit}: pick a shorter one")


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _check_model_fits(model: ModelConfig, optimizer: str) -> None:
    """Refuse hidden layers whose weights alone (hidden to hidden, so whatever the data)
    cannot fit in memory with their gradients and optimiser state."""
    sizes = [1, *model.hidden_sizes, 1]  # at least one input and one output unit
    weights = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    itemsize = 4 if model.dtype == "float32" else 8
    slots = len(OPTIMIZERS[optimizer].state_names) if optimizer in OPTIMIZERS else 2
    needed = weights * itemsize * (2 + slots)
    memory = physical_memory()
    if memory is not None and needed > MEMORY_SHARE * memory:
        raise ConfigError(
            f"model.hidden_sizes: {list(model.hidden_sizes)} needs at least "
            f"{needed / 2**30:.1f} GiB for its weights, gradients and optimizer state; this "
            f"machine has {memory / 2**30:.1f} GiB: use smaller hidden layers")


# What the data stages hold at once for RF data: the generated table, its train/test split
# and the normalised copy of that split, each 2 float64 features and an int64 label per row.
RF_BYTES_PER_ROW = 3 * (2 * 8 + 8)


def _check_data_fits(n_samples: int) -> None:
    """Refuse an RF data size whose tables alone cannot fit in memory (a lower bound: the
    training's activations come on top)."""
    needed = n_samples * RF_BYTES_PER_ROW
    memory = physical_memory()
    if memory is not None and needed > MEMORY_SHARE * memory:
        raise ConfigError(
            f"data.n_samples: {n_samples} rows need at least {needed / 2**30:.1f} GiB (the "
            f"table, its split and its normalised copy); this machine has "
            f"{memory / 2**30:.1f} GiB: use fewer samples")


def _check_seed(key: str, value: int | None) -> None:
    if value is not None and value < 0:
        _fail(key, value, "must be a non-negative integer or null (derived from the root seed)")


@dataclass
class RFDataConfig:
    """RustNet's synthetic RF data (``data=rf``)."""

    source: str = MISSING
    n_samples: int = MISSING
    freq_start: float = MISSING
    freq_end: float = MISSING
    noise_std: float = MISSING
    seed: int | None = MISSING
    # Feature transforms before normalising (names or {name: ..., **options}); checked
    # against the registered transforms by the run (pipeline.run.data.check_transforms).
    # A default, not MISSING: a config recorded before the setting existed had none.
    transforms: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            _fail("data.n_samples", self.n_samples, "must be an integer >= 2")
        _check_data_fits(self.n_samples)
        if not (math.isfinite(self.freq_start) and math.isfinite(self.freq_end)):
            _fail("data.freq_end", self.freq_end, "must be finite (and so must data.freq_start)")
        if self.freq_end <= self.freq_start:
            _fail("data.freq_end", self.freq_end, f"must be > data.freq_start ({self.freq_start})")
        _check_positive("data.noise_std", self.noise_std, allow_zero=True)
        _check_seed("data.seed", self.seed)


@dataclass
class CSVDataConfig:
    """Any CSV file (``data=csv``)."""

    source: str = MISSING
    path: str | None = MISSING
    label_column: Any = MISSING
    header: Any = MISSING
    delimiter: str | None = MISSING
    drop_na: bool = MISSING
    decimal: str = MISSING
    transforms: list[Any] = field(default_factory=list)  # as RFDataConfig.transforms

    def __post_init__(self) -> None:
        if not self.path or self.path == "???":
            raise ConfigError(MISSING_HINTS["data.path"])
        # Recorded absolute, so a rerun from any directory reads the same file.
        self.path = str(Path(self.path).expanduser().absolute())
        if self.label_column is not None and (isinstance(self.label_column, bool)
                                              or not isinstance(self.label_column, str | int)):
            _fail("data.label_column", self.label_column, "must be a column name, a 0-based "
                  "position or null (the last column)")
        # What the loader takes: "auto", True or False (true/false come as text from YAML).
        header = str(self.header).lower()
        if header not in ("auto", "true", "false"):
            _fail("data.header", self.header, "one of auto, true, false")
        self.header = "auto" if header == "auto" else header == "true"
        if self.delimiter is not None:
            delimiter = DELIMITER_ALIASES.get(str(self.delimiter).lower(), str(self.delimiter))
            if len(delimiter) != 1 or delimiter in "\"\r\n":
                _fail("data.delimiter", self.delimiter, "must be one character (e.g. ',' ';' "
                      "'|' or tab) or null to detect")
            self.delimiter = delimiter
        decimal = DECIMAL_ALIASES.get(str(self.decimal).lower(), self.decimal)
        if decimal not in (".", ","):
            _fail("data.decimal", self.decimal, "must be '.' (the default) or ',' for decimal "
                  "commas such as 1,5 (on a shell: data.decimal=comma)")
        if decimal == "," and self.delimiter == ",":
            raise ConfigError("data.decimal: ',' and data.delimiter: ',' cannot both be the "
                              "comma; set data.delimiter=';' (or null to detect it)")
        self.decimal = decimal


@dataclass
class ModelConfig:
    """Architecture of the MLP; input and output sizes come from the data."""

    hidden_sizes: list[int] = MISSING
    activation: Any = MISSING
    output: str = MISSING
    init: str = MISSING
    dtype: str = MISSING
    seed: int | None = MISSING

    def __post_init__(self) -> None:
        for i, size in enumerate(self.hidden_sizes):
            if size < 1:
                _fail(f"model.hidden_sizes[{i}]", size, "must be an integer >= 1")
        names = [self.activation] if isinstance(self.activation, str) else list(self.activation)
        if not isinstance(self.activation, str) and len(names) != len(self.hidden_sizes):
            _fail("model.activation", names, f"must be one name or a list of "
                  f"{len(self.hidden_sizes)} names (one per hidden layer)")
        for name in names:
            _check_choice("model.activation", name, ACTIVATIONS)
        _check_choice("model.output", self.output, ("auto", *OUTPUTS))
        _check_choice("model.init", self.init, INITIALIZERS)
        _check_choice("model.dtype", self.dtype, DTYPES)
        _check_seed("model.seed", self.seed)

    @property
    def activations(self) -> str | list[str]:
        return self.activation if isinstance(self.activation, str) else list(self.activation)


class OptimizerConfig:
    """``optimizer``: its name, lr and weight_decay (conf/optimizer/), and the optimiser's
    own options with the defaults the core gives them (see :func:`optimizer_schema`). The
    values are the core's to check (:func:`training_settings`)."""

    name: str
    lr: float
    weight_decay: float

    def options(self) -> dict[str, float | bool]:
        """Optimiser-specific options for the core (everything but name, lr, weight_decay)."""
        return {
            k: v for k, v in vars(self).items() if k not in ("name", "lr", "weight_decay")
        }


def register_optimizer_options() -> None:
    """Give Hydra each registered optimiser's own options with the core's defaults, as the
    config ``optimizer_options_<name>``: ``conf/optimizer/<name>.yaml`` starts from it, so
    ``optimizer.beta2=0.99`` overrides a key the config already has. Stored outside any
    config group: in one, they would be a group of their own that ``--help`` lists."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, optimizer in OPTIMIZERS.items():
        store.store(name=f"optimizer_options_{name}", node=dict(optimizer.defaults))


def optimizer_schema(name: str) -> type:
    """The dataclass that checks ``optimizer=name``: built from the optimiser the core
    registered under that name, so a registered optimiser is usable from the config."""
    optimizer = OPTIMIZERS[name]
    fields: list[tuple[str, Any, Any]] = [
        ("name", str, MISSING), ("lr", float, MISSING), ("weight_decay", float, MISSING)]
    fields += [(key, type(default), field(default=default))
               for key, default in optimizer.defaults.items()]
    return make_dataclass(f"{optimizer.__name__}Config", fields, bases=(OptimizerConfig,))


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int | None = MISSING
    clip: str = MISSING
    clip_value: float = MISSING
    early_stopping_patience: int | None = MISSING
    checkpoint_every: int = MISSING
    shuffle_seed: int | None = MISSING
    threads: int | None = MISSING
    resume_from: str | None = MISSING
    progress: Any = MISSING

    def __post_init__(self) -> None:
        # epochs, batch_size, clip_value, early_stopping_patience, shuffle_seed and threads
        # are the core's to check (training_settings).
        _check_choice("train.clip", self.clip, CLIPPERS)
        if self.checkpoint_every < 0:
            _fail("train.checkpoint_every", self.checkpoint_every, "must be an integer >= 0")
        progress = str(self.progress).lower()
        if progress not in ("auto", "true", "false"):
            _fail("train.progress", self.progress, "one of auto, true, false")
        self.progress = progress


@dataclass
class SplitConfig:
    test_fraction: float = MISSING
    val_fraction: float = MISSING
    stratify: bool = MISSING
    seed: int | None = MISSING
    # A default, not MISSING: a config recorded before the setting existed had no folds.
    folds: int | None = None

    def __post_init__(self) -> None:
        if self.folds is not None and self.folds < 2:
            _fail("split.folds", self.folds, "must be an integer >= 2 (k-fold cross-"
                  "validation on the rows outside the test split) or null")
        if not 0 < self.test_fraction < 1:
            _fail("split.test_fraction", self.test_fraction, "must be in (0, 1)")
        if not 0 <= self.val_fraction < 1:
            _fail("split.val_fraction", self.val_fraction, "must be in [0, 1)")
        if self.test_fraction + self.val_fraction >= 1:
            _fail("split.val_fraction", self.val_fraction,
                  f"must leave rows for training: test_fraction + val_fraction < 1 "
                  f"(test_fraction is {self.test_fraction})")
        _check_seed("split.seed", self.seed)
        if self.folds is not None:
            # The folds replace the validation split: a val_fraction (valid, as checked
            # above) is not used, and the run records the 0.0 it ran with.
            self.val_fraction = 0.0


@dataclass
class TrackingConfig:
    uri: str | None = MISSING
    experiment: str = MISSING
    run_name: str | None = MISSING
    log_model: bool = MISSING
    plots: bool = MISSING
    mode: str = MISSING
    max_points: int | None = MISSING
    ui_url: str | None = None  # a config recorded before the setting existed: as before

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            _fail("tracking.experiment", self.experiment, "must be a non-empty name")
        # The SQL stores' column widths: longer names fail deep inside MLflow.
        _check_length("tracking.experiment", self.experiment, MAX_EXPERIMENT_NAME)
        if self.run_name is not None:
            _check_length("tracking.run_name", self.run_name, MAX_RUN_NAME)
        _check_choice("tracking.mode", self.mode, ("online", "offline"))
        if self.max_points is not None and self.max_points < 10:
            _fail("tracking.max_points", self.max_points, "must be an integer >= 10, or null "
                  "to send every epoch to the store")
        if self.ui_url is not None and (problem := ui_url_problem(self.ui_url)):
            _fail("tracking.ui_url", self.ui_url, problem)


# What the evaluate stage reports for a split, without the split's prefix (``test_``, and
# ``val_`` for the validation split or the folds' mean). MLflow's names where it has one.
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "mse",
                "precision_recall_auc", "brier_score", "calibration_error",
                "precision_macro", "recall_macro", "f1_macro",
                "precision_weighted", "recall_weighted", "f1_weighted")
# Metrics where lower is better (the direction a tie-breaking metric is ranked in).
LOWER_IS_BETTER = ("log_loss", "mse", "brier_score", "calibration_error")
METRICS = tuple(f"{split}_{name}" for split in ("val", "test") for name in METRIC_NAMES)


def lower_is_better(metric: str) -> bool:
    """``val_log_loss`` -> True, ``test_accuracy`` -> False."""
    return metric.partition("_")[2] in LOWER_IS_BETTER


@dataclass
class SweepConfig:
    metric: str = MISSING
    direction: str = MISSING
    replicates: int | None = MISSING
    resume: str | None = MISSING
    max_failures: int | None = MISSING
    child_record: str = MISSING
    tie_metric: str = MISSING
    # Each job's metrics table and confusion matrix on the console; a default, not MISSING:
    # configs stored before the setting existed still validate.
    verbose: bool = False

    def __post_init__(self) -> None:
        _check_choice("sweep.metric", self.metric, METRICS)
        _check_choice("sweep.tie_metric", self.tie_metric, METRICS)
        _check_choice("sweep.child_record", self.child_record, ("lean", "full"))
        _check_choice("sweep.direction", self.direction, ("maximize", "minimize"))
        if self.replicates is not None and self.replicates < 1:
            _fail("sweep.replicates", self.replicates, "must be an integer >= 1 (seeds per "
                  "configuration) or null")
        if self.resume is not None and not str(self.resume).strip():
            _fail("sweep.resume", self.resume, "must be a sweep's parent run id, last, or null")
        if self.max_failures is not None and self.max_failures < 1:
            _fail("sweep.max_failures", self.max_failures, "must be an integer >= 1 or null "
                  "(never stop a sweep for failures)")


@dataclass
class PipelineConfig:
    cache: bool = MISSING
    cache_dir: str | None = MISSING
    plugins: list[str] = MISSING  # imported before the rest is checked: see validate


@dataclass
class Config:
    """The whole validated config, as the runner sees it."""

    seed: int = MISSING
    tags: dict[str, str] = MISSING
    data: Any = None  # RFDataConfig | CSVDataConfig: validated on their own (see validate)
    model: ModelConfig = MISSING
    optimizer: Any = None  # validated on its own, against the core's optimiser
    train: TrainConfig = MISSING
    split: SplitConfig = MISSING
    tracking: TrackingConfig = MISSING
    pipeline: PipelineConfig = MISSING
    sweep: SweepConfig = MISSING

    def __post_init__(self) -> None:
        _check_seed("seed", self.seed)
        for key, value in self.tags.items():
            _check_length(f"tags.{key}", str(key), MAX_TAG_KEY)
            _check_length(f"tags.{key}", str(value), MAX_TAG_VALUE)
        if self.train.early_stopping_patience is not None and self.split.folds is not None:
            _fail("train.early_stopping_patience", self.train.early_stopping_patience,
                  f"not with split.folds={self.split.folds} (the refit on all the rows "
                  "outside the test split has no validation data to stop on): leave it null "
                  "(train.epochs is then the setting to tune) or set split.folds=null")
        if self.train.early_stopping_patience is not None and self.split.val_fraction == 0:
            _fail("train.early_stopping_patience", self.train.early_stopping_patience,
                  "needs a validation split: set split.val_fraction > 0 or leave it null")


# The config key of each TrainSettings argument (an optimiser's own option: optimizer.<it>).
SETTING_KEYS = {
    "learning_rate": "optimizer.lr", "weight_decay": "optimizer.weight_decay",
    "optimizer": "optimizer.name", "optimizer_options": "optimizer", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "clip": "train.clip", "clip_value": "train.clip_value",
    "early_stopping_patience": "train.early_stopping_patience",
    "shuffle_seed": "train.shuffle_seed", "threads": "train.threads",
}


def training_settings(config: Config, **given: Any) -> TrainSettings:
    """The core's TrainSettings for ``config`` (its checks are the training settings' only
    ones), with ``given`` for what the run decides (the shuffle seed it derives, resume,
    threads). Raises ConfigError naming the config key of a bad value."""
    settings: dict[str, Any] = {
        "learning_rate": config.optimizer.lr, "epochs": config.train.epochs,
        "batch_size": config.train.batch_size, "optimizer": config.optimizer.name,
        "optimizer_options": config.optimizer.options(),
        "weight_decay": config.optimizer.weight_decay, "clip": config.train.clip,
        "clip_value": config.train.clip_value,
        "early_stopping_patience": config.train.early_stopping_patience,
        "shuffle_seed": config.train.shuffle_seed, "threads": config.train.threads,
    }
    try:
        return TrainSettings(**{**settings, **given})
    except SettingError as error:
        key = SETTING_KEYS.get(error.name, f"optimizer.{error.name}")
        raise ConfigError(f"{key}: got {error.value!r}; must be {error.rule}") from None
    except ValueError as error:  # a name the registries do not hold
        raise ConfigError(f"train: {error}") from None


# What a key that has no default needs, in the user's words.
MISSING_HINTS = {
    "data.path": "data.path: not set; data=csv reads a CSV file: add data.path=<file.csv>",
}


def schema_keys() -> dict[str, tuple[str, ...]]:
    """Every key the config takes, dotted (``train.epochs``), with the options of its group
    that have it (``optimizer.beta2``: ``("adam",)``; empty: every option, or no group)."""
    keys: dict[str, tuple[str, ...]] = {}
    hints = get_type_hints(Config)
    for top in fields(Config):
        if top.name in GROUP_SCHEMAS:
            schemas = GROUP_SCHEMAS[top.name]()
        elif is_dataclass(hints[top.name]):
            schemas = {"": hints[top.name]}
        else:
            keys[top.name] = ()
            continue
        owners: dict[str, list[str]] = {}
        for option, schema in schemas.items():
            for sub in fields(schema):
                owners.setdefault(f"{top.name}.{sub.name}", []).append(option)
        for key, found in owners.items():
            keys[key] = () if len(found) == len(schemas) else tuple(found)
    return keys


def unknown_key_line(key: str) -> str | None:
    """One line for a key the config does not take: the option of its group that has it,
    else the closest valid keys (None: a key under a free-form mapping such as ``tags``,
    where Hydra's ``+key=value`` advice is right, or one of Hydra's own)."""
    keys = schema_keys()
    head = key.split(".", 1)[0]
    if head == "hydra" or (head in keys and head != key):  # hydra.*, tags.<name>
        return None
    if keys.get(key):
        options = " / ".join(f"{head}={option}" for option in keys[key])
        return f"{key}: a key of {options}, not of the {head} chosen: add {head}={keys[key][0]}"
    section = [k.split(".", 1)[1] for k in keys if k.startswith(f"{head}.")]
    if section:  # a known section: the closest of its own keys
        close = [f"{head}.{leaf}" for leaf in closest(key.split(".", 1)[-1], section)]
    else:
        close = closest(key, list(keys))
    if close:
        return f"unknown key {key!r}; did you mean {_with_options(close, keys)}?"
    known = section or sorted({k.split(".", 1)[0] for k in keys})
    return f"unknown key {key!r}; " + (f"{head} takes " if section else "the config takes ") + \
        ", ".join(known)


def typo_line(error: BaseException) -> str | None:
    """One line for Hydra's error on an option (``optimizer=adamm``) or a key
    (``train.epoch=100``) that does not exist, naming the closest valid ones; None for any
    other error. Hydra's advice to append the key (``+train.epoch=100``) is left out: the
    schema would refuse it next."""
    if isinstance(error, MissingConfigException) and error.options:
        group, _, option = str(error.missing_cfg_file or "").rpartition("/")
        if group:
            options = sorted(error.options)
            close = closest(option, options)
            guess = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            return f"{group}={option}: no such option; {guess}options: {', '.join(options)}"
    found = re.match(r"Could not override '([^']+)'\.\n", str(error))
    if found and "is not in struct" in str(error.__cause__):
        return unknown_key_line(found.group(1))
    return None


def closest(word: str, candidates: list[str]) -> list[str]:
    """The candidates closest to ``word`` (difflib's ratio >= 0.6) and as close as the best,
    else those that start with it (``label`` -> ``label_column``)."""
    def ratio(candidate: str) -> float:
        return difflib.SequenceMatcher(None, word, candidate).ratio()

    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    if not close:
        return [c for c in candidates if c.startswith(word)][:3]
    best = ratio(close[0])
    return sorted((c for c in close if ratio(c) >= best - 0.05), key=lambda c: (-ratio(c), c))


def _with_options(matches: list[str], keys: Mapping[str, tuple[str, ...]]) -> str:
    """'a' or 'b', each with the option it needs: '(with optimizer=adam)' once at the end
    when every match needs the same."""
    def needs(match: str) -> str:
        return " or ".join(f"{match.split('.', 1)[0]}={o}" for o in keys[match])

    shown = [repr(match) for match in matches]
    if all(keys[m] for m in matches) and len({needs(m) for m in matches}) == 1:
        return " or ".join(shown) + f" (with {needs(matches[0])})"
    return " or ".join(f"{s} (with {needs(m)})" if keys[m] else s
                       for s, m in zip(shown, matches, strict=True))


def _one_line(error: OmegaConfBaseException) -> str:
    """Turn an OmegaConf error into 'key: problem' on one line."""
    key = getattr(error, "full_key", None) or "config"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{key}: {message}"


def _float_for_integer(key: str, error: OmegaConfBaseException) -> str | None:
    """One line for a float given to an integer key (``data.n_samples=1e11``: Hydra reads
    1e11 as a float), with the integer spelling when there is one; None for other errors."""
    value = getattr(error, "value", None)
    if not isinstance(value, float) or "converted to Integer" not in str(error):
        return None
    shown = f"{value:g}"
    if not any(c in shown for c in "e.ni"):  # 1000.0 shows as 1000: say it is a float
        shown = repr(value)
    fix = f": {key}={int(value)}" if value.is_integer() else ""
    return f"{key}: got {shown}, a float; it takes an integer{fix}"


def _structured(schema: type, node: Any, prefix: str) -> Any:
    """Merge ``node`` onto ``schema`` and build the dataclass (runs ``__post_init__``)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        message = _one_line(error)
        if prefix and not message.startswith(prefix):
            message = f"{prefix}.{message}"
        key = message.split(": ", 1)[0]
        wrong_type = _float_for_integer(key, error)
        if wrong_type is not None:
            raise ConfigError(wrong_type) from None
        if isinstance(error, MissingMandatoryValue):
            raise ConfigError(MISSING_HINTS.get(key, f"{key}: not set; set {key}=<value>")
                              ) from None
        if isinstance(error, ConfigKeyError):  # a key appended with +key=value
            raise ConfigError(unknown_key_line(key) or message) from None
        raise ConfigError(message + ". Check the key's spelling and type in conf/") from None


def _pick(group: str, node: Any, key: str, schemas: Mapping[str, Callable[[str], type]]
          ) -> Any:
    """Validate a group whose schema depends on a discriminator key (data.source, ...)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{group}: expected a mapping, got {node!r}. Fix: pick {group}=<option>")
    choice = node.get(key)
    if not isinstance(choice, str) or choice not in schemas:
        _fail(f"{group}.{key}", choice, "one of " + ", ".join(schemas))
    return _structured(schemas[choice](choice), node, group)


def import_plugins(modules: Any) -> None:
    """Import the modules ``pipeline.plugins`` names: what they register (an activation,
    an optimiser, ...) becomes a name the config may use."""
    if modules is None:
        return
    if isinstance(modules, str) or not all(isinstance(m, str) for m in modules):
        _fail("pipeline.plugins", modules, "must be a list of module names, e.g. "
              "[my_activations]")
    for module in modules:
        try:
            importlib.import_module(module)
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) stops the run; it is no config error
            raise
        except SystemExit as stop:  # a script named by mistake: its exit is not the run's
            raise ConfigError(f"pipeline.plugins: importing {module!r} called "
                              f"{_exit_call(stop)} (a script, not a module that registers "
                              "names?); name a module that only registers what the config "
                              "uses, or drop it") from None
        except BaseException as error:  # ImportError, or the module's own error on import
            raise ConfigError(f"pipeline.plugins: cannot import {module!r} "
                              f"({type(error).__name__}: {_first_line(error)}); make it "
                              "importable (PYTHONPATH) or drop it") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _exit_call(stop: SystemExit) -> str:
    """How the module exited, as the call it made: sys.exit(3), sys.exit()."""
    if stop.code is None:
        return "sys.exit()"
    shown = str(stop.code) if isinstance(stop.code, int) else repr(stop.code)
    return f"sys.exit({shown if len(shown) <= 60 else shown[:57] + '...'})"


DATA_SCHEMAS: dict[str, Callable[[str], type]] = {"rf": lambda _: RFDataConfig,
                                                  "csv": lambda _: CSVDataConfig}
# The groups whose schema depends on the option chosen: each option's schema, by name.
GROUP_SCHEMAS: dict[str, Callable[[], dict[str, type]]] = {
    "data": lambda: {name: schema(name) for name, schema in DATA_SCHEMAS.items()},
    "optimizer": lambda: {name: optimizer_schema(name) for name in OPTIMIZERS},
}


def validate_data(node: Any) -> RFDataConfig | CSVDataConfig:
    """The ``data`` group alone (a rerun checks a stored data file with its own settings)."""
    if isinstance(node, dict):
        node = OmegaConf.create(node)
    data: RFDataConfig | CSVDataConfig = _pick("data", node, "source", DATA_SCHEMAS)
    return data


def validate_sweep(node: Any) -> SweepConfig:
    """The ``sweep`` group alone (the sweep's launching process checks it before any job)."""
    result: SweepConfig = _structured(SweepConfig, node, "sweep")
    return result


def validate(cfg: DictConfig) -> Config:
    """Check a composed config and return it as typed dataclasses.

    Raises :class:`ConfigError` (a compact Hydra error: one line, no traceback).
    """
    try:
        container = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as error:
        raise ConfigError(_one_line(error)) from None
    assert isinstance(container, dict)
    plain = OmegaConf.create(container)
    plugins = OmegaConf.select(plain, "pipeline.plugins", default=None)
    import_plugins(plugins)
    if plugins is None and isinstance(plain.get("pipeline"), DictConfig):
        plain.pipeline.plugins = []  # a config recorded before the setting existed
    data = _pick("data", plain.get("data"), "source", DATA_SCHEMAS)
    optimizer = _pick("optimizer", plain.get("optimizer"), "name",
                      dict.fromkeys(OPTIMIZERS, optimizer_schema))
    rest = OmegaConf.masked_copy(plain, [k for k in plain if k not in ("data", "optimizer")])
    config = _structured(Config, rest, "")
    config.data = data
    config.optimizer = optimizer
    training_settings(config)
    _check_model_fits(config.model, optimizer.name)
    return config


register_optimizer_options()
