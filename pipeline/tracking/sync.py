"""Send journals to a store: runs recorded offline, or whose store failed mid-run.

A journal goes to the same run when the store has it (the run id in its first line,
or the run created by an earlier sync); otherwise to a new run tagged with where it
came from. Every record is applied idempotently and a journal sent completely is
marked so (``journal.jsonl.sent``): syncing twice changes nothing. A journal without
an end record belongs to a process that was killed: its run ends KILLED.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.tracking import record as names
from pipeline.tracking.journal import Journal, JournalError, find_journals, read_journal
from pipeline.tracking.recorder import sync_state_path, write_sync_state
from pipeline.tracking.shipper import Shipper, clean_tags
from pipeline.tracking.store import Store, experiment_id, open_store
from pipeline.tracking.summary import summarise
from pipeline.tracking.sweep import end_parent

KILLED_WITHOUT_END = "the process ended without closing the run (killed?); sent from its journal"


@dataclass(frozen=True)
class Sent:
    """One journal's result: where it went and whether anything had to be sent."""

    journal: Path
    uri: str
    run_id: str
    status: str
    already: bool = False
    created: bool = False


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """The journal to ourselves: a run that is still going holds it shared."""
    with open(path, "rb") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{path} belongs to a run that is still going; send it once "
                                "that run has ended") from None
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(sync_state_path(path).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class Syncer:
    """Sends journals; one store per URI, and the runs it made for sweep parents."""

    def __init__(self, uri: str | None = None) -> None:
        self.uri = uri
        self._stores: dict[str, Store] = {}
        self.parents: dict[str, str] = {}  # parent journal id -> run id in the target store

    def store(self, uri: str) -> Store:
        if uri not in self._stores:
            self._stores[uri] = open_store(uri)
        return self._stores[uri]

    def send(self, path: Path) -> tuple[Sent, Journal]:
        try:
            journal = read_journal(path)
        except JournalError as error:
            raise PipelineError(f"sync: {error}") from None
        with _exclusive(path):
            return self._send(journal), journal

    def _send(self, journal: Journal) -> Sent:
        start = journal.start
        uri = self.uri or str(start["uri"])
        state = _state(journal.path)
        ended = journal.ended
        status = str(ended["status"]) if ended else "KILLED"
        if state.get("complete") and state.get("uri") == uri:
            self.parents[journal.journal_id] = state["run_id"]
            return Sent(journal.path, uri, state["run_id"], status, already=True)
        store = self.store(uri)
        exp_id = experiment_id(store, str(start["experiment"]))
        run_id, created = self._run_for(store, exp_id, journal, state)
        self.parents[journal.journal_id] = run_id
        write_sync_state(journal.path, {"uri": uri, "run_id": run_id, "complete": False})
        if "sweep" in start:  # a parent: summarised once its jobs are sent (finish_parent)
            return Sent(journal.path, uri, run_id, status, created=created)
        records = list(journal.records)
        if ended is None:
            records.append(names.end_record("KILLED", KILLED_WITHOUT_END))
        Shipper(store, run_id, exp_id, journal.path).apply(records)
        write_sync_state(journal.path, {"uri": uri, "run_id": run_id, "complete": True})
        return Sent(journal.path, uri, run_id, status, created=created)

    def _run_for(self, store: Store, exp_id: str, journal: Journal, state: dict[str, Any]
                 ) -> tuple[str, bool]:
        """The run this journal goes to in ``store``: found, or created (True)."""
        client = store.client
        start = journal.start
        for candidate in (state.get("run_id") if state.get("uri") == store.uri else None,
                          start.get("run_id")):
            if candidate and _exists(store, candidate):
                return str(candidate), False
        found = store.call("look for the journal's run", lambda: client.search_runs(
            [exp_id], filter_string=f"tags.`{names.JOURNAL_ID_TAG}` = '{journal.journal_id}'",
            max_results=1))
        if found:
            return found[0].info.run_id, False
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
        run = store.call("create the run", lambda: client.create_run(
            exp_id, run_name=start.get("run_name"), start_time=int(start["time_ms"]),
            tags=clean_tags(tags)))
        return run.info.run_id, True

    def _parent_of(self, store: Store, start: dict[str, Any]) -> str | None:
        parent_journal = start.get("parent_journal_id")
        if parent_journal and parent_journal in self.parents:
            return self.parents[parent_journal]
        parent_run = start.get("parent_run_id")
        if parent_run and _exists(store, parent_run):
            return str(parent_run)
        return None

    def finish_parent(self, sent: Sent, journal: Journal) -> Sent:
        """Summarise a sweep parent over the jobs now in the store, and end it."""
        store = self.store(sent.uri)
        sweep = journal.start["sweep"]
        exp_id = experiment_id(store, str(journal.start["experiment"]))
        counts = summarise(store, exp_id, sent.run_id, sweep["metric"], sweep["direction"]).counts
        ended = journal.ended
        interrupted = ended is None or ended["status"] == "KILLED"
        status = "KILLED" if interrupted else "FAILED" if counts.failed else "FINISHED"
        error = (f"{counts.failed} job(s) failed" if counts.failed and not interrupted
                 else str(ended.get("error") or "") if ended else KILLED_WITHOUT_END) or None
        end_parent(store, sent.run_id, status, error)
        write_sync_state(journal.path, {"uri": sent.uri, "run_id": sent.run_id,
                                        "complete": True})
        return Sent(sent.journal, sent.uri, sent.run_id, status, created=sent.created)


def _exists(store: Store, run_id: str) -> bool:
    try:
        store.client.get_run(run_id)
    except Exception:
        return False
    return True


def unsent(targets: list[Path]) -> list[Path]:
    """The journals under ``targets`` that were never sent completely to their store."""
    return [path for target in targets for path in find_journals(target)
            if not _state(path).get("complete")]


def sync(target: Path, uri: str | None = None) -> list[Sent]:
    """Send the journal ``target`` names, or every journal in the folder ``target``
    (a run's output folder, or a sweep's: the parent first, its jobs under it)."""
    paths = find_journals(target)
    if not paths:
        raise PipelineError(f"sync: no journal at {target}; pass a run's output folder (it "
                            "holds journal.jsonl) or a sweep's folder")
    syncer = Syncer(uri)
    results: list[Sent] = []
    parents: list[tuple[int, Journal]] = []
    for path in paths:
        sent, journal = syncer.send(path)
        if "sweep" in journal.start and not sent.already:
            parents.append((len(results), journal))
        results.append(sent)
    for index, journal in parents:
        results[index] = syncer.finish_parent(results[index], journal)
    return results
