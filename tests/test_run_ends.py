"""How a run ends, and where it writes: every end leaves one line, the right exit code and a
record that says what happened; a run writes only its own files, in a folder of its own.

Each case goes through the real CLI (``python -m pipeline``) against a real store: a sqlite
file, or a real ``mlflow server`` on 127.0.0.1 for the long final flush.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.run import artifacts
from pipeline.tracking.journal import read_journal
from tests.servers import MlflowServer
from tests.test_failures import assert_user_error
from tests.test_tracking_faults import Background, background, sqlite_uri, sync, wait_for

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
EXPERIMENT = "mlp-pipeline"
QUIET = ["train.progress=false", "tracking.plots=false", "tracking.log_model=false"]
NOTHING_RECORDED = "before any run started; nothing was recorded"


def pipeline(tmp_path: Path, *overrides: str, multirun: bool = False) -> list[str]:
    """``python -m pipeline`` with the store and the stage cache in ``tmp_path``."""
    return [sys.executable, "-m", "pipeline", *(["-m"] if multirun else []),
            f"tracking.uri={sqlite_uri(tmp_path / 'm.db')}",
            f"pipeline.cache_dir={tmp_path / 'cache'}", *overrides]


def runs(uri: str) -> list[Run]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_clean_end(done: subprocess.CompletedProcess, code: int) -> str:
    """Exit ``code``, no traceback or thread exception; returns the last line of stderr."""
    assert done.returncode == code, (done.returncode, done.stderr[-3000:])
    for mark in ("Traceback", "Exception in thread", "Warning:", "resource_tracker"):
        assert mark not in done.stderr, done.stderr[-4000:]
    return last_line(done.stderr)


# -- 1. a reused output folder ---------------------------------------------------------------
def journals_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("journal*.jsonl"))


def training_started(folder: Path, other_than: str) -> Path | None:
    """The journal under ``folder`` of a run other than journal ``other_than`` once it
    recorded its training plan."""
    for path in journals_under(folder):
        text = path.read_text()
        if other_than not in text.split("\n", 1)[0] and '"k":"plan"' in text:
            return path
    return None


def test_a_reused_folder_lends_an_interrupted_run_none_of_its_checkpoints(tmp_path) -> None:
    """Run A finishes in D; run B (another learning rate) starts in D and is interrupted
    before its first checkpoint: B is KILLED with no checkpoint in the store, cannot be
    resumed from A's model, and A's files in D are untouched."""
    folder = tmp_path / "D"
    first = subprocess.run(pipeline(tmp_path, *QUIET, "train.epochs=300",
                                    "train.checkpoint_every=100", f"hydra.run.dir={folder}"),
                           capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    uri = sqlite_uri(tmp_path / "m.db")
    (a,) = runs(uri)
    # A fresh folder keeps the layout it always had: no subfolder, no claim left behind.
    assert a.data.tags["output_dir"] == str(folder)
    assert f"outputs: {folder}\n" in first.stdout + "\n"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".hydra", "__main__.log", "artifacts", "checkpoints", "data", "journal.jsonl",
         "journal.jsonl.sent"])
    a_files = {p: sha256(p) for p in folder.rglob("*") if p.is_file() and p.suffix == ".json"}
    journal_id = a.data.tags["pipeline.journal_id"]

    args = pipeline(tmp_path, *QUIET, "optimizer.lr=0.5", "train.epochs=5000000",
                    "train.checkpoint_every=4000000", f"hydra.run.dir={folder}")
    with background(args, tmp_path / "b") as job:
        own = wait_for("B's training", lambda: training_started(folder, journal_id), job)
        job.process.send_signal(signal.SIGINT)
        done = job.wait(timeout=60)
    assert_clean_end(done, 130)
    (b,) = [r for r in runs(uri) if r.info.run_id != a.info.run_id]
    assert b.info.status == "KILLED"
    client = MlflowClient(uri)
    assert client.list_artifacts(b.info.run_id, "checkpoints") == []
    # B wrote into a folder of its own inside D, and says so.
    b_dir = Path(b.data.tags["output_dir"])
    assert b_dir.parent == folder and b_dir.name.startswith("run-"), b_dir
    assert own == b_dir / "journal.jsonl"
    assert str(b_dir) in done.stdout + done.stderr
    # A's files are A's: the same bytes, A's journal where it was.
    assert {p: sha256(p) for p in a_files} == a_files
    assert read_journal(folder / "journal.jsonl").journal_id == journal_id
    assert not list(folder.glob("journal-*"))

    resumed = subprocess.run(pipeline(tmp_path, *QUIET, "optimizer.lr=0.5",
                                      f"train.resume_from={b.info.run_id}",
                                      f"hydra.run.dir={tmp_path / 'E'}"),
                             capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV,
                             timeout=300)
    assert_user_error(resumed, "checkpoint")


def test_two_runs_at_once_in_one_folder_each_keep_their_own_files(tmp_path) -> None:
    """Two runs started together in one folder: each writes its own checkpoints, and the
    store holds each run's own final.json (the bytes its checkpoint_sha256 names)."""
    for attempt in range(2):
        folder = tmp_path / f"D{attempt}"
        jobs = [Background(pipeline(tmp_path, *QUIET, f"optimizer.lr={lr}", "train.epochs=600",
                                    "train.checkpoint_every=100", f"hydra.run.dir={folder}",
                                    f"tracking.experiment=at-once-{attempt}"),
                           tmp_path / f"job{attempt}-{index}")
                for index, lr in enumerate((0.01, 0.2))]
        try:
            results = [job.wait(timeout=300) for job in jobs]
        finally:
            for job in jobs:
                job.kill()
        for done in results:
            assert done.returncode == 0, done.stderr[-3000:]
        client = MlflowClient(sqlite_uri(tmp_path / "m.db"))
        experiment = client.get_experiment_by_name(f"at-once-{attempt}")
        pair = client.search_runs([experiment.experiment_id])
        folders = {Path(r.data.tags["output_dir"]) for r in pair}
        assert len(folders) == 2 and folder in folders, folders
        for run in pair:
            own = Path(run.data.tags["output_dir"])
            local = own / "checkpoints" / "final.json"
            assert sha256(local) == run.data.tags["checkpoint_sha256"]
            stored = client.download_artifacts(run.info.run_id, "checkpoints/final.json",
                                               str(tmp_path / run.info.run_id))
            assert sha256(Path(stored)) == run.data.tags["checkpoint_sha256"]
            names = {Path(f.path).name for f in client.list_artifacts(run.info.run_id,
                                                                       "checkpoints")}
            assert names == {f"epoch_0000{e}00.json" for e in range(1, 7)} | {"final.json"}


