"""The config schema: typed dataclasses and one validation pass before any work.

Hydra composes ``conf/`` into a DictConfig; :func:`validate` merges it onto these
dataclasses (OmegaConf rejects unknown keys and wrong types) and then checks values
in each ``__post_init__``. Every problem becomes a :class:`ConfigError` whose one-line
message names the key, the value received and what is allowed.

This module imports neither MLflow nor the stages, so a bad config is reported fast.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.errors import ConfigError

ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "identity")
OUTPUTS = ("auto", "sigmoid", "softmax")
INITS = ("uniform", "he", "xavier")
DTYPES = ("float64", "float32")
CLIPS = ("value", "norm", "none")


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}: got {value!r}; {allowed}")


def _check_positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not (isinstance(value, int | float) and math.isfinite(value) and ok):
        _fail(key, value, "must be a finite number " + (">= 0" if allow_zero else "> 0"))


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(key, value, "one of " + ", ".join(choices))


MAX_EXPERIMENT_NAME = 256
MAX_RUN_NAME = 250
MAX_TAG_KEY, MAX_TAG_VALUE = 250, 8000
# A model whose parameters, gradients and optimiser state alone need more than this share
# of the machine's memory is refused before any work (it would end in a MemoryError).
MEMORY_SHARE = 0.8
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "rmsprop": 1, "adam": 2}


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
    needed = weights * itemsize * (2 + OPTIMIZER_SLOTS.get(optimizer, 2))
    memory = physical_memory()
    if memory is not None and needed > MEMORY_SHARE * memory:
        raise ConfigError(
            f"model.hidden_sizes: {list(model.hidden_sizes)} needs at least "
            f"{needed / 2**30:.1f} GiB for its weights, gradients and optimizer state; this "
            f"machine has {memory / 2**30:.1f} GiB: use smaller hidden layers")


def _check_seed(key: str, value: int | None) -> None:
    if value is not None and value < 0:
        _fail(key, value, "must be a non-negative integer or null (derived from the root seed)")


@dataclass
class RFDataConfig:
    """RustNet's synthetic RF data (``data=rf``)."""

    source: str = "rf"
    n_samples: int = 1000
    freq_start: float = 0.0
    freq_end: float = 100.0
    noise_std: float = 0.1
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            _fail("data.n_samples", self.n_samples, "must be an integer >= 2")
        if not (math.isfinite(self.freq_start) and math.isfinite(self.freq_end)):
            _fail("data.freq_end", self.freq_end, "must be finite (and so must data.freq_start)")
        if self.freq_end <= self.freq_start:
            _fail("data.freq_end", self.freq_end, f"must be > data.freq_start ({self.freq_start})")
        _check_positive("data.noise_std", self.noise_std, allow_zero=True)
        _check_seed("data.seed", self.seed)


@dataclass
class CSVDataConfig:
    """Any CSV file (``data=csv``)."""

    source: str = "csv"
    path: str | None = None
    label_column: Any = None
    header: Any = "auto"
    delimiter: str | None = None
    drop_na: bool = False
    decimal: str = "."

    def __post_init__(self) -> None:
        if not self.path or self.path == "???":
            raise ConfigError(
                "data.path: missing; data=csv needs a file. Fix: data.path=/path/to/file.csv"
            )
        # Recorded absolute, so a rerun from any directory reads the same file.
        self.path = str(Path(self.path).expanduser().absolute())
        if self.label_column is not None and not isinstance(self.label_column, str | int):
            _fail("data.label_column", self.label_column, "must be a column name, a 0-based "
                  "position or null (the last column)")
        header = str(self.header).lower()
        if header not in ("auto", "true", "false"):
            _fail("data.header", self.header, "one of auto, true, false")
        self.header = header
        if self.delimiter is not None and len(self.delimiter) != 1:
            _fail("data.delimiter", self.delimiter, "must be one character (e.g. ',' ';' '|') "
                  "or null to detect")
        decimal = {"comma": ",", "point": ".", "dot": "."}.get(str(self.decimal).lower(),
                                                                self.decimal)
        if decimal not in (".", ","):
            _fail("data.decimal", self.decimal, "must be '.' (the default) or ',' for decimal "
                  "commas such as 1,5 (on a shell: data.decimal=comma)")
        if decimal == "," and self.delimiter == ",":
            raise ConfigError("data.decimal: ',' and data.delimiter: ',' cannot both be the "
                              "comma; set data.delimiter=';' (or null to detect it)")
        self.decimal = decimal


