"""Completing a run's record afterwards (``python -m pipeline.commands.complete``,
``make log-model``, ``make plots``): a run made without its model and plots gets them, read
back with MlflowClient, without changing its status or end time; what is missing or changed
is one line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from pipeline.commands.complete import main
from pipeline.config.paths import CONF_DIR, PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.run.backfill import Completion, complete_run
from pipeline.run.datastore import read_dataset
from pipeline.run.runner import run
from tests.conftest import FAST

LEAN = ["tracking.log_model=false", "tracking.plots=false"]
FULL = ["tracking.log_model=true", "tracking.plots=true"]
PLOTS = ["confusion_matrix.png", "plots/calibration_curve.png", "plots/decision_boundary.png",
         "plots/precision_recall_curve.png", "plots/probability_vs_label.png",
         "plots/roc_curve.png", "plots/training_curves.png"]


@dataclass(frozen=True)
class Made:
    """One run of the module's store, and its run as it was when made."""

    uri: str
    run_id: str
    output_dir: Path
    status: str
    end_time: int
    csv: Path | None = None


class Store:
    """A throw-away sqlite store, and runs made in it through ``pipeline.run.runner.run``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)

    def make(self, name: str, *overrides: str, csv: Path | None = None) -> Made:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
            cfg = compose(config_name="config", overrides=[
                *FAST, f"tracking.uri={self.uri}", f"pipeline.cache_dir={self.root / 'cache'}",
                *overrides])
        GlobalHydra.instance().clear()
        result = run(validate(cfg), output_dir=self.root / name)
        assert result.run_id is not None
        info = self.client.get_run(result.run_id).info
        assert info.status == "FINISHED" and info.end_time
        return Made(self.uri, result.run_id, self.root / name, info.status, info.end_time, csv)

    def make_csv(self, name: str) -> Made:
        """A lean run on a CSV of its own (three features: no decision boundary)."""
        rng = np.random.default_rng(7)
        x = rng.normal(size=(240, 3))
        frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2],
                              "label": (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)})
        path = self.root / f"{name}.csv"
        frame.to_csv(path, index=False)
        return self.make(name, *LEAN, "data=csv", f"data.path={path}", csv=path)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store(tmp_path_factory.mktemp("complete"))


@pytest.fixture(scope="module")
def full(store: Store) -> Made:
    """A run that recorded everything (the model and the plots): what completion matches."""
    return store.make("full", *FULL)


@pytest.fixture
def lean(store: Store, request: pytest.FixtureRequest) -> Made:
    """A run of the same config as ``full``, without its model and plots."""
    return store.make(f"lean-{request.node.name}", *LEAN)


def _tree(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path or None):
        found |= _tree(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _kept(client: MlflowClient, made: Made) -> None:
    """The run's status and end time are those it ended with."""
    info = client.get_run(made.run_id).info
    assert (info.status, info.end_time) == (made.status, made.end_time)


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def _tags(client: MlflowClient, run_id: str) -> tuple[str | None, str | None]:
    tags = client.get_run(run_id).data.tags
    return tags.get("model_logged"), tags.get("plots_logged")


# -- the model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_model_is_logged_onto_the_finished_run(store: Store, lean: Made, tmp_path: Path,
                                               capsys, monkeypatch) -> None:
    import mlflow

    from pipeline.tracking.model import served_model

    client = store.client
    assert not client.get_run(lean.run_id).outputs.model_outputs
    assert _tags(client, lean.run_id)[0] != "true"
    code, out, err = _cli(capsys, lean.run_id, "--model", "--uri", store.uri)
    assert code == 0, err
    assert len(out) == 1 and re.fullmatch(
        rf"run {lean.run_id}: model logged \(models:/m-[0-9a-f]+\)", out[0]), out
    model_id = out[0].rsplit("models:/", 1)[1].rstrip(")")

    outputs = client.get_run(lean.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [model_id]
    assert served_model(store.uri, run_id=lean.run_id) == (f"models:/{model_id}",
                                                           ["Frequency", "Amplitude"])
    assert _tags(client, lean.run_id)[0] == "true"
    assert _tags(client, lean.run_id)[1] != "true"  # plots not asked for
    _kept(client, lean)

    # The model predicts what the run predicted, from the raw test columns.
    test = read_dataset(lean.output_dir / "data" / "02_split" / "test.parquet")
    raw = pd.DataFrame(np.array(test.X), columns=list(test.feature_names))
    expected = pd.read_csv(client.download_artifacts(lean.run_id, "predictions.csv",
                                                     str(tmp_path)))
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model adds the model's code
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store.uri)
    try:
        predicted = mlflow.pyfunc.load_model(f"models:/{model_id}").predict(raw)
    finally:
        mlflow.set_tracking_uri(previous)
    np.testing.assert_allclose(predicted["probability"], expected["probability"], rtol=1e-9,
                               atol=1e-12)
    assert predicted["predicted_label"].tolist() == expected["predicted_label"].tolist()

    # Twice: nothing new.
    code, out, err = _cli(capsys, lean.run_id, "--model", "--uri", store.uri)
    assert code == 0 and out == [f"run {lean.run_id}: already has a model (models:/{model_id})"]
    models = client.search_logged_models([client.get_run(lean.run_id).info.experiment_id],
                                         filter_string=f"source_run_id = '{lean.run_id}'")
    assert [m.model_id for m in models] == [model_id]
    _kept(client, lean)


