"""The data steps of a run, declared once as :data:`DATA_STEPS` and looped over.

generate (or load_csv) -> split -> preprocess: each step goes through the content-addressed
stage cache (:mod:`pipeline.run.datastore`), so a sweep over model or optimiser settings
computes them once, and leaves its output in the run's folder (``data/01_<source>``,
``02_split``, ``03_preprocess``). The last step, ``preprocess``, fits the one
:class:`~stages.preprocess.Preprocessor` (the ``data.transforms``, then the normaliser) on
the training split; everything that predicts (evaluation, plots, ``make plots``, the served
model) goes through it. :func:`run_data_stages` is what a run executes, and what
``make plots`` runs again to rebuild a past run's data (:mod:`pipeline.run.backfill`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.paths import DEFAULT_CACHE, resolve_path
from pipeline.config.schema import Config
from pipeline.errors import ConfigError, PipelineError
from pipeline.files import digest_file, write_text_atomic
from pipeline.run.datastore import StageCache, cache_key, read_dataset, write_dataset
from stages.dataset import DataError, Dataset
from stages.generate import generate_rf
from stages.load_csv import DroppedRowsWarning, check_csv_path, load_csv, precheck_csv
from stages.normalise import NormalisedSplits
from stages.preprocess import Preprocessor, preprocess
from stages.split import Splits, split_dataset
from stages.transforms import (
    BUILTIN_MODULE,
    PLUGIN_HINT,
    TransformError,
    TransformSpec,
    check_specs,
    get_transform,
)

log = logging.getLogger("pipeline")
TRANSFORMS_KEY = "data.transforms"


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Time the block as ``timings[stage]``, and log it."""
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start
    log.info("stage %-9s %.3f s", stage, timings[stage])


# -- the declared sequence ---------------------------------------------------------------
@dataclass
class StepContext:
    """What a step reads: the run's config and seeds, the outputs of the steps before it
    (by their ``output`` name: ``raw``, ``splits``, ``prepared``) and ``notes``, where a step
    leaves what it reports besides its output (``dropped_rows``)."""

    config: Config
    seeds: Mapping[str, int]
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _always(config: Config) -> bool:
    return True


@dataclass(frozen=True)
class DataStep:
    """One data step, as :func:`run_data_stages` runs it.

    name: the stage's name: its cache folder, its ``cache.<name>`` tag, its timing and its
        output folder ``data/<NN>_<name>``;
    output: the name later steps read its result by, ``ctx.outputs[output]``;
    compute(ctx) -> value: the step itself (a pure function of ``stages/`` underneath);
    settings(ctx) -> mapping: the config it reads, and inputs(ctx) -> mapping: digests of
        the data it reads; both make its cache key, so a change to either recomputes it;
    save(value, folder) / load(folder) -> value: how its output is kept in the cache and in
        the run's folder;
    applies(config) -> bool: whether the run has this step (generate or load_csv).

    Adding a step is its function, its config section and one entry in :data:`DATA_STEPS`,
    e.g. a feature selection between split and preprocess that reads ``data.keep``::

        SELECT = DataStep(
            "select", output="splits", compute=lambda ctx: keep_columns(
                ctx.outputs["splits"], ctx.config.data.keep),
            settings=lambda ctx: {"keep": ctx.config.data.keep}, inputs=split_digests,
            save=save_splits, load=load_splits)
        DATA_STEPS = (GENERATE, LOAD_CSV, SPLIT, SELECT, PREPROCESS)
    """

    name: str
    output: str
    compute: Callable[[StepContext], Any]
    settings: Callable[[StepContext], Mapping[str, Any]]
    inputs: Callable[[StepContext], Mapping[str, str]]
    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]
    applies: Callable[[Config], bool] = _always


# -- how outputs are kept ----------------------------------------------------------------
def save_dataset(data: Dataset, folder: Path) -> None:
    write_dataset(data, folder / "dataset.parquet")


def load_dataset(folder: Path) -> Dataset:
    return read_dataset(folder / "dataset.parquet")


def save_splits(splits: Splits | NormalisedSplits, folder: Path) -> None:
    write_dataset(splits.train, folder / "train.parquet")
    write_dataset(splits.test, folder / "test.parquet")
    if splits.val is not None:
        write_dataset(splits.val, folder / "val.parquet")


def load_splits(folder: Path) -> Splits:
    val = folder / "val.parquet"
    return Splits(
        train=read_dataset(folder / "train.parquet"),
        test=read_dataset(folder / "test.parquet"),
        val=read_dataset(val) if val.exists() else None,
    )


PREPROCESSOR_FILE = "preprocessor.json"