DATA_SCHEMAS: dict[str, type] = {"rf": RFDataConfig, "csv": CSVDataConfig}


@dataclass
class ModelConfig:
    """Architecture of the MLP; input and output sizes come from the data."""

    hidden_sizes: list[int] = field(default_factory=lambda: [12])
    activation: Any = "relu"
    output: str = "auto"
    init: str = "uniform"
    dtype: str = "float64"
    seed: int | None = None

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
        _check_choice("model.output", self.output, OUTPUTS)
        _check_choice("model.init", self.init, INITS)
        _check_choice("model.dtype", self.dtype, DTYPES)
        _check_seed("model.seed", self.seed)

    @property
    def activations(self) -> str | list[str]:
        return self.activation if isinstance(self.activation, str) else list(self.activation)


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 0.003
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        _check_positive("optimizer.lr", self.lr)
        _check_positive("optimizer.weight_decay", self.weight_decay, allow_zero=True)

    def options(self) -> dict[str, float | bool]:
        """Optimiser-specific options for the core (everything but name, lr, weight_decay)."""
        return {
            k: v for k, v in vars(self).items() if k not in ("name", "lr", "weight_decay")
        }


@dataclass
class MomentumConfig(SGDConfig):
    name: str = "momentum"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.momentum < 1:
            _fail("optimizer.momentum", self.momentum, "must be in [0, 1)")


@dataclass
class RMSPropConfig(SGDConfig):
    name: str = "rmsprop"
    lr: float = 0.001
    rho: float = 0.9
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.rho < 1:
            _fail("optimizer.rho", self.rho, "must be in [0, 1)")
        _check_positive("optimizer.eps", self.eps)


@dataclass
class AdamConfig(SGDConfig):
    name: str = "adam"
    lr: float = 0.001
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                _fail(f"optimizer.{key}", getattr(self, key), "must be in [0, 1)")
        _check_positive("optimizer.eps", self.eps)


OPTIMIZER_SCHEMAS: dict[str, type] = {
    "sgd": SGDConfig,
    "momentum": MomentumConfig,
    "rmsprop": RMSPropConfig,
    "adam": AdamConfig,
}


@dataclass
class TrainConfig:
    epochs: int = 3000
    batch_size: int | None = None
    clip: str = "value"
    clip_value: float = 1.0
    early_stopping_patience: int | None = None
    checkpoint_every: int = 1000
    shuffle_seed: int | None = None
    threads: int | None = None
    resume_from: str | None = None
    progress: Any = "auto"

    def __post_init__(self) -> None:
        if self.epochs < 1:
            _fail("train.epochs", self.epochs, "must be an integer >= 1")
        if self.batch_size is not None and self.batch_size < 1:
            _fail("train.batch_size", self.batch_size, "must be an integer >= 1 or null "
                  "(full batch)")
        _check_choice("train.clip", self.clip, CLIPS)
        _check_positive("train.clip_value", self.clip_value)
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            _fail("train.early_stopping_patience", self.early_stopping_patience,
                  "must be an integer >= 1 or null")
        if self.checkpoint_every < 0:
            _fail("train.checkpoint_every", self.checkpoint_every, "must be an integer >= 0")
        _check_seed("train.shuffle_seed", self.shuffle_seed)
        if self.threads is not None and self.threads < 1:
            _fail("train.threads", self.threads, "must be an integer >= 1 or null")
        progress = str(self.progress).lower()
        if progress not in ("auto", "true", "false"):
            _fail("train.progress", self.progress, "one of auto, true, false")
        self.progress = progress


