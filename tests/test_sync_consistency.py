"""``make sync`` (``pipeline.commands.sync``) never contradicts itself: a run reads the same in the
store, its journal and its sweep's summary, whatever order crashes, syncs and resumes came in.

1. a sweep job synced after its sweep counted it failed: the parent is brought up to date;
2. a job of an offline sweep synced alone: its parent is sent first, or it is attached later;
3. a journal without an end keeps the status and error the run gave itself in the store;
4. a journal that is not what a run writes is refused with one line, before any run exists;
5. Ctrl-C or SIGTERM during a sync: one line, exit 130/143, no run left RUNNING;
and the invariant, through a real sweep killed, synced and resumed.

The synthetic journals here are written with the pipeline's own JournalWriter; the sweeps
are real (``python -m pipeline -m ...``) on real sqlite stores.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from pipeline.commands.sync import main as sync_main
from pipeline.config.paths import PROJECT_ROOT
from pipeline.tracking import record as names
from pipeline.tracking.journal import (
    JOURNAL_NAME,
    JournalError,
    JournalWriter,
    epochs_record,
    read_journal,
)
from pipeline.tracking.recorder import FINAL_BUDGET_S
from pipeline.tracking.sending import KILLED_WITHOUT_END
from tests.test_tracking_faults import (
    ENV,
    Background,
    background,
    fill,
    journaled_epochs,
    small_tmpfs,
    sqlite_uri,
    wait_for,
)

EXPERIMENT = "sync-consistency"
T0 = 1_700_000_000_000
KEYS = ["train_loss", "train_mse", "train_accuracy"]
FINISHED_END = {"k": "end", "status": "FINISHED", "error": None, "time_ms": T0 + 2_000_000,
                "last_epoch": 20, "best_epoch": None}
SWEEP = [sys.executable, "-m", "pipeline", "-m", "train.progress=false", "train.epochs=30"]


# -- helpers ------------------------------------------------------------------------------
def write_run(folder: Path, *, epochs: int = 20, end: dict[str, Any] | None = FINISHED_END,
              run_id: str | None = None, uri: str = "sqlite:///unused.db",
              chunk: int = 0) -> Path:
    """A run's output folder as the pipeline leaves it: an artifact folder and a complete
    journal (``end=None``: its process died before the end; ``chunk``: epochs per record)."""
    (folder / "artifacts").mkdir(parents=True, exist_ok=True)
    (folder / "artifacts" / "note.txt").write_text("an artifact\n")
    journal_id = uuid.uuid4().hex
    path = folder / JOURNAL_NAME
    writer = JournalWriter(path, {
        "journal_id": journal_id, "uri": uri, "experiment": EXPERIMENT, "run_id": run_id,
        "run_name": "synthetic", "parent_run_id": None, "parent_journal_id": None,
        "time_ms": T0, "tags": {names.JOURNAL_ID_TAG: journal_id, names.JOURNAL_TAG: str(path)}})
    records: list[dict[str, Any]] = [
        {"k": "params", "params": {"optimizer.lr": 0.02, "model.hidden_sizes": [8, 4],
                                   "data.seed": None}},
        {"k": "tags", "tags": {"config_digest": "abc"}},
        {"k": "plan", "first": 1, "last": epochs, "max_points": None},
    ]
    step = chunk or epochs
    for first in range(1, epochs + 1, step):
        steps = range(first, min(first + step, epochs + 1))
        rows = array("d", [v for s in steps for v in (s, T0 + s, 1 / s, 0.5 / s, s / epochs)])
        records.append(epochs_record(KEYS, rows, len(steps)))
    records += [
        {"k": "metrics", "values": {"test_accuracy": 0.9, "test_f1": 0.8}, "step": 0,
         "time_ms": T0 + 1_000_000, "of_model": False, "dataset": None},
        {"k": "artifacts", "path": str(folder / "artifacts"), "dest": None},
    ]
    if end is not None:
        records.append(dict(end))
    writer.append_many(records)
    writer.close()
    return path


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def edit_line(path: Path, number: int, change: Callable[[dict[str, Any]], Any]) -> None:
    """Replace line ``number`` (1-based) with ``change(record)``: a record, or raw text."""
    lines = lines_of(path)
    new = change(json.loads(lines[number - 1]))
    lines[number - 1] = new if isinstance(new, str) else json.dumps(new)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def runs_in(uri: str, experiment: str = EXPERIMENT) -> list[Any]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def cli_sync(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``python -m pipeline.commands.sync ARGS`` in this process: exit code, stdout, stderr."""
    code = sync_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- 4. a journal that is not what a run writes -------------------------------------------
def _set(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, key: value}


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {k: v for k, v in record.items() if k != key}


