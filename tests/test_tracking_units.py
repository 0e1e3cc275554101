"""pipeline.tracking's parts, one at a time: journal, thinning, checkpoints, store, shipper.

Fast: one sqlite store is created (migrated) per module and copied for each test that
needs one; everything else is plain files and values.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import shutil
import sqlite3
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.tracking.journal import (
    FORMAT_VERSION,
    JOURNAL_NAME,
    Journal,
    JournalError,
    JournalWriter,
    epoch_rows,
    epochs_record,
    find_journals,
    read_journal,
)
from pipeline.tracking.runs import newest_checkpoint
from pipeline.tracking.shipper import HISTORY_ARTIFACT, Shipper, write_history_csv
from pipeline.tracking.store import (
    Store,
    StoreError,
    _repair_interrupted_migration,
    artifact_location,
    experiment_id,
    explain,
    kind_of,
    open_store,
    sqlite_path,
)
from pipeline.tracking.thinning import Thinning

NAN, INF = float("nan"), float("inf")

# -- helpers ------------------------------------------------------------------------------


def write_journal(path: Path, records: list[dict[str, Any]], journal_id: str = "j1") -> Path:
    """A complete journal at ``path``: the start record, then ``records``."""
    writer = JournalWriter(path, {"journal_id": journal_id, "uri": "sqlite:///x.db",
                                  "experiment": "units", "run_id": None, "time_ms": 1})
    writer.append_many(records)
    writer.close()
    return path


def epochs(keys: list[str], rows: list[list[float]]) -> dict[str, Any]:
    """An ``epochs`` record of ``rows`` ([step, time_ms, *values]), as the recorder makes it."""
    return epochs_record(keys, array("d", [v for row in rows for v in row]), len(rows))


def tables(db: Path) -> set[str]:
    """The names of the tables in the sqlite file ``db``."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    con.close()
    return {row[0] for row in rows}


def counting(outcomes: list[BaseException | None], value: Any = "ok"
             ) -> tuple[Callable[[], Any], list[int]]:
    """An action that raises ``outcomes`` in turn (None: returns ``value``), and its call count."""
    calls = [0]

    def action() -> Any:
        outcome = outcomes[min(calls[0], len(outcomes) - 1)]
        calls[0] += 1
        if outcome is not None:
            raise outcome
        return value

    return action, calls


@pytest.fixture(scope="module")
def new_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a store that open_store created on a new, nested path (done once)."""
    folder = tmp_path_factory.mktemp("new-store")
    open_store(f"sqlite:///{folder / 'a' / 'b' / 'mlflow.db'}")
    return folder / "a" / "b"


@pytest.fixture
def ready(store: str, new_store: Path) -> Store:
    """``open_store(store)`` on a copy of the module's migrated database (no migration cost)."""
    db = sqlite_path(store)
    assert db is not None
    shutil.copyfile(new_store / "mlflow.db", db)
    return open_store(store)


# -- 1. the journal -----------------------------------------------------------------------


def test_journal_round_trips_records_in_order_with_exact_floats(tmp_path: Path) -> None:
    rows = [[1, 1000, NAN, INF, -INF], [2, 2000, 0.1, 1 / 3, 5e-324],
            [3, 3000, 1.7976931348623157e308, -0.0, 2.0 ** -60]]
    records: list[dict[str, Any]] = [
        {"k": "params", "params": {"lr": 0.02, "layers": [8, 8]}},
        epochs(["a", "b", "c"], rows),
        {"k": "metrics", "values": {"nan": NAN, "inf": INF, "ninf": -INF, "third": 1 / 3,
                                    "tiny": 5e-324, "neg0": -0.0}, "step": 0, "time_ms": 5},
        {"k": "tags", "tags": {"t": "ü ✓"}},
        {"k": "end", "status": "FINISHED", "error": None, "time_ms": 9},
    ]
    path = write_journal(tmp_path / JOURNAL_NAME, records, journal_id="abc")
    journal = read_journal(path)
    assert journal.path == path
    assert journal.start["k"] == "start" and journal.start["version"] == FORMAT_VERSION
    assert journal.journal_id == "abc"
    assert [r["k"] for r in journal.records] == ["params", "epochs", "metrics", "tags", "end"]
    assert repr(journal.records) == repr(records)  # nan, inf, -0.0, 5e-324 exactly
    values = journal.records[2]["values"]
    assert math.isnan(values["nan"]) and values["inf"] == INF and values["ninf"] == -INF
    assert math.copysign(1.0, values["neg0"]) == -1.0 and values["tiny"] == 5e-324
    decoded = epoch_rows(journal.records[1])
    assert decoded.shape == (3, 5)
    assert decoded.tobytes() == np.array(rows, dtype="<f8").tobytes()  # bit for bit
    keys, table = journal.epochs()
    assert keys == ["a", "b", "c"] and table.tobytes() == decoded.tobytes()
    assert journal.ended == records[-1]