@pytest.mark.slow
def test_a_full_run_already_has_its_model_and_plots(store: Store, full: Made) -> None:
    before = _tree(store.client, full.run_id)
    done = complete_run(full.run_id, uri=store.uri, model=True, plots=True)
    model_id = store.client.get_run(full.run_id).outputs.model_outputs[0].model_id
    assert done == Completion(full.run_id, f"models:/{model_id}", False, tuple(PLOTS), False)
    assert _tree(store.client, full.run_id) == before
    assert _tags(store.client, full.run_id) == ("true", "true")
    _kept(store.client, full)


# -- the plots -------------------------------------------------------------------------------
@pytest.mark.slow
def test_plots_are_those_a_full_run_draws(store: Store, full: Made, lean: Made,
                                          tmp_path: Path, capsys) -> None:
    client = store.client
    assert not set(PLOTS) & _tree(client, lean.run_id)
    code, out, err = _cli(capsys, lean.run_id, "--plots", "--uri", store.uri)
    assert code == 0, err
    assert out == [f"run {lean.run_id}: plots logged (7 files)"]
    # The same artifact paths as the run that drew its own plots, and the same pictures:
    # the same data, checkpoint and history, drawn by the same code.
    assert _tree(client, lean.run_id) == _tree(client, full.run_id)
    for path in PLOTS:
        ours = Path(client.download_artifacts(lean.run_id, path, str(tmp_path / "lean")))
        theirs = Path(client.download_artifacts(full.run_id, path, str(tmp_path / "full")))
        assert ours.read_bytes() == theirs.read_bytes(), path
    assert _tags(client, lean.run_id)[1] == "true"
    assert _tags(client, lean.run_id)[0] != "true"  # the model not asked for
    assert not client.get_run(lean.run_id).outputs.model_outputs
    _kept(client, lean)

    code, out, _ = _cli(capsys, lean.run_id, "--plots", "--uri", store.uri)
    assert code == 0 and out == [f"run {lean.run_id}: already has plots (7 files)"]
    _kept(client, lean)


@pytest.mark.slow
def test_neither_flag_completes_both(store: Store, lean: Made, capsys) -> None:
    code, out, err = _cli(capsys, lean.run_id, "--uri", store.uri)
    assert code == 0, err
    assert [line.split(" (")[0] for line in out] == [f"run {lean.run_id}: model logged",
                                                     f"run {lean.run_id}: plots logged"]
    assert _tags(store.client, lean.run_id) == ("true", "true")
    assert set(PLOTS) <= _tree(store.client, lean.run_id)
    _kept(store.client, lean)


@pytest.mark.slow
def test_plots_of_a_changed_csv_are_refused(store: Store, capsys) -> None:
    made = store.make_csv("changed")
    assert made.csv is not None
    frame = pd.read_csv(made.csv)
    frame.loc[0, "a"] += 1.0
    frame.to_csv(made.csv, index=False)
    before = _tree(store.client, made.run_id)
    code, out, err = _cli(capsys, made.run_id, "--plots", "--uri", store.uri)
    assert code == 1 and out == []
    assert len(err) == 1 and err[0].startswith(f"error: run {made.run_id}: its data differ "
                                               "from the run's"), err
    assert _tree(store.client, made.run_id) == before
    assert _tags(store.client, made.run_id)[1] != "true"
    _kept(store.client, made)


@pytest.mark.slow
def test_plots_of_a_csv_gone_are_one_line_but_the_model_logs(store: Store, capsys) -> None:
    made = store.make_csv("gone")
    assert made.csv is not None
    made.csv.unlink()
    code, out, err = _cli(capsys, made.run_id, "--plots", "--uri", store.uri)
    assert code == 1 and out == []
    assert err == [f"error: run {made.run_id}: its data file {made.csv} (data.path) is gone; "
                   "the plots need the data the run was trained on"]
    # The model needs only the checkpoint.
    code, out, err = _cli(capsys, made.run_id, "--model", "--uri", store.uri)
    assert code == 0 and out[0].startswith(f"run {made.run_id}: model logged"), err
    assert served_columns(store.uri, made.run_id) == ["a", "b", "c"]


