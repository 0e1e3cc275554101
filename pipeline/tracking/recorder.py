"""A live run: journal first, the store in the background, a heartbeat, a final status.

The training loop only appends each epoch's metrics to an in-memory float buffer. A
background thread moves the buffer into the journal twice a second and ships the
journal's new records to the store every 15 s, or less often when sending them would
take more than a small share of the time: MLflow's writes are Python work that holds
the GIL the training loop needs (the store gets at most ``max_points`` points per
metric, see :mod:`pipeline.tracking.thinning`). When the
store stops answering, the run goes on: the thread says so once, keeps journaling,
and tries the store again now and then. At the end the rest is shipped; if the store
still fails, the run ends with one line naming the journal and the command that sends it.

A second thread refreshes the run's heartbeat tag every 15 s for as long as the process
lives, so ``make clean-runs`` can tell a live run from one whose process was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pipeline.tracking import record as names
from pipeline.tracking.journal import (
    JOURNAL_NAME,
    JournalWriter,
    epochs_record,
    new_journal_id,
    now_ms,
)
from pipeline.tracking.shipper import Shipper
from pipeline.tracking.store import Store, StoreError, end_run

log = logging.getLogger("pipeline.tracking")

JOURNAL_INTERVAL_S = 0.5  # epochs reach the journal at least this often
SHIP_INTERVAL_S = 15.0  # new records reach the store at least this often...
LIVE_SHARE = 0.03  # ... unless sending them would take more than this share of the time
FSYNC_INTERVAL_S = 5.0
RETRY_INTERVAL_S = 20.0  # a store that failed is tried again after this
HEARTBEAT_INTERVAL_S = 15.0
LIVE_BUDGET_S = 5.0  # retries of one store call while training goes on
FINAL_BUDGET_S = 20.0  # ... when the run ends normally
FAILING_BUDGET_S = 5.0  # ... when it ends while the store is failing
INTERRUPT_BUDGET_S = 2.5  # ... when it was interrupted (the process must exit in seconds)


def sync_state_path(journal: Path) -> Path:
    """Beside a journal: which store and run it was sent to, and whether completely."""
    return journal.with_name(journal.name + ".sent")


def sync_command(journal: Path) -> str:
    return f"make sync DIR={journal.parent}"


def write_sync_state(journal: Path, state: Mapping[str, Any]) -> None:
    from pipeline.datastore import write_text_atomic

    write_text_atomic(sync_state_path(journal), json.dumps(dict(state)))


class Heartbeat:
    """Sets ``pipeline.heartbeat`` (unix seconds) on a run every 15 s until stopped, unless
    ``paused()`` says the store is failing (the recorder reports that, and retries).

    One thread per process beats for every live run in it (a sweep's launcher runs its
    parent and one job after another): a run costs no thread of its own.
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _live: ClassVar[list[Heartbeat]] = []
    _thread: ClassVar[threading.Thread | None] = None

    def __init__(self, store: Store, run_id: str,
                 paused: Callable[[], bool] = lambda: False) -> None:
        self.store, self.run_id, self.paused = store, run_id, paused
        self._beating = threading.Lock()  # held while a beat is on its way
        self._stopped = False
        with Heartbeat._lock:
            Heartbeat._live.append(self)
            if Heartbeat._thread is None or not Heartbeat._thread.is_alive():
                Heartbeat._thread = threading.Thread(target=Heartbeat._beat_all,
                                                     name="heartbeat", daemon=True)
                Heartbeat._thread.start()

    @classmethod
    def _beat_all(cls) -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL_S)
            with cls._lock:
                live = list(cls._live)
            for beat in live:
                beat._beat()

    def _beat(self) -> None:
        from mlflow.entities import RunTag

        with self._beating:
            if self._stopped or self.paused():
                return
            tags = [RunTag(names.HEARTBEAT_TAG, str(int(time.time())))]
            with contextlib.suppress(Exception):  # the shipper reports a failing store
                self.store.call("refresh the heartbeat", lambda: self.store.client.log_batch(
                    self.run_id, tags=tags), budget_s=LIVE_BUDGET_S)

    def stop(self) -> None:
        """Stop, letting a beat already on its way land first: the run's end drops the tag,
        and a late beat must not bring it back."""
        with Heartbeat._lock:
            if self in Heartbeat._live:
                Heartbeat._live.remove(self)
        landed = self._beating.acquire(timeout=1.0)  # one stuck on a failing store is not
        self._stopped = True                           # waited for
        if landed:
            self._beating.release()