def test_journal_partial_last_line_is_ignored(tmp_path: Path) -> None:
    records = [epochs(["a"], [[i, i, i / 7]]) for i in range(1, 6)]
    path = write_journal(tmp_path / JOURNAL_NAME, records)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(epochs(["a"], [[6, 6, 6 / 7]]))[:40])  # killed mid-write
    journal = read_journal(path)
    assert journal.records == records
    assert journal.ended is None
    assert journal.epochs()[1][:, 0].tolist() == [1, 2, 3, 4, 5]


def test_journal_partial_last_line_that_parses_is_still_ignored(tmp_path: Path) -> None:
    path = write_journal(tmp_path / JOURNAL_NAME, [{"k": "tags", "tags": {"a": "1"}}])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"k":"tags","tags":{"b":"2"}}')  # no newline: not known complete
    assert read_journal(path).records == [{"k": "tags", "tags": {"a": "1"}}]


@pytest.mark.parametrize("bad", ['{"k":"epochs","keys":["a"],"n":1,"f6', "[1, 2]", '{"no_k": 1}',
                                 ""])
def test_journal_corrupt_middle_line_names_path_and_line(tmp_path: Path, bad: str) -> None:
    records = [{"k": "tags", "tags": {"n": str(i)}} for i in range(4)]
    path = write_journal(tmp_path / JOURNAL_NAME, records)
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[3] = bad  # line 4: start, tags 0, tags 1, <bad>, tags 3
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(JournalError, match=r"line 4\b") as caught:
        read_journal(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("content", [
    b'{"k":"tags","tags":{}}\n{"k":"start","version":1,"journal_id":"x"}\n',
    bytes(range(256)) * 3,  # binary, not UTF-8
    b"\x00\x01\x02\x03\n\x04\x05\n",  # binary that happens to be UTF-8
    b"just some text\n",
    b"",
    b'{"k":"start","version":1,"journal_id":"x"}',  # only a partial first line
])
def test_not_a_journal_raises_journal_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "notes.jsonl"
    path.write_bytes(content)
    with pytest.raises(JournalError) as caught:
        read_journal(path)
    assert str(path) in str(caught.value)


def test_newer_journal_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_NAME
    start = {"k": "start", "version": FORMAT_VERSION + 1, "journal_id": "future"}
    path.write_text(json.dumps(start) + "\n" + '{"k":"tags","tags":{}}\n', encoding="utf-8")
    with pytest.raises(JournalError, match="newer") as caught:
        read_journal(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("version", ['"2"', "null", '[1]'])
def test_start_record_with_a_version_that_is_not_a_number_is_refused(tmp_path: Path,
                                                                    version: str) -> None:
    path = tmp_path / JOURNAL_NAME
    path.write_text(f'{{"k":"start","version":{version},"journal_id":"x"}}\n', encoding="utf-8")
    with pytest.raises(JournalError) as caught:
        read_journal(path)
    assert str(path) in str(caught.value)


def test_new_writer_sets_the_old_journal_and_its_sent_state_aside(tmp_path: Path) -> None:
    path = write_journal(tmp_path / JOURNAL_NAME, [{"k": "tags", "tags": {"a": "1"}}],
                         journal_id="old1")
    sent = path.with_name(JOURNAL_NAME + ".sent")
    sent.write_text('{"uri": "sqlite:///x.db", "run_id": "r", "complete": true}')
    old_bytes, sent_bytes = path.read_bytes(), sent.read_bytes()

    write_journal(path, [], journal_id="new2")

    assert (tmp_path / "journal-old1.jsonl").read_bytes() == old_bytes
    assert (tmp_path / "journal-old1.jsonl.sent").read_bytes() == sent_bytes
    assert not sent.exists()
    assert read_journal(path).journal_id == "new2"
    assert read_journal(path).records == []
    assert read_journal(tmp_path / "journal-old1.jsonl").journal_id == "old1"


def test_find_journals_parent_first_then_jobs_in_natural_order(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for job in ("10", "2", "0", "1"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / JOURNAL_NAME).write_text("{}\n")
    (sweep / JOURNAL_NAME).write_text("{}\n")
    (sweep / "2" / "other.jsonl").write_text("{}\n")
    found = find_journals(sweep)
    jobs = [sweep / job / JOURNAL_NAME for job in ("0", "1", "2", "10")]
    assert found == [sweep / JOURNAL_NAME, *jobs]
    assert find_journals(sweep / "10" / JOURNAL_NAME) == [sweep / "10" / JOURNAL_NAME]
    assert find_journals(tmp_path / "missing") == []


# -- 2. thinning --------------------------------------------------------------------------


def check_plan(first: int, last: int, max_points: int | None) -> None:
    """Every epoch when they fit; else an even grid from ``first`` leaving room for 2 more."""
    thinning = Thinning.plan(first, last, max_points)
    kept = [epoch for epoch in range(first, last + 1) if thinning.keeps(epoch)]
    n = last - first + 1
    if max_points is None or n <= max_points:
        assert kept == list(range(first, last + 1))
        return
    assert kept[0] == first
    assert len(kept) + 2 <= max_points, (len(kept), thinning)
    assert {b - a for a, b in itertools.pairwise(kept)} <= {thinning.stride}
    assert thinning.stride >= 2


@pytest.mark.parametrize(("first", "last", "max_points"), [
    (1, 200_000, 5000), (1, 3000, 5000), (1, 5000, 5000), (1, 5001, 5000), (1, 5002, 5000),
    (1, 10, 10), (1, 11, 10), (1, 12, 10), (1, 13, 10), (1, 1000, 10), (1, 200, 20),
    (5001, 200_000, 5000), (101, 110, 10), (101, 111, 10), (2, 3, 10), (7, 7, 10),
    (1, 1, None), (1, 200_000, None), (150_001, 350_000, 5000), (3, 10_000, 17),
    (1, 17, 10), (1, 9997, 5000), (1, 8, 10), (1, 9, 10), (1, 15, 10), (11, 27, 10),
])
def test_thinning_grid(first: int, last: int, max_points: int | None) -> None:
    check_plan(first, last, max_points)


@settings(max_examples=300, deadline=None)
@given(first=st.integers(1, 100_000), n=st.integers(1, 6000),
       max_points=st.one_of(st.none(), st.integers(10, 7000)))
def test_thinning_properties(first: int, n: int, max_points: int | None) -> None:
    check_plan(first, first + n - 1, max_points)


@settings(max_examples=200, deadline=None)
@given(max_points=st.integers(10, 5000), k=st.integers(1, 4), shift=st.integers(-1, 1),
       base=st.sampled_from([2, 3]), first=st.integers(1, 1000))
def test_thinning_at_exact_multiples_of_the_stride(max_points: int, k: int, shift: int,
                                                   base: int, first: int) -> None:
    """Where rounding bites: n - 1 an exact multiple of max_points - 2 or - 3 (give or take 1)."""
    n = max(1, (max_points - base) * k + 1 + shift)
    check_plan(first, first + n - 1, max_points)


# -- 3. newest checkpoint -----------------------------------------------------------------


@pytest.mark.parametrize(("names", "expected"), [
    (["epoch_99000.json", "epoch_257000.json", "epoch_100000.json"], "epoch_257000.json"),
    (["epoch_99999.json", "epoch_100000.json"], "epoch_100000.json"),
    (["epoch_00999.json", "epoch_1000.json"], "epoch_1000.json"),
    (["epoch_1000.json", "epoch_00999.json"], "epoch_1000.json"),
    (["epoch_9.json", "epoch_10.json", "epoch_08.json"], "epoch_10.json"),
    (["epoch_5.json", "final.json", "epoch_900000.json"], "final.json"),
    (["notes.txt", "epoch_7.json", "epoch_70.json.bak", "epoch_x.json", "xepoch_80.json",
      "epoch_60.JSON"], "epoch_7.json"),
    (["history.csv", "epoch_.json", "final.json.tmp"], None),
    ([], None),
])
def test_newest_checkpoint(names: list[str], expected: str | None) -> None:
    assert newest_checkpoint(names) == expected


# -- 4. store failures --------------------------------------------------------------------

REFUSED = ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: "
           "/api/2.0/mlflow/experiments/search (Caused by NewConnectionError('<urllib3."
           "connection.HTTPConnection object at 0x7f>: Failed to establish a new connection: "
           "[Errno 111] Connection refused'))")


@pytest.mark.parametrize(("error", "kind", "cause"), [
    (sqlite3.OperationalError("database is locked"), "transient", None),
    (Exception("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
               "datasets.name, datasets.digest"), "conflict", None),
    (sqlite3.OperationalError("attempt to write a readonly database"), "permanent",
     "the store is read-only"),
    (sqlite3.OperationalError("database or disk is full"), "permanent", "the disk is full"),
    (OSError(28, "No space left on device"), "permanent", "the disk is full"),
    (Exception(REFUSED), "transient", "connection refused"),
    (ValueError("bad"), "permanent", "bad"),
])
def test_kind_of_and_explain(error: BaseException, kind: str, cause: str | None) -> None:
    assert kind_of(error) == kind
    if cause is not None:
        assert cause in explain(error)
    assert "\n" not in explain(error)


def test_explain_of_an_unknown_error_is_its_first_line() -> None:
    assert explain(ValueError("first line\nsecond line")) == "first line"
    assert explain(RuntimeError()) == "RuntimeError"


def test_call_retries_a_locked_database_then_returns(ready: Store) -> None:
    locked = sqlite3.OperationalError("database is locked")
    action, calls = counting([locked, locked, None], value=42)
    assert ready.call("write", action) == 42
    assert calls[0] == 3


def test_call_retries_a_conflict(ready: Store) -> None:
    clash = Exception("(sqlite3.IntegrityError) UNIQUE constraint failed: experiments.name")
    action, calls = counting([clash, None])
    assert ready.call("create", action) == "ok"
    assert calls[0] == 2


def test_call_raises_a_permanent_error_at_once(ready: Store) -> None:
    error = sqlite3.OperationalError("attempt to write a readonly database\n[SQL: INSERT ...]")
    action, calls = counting([error, None])
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        ready.call("log metrics", action)
    assert calls[0] == 1 and time.monotonic() - started < 0.5
    message = str(caught.value)
    assert "\n" not in message
    assert ready.uri in message and "log metrics" in message
    assert "the store is read-only" in message
    assert caught.value.transient is False
    assert caught.value.__cause__ is error


def test_call_reraises_programming_errors_unchanged(ready: Store) -> None:
    error = TypeError("unexpected keyword")
    action, calls = counting([error, None])
    with pytest.raises(TypeError) as caught:
        ready.call("log", action)
    assert caught.value is error and calls[0] == 1


def test_call_gives_up_on_a_transient_error_after_its_budget(ready: Store) -> None:
    action, calls = counting([sqlite3.OperationalError("database is locked")])
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        ready.call("log metrics", action, budget_s=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert calls[0] >= 2
    assert caught.value.transient is True
    assert ready.uri in str(caught.value) and "\n" not in str(caught.value)


# -- 5. opening a store -------------------------------------------------------------------


def test_open_store_creates_a_new_sqlite_store_and_its_lock(new_store: Path) -> None:
    db = new_store / "mlflow.db"
    assert db.is_file()
    assert (new_store / "mlflow.db-lock").is_file()
    assert {"experiments", "runs", "metrics", "params", "tags", "alembic_version"} <= tables(db)
    assert not any(t.startswith("_alembic_tmp_") for t in tables(db))


def test_sqlite_path_and_artifact_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    here = Path.cwd()
    absolute = tmp_path / "stores" / "m.db"
    assert sqlite_path(f"sqlite:///{absolute}") == absolute
    assert artifact_location(f"sqlite:///{absolute}") == (absolute.parent / "mlruns").as_uri()
    assert sqlite_path("sqlite:///rel/m.db") == here / "rel" / "m.db"
    assert sqlite_path("sqlite:///m.db?timeout=5") == here / "m.db"
    assert artifact_location("sqlite:///rel/m.db") == (here / "rel" / "mlruns").as_uri()
    for uri in ("http://127.0.0.1:5000", "https://mlflow.example.org/"):
        assert sqlite_path(uri) is None
        assert artifact_location(uri) is None


def test_open_store_drops_a_leftover_migration_copy(store: str, ready: Store,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy is only taken for a leftover once the store stays unchanged for QUIET_S (a
    # migration may be under way; tests/test_store_safety.py waits the real time).
    monkeypatch.setattr("pipeline.tracking.store.QUIET_S", 0.5)
    exp = experiment_id(ready, "units")
    run_id = ready.client.create_run(exp).info.run_id
    db = sqlite_path(store)
    assert db is not None
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_runs AS SELECT * FROM runs WHERE 0")
    con.close()
    assert "_alembic_tmp_runs" in tables(db)

    again = open_store(store)

    assert "_alembic_tmp_runs" not in tables(db) and "runs" in tables(db)
    assert again.client.get_run(run_id).info.run_id == run_id


def test_repair_renames_a_copy_whose_original_is_gone(tmp_path: Path) -> None:
    db = tmp_path / "plain.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE _alembic_tmp_things (id INTEGER, name TEXT)")
        con.executemany("INSERT INTO _alembic_tmp_things VALUES (?, ?)", [(1, "a"), (2, "b")])
        con.execute("CREATE TABLE keep (x INTEGER)")
    con.close()

    _repair_interrupted_migration(db)

    assert tables(db) == {"things", "keep"}
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT id, name FROM things ORDER BY id").fetchall() == [
            (1, "a"), (2, "b")]
    con.close()


def test_repair_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    _repair_interrupted_migration(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


# -- 6. the history table -----------------------------------------------------------------

KEYS = ["train_loss", "train_mse", "train_accuracy"]


def some_rows(first: int, last: int, seed: int = 0) -> list[list[float]]:
    rng = random.Random(seed)
    return [[step, 1_700_000_000_000 + step, rng.random() * 10 ** rng.randint(-12, 12),
             rng.choice([0.1, 1 / 3, 5e-324, 1.7976931348623157e308, rng.random()]),
             rng.random()] for step in range(first, last + 1)]


def test_write_history_csv_has_every_epoch_exactly(tmp_path: Path) -> None:
    rows = some_rows(1, 6) + some_rows(7, 13, seed=1)
    journal = read_journal(write_journal(tmp_path / JOURNAL_NAME, [
        epochs(KEYS, rows[:6]), {"k": "tags", "tags": {"between": "x"}}, epochs(KEYS, rows[6:])]))
    keys, table = journal.epochs()
    assert keys == KEYS and table.tolist() == rows

    csv = write_history_csv(journal, tmp_path / "history.csv")

    assert csv == tmp_path / "history.csv"
    assert csv.read_text().splitlines()[0] == "epoch,train_loss,train_mse,train_accuracy"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["epoch", *KEYS]
    assert len(frame) == len(rows) == 13
    assert frame["epoch"].tolist() == list(range(1, 14))
    for index, key in enumerate(KEYS, start=2):
        assert frame[key].tolist() == [row[index] for row in rows], key


def test_history_of_a_journal_without_epochs_is_none(tmp_path: Path) -> None:
    journal = read_journal(write_journal(tmp_path / JOURNAL_NAME,
                                         [{"k": "tags", "tags": {"a": "1"}}]))
    keys, table = journal.epochs()
    assert keys == [] and len(table) == 0
    assert write_history_csv(journal, tmp_path / "history.csv") is None
    assert not (tmp_path / "history.csv").exists()


def test_history_keys_that_change_raise(tmp_path: Path) -> None:
    """Epoch metrics that change names make no history table: the journal is refused when
    read (line 3), and a journal read before that check still cannot make one."""
    path = write_journal(tmp_path / JOURNAL_NAME, [
        epochs(KEYS, some_rows(1, 2)), epochs(["train_loss", "train_mse"], [[3, 3, 0.5, 0.25]])])
    with pytest.raises(JournalError, match=r"line 3: the epoch metrics changed") as caught:
        read_journal(path)
    assert str(path) in str(caught.value)
    journal = Journal(path, {"journal_id": "j1"}, [
        epochs(KEYS, some_rows(1, 2)), epochs(["train_loss", "train_mse"], [[3, 3, 0.5, 0.25]])])
    with pytest.raises(JournalError, match="changed"):
        journal.epochs()
    with pytest.raises(JournalError):
        write_history_csv(journal, tmp_path / "history.csv")


# -- 7. the shipper -----------------------------------------------------------------------

SHIP_KEYS = ["train_loss", "val_loss", "val_accuracy"]
BEST_STEP = 150  # not on the grid of plan(1, 200, 20): stride 12 from 1
END_MS = 1_700_000_999_000


def shipped_journal(folder: Path) -> Path:
    """A finished 200-epoch run whose best val_loss is at BEST_STEP, as a journal."""
    rng = random.Random(3)
    rows = [[step, 1_700_000_000_000 + 10 * step, rng.random(), 1.0 + rng.random(), rng.random()]
            for step in range(1, 201)]
    rows[BEST_STEP - 1][3] = 0.5
    return write_journal(folder / JOURNAL_NAME, [
        {"k": "params", "params": {"optimizer.lr": 0.02, "model.layers": [8, 8]}},
        {"k": "tags", "tags": {"note": "units"}},
        {"k": "plan", "first": 1, "last": 200, "max_points": 20},
        epochs(SHIP_KEYS, rows[:120]),
        epochs(SHIP_KEYS, rows[120:]),
        {"k": "end", "status": "FINISHED", "error": None, "time_ms": END_MS,
         "last_epoch": 200, "best_epoch": BEST_STEP},
    ])


def snapshot(store: Store, run_id: str) -> dict[str, Any]:
    """What the store holds for a run: histories, status, end time, params, tags, artifacts."""
    client = store.client
    run = client.get_run(run_id)
    return {"histories": {key: sorted((m.step, m.timestamp, m.value)
                                      for m in client.get_metric_history(run_id, key))
                          for key in SHIP_KEYS},
            "status": run.info.status, "end_time": run.info.end_time,
            "params": dict(run.data.params), "tags": dict(run.data.tags),
            "artifacts": sorted(a.path for a in client.list_artifacts(run_id))}


def test_shipper_thins_keeps_last_and_best_and_is_idempotent(tmp_path: Path, ready: Store
                                                             ) -> None:
    path = shipped_journal(tmp_path / "run")
    journal = read_journal(path)
    rows = journal.epochs()[1].tolist()
    exp = experiment_id(ready, "units")
    run_id = ready.client.create_run(exp, start_time=1_700_000_000_000).info.run_id

    Shipper(ready, run_id, exp, path).apply(journal.records)
    first = snapshot(ready, run_id)

    grid = Thinning.plan(1, 200, 20)
    expected_steps = sorted({s for s in range(1, 201) if grid.keeps(s)} | {200, BEST_STEP})
    assert not grid.keeps(BEST_STEP) and not grid.keeps(200)
    for index, key in enumerate(SHIP_KEYS, start=2):
        history = first["histories"][key]
        assert len(history) <= 20, key
        assert [step for step, _, _ in history] == expected_steps, key
        for step, stamp, value in history:
            assert (stamp, value) == (rows[step - 1][1], rows[step - 1][index]), (key, step)
    assert first["status"] == "FINISHED" and first["end_time"] == END_MS
    assert first["params"] == {"optimizer.lr": "0.02", "model.layers": "[8, 8]"}
    assert first["tags"]["note"] == "units"
    assert HISTORY_ARTIFACT in first["artifacts"]
    history = pd.read_csv(ready.client.download_artifacts(run_id, HISTORY_ARTIFACT,
                                                          str(tmp_path)))
    assert len(history) == 200 and history["epoch"].tolist() == list(range(1, 201))
    assert history["val_loss"].tolist() == [row[3] for row in rows]

    Shipper(ready, run_id, exp, path).apply(read_journal(path).records)

    assert snapshot(ready, run_id) == first


class _InterruptedMetrics(dict):
    """Metrics whose values raise KeyboardInterrupt when read: Ctrl-C or SIGTERM arriving
    while the recorder records an epoch."""

    def values(self):  # type: ignore[override]
        raise KeyboardInterrupt


def test_an_interrupt_while_an_epoch_is_recorded_leaves_whole_rows(tmp_path: Path) -> None:
    """Ctrl-C or SIGTERM in the middle of ``log_epoch`` drops that epoch whole: the run
    still ends KILLED with every earlier epoch in the store and a journal that reads back."""
    from mlflow import MlflowClient

    from pipeline.tracking.journal import read_journal
    from pipeline.tracking.recorder import start_run

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = start_run(uri=uri, experiment="e", run_name="r", output_dir=tmp_path, tags={},
                         parent_run_id=None, parent_journal_id=None, offline=False,
                         max_points=None, log_model=False)
    for epoch in (1, 2):
        recorder.log_epoch(epoch, {"train_loss": 1.0 / epoch, "train_accuracy": 0.5})
    with pytest.raises(KeyboardInterrupt):
        recorder.log_epoch(3, _InterruptedMetrics(train_loss=0.1, train_accuracy=0.9))
    recorder.kill("interrupted", None)

    run = MlflowClient(uri).get_run(str(recorder.run_id))
    assert run.info.status == "KILLED"
    history = MlflowClient(uri).get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    journal = read_journal(recorder.journal_path)
    assert journal.ended is not None and journal.ended["status"] == "KILLED"
    assert journal.epochs()[1][:, 0].tolist() == [1.0, 2.0]