def save_prepared(prepared: tuple[Preprocessor, NormalisedSplits], folder: Path) -> None:
    preprocessor, normalised = prepared
    save_splits(normalised, folder)
    write_text_atomic(folder / PREPROCESSOR_FILE, json.dumps(preprocessor.to_metadata()))


def load_prepared(folder: Path) -> tuple[Preprocessor, NormalisedSplits]:
    splits = load_splits(folder)
    preprocessor = Preprocessor.from_metadata(
        json.loads((folder / PREPROCESSOR_FILE).read_text()), where=str(folder))
    return preprocessor, NormalisedSplits(train=splits.train, test=splits.test,
                                          val=splits.val, normaliser=preprocessor.normaliser)


def split_digests(ctx: StepContext) -> dict[str, str]:
    """The digests of the splits (``ctx.outputs["splits"]``): what a step after split reads."""
    splits: Splits = ctx.outputs["splits"]
    digests = {k: getattr(splits, k).digest() for k in ("train", "test")}
    if splits.val is not None:
        digests["val"] = splits.val.digest()
    return digests


# -- the steps -----------------------------------------------------------------------------
def _source_settings(ctx: StepContext) -> dict[str, Any]:
    """The data settings the first step reads (not data.transforms: preprocess reads them)."""
    settings = dataclasses.asdict(ctx.config.data)
    settings.pop("transforms", None)
    if ctx.config.data.source == "rf":
        settings["seed"] = ctx.seeds["data"]
    else:
        settings["path"] = str(resolve_path(ctx.config.data.path))
    return settings


def _generate(ctx: StepContext) -> Dataset:
    data = ctx.config.data
    return generate_rf(n_samples=data.n_samples, freq_start=data.freq_start,
                       freq_end=data.freq_end, noise_std=data.noise_std, seed=ctx.seeds["data"])


def _csv_inputs(ctx: StepContext) -> dict[str, str]:
    path = resolve_path(ctx.config.data.path)
    check_csv_path(path)  # missing, a directory, FIFO, device or socket: one line, never blocks
    return {"file": digest_file(path)}


def _load_csv(ctx: StepContext) -> Dataset:
    data = ctx.config.data
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DroppedRowsWarning)
        loaded = load_csv(resolve_path(data.path), label_column=data.label_column,
                          header=data.header, delimiter=data.delimiter, drop_na=data.drop_na,
                          decimal=data.decimal)
    for warning in caught:
        if isinstance(warning.message, DroppedRowsWarning):
            ctx.notes["dropped_rows"] = (ctx.notes.get("dropped_rows", 0)
                                         + warning.message.n_dropped)
            log.warning("%s", warning.message)
    return loaded


def _split(ctx: StepContext) -> Splits:
    split = ctx.config.split
    return split_dataset(ctx.outputs["raw"], test_fraction=split.test_fraction,
                         val_fraction=split.val_fraction, stratify=split.stratify,
                         seed=ctx.seeds["split"])


def _split_settings(ctx: StepContext) -> dict[str, Any]:
    """The split settings the step reads: not split.folds (the folds are dealt from its
    train part after it; with folds the validated config already has val_fraction 0), so
    a run with folds and one without a validation split share the cached split."""
    settings = dataclasses.asdict(ctx.config.split)
    settings.pop("folds", None)
    return {**settings, "seed": ctx.seeds["split"]}


def _preprocess(ctx: StepContext) -> tuple[Preprocessor, NormalisedSplits]:
    return preprocess(ctx.outputs["splits"], ctx.config.data.transforms, where=TRANSFORMS_KEY)


def _transform_settings(ctx: StepContext) -> dict[str, Any]:
    """The checked transforms and the module of each (none: no key, as before transforms)."""
    specs = check_transforms(ctx.config)
    if not specs:
        return {}
    return {"transforms": [{"name": s.name, "options": dict(s.options),
                            "module": get_transform(s.name).module} for s in specs]}


def _preprocess_inputs(ctx: StepContext) -> dict[str, str]:
    """The splits' digests and the source digest of each plugin module a transform comes
    from: an edited plugin is fitted again, not served from the cache."""
    digests = split_digests(ctx)
    for spec in check_transforms(ctx.config):
        module = get_transform(spec.name).module
        if module != BUILTIN_MODULE:
            digests[f"plugin:{module}"] = _module_digest(module)
    return digests


def _module_digest(module: str) -> str:
    """sha256 of the module's source file; a fresh value (no cache hit) if it has none."""
    source = getattr(sys.modules.get(module), "__file__", None)
    if source and Path(source).is_file():
        return digest_file(Path(source))
    return f"no source file: {uuid.uuid4()}"


GENERATE = DataStep("generate", "raw", _generate, _source_settings, lambda ctx: {},
                    save_dataset, load_dataset, applies=lambda config: config.data.source == "rf")