class Recorder:
    """Records one run: every record journaled, then shipped to the store (if any)."""

    def __init__(self, journal: JournalWriter, store: Store | None, run_id: str | None,
                 experiment_id: str | None, *, max_points: int | None, log_model: bool) -> None:
        self.journal = journal
        self.store, self.run_id, self.experiment_id = store, run_id, experiment_id
        self.max_points, self.log_model = max_points, log_model
        # Epochs not yet journaled: flat float64 rows [step, time_ms, *values] of the metric
        # names in _keys (no Python object per epoch: nothing for the GC to walk).
        self._epoch_lock = threading.Lock()
        self._keys: list[str] = []
        self._buffer: array[float] = array("d")  # whole rows: step, time, one per key
        self._filled: list[dict[str, Any]] = []  # records closed when the names changed
        self._order = threading.Lock()  # journal order = the order records were made
        self._shipping = threading.Lock()  # one batch in flight at a time
        self._alive = hold_while_alive(journal.path)
        self._unshipped: list[dict[str, Any]] = []
        self._shipper = (Shipper(store, run_id, experiment_id, journal.path)
                         if store is not None and run_id is not None and experiment_id else None)
        self._failure: StoreError | None = None
        self._retry_at = 0.0
        self._ended = False
        self._stop = threading.Event()
        self._kick = threading.Event()  # ship now, not at the next interval
        self._heartbeat = (Heartbeat(store, run_id, lambda: self._failure is not None)
                           if store is not None and run_id else None)
        self._thread = threading.Thread(target=self._loop, name="journal-shipper", daemon=True)
        self._thread.start()

    @property
    def journal_path(self) -> Path:
        return self.journal.path

    @property
    def store_uri(self) -> str | None:
        """The store the run goes to (None offline)."""
        return self.store.uri if self.store is not None else None

    @property
    def model_id(self) -> str | None:
        """The id of the model logged for the run (None: none logged, or not yet)."""
        return self._shipper.model_id if self._shipper is not None else None

    @property
    def url(self) -> str | None:
        """The run's page in the MLflow UI (None offline)."""
        from pipeline.tracking.runs import run_url

        if self.store is None or self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.store.uri, self.experiment_id, self.run_id)

    # -- what the runner reports ------------------------------------------------------
    def describe(self, spec: names.RunSpec) -> None:
        self.add(names.spec_records(spec))

    def data_prepared(self, data: names.DataSummary) -> None:
        self.add(names.data_records(data))

    def training_started(self, plan: names.TrainingPlan) -> None:
        self.add(names.plan_records(plan, self.max_points))

    def log_epoch(self, step: int, metrics: Mapping[str, float], _model: Any = None) -> None:
        """One epoch's metrics (the training loop's hot path: three appends to a float
        buffer). The signature is a training callback's: ``(epoch, metrics, model)``."""
        with self._epoch_lock:
            if len(metrics) != len(self._keys) or list(metrics) != self._keys:
                self._start_keys(list(metrics))
            # One call adds the whole row: Ctrl-C or SIGTERM, whose handler runs between
            # Python steps, never leaves half a row behind for the run's end to record.
            self._buffer.extend((step, time.time() * 1000.0, *metrics.values()))

    def _start_keys(self, keys: list[str]) -> None:
        """New metric names: close the rows so far into a record (caller holds the lock)."""
        if self._buffer:
            self._filled.append(epochs_record(self._keys, self._buffer, self._rows()))
        self._keys, self._buffer = keys, array("d")

    def _rows(self) -> int:
        """How many epochs the buffer holds."""
        return len(self._buffer) // (len(self._keys) + 2)

    def record(self, outcome: names.RunOutcome) -> None:
        """Journal the outcome's results and start sending them (its files wait for
        :meth:`finish`, so plots can still be drawn into the artifact folder)."""
        self.add(names.outcome_records(outcome, log_model=self.log_model))
        self._kick.set()

    def plots_drawn(self) -> None:
        """The plots are in the artifact folder (sent with it by :meth:`finish`)."""
        self.add([{"k": "tags", "tags": {names.PLOTS_LOGGED_TAG: "true"}}])

    def finish(self, outcome: names.RunOutcome) -> None:
        """The artifact folder, then FINISHED (see :meth:`end`)."""
        self.end("FINISHED", None, names.artifact_records(outcome),
                 last_epoch=outcome.last_epoch, best_epoch=outcome.best_epoch)

    def fail(self, error: str, checkpoints: Path | None) -> None:
        """End FAILED with ``error``, keeping the checkpoints written so far; never raises
        (a store that fails too is reported in a log line)."""
        self._end_quietly("FAILED", error, checkpoints, interrupted=False)

    def kill(self, reason: str, checkpoints: Path | None) -> None:
        """End KILLED after Ctrl-C or SIGTERM, within seconds; never raises."""
        self._end_quietly("KILLED", reason, checkpoints, interrupted=True)

    def _end_quietly(self, status: str, error: str, checkpoints: Path | None, *,
                     interrupted: bool) -> None:
        try:
            self.end(status, error, names.partial_records(checkpoints), interrupted=interrupted)
        except StoreError as problem:
            log.warning("%s", problem)
        except Exception as problem:  # never let it replace the Ctrl-C or error that ends the run
            log.warning("tracking: ending the run %s failed (%s: %s); its journal %s keeps what "
                        "was recorded", status, type(problem).__name__, problem,
                        self.journal.path)

    def add(self, records: Sequence[dict[str, Any]]) -> None:
        """Journal ``records`` now (after the epochs logged so far) and queue them for the
        store. Raises OSError if the journal cannot be written; the store still gets them."""
        with self._order:
            try:
                self._drain_epochs()
            finally:
                self._unshipped.extend(records)
            self.journal.append_many(list(records))

    def _drain_epochs(self) -> None:
        """Move buffered epochs into ``epochs`` records, queued and journaled (the caller
        holds _order)."""
        with self._epoch_lock:
            records, self._filled = self._filled, []
            if self._buffer:
                records.append(epochs_record(self._keys, self._buffer, self._rows()))
                self._buffer = array("d")
        if records:
            self._unshipped.extend(records)
            self.journal.append_many(records)

    # -- the background thread ----------------------------------------------------------
    def _loop(self) -> None:
        last_ship = last_sync = time.monotonic()
        ship_every = SHIP_INTERVAL_S
        while True:
            kicked = self._kick.wait(JOURNAL_INTERVAL_S)
            if self._stop.is_set():
                return
            try:
                with self._order:
                    self._drain_epochs()
                now = time.monotonic()
                if now - last_sync >= FSYNC_INTERVAL_S:
                    self.journal.sync()
                    last_sync = now
                if kicked or now - last_ship >= ship_every:
                    self._kick.clear()
                    self._ship(LIVE_BUDGET_S)
                    last_ship = time.monotonic()
                    # MLflow's writes are Python work that holds the GIL the training loop
                    # needs: while training runs they get a small share of the time, and
                    # what is left goes when the run ends.
                    ship_every = max(SHIP_INTERVAL_S, (last_ship - now) / LIVE_SHARE)
            except OSError as error:  # the journal's disk: the end of the run reports it
                self._failure = self._failure or StoreError(
                    f"tracking: cannot write the journal {self.journal.path}: "
                    f"{error.strerror or error}")
                return

    def _ship(self, budget_s: float, *, wait_s: float | None = None,
              within_s: float | None = None) -> bool:
        """Send what is unshipped; True when nothing is left. Reports a failure once.

        ``budget_s``: how long one store call may retry; ``wait_s``: how long to wait for a
        batch the background thread has in flight; ``within_s``: no call starts after that.
        """
        if self._shipper is None:
            return not self._unshipped
        if self._failure is not None and time.monotonic() < self._retry_at:
            return False
        if not self._shipping.acquire(timeout=-1 if wait_s is None else wait_s):
            return False
        try:
            with self._order:
                batch = list(self._unshipped)
            if not batch:
                return True
            self._shipper.budget_s = budget_s
            self._shipper.deadline = None if within_s is None else time.monotonic() + within_s
            try:
                self._shipper.apply(batch)
            except StoreError as error:
                if self._failure is None and not self._ended:  # at the end, end() reports it
                    log.warning("%s; the run goes on, its journal %s keeps everything",
                                error, self.journal.path)
                self._failure = error
                self._retry_at = time.monotonic() + RETRY_INTERVAL_S
                return False
            with self._order:
                del self._unshipped[:len(batch)]
            if self._failure is not None:
                log.info("tracking: the MLflow store at %s answers again", self._shipper.store.uri)
            self._failure = None
            return not self._unshipped
        finally:
            self._shipping.release()

    # -- the end ------------------------------------------------------------------------
    def end(self, status: str, error: str | None, records: Sequence[dict[str, Any]] = (),
            *, interrupted: bool = False, last_epoch: int | None = None,
            best_epoch: int | None = None) -> None:
        """Journal ``records`` and the final status, then ship everything.

        Raises :class:`StoreError` (one line: what failed, the journal, the command that
        sends it) when the store did not take the whole run; the run then ends FAILED (or
        KILLED) in the store if it answers at all, never RUNNING.
        """
        if self._ended:
            return
        self._ended = True
        self._stop.set()
        self._kick.set()
        # An interrupted run does not wait for a batch stuck on a failing store.
        self._thread.join(timeout=1.0 if interrupted else None)
        journal_ok = True
        try:
            self.add([*records, names.end_record(status, error, last_epoch=last_epoch,
                                                 best_epoch=best_epoch)])
            self.journal.close()
        except OSError as problem:
            journal_ok = False
            self._failure = self._failure or StoreError(
                f"tracking: cannot write the journal {self.journal.path}: "
                f"{problem.strerror or problem}")
            with contextlib.suppress(OSError):
                self.journal.close()
        self._alive.close()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._shipper is None:  # offline: the journal is the record
            if not journal_ok:
                raise self._failure  # type: ignore[misc]
            return
        if interrupted and self._failure is not None:
            complete = False  # the store already failed: do not hold the exit for it
        else:
            budget = (INTERRUPT_BUDGET_S if interrupted else
                      FAILING_BUDGET_S if self._failure is not None else FINAL_BUDGET_S)
            self._failure, self._retry_at = None, 0.0  # one more try
            try:
                complete = self._ship(budget, wait_s=0.5 if interrupted else None,
                                      within_s=INTERRUPT_BUDGET_S if interrupted else None)
            except KeyboardInterrupt:  # Ctrl-C while sending: the journal has it all
                self._close_incomplete("KILLED", error, interrupted=True)
                log.warning("tracking: interrupted while sending the run; the journal %s holds "
                            "it all: %s", self.journal.path, sync_command(self.journal.path))
                raise
        if complete:
            with contextlib.suppress(OSError):
                write_sync_state(self.journal.path, {"uri": self._shipper.store.uri,
                                                     "run_id": self.run_id, "complete": True})
            return
        failure = self._failure
        self._close_incomplete(status, error, interrupted)
        where = f"the journal {self.journal.path}" if journal_ok else "its output folder"
        raise StoreError(f"{failure or 'tracking: the store did not take the whole run'}; "
                         f"the run is kept in {where}; send it with: "
                         f"{sync_command(self.journal.path)}")

    def _close_incomplete(self, status: str, error: str | None, interrupted: bool) -> None:
        """Give the store's copy of the run a final status, if the store answers at all."""
        assert self.store is not None and self.run_id is not None
        store, run_id = self.store, self.run_id
        final = status if interrupted or status != "FINISHED" else "FAILED"
        note = f"{names.INCOMPLETE} ({sync_command(self.journal.path)})"
        note = f"{error}; {note}" if error else note
        if interrupted and self._failure is not None and self._failure.transient:
            return  # a store that stopped answering: no second wait at exit
        with contextlib.suppress(Exception):
            from mlflow.entities import RunTag

            store.call("tag the run", lambda: store.client.log_batch(
                run_id, tags=[RunTag(names.ERROR_TAG, note)]), budget_s=1.0)
            end_run(store, run_id, final, end_time=now_ms(), budget_s=1.0)


