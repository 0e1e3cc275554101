"""Feature transforms end to end: a CSV run with ``data.transforms`` holding built-ins and a
plugin transform, served from a fresh shell (HTTP answers equal to its predictions.csv),
rerun bit for bit, refused in one line when the plugin is not named, and completed
afterwards (``make plots`` / ``make log-model``) when it was lean. Plus the fast checks: the
default run's digest and checkpoint metadata are what they were before transforms existed,
and a bad ``data.transforms`` entry is one line before any work."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.config.digest import config_dict, config_digest
from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.config.seeds import run_seeds
from pipeline.errors import ConfigError
from pipeline.run.data import check_transforms, run_data_stages
from pipeline.run.datastore import read_dataset
from pipeline.run.runner import checkpoint_metadata, run
from stages.transforms import TRANSFORMS, register_transform
from tests.conftest import FAST
from tests.servers import free_port
from tests.test_serving import (
    USER_ENV,
    _make,
    _own_lines,
    _stop_group,
    predict_over_http,
)

PLUGIN = "e2e_transforms"
PLUGIN_CODE = '''
"""A plugin transform for the tests: centre each column on its training median."""
import numpy as np

from stages.transforms import register_transform


def _fit(X, feature_names, *, scale=1.0):
    return {"median": np.median(X, axis=0)}


def centre(X, state, feature_names, *, scale=1.0):
    return (X - np.asarray(state["median"])) * scale


register_transform("centre", centre, fit=_fit)
'''
TRANSFORMS_3 = ("data.transforms=[{name: log1p, columns: [a, 2]}, centre, "
                "{name: polynomial, degree: 2}]")
TRANSFORMS_2 = "data.transforms=[centre, {name: polynomial, degree: 3, interaction_only: false}]"
DEFAULT_DIGEST = "d98807e50a83c2bf42dd2cd90c10ba89778a15b55f2b597d1873f00e57bb8eb9"


def _write_csv(path: Path, n_features: int, seed: int) -> None:
    """Positive features named a, b, c (log1p's domain), a 0/1 label, a header row."""
    rng = np.random.default_rng(seed)
    X = rng.gamma(2.0, 2.0, size=(240, n_features))
    weights = np.array([0.7, -1.0, 0.3])[:n_features]
    y = ((X @ weights + rng.normal(0.0, 0.5, 240)) > np.median(X @ weights)).astype(int)
    names = "abc"[:n_features]
    lines = [",".join([*names, "label"])]
    lines += [",".join([*(repr(float(v)) for v in row), str(int(label))])
              for row, label in zip(X, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")


@dataclass(frozen=True)
class Trained:
    folder: Path  # holds the plugin module (on PYTHONPATH) and the CSVs
    uri: str
    run_id: str
    model_id: str | None
    output_dir: Path


def _env(folder: Path | None) -> dict[str, str]:
    """A user's shell, with ``folder`` (the plugin's) on PYTHONPATH when given."""
    env = {k: v for k, v in USER_ENV.items() if k != "PYTHONPATH"}
    if folder is not None:
        env["PYTHONPATH"] = str(folder)
    return env


def _train(folder: Path, uri: str, csv: Path, name: str, *extra: str) -> Trained:
    out = folder / name
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *FAST, "data=csv", f"data.path={csv}",
         f"pipeline.plugins=[{PLUGIN}]", f"tracking.uri={uri}",
         f"pipeline.cache_dir={folder / 'cache'}", f"hydra.run.dir={out}", *extra],
        capture_output=True, text=True, cwd=folder, timeout=600, env=_env(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = next(line.split()[-1] for line in done.stdout.splitlines()
                  if line.startswith("MLflow run "))
    models = client.get_run(run_id).outputs
    model_id = models.model_outputs[0].model_id if models and models.model_outputs else None
    return Trained(folder, uri, run_id, model_id, out)


@pytest.fixture(scope="module")
def plugin_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("transforms")
    (folder / f"{PLUGIN}.py").write_text(PLUGIN_CODE)
    _write_csv(folder / "three.csv", 3, seed=0)
    _write_csv(folder / "two.csv", 2, seed=1)
    return folder


@pytest.fixture(scope="module")
def trained(plugin_folder: Path) -> Trained:
    """A full run: log1p on chosen columns, the plugin's centre, a polynomial expansion."""
    uri = f"sqlite:///{plugin_folder / 'mlflow.db'}"
    return _train(plugin_folder, uri, plugin_folder / "three.csv", "full", TRANSFORMS_3,
                  "tracking.plots=false")


def _tags(trained: Trained, run_id: str | None = None) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    return dict(MlflowClient(trained.uri).get_run(run_id or trained.run_id).data.tags)


def _predictions(trained: Trained) -> pd.DataFrame:
    return pd.read_csv(trained.output_dir / "artifacts" / "predictions.csv")


def _raw_test(trained: Trained) -> pd.DataFrame:
    test = read_dataset(trained.output_dir / "data" / "02_split" / "test.parquet")
    return pd.DataFrame(np.array(test.X), columns=list(test.feature_names))


# -- the default run is what it was -------------------------------------------------------------
def test_the_default_digest_and_checkpoint_metadata_are_unchanged(compose_cfg,
                                                                  tmp_path: Path) -> None:
    config = validate(compose_cfg(f"pipeline.cache_dir={tmp_path / 'cache'}"))
    assert config.data.transforms == [] and config_dict(config)["data"]["transforms"] == []
    assert config_digest(config) == DEFAULT_DIGEST
    changed = validate(compose_cfg("data.transforms=[log1p]"))
    assert config_digest(changed) != DEFAULT_DIGEST
    # a config recorded before data.transforms existed
    recorded_before = OmegaConf.create(OmegaConf.to_container(compose_cfg(), resolve=True))
    del recorded_before.data["transforms"]
    assert config_digest(validate(recorded_before)) == DEFAULT_DIGEST

    seeds = run_seeds(config)
    data = run_data_stages(config, seeds, tmp_path / "out", timings={})
    assert list(data.cache_hits) == ["generate", "split", "preprocess"]
    meta = checkpoint_metadata(data.preprocessor, config, seeds)
    assert list(meta) == ["normaliser", "feature_names", "label_name", "classes",
                          "config_digest", "seeds"]
    assert meta["feature_names"] == ["Frequency", "Amplitude"]
    # the preprocessor reproduces the normalised test split bit for bit from the raw one
    assert np.array_equal(data.preprocessor.transform(data.splits.test.X),
                          data.normalised.test.X)


def test_a_bad_transform_is_one_line_before_any_work(compose_cfg, tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    config = validate(compose_cfg("data.transforms=[{name: polynomial, degree: 5}]",
                                  f"tracking.uri=sqlite:///{store}"))
    with pytest.raises(ConfigError) as caught:
        run(config, output_dir=tmp_path / "out")
    assert str(caught.value) == (
        "data.transforms[0] (polynomial): option 'degree' must be 2 or 3, got 5")
    assert not store.exists() and not (tmp_path / "out").exists()
    unknown = validate(compose_cfg("data.transforms=[nope]"))
    with pytest.raises(ConfigError, match=r"^data.transforms\[0\]: unknown transform 'nope'"):
        check_transforms(unknown)


def test_a_transform_registered_by_main_is_refused(compose_cfg, monkeypatch) -> None:
    """A rerun or a served model could never import it back."""
    def scripted(X, state, feature_names):
        return X

    scripted.__module__ = "__main__"
    monkeypatch.setitem(TRANSFORMS, "scripted", TRANSFORMS.get("scripted"))
    register_transform("scripted", scripted, overwrite=True)
    config = validate(compose_cfg("data.transforms=[scripted]"))
    with pytest.raises(ConfigError, match=r"registered by the script being run \(__main__\)"):
        check_transforms(config)


def test_an_edited_plugin_is_not_served_from_the_cache(compose_cfg, tmp_path: Path,
                                                      monkeypatch) -> None:
    """The preprocess step's cache key holds the plugin module's source digest."""
    module = tmp_path / "edited_plugin.py"
    module.write_text(PLUGIN_CODE.replace('"centre"', '"centre_edited"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        config = validate(compose_cfg("pipeline.plugins=[edited_plugin]",
                                      "data.transforms=[centre_edited]",
                                      f"pipeline.cache_dir={tmp_path / 'cache'}"))
        seeds = run_seeds(config)
        first = run_data_stages(config, seeds, tmp_path / "a", timings={})
        again = run_data_stages(config, seeds, tmp_path / "b", timings={})
        assert (first.cache_hits["preprocess"], again.cache_hits["preprocess"]) == (False, True)
        module.write_text(module.read_text() + "\n# edited\n")
        edited = run_data_stages(config, seeds, tmp_path / "c", timings={})
        assert edited.cache_hits == {"generate": True, "split": True, "preprocess": False}
    finally:
        TRANSFORMS.pop("centre_edited", None)
        sys.modules.pop("edited_plugin", None)


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_run_stores_its_transforms_with_the_model(trained: Trained) -> None:
    checkpoint = json.loads((trained.output_dir / "checkpoints" / "final.json").read_text())
    stored = checkpoint["metadata"]["transforms"]
    assert [(t["name"], t["module"]) for t in stored] == [
        ("log1p", "stages.transforms"), ("centre", PLUGIN), ("polynomial", "stages.transforms")]
    assert len(checkpoint["metadata"]["normaliser"]["mean"]) == 3 + 6  # a, b, c and products
    assert trained.model_id is not None


@pytest.mark.slow
def test_make_serve_from_a_fresh_shell_answers_the_runs_predictions(trained: Trained,
                                                                    tmp_path: Path) -> None:
    expected = _predictions(trained)
    raw = _raw_test(trained)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), "serve",
             f"RUN_ID={trained.run_id}", f"STORE={trained.uri}", "HOST=127.0.0.1",
             f"PORT={port}", f"PLUGINS={PLUGIN}"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=_env(trained.folder),
            cwd=tmp_path, start_new_session=True)
    try:
        served = predict_over_http(server, log, port, raw)
    finally:
        gone = _stop_group(server, port)
    assert gone, "the model server outlived its process group's SIGTERM"
    assert [row["predicted_label"] for row in served] == expected["predicted_label"].tolist()
    # bit for bit, as float repr: JSON and predictions.csv both write the shortest repr
    assert [row["probability"] for row in served] == expected["probability"].tolist()
    assert [row["probability_1"] for row in served] == expected["probability"].tolist()


@pytest.mark.slow
def test_the_model_loads_from_code_in_a_fresh_process(trained: Trained, tmp_path: Path
                                                      ) -> None:
    """mlflow.pyfunc.load_model in a fresh interpreter outside the project, the plugin named
    in the environment: the same predictions; without it, the load fails naming the module."""
    (tmp_path / "rows.csv").write_text(_raw_test(trained).to_csv(index=False))
    snippet = textwrap.dedent(f"""
        import mlflow, pandas as pd
        mlflow.set_tracking_uri("{trained.uri}")
        model = mlflow.pyfunc.load_model("models:/{trained.model_id}")
        out = model.predict(pd.read_csv("rows.csv"))
        print(repr(out["probability"].tolist()))
    """)
    from pipeline.tracking.model import PLUGINS_ENV

    env = {**_env(trained.folder), PLUGINS_ENV: PLUGIN}
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert eval(done.stdout.strip()) == _predictions(trained)["probability"].tolist()
    env.pop(PLUGINS_ENV)
    failed = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=300)
    assert failed.returncode != 0
    assert f"from plugin module '{PLUGIN}', which is not imported here" in failed.stderr


@pytest.mark.slow
def test_make_serve_without_the_plugin_is_one_line_naming_it(trained: Trained) -> None:
    done = _make("serve", f"RUN_ID={trained.run_id}", f"STORE={trained.uri}",
                 f"PORT={free_port()}")
    assert done.returncode != 0
    assert _own_lines(done) == [
        f"error: make serve: the model uses transform 'centre' from the plugin module "
        f"'{PLUGIN}', which is not imported; name it (importable on PYTHONPATH): make serve "
        f"... PLUGINS={PLUGIN}"]


@pytest.mark.slow
def test_make_rerun_reproduces_it_bit_for_bit(trained: Trained) -> None:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), "rerun",
         f"RUN_ID={trained.run_id}",
         f"ARGS=tracking.uri={trained.uri} pipeline.plugins=[{PLUGIN}]"],
        capture_output=True, text=True, env=_env(trained.folder), timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "reproduced bit for bit: run " in done.stdout
    rerun_id = next(line.split()[3] for line in done.stdout.splitlines()
                    if line.startswith("rerun: MLflow run "))
    original, again = _tags(trained), _tags(trained, rerun_id)
    assert again["checkpoint_sha256"] == original["checkpoint_sha256"]
    assert again["predictions_sha256"] == original["predictions_sha256"]


