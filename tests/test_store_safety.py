"""Opening a store never harms what is at its path, nor what other processes do with it.

* A store path is a regular sqlite file or absent: anything else is refused with one line
  and left exactly as it was; a new store appears whole, never over an existing file.
* A plain MLflow client creating (migrating) a new store while a sweep starts on it.
* ``clean-runs`` never ends a run whose heartbeat is recent, whatever age it is given.
* A complete store in a read-only folder can be read (compare, clean-runs).
* A tracking URI that does not parse, or whose driver is missing: one line, exit 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.tracking.store import StoreError, open_store
from tests.test_tracking_faults import (
    AS_UNPRIVILEGED,
    background,
    journal_run_id,
    pipeline_args,
    wait_for,
)

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
QUICK = ["train.epochs=50", "train.progress=false", "tracking.plots=false",
         "tracking.log_model=false", "train.checkpoint_every=0"]


def run_cli(args: list[str], *, prefix: list[str] | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env or ENV, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1 and exactly one line on stderr, holding every fragment; returns it."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(lines) == 1, done.stderr[-3000:]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])
    return lines[0]


def schema(db: Path) -> tuple[set[str], list[tuple[str]]]:
    """The tables of a sqlite store and its alembic revision rows."""
    with sqlite3.connect(db) as con:
        names = {row[0] for row in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        versions = (con.execute("SELECT version_num FROM alembic_version").fetchall()
                    if "alembic_version" in names else [])
    con.close()
    return names, versions


def head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())


def snapshot(path: Path) -> tuple:
    """What a path is: its inode, type, and (for a regular file) its bytes."""
    info = os.lstat(path)
    data = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    return info.st_ino, stat.S_IFMT(info.st_mode), info.st_rdev, data


def no_temporary_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".new")]


# -- 1. a store path is a regular sqlite file or absent ----------------------------------
def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_directory(path: Path) -> None:
    path.mkdir()
    (path / "keep.txt").write_text("mine")


def make_text(path: Path) -> None:
    path.write_text("not a database, a user's notes\n" * 10)


def make_char_device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # a private twin of /dev/null


def make_socket(path: Path) -> None:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def make_dangling_link(path: Path) -> None:
    path.symlink_to(path.with_name("gone.db"))


REFUSED = {"fifo": (make_fifo, "FIFO"), "directory": (make_directory, "directory"),
           "text": (make_text, "not an SQLite database"),
           "char-device": (make_char_device, "character device"),
           "socket": (make_socket, "socket"),
           "dangling-link": (make_dangling_link, "does not exist")}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_path_that_is_not_a_store_is_refused_and_left_alone(tmp_path: Path, kind: str
                                                                ) -> None:
    make, words = REFUSED[kind]
    path = tmp_path / "store.db"
    make(path)
    before = snapshot(path)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}", budget_s=3)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and words in message, message
    assert "tracking.uri" in message
    assert time.monotonic() - started < 3  # a file of another kind never becomes a store
    assert snapshot(path) == before
    if kind == "directory":
        assert sorted(p.name for p in path.iterdir()) == ["keep.txt"]
    no_temporary_files(tmp_path)


@pytest.mark.slow
def test_a_sqlite_database_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE notes (id INTEGER, body TEXT)")
        con.execute("INSERT INTO notes VALUES (1, 'mine')")
    con.close()
    before = snapshot(path)
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}", budget_s=3)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "not an MLflow store" in message
    assert snapshot(path) == before
    no_temporary_files(tmp_path)


@pytest.mark.slow
def test_an_empty_file_that_nobody_completes_is_refused(tmp_path: Path) -> None:
    """Empty: perhaps a store another process is creating. Nobody makes it one: refused
    after a bounded wait, and never replaced."""
    path = tmp_path / "mlflow.db"
    path.touch()
    before = snapshot(path)
    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}", budget_s=3)
    waited = time.monotonic() - started
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "empty" in message, message
    assert snapshot(path) == before
    assert waited < 30, waited
    no_temporary_files(tmp_path)


# A plain MLflow client that creates the store file itself (as sqlite does on connect),
# then migrates it in place: what `mlflow ui` or a notebook does on a new path.
PLAIN_CREATE = textwrap.dedent("""
    import pathlib, sys
    import mlflow
    from mlflow.tracking import MlflowClient
    path = pathlib.Path(sys.argv[1])
    path.touch()
    pathlib.Path(sys.argv[2]).touch()  # the file exists, still empty
    MlflowClient(f"sqlite:///{path}").search_experiments()