def start_run(*, uri: str | None, experiment: str, run_name: str, output_dir: Path,
              tags: Mapping[str, str], parent_run_id: str | None,
              parent_journal_id: str | None, offline: bool, max_points: int | None,
              log_model: bool) -> Recorder:
    """Create the run (in the store unless ``offline``) and its journal in ``output_dir``.

    Raises :class:`StoreError` before any work when the store does not answer.
    """
    from pipeline.tracking.store import experiment_id, open_store, store_uri

    journal_id = new_journal_id()
    journal_path = output_dir / JOURNAL_NAME
    all_tags = {names.JOURNAL_ID_TAG: journal_id, names.JOURNAL_TAG: str(journal_path),
                **{str(k): str(v) for k, v in tags.items()}}
    store = run_id = exp_id = None
    start_ms = now_ms()
    all_tags = context_tags(all_tags, parent_run_id)
    if not offline:
        store = open_store(uri)
        exp_id = experiment_id(store, experiment)
        created_tags = {**all_tags, names.HEARTBEAT_TAG: str(int(time.time()))}
        run = store.call("start the run", lambda: store.client.create_run(
            exp_id, run_name=run_name, start_time=start_ms, tags=created_tags))
        run_id = run.info.run_id
    try:
        journal = JournalWriter(journal_path, {
            "journal_id": journal_id, "uri": store.uri if store else store_uri(uri),
            "experiment": experiment,
            "run_id": run_id, "run_name": run_name, "parent_run_id": parent_run_id,
            "parent_journal_id": parent_journal_id, "time_ms": start_ms, "tags": all_tags,
        })
        return Recorder(journal, store, run_id, exp_id, max_points=max_points,
                        log_model=log_model)
    except BaseException as error:  # Ctrl-C, SIGTERM or a full disk: no run left RUNNING
        if store is not None and run_id is not None:
            _end_unstarted(store, run_id, error)
        raise


