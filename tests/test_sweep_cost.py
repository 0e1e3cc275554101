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

from pipeline.config.paths import CONF_DIR
from pipeline.config.schema import validate
from pipeline.run.runner import LEAN_MAX_POINTS, record_plan
from pipeline.sweeps import composition
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


# -- checking a batch of jobs --------------------------------------------------------------
@pytest.fixture
def loader_and_master():
    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = loader.load_configuration("config", [], RunMode.MULTIRUN)
    yield loader, master
    composition.check_jobs_cheaply(False)


def _count_compositions(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []
    compose = ConfigLoaderImpl.load_configuration

    def counting(self, config_name, overrides, run_mode, **kwargs):
        calls.append(list(overrides))
        return compose(self, config_name, overrides, run_mode, **kwargs)

    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration", counting)
    return calls


def _jobs(*axes: list[str]) -> list[list[str]]:
    import itertools

    return [list(job) for job in itertools.product(*axes)]


def test_jobs_differing_in_plain_settings_are_composed_once(monkeypatch,
                                                           loader_and_master) -> None:
    loader, master = loader_and_master
    calls = _count_compositions(monkeypatch)
    batch = _jobs([f"seed={s}" for s in range(20)], ["optimizer.lr=0.1", "optimizer.lr=0.01"],
                  ["model.hidden_sizes=[8]", "model.hidden_sizes=[16,8]"])
    assert composition.check_batch(loader, master, batch) == 1
    assert len(calls) == 1


def test_each_config_group_choice_is_composed(monkeypatch, loader_and_master) -> None:
    loader, master = loader_and_master
    calls = _count_compositions(monkeypatch)
    batch = _jobs(["optimizer=sgd", "optimizer=adam"], [f"seed={s}" for s in range(5)])
    assert composition.check_batch(loader, master, batch) == 2
    assert len(calls) == 2


def _outcome(action) -> str:
    try:
        action()
    except Exception as error:  # what Hydra raises, compared below
        return f"{type(error).__name__}: {error}"
    return "composes"


@pytest.mark.parametrize("bad, raises", [
    ("train.no_such_key=1", True),            # not in the config
    ("optimizer=no_such_optimizer", True),    # not a config group option
    ("+seed=3", True),                        # adding a key that exists
    ("~train.no_such_key", True),             # deleting a key that does not exist
    ("seed=abc", False),  # untyped YAML: the job's own schema check fails it, one line
])
def test_a_bad_job_anywhere_in_the_batch_fails_as_composing_it_would(
        loader_and_master, bad, raises) -> None:
    loader, master = loader_and_master
    batch = [["seed=1", "train.epochs=5"] for _ in range(4)]
    key = bad.lstrip("+~").split("=")[0]
    batch[2] = [o for o in batch[2] if not o.startswith(f"{key}=")] + [bad]
    cheap = _outcome(lambda: composition.check_batch(loader, master, batch))
    full = _outcome(lambda: loader.load_sweep_config(master, batch[2]))
    assert cheap == full
    assert (cheap != "composes") == raises


@pytest.mark.parametrize("batch", [
    _jobs([f"seed={s}" for s in range(4)], ["optimizer.lr=0.1", "optimizer.lr=1e-3"]),
    _jobs(["optimizer=sgd", "optimizer=adam"], ["model.hidden_sizes=[8]",
                                                "model.hidden_sizes=[16,8]"]),
    _jobs(["data=csv", "data=rf"], ["seed=1", "seed=2"], ["tracking.run_name='a b=c'"]),
    _jobs(["+tags.team=x", "+tags.team=y"], ["train.epochs=3", "train.epochs=4"]),
    _jobs(["hydra.job.chdir=false"], ["seed=7", "seed=8"], ["++tags={a: 1}", "++tags={b: 2}"]),
    _jobs(["split.test_fraction=0.2", "split.test_fraction=0.3"], ["~split.stratify", "seed=3"]),
])
def test_a_job_composed_from_its_shape_equals_hydras_own_composition(
        loader_and_master, batch) -> None:
    loader, master = loader_and_master
    full = [OmegaConf.to_yaml(loader.load_sweep_config(master, job)) for job in batch]
    composition.compose_by_shape()
    try:
        for _ in range(2):  # the first of each shape composed, the rest copied, then all copied
            fast = [loader.load_sweep_config(master, job) for job in batch]
            for config in fast:
                config.hydra.job.id = "changed by its launcher"  # never reaches the others
            fast = [OmegaConf.to_yaml(loader.load_sweep_config(master, job)) for job in batch]
            assert fast == full
    finally:
        composition.compose_by_shape(False)


def test_composing_by_shape_skips_hydras_composition(monkeypatch, loader_and_master) -> None:
    loader, master = loader_and_master
    composition.compose_by_shape()
    try:
        calls = _count_compositions(monkeypatch)
        for seed in range(10):
            assert loader.load_sweep_config(master, [f"seed={seed}"]).seed == seed
        assert len(calls) == 1
    finally:
        composition.compose_by_shape(False)


def test_the_check_is_on_only_during_a_sweep(monkeypatch, loader_and_master) -> None:
    from hydra.plugins.sweeper import Sweeper

    original = Sweeper.validate_batch_is_legal
    composition.check_jobs_cheaply()
    composition.check_jobs_cheaply()  # twice on: still one wrapper
    assert Sweeper.validate_batch_is_legal is not original
    composition.check_jobs_cheaply(False)
    assert Sweeper.validate_batch_is_legal is original


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


@pytest.mark.parametrize("damage", ["garbage", "not empty", "truncated", "another schema"])
def test_a_damaged_template_is_replaced_not_copied(tmp_path, template, damage) -> None:
    open_store(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    if damage == "garbage":
        template.write_bytes(b"written by someone else")
    elif damage == "not empty":
        with sqlite3.connect(template) as con:
            con.execute("INSERT INTO experiments (name, lifecycle_stage) VALUES ('x', 'active')")
    elif damage == "another schema":  # a newer MLflow's, say: this one cannot open it
        with sqlite3.connect(template) as con:
            con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
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
def _sweep(tmp_path: Path, *args: str) -> tuple[MlflowClient, object, list, str]:
    import os
    import subprocess
    import sys

    from pipeline.config.paths import PROJECT_ROOT

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
    return client, parent, children, done.stdout


def _artifacts(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, folder)}


def _models(client: MlflowClient, run_id: str, experiment_id: str) -> list:
    return [m for m in client.search_logged_models([experiment_id])
            if m.source_run_id == run_id]


@pytest.mark.slow
def test_a_lean_sweep_records_every_job_and_completes_only_the_best(tmp_path) -> None:
    client, parent, children, out = _sweep(tmp_path, "seed=1,2,3", "optimizer.lr=0.01,0.1",
                                           "train.epochs=300")
    assert parent.info.status == "FINISHED" and len(children) == 6
    best = parent.data.tags["best_run_id"]
    # The sweep ends pointing at its best run and the command that serves its model.
    experiment = parent.info.experiment_id
    assert f"Best:    http://127.0.0.1:5000/#/experiments/{experiment}/runs/{best}" in out
    assert f"serve it: make serve RUN_ID={best} STORE=sqlite:///" in out
    assert "time_summary_s" in parent.data.metrics
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
def test_a_lean_child_reruns_bit_for_bit_and_compares(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from pipeline.config.paths import PROJECT_ROOT

    _, parent, children, _ = _sweep(tmp_path, "seed=1,2", "train.epochs=300")
    other = next(c for c in children if c.info.run_id != parent.data.tags["best_run_id"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    rerun = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.rerun", other.info.run_id, f"tracking.uri={uri}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, env=env)
    # The child's store holds 100 thinned points, the rerun (a single run) every epoch:
    # the comparison reads both from history.csv.
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "reproduced bit for bit" in rerun.stdout
    compare = subprocess.run(
        [sys.executable, "-m", "pipeline.commands.compare", *(c.info.run_id for c in children),
         "--uri", uri], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, env=env)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert "params: 5 differ" in compare.stdout  # seed and the four seeds derived from it


@pytest.mark.slow
def test_child_record_full_records_every_job_as_a_single_run(tmp_path) -> None:
    client, parent, children, _ = _sweep(tmp_path, "seed=1,2", "train.epochs=300",
                                         "sweep.child_record=full")
    assert parent.info.status == "FINISHED" and len(children) == 2
    for child in children:
        run_id, tags = child.info.run_id, child.data.tags
        assert (tags["child_record"], tags["model_logged"], tags["plots_logged"]) == (
            "full", "true", "true")
        assert len(_models(client, run_id, parent.info.experiment_id)) == 1
        assert "plots/roc_curve.png" in _artifacts(client, run_id, "plots")
        assert len(client.get_metric_history(run_id, "train_loss")) == 300


# -- one heartbeat thread per process --------------------------------------------------------
def test_one_thread_beats_for_every_live_run_and_never_after_its_end(tmp_path) -> None:
    import threading

    from pipeline.tracking.recorder import Heartbeat
    from pipeline.tracking.store import drop_heartbeat

    store = open_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = store.client.create_experiment("beats")
    runs = [store.client.create_run(experiment).info.run_id for _ in range(3)]
    beats = [Heartbeat(store, run_id) for run_id in runs]
    threads = [t for t in threading.enumerate() if t.name == "heartbeat"]
    assert len(threads) == 1
    for beat in beats:
        beat._beat()  # what the thread does every 15 s
    assert all("pipeline.heartbeat" in store.client.get_run(r).data.tags for r in runs)

    beats[0].stop()
    drop_heartbeat(store, runs[0])  # what a run's end does
    assert beats[0] not in Heartbeat._live and beats[1] in Heartbeat._live
    beats[0]._beat()  # a beat the thread had already picked up: it must not land
    assert "pipeline.heartbeat" not in store.client.get_run(runs[0]).data.tags
    for beat in beats[1:]:
        beat.stop()
    assert not any(beat in Heartbeat._live for beat in beats)
