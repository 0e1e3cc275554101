"""What a run's record says (issue 27, point 9): params as resolved values, checkpoints that
sort by epoch, datasets named after their source, and the last line of an interrupted run."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.mlp import MLP
from pipeline.run.runner import _Checkpointer
from pipeline.tracking.record import RunSpec, TrainingPlan, plan_records, spec_records
from pipeline.tracking.runs import newest_checkpoint
from stages.train import build_model

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
TINY = ["train.epochs=20", "train.checkpoint_every=10", "train.progress=false",
        "tracking.plots=false"]


def _spec(**config: object) -> RunSpec:
    return RunSpec(name="r", config=config, seeds={"data": 7}, config_digest="d",
                   environment={}, output_dir=Path("/o"), threads=None)


def test_params_log_unset_as_empty_and_auto_once_resolved() -> None:
    params = spec_records(_spec(model={"output": "auto", "seed": None, "hidden_sizes": [4]},
                                train={"batch_size": None, "epochs": 3}))[0]["params"]
    assert params["model.seed"] == "" and params["train.batch_size"] == ""
    assert params["train.epochs"] == 3 and params["model.hidden_sizes"] == [4]
    assert "model.output" not in params  # logged once training knows it (a param is final)
    resolved = plan_records(TrainingPlan(first=1, last=3, output="sigmoid"), None)
    assert {"k": "params", "params": {"model.output": "sigmoid"}} in resolved
    # A value the user chose is logged at once, and not again.
    chosen = spec_records(_spec(model={"output": "softmax"}))[0]["params"]
    assert chosen["model.output"] == "softmax"


def test_checkpoint_names_sort_by_epoch(tmp_path: Path) -> None:
    model = build_model(2, 2, hidden_sizes=[3], seed=0)
    saved: list[Path] = []
    checkpointer = _Checkpointer(tmp_path, 5, {}, saved)
    for epoch in (5, 10, 95, 100, 1000, 9999995):
        checkpointer(epoch, {}, model)
    names = [path.name for path in saved]
    assert names[0] == "epoch_0000005.json" and names[-1] == "epoch_9999995.json"
    assert sorted(names) == names == sorted(p.name for p in tmp_path.iterdir())
    # Old runs' unpadded names are read too: the newest is the highest epoch.
    assert newest_checkpoint(["epoch_0000100.json", "epoch_99.json", "epoch_1000.json"]
                             ) == "epoch_1000.json"


def _run(tmp_path: Path, store: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "pipeline", f"tracking.uri={store}", *TINY,
                           f"pipeline.cache_dir={tmp_path / 'cache'}", *args],
                          capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("MLflow run ")[1].split()[0]


@pytest.mark.slow
def test_a_runs_record_names_what_it_used(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # A small learning rate: the loss still falls at epoch 20 (a ConvergenceWarning).
    rf = _run(tmp_path, store, "optimizer.lr=0.001", f"hydra.run.dir={tmp_path / 'rf'}")
    rng = np.random.default_rng(0)
    csv = tmp_path / "patients.csv"
    rows = [f"{a:.3f},{b:.3f},{int(a + b > 0)}" for a, b in rng.normal(size=(80, 2))]
    csv.write_text("a,b,label\n" + "\n".join(rows) + "\n")
    from_csv = _run(tmp_path, store, "data=csv", f"data.path={csv}",
                    f"hydra.run.dir={tmp_path / 'csv'}")
    client = MlflowClient(store)

    run = client.get_run(rf)
    params = run.data.params
    assert params["model.output"] == "sigmoid" and params["data.seed"] == ""
    assert "None" not in params.values()
    # The stored config (what a rerun reads) keeps the user's choice.
    config = yaml.safe_load(Path(client.download_artifacts(rf, "config.yaml", str(tmp_path)))
                            .read_text())
    assert config["model"]["output"] == "auto"
    datasets = run.inputs.dataset_inputs
    assert {d.dataset.name for d in datasets} == {f"rf(seed={params['seeds.data']})"}
    assert {t.value for d in datasets for t in d.tags} == {"train", "val", "test"}
    for item in datasets:
        source = json.loads(item.dataset.source)
        assert source["tags"]["seed"] == params["seeds.data"], source  # not the run's tags
        assert "mlflow.user" not in source["tags"] and "generator" in source["tags"]
    names = sorted(Path(f.path).name for f in client.list_artifacts(rf, "checkpoints"))
    assert names == ["epoch_0000010.json", "epoch_0000020.json", "final.json"]
    assert run.data.tags["warnings"].startswith(
        "ConvergenceWarning: training stopped at the epoch limit (20) while val_loss")

    datasets = client.get_run(from_csv).inputs.dataset_inputs
    assert {d.dataset.name for d in datasets} == {"patients.csv"}
    assert {d.dataset.source_type for d in datasets} == {"local"}


@pytest.mark.slow
def test_ctrl_c_says_the_epoch_reached_and_how_to_resume(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    args = [f"tracking.uri={store}", "train.epochs=2000000", "train.checkpoint_every=500",
            "train.progress=false", "tracking.plots=false", "tracking.log_model=false",
            f"hydra.run.dir={out}", f"pipeline.cache_dir={tmp_path / 'c'}"]
    process = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=PROJECT_ROOT,
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 120
        while len(list((out / "checkpoints").glob("epoch_*.json"))) < 2:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    newest = max((out / "checkpoints").glob("epoch_*.json"))
    epoch = MLP.load(newest).epoch
    assert last.startswith("interrupted: "), last
    assert f"last checkpoint: epoch {epoch}" in last, last
    reached = int(re.search(r"reached epoch (\d+);", last).group(1))
    assert reached >= epoch and reached < 2_000_000, last
    command = shlex.split(last.split("resume it with: ", 1)[1])
    assert command[:3] == [".venv/bin/python", "-m", "pipeline"], command
    assert command[-1] == f"train.resume_from={newest}" and set(args) <= set(command[3:])
