"""Tracking under faults, end to end: the journal keeps the run when the store cannot.

A lost server, an offline run, another store, a live or killed run's journal, heartbeats
against clean-runs, a read-only store and a full disk: each through the real CLI
(``python -m pipeline``, ``pipeline.commands.sync``, ``pipeline.commands.clean_runs``) and real
stores.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.tracking.journal import Journal, epoch_rows, read_journal
from pipeline.tracking.record import LIVE_WITHIN_S
from tests.servers import MlflowServer
from tests.test_failures import assert_user_error, only_run

pytestmark = pytest.mark.slow
T = TypeVar("T")

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
EXPERIMENT = "mlp-pipeline"
QUICK = ["train.progress=false", "tracking.plots=false"]
KILLED_WITHOUT_END = "the process ended without closing the run"
# Root ignores permission bits; without these capabilities it obeys them like anyone else.
AS_UNPRIVILEGED = (["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
                   if os.geteuid() == 0 else [])


# -- processes ------------------------------------------------------------------------------
def pipeline_args(tmp_path: Path, out: Path, *overrides: str, log_model: bool = False,
                  checkpoint_every: int = 0) -> list[str]:
    """``python -m pipeline`` with a per-test output folder and cache."""
    return [sys.executable, "-m", "pipeline", *QUICK,
            f"tracking.log_model={str(log_model).lower()}",
            f"train.checkpoint_every={checkpoint_every}", f"hydra.run.dir={out}",
            f"pipeline.cache_dir={tmp_path / 'cache'}", *overrides]


def run_cli(args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV,
                          timeout=timeout)


def run_pipeline(tmp_path: Path, out: Path, *overrides: str, checkpoint_every: int = 0,
                 prefix: list[str] | None = None, timeout: float = 600
                 ) -> subprocess.CompletedProcess:
    return run_cli([*(prefix or []), *pipeline_args(tmp_path, out, *overrides,
                                                    checkpoint_every=checkpoint_every)],
                   timeout)


def sync(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, "-m", "pipeline.commands.sync", str(out), *extra], timeout=600)


def clean_runs(uri: str, max_age_minutes: float) -> subprocess.CompletedProcess:
    return run_cli([sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", uri,
                    "--max-age-minutes", str(max_age_minutes)], timeout=300)


class Background:
    """A CLI process in the background, its output in files (a pipe could fill up)."""

    def __init__(self, args: list[str], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._out, self._err = folder / "stdout.txt", folder / "stderr.txt"
        with open(self._out, "w") as out, open(self._err, "w") as err:
            self.process = subprocess.Popen(args, cwd=PROJECT_ROOT, env=ENV, stdout=out,
                                            stderr=err, text=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self) -> str:
        return self._out.read_text() + self._err.read_text()

    def wait(self, timeout: float) -> subprocess.CompletedProcess:
        self.process.wait(timeout=timeout)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                           self._out.read_text(), self._err.read_text())

    def kill(self) -> None:
        """SIGKILL (the process cannot close anything) and reap it."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=60)


@contextlib.contextmanager
def background(args: list[str], folder: Path) -> Iterator[Background]:
    """A background process that is killed on the way out, whatever happened."""
    job = Background(args, folder)
    try:
        yield job
    finally:
        job.kill()


def wait_for(what: str, condition: Callable[[], T], job: Background | None = None,
             timeout: float = 180, every: float = 0.2) -> T:
    """Poll ``condition()`` until it returns something truthy; fail if ``job`` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if job is not None and not job.alive():
            raise AssertionError(f"the process ended before {what}:\n{job.output()[-3000:]}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


# -- journals and stores --------------------------------------------------------------------
def journaled_epochs(journal: Path) -> int:
    """The last epoch in the journal so far (its last complete ``epochs`` line), 0 if none."""
    try:
        text = journal.read_bytes()
    except FileNotFoundError:
        return 0
    for line in reversed(text.split(b"\n")[:-1]):  # the last element: "" or a partial line
        if line.startswith(b'{"k":"epochs"'):
            return int(epoch_rows(json.loads(line))[-1, 0])
    return 0


def journal_run_id(journal: Path) -> str | None:
    """The run id in the journal's start record (once its first line is there)."""
    try:
        first = journal.read_text().split("\n", 1)
    except FileNotFoundError:
        return None
    return json.loads(first[0]).get("run_id") if len(first) == 2 else None


