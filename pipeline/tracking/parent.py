"""A sweep's parent run: created before any job (or taken over to resume a sweep), alive
(heartbeat) while the jobs run, summarised and ended when they are done.

Like a run, the parent has a journal (``<sweep dir>/journal.jsonl``): with
``tracking.mode=offline`` it is the whole parent, and ``pipeline.commands.sync`` of the sweep
folder creates it, sends every job under it and writes the summary. Its end record keeps
how the sweep ended besides its jobs (:class:`ParentEnding`: interrupted, stopped early,
jobs not started), so that a sync that sends a job later decides the parent's status
with the new counts exactly as the sweep would have.

The jobs ask the store two things here before they start: whether their configuration
already finished under the parent (a resumed sweep keeps it) and how many jobs failed
since the sweep started (``sweep.max_failures``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.tracking import record as names
from pipeline.tracking.journal import JOURNAL_NAME, JournalWriter, new_journal_id, now_ms
from pipeline.tracking.recorder import (
    Heartbeat,
    context_tags,
    hold_while_alive,
    sync_command,
    write_sync_state,
)
from pipeline.tracking.runs import compare_url, run_url
from pipeline.tracking.store import (
    Store,
    StoreError,
    end_run,
    experiment_id,
    open_store,
    store_uri,
)
from pipeline.tracking.summary import (
    SEARCH_SPACE_TAG,
    TIE_METRIC_TAG,
    Counts,
    Summary,
    best_run,
    identity_keys,
    log_new_params,
    summarise,
    sweep_params,
    swept_keys,
)

log = logging.getLogger("pipeline.sweep")

COMPARE_AT_MOST = 50  # runs on the printed compare page


@dataclass(frozen=True)
class PastSweep:
    """A sweep's parent run found in the store, to resume."""

    run_id: str
    experiment_id: str
    experiment: str
    status: str
    overrides: list[str] | None  # None: recorded before overrides were kept
    sweeper: str | None
    finished: int  # configurations that FINISHED under it


def find_sweep(uri: str | None, experiment: str, which: str) -> PastSweep:
    """The parent run ``which`` (a run id, or ``last``: the newest parent in
    ``experiment``), checked to be a sweep's parent that is no longer alive.

    Raises :class:`PipelineError` (one line) otherwise.
    """
    store = open_store(uri)
    client = store.client
    if which == "last":
        exp = store.call("find the experiment", lambda: client.get_experiment_by_name(experiment))
        runs = [] if exp is None else store.call("find the last sweep", lambda: client.search_runs(
            [exp.experiment_id], filter_string=f"tags.{names.SWEEP_TAG} = 'parent'",
            order_by=["attributes.start_time DESC"], max_results=1))
        if not runs:
            raise PipelineError(f"sweep.resume=last: no sweep in experiment {experiment!r} of "
                                f"{store.uri}; pass a parent run id or check tracking.experiment")
        run = runs[0]
    else:
        try:
            run = client.get_run(which)
        except Exception:
            raise PipelineError(f"sweep.resume: run {which!r} is not in {store.uri}; copy the "
                                "sweep's parent run id from the MLflow UI, or use "
                                "sweep.resume=last") from None
    tags = run.data.tags
    if tags.get(names.SWEEP_TAG) != "parent":
        raise PipelineError(f"sweep.resume: run {run.info.run_id} is not a sweep's parent run "
                            "(no tag sweep=parent); pass the parent's id, or sweep.resume=last")
    exp_name = client.get_experiment(run.info.experiment_id).name
    if exp_name != experiment:
        raise PipelineError(f"sweep.resume: run {run.info.run_id} is in experiment {exp_name!r}, "
                            f"this sweep records to {experiment!r}; add "
                            f"tracking.experiment={exp_name}")
    if run.info.status == "RUNNING" and _alive(tags):
        raise PipelineError(f"sweep.resume: sweep {run.info.run_id} is still running; stop it "
                            "first (Ctrl-C), or wait for it to end")
    stored = tags.get(names.SWEEP_OVERRIDES_TAG)
    parent_id = run.info.run_id
    done = store.call("count the finished jobs", lambda: client.search_runs(
        [run.info.experiment_id], filter_string=(f"tags.`{names.PARENT_TAG}` = '{parent_id}' "
                                                 "and attributes.status = 'FINISHED'"),
        max_results=10000))
    digests = {r.data.tags.get(names.CONFIG_DIGEST_TAG, r.info.run_id) for r in done}
    return PastSweep(parent_id, run.info.experiment_id, exp_name, run.info.status,
                     json.loads(stored) if stored else None, tags.get(names.SWEEPER_TAG),
                     len(digests))


