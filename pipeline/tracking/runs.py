"""Reading runs back: what reruns, resumes, clean-up and links need, as plain values."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pipeline.config.addresses import host_port_url
from pipeline.errors import PipelineError
from pipeline.tracking import record as names
from pipeline.tracking.store import Store, end_run, open_store, sqlite_path

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run

log = logging.getLogger("pipeline.tracking")

CHECKPOINT_NAME = re.compile(r"epoch_(\d+)\.json")
LIVE_WITHIN_S = names.LIVE_WITHIN_S  # younger heartbeats are live runs: never touched


@dataclass(frozen=True)
class RunView:
    """One run as plain values."""

    run_id: str
    experiment_id: str
    name: str
    status: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


UI_DEFAULT = "http://127.0.0.1:5000"  # `make ui`'s own default address
# MLflow 3.17's UI opens a fresh browser on its GenAI pages; this query switches it to the
# training views on the routes below.
TRAINING_VIEW = "workflowType=machine_learning"
# `make ui` writes the address it serves a sqlite store on into this file beside the store
# (gitignored); links to that store's runs follow it.
UI_FILE = ".mlflow-ui"
UI_FILE_MAX_BYTES = 300


def announce_ui(store_uri: str, host: str, port: int) -> str:
    """Record ``host:port`` as the address of the UI on the sqlite store ``store_uri`` (the
    next runs' links follow it); return the address. Written whole or not at all."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # every interface
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}"
    db = sqlite_path(store_uri)
    if db is not None:
        tmp = db.parent / f"{UI_FILE}.{os.getpid()}.tmp"
        try:
            tmp.write_text(url + "\n")
            os.replace(tmp, db.parent / UI_FILE)
        except OSError:  # a read-only folder: links keep the default address
            tmp.unlink(missing_ok=True)
    return url


def announced_ui(store_uri: str) -> str | None:
    """The address ``make ui`` last announced for the sqlite store ``store_uri``; None when
    there is none, or the file holds anything but http(s)://host:port (anyone who can write
    beside the store can write it: it is never trusted further)."""
    db = sqlite_path(store_uri)
    if db is None:
        return None
    try:
        with open(db.parent / UI_FILE, "rb") as file:
            raw = file.read(UI_FILE_MAX_BYTES + 1)
        text = raw.decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return host_port_url(text) if len(raw) <= UI_FILE_MAX_BYTES else None


def ui_base(store_uri: str, ui_url: str | None = None) -> str:
    """The UI's address: ``ui_url`` (``tracking.ui_url``) if given, else the tracking server's
    own for http(s) stores, else the one ``make ui`` announced for the store, else its
    default."""
    if ui_url:
        return ui_url.rstrip("/")
    if store_uri.startswith(("http://", "https://")):
        return store_uri.rstrip("/")
    return announced_ui(store_uri) or UI_DEFAULT


def run_url(store_uri: str, experiment_id: str, run_id: str, ui_url: str | None = None) -> str:
    """A link that opens one run in the UI's training view."""
    return (f"{ui_base(store_uri, ui_url)}/#/experiments/{experiment_id}/runs/{run_id}"
            f"?{TRAINING_VIEW}")


def experiment_url(store_uri: str, experiment_id: str, ui_url: str | None = None) -> str:
    """A link to the experiment's runs table (sweeps as expandable parents)."""
    return f"{ui_base(store_uri, ui_url)}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"


def experiments_url(base: str) -> str:
    """A link to the UI at ``base`` listing the experiments, in the training views."""
    return f"{base.rstrip('/')}/#/experiments?{TRAINING_VIEW}"


def compare_url(store_uri: str, experiment_ids: list[str], run_ids: list[str],
                ui_url: str | None = None) -> str:
    """A link to the UI's side-by-side comparison of ``run_ids``."""
    runs = quote(json.dumps(list(run_ids), separators=(",", ":")), safe="")
    experiments = quote(json.dumps(sorted(set(experiment_ids)), separators=(",", ":")), safe="")
    return (f"{ui_base(store_uri, ui_url)}/#/compare-runs?runs={runs}&experiments={experiments}"
            f"&{TRAINING_VIEW}")


