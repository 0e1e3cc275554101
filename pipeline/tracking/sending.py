"""Send journals to a store: runs recorded offline, or whose store failed mid-run.

A journal goes to the same run when the store has it (the run id in its first line,
or the run created by an earlier sync); otherwise to a new run tagged with where it
came from. Every record is applied idempotently and a journal sent completely is
marked so (``journal.jsonl.sent``): syncing twice changes nothing.

Every journal is read and checked before anything is sent: a journal that is not what a
run writes is refused with one line naming its file and line, and no run is created.

A journal without an end record belongs to a process that died: its run ends as the run
itself ended it in the store when it did (a full disk can keep the last line from the
journal, not the status from the store), else KILLED. The status decided is appended to
the journal (an ``end`` record ``"by": "sync"``), so journal and store read the same.

A sweep's parent is sent first (its journal is found in an enclosing folder when only a
job's folder is synced), then its jobs under it (a job sent earlier without it is
attached), then, whenever a job was sent or attached, the parent's summary, counts and
status are brought up to date, also when the parent was sent before.

A sync cut short (Ctrl-C, SIGTERM, a store that fails) leaves no run RUNNING: the run it
was sending ends KILLED with an ``incomplete record`` error, which the next sync replaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import logging
import signal
import threading
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.errors import PipelineError
from pipeline.tracking import record as names
from pipeline.tracking.journal import (
    STATUSES,
    Journal,
    JournalError,
    append_record,
    find_journals,
    find_parent_journal,
    read_journal,
)
from pipeline.tracking.parent import ParentEnding, end_parent
from pipeline.tracking.record import clean_tags
from pipeline.tracking.recorder import sync_state_path, write_sync_state
from pipeline.tracking.shipper import Shipper
from pipeline.tracking.store import Store, experiment_id, open_store
from pipeline.tracking.summary import summarise

log = logging.getLogger("pipeline.tracking")

KILLED_WITHOUT_END = "the process ended without closing the run (killed?); sent from its journal"
# Statuses given by someone other than the run (runs.mark_stale_runs, an interrupted sync):
# a journal without an end does not take them for the run's own.
NOT_THE_RUNS_OWN = (names.INCOMPLETE, names.STALE_ERROR)


@dataclass(frozen=True)
class Sent:
    """One journal's result: where it went and whether anything had to be sent."""

    journal: Path
    uri: str
    run_id: str
    status: str
    already: bool = False
    created: bool = False
    attached: bool = False  # sent before without its sweep's parent, attached now
    updated: bool = False  # a sweep's parent whose summary and status were brought up to date
    live: bool = False  # a sweep's parent whose sweep still runs (it summarises at its end)


def _lock(path: Path) -> BinaryIO | None:
    """The journal to ourselves (an open handle holding the lock), or None when a run or
    sweep that is still going holds it."""
    handle = open(path, "rb")  # noqa: SIM115 (closed by the caller, or below)
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """The journal to ourselves: a run that is still going holds it shared."""
    handle = _lock(path)
    if handle is None:
        raise PipelineError(f"{path} belongs to a run that is still going; send it once "
                            "that run has ended")
    with handle:
        yield


