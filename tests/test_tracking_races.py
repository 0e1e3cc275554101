"""Many processes on one store at once: a new store is created once, writes never race.

Each test starts its processes at the same moment (a start file they all wait for) on a
NEW sqlite store, repeatedly, and reads back with MlflowClient that nothing was lost.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
QUICK = ["train.epochs=50", "train.progress=false", "tracking.plots=false",
         "tracking.log_model=false", "train.checkpoint_every=0"]

# Waits for the start file, then opens the store and logs the same two datasets as every
# other process (same experiment, names and digests): the race MLflow does not retry.
LOG_SAME_DATASETS = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    go, uri = Path(sys.argv[1]), sys.argv[2]
    from pipeline.tracking.shipper import Shipper
    from pipeline.tracking.store import experiment_id, open_store
    while not go.exists():
        time.sleep(0.005)
    store = open_store(uri)
    exp = experiment_id(store, "races")
    run = store.call("start a run", lambda: store.client.create_run(exp))
    shipper = Shipper(store, run.info.run_id, exp, Path("unused"))
    for round in range(25):  # new rows each round: 25 chances to collide
        (go.parent / f"round{round}-{run.info.run_id}").touch()  # all 4 in step, each round
        deadline = time.monotonic() + 60  # a process that failed never arrives
        while len(list(go.parent.glob(f"round{round}-*"))) < 4:
            if time.monotonic() > deadline:
                sys.exit(f"round {round}: another process failed")
            time.sleep(0.001)
        datasets = [{"name": name, "digest": f"{round:036d}", "source_type": "code",
                     "source": "{}", "schema": None, "profile": None, "context": name}
                    for name in ("train", "test")]
        shipper.apply([{"k": "inputs", "datasets": datasets}])
    store.call("end the run", lambda: store.client.set_terminated(run.info.run_id))
""")


def start_together(commands: list[list[str]], go: Path) -> list[subprocess.CompletedProcess]:
    """Start every command, let them all wait for ``go``, create it, collect the results."""
    processes = [subprocess.Popen(command, cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for command in commands]
    try:
        time.sleep(2.5)  # each has imported what it needs and waits on `go`
        go.touch()
        results = []
        for process, command in zip(processes, commands, strict=True):
            out, err = process.communicate(timeout=600)
            results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
        return results
    finally:
        for process in processes:
            process.kill()


def pipeline_waiting_for(go: Path, *args: str) -> list[str]:
    """``python -m pipeline args`` that starts once ``go`` exists (imports done before)."""
    code = (f"import runpy, sys, time, pathlib; import pipeline.run.runner; "
            f"go = pathlib.Path({str(go)!r})\n"
            "while not go.exists(): time.sleep(0.005)\n"
            f"sys.argv = ['pipeline', *{list(args)!r}]; runpy.run_module('pipeline', "
            "run_name='__main__')")
    return [sys.executable, "-c", code]


def runs_of(uri: str, experiment: str = "mlp-pipeline") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    return client.search_runs([found.experiment_id], max_results=1000)


@pytest.mark.parametrize("trial", range(3))
def test_four_processes_log_the_same_datasets_at_once(tmp_path, trial) -> None:
    """The store exists (the race here is the dataset rows, not the schema)."""
    from pipeline.tracking.store import experiment_id, open_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id(open_store(uri), "races")
    command = [sys.executable, "-c", LOG_SAME_DATASETS, str(tmp_path / "go"), uri]
    results = start_together([command] * 4, tmp_path / "go")
    for done in results:
        assert done.returncode == 0, done.stderr[-2000:]
    runs = runs_of(uri, "races")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert len(run.inputs.dataset_inputs) == 50


@pytest.mark.parametrize("trial", range(2))
def test_four_runs_started_at_once_on_a_new_store(tmp_path, trial) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    commands = [pipeline_waiting_for(go, f"tracking.uri={uri}", *QUICK, f"seed={i}",
                                     f"hydra.run.dir={tmp_path / f'run{i}'}",
                                     f"pipeline.cache_dir={tmp_path / 'cache'}")
                for i in range(4)]
    for done in start_together(commands, go):
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    runs = runs_of(uri)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(uri)
    for run in runs:  # complete records: every epoch, the test metrics, the inputs
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 50
        assert "test_accuracy" in run.data.metrics and len(run.inputs.dataset_inputs) == 3
    # The store stays usable: no half-migrated schema, no leftover _alembic_tmp_ table.
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master")]
    assert not [t for t in tables if t.startswith("_alembic_tmp_")]


def test_a_run_and_the_ui_store_setup_at_once_on_a_new_store(tmp_path) -> None:
    """`make ui` opens the store (python -m pipeline.tracking.store) before the UI starts:
    beside a first run on a new store, both succeed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    ui_setup = [sys.executable, "-c", textwrap.dedent(f"""
        import runpy, sys, time, pathlib
        import pipeline.tracking.store
        while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.005)
        sys.argv = ["store", {uri!r}]
        runpy.run_module("pipeline.tracking.store", run_name="__main__")
    """)]
    run = pipeline_waiting_for(go, f"tracking.uri={uri}", *QUICK,
                               f"hydra.run.dir={tmp_path / 'run'}",
                               f"pipeline.cache_dir={tmp_path / 'cache'}")
    for done in start_together([ui_setup, run, ui_setup], go):
        assert done.returncode == 0, done.stderr[-2000:]
    assert [r.info.status for r in runs_of(uri)] == ["FINISHED"]


def _sweep(tmp_path: Path, uri: str, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "-m", "optimizer.lr=0.01,0.1",
            f"tracking.uri={uri}", *QUICK, f"hydra.sweep.dir={tmp_path / name}",
            f"pipeline.cache_dir={tmp_path / 'cache'}", *extra]


def check_sweeps(uri: str, n_parents: int, n_children: int) -> None:
    runs = runs_of(uri)
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == n_parents
    for parent in parents:
        assert parent.info.status == "FINISHED", parent.data.tags.get("error")
        children = [r for r in runs
                    if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert len(children) == n_children
        assert {c.info.status for c in children} == {"FINISHED"}
        assert parent.data.tags["n_children"] == str(n_children)
    # No job lost its parent (a parent that failed to start leaves its jobs top-level).
    assert len(runs) == n_parents * (1 + n_children)


@pytest.mark.parametrize("trial", range(2))
def test_two_sweeps_started_at_once_on_a_new_store(tmp_path, trial) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    commands = [pipeline_waiting_for(go, *_sweep(tmp_path, uri, name)[3:])
                for name in ("a", "b")]
    for done in start_together(commands, go):
        assert done.returncode == 0, done.stderr[-2000:]
    check_sweeps(uri, 2, 2)


def test_four_parallel_jobs_on_a_fresh_store(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [*_sweep(tmp_path, uri, "sweep", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4"),
         "model.hidden_sizes=[4],[8]"],
        cwd=PROJECT_ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    check_sweeps(uri, 1, 4)
