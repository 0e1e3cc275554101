"""Sweeps: one MLflow parent run per multirun, complete children, parallel and remote."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from tests import servers

pytestmark = pytest.mark.slow

EPOCHS = 40
GRID = ["optimizer.lr=0.01,0.1", "model.hidden_sizes=[4],[8]"]


def multirun(tmp_path: Path, uri: str, *args: str, timeout: int = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", *args, f"tracking.uri={uri}",
         f"train.epochs={EPOCHS}", "train.checkpoint_every=0", "tracking.plots=false",
         "tracking.log_model=false", f"pipeline.cache_dir={tmp_path / 'cache'}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})},
    )


def sweep_runs(uri: str) -> tuple[object, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlp-pipeline")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return parents[0], children


def check_complete_sweep(uri: str, n_children: int, *, cache_hits: bool = True) -> None:
    client = MlflowClient(uri)
    parent, children = sweep_runs(uri)
    assert parent.info.status == "FINISHED"
    assert len(children) == n_children
    for child in children:
        assert child.info.status == "FINISHED"
        history = client.get_metric_history(child.info.run_id, "train_loss")
        assert len(history) == EPOCHS
        assert "test_accuracy" in child.data.metrics
    assert parent.data.tags["n_children"] == str(n_children)
    assert parent.data.tags["n_failed"] == "0"
    # Selected on validation, ties by val_log_loss then the job number; the chosen run's
    # test figure is the final estimate.
    expected = min(children, key=lambda c: (
        -c.data.metrics["val_accuracy"], c.data.metrics["val_log_loss"],
        int(Path(c.data.tags["output_dir"]).name)))
    assert parent.data.tags["best_run_id"] == expected.info.run_id
    assert (parent.data.metrics["best_run_test_accuracy"]
            == expected.data.metrics["test_accuracy"])
    summary = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "summary")}
    assert {"children.csv", "children.md", "children.html", "training_curves.png"} <= summary
    assert any(name.startswith("test_accuracy_vs_") for name in summary)
    if cache_hits:
        # The data stages ran once: every other job hit the cache.
        misses = [c for c in children if c.data.tags["cache.generate"] == "miss"]
        assert len(misses) == 1


def test_basic_launcher_sweep(tmp_path, store) -> None:
    done = multirun(tmp_path, store, *GRID)
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete_sweep(store, 4)


def test_joblib_sweep_in_parallel(tmp_path, store) -> None:
    done = multirun(tmp_path, store, *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=4")
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete_sweep(store, 4)
    _, children = sweep_runs(store)
    # 4 parallel jobs share the cores: each trains with max(1, cores // 4) BLAS threads.
    expected = str(max(1, (os.cpu_count() or 1) // 4))
    assert {c.data.tags["train_threads"] for c in children} == {expected}


def test_failed_job_fails_the_sweep_but_not_the_others(tmp_path, store) -> None:
    good = tmp_path / "good.csv"
    good.write_text("a,b,label\n" + "".join(
        f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(60)))
    missing = tmp_path / "missing.csv"
    done = multirun(tmp_path, store, "data=csv", f"data.path={good},{missing}")
    assert done.returncode != 0
    assert "missing.csv" in done.stderr
    parent, children = sweep_runs(store)
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"]
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "does not exist" in failed.data.tags["error"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["n_failed"] == "1"


@pytest.fixture(params=["sqlite", "postgresql"])
def tracking_server(request, tmp_path_factory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with a sqlite or a PostgreSQL backend store."""
    workdir = tmp_path_factory.mktemp("server")
    if request.param == "sqlite":
        yield from servers.start_mlflow_server(f"sqlite:///{workdir / 'server.db'}", workdir)
    else:
        for backend in servers.start_postgres(workdir):
            yield from servers.start_mlflow_server(backend, workdir)


def test_sweep_against_a_tracking_server(tmp_path, tracking_server) -> None:
    """Four jobs at once against a real server (a new store behind it): none lost."""
    done = multirun(tmp_path, tracking_server, *GRID, "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=4")
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete_sweep(tracking_server, 4)


@pytest.fixture
def ray_head(tmp_path) -> Iterator[str]:
    yield from servers.start_ray_head(tmp_path)