def _state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(sync_state_path(path).read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(path: Path, state: Mapping[str, Any]) -> None:
    """Best effort: a journal's folder that cannot be written (a full disk) only costs the
    next sync a resend, which changes nothing."""
    try:
        write_sync_state(path, state)
    except OSError as error:
        log.warning("sync: cannot mark %s sent (%s); the next sync sends it again", path,
                    error.strerror or error)


def _append_end(path: Path, record: Mapping[str, Any]) -> None:
    """Append the end sync decided to the journal (best effort, as :func:`_write_state`)."""
    try:
        append_record(path, {**record, "by": "sync"})
    except OSError as error:
        log.warning("sync: cannot write how the run ended into %s (%s)", path,
                    error.strerror or error)


def _check(path: Path) -> Journal:
    try:
        return read_journal(path)
    except JournalError as error:
        raise PipelineError(f"sync: {error}; nothing was sent: correct or restore that "
                            "journal, or move it out of the folder") from None


class Syncer:
    """Sends journals; one store per URI, and the runs it made for sweep parents."""

    def __init__(self, uri: str | None = None, again: str = "make sync") -> None:
        self.uri = uri
        self.again = again  # the command that finishes an interrupted sync
        self._stores: dict[str, Store] = {}
        self.parents: dict[str, str] = {}  # parent journal id -> run id in the target store
        self._open: dict[str, Store] = {}  # runs being sent: closed if the sync is cut short
        # A run being created for a journal (store, experiment id, journal id): a sync cut
        # short before it knew the run's id finds it by its journal id tag.
        self._creating: tuple[Store, str, str] | None = None
        self.marked: list[str] = []  # runs left incomplete by a sync cut short
        self._held: set[Path] = set()  # sweep parents' journals this sync holds locked

    def store(self, uri: str) -> Store:
        if uri not in self._stores:
            self._stores[uri] = open_store(uri)
        return self._stores[uri]

    # -- the whole sync ---------------------------------------------------------------------
    def run(self, paths: list[Path]) -> list[Sent]:
        """Send the journals ``paths`` (and the parents of sweep jobs among them, found in
        the enclosing folders); every journal is checked before anything is sent."""
        with contextlib.ExitStack() as held:
            journals, live = self._gather(paths, held)
            try:
                return self._send_all(journals, live)
            except BaseException as error:
                self._close_open(error)
                raise

    def _gather(self, paths: list[Path], held: contextlib.ExitStack
                ) -> tuple[list[Journal], set[Path]]:
        """The journals to send, checked, sweep parents first (those found in an enclosing
        folder included), and the parents whose sweep still runs."""
        journals: dict[Path, Journal] = {}
        live: set[Path] = set()
        order = list(paths)
        sweeps: set[str] = set()  # the parents' journal ids
        for path in paths:
            journal = self._take(path, held, live, journals)
            if "sweep" in journal.start:
                sweeps.add(journal.journal_id)
                continue
            if journal.start.get("parent_journal_id") in sweeps:
                continue
            parent = find_parent_journal(journal)  # a job's folder synced alone
            if parent is not None and parent not in journals and parent not in order:
                order.insert(0, parent)
                sweeps.add(self._take(parent, held, live, journals).journal_id)
        return [journals[p] for p in order], live

    def _take(self, path: Path, held: contextlib.ExitStack, live: set[Path],
              journals: dict[Path, Journal]) -> Journal:
        """Lock and check one journal: a sweep's parent stays locked for the whole sync (a
        live one is noted), a run's is only probed (locked again while it is sent)."""
        handle = _lock(path)
        journal = _check(path)
        if handle is None and "sweep" not in journal.start:
            raise PipelineError(f"{path} belongs to a run that is still going; send it "
                                "once that run has ended")
        if handle is None:
            live.add(path)
        elif "sweep" in journal.start:
            held.enter_context(handle)
            self._held.add(path)
        else:
            handle.close()
            # Read again when it is sent: a sweep's jobs need not all be in memory at once.
            journal = Journal(journal.path, journal.start, [])
        journals[path] = journal
        return journal

    def _send_all(self, journals: list[Journal], live: set[Path]) -> list[Sent]:
        results: dict[Path, Sent] = {}
        changed: set[str] = set()  # parent journals with a job sent or attached now
        parents = [j for j in journals if "sweep" in j.start]
        for journal in parents:
            results[journal.path] = self._send_parent(journal, live=journal.path in live)
        for journal in journals:
            if "sweep" in journal.start:
                continue
            with _exclusive(journal.path):
                sent = self._send(_check(journal.path))
            results[journal.path] = sent
            if not sent.already or sent.attached:
                changed.add(str(journal.start.get("parent_journal_id")))
        for journal in parents:
            sent = results[journal.path]
            if not sent.live and (not sent.already or journal.journal_id in changed):
                results[journal.path] = self._finish_parent(sent, journal)
        return [results[j.path] for j in journals]

    def _close_open(self, cut_short: BaseException) -> None:
        """The runs this sync was sending are incomplete (``marked``): those it would leave
        RUNNING end KILLED, with an error tag that says so (a signal that comes meanwhile
        is ignored: this takes a second or two at most)."""
        note = f"{names.INCOMPLETE} (the sync was cut short: run {self.again} again to finish)"
        with _signals_held():
            _let_go(cut_short)
            if self._creating is not None:
                with contextlib.suppress(Exception):
                    self._open.update(dict.fromkeys(_runs_of(*self._creating),
                                                    self._creating[0]))
            for run_id, store in list(self._open.items()):
                self.marked.append(run_id)
                with contextlib.suppress(Exception):
                    _close_incomplete(store, run_id, note)
            self._open.clear()

    # -- one run ----------------------------------------------------------------------------
    def _send(self, journal: Journal) -> Sent:
        start = journal.start
        uri = self.uri or str(start["uri"])
        state = _state(journal.path)
        ended = journal.ended
        # Sent, by the run or a sync; without an end (it could not be written) it is sent
        # again, which changes nothing, to say in the journal how the run ended.
        if state.get("complete") and state.get("uri") == uri and ended is not None:
            run_id = str(state["run_id"])
            attached = self._attach(self.store(uri), run_id, start) if self._parent_known(
                start) else False
            return Sent(journal.path, uri, run_id, str(ended["status"]), already=True,
                        attached=attached)
        store = self.store(uri)
        exp_id = experiment_id(store, str(start["experiment"]))
        run_id, created = self._run_for(store, exp_id, journal, state)
        self._open[run_id], self._creating = store, None
        _write_state(journal.path, {"uri": uri, "run_id": run_id, "complete": False})
        attached = not created and self._attach(store, run_id, start)
        end = ended or self._closing(store, run_id)
        Shipper(store, run_id, exp_id, journal.path).apply(
            journal.records if ended else [*journal.records, end])
        del self._open[run_id]
        if ended is None:
            _append_end(journal.path, end)
        _write_state(journal.path, {"uri": uri, "run_id": run_id, "complete": True})
        return Sent(journal.path, uri, run_id, str(end["status"]), created=created,
                    attached=attached)

    def _closing(self, store: Store, run_id: str) -> dict[str, Any]:
        """The end of a run whose journal has none: the status and error the run gave itself
        in the store, if it ended there; else KILLED (its process was killed)."""
        run = store.call("read the run", lambda: store.client.get_run(run_id))
        error = run.data.tags.get(names.ERROR_TAG)
        if run.info.status in STATUSES and not (error or "").startswith(NOT_THE_RUNS_OWN):
            # "<error>; incomplete record: ..." : the journal is sent now, the error stays.
            own = error.split(f"; {names.INCOMPLETE}", 1)[0] if error else None
            return {**names.end_record(run.info.status, own),
                    "time_ms": run.info.end_time or names.now_ms()}
        return names.end_record("KILLED", KILLED_WITHOUT_END)

    def _run_for(self, store: Store, exp_id: str, journal: Journal, state: dict[str, Any]
                 ) -> tuple[str, bool]:
        """The run this journal goes to in ``store``: found, or created (True)."""
        found = self._find_run(store, exp_id, journal, state)
        if found is not None:
            return found, False
        client = store.client
        start = journal.start
        tags = dict(start.get("tags") or {})
        tags.update({"pipeline.synced_from": str(journal.path),
                     names.JOURNAL_ID_TAG: journal.journal_id})
        if start.get("run_id"):
            tags.update({"pipeline.source_run_id": str(start["run_id"]),
                         "pipeline.source_uri": str(start["uri"])})
        parent = self._parent_of(store, start)
        tags.pop(names.PARENT_TAG, None)
        if parent:
            tags[names.PARENT_TAG] = parent
        elif start.get("parent_run_id"):
            tags["pipeline.source_parent_run_id"] = str(start["parent_run_id"])
        self._creating = (store, exp_id, journal.journal_id)
        run = store.call("create the run", lambda: client.create_run(
            exp_id, run_name=start.get("run_name"), start_time=int(start["time_ms"]),
            tags=clean_tags(tags)))
        return run.info.run_id, True

    def _find_run(self, store: Store, exp_id: str, journal: Journal, state: dict[str, Any]
                  ) -> str | None:
        start = journal.start
        for candidate in (state.get("run_id") if state.get("uri") == store.uri else None,
                          start.get("run_id")):
            if isinstance(candidate, str) and _exists(store, candidate):
                return candidate
        found = store.call("look for the journal's run", lambda: store.client.search_runs(
            [exp_id], filter_string=f"tags.`{names.JOURNAL_ID_TAG}` = '{journal.journal_id}'",
            max_results=1))
        return found[0].info.run_id if found else None

    def _parent_known(self, start: Mapping[str, Any]) -> bool:
        return start.get("parent_journal_id") in self.parents

    def _parent_of(self, store: Store, start: Mapping[str, Any]) -> str | None:
        parent_journal = start.get("parent_journal_id")
        if parent_journal and parent_journal in self.parents:
            return self.parents[parent_journal]
        parent_run = start.get("parent_run_id")
        if parent_run and _exists(store, parent_run):
            return str(parent_run)
        return None

    def _attach(self, store: Store, run_id: str, start: Mapping[str, Any]) -> bool:
        """Give a run sent before without its sweep's parent that parent (True if done)."""
        parent = self._parent_of(store, start)
        if parent is None:
            return False
        run = store.call("read the run", lambda: store.client.get_run(run_id))
        if names.PARENT_TAG in run.data.tags:
            return False
        store.call("attach the run to its sweep", lambda: store.client.set_tag(
            run_id, names.PARENT_TAG, parent))
        return True

    # -- a sweep's parent -------------------------------------------------------------------
    def _send_parent(self, journal: Journal, *, live: bool) -> Sent:
        """The parent's run, found or created, before its jobs are sent (its summary and
        status come after them: :meth:`_finish_parent`)."""
        start = journal.start
        uri = self.uri or str(start["uri"])
        state = _state(journal.path)
        status = ("RUNNING" if live else str(journal.ended["status"]) if journal.ended
                  else "KILLED")
        if state.get("complete") and state.get("uri") == uri:
            self.parents[journal.journal_id] = str(state["run_id"])
            return Sent(journal.path, uri, str(state["run_id"]), status, already=True,
                        live=live)
        store = self.store(uri)
        exp_id = experiment_id(store, str(start["experiment"]))
        if live:  # the sweep's launcher runs: it created its parent, if online, and ends it
            found = self._find_run(store, exp_id, journal, state)
            if found is None:
                raise PipelineError(f"{journal.path} belongs to a sweep that is still going; "
                                    "send its jobs once the sweep has ended")
            self.parents[journal.journal_id] = found
            return Sent(journal.path, uri, found, "RUNNING", already=True, live=True)
        run_id, created = self._run_for(store, exp_id, journal, state)
        self._open[run_id], self._creating = store, None
        self.parents[journal.journal_id] = run_id
        _write_state(journal.path, {"uri": uri, "run_id": run_id, "complete": False})
        return Sent(journal.path, uri, run_id, status, created=created)

    def _finish_parent(self, sent: Sent, journal: Journal) -> Sent:
        """Summarise a sweep's parent over the jobs now in the store, and set its status
        and error as its sweep's end decides with these counts; a resumed sweep's parent
        follows the journal of the sweep that resumed it."""
        store = self.store(sent.uri)
        if sent.already:  # a sync cut short from here on does it again
            self._open[sent.run_id] = store
            _write_state(journal.path, {"uri": sent.uri, "run_id": sent.run_id,
                                        "complete": False})
        run = store.call("read the sweep's parent run", lambda: store.client.get_run(
            sent.run_id))
        with self._owner(journal, run.data.tags) as (owner, live):
            if live:  # the sweep that resumed it still runs: it summarises at its end
                self._open.pop(sent.run_id, None)
                _write_state(journal.path, {"uri": sent.uri, "run_id": sent.run_id,
                                            "complete": sent.already})
                return replace(sent, live=True)
            sweep = journal.start["sweep"]
            counts = summarise(store, run.info.experiment_id, sent.run_id, sweep["metric"],
                               sweep["direction"]).counts
            ended = owner.ended if owner is not None else None
            end = ended or self._closing(store, sent.run_id)
            died = ended is None and end["error"] == KILLED_WITHOUT_END
            ending = ParentEnding.of(None if died else end)
            status, error = ending.outcome(counts)
            if not end_parent(store, sent.run_id, status, error, end_time=int(end["time_ms"])):
                raise PipelineError(f"sync: could not end the sweep's parent run {sent.run_id} "
                                    f"in {sent.uri}; run {self.again} again")
            record = {**ending.record(status, error, counts), "time_ms": end["time_ms"]}
            if owner is not None and (ended is None or any(
                    ended.get(k) != record.get(k) for k in ("status", "error", "counts"))):
                _append_end(owner.path, record)
        self._open.pop(sent.run_id, None)
        _write_state(journal.path, {"uri": sent.uri, "run_id": sent.run_id, "complete": True})
        return replace(sent, status=status, updated=sent.already)

    @contextlib.contextmanager
    def _owner(self, journal: Journal, tags: Mapping[str, str]
               ) -> Iterator[tuple[Journal | None, bool]]:
        """The journal whose end decides the parent's status, read now, and whether its
        sweep still runs: ``journal``'s own, or, once the sweep was resumed, the resuming
        sweep's (locked meanwhile; None if it is gone: the store's status holds)."""
        owner_id = tags.get(names.JOURNAL_ID_TAG)
        path = Path(tags.get(names.JOURNAL_TAG) or journal.path)
        if not owner_id or owner_id == journal.journal_id:
            path = journal.path
        if path in self._held:
            yield _check(path), False
            return
        handle = _lock(path) if path.is_file() else None
        if handle is None:
            yield None, path.is_file()
            return
        with handle:
            try:
                owner: Journal | None = read_journal(path)
            except JournalError:
                owner = None
            yield (owner if owner is not None and owner.journal_id == owner_id else None), False


def _let_go(cut_short: BaseException) -> None:
    """Free what the store calls that ``cut_short`` interrupted still hold. A signal that
    lands between a query and its last row leaves the query's cursor alive, reachable from
    the traceback (a frame's variables, or the closure of the function a frame runs), and
    with it the sqlite store's read lock: every write, the ones that close the runs
    included, would wait for it (20 s) and fail. An interrupt's tracebacks go (it prints
    none); another error keeps a traceback without the frames' variables."""
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [cut_short]
    while pending:
        error = pending.pop()
        if error is not None and all(error is not seen for seen in chain):
            chain.append(error)
            pending += [error.__context__, error.__cause__]
    # Also an error an interrupt turned into (an extension module cut short in its import
    # raises ImportError from it).
    interrupted = any(isinstance(error, KeyboardInterrupt) for error in chain)
    for error in chain:
        if interrupted:
            error.__traceback__ = None
        else:
            traceback.clear_frames(error.__traceback__)
    gc.collect()  # what sat in reference cycles, and the connections those sessions held


def _close_incomplete(store: Store, run_id: str, note: str) -> bool:
    """End run ``run_id`` KILLED with the error ``note`` if it is RUNNING (True if done); a
    run that has its own status keeps it, and its error."""
    from mlflow.entities import RunTag

    client = store.client
    run = store.call("read the run", lambda: client.get_run(run_id), budget_s=1.0)
    if run.info.status != "RUNNING":
        return False
    store.call("mark the run incomplete", lambda: client.log_batch(
        run_id, tags=[RunTag(names.ERROR_TAG, note)]), budget_s=1.0)
    store.call("end the run KILLED", lambda: client.set_terminated(run_id, status="KILLED"),
               budget_s=1.0)
    return True


def _runs_of(store: Store, exp_id: str, journal_id: str) -> list[str]:
    """The runs of ``store`` that hold journal ``journal_id`` (its tag) and are RUNNING."""
    runs = store.call("look for the journal's run", lambda: store.client.search_runs(
        [exp_id], filter_string=(f"tags.`{names.JOURNAL_ID_TAG}` = '{journal_id}' and "
                                 "attributes.status = 'RUNNING'")), budget_s=1.0)
    return [run.info.run_id for run in runs]


def _exists(store: Store, run_id: str) -> bool:
    try:
        store.client.get_run(run_id)
    except Exception:
        return False
    return True


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM ignored for a moment (the main thread only can)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def unsent(targets: list[Path]) -> list[Path]:
    """The journals under ``targets`` that were never sent completely to their store."""
    return [path for target in targets for path in find_journals(target)
            if not _state(path).get("complete")]


def sync(target: Path, uri: str | None = None, *, marked: list[str] | None = None
         ) -> list[Sent]:
    """Send the journal ``target`` names, or every journal in the folder ``target``
    (a run's output folder, or a sweep's: the parent first, its jobs under it).

    A sync cut short adds the runs it left incomplete to ``marked`` (none RUNNING).
    """
    paths = find_journals(target)
    if not paths:
        raise PipelineError(f"sync: no journal at {target}; pass a run's output folder (it "
                            "holds journal.jsonl) or a sweep's folder")
    folder = target if target.is_dir() else target.parent
    syncer = Syncer(uri, again=f"make sync DIR={folder}")
    try:
        return syncer.run(paths)
    finally:
        if marked is not None:
            marked.extend(syncer.marked)
