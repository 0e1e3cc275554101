"""What keeps a sweep job cheap: the lean child record, one composition per job, a new store
copied from its schema template, a summary whose reads do not grow with the children."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra._internal.utils import create_config_search_path
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from pipeline import sweep as sweep_module
from pipeline.paths import CONF_DIR
from pipeline.runner import LEAN_MAX_POINTS, record_plan
from pipeline.schema import validate
from pipeline.tracking import store as store_module
from pipeline.tracking.store import open_store


# -- what a run records -------------------------------------------------------------------
def test_a_single_run_records_what_tracking_asks(compose_cfg) -> None:
    plan = record_plan(validate(compose_cfg()), in_sweep=False)
    assert (plan.model, plan.plots, plan.max_points) == (True, True, 5000)
    # Both say "false" until the model and the plots are actually logged.
    assert plan.tags == {"model_logged": "false", "plots_logged": "false"}

    plan = record_plan(validate(compose_cfg("tracking.log_model=false", "tracking.plots=false",
                                            "tracking.max_points=null")), in_sweep=False)
    assert (plan.model, plan.plots, plan.max_points) == (False, False, None)


def test_a_lean_sweep_job_skips_the_model_and_plots_and_sends_fewer_points(compose_cfg) -> None:
    plan = record_plan(validate(compose_cfg()), in_sweep=True)
    assert (plan.model, plan.plots, plan.max_points) == (False, False, LEAN_MAX_POINTS)
    assert plan.tags["child_record"] == "lean"
    # A smaller max_points is kept; null (every point) is capped too.
    assert record_plan(validate(compose_cfg("tracking.max_points=20")),
                       in_sweep=True).max_points == 20
    assert record_plan(validate(compose_cfg("tracking.max_points=null")),
                       in_sweep=True).max_points == LEAN_MAX_POINTS


def test_a_full_sweep_job_records_what_a_single_run_does(compose_cfg) -> None:
    config = validate(compose_cfg("sweep.child_record=full"))
    plan = record_plan(config, in_sweep=True)
    assert (plan.model, plan.plots, plan.max_points) == (True, True, 5000)
    assert plan.tags["child_record"] == "full"


def test_child_record_names_its_choices(compose_cfg) -> None:
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match=r"sweep\.child_record.*lean.*full"):
        validate(compose_cfg("sweep.child_record=everything"))


# -- one composition per job ----------------------------------------------------------------
@pytest.fixture
def loader_and_master():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = loader.load_configuration("config", ["hydra/launcher=basic"], RunMode.MULTIRUN)
    yield loader, master
    sweep_module._compose_each_job_once(False)


def _count_compositions(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    compose = ConfigLoaderImpl.load_configuration

    def counting(self, config_name, overrides, run_mode, **kwargs):
        calls.append(list(overrides))
        return compose(self, config_name, overrides, run_mode, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    return calls


def test_a_job_checked_by_the_sweeper_is_not_composed_again(monkeypatch,
                                                            loader_and_master) -> None:
    loader, master = loader_and_master
    calls = _count_compositions(monkeypatch)
    sweep_module._compose_each_job_once()
    checked = [loader.load_sweep_config(master, [f"seed={s}"]) for s in (1, 2)]  # the sweeper
    launched = [loader.load_sweep_config(master, [f"seed={s}"]) for s in (1, 2)]  # the launcher
    assert len(calls) == 2
    assert [c.seed for c in launched] == [1, 2]
    assert launched[0] is checked[0]
    # Taken by the launcher: a third request (another sweep, say) composes afresh.
    again = loader.load_sweep_config(master, ["seed=1"])
    assert again is not checked[0] and len(calls) == 3


def test_off_restores_hydras_own_composition(monkeypatch, loader_and_master) -> None:
    loader, master = loader_and_master
    sweep_module._compose_each_job_once()
    sweep_module._compose_each_job_once()  # twice on: still one wrapper
    sweep_module._compose_each_job_once(False)
    calls = _count_compositions(monkeypatch)
    for _ in range(2):
        loader.load_sweep_config(master, ["seed=1"])
    assert len(calls) == 2


def test_only_the_basic_launcher_runs_jobs_in_the_sweeps_process() -> None:
    basic = OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}}})
    joblib = OmegaConf.create({"hydra": {"launcher": {
        "_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}}})
    assert sweep_module._in_process_launcher(basic)
    assert not sweep_module._in_process_launcher(joblib)


# -- a new store from the schema template ---------------------------------------------------
@pytest.fixture
def template(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "templates" / "mlflow-test.db"
    monkeypatch.setattr(store_module, "schema_template", lambda: path)
    return path


def _runs_and_experiments(uri: str) -> tuple[int, list[str]]:
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    client.create_run(experiment)
    return len(client.search_runs([experiment])), [e.name for e in client.search_experiments()]


def test_the_first_new_store_keeps_its_schema_and_the_next_copies_it(tmp_path, template) -> None:
    first = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    open_store(first)
    assert template.is_file()
    with sqlite3.connect(template) as con:  # the template stays empty
        assert con.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    started = time.perf_counter()
    second = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    open_store(second)
    copied_in = time.perf_counter() - started
    assert _runs_and_experiments(second) == (1, ["e", "Default"])
    assert _runs_and_experiments(first) == (1, ["e", "Default"])
    # Runs in one store never show in the template or the other store.
    with sqlite3.connect(template) as con:
        assert con.execute("SELECT COUNT(*) FROM runs").fetchone() == (0,)
    assert copied_in < 30  # the copy worked at all (speed is the benchmark's business)


@pytest.mark.parametrize("damage", ["garbage", "not empty", "truncated"])
def test_a_damaged_template_is_replaced_not_copied(tmp_path, template, damage) -> None:
    open_store(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    if damage == "garbage":
        template.write_bytes(b"written by someone else")
    elif damage == "not empty":
        with sqlite3.connect(template) as con:
            con.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('x', 'active')")
    else:
        data = template.read_bytes()
        template.write_bytes(data[: len(data) // 3])
    uri = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    open_store(uri)
    assert _runs_and_experiments(uri) == (1, ["e", "Default"])  # migrated afresh, whole
    with sqlite3.connect(template) as con:  # and the template made again
        assert con.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)


def test_an_unwritable_template_folder_only_loses_the_shortcut(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder would go")
    monkeypatch.setattr(store_module, "schema_template", lambda: blocked / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    open_store(uri)
    assert _runs_and_experiments(uri) == (1, ["e", "Default"])


# -- a lean sweep end to end ----------------------------------------------------------------
def _sweep(tmp_path: Path, *args: str) -> tuple[MlflowClient, object, list]:
    import os
    import subprocess
    import sys

    from pipeline.paths import PROJECT_ROOT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", *args, f"tracking.uri={uri}",
         f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mlp-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children


def _artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def _models(client: MlflowClient, run_id: str, experiment_id: str) -> list:
    return [m for m in client.search_logged_models([experiment_id])
            if m.source_run_id == run_id]


@pytest.mark.slow
def test_a_lean_sweep_records_every_job_and_completes_only_the_best(tmp_path) -> None:
    client, parent, children = _sweep(tmp_path, "seed=1,2,3", "optimizer.lr=0.01,0.1",
                                      "train.epochs=300")
    assert parent.info.status == "FINISHED" and len(children) == 6
    best = parent.data.tags["best_run_id"]
    assert "time_summary_s" in parent.data.metrics
    experiment = parent.info.experiment_id
    for child in children:
        run_id, tags = child.info.run_id, child.data.tags
        assert child.info.status == "FINISHED"
        assert tags["child_record"] == "lean"
        # Complete but for the model and plots: params, seeds, metrics, files, digests.
        assert {"seed", "seeds.init", "optimizer.lr"} <= set(child.data.params)
        assert {"test_accuracy", "train_loss"} <= set(child.data.metrics)
        assert {"checkpoint_sha256", "predictions_sha256", "config_digest"} <= set(tags)
        root = _artifacts(client, run_id)
        assert {"config.yaml", "predictions.csv", "confusion_matrix.json", "history.csv",
                "checkpoints"} <= root
        assert "checkpoints/final.json" in _artifacts(client, run_id, "checkpoints")
        # The store gets at most LEAN_MAX_POINTS points (+ the last and best epochs);
        # history.csv every epoch.
        points = client.get_metric_history(run_id, "train_loss")
        assert 50 <= len(points) <= LEAN_MAX_POINTS + 2
        assert max(p.step for p in points) == 300
        history = Path(client.download_artifacts(run_id, "history.csv", str(tmp_path)))
        assert len(history.read_text().splitlines()) == 301
        logged = _models(client, run_id, experiment)
        if run_id == best:
            assert (tags["model_logged"], tags["plots_logged"]) == ("true", "true")
            assert len(logged) == 1
            assert {"confusion_matrix.png", "plots"} <= root
            assert "plots/training_curves.png" in _artifacts(client, run_id, "plots")
        else:
            assert (tags["model_logged"], tags["plots_logged"]) == ("false", "false")
            assert logged == [] and "plots" not in root and "confusion_matrix.png" not in root


@pytest.mark.slow
def test_child_record_full_records_every_job_as_a_single_run(tmp_path) -> None:
    client, parent, children = _sweep(tmp_path, "seed=1,2", "train.epochs=300",
                                      "sweep.child_record=full")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        run_id, tags = child.info.run_id, child.data.tags
        assert (tags["child_record"], tags["model_logged"], tags["plots_logged"]) == (
            "full", "true", "true")
        assert len(_models(client, run_id, parent.info.experiment_id)) == 1
        assert "plots/roc_curve.png" in _artifacts(client, run_id, "plots")
        assert len(client.get_metric_history(run_id, "train_loss")) == 300
