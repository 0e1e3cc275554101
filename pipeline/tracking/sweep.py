"""A sweep's parent run: created before any job, alive (heartbeat) while the jobs run,
summarised and ended when they are done.

Like a run, the parent has a journal (``<sweep dir>/journal.jsonl``): with
``tracking.mode=offline`` it is the whole parent, and ``pipeline.sync`` of the sweep
folder creates it, sends every job under it and writes the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

from pipeline.tracking import record as names
from pipeline.tracking.journal import JOURNAL_NAME, JournalWriter, new_journal_id, now_ms
from pipeline.tracking.recorder import Heartbeat, context_tags, sync_command, write_sync_state
from pipeline.tracking.runs import run_url
from pipeline.tracking.store import Store, StoreError, experiment_id, open_store, store_uri
from pipeline.tracking.summary import Counts, summarise

log = logging.getLogger("pipeline.sweep")


class SweepParent:
    """The parent run of one sweep (and its journal)."""

    def __init__(self, *, uri: str | None, experiment: str, name: str, tags: Mapping[str, str],
                 metric: str, direction: str, sweep_dir: Path, offline: bool) -> None:
        self.metric, self.direction, self.sweep_dir = metric, direction, sweep_dir
        self.journal_id = new_journal_id()
        self.store: Store | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        all_tags = {**{str(k): str(v) for k, v in tags.items()}, names.SWEEP_TAG: "parent",
                    names.JOURNAL_ID_TAG: self.journal_id,
                    names.JOURNAL_TAG: str(sweep_dir / JOURNAL_NAME)}
        start_ms = now_ms()
        if not offline:
            self.store = store = open_store(uri)
            self.experiment_id = exp_id = experiment_id(store, experiment)
            all_tags = context_tags(all_tags, None)
            created = {**all_tags, names.HEARTBEAT_TAG: str(start_ms // 1000)}
            run = store.call("create the sweep's parent run", lambda: store.client.create_run(
                exp_id, run_name=name, start_time=start_ms, tags=created))
            self.run_id = run.info.run_id
        self.journal = JournalWriter(sweep_dir / JOURNAL_NAME, {
            "journal_id": self.journal_id, "uri": self.store.uri if self.store else store_uri(uri),
            "experiment": experiment, "run_id": self.run_id, "run_name": name,
            "parent_run_id": None, "parent_journal_id": None, "time_ms": start_ms,
            "tags": all_tags, "sweep": {"metric": metric, "direction": direction},
        })
        self._heartbeat = Heartbeat(self.store, self.run_id) if self.store and self.run_id else None

    @property
    def url(self) -> str | None:
        if self.store is None or self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.store.uri, self.experiment_id, self.run_id)

    def finish(self, *, aborted: bool = False, interrupted: bool = False) -> Counts | None:
        """Summarise the children onto the parent and end it.

        Status: KILLED when ``interrupted``, FAILED when a job failed or ``aborted``, else
        FINISHED. Returns the children's counts (None offline or when the store failed).
        """
        if self._heartbeat is not None:
            self._heartbeat.stop()
        counts = None
        error = None
        if self.store is not None and self.run_id is not None and self.experiment_id:
            try:
                counts = summarise(self.store, self.experiment_id, self.run_id, self.metric,
                                   self.direction, plots=not interrupted)
            except StoreError as problem:
                error = f"summary failed: {problem}; {sync_command(self.journal.path)} writes it"
                log.warning("%s", error)
        failed = aborted or error is not None or (counts is not None and counts.failed > 0)
        status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
        if counts is not None and counts.failed and not interrupted:
            error = f"{counts.failed} job(s) failed"
        if interrupted:
            error = "sweep interrupted" + (
                f": {counts.children} job(s) started, {counts.killed} killed" if counts else "")
        with contextlib.suppress(OSError):
            self.journal.append(names.end_record(status, error))
            self.journal.close()
        if self.store is not None and self.run_id is not None:
            ended = end_parent(self.store, self.run_id, status, error)
            if ended and counts is not None:  # the parent is whole in the store
                with contextlib.suppress(OSError):
                    write_sync_state(self.journal.path, {"uri": self.store.uri,
                                                         "run_id": self.run_id,
                                                         "complete": True})
        where = f" ({self.url})" if self.url else ""
        log.info("sweep parent run %s %s%s", self.run_id or "(offline)", status, where)
        return counts


def end_parent(store: Store, run_id: str, status: str, error: str | None) -> bool:
    """Set the parent's final status (and error); False (and a log line) if the store
    failed."""
    from mlflow.entities import RunTag

    try:
        if error:
            store.call("tag the sweep's parent run", lambda: store.client.log_batch(
                run_id, tags=[RunTag(names.ERROR_TAG, error[:8000])]), budget_s=10.0)
        store.call("end the sweep's parent run", lambda: store.client.set_terminated(
            run_id, status=status), budget_s=10.0)
    except StoreError as problem:
        log.warning("%s", problem)
        return False
    return True
