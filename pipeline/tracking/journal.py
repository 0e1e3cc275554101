"""A run's journal: everything it records, appended to a local file before any store sees it.

One JSON object per line (JSON Lines), appended and flushed as the run goes, so a
crash (SIGKILL, power loss) loses at most the last, partial line. The store is fed
from the journal in the background, and ``python -m pipeline.commands.sync`` replays a journal
into any store later; every record is applied idempotently, so replaying twice
changes nothing.

Record kinds (the ``k`` field):

* ``start``     the first line: journal id, store URI, experiment, run id (null when
                offline), run name, parent run or parent journal, start time, tags;
                a sweep's parent also ``sweep``: ``{"metric": m, "direction": d}``;
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
                "time_ms": t, "last_epoch": e | null, "best_epoch": e | null}``; a
                sweep's parent also ``counts`` (``{"children", "failed", "killed"}``),
                ``not_started``, ``max_failures`` and ``aborted``. Only ``end`` records
                may follow an ``end``: ``pipeline.commands.sync`` appends one (``"by": "sync"``)
                when it decides or changes how the run ended; the last one holds.

A journal is read back as untrusted input (it may have been edited, or come from
another machine): :func:`read_journal` checks every field of every record against
what the store accepts before anything is sent, and names the line of the first
problem. Paths in records are taken relative to the run's folder, wherever the
folder is now, and never lead outside it.

This module knows nothing of MLflow.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import json
import os
import posixpath
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1
JOURNAL_NAME = "journal.jsonl"
STATUSES = ("FINISHED", "FAILED", "KILLED")
# Kept free beside a live journal, and given back when the disk fills: the record that
# says how the run ended always finds room.
RESERVE_BYTES = 64 * 1024
MAX_END_ERROR = 2000  # an end record written into the reserve keeps this much of its error

# What the stores accept (MLflow 3.17's limits, and the SQL stores' column widths): a
# record beyond them would fail half-way through a sync.
MAX_NAME = 250  # a param, metric or tag name
MAX_RUN_NAME = 250
MAX_EXPERIMENT = 256
MAX_DATASETS = 1000
DATASET_LIMITS = {"name": 500, "digest": 36, "source_type": 36, "source": 65535,
                  "schema": 1048575, "profile": 16777215, "context": 500}
MAX_DEPTH = 8  # nesting of a JSON value (a param's list of lists)
MAX_INT = 2 ** 63  # steps and times are 64-bit integers in the stores
MAX_EXACT = 2 ** 53  # steps and times held as float64 (epochs records) are whole below this
NAME = re.compile(r"[/\w.\- :]+")  # MLflow's param, metric and tag names
ID = re.compile(r"[A-Za-z0-9][\w\-]{0,255}")  # run ids (MLflow's rule) and journal ids
# The tag naming the journal where the run wrote it (record.JOURNAL_TAG; record imports
# this module): the folder its paths are relative to.
RECORDED_AT_TAG = "pipeline.journal"


class JournalError(ValueError):
    """A journal that cannot be read (not a journal, a corrupt line, a newer format)."""


class _Bad(ValueError):
    """One record's problem, before the path and line number are added."""


def epochs_record(keys: list[str], rows: Any, n: int) -> dict[str, Any]:
    """An ``epochs`` record of ``n`` rows; ``rows``: the flat float64 values (an
    ``array('d')``: step, time_ms, then one value per key, row after row)."""
    data = rows.tobytes() if sys.byteorder == "little" else np.asarray(
        rows, dtype="<f8").tobytes()
    return {"k": "epochs", "keys": keys, "n": n, "f64le": base64.b64encode(data).decode()}