@dataclass
class SplitConfig:
    test_fraction: float = 0.2
    val_fraction: float = 0.0
    stratify: bool = False
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            _fail("split.test_fraction", self.test_fraction, "must be in (0, 1)")
        if not 0 <= self.val_fraction < 1:
            _fail("split.val_fraction", self.val_fraction, "must be in [0, 1)")
        if self.test_fraction + self.val_fraction >= 1:
            _fail("split.val_fraction", self.val_fraction,
                  f"must leave rows for training: test_fraction + val_fraction < 1 "
                  f"(test_fraction is {self.test_fraction})")
        _check_seed("split.seed", self.seed)


@dataclass
class TrackingConfig:
    uri: str | None = None
    experiment: str = "mlp-pipeline"
    run_name: str | None = None
    log_model: bool = True
    plots: bool = True
    mode: str = "online"
    max_points: int | None = 5000

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


METRICS = ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
           "test_log_loss", "test_mse")


@dataclass
class SweepConfig:
    metric: str = "test_accuracy"
    direction: str = "maximize"
    replicates: int | None = None
    resume: str | None = None
    max_failures: int | None = None
    child_record: str = "lean"

    def __post_init__(self) -> None:
        _check_choice("sweep.metric", self.metric, METRICS)
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
    cache: bool = True
    cache_dir: str | None = None


@dataclass
class Config:
    """The whole validated config, as the runner sees it."""

    seed: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    data: Any = field(default_factory=RFDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: Any = field(default_factory=SGDConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        _check_seed("seed", self.seed)
        for key, value in self.tags.items():
            _check_length(f"tags.{key}", str(key), MAX_TAG_KEY)
            _check_length(f"tags.{key}", str(value), MAX_TAG_VALUE)
        if self.train.early_stopping_patience is not None and self.split.val_fraction == 0:
            _fail("train.early_stopping_patience", self.train.early_stopping_patience,
                  "needs a validation split: set split.val_fraction > 0 or leave it null")


def _one_line(error: OmegaConfBaseException) -> str:
    """Turn an OmegaConf error into 'key: problem' on one line."""
    key = getattr(error, "full_key", None) or "config"
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{key}: {message}"


def _structured(schema: type, node: Any, prefix: str) -> Any:
    """Merge ``node`` onto ``schema`` and build the dataclass (runs ``__post_init__``)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        message = _one_line(error)
        if prefix and not message.startswith(prefix):
            message = f"{prefix}.{message}"
        raise ConfigError(message + ". Check the key's spelling and type in conf/") from None


def _pick(group: str, node: Any, key: str, schemas: dict[str, type]) -> Any:
    """Validate a group whose schema depends on a discriminator key (data.source, ...)."""
    if not isinstance(node, DictConfig):
        raise ConfigError(f"{group}: expected a mapping, got {node!r}. Fix: pick {group}=<option>")
    choice = node.get(key)
    if choice not in schemas:
        _fail(f"{group}.{key}", choice, "one of " + ", ".join(schemas))
    return _structured(schemas[choice], node, group)


def validate_sweep(node: Any) -> SweepConfig:
    """The ``sweep`` group alone (the sweep's launching process checks it before any job)."""
    result: SweepConfig = _structured(SweepConfig, node if node is not None else {}, "sweep")
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
    data = _pick("data", plain.get("data"), "source", DATA_SCHEMAS)
    optimizer = _pick("optimizer", plain.get("optimizer"), "name", OPTIMIZER_SCHEMAS)
    rest = OmegaConf.masked_copy(plain, [k for k in plain if k not in ("data", "optimizer")])
    config = _structured(Config, rest, "")
    config.data = data
    config.optimizer = optimizer
    _check_model_fits(config.model, optimizer.name)
    return config