""")


@pytest.mark.slow
def test_an_empty_file_another_client_is_creating_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    created = tmp_path / "created"
    plain = subprocess.Popen([sys.executable, "-c", PLAIN_CREATE, str(path), str(created)],
                             cwd=PROJECT_ROOT, env=ENV, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the plain client's empty file", created.exists, timeout=120, every=0.005)
        inode = path.stat().st_ino
        store = open_store(f"sqlite:///{path}")
        assert store.client.search_experiments() is not None
        _, err = plain.communicate(timeout=120)
    finally:
        plain.kill()
    assert plain.returncode == 0, err[-3000:]
    assert path.stat().st_ino == inode  # the other client's file, never replaced
    names, versions = schema(path)
    assert versions == [(head(),)] and not [t for t in names if t.startswith("_alembic_tmp_")]
    no_temporary_files(tmp_path)


def test_a_new_store_appears_whole_and_the_existing_one_is_kept(tmp_path: Path) -> None:
    """A new store is made beside its path and linked into place; a store that is there
    already is opened as it is (same file, same runs)."""
    path = tmp_path / "new" / "mlflow.db"
    store = open_store(f"sqlite:///{path}")
    names, versions = schema(path)
    assert versions == [(head(),)] and "runs" in names
    run_id = store.client.create_run(store.client.create_experiment("kept")).info.run_id
    inode = path.stat().st_ino
    again = open_store(f"sqlite:///{path}")
    assert path.stat().st_ino == inode and path.stat().st_nlink == 1
    assert again.client.get_run(run_id).info.run_id == run_id
    no_temporary_files(path.parent)


@pytest.mark.slow
def test_the_cli_refuses_a_device_as_its_store(tmp_path: Path) -> None:
    path = tmp_path / "null"
    if os.geteuid() == 0:
        make_char_device(path)
        words = "character device"
    else:
        make_fifo(path)
        words = "FIFO"
    before = snapshot(path)
    out = tmp_path / "out"
    done = run_cli([sys.executable, "-m", "pipeline", *QUICK, f"tracking.uri=sqlite:///{path}",
                    f"hydra.run.dir={out}", f"pipeline.cache_dir={tmp_path / 'cache'}"])
    one_line_error(done, str(path), words)
    assert snapshot(path) == before
    assert not (out / "journal.jsonl").exists()


# -- 2. a plain MLflow reader on a new store while a sweep starts ------------------------
READER = textwrap.dedent("""
    import json, pathlib, sys, time
    import mlflow
    ready, go, stop, report = (pathlib.Path(a) for a in sys.argv[1:5])
    ready.touch()
    while not go.exists():
        time.sleep(0.002)
    reads, errors = 0, []
    while not stop.exists():
        try:
            mlflow.search_runs(search_all_experiments=True)
            reads += 1
        except Exception as error:
            errors.append(f"{type(error).__name__}: {str(error)[:300]}")
        time.sleep(0.02)
    report.write_text(json.dumps({"reads": reads, "errors": errors}))
