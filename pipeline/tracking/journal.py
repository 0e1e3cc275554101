"""A run's journal: everything it records, appended to a local file before any store sees it.

One JSON object per line (JSON Lines), appended and flushed as the run goes, so a
crash (SIGKILL, power loss) loses at most the last, partial line. The store is fed
from the journal in the background, and ``python -m pipeline.sync`` replays a journal
into any store later; every record is applied idempotently, so replaying twice
changes nothing.

Record kinds (the ``k`` field):

* ``start``     the first line: journal id, store URI, experiment, run id (null when
                offline), run name, parent run or parent journal, start time, tags;
* ``params``    ``{"params": {name: value}}``;
* ``tags``      ``{"tags": {name: value}}``;
* ``plan``      ``{"first": e0, "last": e1, "max_points": m}``: the epochs training will
                run and how many points per metric the store gets (null: all);
* ``epochs``    ``{"keys": [...], "n": rows, "f64le": base64}``: per-epoch metrics, every
                epoch: ``n`` rows of ``[step, time_ms, *values]`` as little-endian
                float64, row after row (exact, and ~10x cheaper to write than JSON
                numbers; :func:`epoch_rows` reads them);
* ``metrics``   ``{"values": {...}, "step": s, "time_ms": t, "of_model": bool,
                "dataset": [name, digest] | null}``: single-value metrics;
* ``inputs``    ``{"datasets": [{name, digest, source_type, source, schema, profile,
                context}]}``;
* ``artifacts`` ``{"path": local file or folder, "dest": folder in the run | null}``;
* ``model``     ``{"checkpoint": path, "features": [...], "classes": [...]}``;
* ``end``       ``{"status": FINISHED | FAILED | KILLED, "error": text | null,
                "time_ms": t, "last_epoch": e | null, "best_epoch": e | null}``.

This module knows nothing of MLflow.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
JOURNAL_NAME = "journal.jsonl"


class JournalError(ValueError):
    """A journal that cannot be read (not a journal, a corrupt line, a newer format)."""


def epochs_record(keys: list[str], rows: Any, n: int) -> dict[str, Any]:
    """An ``epochs`` record of ``n`` rows; ``rows``: the flat float64 values (an
    ``array('d')``: step, time_ms, then one value per key, row after row)."""
    data = rows.tobytes() if sys.byteorder == "little" else np.asarray(
        rows, dtype="<f8").tobytes()
    return {"k": "epochs", "keys": keys, "n": n, "f64le": base64.b64encode(data).decode()}


def epoch_rows(record: Mapping[str, Any]) -> np.ndarray:
    """An ``epochs`` record's rows: (n, 2 + len(keys)) float64; column 0 the step, 1 the
    time in ms."""
    flat = np.frombuffer(base64.b64decode(record["f64le"]), dtype="<f8")
    width = 2 + len(record["keys"])
    if flat.size != record["n"] * width:
        raise JournalError(f"an epochs record holds {flat.size} values, not {record['n']} "
                           f"rows of {width}")
    return flat.reshape(record["n"], width)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_journal_id() -> str:
    return uuid.uuid4().hex


class JournalWriter:
    """Appends records to one journal file; safe to call from several threads.

    ``append`` writes and flushes one line (the OS has it: a crash of this process
    loses nothing written); ``sync`` also asks the disk to keep it (fsync).
    """

    def __init__(self, path: Path, start: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _set_aside(path)
        self.path = path
        self._lock = threading.Lock()
        # "x": a journal is never appended to by two runs.
        self._file = open(path, "x", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.append({"k": "start", "version": FORMAT_VERSION, **start})
        self.sync()

    def append(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[Mapping[str, Any]]) -> None:
        """Append and flush; an OSError (a full disk) names the journal."""
        if not records:
            return
        text = "".join(json.dumps(r, separators=(",", ":"), default=str) + "\n"
                       for r in records)
        with self._lock:
            try:
                self._file.write(text)
                self._file.flush()
            except OSError as error:
                raise OSError(error.errno, error.strerror, str(self.path)) from error

    def sync(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()


def _set_aside(path: Path) -> None:
    """A folder reused by a second run keeps the first run's journal (and its sync state)
    as ``journal-<journal id>.jsonl``: it may not have been sent yet."""
    if not path.exists():
        return
    try:
        with path.open(encoding="utf-8") as old_journal:
            old_id = str(json.loads(old_journal.readline())["journal_id"])
    except (OSError, ValueError, KeyError, TypeError):
        old_id = f"{int(time.time())}"
    for suffix in ("", ".sent"):
        old = path.with_name(path.name + suffix)
        if old.exists():
            old.rename(path.with_name(f"{path.stem}-{old_id}{path.suffix}{suffix}"))


@dataclass(frozen=True)
class Journal:
    """A journal read back: its start record and the records after it, in order."""

    path: Path
    start: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def journal_id(self) -> str:
        return str(self.start["journal_id"])

    @property
    def ended(self) -> dict[str, Any] | None:
        """The ``end`` record, or None when the process died before writing one."""
        return next((r for r in reversed(self.records) if r["k"] == "end"), None)

    def of_kind(self, kind: str) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r["k"] == kind)

    def epochs(self) -> tuple[list[str], np.ndarray]:
        """Every epoch recorded: the metric names and the rows, (n, 2 + len(keys)): step,
        time in ms, one column per metric."""
        keys: list[str] = []
        blocks = []
        for record in self.of_kind("epochs"):
            if keys and record["keys"] != keys:
                raise JournalError(f"{self.path}: the epoch metrics changed names "
                                   f"({keys} -> {record['keys']})")
            keys = record["keys"]
            blocks.append(epoch_rows(record))
        return keys, np.concatenate(blocks) if blocks else np.empty((0, 2))


def read_journal(path: Path) -> Journal:
    """Read a journal; a partial LAST line (a crash mid-write) is ignored.

    Raises :class:`JournalError` with the path for anything else that is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise JournalError(f"{path}: not a journal (not UTF-8 text)") from None
    lines = text.split("\n")
    # A complete journal ends with "\n", so the last element is "" (or a partial line).
    complete, tail = lines[:-1], lines[-1]
    records: list[dict[str, Any]] = []
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise JournalError(f"{path}: line {number} is not a JSON record") from None
        if not isinstance(record, dict) or "k" not in record:
            raise JournalError(f"{path}: line {number} is not a journal record")
        records.append(record)
    del tail  # an interrupted write: everything before it is intact
    if not records or records[0]["k"] != "start":
        raise JournalError(f"{path}: not a journal (no start record on its first line)")
    start = records.pop(0)
    version = start.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise JournalError(f"{path}: the start record has no format version")
    if version > FORMAT_VERSION:
        raise JournalError(f"{path}: journal format {version} is newer than this "
                           f"pipeline reads ({FORMAT_VERSION}); update the project")
    missing = [key for key in ("journal_id", "uri", "experiment", "time_ms") if key not in start]
    if missing:
        raise JournalError(f"{path}: the start record lacks {', '.join(missing)}")
    return Journal(path=path, start=start, records=records)


def find_journals(target: Path) -> list[Path]:
    """The journal ``target`` names, or every journal in the folder ``target``, sweep parent
    first (the shortest path), then the jobs in order."""
    if target.is_file():
        return [target]
    if not target.is_dir():
        return []
    found = [p for p in target.rglob("journal*.jsonl") if p.is_file()]
    return sorted(found, key=lambda p: (len(p.relative_to(target).parts), _natural(p)))


def _natural(path: Path) -> list[tuple[int, int | str]]:
    """Sort key that puts job 10 after job 9 (numbers before names at any level)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in path.parts]