def _values(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda record: {**record, "values": {**record["values"], **values}}


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _bad_steps(record: dict[str, Any]) -> dict[str, Any]:
    rows = array("d", [float("nan"), T0, 1.0, 1.0, 1.0])
    return epochs_record(record["keys"], rows, 1)


# line: 1 start, 2 params, 3 tags, 4 plan, 5 epochs, 6 metrics, 7 artifacts, 8 end
BAD_EDITS: dict[str, tuple[int, Callable[[dict[str, Any]], Any], str]] = {
    "metric value that is text": (6, _values(test_accuracy="0.9"), "not a number"),
    "metrics record without values": (6, _drop("values"), "without 'values'"),
    "epochs record whose n is off": (5, lambda r: {**r, "n": r["n"] + 1}, "rows of"),
    "record of an unknown kind": (3, _set("k", "notes"), "unknown kind"),
    "JSON that is not an object": (3, lambda r: "[1, 2, 3]", "not a journal record"),
    "a number too large for a float64": (6, _values(test_f1=10 ** 400), "too large"),
    "a number of 5000 digits": (6, lambda r: '{"k":"metrics","values":{"a":' + "1" * 5000
                                + '},"time_ms":1}', "not a JSON record"),
    "a value nested 50 levels deep": (2, lambda r: {**r, "params": {"a": _nested(50)}},
                                      "nested"),
    "nesting deeper than Python's stack": (2, lambda r: "[" * 100_000 + "]" * 100_000,
                                           "not a JSON record"),
    "a boolean metric": (6, _values(test_f1=True), "not a number"),
    "a step that is not an integer": (6, _set("step", 1.5), "not an integer"),
    "a time that is text": (6, _set("time_ms", "now"), "not an integer"),
    "an epoch step that is NaN": (5, _bad_steps, "step"),
    "a tag name with a newline": (3, lambda r: {**r, "tags": {"a\nb": "x"}}, "not a valid name"),
    "a tag name that is a path": (3, lambda r: {**r, "tags": {"../x": "x"}}, "not a valid name"),
    "a tag value that is a number": (3, lambda r: {**r, "tags": {"a": 1}}, "not text"),
    "a lone surrogate in a tag": (3, lambda r: {**r, "tags": {"a": "\ud800"}}, "not valid"),
    "a NUL in a tag": (3, lambda r: {**r, "tags": {"a": "x\x00y"}}, "NUL"),
    "an artifact outside the run's folder": (7, _set("path", "/etc"), "outside the run"),
    "an artifact folder that climbs out": (7, _set("dest", "../../x"), "not a folder inside"),
    "an end status that is not one": (8, _set("status", "DONE"), "not one of"),
    "a plan with max_points 0": (4, _set("max_points", 0), "out of range"),
    "an epochs record with no metric names": (5, _set("keys", []), "without metric names"),
    "a start record without its journal id": (1, _drop("journal_id"), "lacks journal_id"),
    "a run id that is not an id": (1, _set("run_id", "x' or 1=1"), "not an id"),
}


@pytest.mark.parametrize("case", sorted(BAD_EDITS))
def test_a_bad_journal_is_refused_in_one_line_before_any_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    """Every record is checked before anything is sent: a journal edited by hand is
    refused with one line naming the file, the line and the problem, and no run (not even
    the store) is created."""
    line, change, problem = BAD_EDITS[case]
    path = write_run(tmp_path / "run")
    edit_line(path, line, change)
    db = tmp_path / "store" / "mlflow.db"

    code, out, err = cli_sync(capsys, str(tmp_path / "run"), "--uri", sqlite_uri(db))

    assert code == 1, (out, err)
    message = one_line(err)
    assert str(path) in message and f"line {line}" in message, message
    assert problem.lower() in message.lower(), message
    assert not db.exists()


def test_a_good_journal_is_sent_whole(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    """The journal the checks are tried on is itself sent: FINISHED, every epoch, the
    artifact; a second sync changes nothing."""
    path = write_run(tmp_path / "run")
    uri = sqlite_uri(tmp_path / "store" / "mlflow.db")
    code, out, err = cli_sync(capsys, str(path.parent), "--uri", uri)
    assert code == 0, err
    (run,) = runs_in(uri)
    assert run.info.status == "FINISHED" and "error" not in run.data.tags
    client = MlflowClient(uri)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 20
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"note.txt",
                                                                        "history.csv"}
    code, out, _ = cli_sync(capsys, str(path.parent), "--uri", uri)
    assert code == 0 and out.startswith("already sent")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
    | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)
KINDS = st.sampled_from(["start", "params", "tags", "plan", "epochs", "metrics", "inputs",
                         "artifacts", "model", "end", "other"])


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, int, Any, Any]:
    """(what, line, key, value): set a field, drop it, replace the line, add a record."""
    what = draw(st.sampled_from(["set", "drop", "replace", "insert"]))
    line = draw(st.integers(min_value=1, max_value=8))
    if what == "insert":
        record = draw(st.dictionaries(st.text(max_size=8), JSON, max_size=4))
        return what, line, None, {**record, "k": draw(KINDS)}
    key = draw(st.sampled_from(["k", "values", "params", "tags", "n", "keys", "f64le", "step",
                                "time_ms", "status", "error", "path", "dest", "first", "last",
                                "max_points", "journal_id", "version", "run_id", "dataset",
                                "of_model", "datasets"]))
    return what, line, key, draw(JSON)