def _alive(tags: Mapping[str, str]) -> bool:
    """Whether the sweep that owns a RUNNING parent still runs: its journal is locked by a
    live process, else (journal elsewhere) its heartbeat is recent."""
    journal = Path(tags.get(names.JOURNAL_TAG, ""))
    if journal.is_file():
        try:
            with open(journal, "rb") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        except OSError:
            pass
    beat = tags.get(names.HEARTBEAT_TAG)
    return beat is not None and time.time() - float(beat) < names.LIVE_WITHIN_S


def finished_child(uri: str | None, parent_id: str, digest: str, *, wait_s: float = 60.0,
                   params: Mapping[str, str] | None = None
                   ) -> tuple[str, dict[str, float]] | None:
    """A FINISHED child of ``parent_id`` with configuration digest ``digest`` (and these
    ``params``: the swept keys the digest leaves out): its id and final metrics (None if
    there is none).

    An attempt at the same configuration that is still alive (a worker of the sweep that
    died, finishing its job) is waited for, up to ``wait_s``, so that a resumed sweep does
    not run it twice.
    """
    store = open_store(uri)
    experiment = store.client.get_run(parent_id).info.experiment_id
    deadline = time.monotonic() + wait_s
    while True:
        runs = store.call("look for a finished job", lambda: store.client.search_runs(
            [experiment], filter_string=(f"tags.`{names.PARENT_TAG}` = '{parent_id}' and "
                                         f"tags.{names.CONFIG_DIGEST_TAG} = '{digest}'"),
            order_by=["attributes.start_time DESC"], max_results=100))
        runs = [r for r in runs if all(r.data.params.get(k) == v
                                       for k, v in (params or {}).items())]
        done = [r for r in runs if r.info.status == "FINISHED"]
        if done:
            return done[0].info.run_id, dict(done[0].data.metrics)
        live = [r for r in runs if r.info.status == "RUNNING" and _alive(r.data.tags)]
        if not live or time.monotonic() > deadline:
            return None
        log.info("waiting for run %s, which runs this configuration still", live[0].info.run_id)
        time.sleep(1.0)


def record_failed_job(*, uri: str | None, experiment: str, parent_run_id: str,
                      overrides: list[str], error: str) -> str:
    """A FAILED child run of ``parent_run_id`` for a job that could not start (its config
    is invalid): named after its overrides, with the error tag. Returns its run id."""
    store = open_store(uri)
    exp_id = experiment_id(store, experiment)
    name = ("job " + " ".join(overrides))[:250]
    tags = context_tags({names.ERROR_TAG: error[:8000], "overrides": " ".join(overrides)[:5000]},
                        parent_run_id)
    run = store.call("record the failed job", lambda: store.client.create_run(
        exp_id, run_name=name, start_time=now_ms(), tags=tags))
    end_run(store, run.info.run_id, "FAILED", end_time=now_ms())
    return str(run.info.run_id)


def failed_children(uri: str | None, parent_id: str, since_ms: int) -> int:
    """How many children of ``parent_id`` started at or after ``since_ms`` ended FAILED."""
    store = open_store(uri)
    runs = store.call("count the failed jobs", lambda: store.client.search_runs(
        [store.client.get_run(parent_id).info.experiment_id],
        filter_string=(f"tags.`{names.PARENT_TAG}` = '{parent_id}' and "
                       f"attributes.start_time >= {since_ms} and attributes.status = 'FAILED'"),
        max_results=10000))
    return len(runs)


