"""The pipeline run: stages in order, data handed over as Parquet, everything tracked.

``run(config, ...)`` is what ``python -m pipeline`` calls after validating the
config; tests call it too. It starts the MLflow run first (so an unreachable store
fails before any work), runs generate/load_csv -> split -> normalise (each cached
by content) -> train -> evaluate, logs what the README promises, and ends the run
FINISHED, FAILED (with an ``error`` tag) or KILLED.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import artifacts, environment
from pipeline.datastore import (
    StageCache,
    cache_key,
    digest_file,
    read_dataset,
    write_dataset,
    write_text_atomic,
)
from pipeline.errors import PipelineError, Terminated
from pipeline.mlp import MLP, CheckpointError, TrainingDiverged
from pipeline.paths import DEFAULT_CACHE, resolve_path
from pipeline.progress import ProgressBar
from pipeline.schema import Config
from pipeline.seeds import resolve_seeds
from pipeline.tracking import RunTracker, run_url
from stages.dataset import DataError, Dataset
from stages.evaluate import Evaluation, evaluate
from stages.generate import generate_rf
from stages.load_csv import DroppedRowsWarning, load_csv
from stages.normalise import NormalisedSplits, Normaliser, normalise
from stages.split import Splits, split_dataset
from stages.train import build_model, train_model

log = logging.getLogger("pipeline")


@dataclass
class RunResult:
    run_id: str
    experiment_id: str
    url: str
    metrics: dict[str, float]
    confusion: dict[str, Any] = field(default_factory=dict)
    output_dir: Path | None = None


# -- helpers ------------------------------------------------------------------------------
def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_digest(config: Config) -> str:
    """sha256 of the settings that decide the result (tracking and display excluded)."""
    tree = config_dict(config)
    tree.pop("tracking", None)
    tree.pop("tags", None)
    tree["pipeline"].pop("cache", None)
    tree["pipeline"].pop("cache_dir", None)
    # Display and bookkeeping only (a thread count can move the last bits; the run records it).
    for key in ("progress", "threads", "checkpoint_every"):
        tree["train"].pop(key, None)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def default_run_name(config: Config) -> str:
    data = config.data.source
    if data == "csv":
        data = Path(config.data.path).stem
    hidden = "x".join(str(h) for h in config.model.hidden_sizes) or "linear"
    return f"{data}-mlp{hidden}-{config.optimizer.name}-lr{config.optimizer.lr:g}"


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start
    log.info("stage %-9s %.3f s", stage, timings[stage])


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only)."""
    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _user_error(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


# -- data stages (cached) -----------------------------------------------------------------
def _save_dataset(data: Dataset, folder: Path) -> None:
    write_dataset(data, folder / "dataset.parquet")


def _load_dataset(folder: Path) -> Dataset:
    return read_dataset(folder / "dataset.parquet")


def _save_splits(splits: Splits, folder: Path) -> None:
    write_dataset(splits.train, folder / "train.parquet")
    write_dataset(splits.test, folder / "test.parquet")
    if splits.val is not None:
        write_dataset(splits.val, folder / "val.parquet")


def _load_splits(folder: Path) -> Splits:
    val = folder / "val.parquet"
    return Splits(
        train=read_dataset(folder / "train.parquet"),
        test=read_dataset(folder / "test.parquet"),
        val=read_dataset(val) if val.exists() else None,
    )


def _save_normalised(result: NormalisedSplits, folder: Path) -> None:
    _save_splits(Splits(train=result.train, test=result.test, val=result.val), folder)
    write_text_atomic(folder / "normaliser.json", json.dumps(result.normaliser.to_dict()))


def _load_normalised(folder: Path) -> NormalisedSplits:
    splits = _load_splits(folder)
    stats = json.loads((folder / "normaliser.json").read_text())
    return NormalisedSplits(
        train=splits.train, test=splits.test, val=splits.val,
        normaliser=Normaliser.from_dict(stats),
    )


@dataclass
class DataStages:
    raw: Dataset
    splits: Splits
    normalised: NormalisedSplits
    cache_hits: dict[str, bool]
    source: str | None
    dropped_rows: int | None = None


def run_data_stages(
    config: Config, seeds: Mapping[str, int], output_dir: Path, timings: dict[str, float]
) -> DataStages:
    """generate/load_csv -> split -> normalise, each cached and written as Parquet."""
    cache_root = resolve_path(config.pipeline.cache_dir) if config.pipeline.cache_dir else (
        DEFAULT_CACHE
    )
    cache = StageCache(cache_root, enabled=config.pipeline.cache)
    hits: dict[str, bool] = {}
    data_cfg = dataclasses.asdict(config.data)
    stage_dir = output_dir / "data"

    dropped: list[int] = []  # rows dropped by data.drop_na (known when computed)
    if config.data.source == "rf":
        stage = "generate"
        data_cfg["seed"] = seeds["data"]
        inputs: dict[str, str] = {}
        source = None  # generated in code: MLflow records the code as the source

        def compute() -> Dataset:
            return generate_rf(
                n_samples=config.data.n_samples, freq_start=config.data.freq_start,
                freq_end=config.data.freq_end, noise_std=config.data.noise_std,
                seed=seeds["data"],
            )
    else:
        stage = "load_csv"
        path = resolve_path(config.data.path)
        if not path.is_file():
            raise DataError(
                f"data.path: {str(path)!r} "
                + ("is a directory" if path.is_dir() else "does not exist")
                + "; point data.path at a CSV file"
            )
        inputs = {"file": digest_file(path)}
        data_cfg["path"] = str(path)
        source = str(path)

        def compute() -> Dataset:
            label = config.data.label_column
            header = {"auto": "auto", "true": True, "false": False}[config.data.header]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", DroppedRowsWarning)
                loaded = load_csv(path, label_column=label, header=header,
                                  delimiter=config.data.delimiter, drop_na=config.data.drop_na)
            for warning in caught:
                if isinstance(warning.message, DroppedRowsWarning):
                    dropped.append(warning.message.n_dropped)
                    log.warning("%s", warning.message)
            return loaded

    with _timed(timings, stage):
        raw, hits[stage] = cache.fetch(
            stage, cache_key(stage, data_cfg, inputs), compute, _save_dataset, _load_dataset,
        )
        _save_dataset(raw, stage_dir / f"01_{stage}")

    split_cfg = {**dataclasses.asdict(config.split), "seed": seeds["split"]}
    with _timed(timings, "split"):
        splits, hits["split"] = cache.fetch(
            "split", cache_key("split", split_cfg, {"data": raw.digest()}),
            lambda: split_dataset(
                raw, test_fraction=config.split.test_fraction,
                val_fraction=config.split.val_fraction, stratify=config.split.stratify,
                seed=seeds["split"],
            ),
            _save_splits, _load_splits,
        )
        _save_splits(splits, stage_dir / "02_split")

    split_digests = {k: getattr(splits, k).digest() for k in ("train", "test")}
    if splits.val is not None:
        split_digests["val"] = splits.val.digest()
    with _timed(timings, "normalise"):
        normalised, hits["normalise"] = cache.fetch(
            "normalise", cache_key("normalise", {}, split_digests),
            lambda: normalise(splits), _save_normalised, _load_normalised,
        )
        _save_normalised(normalised, stage_dir / "03_normalise")
    return DataStages(raw, splits, normalised, hits, source, sum(dropped) if dropped else None)


# -- training -----------------------------------------------------------------------------
def _resolve_checkpoint(spec: str, tracker: RunTracker, workdir: Path) -> Path:
    """A checkpoint path, or the newest checkpoint logged by the MLflow run ``spec``."""
    path = resolve_path(spec)
    if path.exists():
        return path
    try:
        listing = tracker.client.list_artifacts(spec, "checkpoints")
    except Exception:
        listing = []
    names = sorted(Path(item.path).name for item in listing if item.path.endswith(".json"))
    if not names:
        raise PipelineError(
            f"train.resume_from: {spec!r} is neither a checkpoint file nor an MLflow run with "
            "checkpoints; pass a path to a .json checkpoint or a run id"
        )
    # final.json when the run finished, else the highest epoch_NNNNN.json.
    chosen = "final.json" if "final.json" in names else names[-1]
    return Path(tracker.client.download_artifacts(spec, f"checkpoints/{chosen}", str(workdir)))


class _Checkpointer:
    """Writes ``checkpoints/epoch_NNNNN.json`` every ``every`` epochs (atomically)."""

    def __init__(self, folder: Path, every: int, metadata: Mapping[str, Any]) -> None:
        self.folder, self.every, self.metadata = folder, every, metadata

    def __call__(self, epoch: int, metrics: Mapping[str, float], model: MLP) -> None:
        if self.every and epoch % self.every == 0:
            model.save(self.folder / f"epoch_{epoch:05d}.json", metadata=self.metadata)


def _threads(config: Config) -> int | None:
    """train.threads, else a sweep job's share of the cores (set by the sweep callback)."""
    shared = os.environ.get("PIPELINE_DEFAULT_THREADS")
    return config.train.threads or (int(shared) if shared else None)


def _threadpool(threads: int | None) -> Any:
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas") if threads else nullcontext()


def _show_progress(setting: str) -> bool:
    if setting in ("true", "false"):
        return setting == "true"
    return sys.stderr.isatty() and not os.environ.get("CI") and not _in_sweep_job()


def _in_sweep_job() -> bool:
    return os.environ.get("PIPELINE_SWEEP_PARENT_RUN_ID") is not None


# -- the run ------------------------------------------------------------------------------
def run(
    config: Config,
    *,
    output_dir: Path,
    overrides: Sequence[str] = (),
    hydra_dir: Path | None = None,
    parent_run_id: str | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Run every stage for ``config`` as one MLflow run; return its id and test metrics."""
    output_dir.mkdir(parents=True, exist_ok=True)
    seeds = resolve_seeds(config.seed, {
        "data": getattr(config.data, "seed", None), "split": config.split.seed,
        "init": config.model.seed, "shuffle": config.train.shuffle_seed,
    })
    tracker = RunTracker.start(
        config.tracking.uri, config.tracking.experiment,
        run_name=config.tracking.run_name or default_run_name(config),
        tags={**config.tags, **(extra_tags or {})}, parent_run_id=parent_run_id,
    )
    log.info("MLflow run %s in %s", tracker.run_id, tracker.client.tracking_uri)
    try:
        with _sigterm_raises():
            result = _run_tracked(config, tracker, seeds, output_dir, overrides, hydra_dir)
    except KeyboardInterrupt as stop:
        _log_partial(tracker, output_dir)
        reason = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted (SIGINT)"
        tracker.end("KILLED", f"{reason}; metrics and checkpoints so far were kept")
        raise
    except (DataError, CheckpointError, PipelineError) as error:
        tracker.end("FAILED", _user_error(error))
        if isinstance(error, PipelineError):
            raise
        raise PipelineError(_user_error(error)) from error
    except TrainingDiverged as error:
        _log_partial(tracker, output_dir)
        message = f"{_user_error(error)}; lower optimizer.lr or use train.clip=value/norm"
        tracker.end("FAILED", message)
        raise PipelineError(message) from error
    except OSError as error:  # disk full, unwritable folder: the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        message = (f"could not write {where}{error.strerror or error}; free disk space or point "
                   "hydra.run.dir / pipeline.cache_dir at a writable folder")
        tracker.end("FAILED", message)
        raise PipelineError(message) from error
    except BaseException as error:
        tracker.end("FAILED", f"{type(error).__name__}: {_user_error(error)}")
        raise
    tracker.end("FINISHED")
    return result


def _log_partial(tracker: RunTracker, output_dir: Path) -> None:
    """After a failure or interrupt, keep the checkpoints written so far."""
    folder = output_dir / "checkpoints"
    try:
        if folder.is_dir() and any(folder.glob("*.json")):
            tracker.log_artifacts(folder, "checkpoints")
    except Exception:
        pass


def _run_tracked(
    config: Config,
    tracker: RunTracker,
    seeds: Mapping[str, int],
    output_dir: Path,
    overrides: Sequence[str],
    hydra_dir: Path | None,
) -> RunResult:
    timings: dict[str, float] = {}
    tree = config_dict(config)
    digest = config_digest(config)
    params = {k: v for k, v in flatten(tree).items() if not k.startswith("tracking.")}
    params.update({f"seeds.{k}": v for k, v in seeds.items()})
    tracker.log_params(params)
    env = environment.describe()
    threads = _threads(config)
    tracker.set_tags({**env, "config_digest": digest, "output_dir": str(output_dir),
                      "train_threads": str(threads) if threads else "default"})
    if env.get("git_dirty") == "true":
        log.warning("the git tree is dirty: this run may not be reproducible from its commit")

    data = run_data_stages(config, seeds, output_dir, timings)
    prepared = data.normalised
    tracker.set_tags({
        "data_digest": data.raw.digest(),
        "data.train_digest": prepared.train.digest(),
        "data.test_digest": prepared.test.digest(),
        **{f"cache.{stage}": "hit" if hit else "miss" for stage, hit in data.cache_hits.items()},
        **({"data.dropped_rows": str(data.dropped_rows)} if data.dropped_rows is not None else {}),
    })
    log.info("cache: %s", ", ".join(f"{s} {'hit' if h else 'miss'}"
                                     for s, h in data.cache_hits.items()))

    artifact_dir = output_dir / "artifacts"
    checkpoints = output_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    metadata = {
        "normaliser": prepared.normaliser.to_dict(),
        "feature_names": list(prepared.train.feature_names),
        "label_name": prepared.train.label_name,
        "classes": list(prepared.train.classes),
        "config_digest": digest,
        "seeds": dict(seeds),
    }

    resume = config.train.resume_from is not None
    if resume:
        ckpt = _resolve_checkpoint(config.train.resume_from, tracker, output_dir / "resume")
        model = MLP.load(ckpt)
        tracker.set_tags({"resumed_from": str(config.train.resume_from)})
    else:
        model = build_model(
            prepared.train.n_features, prepared.train.n_classes,
            hidden_sizes=config.model.hidden_sizes, activation=config.model.activations,
            output=config.model.output, init=config.model.init, dtype=config.model.dtype,
            seed=seeds["init"],
        )
    callbacks: list[Callable[..., Any]] = [
        lambda epoch, metrics, _model: tracker.log_epoch(epoch, metrics),
        _Checkpointer(checkpoints, config.train.checkpoint_every, metadata),
    ]
    progress = ProgressBar(config.train.epochs) if _show_progress(config.train.progress) else None
    if progress is not None:
        callbacks.append(progress)
    try:
        # The bar closes (last in, first out) before the stage's time is logged.
        with _timed(timings, "train"), _threadpool(threads), progress or nullcontext():
            trained = train_model(
                model, prepared.train, prepared.val,
                learning_rate=config.optimizer.lr, epochs=config.train.epochs,
                batch_size=config.train.batch_size, optimizer=config.optimizer.name,
                optimizer_options=config.optimizer.options(),
                weight_decay=config.optimizer.weight_decay, clip=config.train.clip,
                clip_value=config.train.clip_value,
                early_stopping_patience=config.train.early_stopping_patience,
                shuffle_seed=seeds["shuffle"], callbacks=callbacks, resume=resume,
            )
    except ValueError as error:  # the core's input checks (e.g. a resumed model's shape)
        if isinstance(error, CheckpointError | DataError):
            raise
        raise PipelineError(f"train: {_user_error(error)}") from error
    final_ckpt = checkpoints / "final.json"
    trained.model.save(final_ckpt, metadata=metadata)

    with _timed(timings, "evaluate"):
        proba = trained.model.predict_proba(prepared.test.X)
        evaluation: Evaluation = evaluate(proba, prepared.test.y, prepared.test.classes)

    plot_inputs = artifacts.PlotInputs(
        evaluation=evaluation, history=trained.history.metrics, proba=proba,
        test=prepared.test, raw_test=data.splits.test, raw_train=data.splits.train,
        model=trained.model, normaliser=prepared.normaliser,
    )
    plots = artifacts.start_plots(artifact_dir, plot_inputs) if config.tracking.plots else None
    if plots is not None and _in_sweep_job():
        # This process runs more jobs: let their plot processes fork with matplotlib
        # already imported (~0.3 s of CPU each, which parallel jobs compete for).
        import pipeline.plots  # noqa: F401
    files = artifacts.write_run_artifacts(
        artifact_dir, evaluation=evaluation, history=trained.history.metrics,
        config_tree=tree, overrides=overrides, hydra_dir=hydra_dir,
    )
    shutil.copytree(checkpoints, artifact_dir / "checkpoints", dirs_exist_ok=True)
    with _timed(timings, "tracking"):
        tracker.set_tags({
            "checkpoint_sha256": digest_file(final_ckpt),
            "predictions_sha256": digest_file(files["predictions"]),
            "epochs_run": str(len(next(iter(trained.history.metrics.values()), []))),
        })
        tracker.log_inputs(
            {"train": data.splits.train.to_frame(), "test": data.splits.test.to_frame()},
            targets=data.raw.label_name,
            digests={"train": data.splits.train.digest(), "test": data.splits.test.digest()},
            source=data.source,
        )
        model_id = None
        if config.tracking.log_model:  # before the epoch metrics (see serving.log_model)
            from pipeline.serving import log_model

            model_id = log_model(tracker, final_ckpt, data.raw.feature_names, data.raw.classes)
        tracker.flush_in_background()  # the epoch metrics, while the plots finish
        if plots is not None and not plots.wait():
            log.warning("drawing the plots failed; the run is logged without them")
        tracker.log_artifacts(artifact_dir)
        tracker.log_metrics(evaluation.metrics, model_id=model_id,
                            dataset=("test", data.splits.test.digest()[:36]))
        tracker.log_metrics({f"time_{stage}_s": sec for stage, sec in timings.items()})
    return RunResult(
        run_id=tracker.run_id,
        experiment_id=tracker.experiment_id,
        url=run_url(tracker.client, tracker.experiment_id, tracker.run_id),
        metrics=dict(evaluation.metrics),
        confusion=evaluation.confusion.to_dict(),
        output_dir=output_dir,
    )


def format_summary(result: RunResult) -> str:
    """The end-of-run console summary: test metrics, confusion matrix, where to look."""
    lines = ["", "Test metrics"]
    for key, value in result.metrics.items():
        lines.append(f"  {key:<16} {value:.4f}")
    labels = [str(label) for label in result.confusion.get("labels", [])]
    matrix = result.confusion.get("matrix", [])
    if labels:
        width = max(6, *(len(label) for label in labels), *(len(str(v)) for row in matrix
                                                            for v in row))
        lines.append("Confusion matrix (rows = actual, columns = predicted)")
        lines.append(" " * (width + 2) + " ".join(f"{label:>{width}}" for label in labels))
        for label, row in zip(labels, matrix, strict=True):
            lines.append(f"  {label:>{width}}" + " ".join(f"{v:>{width}}" for v in row))
    lines.append(f"MLflow run {result.run_id}")
    lines.append(f"  open it: make ui, then {result.url}")
    if result.output_dir is not None:
        lines.append(f"  outputs: {result.output_dir}")
    return "\n".join(lines)