def mutate(path: Path, mutation: tuple[str, int, Any, Any]) -> None:
    what, line, key, value = mutation
    lines = lines_of(path)
    record = json.loads(lines[line - 1])
    if what == "set":
        record[key] = value
    elif what == "drop":
        record.pop(key, None)
    elif what == "replace":
        record = value
    if what == "insert":
        lines.insert(line, json.dumps(value))
    else:
        lines[line - 1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutation=mutations())
def test_fuzzed_journals_read_back_or_fail_with_one_line(mutation: tuple[str, int, Any, Any]
                                                         ) -> None:
    """Whatever one edit does to a journal, reading it back returns it or raises
    JournalError naming the file, in one line: never another exception."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_run(Path(tmp) / "run", epochs=3)
        mutate(path, mutation)
        try:
            read_journal(path)
        except JournalError as error:
            assert str(error).startswith(f"{path}: ") and "\n" not in str(error)


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return sqlite_uri(tmp_path_factory.mktemp("fuzz") / "mlflow.db")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutation=mutations())
def test_fuzzed_journals_sync_or_fail_with_one_line_and_leave_nothing_running(
        fuzz_store: str, capsys: pytest.CaptureFixture[str],
        mutation: tuple[str, int, Any, Any]) -> None:
    """A fuzzed journal is sent, or refused in one line; no exception escapes and no run
    is left RUNNING in the store."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write_run(Path(tmp) / "run", epochs=3)
        mutate(path, mutation)
        capsys.readouterr()
        code, _, err = cli_sync(capsys, str(path.parent), "--uri", fuzz_store)
        if code != 0:
            assert code == 1 and one_line(err).startswith("error: "), err
    client = MlflowClient(fuzz_store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


# -- 3. a journal without an end ----------------------------------------------------------
OWN_ERROR = ("could not write /out/checkpoints/epoch_21000.json: No space left on device; "
             "free disk space there or point hydra.run.dir at another folder")


@pytest.mark.parametrize(("status", "error", "expected_status", "expected_error"), [
    ("FAILED", OWN_ERROR, "FAILED", OWN_ERROR),
    ("FAILED", f"{OWN_ERROR}; {names.INCOMPLETE} (make sync DIR=/out)", "FAILED", OWN_ERROR),
    ("KILLED", "terminated (SIGTERM); metrics and checkpoints so far were kept", "KILLED",
     "terminated (SIGTERM); metrics and checkpoints so far were kept"),
    ("FINISHED", None, "FINISHED", None),
    ("RUNNING", None, "KILLED", KILLED_WITHOUT_END),
    ("KILLED", "stale: no heartbeat, marked KILLED", "KILLED", KILLED_WITHOUT_END),
    ("KILLED", f"{names.INCOMPLETE} (the sync was cut short)", "KILLED", KILLED_WITHOUT_END),
])
def test_a_journal_without_end_keeps_the_status_the_run_gave_itself(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], status: str, error: str | None,
        expected_status: str, expected_error: str | None) -> None:
    """The store's run ended with its own status and error (a full disk kept the journal's
    last line): sync keeps them; only a run still RUNNING, or ended by someone else
    (clean-runs, an interrupted sync), becomes KILLED. The journal then says the same, so a
    sync to another store agrees."""
    uri = sqlite_uri(tmp_path / "store" / "mlflow.db")
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment(EXPERIMENT),
                               start_time=T0).info.run_id
    if error is not None:
        client.set_tag(run_id, names.ERROR_TAG, error)
    if status != "RUNNING":
        client.set_terminated(run_id, status=status, end_time=T0 + 5000)
    path = write_run(tmp_path / "run", end=None, run_id=run_id, uri=uri)

    code, out, err = cli_sync(capsys, str(path.parent))

    assert code == 0, err
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags.get(names.ERROR_TAG)) == (expected_status,
                                                                      expected_error)
    ended = read_journal(path).ended
    assert ended is not None and ended.get("by") == "sync"
    assert (ended["status"], ended["error"]) == (expected_status, expected_error)
    assert len(client.get_metric_history(run_id, "train_loss")) == 20

    code, out, _ = cli_sync(capsys, str(path.parent))
    assert code == 0 and out.startswith("already sent")
    other = sqlite_uri(tmp_path / "other" / "mlflow.db")
    assert cli_sync(capsys, str(path.parent), "--uri", other)[0] == 0
    (copy,) = runs_in(other)
    assert (copy.info.status, copy.data.tags.get(names.ERROR_TAG)) == (expected_status,
                                                                        expected_error)