class SweepParent:
    """The parent run of one sweep (and its journal)."""

    def __init__(self, *, uri: str | None, experiment: str, name: str, tags: Mapping[str, str],
                 metric: str, direction: str, sweep_dir: Path, offline: bool,
                 resume: PastSweep | None = None, tie_metric: str | None = None,
                 search_space: Mapping[str, str] | None = None,
                 ui_url: str | None = None) -> None:
        self.metric, self.direction, self.sweep_dir = metric, direction, sweep_dir
        self.tie_metric = tie_metric
        self.ui_url = ui_url  # tracking.ui_url: the links' base address (None: the store's)
        self.journal_id = new_journal_id()
        self.tags: dict[str, str] = {}
        self.store: Store | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        all_tags = {**{str(k): str(v) for k, v in tags.items()}, names.SWEEP_TAG: "parent",
                    names.JOURNAL_ID_TAG: self.journal_id,
                    names.JOURNAL_TAG: str(sweep_dir / JOURNAL_NAME)}
        # What the sweep ranks by and what it searches: read back by its summary (here, or
        # from the journal by a sync).
        if tie_metric:
            all_tags[TIE_METRIC_TAG] = tie_metric
        if search_space:
            all_tags[SEARCH_SPACE_TAG] = json.dumps(dict(search_space))[:8000]
        self.tags = all_tags
        start_ms = now_ms()
        if not offline:
            self.store = store = open_store(uri)
            self.experiment_id = exp_id = experiment_id(store, experiment)
            all_tags = context_tags(all_tags, None)
            created = {**all_tags, names.HEARTBEAT_TAG: str(start_ms // 1000)}
            if resume is not None:
                self.run_id = resume.run_id
                self._take_over(resume, created)
            else:
                run = store.call("create the sweep's parent run", lambda: store.client.create_run(
                    exp_id, run_name=name, start_time=start_ms, tags=created))
                self.run_id = run.info.run_id
            # Its row in the runs table shows what the sweep varies and keeps fixed.
            log_new_params(store, self.run_id, sweep_params(all_tags, self._settings()),
                           store.client.get_run(self.run_id).data.params
                           if resume is not None else {})
        self.journal = JournalWriter(sweep_dir / JOURNAL_NAME, {
            "journal_id": self.journal_id, "uri": self.store.uri if self.store else store_uri(uri),
            "experiment": experiment, "run_id": self.run_id, "run_name": name,
            "parent_run_id": None, "parent_journal_id": None, "time_ms": start_ms,
            "tags": all_tags, "sweep": {"metric": metric, "direction": direction,
                                        "tie_metric": tie_metric},
        })
        # Held until the sweep ends or its process dies: a resume (or sync) of a sweep that
        # still runs sees it and refuses.
        self._alive = hold_while_alive(self.journal.path)
        self._heartbeat = Heartbeat(self.store, self.run_id) if self.store and self.run_id else None
        self.status = "RUNNING"

    def _settings(self) -> dict[str, str]:
        """The sweep's own settings, as the parent's params."""
        settings = {"sweep.metric": self.metric, "sweep.direction": self.direction}
        if self.tie_metric:
            settings["sweep.tie_metric"] = self.tie_metric
        return settings

    def _take_over(self, past: PastSweep, tags: Mapping[str, str]) -> None:
        """Make a past sweep's parent this sweep's: RUNNING again, with this journal and a
        fresh heartbeat, its last error cleared, its dead jobs ended."""
        from mlflow.entities import RunTag

        store, run_id = self.store, past.run_id
        assert store is not None
        keep = {k: v for k, v in tags.items() if not k.startswith("mlflow.") and k != "sweep_dir"}
        keep["resumed_in"] = str(self.sweep_dir)  # the first run's folder stays in sweep_dir
        if past.status != "RUNNING":
            store.call("reopen the sweep's parent run", lambda: store.client.update_run(
                run_id, status="RUNNING"))
        with contextlib.suppress(Exception):
            store.client.delete_tag(run_id, names.ERROR_TAG)
        self._end_dead_children(run_id)
        store.call("tag the sweep's parent run", lambda: store.client.log_batch(
            run_id, tags=[RunTag(k, str(v)[:8000]) for k, v in keep.items()]))

    def _end_dead_children(self, parent_id: str) -> None:
        """Children left RUNNING by the sweep that died end KILLED, and those that died
        before recording their config are marked superseded (their jobs run again)."""
        from mlflow.entities import RunTag

        store = self.store
        assert store is not None and self.experiment_id is not None
        children = store.call("list the sweep's jobs", lambda: store.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{names.PARENT_TAG}` = '{parent_id}'",
            max_results=10000))
        for run in children:
            child, tags = run.info.run_id, run.data.tags
            dead = run.info.status == "RUNNING" and not _alive(tags)
            blank = run.info.status != "FINISHED" and names.CONFIG_DIGEST_TAG not in tags
            if not (dead or blank) or names.ENDED_BY_RESUME_TAG in tags:
                continue
            marks = [RunTag(names.ENDED_BY_RESUME_TAG, self.sweep_dir.name)]
            if dead:
                marks.append(RunTag(names.ERROR_TAG, "killed with its sweep; the resumed sweep "
                                                     "runs its configuration again"))
            store.call("mark a job of the sweep that died", lambda c=child, m=marks: store
                       .client.log_batch(c, tags=m))
            if dead:
                end_run(store, child, "KILLED")

    @property
    def url(self) -> str | None:
        return self.url_of(self.run_id)

    def url_of(self, run_id: str | None) -> str | None:
        """The UI page of run ``run_id`` of this sweep's experiment (None offline)."""
        if self.store is None or run_id is None or self.experiment_id is None:
            return None
        return run_url(self.store.uri, self.experiment_id, run_id, self.ui_url)

    @property
    def identity(self) -> list[str]:
        """The swept keys that tell its jobs apart besides their config digest."""
        return identity_keys(swept_keys(self.tags))

    def best_run(self) -> tuple[str, str] | None:
        """The run the summary would pick now, as (run id, output folder); None offline
        or before any run finished."""
        if self.store is None or self.run_id is None or self.experiment_id is None:
            return None
        return best_run(self.store, self.experiment_id, self.run_id, self.metric,
                        self.direction, self.tie_metric)

    def compare_url(self, run_ids: list[str]) -> str | None:
        """The UI's comparison of the first :data:`COMPARE_AT_MOST` of ``run_ids``."""
        if self.store is None or self.experiment_id is None or not run_ids:
            return None
        return compare_url(self.store.uri, [self.experiment_id], run_ids[:COMPARE_AT_MOST],
                           self.ui_url)

    def finish(self, *, aborted: bool = False, interrupted: bool = False,
               not_started: int = 0, max_failures: int | None = None,
               on_best: Callable[[str], None] | None = None,
               error: str | None = None) -> Summary | None:
        """Summarise the children onto the parent and end it (``error``: the line an
        aborted sweep stopped on, its ``error`` tag).

        Status: KILLED when ``interrupted``, FAILED when a job failed or ``aborted``, else
        FINISHED; ``not_started`` jobs were skipped once ``max_failures`` jobs had failed.
        Returns the summary (None offline or when the store failed). ``on_best``: see
        :func:`~pipeline.tracking.summary.summarise`.
        """
        if self._heartbeat is not None:
            self._heartbeat.stop()
        summary = None
        stopped_on, error = error, None
        if self.store is not None and self.run_id is not None and self.experiment_id:
            try:
                summary = summarise(self.store, self.experiment_id, self.run_id, self.metric,
                                    self.direction, tie_metric=self.tie_metric,
                                    plots=not interrupted, on_best=on_best)
            except StoreError as problem:
                error = f"summary failed: {problem}; {sync_command(self.journal.path)} writes it"
                log.warning("%s", error)
            except Exception as problem:  # never leave the parent RUNNING over a summary
                error = f"summary failed: {type(problem).__name__}: {problem}"
                log.warning("%s", error, exc_info=True)
        counts = summary.counts if summary is not None else None
        ending = ParentEnding(aborted=aborted, interrupted=interrupted,
                              not_started=not_started, max_failures=max_failures,
                              stopped_on=stopped_on)
        status, error = ending.outcome(counts, summary_error=error)
        with contextlib.suppress(OSError):
            self.journal.append(ending.record(status, error, counts))
        with contextlib.suppress(OSError):
            self.journal.close()
        self._alive.close()
        if self.store is not None and self.run_id is not None:
            ended = end_parent(self.store, self.run_id, status, error)
            if ended and counts is not None:  # the parent is whole in the store
                with contextlib.suppress(OSError):
                    write_sync_state(self.journal.path, {"uri": self.store.uri,
                                                         "run_id": self.run_id,
                                                         "complete": True})
        self.status = status
        return summary


@dataclass(frozen=True)
class ParentEnding:
    """How a sweep ended, apart from its children: what decides the parent's status with
    the children's counts. Kept in the parent's ``end`` record, so that ``pipeline.commands.sync``
    decides the same way when a child's status changes later."""

    aborted: bool = False  # the sweep stopped early (a job ended it)
    interrupted: bool = False  # Ctrl-C or SIGTERM, or the launcher died
    not_started: int = 0  # jobs sweep.max_failures kept from starting
    max_failures: int | None = None
    died: bool = False  # no end record: the launcher was killed
    stopped_on: str | None = None  # the error an aborted sweep stopped on, if it had one

    @classmethod
    def of(cls, end: Mapping[str, Any] | None) -> ParentEnding:
        """The ending an ``end`` record holds (None: the launcher died before writing one;
        older records without the fields: read from the error)."""
        if end is None:
            return cls(interrupted=True, died=True)
        not_started = end.get("not_started")
        if not_started is None:
            found = re.search(r"(\d+) job\(s\) not started", str(end.get("error") or ""))
            not_started = int(found.group(1)) if found else 0
        stopped_on = end.get("stopped_on")
        return cls(aborted=bool(end.get("aborted")), interrupted=end["status"] == "KILLED",
                   not_started=int(not_started), max_failures=end.get("max_failures"),
                   stopped_on=str(stopped_on)[:8000] if stopped_on else None)

    def outcome(self, counts: Counts | None, *, summary_error: str | None = None
                ) -> tuple[str, str | None]:
        """The parent's status and error, given its children's ``counts`` (None: unknown,
        the store failed or the sweep ran offline)."""
        failed = (self.aborted or summary_error is not None or self.not_started > 0
                  or (counts is not None and counts.failed > 0))
        status = "KILLED" if self.interrupted else "FAILED" if failed else "FINISHED"
        error = summary_error
        if self.interrupted:
            what = ("the sweep's process ended without closing it (killed?)" if self.died
                    else "sweep interrupted")
            return status, what + (
                f": {counts.children} job(s) started, {counts.killed} killed" if counts else "")
        if counts is not None and counts.failed:
            error = f"{counts.failed} job(s) failed"
        if self.not_started:
            error = (f"{error or 'jobs failed'}; sweep.max_failures={self.max_failures} "
                     f"reached: {self.not_started} job(s) not started")
        if self.aborted and error is None:
            error = self.stopped_on or "the sweep stopped before its end (see its output)"
        return status, error

    def record(self, status: str, error: str | None, counts: Counts | None
               ) -> dict[str, Any]:
        """The parent's ``end`` record."""
        record = {**names.end_record(status, error), "aborted": self.aborted,
                  "not_started": self.not_started, "max_failures": self.max_failures,
                  "stopped_on": self.stopped_on}
        if counts is not None:
            record["counts"] = {"children": counts.children, "failed": counts.failed,
                                "killed": counts.killed}
        return record


def end_parent(store: Store, run_id: str, status: str, error: str | None, *,
               end_time: int | None = None) -> bool:
    """Set the parent's final status and error (no error: no ``error`` tag); False (and a
    log line) if the store failed."""
    from mlflow.entities import RunTag

    try:
        if error:
            store.call("tag the sweep's parent run", lambda: store.client.log_batch(
                run_id, tags=[RunTag(names.ERROR_TAG, error[:8000])]), budget_s=10.0)
        else:
            run = store.call("read the sweep's parent run", lambda: store.client.get_run(
                run_id), budget_s=10.0)
            if names.ERROR_TAG in run.data.tags:
                store.call("clear the sweep's error", lambda: store.client.delete_tag(
                    run_id, names.ERROR_TAG), budget_s=10.0)
        end_run(store, run_id, status, end_time=end_time, budget_s=10.0)
    except StoreError as problem:
        log.warning("%s", problem)
        return False
    return True
