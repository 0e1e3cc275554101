"""``hydra/launcher=joblib``: Hydra's joblib launcher, the sweep handed to each worker once."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.singleton import Singleton
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline.config.paths import CONF_DIR, PROJECT_ROOT
from pipeline.sweeps import launcher

TARGET = "hydra_plugins.pipeline_joblib_launcher.joblib_launcher.JoblibLauncher"


def _launcher_config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=joblib", *overrides],
                      return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.launcher)


def test_joblib_is_this_launcher_with_every_setting_of_hydras() -> None:
    chosen = _launcher_config("hydra.launcher.n_jobs=3")
    assert chosen.pop("_target_") == TARGET
    hydras = {f.name: f.default for f in dataclasses.fields(JobLibLauncherConf)}
    hydras.pop("_target_")
    assert chosen == {**hydras, "n_jobs": 3}


def test_a_setting_hydras_launcher_lacks_is_refused() -> None:
    with pytest.raises(Exception, match="no_such_setting"):
        _launcher_config("hydra.launcher.no_such_setting=1")


def test_a_worker_loads_the_sweep_once_per_launch(tmp_path, monkeypatch) -> None:
    """Every job of a launch finds the sweep its worker loaded first; the next launch
    (an Optuna batch) is loaded afresh, and its file is gone once the launch ends."""
    loads: list[str] = []
    real = launcher.pickle.loads
    monkeypatch.setattr(launcher.pickle, "loads", lambda blob: loads.append("x") or real(blob))
    monkeypatch.setattr(launcher, "_received", None)
    state = Singleton.get_state()
    try:
        sweeps = [launcher.Sweep(hydra_context=None, config=OmegaConf.create({"n": n}),
                                 task_function=print) for n in (1, 2)]
        for n, sweep in enumerate(sweeps, start=1):
            with launcher._shared(sweep, tmp_path) as path:
                assert Path(path).parent == tmp_path
                got = [launcher._receive(path) for _ in range(3)]
            assert all(g is got[0] for g in got) and got[0].config.n == n
            assert not Path(path).exists()
        assert len(loads) == 2
    finally:
        Singleton.set_state(state)


@pytest.mark.slow
def test_a_parallel_sweep_runs_each_job_as_hydra_would(tmp_path) -> None:
    """A 4-job joblib sweep: each job its own overrides, number and folder; every child
    finished; the best completed; no warning about the launcher's config; no file left."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", "seed=1,2,3,4", "train.epochs=30",
         "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"tracking.uri={uri}",
         f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep_dir}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ConfigStore schema" not in done.stderr
    for num, seed in enumerate((1, 2, 3, 4)):
        job = sweep_dir / str(num) / ".hydra"
        hydra = yaml.safe_load((job / "hydra.yaml").read_text())["hydra"]
        assert (hydra["job"]["num"], hydra["job"]["id"]) == (num, f"__main___{num}")
        assert f"seed={seed}" in yaml.safe_load((job / "overrides.yaml").read_text())
        assert yaml.safe_load((job / "config.yaml").read_text())["seed"] == seed
    assert not list(sweep_dir.glob(".joblib-sweep-*"))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(c.data.params["seed"]) for c in children) == [1, 2, 3, 4]
    assert {c.info.status for c in children} == {"FINISHED"}
    best = parent.data.tags["best_run_id"]
    completed = {c.info.run_id for c in children if c.data.tags["model_logged"] == "true"}
    assert completed == {best}
    assert f"serve it: make serve RUN_ID={best}" in done.stdout