def test_the_end_record_finds_room_on_a_full_disk(tmp_path: Path) -> None:
    """The journal keeps a reserve beside it: on a full disk a batch without the end
    fails whole (no partial line, the error names the journal), the end still lands."""
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        writer = JournalWriter(disk / JOURNAL_NAME, {
            "journal_id": "full", "uri": "sqlite:///x.db", "experiment": "e", "time_ms": 1})
        assert (disk / f".{JOURNAL_NAME}.reserve").stat().st_size > 0
        fill(disk / "filler")
        before = (disk / JOURNAL_NAME).read_bytes()
        big = {"k": "tags", "tags": {"t": "x" * 200_000}}
        with pytest.raises(OSError) as caught:
            writer.append_many([big])
        assert caught.value.errno == errno.ENOSPC
        assert str(disk / JOURNAL_NAME) in str(caught.value)
        assert (disk / JOURNAL_NAME).read_bytes() == before
        with pytest.raises(OSError):  # the batch did not fit: its end alone was written
            writer.append_many([big, names.end_record("FAILED", "the disk is full " * 500)])
        writer.close()
        ended = read_journal(disk / JOURNAL_NAME).ended
        assert ended is not None and ended["status"] == "FAILED"
        assert ended["error"].startswith("the disk is full")
        assert not (disk / f".{JOURNAL_NAME}.reserve").exists()


# -- the invariant, and real sweeps ---------------------------------------------------------
def sent_state(journal: Path) -> dict[str, Any]:
    return json.loads(journal.with_name(journal.name + ".sent").read_text())


def check_consistent(uri: str, *folders: Path) -> None:
    """Every run of the journals in ``folders`` reads the same in the store and in the
    journal that owns it (its last end record): status and error; a sweep's parent also
    its counts, in its tags, its journal and its summary's table, whose statuses and errors
    are its children's in the store."""
    import pandas as pd

    from pipeline.tracking.journal import find_journals

    client = MlflowClient(uri)
    for folder in folders:
        for path in find_journals(folder):
            journal = read_journal(path)
            state = sent_state(path)
            assert state["complete"] and state["uri"] == uri, (path, state)
            run = client.get_run(state["run_id"])
            if run.data.tags.get(names.JOURNAL_ID_TAG) != journal.journal_id:
                continue  # a sweep's parent taken over by a resumed sweep: its journal rules
            end = journal.ended
            assert end is not None, path
            assert (run.info.status, run.data.tags.get(names.ERROR_TAG)) == (
                end["status"], end["error"]), path
            if "sweep" not in journal.start:
                continue
            tags = run.data.tags
            counts = {k: int(tags[f"n_{k}"]) for k in ("children", "failed", "killed")}
            assert end["counts"] == counts, (path, end["counts"], counts)
            with contextlib.ExitStack() as stack:
                import tempfile

                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                table = pd.read_csv(client.download_artifacts(
                    run.info.run_id, "summary/children.csv", tmp), keep_default_na=False,
                    dtype=str)
            current = table[table["attempt"] == "current"]
            assert counts == {"children": len(current),
                              "failed": int(current["status"].isin(["FAILED", "RUNNING"]).sum()),
                              "killed": int((current["status"] == "KILLED").sum())}, path
            for row in table.itertuples():
                child = client.get_run(row.run_id)
                assert (row.status, row.error) == (child.info.status, child.data.tags.get(
                    names.ERROR_TAG, "")), row.run_id


def run_cli(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV,
                          timeout=timeout)


def sync(target: Path, *extra: str) -> subprocess.CompletedProcess:
    done = run_cli([sys.executable, "-m", "pipeline.commands.sync", str(target), *extra])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done


def sweep_args(tmp_path: Path, sweep_dir: Path, uri: str, *overrides: str) -> list[str]:
    return [*SWEEP, f"hydra.sweep.dir={sweep_dir}", f"tracking.uri={uri}",
            f"pipeline.cache_dir={tmp_path / 'cache'}", *overrides]


def parent_of(uri: str) -> Any:
    (parent,) = [r for r in runs_in(uri, "mlp-pipeline") if r.data.tags.get("sweep") == "parent"]
    return parent


def children_of(uri: str, parent_id: str) -> list[Any]:
    return [r for r in runs_in(uri, "mlp-pipeline")
            if r.data.tags.get(names.PARENT_TAG) == parent_id]


# MLflow's sqlite store waits up to 20 s for a lock (its busy timeout) before a call fails,
# whatever the call's budget; and a run's end can start shipping ~1 s after its journal's
# end record (it stops its heartbeat first).
SQLITE_BUSY_S = 20.0
END_GAVE_UP_S = max(FINAL_BUDGET_S, SQLITE_BUSY_S) + 3.0