@pytest.mark.slow
def test_make_rerun_without_the_plugin_is_one_line_naming_it(trained: Trained) -> None:
    done = _make("rerun", f"RUN_ID={trained.run_id}", f"ARGS=tracking.uri={trained.uri}")
    assert done.returncode != 0
    lines = _own_lines(done)
    assert len(lines) == 1 and lines[0].startswith("error: rerun: "), lines
    assert f"pipeline.plugins [{PLUGIN}]" in lines[0]
    assert f"pipeline.plugins=[{PLUGIN}]" in lines[0]  # the command that accepts it


def _make_with(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_make_plots_and_log_model_complete_a_lean_run_with_transforms(plugin_folder: Path
                                                                      ) -> None:
    """Two raw features: the decision boundary is drawn over them through the
    preprocessor (a centre and a cubic expansion make the model's 9 inputs). Without the
    plugin named, redrawing is refused in one line naming it."""
    uri = f"sqlite:///{plugin_folder / 'lean.db'}"
    lean = _train(plugin_folder, uri, plugin_folder / "two.csv", "lean", TRANSFORMS_2,
                  "tracking.plots=false", "tracking.log_model=false")
    assert lean.model_id is None
    refused = _make_with(_env(plugin_folder), "plots", f"RUN_ID={lean.run_id}", f"STORE={uri}")
    assert refused.returncode != 0
    lines = _own_lines(refused)
    assert len(lines) == 1 and f"[{PLUGIN}]" in lines[0] and "--plugins" in lines[0], lines

    plots = _make_with(_env(plugin_folder), "plots", f"RUN_ID={lean.run_id}", f"STORE={uri}",
                       f"ARGS=--plugins {PLUGIN}")
    assert plots.returncode == 0, (plots.stdout + plots.stderr)[-3000:]
    model = _make_with(_env(None), "log-model", f"RUN_ID={lean.run_id}", f"STORE={uri}")
    assert model.returncode == 0, (model.stdout + model.stderr)[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    tags = client.get_run(lean.run_id).data.tags
    assert (tags["plots_logged"], tags["model_logged"]) == ("true", "true")
    assert "plots/decision_boundary.png" in {a.path for a in
                                             client.list_artifacts(lean.run_id, "plots")}