def epoch_rows(record: Mapping[str, Any]) -> np.ndarray:
    """An ``epochs`` record's rows: (n, 2 + len(keys)) float64; column 0 the step, 1 the
    time in ms."""
    try:
        flat = np.frombuffer(base64.b64decode(record["f64le"], validate=True), dtype="<f8")
    except (binascii.Error, ValueError):
        raise JournalError("an epochs record's values are not base64 float64") from None
    width = 2 + len(record["keys"])
    if flat.size != record["n"] * width:
        raise JournalError(f"an epochs record holds {flat.size} values, not {record['n']} "
                           f"rows of {width}")
    return flat.reshape(record["n"], width)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_journal_id() -> str:
    return uuid.uuid4().hex


def _line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("utf-8")


class JournalWriter:
    """Appends records to one journal file; safe to call from several threads.

    ``append`` writes whole lines (a failed write is cut back off, so the file never
    holds part of a record); ``sync`` also asks the disk to keep them (fsync). A small
    reserve file beside the journal is given back when the disk fills, so that the
    ``end`` record still lands.
    """

    def __init__(self, path: Path, start: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _set_aside(path)
        self.path = path
        self._lock = threading.Lock()
        # O_EXCL: a journal is never appended to by two runs.
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
                                       0o644)
        self._reserve = path.with_name(f".{path.name}.reserve")
        self.wrote_end = False  # an end record is in the journal (see append_many)
        self.append({"k": "start", "version": FORMAT_VERSION, **start})
        self.sync()
        self._keep_reserve()

    def _keep_reserve(self) -> None:
        """Best effort: a disk already too full for it only loses the safety margin."""
        try:
            with open(self._reserve, "wb") as handle:
                handle.write(b"\0" * RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                self._reserve.unlink(missing_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        self.append_many([record])

    def append_many(self, records: list[Mapping[str, Any]]) -> None:
        """Append whole lines; an OSError (a full disk) names the journal.

        When the disk is full and ``records`` hold the run's ``end``, the reserve is given
        back and the batch tried again; if it still does not fit, the ``end`` record alone
        (its error shortened) is written before the error is raised.
        """
        if not records:
            return
        data = b"".join(_line(r) for r in records)
        ends = [r for r in records if r.get("k") == "end"]
        with self._lock:
            try:
                self._write(data)
            except OSError as error:
                if not ends or error.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise OSError(error.errno, error.strerror, str(self.path)) from error
                self._reserve.unlink(missing_ok=True)
                try:
                    self._write(data)
                except OSError:
                    self._write_end_alone(ends[-1])
                    raise OSError(error.errno, error.strerror, str(self.path)) from error
            self.wrote_end = self.wrote_end or bool(ends)

    def _write_end_alone(self, record: Mapping[str, Any]) -> None:
        """The end record by itself, its error shortened (the caller holds the lock)."""
        end = dict(record)
        if isinstance(end.get("error"), str):
            end["error"] = end["error"][:MAX_END_ERROR]
        with contextlib.suppress(OSError):
            self._write(_line(end))
            self.wrote_end = True

    def _write(self, data: bytes) -> None:
        """Write ``data`` at the end, all or nothing (the caller holds the lock)."""
        if self._fd is None:
            raise ValueError(f"the journal {self.path} is closed")
        size = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except BaseException:  # a full disk, or Ctrl-C between two writes
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, size)
            raise

    def sync(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self._reserve.unlink(missing_ok=True)


def append_record(path: Path, record: Mapping[str, Any]) -> None:
    """Append ``record`` to the closed journal ``path`` (``pipeline.commands.sync`` closing a run);
    a partial last line, left by a crash, is cut off first. Raises OSError."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        tail = os.pread(fd, min(size, 1 << 20), max(0, size - (1 << 20)))
        cut = tail.rfind(b"\n")
        if tail and not tail.endswith(b"\n"):
            os.ftruncate(fd, size - len(tail) + cut + 1)
        os.lseek(fd, 0, os.SEEK_END)
        data = memoryview(_line(record))
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _set_aside(path: Path) -> None:
    """A folder reused by a second run keeps the first run's journal (and its sync state)
    as ``journal-<journal id>.jsonl``: it may not have been sent yet."""
    if not path.exists():
        return
    try:
        with path.open(encoding="utf-8") as old_journal:
            old_id = str(json.loads(old_journal.readline())["journal_id"])
        if not ID.fullmatch(old_id):
            raise ValueError(old_id)
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        old_id = f"{int(time.time())}"
    for suffix in ("", ".sent"):
        old = path.with_name(path.name + suffix)
        if old.exists():
            old.rename(path.with_name(f"{path.stem}-{old_id}{path.suffix}{suffix}"))


@dataclass(frozen=True)
class Journal:
    """A journal read back: its start record and the records after it, in order (paths
    in them point into the journal's folder as it is now)."""

    path: Path
    start: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def journal_id(self) -> str:
        return str(self.start["journal_id"])

    @property
    def ended(self) -> dict[str, Any] | None:
        """The last ``end`` record, or None when the process died before writing one."""
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
    """Read and check a journal; a partial LAST line (a crash mid-write) is ignored.

    Raises :class:`JournalError` with the path (and the line) for anything else that is
    wrong, whatever the file holds.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise JournalError(f"{path}: not a journal (not UTF-8 text)") from None
    except OSError as error:
        raise JournalError(f"{path}: cannot be read ({error.strerror or error})") from None
    lines = text.split("\n")
    # A complete journal ends with "\n", so the last element is "" (or a partial line).
    complete = lines[:-1]  # the last: an interrupted write; everything before it is intact
    if not complete:
        raise JournalError(f"{path}: not a journal (no start record on its first line)")
    start = _parsed(path, 1, complete[0])
    if start is None or start.get("k") != "start":
        raise JournalError(f"{path}: not a journal (no start record on its first line)")
    try:
        _check_start(start)
    except _Bad as problem:
        raise JournalError(f"{path}: line 1: {problem}") from None
    folder = _recorded_folder(start, path)
    records: list[dict[str, Any]] = []
    keys: list[str] | None = None
    for number, line in enumerate(complete[1:], start=2):
        record = _parsed(path, number, line)
        if record is None or not isinstance(record.get("k"), str):
            raise JournalError(f"{path}: line {number} is not a journal record")
        try:
            if records and records[-1]["k"] == "end" and record["k"] != "end":
                raise _Bad(f"a {_show(record['k'])} record after the end record")
            record = _check_record(record, folder, path.parent)
            if record["k"] == "epochs":
                if keys is not None and record["keys"] != keys:
                    raise _Bad(f"the epoch metrics changed names ({keys} -> {record['keys']})")
                keys = record["keys"]
        except _Bad as problem:
            raise JournalError(f"{path}: line {number}: {problem}") from None
        records.append(record)
    return Journal(path=path, start=start, records=records)


def read_start(path: Path) -> dict[str, Any] | None:
    """A journal's start record, checked (None if ``path`` is not a journal): to find one
    journal among many without reading them whole."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20).decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not first.endswith("\n"):
        return None
    try:
        start = _parsed(path, 1, first[:-1])
        if start is None or start.get("k") != "start":
            return None
        _check_start(start)
    except (JournalError, _Bad):
        return None
    return start


def _parsed(path: Path, number: int, line: str) -> dict[str, Any] | None:
    """One line as a JSON object (None: valid JSON, but not an object)."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError):  # bad JSON, a 5000-digit number, deep nesting
        raise JournalError(f"{path}: line {number} is not a JSON record") from None
    if not isinstance(value, dict):
        return None
    try:
        _check_plain(value, 0)
    except _Bad as problem:
        raise JournalError(f"{path}: line {number}: {problem}") from None
    return value


def _recorded_folder(start: Mapping[str, Any], path: Path) -> Path:
    """The folder the run wrote its journal in (its records' paths are in it)."""
    recorded = (start.get("tags") or {}).get(RECORDED_AT_TAG)
    if isinstance(recorded, str) and os.path.isabs(recorded):
        return Path(os.path.normpath(recorded)).parent
    return path.parent


# -- checks -----------------------------------------------------------------------------
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_plain(value: Any, depth: int) -> None:
    """Nesting within :data:`MAX_DEPTH`; text the stores can hold (UTF-8, no NUL)."""
    if depth > MAX_DEPTH:
        raise _Bad(f"a value nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_plain(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_plain(item, depth + 1)


def _check_text(text: str) -> None:
    if "\0" in text:
        raise _Bad(f"text with a NUL character ({_show(text)})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(f"text that is not valid Unicode ({_show(text)})") from None


def _field(record: Mapping[str, Any], key: str, kinds: type | tuple[type, ...], *,
           optional: bool = False) -> Any:
    """``record[key]``, checked to be of ``kinds`` (None allowed when ``optional``)."""
    if key not in record:
        if optional:
            return None
        raise _Bad(f"a {record['k']} record without {key!r}")
    value = record[key]
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in (
            kinds if isinstance(kinds, tuple) else (kinds,))):
        raise _Bad(f"{record['k']}.{key} is {_show(value)}, not {_kind_name(kinds)}")
    return value


def _kind_name(kinds: type | tuple[type, ...]) -> str:
    names = {str: "text", int: "an integer", float: "a number", bool: "true or false",
             dict: "an object", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in (
        kinds if isinstance(kinds, tuple) else (kinds,)))


def _text(record: Mapping[str, Any], key: str, limit: int, *, optional: bool = False,
          pattern: re.Pattern[str] | None = None) -> str | None:
    value = _field(record, key, str, optional=optional)
    if value is None:
        return None
    if len(value) > limit:
        raise _Bad(f"{record['k']}.{key} is longer than {limit} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _Bad(f"{record['k']}.{key} is {_show(value)}, not an id")
    return value


def _integer(record: Mapping[str, Any], key: str, low: int = 0, high: int = MAX_INT, *,
             optional: bool = False) -> int | None:
    value = _field(record, key, int, optional=optional)
    if value is not None and not low <= value < high:
        raise _Bad(f"{record['k']}.{key} is {_show(value)}, out of range [{low}, {high})")
    return value


def _name(name: Any, what: str) -> str:
    """A param, metric or tag name as MLflow takes it (letters, digits, ``_-. :/``; no
    path that would resolve to another name)."""
    if not isinstance(name, str) or not name:
        raise _Bad(f"{what} {_show(name)} is not a name")
    if len(name) > MAX_NAME:
        raise _Bad(f"{what} {_show(name)} is longer than {MAX_NAME} characters")
    normal = posixpath.normpath(name)
    if not NAME.fullmatch(name) or normal != name or normal.startswith(("..", "/")):
        raise _Bad(f"{what} {_show(name)} is not a valid name (letters, digits, _ - . : / "
                   "and spaces, not a path that leaves its folder)")
    return name


def _names(record: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    mapping = _field(record, key, dict)
    for name in mapping:
        _name(name, what)
    return mapping


def _number(value: Any, what: str) -> float:
    """A value a float64 holds (NaN and infinities included; True is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{what} is {_show(value)}, not a number")
    try:
        return float(value)
    except OverflowError:
        raise _Bad(f"{what} is {_show(value)}, too large for a float64") from None


def _check_start(start: Mapping[str, Any]) -> None:
    version = start.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Bad("the start record has no format version")
    if version > FORMAT_VERSION:
        raise _Bad(f"journal format {version} is newer than this pipeline reads "
                   f"({FORMAT_VERSION}); update the project")
    missing = [key for key in ("journal_id", "uri", "experiment", "time_ms") if key not in start]
    if missing:
        raise _Bad(f"the start record lacks {', '.join(missing)}")
    _text(start, "journal_id", 256, pattern=ID)
    _text(start, "uri", 4096)
    if not _text(start, "experiment", MAX_EXPERIMENT).strip():  # type: ignore[union-attr]
        raise _Bad("start.experiment is empty")
    for key in ("run_id", "parent_run_id", "parent_journal_id"):
        _text(start, key, 256, optional=True, pattern=ID)
    _text(start, "run_name", MAX_RUN_NAME, optional=True)
    _integer(start, "time_ms")
    tags = _field(start, "tags", dict, optional=True) or {}
    for name, value in tags.items():
        _name(name, "tag")
        if not isinstance(value, str):
            raise _Bad(f"tag {name!r} is {_show(value)}, not text")
    sweep = _field(start, "sweep", dict, optional=True)
    if sweep is not None:
        _name(sweep.get("metric"), "the sweep's metric")
        if sweep.get("direction") not in ("minimize", "maximize"):
            raise _Bad(f"start.sweep.direction is {_show(sweep.get('direction'))}, not "
                       "minimize or maximize")


def _check_record(record: dict[str, Any], recorded: Path, folder: Path) -> dict[str, Any]:
    """``record`` checked; a copy whose paths point into ``folder`` (where the journal is
    now) when it names files the run wrote in ``recorded``."""
    check = _CHECKS.get(record["k"])
    if check is None:
        raise _Bad(f"a record of unknown kind {_show(record['k'])}")
    return check(record, recorded, folder) or record


def _check_params(record: dict[str, Any], *_: Path) -> None:
    _names(record, "params", "param")  # values: any JSON value, sent as its text


def _check_tags(record: dict[str, Any], *_: Path) -> None:
    for name, value in _names(record, "tags", "tag").items():
        if not isinstance(value, str):
            raise _Bad(f"tag {name!r} is {_show(value)}, not text")


def _check_plan(record: dict[str, Any], *_: Path) -> None:
    _integer(record, "first", 0, MAX_EXACT)
    _integer(record, "last", 0, MAX_EXACT)
    _integer(record, "max_points", 10, MAX_INT, optional=True)


def _check_epochs(record: dict[str, Any], *_: Path) -> None:
    keys = _field(record, "keys", list)
    if not keys:
        raise _Bad("an epochs record without metric names")
    for key in keys:
        _name(key, "metric")
    if len(set(keys)) != len(keys):
        raise _Bad(f"an epochs record names a metric twice ({keys})")
    _integer(record, "n", 0, MAX_INT)
    _field(record, "f64le", str)
    try:
        rows = epoch_rows(record)
    except JournalError as error:
        raise _Bad(str(error)) from None
    steps, stamps = rows[:, 0], rows[:, 1]
    if not (np.isfinite(steps).all() and (steps == np.floor(steps)).all()
            and ((steps >= 0) & (steps < MAX_EXACT)).all()):
        raise _Bad("an epochs record holds a step that is not a whole number in range")
    if not (np.isfinite(stamps).all() and ((stamps >= 0) & (stamps < MAX_EXACT)).all()):
        raise _Bad("an epochs record holds a time that is not a number of ms in range")


def _check_metrics(record: dict[str, Any], *_: Path) -> None:
    values = _names(record, "values", "metric")
    for name, value in values.items():
        _number(value, f"metric {name!r}")
    _integer(record, "step", optional=True)
    _integer(record, "time_ms")
    _field(record, "of_model", bool, optional=True)
    dataset = _field(record, "dataset", list, optional=True)
    if dataset is not None and not (
            len(dataset) == 2 and all(isinstance(part, str) and part for part in dataset)
            and len(dataset[0]) <= DATASET_LIMITS["name"]
            and len(dataset[1]) <= DATASET_LIMITS["digest"]):
        raise _Bad(f"metrics.dataset is {_show(dataset)}, not [name, digest]")


def _check_inputs(record: dict[str, Any], *_: Path) -> None:
    datasets = _field(record, "datasets", list)
    if len(datasets) > MAX_DATASETS:
        raise _Bad(f"more than {MAX_DATASETS} datasets in one record")
    for item in datasets:
        if not isinstance(item, dict):
            raise _Bad(f"inputs.datasets holds {_show(item)}, not a dataset")
        entry = {**item, "k": "inputs.datasets"}
        for key, limit in DATASET_LIMITS.items():
            optional = key in ("schema", "profile")
            if not (_text(entry, key, limit, optional=optional) or optional):
                raise _Bad(f"inputs.datasets.{key} is empty")


def _check_artifacts(record: dict[str, Any], recorded: Path, folder: Path) -> dict[str, Any]:
    path = _inside(_field(record, "path", str), recorded, folder)
    dest = _field(record, "dest", str, optional=True)
    if dest is not None:
        normal = posixpath.normpath(dest)
        if (not dest or len(dest) > 1000 or normal != dest or normal.startswith(("..", "/"))
                or not NAME.fullmatch(dest)):
            raise _Bad(f"artifacts.dest is {_show(dest)}, not a folder inside the run")
    return {**record, "path": str(path)}


def _check_model(record: dict[str, Any], recorded: Path, folder: Path) -> dict[str, Any]:
    path = _inside(_field(record, "checkpoint", str), recorded, folder)
    for key in ("features", "classes"):
        items = _field(record, key, list)
        if not items or not all(isinstance(i, str) and i and len(i) <= 1000 for i in items):
            raise _Bad(f"model.{key} is {_show(items)}, not a list of names")
    return {**record, "checkpoint": str(path)}


def _inside(value: str, recorded: Path, folder: Path) -> Path:
    """``value`` (a path the run wrote in ``recorded``) as a path in ``folder``; a path
    outside the run's folder, or leading out of it through a link, is refused."""
    if not os.path.isabs(value):
        raise _Bad(f"the path {_show(value)} is not absolute")
    try:
        relative = Path(os.path.normpath(value)).relative_to(recorded)
    except ValueError:
        raise _Bad(f"the path {_show(value)} is outside the run's folder {recorded}") from None
    local = folder / relative
    try:
        inside = local.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a loop of links
        inside = False
    if not inside:
        raise _Bad(f"the path {_show(value)} leads outside the run's folder")
    return local


def _check_end(record: dict[str, Any], *_: Path) -> None:
    if record.get("status") not in STATUSES:
        raise _Bad(f"end.status is {_show(record.get('status'))}, not one of "
                   f"{', '.join(STATUSES)}")
    _field(record, "error", str, optional=True)
    _integer(record, "time_ms")
    _integer(record, "last_epoch", optional=True)
    _integer(record, "best_epoch", optional=True)
    _field(record, "by", str, optional=True)
    counts = _field(record, "counts", dict, optional=True)
    if counts is not None:
        for key in ("children", "failed", "killed"):
            _integer({"k": "end.counts", **counts}, key)
    _integer(record, "not_started", optional=True)
    _integer(record, "max_failures", optional=True)
    _field(record, "aborted", bool, optional=True)


_CHECKS: dict[str, Callable[[dict[str, Any], Path, Path], dict[str, Any] | None]] = {
    "params": _check_params, "tags": _check_tags, "plan": _check_plan,
    "epochs": _check_epochs, "metrics": _check_metrics, "inputs": _check_inputs,
    "artifacts": _check_artifacts, "model": _check_model, "end": _check_end,
}


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


def find_parent_journal(journal: Journal, *, levels: int = 4) -> Path | None:
    """The journal of the sweep ``journal``'s run belongs to (its ``parent_journal_id``),
    looked for in the folders that enclose the run's, nearest first."""
    wanted = journal.start.get("parent_journal_id")
    return find_sweep_journal(journal.path, str(wanted), levels=levels) if wanted else None


def find_sweep_journal(journal: Path, sweep_journal_id: str, *, levels: int = 4
                       ) -> Path | None:
    """The sweep parent's journal ``sweep_journal_id`` in the folders that enclose the
    journal ``journal`` of one of its jobs, nearest first (None: not there)."""
    for folder in list(journal.parent.parents)[:levels]:
        with contextlib.suppress(OSError):
            for candidate in sorted(folder.glob("journal*.jsonl")):
                start = read_start(candidate) if candidate.is_file() else None
                if (start is not None and start["journal_id"] == sweep_journal_id
                        and "sweep" in start):
                    return candidate
    return None