class Runs:
    """Reads from one store (the project's by default)."""

    def __init__(self, uri: str | None = None, *, store: Store | None = None) -> None:
        self.store: Store = store if store is not None else open_store(uri)

    @property
    def uri(self) -> str:
        return self.store.uri

    def get(self, run_id: str) -> RunView:
        """The run ``run_id``; a :class:`PipelineError` naming the store if it is not there."""
        try:
            run = self.store.client.get_run(run_id)
        except Exception:
            raise PipelineError(
                f"run id {run_id!r} is not in the store {self.uri}; "
                "copy the id from the MLflow UI or name its store (STORE=<uri>, --uri, "
                "tracking.uri= or MLFLOW_TRACKING_URI)"
            ) from None
        return RunView(run.info.run_id, run.info.experiment_id, run.info.run_name or "",
                       run.info.status, dict(run.data.params), dict(run.data.tags),
                       dict(run.data.metrics))

    def histories(self, run_id: str, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
        """Each metric's points as (step, value), by step: every epoch of a per-epoch metric
        from the run's ``history.csv`` (the store may hold a thinned subset), the others as
        logged."""
        epochs = self.epoch_history(run_id)
        client = self.store.client
        return {key: epochs[key] if key in epochs else sorted(
            (m.step, m.value) for m in self.store.call(
                "read a metric history", lambda k=key: client.get_metric_history(run_id, k)))
            for key in keys}

    def epoch_history(self, run_id: str) -> dict[str, list[tuple[int, float]]]:
        """The run's ``history.csv`` as {metric: [(epoch, value), ...]} ({} if it has none
        or it is unreadable)."""
        try:
            frame = read_history(self, run_id)
        except HistoryError:
            return {}
        if frame is None:
            return {}
        steps = frame["epoch"].tolist()
        return {str(key): list(zip(steps, frame[key].tolist(), strict=True))
                for key in frame.columns[1:]}

    def download(self, run_id: str, path: str, folder: Path) -> Path:
        client = self.store.client
        return Path(self.store.call(f"download {path}", lambda: client.download_artifacts(
            run_id, path, str(folder))))

    def read_text(self, run_id: str, path: str) -> str | None:
        """An artifact's text, or None if the run has no such artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return self.download(run_id, path, Path(tmp)).read_text()
            except Exception:
                return None

    def read_json(self, run_id: str, path: str) -> Any:
        text = self.read_text(run_id, path)
        return None if text is None else json.loads(text)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in names.clean_tags(tags).items()]
        self.store.call("tag the run", lambda: self.store.client.log_batch(run_id, tags=items))

    def url(self, run: RunView) -> str:
        return run_url(self.uri, run.experiment_id, run.run_id)


class HistoryError(ValueError):
    """A run's ``history.csv`` that is not an epoch table; the message says why."""


def read_history(runs: Runs, run_id: str) -> pd.DataFrame | None:
    """Run ``run_id``'s ``history.csv``: an int64 ``epoch`` column then one float64 column per
    metric, a row per epoch in the file's order; None if the run has none. Raises
    :class:`HistoryError` if it does not parse, has no epoch rows or a cell is not a number."""
    import io

    import pandas as pd

    text = runs.read_text(run_id, names.HISTORY_ARTIFACT)
    if text is None:
        return None
    try:
        frame = pd.read_csv(io.StringIO(text))  # pandas 3 reads every float64 back exactly
    except ValueError as error:  # its ParserError and EmptyDataError among them
        raise HistoryError(f"cannot be read: {_first_line(error)}") from None
    if frame.empty or frame.columns[0] != "epoch":
        raise HistoryError("has no epoch rows")
    try:
        return frame.astype({"epoch": "int64", **dict.fromkeys(frame.columns[1:], "float64")})
    except ValueError as error:  # a cell that is not a number
        raise HistoryError(f"cannot be read: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def newest_checkpoint(names_: list[str]) -> str | None:
    """``final.json`` if there, else the ``epoch_N.json`` with the highest N (as a number:
    ``epoch_257000.json`` after ``epoch_99000.json``)."""
    if "final.json" in names_:
        return "final.json"
    numbered = [(int(m.group(1)), name) for name in names_
                if (m := CHECKPOINT_NAME.fullmatch(name))]
    return max(numbered)[1] if numbered else None


def fetch_checkpoint(uri: str | None, run_id: str, folder: Path) -> tuple[Path, str]:
    """Download the newest checkpoint of run ``run_id`` into ``folder``: its local path, and
    where it came from (``runs:/<id>/checkpoints/<name>``)."""
    runs = Runs(uri)
    client = runs.store.client
    try:
        listing = client.list_artifacts(run_id, "checkpoints")
    except Exception:
        listing = []
    chosen = newest_checkpoint([Path(item.path).name for item in listing])
    if chosen is None:
        raise PipelineError(
            f"train.resume_from: {run_id!r} is neither a checkpoint file nor a run with "
            f"checkpoints in {runs.uri}; pass a path to a .json checkpoint or a run id"
        )
    path = runs.download(run_id, f"checkpoints/{chosen}", folder)
    return path, f"runs:/{run_id}/checkpoints/{chosen}"


def mark_stale_runs(uri: str | None, max_age_s: float) -> list[str]:
    """End as KILLED every RUNNING run whose heartbeat is older than ``max_age_s``, and
    never one younger than :data:`LIVE_WITHIN_S`, whatever ``max_age_s`` says.

    A SIGKILLed process cannot end its own run; this is the clean-up for that. Live runs
    and live sweep parents refresh their heartbeat every 15 s, so they are never touched.
    """
    from mlflow.entities import RunStatus

    max_age_s = max(max_age_s, LIVE_WITHIN_S)
    store = open_store(uri)
    client = store.client
    now = time.time()
    killed = []
    for experiment in store.call("list experiments", client.search_experiments):
        runs = store.call("list running runs", lambda e=experiment: client.search_runs(
            [e.experiment_id], filter_string="attributes.status = 'RUNNING'",
            max_results=5000))
        for run in runs:
            if now - last_heartbeat(run) > max_age_s:
                run_id = run.info.run_id
                store.call("tag a stale run", lambda r=run_id: client.set_tag(
                    r, names.ERROR_TAG, names.STALE_ERROR))
                end_run(store, run_id, RunStatus.to_string(RunStatus.KILLED))
                killed.append(run_id)
    return killed


def last_heartbeat(run: Run) -> float:
    """When a run last showed it was alive (unix seconds): its heartbeat tag, else (none, or
    not a number) its start."""
    beat = run.data.tags.get(names.HEARTBEAT_TAG)
    try:
        last = float(beat)
    except (TypeError, ValueError):
        return run.info.start_time / 1000
    return last if math.isfinite(last) else run.info.start_time / 1000
