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
import re
import threading
import time
from array import array
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from pipeline.files import write_text_atomic
from pipeline.tracking import record as names
from pipeline.tracking.journal import (
    JOURNAL_NAME,
    JournalWriter,
    epochs_record,
    new_journal_id,
    now_ms,
)
from pipeline.tracking.runs import run_url
from pipeline.tracking.shipper import Shipper
from pipeline.tracking.store import (
    Store,
    StoreError,
    end_run,
    experiment_id,
    open_store,
    store_uri,
)

log = logging.getLogger("pipeline.tracking")

JOURNAL_INTERVAL_S = 0.5  # epochs reach the journal at least this often
SHIP_INTERVAL_S = 15.0  # new records reach the store at least this often...
LIVE_SHARE = 0.03  # ... unless sending them would take more than this share of the time
FSYNC_INTERVAL_S = 5.0
RETRY_INTERVAL_S = 20.0  # a store that failed is tried again after this
HEARTBEAT_INTERVAL_S = names.HEARTBEAT_INTERVAL_S
LIVE_BUDGET_S = 5.0  # retries of one store call while training goes on
FINAL_BUDGET_S = 20.0  # ... when the run ends normally
FAILING_BUDGET_S = 5.0  # ... when it ends while the store is failing
INTERRUPT_BUDGET_S = 2.5  # ... when it was interrupted (the process must exit in seconds)
STATUS_BUDGET_S = 2.0  # an interrupted run's status, sent first, waits at most this long


def sync_state_path(journal: Path) -> Path:
    """Beside a journal: which store and run it was sent to, and whether completely."""
    return journal.with_name(journal.name + ".sent")


def sync_command(journal: Path) -> str:
    return f"make sync DIR={journal.parent}"