def _claim(folder: str, key: str, start: multiprocessing.synchronize.Barrier,
           found: multiprocessing.Queue) -> None:
    start.wait()
    found.put(str(artifacts.claim_folder(Path(folder), key).folder))


def test_runs_claiming_one_folder_at_the_same_moment_get_different_folders(tmp_path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        folder = tmp_path / str(attempt)
        start, found = context.Barrier(6), context.Queue()
        workers = [context.Process(target=_claim, args=(str(folder), f"{attempt}{i}", start,
                                                         found)) for i in range(6)]
        for worker in workers:
            worker.start()
        claimed = [found.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        assert len(set(claimed)) == 6, claimed
        assert claimed.count(str(folder)) == 1, claimed


def test_a_released_claim_leaves_a_fresh_folder_as_it_was(tmp_path) -> None:
    """A run that wrote nothing (its store did not answer, say) leaves the folder free."""
    claim = artifacts.claim_folder(tmp_path / "D", "k1")
    assert claim.folder == tmp_path / "D" and not claim.moved
    claim.release()
    assert list((tmp_path / "D").iterdir()) == []
    again = artifacts.claim_folder(tmp_path / "D", "k2")
    assert again.folder == tmp_path / "D"
    (again.folder / "checkpoints").mkdir()
    again.release()
    third = artifacts.claim_folder(tmp_path / "D", "k3")
    assert third.moved and third.folder == tmp_path / "D" / "run-k3"


@pytest.mark.slow
def test_a_sweep_run_again_in_its_folder_keeps_each_attempt_apart(tmp_path) -> None:
    """The same offline sweep twice in one sweep folder: the second attempt's jobs write
    into folders of their own, and syncing the folder sends both sweeps, each job under
    its own parent."""
    sweep = tmp_path / "sweep"
    command = pipeline(tmp_path, "optimizer.lr=0.01,0.1", *QUIET, "train.epochs=100",
                       "train.checkpoint_every=50", "tracking.mode=offline",
                       f"hydra.sweep.dir={sweep}", multirun=True)
    for _ in range(2):
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT,
                              env=ENV, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    jobs = [p for p in journals_under(sweep) if p.parent != sweep]
    assert len(jobs) == 4, jobs
    for job in ("0", "1"):
        (second,) = (sweep / job).glob("run-*/journal.jsonl")
        assert sorted(p.name for p in (second.parent / "checkpoints").iterdir()) == [
            "epoch_0000050.json", "epoch_0000100.json", "final.json"]
    sent = sync(sweep)
    assert sent.returncode == 0, sent.stderr[-3000:]
    assert sent.stdout.count("sent to a new run") == 6, sent.stdout
    uri = sqlite_uri(tmp_path / "m.db")
    everything = runs(uri)
    parents = {r.info.run_id for r in everything if r.data.tags.get("sweep") == "parent"}
    children = [r for r in everything if r.info.run_id not in parents]
    assert len(parents) == 2 and len(children) == 4
    for parent in parents:
        mine = [r for r in children if r.data.tags.get("mlflow.parentRunId") == parent]
        assert len(mine) == 2
    again = sync(sweep)
    assert again.stdout.count("already sent") == 6, again.stdout


# -- 2. Ctrl-C while thousands of checkpoints are still to be sent -------------------------
@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    workdir = tmp_path / "server"
    workdir.mkdir()
    with MlflowServer(sqlite_uri(workdir / "server.db"), workdir / "artifacts",
                      workdir) as running:
        yield running


def count_checkpoints(folder: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(folder))
    except FileNotFoundError:
        return 0


def status_within(client: MlflowClient, run_id: str, seconds: float) -> tuple[str, float]:
    """The run's status once it is no longer RUNNING, and when (or RUNNING after
    ``seconds``)."""
    start = time.monotonic()
    while True:
        status = client.get_run(run_id).info.status
        elapsed = time.monotonic() - start
        if status != "RUNNING" or elapsed > seconds:
            return status, elapsed
        time.sleep(0.1)


@pytest.mark.slow
def test_ctrl_c_with_thousands_of_checkpoints_to_send_ends_killed_in_seconds(
        tmp_path: Path, server: MlflowServer) -> None:
    """Ctrl-C on a run against a server with thousands of checkpoints still to upload: the
    store reads KILLED within seconds, the process exits 130 within a few seconds and says
    what is left for make sync; sync then sends the rest."""
    client = MlflowClient(server.url)
    for attempt in range(1):  # repeated by hand under load; once in the suite (CI time)
        out = tmp_path / f"out{attempt}"
        args = pipeline(tmp_path, *QUIET, f"tracking.uri={server.url}", "train.epochs=3000000",
                        "train.checkpoint_every=10", f"hydra.run.dir={out}")
        with background(args, tmp_path / f"job{attempt}") as job:
            wait_for("3000 checkpoints", lambda out=out: count_checkpoints(
                out / "checkpoints") >= 3000, job, timeout=300, every=0.1)
            run_id = read_journal(out / "journal.jsonl").start["run_id"]
            sent = time.monotonic()
            job.process.send_signal(signal.SIGINT)
            status, elapsed = status_within(client, run_id, 30)
            done = job.wait(timeout=120)
            exited = time.monotonic() - sent
        assert status == "KILLED" and elapsed < 5, (status, elapsed)
        line = assert_clean_end(done, 130)
        assert exited < 8, exited
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        if "make sync" in line:  # the store did not get everything in the time allowed
            assert f"make sync DIR={out}" in line, line
            assert "incomplete record" in run.data.tags["error"], run.data.tags["error"]
    synced = sync(out)  # the last attempt's rest
    assert synced.returncode == 0, synced.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and "incomplete" not in run.data.tags["error"]
    names = {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoints")}
    assert names == {p.name for p in (out / "checkpoints").iterdir()}


@pytest.mark.slow
def test_ctrl_c_during_the_final_flush_ends_killed_in_seconds(
        tmp_path: Path, server: MlflowServer) -> None:
    """Ctrl-C while a finished run sends its thousands of checkpoints: KILLED in the store
    within seconds, exit 130 quickly, and make sync then gives the store the end the
    journal holds (FINISHED if it was journaled before the Ctrl-C)."""
    client = MlflowClient(server.url)
    out = tmp_path / "out"
    args = pipeline(tmp_path, *QUIET, f"tracking.uri={server.url}", "train.epochs=25000",
                    "train.checkpoint_every=10", f"hydra.run.dir={out}")
    with background(args, tmp_path / "job") as job:
        wait_for("the end of the run", lambda out=out: (
            out / "artifacts" / "predictions.csv").exists(), job, timeout=300, every=0.05)
        time.sleep(1.0)
        assert job.alive(), "the run ended before Ctrl-C; give it more checkpoints"
        run_id = read_journal(out / "journal.jsonl").start["run_id"]
        sent = time.monotonic()
        job.process.send_signal(signal.SIGINT)
        status, elapsed = status_within(client, run_id, 30)
        done = job.wait(timeout=120)
        exited = time.monotonic() - sent
    assert status == "KILLED" and elapsed < 5, (status, elapsed)
    line = assert_clean_end(done, 130)
    assert exited < 8, exited
    assert f"make sync DIR={out}" in line, line
    assert "incomplete record" in client.get_run(run_id).data.tags["error"]

    synced = sync(out)
    assert synced.returncode == 0, synced.stderr[-3000:]
    ended = read_journal(out / "journal.jsonl").ended
    run = client.get_run(run_id)
    assert run.info.status == ended["status"]
    assert run.data.tags.get("error") == ended["error"]
    stored = {Path(f.path).name for f in client.list_artifacts(run_id, "checkpoints")}
    assert stored == {p.name for p in (out / "checkpoints").iterdir()}


# -- 3. one line, not a traceback ------------------------------------------------------------
def plot_process(pid: int) -> bool:
    """Whether process ``pid`` has forked a copy of itself (the process drawing the plots;
    not a ``git`` it runs, say)."""
    try:
        own = Path(f"/proc/{pid}/cmdline").read_bytes()
        children = " ".join(Path(f"/proc/{pid}/task/{task}/children").read_text()
                            for task in os.listdir(f"/proc/{pid}/task")).split()
    except OSError:
        return False
    for child in children:
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == own:
                return True
        except OSError:
            continue
    return False


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "terminated"),
                                                   (signal.SIGINT, 130, "interrupted")])
