"""MLflow tracking: the only module of the runner that imports mlflow.

One :class:`RunTracker` per pipeline run. It opens the store once, checks that it
answers before any work starts, buffers per-epoch metrics in memory and writes
them with ``log_batch`` (at most 1000 metrics a call: one ``log_metric`` per value
is ~50x slower), retries writes that hit a locked sqlite file, and always ends
the run FINISHED, FAILED (with an ``error`` tag) or KILLED, never RUNNING.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# An unreachable server should fail in seconds, not after minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")

import contextlib

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.errors import TrackingError
from pipeline.paths import DEFAULT_STORE

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
HEARTBEAT_TAG = "pipeline.heartbeat"
FLUSH_INTERVAL_S = 15.0

T = TypeVar("T")


def store_uri(uri: str | None) -> str:
    """The tracking URI: the given one, or the project's own sqlite store."""
    return uri if uri else f"sqlite:///{DEFAULT_STORE}"


def artifact_location(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside its file (``<dir>/mlruns``), whatever the cwd.

    Other stores (a server) decide for themselves: None.
    """
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_absolute():
            db = Path.cwd() / db
        return (db.parent / "mlruns").as_uri()
    return None


def retrying(call: Callable[[], T], *, attempts: int = 8, first_delay: float = 0.05) -> T:
    """Run a store write, retrying with exponential backoff while sqlite is locked.

    Concurrent sweep jobs share one sqlite file; MLflow does not retry a locked
    database itself.
    """
    delay = first_delay
    for attempt in range(attempts):
        try:
            return call()
        except Exception as error:  # sqlalchemy's OperationalError arrives wrapped or bare
            text = str(error).lower()
            transient = "database is locked" in text or "database table is locked" in text
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


def connect(uri: str | None) -> MlflowClient:
    """Point MLflow at ``uri`` and check that the store answers.

    Raises :class:`TrackingError` naming the URI when it does not, before any work.
    """
    resolved = store_uri(uri)
    mlflow.set_tracking_uri(resolved)
    client = MlflowClient(tracking_uri=resolved)
    try:
        retrying(lambda: client.search_experiments(max_results=1))
    except Exception as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TrackingError(
            f"tracking.uri: the MLflow store at {resolved} does not answer ({first[:200]}); "
            "start it (make server) or point tracking.uri at a reachable store"
        ) from None
    return client


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name``, created (race-safely) if missing.

    On a sqlite store the artifacts go beside the database file (see
    :func:`artifact_location`), so they stay together whatever the working directory.
    """
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise TrackingError(
                f"tracking.experiment: {name!r} is deleted in {client.tracking_uri}; "
                "restore it in the MLflow UI or pick another tracking.experiment"
            )
        return str(existing.experiment_id)
    location = artifact_location(client.tracking_uri)
    try:
        return str(retrying(lambda: client.create_experiment(name, artifact_location=location)))
    except MlflowException:
        # Another process created it between our look-up and create.
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return str(again.experiment_id)


def _chunks(items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RunTracker:
    """One MLflow run: params, buffered epoch metrics, artifacts and a final status."""

    def __init__(self, client: MlflowClient, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._pending: list[tuple[int, float, Mapping[str, float]]] = []
        self._flusher: _Flusher | None = None
        self._last_flush = time.monotonic()
        self._ended = False

    @classmethod
    def start(
        cls,
        uri: str | None,
        experiment: str,
        *,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> RunTracker:
        """Open the store, then start a run (a child when ``parent_run_id`` is given)."""
        client = connect(uri)
        exp_id = experiment_id(client, experiment)
        all_tags = {HEARTBEAT_TAG: str(int(time.time())), **(tags or {})}
        # The run is made active (fluent API) because MLflow's model logging needs it.
        active = retrying(
            lambda: mlflow.start_run(
                experiment_id=exp_id,
                run_name=run_name,
                parent_run_id=parent_run_id,
                tags=_clean_tags(all_tags),
            )
        )
        return cls(client, active.info.run_id, exp_id)

    # -- params, tags, metrics -------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params, at most 100 per call; long values are cut to MLflow's limit."""
        items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            retrying(lambda c=chunk: self.client.log_batch(self.run_id, params=c))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, v) for k, v in _clean_tags(tags).items()]
        for chunk in _chunks(items, MAX_PARAMS_PER_BATCH):
            retrying(lambda c=chunk: self.client.log_batch(self.run_id, tags=c))

    def log_epoch(self, step: int, metrics: Mapping[str, float]) -> None:
        """Buffer one epoch's metrics (a tuple append: ~1 µs); written by :meth:`flush`.

        Flushes by itself every ``FLUSH_INTERVAL_S`` seconds so a long run shows
        progress in the UI, refreshes its heartbeat and loses little to a SIGKILL.
        """
        self._pending.append((step, time.time(), metrics))
        if time.monotonic() - self._last_flush > FLUSH_INTERVAL_S:
            self.flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, *,
                    model_id: str | None = None, dataset: tuple[str, str] | None = None) -> None:
        """Log final (single-value) metrics, with anything still buffered.

        With ``model_id`` they are also the logged model's metrics (its page in the
        UI shows them), measured on ``dataset`` = (name, digest) when given.
        """
        self.flush()
        name, digest = dataset or (None, None)
        stamp = int(time.time() * 1000)
        self._log_batch([Metric(key, float(value), stamp, step, model_id=model_id,
                                dataset_name=name, dataset_digest=digest)
                         for key, value in metrics.items()])

    def flush(self) -> None:
        """Write buffered metrics, 1000 per ``log_batch`` call, and refresh the heartbeat."""
        self.wait_for_flush()
        pending, self._pending = self._pending, []
        self._write(pending)

    def flush_in_background(self) -> None:
        """Start writing the buffered metrics in a thread (see :meth:`wait_for_flush`).

        Writing 3000 epochs x 3 metrics to sqlite takes about a second of ORM work;
        in a thread it overlaps the evaluation, the plots and the model logging.
        """
        self.wait_for_flush()
        pending, self._pending = self._pending, []
        self._flusher = _Flusher(lambda: self._write(pending))

    def wait_for_flush(self) -> None:
        """Join a background flush; re-raise its error here."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.join()

    def _log_batch(self, metrics: list[Metric]) -> None:
        """Write ``metrics``, MAX_METRICS_PER_BATCH per ``log_batch`` call, with retries."""
        for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
            retrying(lambda c=chunk: self.client.log_batch(self.run_id, metrics=c))

    def _write(self, pending: list[tuple[int, float, Mapping[str, float]]]) -> None:
        if not pending:  # nothing new: no store round trip, not even the heartbeat
            return
        self._log_batch([Metric(key, float(value), int(stamp * 1000), step)
                         for step, stamp, values in pending for key, value in values.items()])
        beat = [RunTag(HEARTBEAT_TAG, str(int(time.time())))]
        retrying(lambda: self.client.log_batch(self.run_id, tags=beat))
        self._last_flush = time.monotonic()

    # -- artifacts -------------------------------------------------------------
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_inputs(self, frames: Mapping[str, Any], targets: str, digests: Mapping[str, str],
                   source: str | None) -> None:
        """Record the train/test tables as run inputs (``mlflow.log_input``), with digests."""
        from mlflow.data.pandas_dataset import from_pandas
        from mlflow.entities import DatasetInput, InputTag

        inputs = []
        for context, frame in frames.items():
            with warnings.catch_warnings():  # integer label columns are fine here
                warnings.simplefilter("ignore", UserWarning)
                dataset = from_pandas(frame, source=source, targets=targets, name=context,
                                      digest=digests[context][:36])._to_mlflow_entity()
            tag = InputTag(key="mlflow.data.context", value=context)
            inputs.append(DatasetInput(dataset=dataset, tags=[tag]))
        retrying(lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def log_pyfunc_model(self, **kwargs: Any) -> str:
        """Log a pyfunc model into this (active) run; return its MLflow model id."""
        return str(mlflow.pyfunc.log_model(**kwargs).model_id)

    # -- lifecycle -------------------------------------------------------------
    def end(self, status: str, error: str | None = None) -> None:
        """Flush what is buffered and end the run; never raises a second error."""
        if self._ended:
            return
        self._ended = True
        # A store that died mid-run must not hide the first error.
        with contextlib.suppress(Exception):
            self.flush()
        if error:
            with contextlib.suppress(Exception):
                self.set_tags({"error": error})
        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            retrying(lambda: mlflow.end_run(status=status))
        else:
            retrying(lambda: self.client.set_terminated(self.run_id, status=status))


class _Flusher(threading.Thread):
    """A thread that runs one write and keeps its exception for :meth:`join`."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__(name="mlflow-flush", daemon=True)
        self._work = work
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # handed to the joining thread
            self._error = error

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self._error is not None:
            raise self._error


def _clean_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_TAG_LENGTH] for k, v in tags.items()}


def run_url(client: MlflowClient, experiment_id: str, run_id: str) -> str:
    """A link that opens the run in the UI's training view (not the GenAI overview)."""
    uri = client.tracking_uri
    base = uri.rstrip("/") if uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def mark_stale_runs(uri: str | None, max_age_s: float) -> list[str]:
    """End as KILLED every RUNNING run whose heartbeat is older than ``max_age_s``.

    A SIGKILLed process cannot end its own run; this is the clean-up for that.
    """
    client = connect(uri)
    now = time.time()
    killed = []
    experiments = client.search_experiments()
    for experiment in experiments:
        runs = client.search_runs(
            [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'",
            max_results=5000,
        )
        for run in runs:
            beat = run.data.tags.get(HEARTBEAT_TAG)
            last = float(beat) if beat else run.info.start_time / 1000
            if now - last > max_age_s:
                client.set_tag(run.info.run_id, "error", "stale: no heartbeat, marked KILLED")
                client.set_terminated(run.info.run_id, status=RunStatus.to_string(RunStatus.KILLED))
                killed.append(run.info.run_id)
    return killed