def write_sync_state(journal: Path, state: Mapping[str, Any]) -> None:
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
                 experiment_id: str | None, *, max_points: int | None, log_model: bool,
                 ui_url: str | None = None) -> None:
        self.journal = journal
        self.store, self.run_id, self.experiment_id = store, run_id, experiment_id
        self.max_points, self.log_model = max_points, log_model
        self.ui_url = ui_url  # tracking.ui_url: the links' base address (None: the store's)
        self.last_epoch: int | None = None  # the newest epoch logged (what Ctrl-C reports)
        self._data_seed: int | None = None  # the run's data seed, once described
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
        # How far the end got (an end cut short by Ctrl-C is finished by kill()).
        self._journal_closed = False
        self._journal_ok = True
        self._status_sent = False  # the store has the run's final status
        self._complete = False  # the store has the whole run
        self._journal_status: str | None = None  # the status the journal's end holds
        self._done = False
        self._late_timings: Callable[[], Mapping[str, float]] | None = None
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
        if self.store is None or self.run_id is None or self.experiment_id is None:
            return None
        return run_url(self.store.uri, self.experiment_id, self.run_id, self.ui_url)

    # -- what the runner reports ------------------------------------------------------
    def describe(self, spec: names.RunSpec) -> None:
        self._data_seed = spec.seeds.get("data")  # names generated data sets
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
            self.last_epoch = step

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
        self.add(names.outcome_records(outcome, log_model=self.log_model,
                                       data_seed=self._data_seed))
        self._kick.set()

    def warned(self, lines: str) -> None:
        """The Python warnings the run showed, one line each (its ``warnings`` tag)."""
        self.add([{"k": "tags", "tags": {names.WARNINGS_TAG: lines}}])

    def plots_drawn(self) -> None:
        """The plots are in the artifact folder (sent with it by :meth:`finish`)."""
        self.add([{"k": "tags", "tags": {names.PLOTS_LOGGED_TAG: "true"}}])

    def finish(self, outcome: names.RunOutcome,
               late_timings: Callable[[], Mapping[str, float]] | None = None) -> None:
        """The artifact folder, then FINISHED (see :meth:`end`). ``late_timings``: the run's
        timings that end with it (``time_<part>_s`` metrics), read once the background
        sending is over, as the end is journaled."""
        self._late_timings = late_timings
        self.end("FINISHED", None, names.artifact_records(outcome),
                 last_epoch=outcome.last_epoch, best_epoch=outcome.best_epoch)

    def fail(self, error: str, checkpoints: Sequence[Path] | None = None) -> None:
        """End FAILED with ``error``, keeping the ``checkpoints`` the run wrote; never raises
        (a store that fails too is reported in a log line)."""
        try:
            self.end("FAILED", error, names.partial_records(checkpoints or ()))
        except StoreError as problem:
            log.warning("%s", problem)
        except Exception as problem:  # never let it replace the error that ends the run
            log.warning("tracking: ending the run FAILED failed (%s: %s); its journal %s keeps "
                        "what was recorded", type(problem).__name__, problem, self.journal.path)

    def kill(self, reason: str, checkpoints: Sequence[Path] | None = None) -> str:
        """End KILLED after Ctrl-C or SIGTERM, keeping the ``checkpoints`` the run wrote: the
        status first, then the rest within :data:`INTERRUPT_BUDGET_S`, so that the process
        exits in seconds. Never raises; returns one line saying where the record is."""
        try:
            self.end("KILLED", reason, names.partial_records(checkpoints or ()),
                     interrupted=True)
        except Exception as problem:  # never let it replace the Ctrl-C that ends the run
            log.warning("tracking: ending the run KILLED failed (%s: %s); its journal %s keeps "
                        "what was recorded", type(problem).__name__, problem, self.journal.path)
        return self.ending

    @property
    def ending(self) -> str:
        """Where an interrupted run's record is, in one line (once it has ended)."""
        sync = sync_command(self.journal.path)
        status = self._journal_status or "KILLED"
        if self._shipper is None:
            return (f"the run was recorded {status} in its journal {self.journal.path}; send "
                    f"it to a store with: {sync}")
        if not self._status_sent:
            return (f"the store did not take the run's end; its journal {self.journal.path} "
                    f"keeps it all: send it with {sync}")
        if not self._complete:
            return ("the run was marked KILLED; what the store has not received yet is in "
                    f"its journal: send it with {sync}")
        if status != "KILLED":  # the interrupt came once the run had ended
            return f"the run had already ended {status}; its record is complete"
        return "the run was marked KILLED; its journal and checkpoints so far were kept"

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
                # At the end, end() reports it.
                if self._failure is None and not self._stop.is_set():
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

        ``interrupted`` (Ctrl-C, SIGTERM): the store gets the status first (KILLED, its error
        tag saying the record is incomplete until synced), then what it can take within
        :data:`INTERRUPT_BUDGET_S`; nothing is raised for what is left (see :attr:`ending`).
        An end that Ctrl-C cut short is finished by the next call with ``interrupted``: the
        journal keeps the end it already has.
        """
        if self._done:
            return
        self._stop.set()
        self._kick.set()
        # An interrupted run does not wait for a batch stuck on a failing store.
        self._thread.join(timeout=1.0 if interrupted else None)
        if self._late_timings is not None and not interrupted:
            records = [*records, _timing_record(self._late_timings())]
        journal_ok = self._close_journal([*records, names.end_record(
            status, error, last_epoch=last_epoch, best_epoch=best_epoch)])
        if self._shipper is None:  # offline: the journal is the record
            self._done = True
            if not journal_ok:
                raise self._failure  # type: ignore[misc]
            return
        if interrupted:
            self._end_interrupted(error)
            return
        budget = FAILING_BUDGET_S if self._failure is not None else FINAL_BUDGET_S
        self._failure, self._retry_at = None, 0.0  # one more try
        self._complete = self._ship(budget)
        self._done = True
        if self._complete:
            self._status_sent = True
            self._write_sent()
            return
        failure = self._failure
        self._close_incomplete(status, error)
        where = f"the journal {self.journal.path}" if journal_ok else "its output folder"
        raise StoreError(f"{failure or 'tracking: the store did not take the whole run'}; "
                         f"the run is kept in {where}; send it with: "
                         f"{sync_command(self.journal.path)}")

    def _close_journal(self, records: Sequence[dict[str, Any]]) -> bool:
        """Journal ``records`` (the last one the end) once, close the journal, stop the
        heartbeat. False when the journal could not be written."""
        try:
            if not self._journal_closed:
                self.add(records)
                self._journal_closed = True  # the journal's end stays the one it has
                self._journal_status = str(records[-1]["status"])
            self.journal.close()
        except OSError as problem:
            if not self.journal.wrote_end:
                # The epochs before it did not fit (a full disk): the end alone, which the
                # journal gives its reserve, so that sync keeps this status and error.
                with contextlib.suppress(OSError, ValueError):
                    self.journal.append(records[-1])
            self._journal_closed = True
            self._journal_ok = False
            self._failure = self._failure or StoreError(
                f"tracking: cannot write the journal {self.journal.path}: "
                f"{problem.strerror or problem}")
            with contextlib.suppress(OSError):
                self.journal.close()
        self._alive.close()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        return self._journal_ok

    def _end_interrupted(self, error: str | None) -> None:
        """The status first, then the rest within the interrupt budget. A store that does
        not take the status in :data:`STATUS_BUDGET_S` gets nothing more (the journal has
        it all); a second Ctrl-C stops the sending."""
        self._failure, self._retry_at = None, 0.0  # one more try, however it went before
        try:
            if not self._status_sent:
                self._status_sent = _within(STATUS_BUDGET_S, lambda: self._close_incomplete(
                    "KILLED", error))
            if self._status_sent:
                with self._order:  # file by file: the shipper checks its deadline before each
                    self._unshipped[:] = file_by_file(self._unshipped)
                self._complete = self._ship(INTERRUPT_BUDGET_S, wait_s=0.5,
                                            within_s=INTERRUPT_BUDGET_S)
        except KeyboardInterrupt:  # a second Ctrl-C: what is left waits for make sync
            pass
        self._done = True
        if self._complete:
            self._write_sent()

    def _write_sent(self) -> None:
        assert self._shipper is not None
        with contextlib.suppress(OSError):
            write_sync_state(self.journal.path, {"uri": self._shipper.store.uri,
                                                 "run_id": self.run_id, "complete": True})

    def _close_incomplete(self, status: str, error: str | None) -> bool:
        """Give the store's copy of the run a final status and an error tag saying the
        journal holds the rest; True if the store took them. A run that was to end
        FINISHED ends FAILED: the store does not have all of it."""
        assert self.store is not None and self.run_id is not None
        store, run_id = self.store, self.run_id
        final = "FAILED" if status == "FINISHED" else status
        note = f"{names.INCOMPLETE} ({sync_command(self.journal.path)})"
        note = f"{error}; {note}" if error else note
        try:
            from mlflow.entities import RunTag

            store.call("tag the run", lambda: store.client.log_batch(
                run_id, tags=[RunTag(names.ERROR_TAG, note[:names.MAX_TAG_LENGTH])]),
                budget_s=1.0)
            end_run(store, run_id, final, end_time=now_ms(), budget_s=1.0)
        except Exception:  # the store fails too: the journal keeps the run
            return False
        return True


def _timing_record(timings: Mapping[str, float]) -> dict[str, Any]:
    """``time_<part>_s`` metrics at step 0, as the run's other timings."""
    return {"k": "metrics", "values": {f"time_{part}_s": float(seconds)
                                       for part, seconds in timings.items()},
            "step": 0, "time_ms": now_ms(), "of_model": False, "dataset": None}


