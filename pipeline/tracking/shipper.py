"""Journal records into an MLflow run: every record applied idempotently, in few calls.

A :class:`Shipper` serves one run in one store. The live run feeds it the records it
journals (in a background thread); ``pipeline.commands.sync`` feeds it a journal read back from
disk. Either way the result is the same, and applying a record twice changes nothing:
metrics that exist are skipped by the store, params and tags are rewritten with the
same values, artifacts overwrite themselves, a model is logged only if the run has
none, and the final status is set only if the run does not have it yet.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

from pipeline.tracking import record as names
from pipeline.tracking.journal import Journal, JournalError, epoch_rows, read_journal
from pipeline.tracking.model import log_model, logged_model_id
from pipeline.tracking.record import HISTORY_ARTIFACT, clean_tags
from pipeline.tracking.store import Store, StoreError
from pipeline.tracking.thinning import EVERY_EPOCH, Thinning

MAX_METRICS_PER_CALL = 1000
MAX_PARAMS_AND_TAGS_PER_CALL = 100
MAX_PARAM_LENGTH = 6000

# Applied first: the model before the epoch metrics (MLflow reads every metric's history
# when it logs a model), the final status last.
_ORDER = {"start": 0, "params": 1, "tags": 1, "plan": 1, "inputs": 1, "model": 2,
          "artifacts": 3, "epochs": 4, "metrics": 5, "end": 6}


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def write_history_csv(journal: Journal, path: Path) -> Path | None:
    """``epoch`` then one column per metric, one row per epoch (None: no epoch ran)."""
    import pyarrow as pa
    import pyarrow.csv

    keys, rows = journal.epochs()
    if not len(rows):
        return None
    table = pa.table({"epoch": rows[:, 0].astype(np.int64),
                      **{key: rows[:, i + 2] for i, key in enumerate(keys)}})
    pyarrow.csv.write_csv(table, path, pyarrow.csv.WriteOptions(quoting_header="none"))
    return path


class Shipper:
    """Applies journal records to run ``run_id`` of ``store``."""

    def __init__(self, store: Store, run_id: str, experiment_id: str, journal: Path) -> None:
        self.store, self.run_id, self.experiment_id = store, run_id, experiment_id
        self.journal = journal  # the history artifact is written from it at the end
        self.client = store.client
        self.thinning: Thinning = EVERY_EPOCH
        self._keys: list[str] = []
        self.model_id: str | None = None
        self.budget_s = 60.0  # how long one store call may retry
        self.deadline: float | None = None  # time.monotonic() after which no call starts
        self._best: tuple[float, np.ndarray] | None = None  # (val_loss, row)
        self._last_row: np.ndarray | None = None

    def _call(self, what: str, action: Any) -> Any:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise StoreError(f"tracking: stopped before the store had the whole run "
                             f"(no time left to {what})", transient=True)
        return self.store.call(what, action, budget_s=self.budget_s)

    # -- the one entry point ----------------------------------------------------------
    def apply(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Apply ``records`` (in journal order) with as few store calls as they allow."""
        ordered = sorted(records, key=lambda r: _ORDER.get(str(r["k"]), 3))
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics: list[Metric] = []
        for record in ordered:
            kind = record["k"]
            if kind == "params":
                params.update({k: str(v)[:MAX_PARAM_LENGTH] for k, v in record["params"].items()})
            elif kind == "tags":
                tags.update(clean_tags(record["tags"]))
            elif kind == "plan":
                self.thinning = Thinning.plan(record["first"], record["last"],
                                              record["max_points"])
            elif kind == "epochs":
                metrics += self._epoch_metrics(record)
            elif kind == "metrics":
                metrics += self._single_metrics(record)
            elif kind in ("inputs", "model", "artifacts", "end"):
                # Everything before them goes first: a model copies the run's params, the
                # end waits for every metric.
                self._log(params, tags, metrics)
                params, tags, metrics = {}, {}, []
                getattr(self, f"_apply_{kind}")(record)
        self._log(params, tags, metrics)

    # -- metrics ----------------------------------------------------------------------
    def _epoch_metrics(self, record: Mapping[str, Any]) -> list[Metric]:
        keys, rows = list(record["keys"]), epoch_rows(record)
        self._keys = keys
        if not len(rows):
            return []
        self._last_row = rows[-1]
        if "val_loss" in keys:  # the best epoch: the first with the lowest val_loss
            column = rows[:, keys.index("val_loss") + 2]
            finite = np.where(np.isfinite(column), column, np.inf)
            best = int(np.argmin(finite))
            if np.isfinite(finite[best]) and (self._best is None or finite[best] < self._best[0]):
                self._best = (float(finite[best]), rows[best])
        first, stride = self.thinning.first, self.thinning.stride
        chosen = rows if stride == 1 else rows[(rows[:, 0] - first) % stride == 0]
        return self._rows_to_metrics(keys, chosen)

    def _rows_to_metrics(self, keys: Sequence[str], rows: Iterable[Sequence[float]]
                         ) -> list[Metric]:
        metrics = []
        for row in rows:
            step, stamp, *values = (row.tolist() if isinstance(row, np.ndarray) else row)
            metrics += [Metric(key, value, int(stamp), int(step))
                        for key, value in zip(keys, values, strict=True)]
        return metrics

    def _single_metrics(self, record: Mapping[str, Any]) -> list[Metric]:
        name, digest = record.get("dataset") or (None, None)
        model_id = self.model_id if record.get("of_model") else None
        return [Metric(key, float(value), int(record["time_ms"]), int(record.get("step") or 0),
                       model_id=model_id, dataset_name=name, dataset_digest=digest)
                for key, value in record["values"].items()]

    def _log(self, params: Mapping[str, str], tags: Mapping[str, str],
             metrics: Sequence[Metric]) -> None:
        run_id, client = self.run_id, self.client
        entries: list[Param | RunTag] = [Param(k, v) for k, v in params.items()]
        entries += [RunTag(k, v) for k, v in tags.items()]
        for chunk in _chunks(entries, MAX_PARAMS_AND_TAGS_PER_CALL):
            batch_params = [e for e in chunk if isinstance(e, Param)]
            batch_tags = [e for e in chunk if isinstance(e, RunTag)]
            self._call("log params and tags", lambda p=batch_params, t=batch_tags:
                            client.log_batch(run_id, params=p, tags=t))
        for chunk in _chunks(metrics, MAX_METRICS_PER_CALL):
            self._call("log metrics", lambda c=chunk: client.log_batch(run_id,
                                                                            metrics=list(c)))

    # -- the other records ------------------------------------------------------------
    def _apply_inputs(self, record: Mapping[str, Any]) -> None:
        inputs = []
        for item in record["datasets"]:
            dataset = Dataset(name=item["name"], digest=item["digest"],
                              source_type=item["source_type"], source=item["source"],
                              schema=item.get("schema"), profile=item.get("profile"))
            tag = InputTag(key="mlflow.data.context", value=item["context"])
            inputs.append(DatasetInput(dataset=dataset, tags=[tag]))
        # Two jobs logging the same dataset at once: the loser's retry finds the winner's.
        self._call("log the input datasets",
                        lambda: self.client.log_inputs(self.run_id, datasets=inputs))

    def _apply_model(self, record: Mapping[str, Any]) -> None:
        if not Path(record["checkpoint"]).is_file():
            return  # a cleaned outputs folder: nothing left to log the model from
        existing = logged_model_id(self.store, self.experiment_id, self.run_id,
                                   budget_s=self.budget_s)
        self.model_id = existing or log_model(
            self.store, self.experiment_id, self.run_id, Path(record["checkpoint"]),
            record["features"], record["classes"], budget_s=self.budget_s)
        self._log({}, {names.MODEL_LOGGED_TAG: "true"}, [])

    def _apply_artifacts(self, record: Mapping[str, Any]) -> None:
        path, dest = Path(record["path"]), record.get("dest")
        if path.is_dir():
            self._call(f"log the artifacts in {path}", lambda: self.client.log_artifacts(
                self.run_id, str(path), dest))
        elif path.is_file():
            self._call(f"log the artifact {path}", lambda: self.client.log_artifact(
                self.run_id, str(path), dest))
        # A path that is gone (a cleaned outputs folder) has nothing left to send.

    def _apply_end(self, record: Mapping[str, Any]) -> None:
        """The last and best epochs (kept by every thinning), the history artifact, the
        status."""
        extra = {int(row[0]): row for row in (self._last_row, self._best and self._best[1])
                 if row is not None and not self.thinning.keeps(int(row[0]))}
        self._log({}, {}, self._rows_to_metrics(self._keys, extra.values()))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = write_history_csv(read_journal(self.journal),
                                         Path(tmp) / HISTORY_ARTIFACT)
                if path is not None:
                    self._call("log the history artifact",
                               lambda: self.client.log_artifact(self.run_id, str(path)))
        except (OSError, JournalError) as error:  # the journal's disk, not the store
            raise StoreError(f"tracking: could not write {HISTORY_ARTIFACT} from the journal "
                             f"{self.journal}: {getattr(error, 'strerror', None) or error}"
                             ) from error
        status, error = str(record["status"]), record.get("error")
        if error:
            self._log({}, {names.ERROR_TAG: str(error)}, [])
        run = self._call("read the run", lambda: self.client.get_run(self.run_id))
        if not error and names.ERROR_TAG in run.data.tags:
            # "incomplete record" until now, or a status someone else gave it (clean-runs
            # took it for dead): the run's own end holds.
            self._call("clear the run's error", lambda: self.client.delete_tag(
                self.run_id, names.ERROR_TAG))
        if run.info.status != status or run.info.end_time is None:
            self._call(f"end the run {status}", lambda: self.client.set_terminated(
                self.run_id, status=status, end_time=int(record["time_ms"])))
        if names.HEARTBEAT_TAG in run.data.tags:  # only a live run has one
            self._call("drop the heartbeat", lambda: self.client.delete_tag(
                self.run_id, names.HEARTBEAT_TAG))