def test_sweep_on_an_existing_ray_cluster(tmp_path, store, ray_head) -> None:
    done = multirun(tmp_path, store, *GRID, "hydra/launcher=ray_cluster",
                    f"hydra.launcher.ray.init.address={ray_head}", timeout=900,
                    env=servers.RAY_LOOPBACK_ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete_sweep(store, 4)


def test_optuna_search_is_one_parent_with_the_best_trial(tmp_path, store) -> None:
    done = multirun(tmp_path, store, "hparams_search=mlp_optuna", "hydra.sweeper.n_trials=3")
    assert done.returncode == 0, done.stderr[-3000:]
    check_complete_sweep(store, 3, cache_hits=False)
    parent, children = sweep_runs(store)
    swept = {c.data.params["optimizer.lr"] for c in children}
    assert len(swept) == 3  # three sampled learning rates
    assert parent.data.tags["best_run_id"] in {c.info.run_id for c in children}


def _store_module_loaded() -> bool:
    return "mlflow.store.tracking.sqlalchemy_store" in sys.modules


def test_joblib_workers_are_warm_before_the_first_job() -> None:
    """The sweep starts joblib's workers while it creates the parent run; the launcher's own
    Parallel call must then reuse those warm processes (same settings), not start cold ones."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    from pipeline.config.paths import CONF_DIR
    from pipeline.sweeps import callback as sweep_module
    from pipeline.sweeps.callback import _start_joblib_workers, joblib_settings, wait_for_workers

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        config = compose(config_name="config", return_hydra_config=True,
                         overrides=["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
        basic = compose(config_name="config", return_hydra_config=True)
    GlobalHydra.instance().clear()
    _start_joblib_workers(basic)
    assert joblib_settings(basic) is None and sweep_module._warming is None
    settings = joblib_settings(config)
    assert settings is not None and settings["backend"] == "loky" and settings["n_jobs"] == 2
    try:
        _start_joblib_workers(config)
        assert sweep_module._warming is not None
        wait_for_workers()
        assert sweep_module._warming is None
        loaded = Parallel(**settings)(delayed(_store_module_loaded)() for _ in range(6))
        assert loaded == [True] * 6
    finally:
        get_reusable_executor().shutdown(wait=True)


def _live_processes(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (a zombie waiting to be reaped has ended)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _group(pgid: int) -> list[int]:
    """Every process in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == pgid:
                members.append(int(entry.name))
    return members


@pytest.mark.parametrize(("how", "code"), [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupting_a_parallel_sweep_stops_it_cleanly(tmp_path, store, how, code) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM to the
    launching process: running jobs end KILLED with complete journals, queued jobs never
    start, the parent ends KILLED with the counts, and no process outlives the sweep. While
    the sweep runs, its parent's heartbeat keeps `make clean-runs` away from it."""
    import json
    import signal
    import time

    from pipeline.tracking.journal import read_journal

    command = [sys.executable, "-m", "pipeline", "-m", "optimizer.lr=0.01,0.1",
               "model.hidden_sizes=[4],[8]", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
               f"tracking.uri={store}", "train.epochs=2000000", "train.checkpoint_every=0",
               "tracking.plots=false", "tracking.log_model=false", "train.progress=false",
               f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        journals = [tmp_path / "sweep" / str(i) / "journal.jsonl" for i in (0, 1)]
        deadline = time.monotonic() + 180
        while not all(j.exists() and j.stat().st_size > 2000 for j in journals):
            assert process.poll() is None and time.monotonic() < deadline, "no job started"
            time.sleep(0.2)
        while not all(len(read_journal(j).epochs()[1]) > 1000 for j in journals):
            assert process.poll() is None and time.monotonic() < deadline, "no epochs"
            time.sleep(0.2)
        if how == "ctrl-c":  # the heartbeat once (it waits 25 s)
            # The parent's first heartbeat is its start, over 25 s ago by now; only a
            # refresh (every 15 s, a little later on a busy machine) keeps it younger than 20 s.
            time.sleep(25)
            fresh = subprocess.run([sys.executable, "-m", "pipeline.commands.clean_runs",
                                    "--uri", store, "--max-age-minutes", str(20 / 60)],
                                   capture_output=True, text=True, cwd=PROJECT_ROOT, env=env)
            assert "0 stale run(s)" in fresh.stdout, fresh.stdout + fresh.stderr
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    time.sleep(0.5)
    assert not _live_processes(_group(process.pid)), "a process outlived the sweep"

    client = MlflowClient(store)
    parent, children = sweep_runs(store)
    assert parent.info.status == "KILLED"
    assert parent.data.tags["n_children"] == "2" and parent.data.tags["n_killed"] == "2"
    assert len(children) == 2  # the two queued jobs never started
    assert not (tmp_path / "sweep" / "2").exists() and not (tmp_path / "sweep" / "3").exists()
    for child in children:
        assert child.info.status == "KILLED"
        journal = read_journal(Path(child.data.tags["pipeline.journal"]))
        assert journal.ended is not None and journal.ended["status"] == "KILLED"
        steps = journal.epochs()[1][:, 0].astype(int).tolist()
        assert steps == list(range(1, len(steps) + 1)) and len(steps) > 1000
        history = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert max(history) == steps[-1]  # the last epoch reached the store
        assert "history.csv" in {a.path for a in client.list_artifacts(child.info.run_id)}
    summary = json.dumps(parent.data.tags)
    assert "interrupted" in summary


def test_a_stop_the_garbage_collector_swallowed_still_stops_the_next_job(monkeypatch) -> None:
    """Python drops an exception a signal handler raises inside a GC callback; the sweep
    must still stop before its next job (basic launcher: jobs run in this process)."""
    import signal as signals

    import pipeline.sweeps.callback as sweep

    monkeypatch.setattr(sweep, "_stopping", None)
    sweep.raise_if_stopping()  # nothing asked to stop: no-op
    with pytest.raises(KeyboardInterrupt):
        sweep._stop_sweep(signals.SIGINT, None)  # what a swallowed Ctrl-C leaves behind
    with pytest.raises(KeyboardInterrupt):
        sweep.raise_if_stopping()
    assert isinstance(sweep.stop_signal(), KeyboardInterrupt)


def test_a_stop_python_drops_in_a_finaliser_prints_no_traceback() -> None:
    """Ctrl-C landing in a ``__del__`` (GitPython's ``Repo.__del__`` in a sweep's parent):
    Python drops the handler's interrupt and prints "Exception ignored in" with a traceback
    unless the sweep's hook, which raises it again later, silences it. Unrelated errors in a
    finaliser still print."""
    code = (
        "import gc, sys\n"
        "import pipeline.sweeps.callback as sweep\n"
        "sweep.quiet_dropped_interrupts()\n"
        "class Raises:\n"
        "    def __init__(self, error): self.error = error\n"
        "    def __del__(self): raise self.error\n"
        "Raises(KeyboardInterrupt()); gc.collect()\n"  # before any stop: printed
        "sweep.remember_stop(KeyboardInterrupt())\n"
        "Raises(KeyboardInterrupt()); gc.collect()\n"  # while stopping: silent
        "Raises(ValueError('unrelated')); gc.collect()\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "still running", done.stderr
    assert done.stderr.count("Exception ignored") == 2, done.stderr
    assert "ValueError: unrelated" in done.stderr


@pytest.mark.parametrize("full_error", ["0", "1"])
def test_an_error_that_follows_a_ctrl_c_ends_as_the_interrupt(full_error: str) -> None:
    """Ctrl-C can cut Hydra or OmegaConf short mid-step (seen once: an omegaconf assertion
    in the sweep's launching process right after Ctrl-C); what fails next is its
    consequence: exit 130 and the interrupt's one line, not a traceback. Without a Ctrl-C,
    or with HYDRA_FULL_ERROR=1, an error is still a bug's traceback."""
    code = (
        "import sys\n"
        "import pipeline.__main__ as app\n"
        "from pipeline.sweeps.callback import remember_stop\n"
        "def main():\n"
        "    if sys.argv[1] == 'stopped':\n"
        "        remember_stop(KeyboardInterrupt())\n"
        "    raise AssertionError('a library left half-way')\n"
        "app.main = main\n"
        "app.cli()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "HYDRA_FULL_ERROR": full_error}
    stopped, bug = (subprocess.run([sys.executable, "-c", code, how], cwd=PROJECT_ROOT,
                                   env=env, capture_output=True, text=True, timeout=120)
                    for how in ("stopped", "bug"))
    assert bug.returncode == 1 and "AssertionError: a library left half-way" in bug.stderr
    if full_error == "1":  # the user asked for tracebacks
        assert stopped.returncode == 1 and "Traceback" in stopped.stderr
        return
    assert stopped.returncode == 130, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert stopped.stderr.strip().splitlines() == [
        "interrupted before any run started; nothing was recorded"], stopped.stderr