def _within(seconds: float, action: Callable[[], bool]) -> bool:
    """``action()`` in a thread of its own, waited for at most ``seconds``: whether it
    returned True in time (a request to a server that hangs must not hold the exit)."""
    done: list[bool] = []

    def attempt() -> None:
        try:
            done.append(action())
        except Exception:  # reported by the caller's line: the store did not take it
            done.append(False)

    thread = threading.Thread(target=attempt, name="end-the-run", daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(done and done[0])


def file_by_file(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with each folder of artifacts as one record per file: the run's result
    files first, then its checkpoints newest first (what a resume needs), so that what an
    interrupted run sends before its deadline is what matters most."""
    result: list[dict[str, Any]] = []
    for record in records:
        folder = Path(str(record.get("path", "")))
        if record.get("k") != "artifacts" or not folder.is_dir():
            result.append(record)
            continue
        dest = record.get("dest")
        files = [(path, "/".join(part for part in (dest, path.relative_to(folder).parent
                                                    .as_posix()) if part and part != "."))
                 for path in folder.rglob("*") if path.is_file()]
        files.sort(key=lambda item: _send_order(item[0].name, item[1]))
        result += [{"k": "artifacts", "path": str(path), "dest": where or None}
                   for path, where in files]
    return result


def _send_order(name: str, dest: str) -> tuple[int, int, str]:
    """Result files by name, then final.json, then epoch checkpoints newest first."""
    if "checkpoints" not in dest.split("/"):
        return (0, 0, f"{dest}/{name}")
    epoch = re.fullmatch(r"epoch_(\d+)\.json", name)
    return (1, -int(epoch.group(1)) if epoch else -(2 ** 62), name)


def start_run(*, uri: str | None, experiment: str, run_name: str, output_dir: Path,
              tags: Mapping[str, str], parent_run_id: str | None,
              parent_journal_id: str | None, offline: bool, max_points: int | None,
              log_model: bool, journal_id: str | None = None,
              ui_url: str | None = None) -> Recorder:
    """Create the run (in the store unless ``offline``) and its journal in ``output_dir``.

    Raises :class:`StoreError` before any work when the store does not answer. Ctrl-C or
    SIGTERM after the run was created end it KILLED, and the interrupt carries a note
    saying so.
    """
    journal_id = journal_id or new_journal_id()
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
                        log_model=log_model, ui_url=ui_url)
    except BaseException as error:  # Ctrl-C, SIGTERM or a full disk: no run left RUNNING
        if store is not None and run_id is not None:
            ended = _end_unstarted(store, run_id, error)
            if isinstance(error, KeyboardInterrupt):
                error.add_note(f"the run was marked KILLED as it started ({run_id})" if ended
                               else f"the store did not take the end of run {run_id}, which "
                               "had just started; make clean-runs marks it KILLED later")
        raise


def _end_unstarted(store: Store, run_id: str, error: BaseException) -> bool:
    """End a run created in the store whose recorder never started: KILLED when interrupted,
    else FAILED, with the cause as its error tag. True if the store took it."""
    from mlflow.entities import RunTag

    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    try:
        store.call("tag the run", lambda: store.client.log_batch(
            run_id, tags=[RunTag(names.ERROR_TAG, f"stopped as it started ({cause})")]),
            budget_s=1.0)
        end_run(store, run_id, status, end_time=now_ms(), budget_s=1.0)
    except Exception:
        return False
    return True


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
