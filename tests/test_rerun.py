"""Reproducibility: same config -> same bytes; rerun by id; resume equals uninterrupted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.config.seeds import derive_seed, resolve_seeds
from pipeline.run.runner import run
from tests.conftest import FAST

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
QUICK = [*FAST, "tracking.plots=false", "tracking.log_model=false"]


def cli(tmp_path: Path, *args: str, module: str = "pipeline", env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=600, env={**ENV, **(env or {})})


def train_cli(tmp_path: Path, store: str, name: str, *extra: str) -> str:
    done = cli(tmp_path, f"tracking.uri={store}", *QUICK, f"hydra.run.dir={tmp_path / name}",
               f"pipeline.cache_dir={tmp_path / 'cache'}", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("MLflow run ")[1].split()[0]


def test_seeds_are_independent_streams_and_pinnable() -> None:
    seeds = resolve_seeds(0, {"data": None, "split": None, "init": None, "shuffle": None})
    assert len(set(seeds.values())) == 4
    pinned = resolve_seeds(0, {"data": 42, "split": 7, "init": None, "shuffle": None})
    assert (pinned["data"], pinned["split"]) == (42, 7)
    assert pinned["init"] == seeds["init"] == derive_seed(0, "init")
    assert derive_seed(1, "init") != derive_seed(0, "init")


@pytest.mark.slow
def test_two_processes_give_identical_bytes(tmp_path, store) -> None:
    first = train_cli(tmp_path, store, "a", "train.batch_size=64")
    second = train_cli(tmp_path, store, "b", "train.batch_size=64")
    client = MlflowClient(store)
    tags = [client.get_run(r).data.tags for r in (first, second)]
    for key in ("checkpoint_sha256", "predictions_sha256", "data_digest"):
        assert tags[0][key] == tags[1][key], key
    final = [(tmp_path / d / "checkpoints" / "final.json").read_bytes() for d in ("a", "b")]
    assert final[0] == final[1]


@pytest.mark.slow
def test_rerun_reports_bit_for_bit_then_a_changed_config(tmp_path, store) -> None:
    original = train_cli(tmp_path, store, "orig")
    done = cli(tmp_path, original, f"tracking.uri={store}", module="pipeline.commands.rerun")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "reproduced bit for bit" in done.stdout
    client = MlflowClient(store)
    reruns = client.search_runs([client.get_run(original).info.experiment_id],
                                filter_string=f"tags.reproduces = '{original}'")
    assert len(reruns) == 1 and reruns[0].data.tags["reproduced"] == "bit for bit"
    assert reruns[0].info.run_name == client.get_run(original).info.run_name + "-rerun"
    assert "pipeline.heartbeat" not in reruns[0].data.tags  # only a live run has one
    assert "warnings.warn(" not in done.stderr  # a warning is one log line, no source line

    changed = cli(tmp_path, original, f"tracking.uri={store}", "optimizer.lr=0.05",
                  module="pipeline.commands.rerun")
    assert changed.returncode == 1
    assert "config differs from the original: optimizer.lr: 0.02 -> 0.05" in changed.stdout
    # Epoch 1 starts from identical weights: its training loss (measured before the update)
    # agrees, its validation figures (after it) are the first difference.
    assert "NOT reproduced: metric val_accuracy differs at step 1:" in changed.stdout


@pytest.mark.slow
def test_rerun_warns_about_a_changed_environment(tmp_path, store) -> None:
    original = train_cli(tmp_path, store, "orig")
    done = cli(tmp_path, original, f"tracking.uri={store}", module="pipeline.commands.rerun",
               env={"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    assert "warning: environment differs: blas_threads:" in done.stdout, done.stdout


@pytest.mark.slow
def test_rerun_of_a_sweep_child(tmp_path, store) -> None:
    done = cli(tmp_path, "-m", "seed=1,2", f"tracking.uri={store}", *QUICK,
               f"hydra.sweep.dir={tmp_path / 'sweep'}", f"pipeline.cache_dir={tmp_path / 'c'}",
               "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-pipeline").experiment_id
    children = [r for r in client.search_runs([experiment])
                if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    child = children[0]
    again = cli(tmp_path, child.info.run_id, f"tracking.uri={store}",
                module="pipeline.commands.rerun")
    assert again.returncode == 0, again.stdout + again.stderr[-2000:]
    assert "reproduced bit for bit" in again.stdout


def _parameters(path: Path) -> dict:
    return json.loads(path.read_text())["parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["null", "64"])
def test_resume_equals_uninterrupted(compose_cfg, tmp_path, isolated, batch) -> None:
    base = [*QUICK, *isolated, f"train.batch_size={batch}"]
    whole = run(validate(compose_cfg(*base)), output_dir=tmp_path / "whole")
    checkpoint = whole.output_dir / "checkpoints" / "epoch_0000100.json"
    resumed = run(validate(compose_cfg(*base, f"train.resume_from={checkpoint}")),
                  output_dir=tmp_path / "resumed")
    assert _parameters(resumed.output_dir / "checkpoints" / "final.json") == _parameters(
        whole.output_dir / "checkpoints" / "final.json")
    assert resumed.metrics == whole.metrics


@pytest.mark.slow
def test_rerun_against_a_tracking_server(tmp_path) -> None:
    from tests import servers

    for url in servers.start_mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path):
        original = train_cli(tmp_path, url, "orig")
        done = cli(tmp_path, original, f"tracking.uri={url}", module="pipeline.commands.rerun")
        assert done.returncode == 0, done.stdout + done.stderr[-2000:]
        assert "reproduced bit for bit" in done.stdout


@pytest.mark.slow
def test_resume_from_a_run_id(compose_cfg, tmp_path, isolated) -> None:
    """train.resume_from=<run id> takes that run's final checkpoint from MLflow."""
    first = run(validate(compose_cfg(*QUICK, *isolated)), output_dir=tmp_path / "first")
    longer = [*QUICK, *isolated, "train.epochs=400"]
    resumed = run(validate(compose_cfg(*longer, f"train.resume_from={first.run_id}")),
                  output_dir=tmp_path / "resumed")
    whole = run(validate(compose_cfg(*longer)), output_dir=tmp_path / "whole")
    assert _parameters(resumed.output_dir / "checkpoints" / "final.json") == _parameters(
        whole.output_dir / "checkpoints" / "final.json")