def test_a_signal_while_the_plots_are_drawn_ends_in_one_line(tmp_path, sig, code, word) -> None:
    """SIGTERM (or Ctrl-C to the whole process group) while the forked plot process draws:
    one line, exit 143 (130), the run KILLED. Repeated."""
    uri = sqlite_uri(tmp_path / "m.db")
    for attempt in range(3):
        out = tmp_path / f"out{attempt}"
        args = pipeline(tmp_path, "train.progress=false", "tracking.log_model=false",
                        "train.epochs=200", f"hydra.run.dir={out}")
        process = subprocess.Popen(args, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            # The plots are forked once final.json is written (a git run by the pipeline
            # is a copy of it too, for an instant).
            wait_for("the plot process", lambda pid=process.pid, out=out: (
                out / "checkpoints" / "final.json").exists() and plot_process(pid),
                every=0.01, timeout=120)
            if sig == signal.SIGINT:
                os.killpg(process.pid, sig)  # what the terminal does on Ctrl-C
            else:
                process.send_signal(sig)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        done = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        line = assert_clean_end(done, code)
        assert line.startswith(f"{word}: the run was marked KILLED"), line
        run_id = read_journal(out / "journal.jsonl").start["run_id"]
        assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


def worker_processes(pgid: int) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(entry)
    return found


@pytest.mark.parametrize("user_warnings", [None, "default"])
def test_what_a_worker_stopped_mid_start_leaves_is_cleaned_up_without_a_warning(
        user_warnings: str | None) -> None:
    """Ctrl-C while joblib's workers start can leave a semaphore of theirs behind: the
    sweep's resource tracker unlinks it at the end without printing its warning after the
    interrupt's one line (a user's own PYTHONWARNINGS is kept beside it)."""
    leaves_a_lock = (
        "import os\n"
        "from pipeline.sweeps.callback import _start_resource_trackers\n"
        "from joblib.externals.loky.backend.context import get_context\n"
        "_start_resource_trackers()\n"
        "lock = get_context('loky').Lock()  # a worker's, never released\n"
        "assert os.environ.get('PYTHONWARNINGS') == " + repr(user_warnings) + "\n"
        "os._exit(0)\n")
    env = {k: v for k, v in ENV.items() if k != "PYTHONWARNINGS"}
    if user_warnings is not None:
        env["PYTHONWARNINGS"] = user_warnings
    done = subprocess.run([sys.executable, "-c", leaves_a_lock], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr  # the tracker's output, once it has cleaned up


@pytest.mark.slow
def test_ctrl_c_while_joblib_workers_start_ends_in_one_line(tmp_path) -> None:
    """Ctrl-C (to the whole process group) while a joblib sweep's workers still import,
    before and after the sweep's parent run exists: one line, exit 130, no thread traceback
    or joblib warning, no run left RUNNING, no process left behind. Repeated."""
    uri = sqlite_uri(tmp_path / "m.db")
    # Seconds after the start, or (None, s) seconds after the parent's journal appears.
    moments = [(0.8, 0), (2.5, 0), (None, 0), (None, 0.5), (1.5, 0)]
    for attempt, (delay, after_parent) in enumerate(moments):
        sweep = tmp_path / f"sweep{attempt}"
        args = pipeline(tmp_path, "hydra/launcher=joblib", "seed=1,2", *QUIET,
                        "train.epochs=100", f"hydra.sweep.dir={sweep}", multirun=True)
        process = subprocess.Popen(args, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            if delay is None:
                wait_for("the parent run", lambda sweep=sweep: (sweep / "journal.jsonl").exists(),
                         every=0.01, timeout=120)
            time.sleep(delay or after_parent)
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=120)
        finally:
            process.kill()
        done = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
        line = assert_clean_end(done, 130)
        if delay is None:
            assert line.startswith("interrupted: the sweep was stopped"), line
            parent = read_journal(sweep / "journal.jsonl").start["run_id"]
            assert MlflowClient(uri).get_run(parent).info.status == "KILLED"
        else:
            assert line.startswith("interrupted"), line
        assert not [r for r in runs(uri) if r.info.status == "RUNNING"]
        time.sleep(0.5)
        assert worker_processes(process.pid) == [], (delay, after_parent)


def test_an_override_key_longer_than_a_file_name_is_one_line(tmp_path) -> None:
    done = subprocess.run(pipeline(tmp_path, f"+tags.{'k' * 300}=1",
                                   f"hydra.run.dir={tmp_path / 'out'}"),
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV, timeout=120)
    message = assert_user_error(done, "too long")
    assert "+tags." in message and len(message) < 500, message
    assert not runs(sqlite_uri(tmp_path / "m.db"))


# -- 4. a signal before the run exists -------------------------------------------------------
def handles_signals(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler: ``python -m pipeline`` installs its
    first thing (before that, only Python's own start-up runs, which no app can handle)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(status.split("SigCgt:")[1].split()[0], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.slow
def test_a_signal_before_the_run_started_says_so(tmp_path) -> None:
    """SIGINT or SIGTERM at early moments (Python still importing, Hydra composing, the
    store opening): one true line, exit 130 / 143, no traceback, no run left RUNNING.
    Repeated; a signal that comes while Python itself still starts, before any line of the
    app runs (~50 ms, more on a busy machine), is not the app's to handle."""
    uri = sqlite_uri(tmp_path / "m.db")
    cases = [(sig, delay) for delay in (0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.0, 1.5)
             for sig in (signal.SIGINT, signal.SIGTERM)]
    handled = 0
    for attempt, (sig, delay) in enumerate(cases):
        out = tmp_path / f"out{attempt}"
        before = {r.info.run_id for r in runs(uri)}
        process = subprocess.Popen(pipeline(tmp_path, *QUIET, "train.epochs=20000",
                                            f"hydra.run.dir={out}"),
                                   cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        ours = handles_signals(process.pid)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=60)
        if not ours:
            continue
        handled += 1
        done = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        code, word = (130, "interrupted") if sig == signal.SIGINT else (143, "terminated")
        line = assert_clean_end(done, code)
        new = [r for r in runs(uri) if r.info.run_id not in before]
        assert not [r for r in new if r.info.status == "RUNNING"], (delay, line)
        if line == f"{word} {NOTHING_RECORDED}":
            assert new == [] and not (out / "journal.jsonl").exists(), (delay, line)
        else:
            assert line.startswith(f"{word}: the run was marked KILLED"), (delay, line)
            assert [r.info.status for r in new] == ["KILLED"], (delay, line)
    assert handled >= len(cases) - 3, handled


# -- 5. out of memory --------------------------------------------------------------------------
def test_data_that_does_not_fit_is_named_as_such(compose_cfg, tmp_path, isolated,
                                                 store) -> None:
    """Data too large for memory (past any up-front check) is reported as the data stage's,
    with the data setting to change, never as the model's."""
    from pipeline.config.schema import validate
    from pipeline.errors import PipelineError
    from pipeline.run.runner import run

    config = validate(compose_cfg(*isolated, *QUIET, "train.epochs=5"))
    config.data.n_samples = 10**11  # past the schema: what still runs out of memory
    with pytest.raises(PipelineError) as caught:
        run(config, output_dir=tmp_path / "out")
    message = str(caught.value)
    assert "data.n_samples" in message and "hidden_sizes" not in message, message
    assert "generate" in message, message
    (failed,) = runs(store)
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == message


def test_a_model_that_does_not_fit_is_named_as_such(compose_cfg, tmp_path, isolated,
                                                    store) -> None:
    from pipeline.config.schema import validate
    from pipeline.errors import PipelineError
    from pipeline.run.runner import run

    config = validate(compose_cfg(*isolated, *QUIET, "train.epochs=5"))
    config.model.hidden_sizes = [2_000_000, 2_000_000]  # past the schema's memory check
    with pytest.raises(PipelineError) as caught:
        run(config, output_dir=tmp_path / "out")
    message = str(caught.value)
    assert "model.hidden_sizes" in message and "data." not in message, message
    (failed,) = runs(store)
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == message


def test_an_interrupt_python_drops_in_a_finaliser_is_raised_again_without_a_traceback(
        capfd: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C whose KeyboardInterrupt lands in a __del__ or a garbage-collection callback:
    Python drops it there and prints "Exception ignored in ..."; the run raises it again
    (so it ends KILLED) and nothing is printed."""
    from pipeline.run import runner

    class Finalised:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGINT)  # the handler raises inside __del__

    pytests_hook, sys.unraisablehook = sys.unraisablehook, sys.__unraisablehook__  # Python's
    try:
        with runner._interrupts_raise(worker=False):
            Finalised()  # collected at once: the interrupt is raised, and dropped, in __del__
            with pytest.raises(KeyboardInterrupt):
                runner._raise_if_dropped()
    finally:
        sys.unraisablehook = pytests_hook
        runner._unseen.clear()
    assert capfd.readouterr().err == ""