def epoch_count(journal: Journal) -> int:
    return len(journal.epochs()[1])


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def the_run(client: MlflowClient) -> Run:
    """The one run of the experiment in ``client``'s store."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [(r.info.run_id, r.info.status) for r in runs]
    return runs[0]


def history_rows(client: MlflowClient, run_id: str, folder: Path) -> pd.DataFrame:
    folder.mkdir(parents=True, exist_ok=True)
    return pd.read_csv(client.download_artifacts(run_id, "history.csv", str(folder)))


def steps(client: MlflowClient, run_id: str, key: str = "train_loss") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def assert_one_line_error(done: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 1, no traceback, and a last line holding every fragment; returns that line."""
    message = assert_user_error(done, fragments[0])
    for fragment in fragments[1:]:
        assert fragment.lower() in message.lower(), (fragment, message)
    return message


def sent_run_id(done: subprocess.CompletedProcess) -> str:
    """The run id ``pipeline.commands.sync`` printed ("... -> run <id> (STATUS) in <uri>")."""
    found = re.findall(r" -> run ([0-9a-f]+) ", done.stdout)
    assert len(found) == 1, done.stdout
    return found[0]


def assert_synced(done: subprocess.CompletedProcess, word: str = "sent") -> None:
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert word in done.stdout, done.stdout


# -- 1. a server lost mid-run -------------------------------------------------------------
def test_server_lost_mid_run_then_sync_completes_the_same_run(tmp_path: Path) -> None:
    """A server that dies mid-run does not stop training; the run exits 1 with one line
    naming the journal and the sync command; after a restart, sync completes the same run
    (thinned metrics, full history.csv, the model) and a second sync changes nothing."""
    epochs = 150_000
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    workdir = tmp_path / "server"
    workdir.mkdir()
    with MlflowServer(sqlite_uri(workdir / "server.db"), workdir / "artifacts",
                      workdir) as server:
        args = pipeline_args(tmp_path, out, f"tracking.uri={server.url}",
                             f"train.epochs={epochs}", log_model=True)
        with background(args, tmp_path / "job") as job:
            run_id = wait_for("the run's journal", lambda: journal_run_id(journal), job)
            client = MlflowClient(server.url)
            assert client.get_run(run_id).info.status == "RUNNING"
            wait_for("20000 journaled epochs", lambda: journaled_epochs(journal) >= 20_000,
                     job, every=0.05)
            server.stop(kill=True)  # lost: no goodbye
            assert job.alive(), "the run ended before the server was lost; raise the epochs"
            done = job.wait(timeout=600)
        message = assert_one_line_error(done, "make sync DIR=", str(journal))
        assert f"make sync DIR={out}" in message
        recorded = read_journal(journal)
        assert recorded.ended is not None and recorded.ended["status"] == "FINISHED"
        assert epoch_count(recorded) == epochs

        server.start()
        first = sync(out)
        assert_synced(first)
        assert sent_run_id(first) == run_id
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert "error" not in run.data.tags, run.data.tags.get("error")
        assert "test_accuracy" in run.data.metrics
        points = steps(client, run_id)
        assert len(points) <= 5000 and points[0] == 1 and points[-1] == epochs
        history = history_rows(client, run_id, tmp_path / "download")
        assert len(history) == epochs and history["epoch"].iloc[-1] == epochs
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id='{run_id}'")
        assert len(models) >= 1

        second = sync(out)
        assert_synced(second, "already sent")
        again = client.get_run(run_id)
        assert again.info.end_time == run.info.end_time
        assert len(steps(client, run_id)) == len(points)