""")


def waiting_for(ready: Path, go: Path, *args: str) -> list[str]:
    """``python -m pipeline args``: imports what it needs, touches ``ready``, and starts
    once ``go`` exists."""
    code = (f"import runpy, sys, time, pathlib; import pipeline.run.runner; "
            f"pathlib.Path({str(ready)!r}).touch(); go = pathlib.Path({str(go)!r})\n"
            "while not go.exists(): time.sleep(0.002)\n"
            f"sys.argv = ['pipeline', *{list(args)!r}]; runpy.run_module('pipeline', "
            "run_name='__main__')")
    return [sys.executable, "-c", code]



def sweep_beside_a_reader(tmp_path: Path, start: str, delay: float
                          ) -> tuple[subprocess.CompletedProcess, dict, str]:
    """A 2-job sweep on a new store while a plain MLflow client polls ``search_runs`` on it.

    ``start="before"``: the reader goes first and the sweep starts ``delay`` s after the
    reader's client created the file (during its migration); ``"together"``: both at once.
    """
    db = tmp_path / "new.db"
    uri = f"sqlite:///{db}"
    go_reader = tmp_path / "go-reader"
    go_sweep = go_reader if start == "together" else tmp_path / "go-sweep"
    ready = [tmp_path / "reader-ready", tmp_path / "sweep-ready"]
    stop, report = tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(ready[0]), str(go_reader), str(stop), str(report)],
        cwd=PROJECT_ROOT, env={**ENV, "MLFLOW_TRACKING_URI": uri},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sweep = subprocess.Popen(
        waiting_for(ready[1], go_sweep, "-m", "seed=1,2", *QUICK, f"tracking.uri={uri}",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}",
                    f"pipeline.cache_dir={tmp_path / 'cache'}"),
        cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("both processes to be ready", lambda: all(p.exists() for p in ready),
                 timeout=180, every=0.01)
        go_reader.touch()
        if start == "before":
            wait_for("the reader's client to create the store", db.exists, timeout=120,
                     every=0.002)
            time.sleep(delay)
            go_sweep.touch()
        out, err = sweep.communicate(timeout=600)
        stop.touch()
        reader.wait(timeout=120)
    finally:
        sweep.kill()
        reader.kill()
    done = subprocess.CompletedProcess(sweep.args, sweep.returncode, out, err)
    return done, json.loads(report.read_text()), uri


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(3))
@pytest.mark.parametrize("start", ["before", "together"])
def test_a_plain_reader_on_a_new_store_never_breaks_a_sweep(tmp_path: Path, start: str,
                                                            trial: int) -> None:
    done, reader, uri = sweep_beside_a_reader(tmp_path, start, delay=0.3 * trial)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and " raised " not in done.stderr, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlp-pipeline")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [
        (r.info.status, r.data.tags.get("error")) for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parents[0].info.run_id]
    assert len(children) == 2 and len(runs) == 3
    assert {r.info.status for r in children} == {"FINISHED"}
    assert reader["reads"] > 0 and reader["errors"] == [], reader["errors"][:5]
    names, versions = schema(Path(uri.removeprefix("sqlite:///")))
    assert versions == [(head(),)] and not [t for t in names if t.startswith("_alembic_tmp_")]


# -- 3. clean-runs leaves a live run alone, whatever the age -----------------------------
@pytest.mark.slow
def test_clean_runs_never_ends_a_live_run(tmp_path: Path) -> None:
    """Asked for runs older than 0 minutes, clean-runs still leaves a live run alone: it
    ends FINISHED, with no error tag."""
    minutes = "0"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    args = pipeline_args(tmp_path, out, f"tracking.uri={uri}", "train.epochs=300000")
    with background(args, tmp_path / "job") as job:
        run_id = wait_for("the run's journal", lambda: journal_run_id(out / "journal.jsonl"),
                          job)
        client = MlflowClient(uri)
        beat = float(client.get_run(run_id).data.tags["pipeline.heartbeat"])
        # Older than the age given (yet younger than the heartbeat's period): what counts.
        time.sleep(max(0.0, beat + float(minutes) * 60 + 1.5 - time.time()))
        cleaned = run_cli([sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", uri,
                           "--max-age-minutes", minutes])
        assert job.alive(), "the run ended before clean-runs looked at it; make it longer"
        ended = job.wait(timeout=600)
    assert cleaned.returncode == 0, cleaned.stderr[-3000:]
    assert "0 stale run(s) marked KILLED" in cleaned.stdout, cleaned.stdout
    assert "heartbeat" in cleaned.stdout and "left alone" in cleaned.stdout, cleaned.stdout
    assert ended.returncode == 0, ended.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert "error" not in run.data.tags, run.data.tags["error"]


# -- 4. a complete store in a read-only folder is read, not refused ----------------------
@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A store with a finished 2-job sweep; its folder and the parent's run id."""
    tmp = tmp_path_factory.mktemp("readonly")
    folder = tmp / "store"
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    done = run_cli([sys.executable, "-m", "pipeline", "-m", "seed=1,2", *QUICK,
                    f"tracking.uri={uri}", f"hydra.sweep.dir={tmp / 'sweep'}",
                    f"pipeline.cache_dir={tmp / 'cache'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    parent = [r.info.run_id for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parent) == 1
    return folder, parent[0]


def unprivileged() -> list[str]:
    """A prefix under which root obeys file permissions, like any user."""
    if os.geteuid() == 0:
        probe = run_cli([*AS_UNPRIVILEGED, "true"])
        if probe.returncode != 0:
            pytest.fail(f"setpriv cannot drop root's file capabilities: {probe.stderr}")
    return AS_UNPRIVILEGED


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Every file and folder of ``folder`` read-only (restored afterwards)."""
    paths = [folder, *folder.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    for p in sorted(paths, key=lambda p: len(p.parts), reverse=True):
        p.chmod(stat.S_IMODE(modes[p]) & ~0o222)
    try:
        yield
    finally:
        for p in sorted(paths, key=lambda p: len(p.parts)):
            p.chmod(stat.S_IMODE(modes[p]))


@pytest.mark.slow
@pytest.mark.parametrize("lock", ["absent", "read-only"])
def test_a_read_only_store_can_be_compared_and_cleaned(sweep_store: tuple[Path, str],
                                                       lock: str) -> None:
    folder, parent = sweep_store
    db = folder / "mlflow.db"
    uri = f"sqlite:///{db}"
    lock_file = Path(f"{db}-lock")
    if lock == "absent":
        lock_file.unlink(missing_ok=True)  # a store copied without it, or made by MLflow
    else:
        lock_file.touch()
    prefix = unprivileged()
    before = sorted(p.name for p in folder.iterdir())
    probe = folder / "probe"
    with read_only(folder):
        write = run_cli(["touch", str(probe)], prefix=prefix)
        assert write.returncode != 0 and not probe.exists()  # it really is read-only
        compared = run_cli([sys.executable, "-m", "pipeline.commands.compare", parent,
                            "--uri", uri],
                           prefix=prefix)
        cleaned = run_cli([sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", uri],
                          prefix=prefix)
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert "2 runs in" in compared.stdout, compared.stdout[-2000:]
    assert cleaned.returncode == 0, cleaned.stderr[-3000:]
    assert "0 stale run(s) marked KILLED" in cleaned.stdout
    assert sorted(p.name for p in folder.iterdir()) == before


# -- 5. a URI that does not parse, a driver that is missing ------------------------------
BAD_URIS = {
    "ipv6": ("'http://[::1'", "http://[::1", "not a valid"),
    "postgresql": ("postgresql://mlflow@127.0.0.1:1/mlflow", "postgresql://",
                   "postgresql+psycopg2://"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(BAD_URIS))
@pytest.mark.parametrize("command", ["run", "sweep", "compare", "clean-runs"])
def test_a_bad_uri_is_one_line_and_exit_1(tmp_path: Path, case: str, command: str) -> None:
    override, shown, fix = BAD_URIS[case]
    plain = override.strip("'")  # Hydra's quotes, for the overrides only
    out = tmp_path / "out"
    args = {
        "run": [sys.executable, "-m", "pipeline", *QUICK, f"tracking.uri={override}",
                f"hydra.run.dir={out}", f"pipeline.cache_dir={tmp_path / 'cache'}"],
        "sweep": [sys.executable, "-m", "pipeline", "-m", "seed=1,2", *QUICK,
                  f"tracking.uri={override}", f"hydra.sweep.dir={out}",
                  f"pipeline.cache_dir={tmp_path / 'cache'}"],
        "compare": [sys.executable, "-m", "pipeline.commands.compare", "0" * 32, "--uri", plain],
        "clean-runs": [sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", plain],
    }[command]
    done = run_cli(args)
    one_line_error(done, shown, fix)
    # Nothing started: no run, hence no journal of one left to sync or close.
    assert not list(tmp_path.rglob("journal.jsonl"))