def journal_ended(journal: Path) -> bool:
    try:
        return read_journal(journal).ended is not None
    except (OSError, JournalError):  # not there yet, or a line being written
        return False


def hold_store_locked_until_the_end_failed(db: Path, journal: Path) -> None:
    """Another process's exclusive lock on the sqlite store, from now until the run of
    ``journal`` has given up sending its end: END_GAVE_UP_S after its journal's end."""
    import sqlite3

    con = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        deadline = time.monotonic() + 300
        while not journal_ended(journal) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(END_GAVE_UP_S)
        con.execute("ROLLBACK")
    finally:
        con.close()


def sweeps_with_a_locked_end(tmp_path: Path, names_: list[str]) -> list[tuple[Path, str]]:
    """2-job sweeps (run at once) whose store another process locks as their second job
    starts, until that job has given up sending its end: the job's record is not in the
    store, and its sweep counts it as failed. Returns each sweep's folder and store once
    they have ended."""
    import threading

    sweeps = [(tmp_path / name / "sweep", tmp_path / name / "mlflow.db") for name in names_]
    with contextlib.ExitStack() as stack:
        started = [(stack.enter_context(background(sweep_args(
            tmp_path, sweep_dir, sqlite_uri(db), "optimizer.lr=0.01,0.1"), sweep_dir.parent /
            "launcher")), sweep_dir, db) for sweep_dir, db in sweeps]
        lockers: dict[Path, threading.Thread] = {}
        deadline = time.monotonic() + 300
        while len(lockers) < len(started) and time.monotonic() < deadline:
            for job, sweep_dir, db in started:
                journal = sweep_dir / "1" / JOURNAL_NAME
                if db not in lockers and journal.exists():
                    lockers[db] = threading.Thread(
                        target=hold_store_locked_until_the_end_failed, args=(db, journal))
                    lockers[db].start()
                assert db in lockers or job.alive(), job.output()[-3000:]
            time.sleep(0.002)
        for job, _, db in started:
            job.wait(timeout=300)
            lockers[db].join()
    return [(sweep_dir, sqlite_uri(db)) for sweep_dir, db in sweeps]