def served_columns(uri: str, run_id: str) -> list[str] | None:
    from pipeline.tracking.model import served_model

    return served_model(uri, run_id=run_id)[1]


# -- what cannot be completed ----------------------------------------------------------------
@pytest.mark.slow
def test_unknown_run_and_run_without_checkpoint_are_one_line(store: Store, full: Made,
                                                             capsys) -> None:
    code, out, err = _cli(capsys, "0123456789abcdef0123456789abcdef", "--uri", store.uri)
    assert code == 1 and out == []
    assert err == ["error: run 0123456789abcdef0123456789abcdef is not in the store "
                   f"{store.uri}; copy the id from the MLflow UI or point --uri (STORE=) at "
                   "its store"]

    client = store.client
    experiment = client.get_run(full.run_id).info.experiment_id
    failed = client.create_run(experiment).info.run_id  # ended before its final checkpoint
    client.set_terminated(failed, status="FAILED")
    for flags in (["--model"], ["--plots"], []):
        code, out, err = _cli(capsys, failed, *flags, "--uri", store.uri)
        assert code == 1 and out == []
        assert len(err) == 1 and err[0].startswith(
            f"error: run {failed} (FAILED) has no checkpoints/final.json"), err
    assert not client.get_run(failed).outputs.model_outputs
    assert client.get_run(failed).info.status == "FAILED"


def test_a_missing_store_is_one_line_and_not_created(tmp_path: Path, capsys) -> None:
    db = tmp_path / "none" / "mlflow.db"
    code, out, err = _cli(capsys, "0123456789abcdef", "--uri", f"sqlite:///{db}")
    assert code == 1 and out == []
    assert err == [f"error: no MLflow store at {db}: point --uri (STORE=) at the store that "
                   "holds the run"]
    assert not db.parent.exists()


def test_no_run_id_is_a_usage_line(capsys) -> None:
    code, out, err = _cli(capsys, " ")
    assert code == 2 and out == [] and len(err) == 1 and err[0].startswith("usage: ")


def test_completion_lines() -> None:
    assert Completion("r1", "models:/m-1", True, ("a.png",), False).lines() == [
        "run r1: model logged (models:/m-1)", "run r1: already has plots (1 file)"]
    assert Completion("r1").lines() == []


# -- make log-model, make plots --------------------------------------------------------------
# A user's shell: no store or venv of ours, and none of the variables an outer `make test`
# (e.g. `make test ARGS=-x`) hands its sub-makes.
USER_ENV = {key: value for key, value in os.environ.items()
            if key not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL",
                           "MFLAGS", "ARGS")}


def _make(*args: str) -> tuple[int, list[str]]:
    """Exit status and the target's own lines (make's ``*** Error`` line left out)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = PROJECT_ROOT / ".venv" / ".installed"
    fresh = subprocess.run(["make", "-q", "-C", str(PROJECT_ROOT), str(stamp)],
                           capture_output=True)
    if fresh.returncode != 0:  # `make` would reinstall the venv first
        pytest.skip(".venv is older than pyproject.toml / requirements.lock: run make venv")
    done = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT),
                           *args], capture_output=True, text=True, env=USER_ENV, timeout=300)
    lines = [line for line in (done.stdout + done.stderr).splitlines()
             if line.strip() and not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    return done.returncode, lines


@pytest.mark.parametrize("target", ["log-model", "plots"])
def test_make_targets_need_a_run_id(target: str) -> None:
    code, lines = _make(target)
    assert code != 0
    usage = f"usage: make {target} RUN_ID=<mlflow run id> [STORE=<store uri>]"
    if target == "plots":  # redrawing a run whose model uses a plugin layer needs it named
        usage += ' [ARGS="--plugins <module>"]'
    assert lines == [usage]


@pytest.mark.slow
def test_make_targets_complete_a_run(store: Store, capsys) -> None:
    made = store.make_csv("make")
    code, lines = _make("log-model", f"RUN_ID={made.run_id}", f"STORE={store.uri}")
    assert code == 0 and len(lines) == 1, lines
    assert lines[0].startswith(f"run {made.run_id}: model logged (models:/m-")
    code, lines = _make("plots", f"RUN_ID={made.run_id}", f"STORE={store.uri}")
    assert code == 0 and lines == [f"run {made.run_id}: plots logged (6 files)"], lines
    assert _tags(store.client, made.run_id) == ("true", "true")
    _kept(store.client, made)
    code, lines = _make("log-model", "RUN_ID=0123456789abcdef", f"STORE={store.uri}")
    assert code != 0 and len(lines) == 1 and "is not in the store" in lines[0], lines