# -- 2. offline, then sync ----------------------------------------------------------------
def test_offline_run_then_sync(tmp_path: Path) -> None:
    """tracking.mode=offline touches no store, says how to send the run; sync creates one
    FINISHED run with what the journal holds, once."""
    epochs = 2000
    db = tmp_path / "store" / "mlflow.db"
    out = tmp_path / "out"
    done = run_pipeline(tmp_path, out, f"tracking.uri={sqlite_uri(db)}", "tracking.mode=offline",
                        f"train.epochs={epochs}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Offline run" in done.stdout and f"make sync DIR={out}" in done.stdout, done.stdout
    assert not db.exists()
    journal = read_journal(out / "journal.jsonl")
    assert journal.start["run_id"] is None and journal.ended["status"] == "FINISHED"

    assert_synced(sync(out), "sent to a new run")
    client = MlflowClient(sqlite_uri(db))
    run = the_run(client)
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["pipeline.synced_from"] == str(out / "journal.jsonl")
    params = {k: str(v) for r in journal.of_kind("params") for k, v in r["params"].items()}
    assert run.data.params == params and run.data.params["train.epochs"] == str(epochs)
    for record in journal.of_kind("metrics"):
        for key, value in record["values"].items():
            assert run.data.metrics[key] == value, key
    keys, rows = journal.epochs()
    assert run.data.metrics["train_loss"] == rows[-1, 2 + keys.index("train_loss")]
    assert len(history_rows(client, run_id, tmp_path / "download")) == epochs
    history_length = len(steps(client, run_id))
    assert history_length == epochs

    assert_synced(sync(out), "already sent")
    again = the_run(client)
    assert again.info.run_id == run_id and again.info.end_time == run.info.end_time
    assert len(steps(client, run_id)) == history_length


def test_offline_sweep_then_sync(tmp_path: Path) -> None:
    """An offline sweep leaves the parent's journal beside its jobs'; syncing the sweep's
    folder creates the parent, the jobs under it, and the parent's summary."""
    db = tmp_path / "store" / "mlflow.db"
    done = run_cli([sys.executable, "-m", "pipeline", "-m", "optimizer.lr=0.01,0.1", *QUICK,
                    "tracking.mode=offline", f"tracking.uri={sqlite_uri(db)}",
                    "train.epochs=100", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                    f"pipeline.cache_dir={tmp_path / 'cache'}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"make sync DIR={tmp_path / 'sweep'}" in done.stdout and not db.exists()
    sent = sync(tmp_path / "sweep")
    assert_synced(sent, "sent to a new run")
    assert sent.stdout.count("sent to a new run") == 3
    client = MlflowClient(sqlite_uri(db))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert parent.data.tags["n_children"] == "2"
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}
    assert "summary" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert_synced(sync(tmp_path / "sweep"), "already sent")
    assert len(client.search_runs([experiment.experiment_id])) == 3


# -- 3. sync to another store -------------------------------------------------------------
def test_sync_to_another_store_creates_a_new_run(tmp_path: Path) -> None:
    """An online run's folder synced with --uri to another store becomes a new run there,
    tagged with where it came from, FINISHED, with the same metrics."""
    origin, other = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "other.db"
    out = tmp_path / "out"
    done = run_pipeline(tmp_path, out, f"tracking.uri={sqlite_uri(origin)}", "train.epochs=500")
    assert done.returncode == 0, done.stderr[-3000:]
    source = only_run(sqlite_uri(origin))

    sent = sync(out, "--uri", sqlite_uri(other))
    assert_synced(sent, "sent to a new run")
    client = MlflowClient(sqlite_uri(other))
    copy = the_run(client)
    assert copy.info.run_id != source.info.run_id
    assert copy.info.status == "FINISHED"
    assert copy.data.tags["pipeline.synced_from"] == str(out / "journal.jsonl")
    assert copy.data.tags["pipeline.source_run_id"] == source.info.run_id
    assert copy.data.metrics == source.data.metrics
    assert "test_accuracy" in copy.data.metrics
    assert len(steps(client, copy.info.run_id)) == 500
    assert only_run(sqlite_uri(origin)).info.run_id == source.info.run_id  # untouched


# -- 4. a live journal is refused, a killed one is closed ---------------------------------
def test_sync_refuses_a_live_run_and_closes_a_killed_one(tmp_path: Path) -> None:
    """Sync leaves a running process's journal alone ("still going", exit 1, no store);
    once the process is SIGKILLed, sync ends its run KILLED with every journaled epoch."""
    db = tmp_path / "store" / "mlflow.db"
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    args = pipeline_args(tmp_path, out, f"tracking.uri={sqlite_uri(db)}",
                         "tracking.mode=offline", "train.epochs=2000000")
    with background(args, tmp_path / "job") as job:
        wait_for("5000 journaled epochs", lambda: journaled_epochs(journal) >= 5000, job)
        refused = sync(out)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "still going" in refused.stderr and "Traceback" not in refused.stderr
        assert not db.exists()
        assert job.alive()
        job.kill()

    recorded = read_journal(journal)
    assert recorded.ended is None
    assert_synced(sync(out), "sent to a new run")
    client = MlflowClient(sqlite_uri(db))
    run = the_run(client)
    assert run.info.status == "KILLED"
    assert KILLED_WITHOUT_END in run.data.tags["error"]
    history = history_rows(client, run.info.run_id, tmp_path / "download")
    assert len(history) == epoch_count(recorded) >= 5000


# -- 5. heartbeats keep live runs from clean-runs -----------------------------------------
def test_heartbeat_keeps_a_live_run_from_clean_runs(tmp_path: Path) -> None:
    """A live run refreshes its heartbeat, so clean-runs leaves it alone whatever the age
    asked; once SIGKILLed and silent for longer than a live run ever is, clean-runs marks it
    KILLED."""
    store = sqlite_uri(tmp_path / "mlflow.db")
    out = tmp_path / "out"
    journal = out / "journal.jsonl"
    args = pipeline_args(tmp_path, out, f"tracking.uri={store}", "train.epochs=2000000")
    with background(args, tmp_path / "job") as job:
        run_id = wait_for("the run's journal", lambda: journal_run_id(journal), job)
        client = MlflowClient(store)

        def heartbeat() -> int:
            return int(client.get_run(run_id).data.tags["pipeline.heartbeat"])

        created = heartbeat()
        refreshed = wait_for("a refreshed heartbeat", lambda: heartbeat() > created and
                             heartbeat(), job, timeout=60, every=0.5)
        assert refreshed - created >= 14
        fresh = clean_runs(store, 0.25)
        assert fresh.returncode == 0, fresh.stderr[-3000:]
        assert "0 stale run(s) marked KILLED" in fresh.stdout, fresh.stdout
        assert client.get_run(run_id).info.status == "RUNNING"
        job.kill()

    # Silent since: its last beat made as old as a live run's never is (instead of waiting).
    client.set_tag(run_id, "pipeline.heartbeat", str(heartbeat() - LIVE_WITHIN_S - 1))
    stale = clean_runs(store, 0.25)
    assert stale.returncode == 0, stale.stderr[-3000:]
    assert "1 stale run(s) marked KILLED" in stale.stdout, stale.stdout
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "heartbeat" in run.data.tags["error"]


# -- 6. a read-only store -----------------------------------------------------------------
def test_read_only_store_fails_fast_with_one_line(tmp_path: Path) -> None:
    """A store whose folder and file cannot be written stops the run in seconds with one
    line naming the store and saying so, no traceback."""
    folder = tmp_path / "store"
    db = folder / "mlflow.db"
    uri = sqlite_uri(db)
    done = run_pipeline(tmp_path, tmp_path / "first", f"tracking.uri={uri}", "train.epochs=50")
    assert done.returncode == 0, done.stderr[-3000:]
    folder.chmod(0o555)
    db.chmod(0o444)
    try:
        started = time.monotonic()
        done = run_pipeline(tmp_path, tmp_path / "out", f"tracking.uri={uri}",
                            "train.epochs=50", prefix=AS_UNPRIVILEGED, timeout=300)
        elapsed = time.monotonic() - started
    finally:
        folder.chmod(0o755)
        db.chmod(0o644)
    message = assert_user_error(done, uri)
    assert "read-only" in message or "cannot be written" in message, message
    assert elapsed < 30, elapsed
    assert only_run(uri).info.status == "FINISHED"  # the first run, untouched


# -- 7. a full disk under the store -------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``folder``, unmounted on the way out."""
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(path: Path) -> None:
    """Write ``path`` until the disk under it is full (ENOSPC), to the last byte."""
    with open(path, "wb", buffering=0) as handle:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error
    assert os.statvfs(path.parent).f_bavail == 0


def test_full_disk_under_the_store_before_the_run(tmp_path: Path) -> None:
    """A store on a full disk when the run starts: it stops before any work, in seconds,
    with one line that names the store and the cause, and leaves no run behind."""
    with small_tmpfs(tmp_path / "disk") as disk:
        uri = sqlite_uri(disk / "mlflow.db")
        first = run_pipeline(tmp_path, tmp_path / "first", f"tracking.uri={uri}",
                             "train.epochs=100")
        assert first.returncode == 0, first.stderr[-3000:]
        fill(disk / "filler")
        started = time.monotonic()
        done = run_pipeline(tmp_path, tmp_path / "out", f"tracking.uri={uri}",
                            "train.epochs=20000")
        assert time.monotonic() - started < 60
        assert_one_line_error(done, "the disk is full", str(disk / "mlflow.db"))
        assert not (tmp_path / "out" / "data").exists()  # no stage ran
        assert [r.info.status for r in MlflowClient(uri).search_runs(
            [the_run(MlflowClient(uri)).info.experiment_id])] == ["FINISHED"]


def test_full_disk_under_the_store_mid_run(tmp_path: Path) -> None:
    """The store's disk fills up while the run trains: training goes on, the run ends with
    one line naming the journal and the sync command, the journal is complete, no empty file
    is left under a final name; once there is space, sync sends the whole run."""
    with small_tmpfs(tmp_path / "disk") as disk:
        uri = sqlite_uri(disk / "mlflow.db")
        out = tmp_path / "out"
        args = pipeline_args(tmp_path, out, f"tracking.uri={uri}", "train.epochs=60000",
                             checkpoint_every=5000)
        with background(args, tmp_path / "job") as job:
            wait_for("5000 journaled epochs", lambda: journaled_epochs(out / "journal.jsonl")
                     >= 5000, job)
            filler = disk / "filler"
            fill(filler)
            done = job.wait(timeout=600)
        message = assert_one_line_error(done, "the disk is full", "make sync DIR=")
        assert str(out / "journal.jsonl") in message
        journal = read_journal(out / "journal.jsonl")
        assert journal.ended is not None and journal.ended["status"] == "FINISHED"
        assert epoch_count(journal) == 60000
        for sub in ("artifacts", "checkpoints"):
            empty = [p for p in (out / sub).rglob("*") if p.is_file() and p.stat().st_size == 0]
            assert not empty, empty
        client = MlflowClient(uri)
        # (A full sqlite disk refuses even the final status: the run may still show RUNNING
        # there until it is synced, which the message says to do.)

        # Free the space. A 2 MB disk cannot hold this run's store (~15000 metric rows and
        # a 60000-row history.csv), so the disk grows too.
        filler.unlink()
        grown = subprocess.run(["mount", "-o", "remount,size=64m", str(disk)],
                               capture_output=True, text=True)
        assert grown.returncode == 0, grown.stderr
        sent = sync(out)
        assert_synced(sent)
        run_id = sent_run_id(sent)
        assert journal.start["run_id"] == run_id  # the same run, completed
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and "error" not in run.data.tags
        assert len(history_rows(client, run_id, tmp_path / "download")) == 60000


def test_full_disk_under_the_outputs(tmp_path: Path) -> None:
    """The output folder (journal, checkpoints) fills up mid-run while the store is fine:
    one line naming the file, the run FAILED in the store with that line, no empty file."""
    uri = sqlite_uri(tmp_path / "store" / "mlflow.db")
    with small_tmpfs(tmp_path / "disk", size="1m") as disk:
        out = disk / "out"
        done = run_pipeline(tmp_path, out, f"tracking.uri={uri}", "train.epochs=100000",
                            checkpoint_every=1000)
        message = assert_one_line_error(done, "No space left on device", str(out))
        empty = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0
                 and p.suffix != ".log"]
        assert not empty, empty
    run = the_run(MlflowClient(uri))
    assert run.info.status == "FAILED" and run.data.tags["error"].startswith(message)