@pytest.mark.slow
def test_a_job_synced_after_its_sweep_counted_it_failed_updates_the_parent(
        tmp_path: Path) -> None:
    """Case 1: a job whose store was locked at its end counts as failed; syncing the sweep's
    folder, or only the job's (what the job's own error line says to do), sends the job
    FINISHED and brings the parent (sent before) up to date: FINISHED, no error, no failed
    job, in the store, its journal and its summary. The two sweeps run, and are synced,
    at once."""
    (sweep_a, uri_a), (sweep_b, uri_b) = sweeps_with_a_locked_end(tmp_path, ["a", "b"])
    for sweep_dir, uri in ((sweep_a, uri_a), (sweep_b, uri_b)):
        parent = parent_of(uri)
        assert parent.info.status == "FAILED", sweep_dir
        assert parent.data.tags["error"] == "1 job(s) failed"
        assert sent_state(sweep_dir / JOURNAL_NAME)["complete"]  # "already sent"

    syncs = [Background([sys.executable, "-m", "pipeline.commands.sync", str(target)],
                        tmp_path / f"sync-{name}")
             for name, target in (("a", sweep_a), ("b", sweep_b / "1"))]
    for job, uri in zip(syncs, (uri_a, uri_b), strict=True):
        done = job.wait(timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert "summary and status brought up to date" in done.stdout, done.stdout
        parent = parent_of(uri)
        assert parent.info.status == "FINISHED" and "error" not in parent.data.tags
        assert (parent.data.tags["n_children"], parent.data.tags["n_failed"]) == ("2", "0")
        assert {c.info.status for c in children_of(uri, parent.info.run_id)} == {
            "FINISHED"}
    check_consistent(uri_a, sweep_a)
    check_consistent(uri_b, sweep_b)


@pytest.mark.slow
def test_a_job_of_an_offline_sweep_synced_alone_goes_under_its_parent(tmp_path: Path) -> None:
    """Case 2: ``make sync DIR=<job folder>`` of an offline sweep sends the sweep's parent
    first and the job under it; the sweep's folder then sends the rest and updates the
    parent."""
    sweep_dir, uri = tmp_path / "sweep", sqlite_uri(tmp_path / "mlflow.db")
    done = run_cli(sweep_args(tmp_path, sweep_dir, uri, "optimizer.lr=0.01,0.1",
                              "tracking.mode=offline"))
    assert done.returncode == 0, done.stderr[-3000:]

    first = sync(sweep_dir / "1")
    assert first.stdout.count("sent to a new run") == 2, first.stdout
    parent = parent_of(uri)
    assert len(children_of(uri, parent.info.run_id)) == 1
    assert parent.info.status == "FINISHED" and parent.data.tags["n_children"] == "1"
    check_consistent(uri, sweep_dir / JOURNAL_NAME, sweep_dir / "1")

    second = sync(sweep_dir)
    assert "summary and status brought up to date" in second.stdout, second.stdout
    parent = parent_of(uri)
    assert len(children_of(uri, parent.info.run_id)) == 2
    assert parent.data.tags["n_children"] == "2" and len(runs_in(uri, "mlp-pipeline")) == 3
    check_consistent(uri, sweep_dir)
    assert sync(sweep_dir).stdout.count("already sent") == 3


@pytest.mark.slow
def test_a_job_sent_without_its_parent_is_attached_when_the_sweep_is_synced(
        tmp_path: Path) -> None:
    """Case 2: a job sent as a run without a parent (its sweep's journal was not there) is
    attached to the parent when the sweep's folder is synced, and counted in its summary."""
    sweep_dir, uri = tmp_path / "sweep", sqlite_uri(tmp_path / "mlflow.db")
    done = run_cli(sweep_args(tmp_path, sweep_dir, uri, "optimizer.lr=0.01,0.1",
                              "tracking.mode=offline"))
    assert done.returncode == 0, done.stderr[-3000:]
    aside = tmp_path / "parent-journal.jsonl"
    (sweep_dir / JOURNAL_NAME).rename(aside)
    alone = sync(sweep_dir / "1")
    (lonely,) = runs_in(uri, "mlp-pipeline")
    assert names.PARENT_TAG not in lonely.data.tags, alone.stdout
    aside.rename(sweep_dir / JOURNAL_NAME)

    done = sync(sweep_dir)
    assert "attached to its sweep" in done.stdout, done.stdout
    parent = parent_of(uri)
    children = children_of(uri, parent.info.run_id)
    assert lonely.info.run_id in {c.info.run_id for c in children} and len(children) == 2
    assert parent.data.tags["n_children"] == "2"
    check_consistent(uri, sweep_dir)


@pytest.mark.slow
def test_a_run_whose_output_disk_filled_keeps_its_status_and_error(tmp_path: Path) -> None:
    """Case 3, end to end: the output disk fills, the run ends FAILED with the error in the
    store but its journal has no end; once there is room, sync keeps FAILED and the error,
    and the journal then says the same."""
    from tests.test_tracking_faults import run_pipeline

    uri = sqlite_uri(tmp_path / "store" / "mlflow.db")
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        out = disk / "out"
        done = run_pipeline(tmp_path, out, f"tracking.uri={uri}", "train.epochs=100000",
                            checkpoint_every=1000)
        assert done.returncode == 1
        error = [line for line in done.stderr.splitlines() if line][-1]
        (run,) = runs_in(uri, "mlp-pipeline")
        assert run.info.status == "FAILED" and run.data.tags["error"].startswith(error)
        # The end found room (the journal's reserve) although the epochs before it did not.
        ended = read_journal(out / JOURNAL_NAME).ended
        assert ended is not None and ended["status"] == "FAILED"
        grown = subprocess.run(["mount", "-o", "remount,size=64m", str(disk)],
                               capture_output=True, text=True)
        assert grown.returncode == 0, grown.stderr
        sync(out)
        after = MlflowClient(uri).get_run(run.info.run_id)
        assert after.info.status == "FAILED"
        assert after.data.tags["error"] == run.data.tags["error"].split(
            f"; {names.INCOMPLETE}")[0]
        check_consistent(uri, out)


def sent_version(journal: Path) -> tuple[int, int] | None:
    """Which ``.sent`` file the journal has now: a sync rewrites it (a new file) as soon as
    it has the journal's run, created or found, before it sends anything to it."""
    try:
        info = journal.with_name(journal.name + ".sent").stat()
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns


# Seconds after the sync has the run (its .sent rewritten) that the signal comes: the
# run's 6000 metrics then take ~0.2 s to send the first time, ~0.45 s again (the store
# skips what it has; x2-3 on a busy machine). The first three land while the run is sent
# (first, again, halfway), the last ones let a sync end before its signal.
SIGNAL_AFTER_S = (0.0, 0.0, 0.15, 1.5, 5.0)
INTERRUPTED_EPOCHS = 2000


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sync_says_so_and_leaves_no_run_running(tmp_path: Path,
                                                               sig: signal.Signals) -> None:
    """Case 5: Ctrl-C or SIGTERM while a sync sends a run: one line that says how to
    finish, exit 130/143, no run left RUNNING (the run being sent is KILLED as an
    incomplete record); the next sync completes it. Each sync goes on where the last
    stopped: the first signals land while the run is sent for the first time, then again,
    until a sync ends before its signal."""
    folder = tmp_path / "run"
    path = write_run(folder, epochs=INTERRUPTED_EPOCHS, chunk=100)
    uri = sqlite_uri(tmp_path / "store" / "mlflow.db")
    code = 130 if sig == signal.SIGINT else 143
    interrupted = half_sent = 0
    finished = False
    for attempt, after in enumerate(SIGNAL_AFTER_S):
        before = sent_version(path)
        job = Background([sys.executable, "-m", "pipeline.commands.sync", str(folder),
                          "--uri", uri],
                         tmp_path / f"sync-{attempt}")
        wait_for("the sync to have the run", lambda b=before: sent_version(path) != b, job,
                 timeout=60, every=0.001)
        time.sleep(after)
        job.process.send_signal(sig)
        done = job.wait(timeout=60)
        if done.returncode == 0:
            finished = True
            break  # it finished before the signal
        interrupted += 1
        assert done.returncode == code, (after, done.stdout, done.stderr)
        line = one_line(done.stderr)
        assert line.startswith("interrupted: ") and f"make sync DIR={folder}" in line, line
        for run in runs_in(uri):
            assert run.info.status != "RUNNING", (after, line)
            if run.info.run_id in line:
                half_sent += 1
                assert run.info.status == "FINISHED" or run.data.tags[
                    names.ERROR_TAG].startswith(names.INCOMPLETE), run.data.tags
    assert interrupted >= 2 and half_sent >= 2, (interrupted, half_sent)
    if not finished:  # a machine so slow that every sync was cut short
        sync(folder, "--uri", uri)
    (run,) = runs_in(uri)
    assert run.info.status == "FINISHED" and names.ERROR_TAG not in run.data.tags
    assert len(MlflowClient(uri).get_metric_history(run.info.run_id, "train_loss")) == (
        INTERRUPTED_EPOCHS)
    assert read_journal(path).ended == FINISHED_END


def kill_mid_job(tmp_path: Path, sweep_dir: Path, uri: str) -> None:
    """A 3-job sweep whose launcher is SIGKILLed while its second job trains."""
    args = sweep_args(tmp_path, sweep_dir, uri, "optimizer.lr=0.01,0.02,0.05",
                      "train.epochs=20000")
    with background(args, tmp_path / "launcher") as job:
        wait_for("the second job's epochs", lambda: journaled_epochs(
            sweep_dir / "1" / JOURNAL_NAME) > 0, job, every=0.02)
        os.kill(job.process.pid, signal.SIGKILL)
        job.wait(timeout=60)


def resume(tmp_path: Path, sweep_dir: Path, uri: str, parent_id: str) -> None:
    done = run_cli(sweep_args(tmp_path, sweep_dir, uri, "optimizer.lr=0.01,0.02,0.05",
                              "train.epochs=20000", f"sweep.resume={parent_id}"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("order", ["sync, then resume", "resume, then sync"])
def test_a_killed_sweep_reads_the_same_everywhere_after_sync_and_resume(
        tmp_path: Path, order: str) -> None:
    """The invariant: a sweep whose launcher is SIGKILLed mid-job, then synced and resumed
    (in either order), and synced again: every run's status, error and counts read the same
    in the store, its journal and its parent's summary, and nothing is left RUNNING."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    first, second = tmp_path / "sweep", tmp_path / "resumed"
    kill_mid_job(tmp_path, first, uri)
    parent = parent_of(uri)
    assert parent.info.status == "RUNNING"
    if order == "sync, then resume":
        sync(first)
        check_consistent(uri, first)
        assert parent_of(uri).info.status == "KILLED"
        resume(tmp_path, second, uri, parent.info.run_id)
    else:
        resume(tmp_path, second, uri, parent.info.run_id)
        sync(first)
    check_consistent(uri, first, second)
    sync(first)
    sync(second)
    check_consistent(uri, first, second)
    parent = parent_of(uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["n_children"] == "3"
    assert not [r for r in runs_in(uri, "mlp-pipeline") if r.info.status == "RUNNING"]


class StoreLock:
    """Another process's lock on a sqlite store, released once: ``EXCLUSIVE`` keeps every
    query of the sync waiting; ``DEFERRED`` (a reader) lets it read and write but keeps
    its commits waiting."""

    def __init__(self, db: Path, how: str) -> None:
        import sqlite3

        self._con: Any = sqlite3.connect(db, timeout=30, isolation_level=None)
        self._con.execute(f"BEGIN {how}")
        self._con.execute("SELECT count(*) FROM runs").fetchall()

    def release(self) -> None:
        if self._con is not None:
            self._con.execute("ROLLBACK")
            self._con.close()
            self._con = None


def sweep_moment(moment: str, sweep_dir: Path, db: Path) -> Callable[[], bool]:
    """Whether a sync of ``sweep_dir`` into ``db`` has reached ``moment``."""
    jobs = sorted(sweep_dir.glob(f"*/{JOURNAL_NAME}"))

    def jobs_sent() -> bool:
        with contextlib.suppress(OSError, ValueError):
            return all(sent_state(job)["complete"] for job in jobs)
        return False

    return {"creating the parent": db.with_name(db.name + "-journal").exists,
            "parent created": sweep_dir.joinpath(JOURNAL_NAME + ".sent").exists,
            "jobs sent": jobs_sent}[moment]


# Where the signal comes while a sweep's folder is synced: where runs are created and
# where the parent is summarised. "locked": another process locks the store as the moment
# comes, so that the sync waits inside a store call; the signal comes, then the lock goes:
# the interrupt lands in that call, between its query and its rows, or after the INSERT
# that created the parent was committed but before the call returned. Otherwise: so many
# seconds after the moment (a summary takes ~1 s).
SWEEP_SIGNALS: list[tuple[str, str | float]] = [
    ("creating the parent", "locked"), ("parent created", "locked"), ("jobs sent", "locked"),
    ("parent created", 0.0), ("parent created", 0.02), ("jobs sent", 0.05),
    ("jobs sent", 0.3), ("jobs sent", 0.6)]


def interrupt_sweep_sync(tmp_path: Path, original: Path, attempt: int, moment: str,
                         how: str | float
                         ) -> tuple[subprocess.CompletedProcess, float, Path, str]:
    """Sync a fresh copy of the sweep ``original`` to a new store, Ctrl-C as ``moment``
    comes (``how``: see SWEEP_SIGNALS); the sync's result, how long it took to exit after
    the signal, the copy and the store."""
    import shutil

    from pipeline.tracking.store import experiment_id, open_store

    sweep_dir = tmp_path / f"copy-{attempt}"
    shutil.copytree(original, sweep_dir)
    db = tmp_path / f"store-{attempt}" / "mlflow.db"
    lock: StoreLock | None = None
    if moment == "creating the parent":  # the sync's first write is then the parent's
        experiment_id(open_store(sqlite_uri(db)), read_journal(
            sweep_dir / JOURNAL_NAME).start["experiment"])
        lock = StoreLock(db, "DEFERRED")
    try:
        with background([sys.executable, "-m", "pipeline.commands.sync", str(sweep_dir), "--uri",
                         sqlite_uri(db)], tmp_path / f"sync-{attempt}") as job:
            wait_for(moment, sweep_moment(moment, sweep_dir, db), job, timeout=60,
                     every=0.001)
            if how == "locked":
                lock = lock or StoreLock(db, "EXCLUSIVE")
                time.sleep(0.2)  # the sync's store call (its commit) waits for the lock
            else:
                time.sleep(float(how))
            job.process.send_signal(signal.SIGINT)
            signalled = time.monotonic()
            if lock is not None:
                time.sleep(0.05)
                lock.release()
            done = job.wait(timeout=60)
            took = time.monotonic() - signalled
    finally:
        if lock is not None:
            lock.release()
    return done, took, sweep_dir, sqlite_uri(db)


@pytest.mark.slow
def test_an_interrupted_sync_of_a_sweep_leaves_nothing_running_and_finishes_later(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Case 5 for a sweep: Ctrl-C at any point of syncing an offline sweep (its parent
    created first, summarised last) leaves no run RUNNING, and exits in seconds; the next
    sync makes the sweep read the same everywhere. Each attempt syncs a fresh copy of the
    sweep to a new store; the signals come where runs are created and where the parent is
    summarised, some inside a store call (see SWEEP_SIGNALS)."""
    original = tmp_path / "sweep"
    done = run_cli(sweep_args(tmp_path, original, sqlite_uri(tmp_path / "unused.db"),
                              "optimizer.lr=0.01,0.02,0.05", "tracking.mode=offline"))
    assert done.returncode == 0, done.stderr[-3000:]
    interrupted = 0
    for attempt, (moment, how) in enumerate(SWEEP_SIGNALS):
        done, took, sweep_dir, uri = interrupt_sweep_sync(tmp_path, original, attempt,
                                                          moment, how)
        where = (moment, how, done.stdout, done.stderr[-3000:])
        assert done.returncode in ((130,) if how == "locked" else (0, 130)), where
        if done.returncode == 130:
            interrupted += 1
            line = one_line(done.stderr)
            assert line.startswith("interrupted: "), where
            if how == "locked":  # a run was being created or sent: it is named
                assert "(none RUNNING)" in line, where
        assert not [r for r in runs_in(uri, "mlp-pipeline") if r.info.status == "RUNNING"], (
            where)
        # A sync that waited for the lock its own interrupted query kept took 40 s.
        assert took < 10, where
        code, _, err = cli_sync(capsys, str(sweep_dir), "--uri", uri)
        assert code == 0, err
        check_consistent(uri, sweep_dir)
        parent = parent_of(uri)
        assert parent.info.status == "FINISHED" and parent.data.tags["n_children"] == "3"
        assert len(runs_in(uri, "mlp-pipeline")) == 4
    assert interrupted >= 4, interrupted