@pytest.mark.slow
def test_resume_from_a_run_id_picks_the_newest_checkpoint_past_epoch_99999(tmp_path, store
                                                                            ) -> None:
    """An interrupted run with epoch_0050050.json and epoch_0100100.json (named across the
    99,999 boundary, where text order and epoch order disagree): resuming from its run id
    starts at epoch 100100, says so in a log line and tags the checkpoint it used."""
    import signal
    import time

    from pipeline.tracking.journal import epoch_rows

    out = tmp_path / "first"
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", f"tracking.uri={store}", "train.epochs=150000",
         "train.checkpoint_every=50050", "train.progress=false", "tracking.plots=false",
         "tracking.log_model=false", f"hydra.run.dir={out}",
         f"pipeline.cache_dir={tmp_path / 'cache'}"],
        cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "epoch_0100100.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    first = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("mlp-pipeline").experiment_id])[0]
    logged = {a.path for a in MlflowClient(store).list_artifacts(first.info.run_id,
                                                                  "checkpoints")}
    assert logged == {"checkpoints/epoch_0050050.json", "checkpoints/epoch_0100100.json"}

    resumed = cli(tmp_path, f"tracking.uri={store}", "train.progress=false",
                  "tracking.plots=false", "tracking.log_model=false", "train.epochs=100200",
                  f"train.resume_from={first.info.run_id}", f"hydra.run.dir={tmp_path / 'r'}",
                  f"pipeline.cache_dir={tmp_path / 'cache'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    source = f"runs:/{first.info.run_id}/checkpoints/epoch_0100100.json"
    assert f"resuming from {source} (epoch 100100)" in resumed.stdout
    run_id = resumed.stdout.split("MLflow run ")[1].split()[0]
    tags = MlflowClient(store).get_run(run_id).data.tags
    assert tags["resumed_from_checkpoint"] == source
    assert tags["resumed_from"] == first.info.run_id
    journal = (tmp_path / "r" / "journal.jsonl").read_text().splitlines()
    first_epoch = next(int(epoch_rows(json.loads(line))[0, 0]) for line in journal
                       if line.startswith('{"k":"epochs"'))
    assert first_epoch == 100101


@pytest.mark.slow
def test_rerun_of_a_k_fold_run_on_a_csv_is_bit_for_bit(tmp_path, store) -> None:
    """split.folds=5 on a CSV: the folds are dealt again alike (from the split's seed), so
    the rerun has the same fold figures, the same refit checkpoint and the same metrics."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 150)
    frame = pd.DataFrame(rng.normal(0, 1, (150, 4)) + y[:, None], columns=list("abcd"))
    frame["species"] = np.array(["x", "y", "z"])[y]
    path = tmp_path / "iris_like.csv"
    frame.to_csv(path, index=False)
    original = train_cli(tmp_path, store, "orig", "data=csv", f"data.path={path}",
                         "split.folds=5", "split.stratify=true", "train.batch_size=32")
    done = cli(tmp_path, original, f"tracking.uri={store}", module="pipeline.commands.rerun")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "reproduced bit for bit" in done.stdout
    client = MlflowClient(store)
    (rerun,) = client.search_runs([client.get_run(original).info.experiment_id],
                                  filter_string=f"tags.reproduces = '{original}'")
    first = client.get_run(original).data
    assert rerun.data.tags["checkpoint_sha256"] == first.tags["checkpoint_sha256"]
    folds = {k: v for k, v in first.metrics.items() if k.startswith("fold")}
    assert len(folds) == 5 * len([k for k in first.metrics if k.startswith("test_")])
    assert {k: rerun.data.metrics[k] for k in folds} == folds
    for key in ("val_accuracy", "val_accuracy_std", "test_accuracy"):
        assert rerun.data.metrics[key] == first.metrics[key], key

    # Another split seed (the folds are dealt from its stream too): the rerun says so.
    changed = cli(tmp_path, original, f"tracking.uri={store}", "split.seed=123",
                  module="pipeline.commands.rerun")
    assert changed.returncode == 1 and "NOT reproduced" in changed.stdout