def _end_unstarted(store: Store, run_id: str, error: BaseException) -> None:
    """End a run created in the store whose recorder never started: KILLED when interrupted,
    else FAILED, with the cause as its error tag."""
    from mlflow.entities import RunTag

    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    with contextlib.suppress(Exception):
        store.call("tag the run", lambda: store.client.log_batch(
            run_id, tags=[RunTag(names.ERROR_TAG, f"stopped as it started ({cause})")]),
            budget_s=1.0)
        end_run(store, run_id, status, end_time=now_ms(), budget_s=1.0)


def context_tags(tags: Mapping[str, str], parent_run_id: str | None) -> dict[str, str]:
    """``tags`` plus what MLflow's own ``start_run`` adds (user, source, git) and the parent."""
    from mlflow.tracking.context.registry import resolve_tags

    resolved = dict(resolve_tags(dict(tags)))
    if parent_run_id:
        resolved[names.PARENT_TAG] = parent_run_id
    return {str(k): str(v) for k, v in resolved.items()}


def hold_while_alive(journal: Path) -> Any:
    """A shared lock on the journal, held until the run ends or its process dies:
    ``sync`` takes it exclusively, so it never closes the run of a live process."""
    handle = open(journal, "rb")  # noqa: SIM115 (closed when the run ends)
    fcntl.flock(handle.fileno(), fcntl.LOCK_SH)
    return handle