LOAD_CSV = DataStep("load_csv", "raw", _load_csv, _source_settings, _csv_inputs,
                    save_dataset, load_dataset, applies=lambda config: config.data.source == "csv")
SPLIT = DataStep("split", "splits", _split, _split_settings,
                 lambda ctx: {"data": ctx.outputs["raw"].digest()}, save_splits, load_splits)
PREPROCESS = DataStep("preprocess", "prepared", _preprocess, _transform_settings,
                      _preprocess_inputs, save_prepared, load_prepared)
# The data steps, in order: what a run (and `make plots`) runs.
DATA_STEPS: tuple[DataStep, ...] = (GENERATE, LOAD_CSV, SPLIT, PREPROCESS)


def check_transforms(config: Config) -> tuple[TransformSpec, ...]:
    """``data.transforms`` checked against the registered transforms (before any work):
    ConfigError (one line) for a bad entry, or for a transform that the running script
    (``__main__``) registered, which neither a rerun nor the served model could import."""
    try:
        specs = check_specs(config.data.transforms, TRANSFORMS_KEY)
    except TransformError as error:
        raise ConfigError(str(error)) from None
    for i, spec in enumerate(specs):
        if get_transform(spec.name).module == "__main__":
            raise ConfigError(
                f"{TRANSFORMS_KEY}[{i}]: transform {spec.name!r} is registered by the script "
                "being run (__main__), which a rerun or the served model cannot import; "
                f"register it in a module and name it: {PLUGIN_HINT}")
    return specs


def check_input_file(config: Config) -> None:
    """Before any run exists: what the config and the CSV's first rows tell of it (the path,
    text, delimiter, header, label column, decimal mark), by load_csv's own rules. Raises
    PipelineError (one line); the full load later checks every row again."""
    data = config.data
    if data.source != "csv":
        return
    try:
        precheck_csv(resolve_path(data.path), label_column=data.label_column,
                     header=data.header, delimiter=data.delimiter, decimal=data.decimal)
    except DataError as error:
        raise PipelineError(str(error)) from None


@dataclass
class DataStages:
    """What the data steps made: the raw data set, its splits, the fitted preprocessor and
    the splits as the model sees them, which steps the cache answered, the data's source (a
    CSV path; None: generated) and the rows ``data.drop_na`` dropped (None: none, or known
    only when the CSV was loaded)."""

    raw: Dataset
    splits: Splits
    preprocessor: Preprocessor
    normalised: NormalisedSplits
    cache_hits: dict[str, bool]
    source: str | None
    dropped_rows: int | None = None


def run_data_stages(
    config: Config, seeds: Mapping[str, int], output_dir: Path, timings: dict[str, float]
) -> DataStages:
    """The steps of :data:`DATA_STEPS` that apply, each cached and written into
    ``output_dir/data/<NN>_<name>``."""
    cache_root = resolve_path(config.pipeline.cache_dir) if config.pipeline.cache_dir else (
        DEFAULT_CACHE
    )
    cache = StageCache(cache_root, enabled=config.pipeline.cache)
    hits: dict[str, bool] = {}
    ctx = StepContext(config, seeds)
    steps = [step for step in DATA_STEPS if step.applies(config)]
    current = steps[0].name  # the step that runs now: out of memory, it names the data's fix
    try:
        for number, step in enumerate(steps, start=1):
            current = step.name
            key = cache_key(step.name, step.settings(ctx), step.inputs(ctx))
            with timed(timings, step.name):
                value, hits[step.name] = cache.fetch(step.name, key,
                                                     functools.partial(step.compute, ctx),
                                                     step.save, step.load)
                step.save(value, output_dir / "data" / f"{number:02d}_{step.name}")
            ctx.outputs[step.output] = value
    except MemoryError:
        raise PipelineError(_data_out_of_memory(config, current)) from None
    preprocessor, normalised = ctx.outputs["prepared"]
    source = str(resolve_path(config.data.path)) if config.data.source == "csv" else None
    return DataStages(ctx.outputs["raw"], ctx.outputs["splits"], preprocessor, normalised,
                      hits, source, ctx.notes.get("dropped_rows"))


def _data_out_of_memory(config: Config, stage: str) -> str:
    """One line for data that does not fit in memory: the stage, and the data setting that
    makes it smaller (the model's settings would not help)."""
    if config.data.source == "rf":
        what = f"data.n_samples={config.data.n_samples} rows do"
        fix = "a smaller data.n_samples"
    else:
        what = f"the data of {config.data.path} does"
        fix = "a smaller CSV as data.path"
    return (f"out of memory in the {stage} stage: {what} not fit in this machine's memory; "
            f"use {fix}")
