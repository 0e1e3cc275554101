"""Stored configs are data, plugins that exit are config errors, and input that does not fit
(features near 1e300, a data size beyond memory, a folder that is not a model) gets one line.

Reruns read a run's stored config.yaml, which anyone who can write the store can edit: it
never names code to import (only the command line does) and never points the rerun at a
file that is not the run's data.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import import_plugins, physical_memory, validate
from pipeline.errors import ConfigError
from pipeline.run.runner import run
from stages.generate import generate_rf
from stages.normalise import fit_normaliser
from stages.split import split_dataset
from tests.conftest import FAST

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}
QUICK = ["train.epochs=50", "train.checkpoint_every=25", "train.progress=false",
         "tracking.plots=false", "tracking.log_model=false"]


def cli(*args: str, module: str = "pipeline", cwd: Path = PROJECT_ROOT,
        env: dict[str, str] | None = None, timeout: float = 600
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env={**ENV, **(env or {})})


def train(tmp_path: Path, store: str, name: str, *extra: str) -> str:
    done = cli(f"tracking.uri={store}", *QUICK, f"hydra.run.dir={tmp_path / name}",
               f"pipeline.cache_dir={tmp_path / 'cache'}", *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split("MLflow run ")[1].split()[0]


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def run_ids(store: str) -> list[str]:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-pipeline").experiment_id
    return sorted(r.info.run_id for r in client.search_runs([experiment]))


def tamper(tmp_path: Path, store: str, run_id: str, name: str, **changes: dict) -> None:
    """Replace run ``run_id``'s stored config.yaml by its own with ``changes`` merged into
    the groups named (what anyone who can write the store can do)."""
    client = MlflowClient(store)
    stored = yaml.safe_load((tmp_path / name / "artifacts" / "config.yaml").read_text())
    for group, values in changes.items():
        stored[group].update(values)
    forged = tmp_path / f"forged-{run_id}" / "config.yaml"
    forged.parent.mkdir(exist_ok=True)
    forged.write_text(yaml.safe_dump(stored, sort_keys=False))
    client.log_artifact(run_id, str(forged))


def artifact_folder(store: str, run_id: str) -> Path:
    uri = MlflowClient(store).get_run(run_id).info.artifact_uri
    return Path(uri.removeprefix("file://"))


# ---- 1. a stored config names no code and no other file ------------------------------------

EVIL = """
from pathlib import Path
Path({marker!r}).write_text("imported")
"""


@pytest.mark.slow
def test_rerun_never_imports_a_plugin_named_by_the_stored_config(tmp_path, store) -> None:
    """A module planted among a run's artifacts (importable as mlruns.<exp>.<run>.artifacts.
    evil from the store's folder) and named in its stored config.yaml: the rerun refuses in
    one line naming it and the command that accepts it, imports nothing and starts no run;
    that command then runs it (the user chose it)."""
    original = train(tmp_path, store, "orig")
    marker = tmp_path / "IMPORTED"
    evil = tmp_path / "plant" / "evil.py"
    evil.parent.mkdir()
    evil.write_text(EVIL.format(marker=str(marker)))
    MlflowClient(store).log_artifact(original, str(evil))
    folder = artifact_folder(store, original)
    module = ".".join(folder.relative_to(tmp_path).parts) + ".evil"
    assert module == f"mlruns.{original}.artifacts.evil"  # the default store's layout
    tamper(tmp_path, store, original, "orig", pipeline={"plugins": [module]})

    done = cli(original, f"tracking.uri={store}", module="pipeline.commands.rerun", cwd=tmp_path)
    assert not marker.exists(), "the stored config's plugin was imported"
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert lines_of(done.stderr) == [
        f"error: rerun: run {original}'s stored config names pipeline.plugins [{module}], "
        "and code that a stored config names is never imported; if you trust it, name it: "
        f"make rerun RUN_ID={original} "
        f"ARGS=\"tracking.uri={store} pipeline.plugins=[{module}]\""], done.stderr
    assert run_ids(store) == [original]  # no rerun was started

    # make plots redraws from the same stored config: the same rule.
    plots = cli(original, "--plots", "--uri", store, module="pipeline.commands.complete",
                cwd=tmp_path)
    assert not marker.exists(), "make plots imported the stored config's plugin"
    assert plots.returncode == 1 and "Traceback" not in plots.stderr
    assert lines_of(plots.stderr) == [
        f"error: run {original}'s stored config names pipeline.plugins [{module}], and code "
        "that a stored config names is never imported; if you trust it, name it: "
        f"python -m pipeline.commands.complete {original} --plots --uri '{store}' "
        f"--plugins {module}"]
    assert MlflowClient(store).get_run(original).data.tags["plots_logged"] == "false"

    accepted = cli(original, f"tracking.uri={store}", f"pipeline.plugins=[{module}]",
                   module="pipeline.commands.rerun", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stdout[-1000:] + accepted.stderr[-2000:]
    assert marker.exists() and "reproduced bit for bit" in accepted.stdout


def test_a_stored_plugin_not_named_on_the_command_line_is_refused_before_any_import() -> None:
    from pipeline.commands.rerun import given_on_command_line, rerun_command
    from pipeline.errors import PipelineError
    from pipeline.run.stored_config import PLUGINS, check_stored_plugins

    overrides = ["pipeline.plugins=[c]", "optimizer.lr=0.1"]
    command = rerun_command("R", overrides, PLUGINS)
    stored = {"pipeline": {"plugins": ["a.b", "c"]}}
    assert given_on_command_line(overrides, PLUGINS) == (True, ["c"])
    assert given_on_command_line(["optimizer.lr=0.1"], PLUGINS) == (False, None)
    check_stored_plugins("R", stored, ["c", "a.b", "d"], command)  # all named: accepted
    check_stored_plugins("R", {"pipeline": {"plugins": []}}, None, command)
    check_stored_plugins("R", {"pipeline": {}}, None, command)  # from before the setting
    with pytest.raises(PipelineError) as info:
        check_stored_plugins("R", stored, ["c"], command)
    assert str(info.value) == (
        "run R's stored config names pipeline.plugins [a.b, c], and code that a stored config "
        "names is never imported; if you trust them, name them: make rerun RUN_ID=R "
        "ARGS=\"optimizer.lr=0.1 pipeline.plugins=[a.b,c]\"")
    for odd in ("x", [1], ["bad\nname"], ["os; rm"]):
        with pytest.raises(PipelineError) as info:
            check_stored_plugins("R", {"pipeline": {"plugins": odd}}, None, command)
        assert "\n" not in str(info.value) and "refusing it" in str(info.value)


SECRET = "s3cr3t-first-field-8825"


def _csv(path: Path, rows: int = 120) -> Path:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(rows, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    path.write_text("".join(f"{float(a)!r},{float(b)!r},{c}\n"
                            for (a, b), c in zip(X, y, strict=True)))
    return path


def _nowhere(secret: str, store: str, tmp_path: Path, *texts: str) -> None:
    """``secret`` is in no output, and in no tag, param or file of the store."""
    for text in texts:
        assert secret not in text
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-pipeline").experiment_id
    for found in client.search_runs([experiment]):
        for key, value in {**found.data.tags, **found.data.params}.items():
            assert secret not in key and secret not in value, key
    for path in (tmp_path / "mlruns").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret.encode() not in (tmp_path / "mlflow.db").read_bytes()


@pytest.mark.slow
def test_rerun_checks_a_stored_data_path_against_the_runs_digest(tmp_path, store) -> None:
    """A stored data.path redirected to a file whose first field is a secret: the rerun
    refuses with one line naming the path, before any run starts, and the secret is in no
    output, tag, param or stored file. The unchanged config still reproduces; a data.path
    given on the command line is the user's choice and is not checked."""
    data = _csv(tmp_path / "data.csv")
    original = train(tmp_path, store, "orig", "data=csv", f"data.path={data}",
                     "data.header=false")
    secret_file = tmp_path / "elsewhere" / "notes.csv"
    secret_file.parent.mkdir()
    secret_file.write_text(f"{SECRET},1,0\n2,3,1\n4,5,0\n")
    tamper(tmp_path, store, original, "orig", data={"path": str(secret_file)})

    done = cli(original, f"tracking.uri={store}", module="pipeline.commands.rerun")
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert lines_of(done.stderr) == [
        f"error: rerun: {secret_file} (data.path in run {original}'s stored config) does not "
        f"hold the data run {original} was trained on (it does not load as that run's CSV); "
        f"to rerun on another file, name it: make rerun RUN_ID={original} "
        f"ARGS=\"tracking.uri={store} data.path=<file>\""], done.stderr
    assert run_ids(store) == [original]
    _nowhere(SECRET, store, tmp_path, done.stdout, done.stderr)

    # A valid CSV with other rows: loads, but its digest is not the run's.
    other = _csv(tmp_path / "elsewhere" / "other.csv", rows=100)
    tamper(tmp_path, store, original, "orig", data={"path": str(other)})
    changed = cli(original, f"tracking.uri={store}", module="pipeline.commands.rerun")
    assert changed.returncode == 1 and run_ids(store) == [original]
    assert "(its rows are not that run's data)" in changed.stderr, changed.stderr

    tamper(tmp_path, store, original, "orig", data={"path": str(data)})  # as recorded
    same = cli(original, f"tracking.uri={store}", module="pipeline.commands.rerun")
    assert same.returncode == 0, same.stdout[-1000:] + same.stderr[-2000:]
    assert "reproduced bit for bit" in same.stdout

    chosen = cli(original, f"tracking.uri={store}", f"data.path={other}",
                 module="pipeline.commands.rerun")
    assert "does not hold the data" not in chosen.stderr
    assert f"config differs from the original: data.path: '{data}' -> '{other}'" in (
        chosen.stdout)
    assert len(run_ids(store)) == 3  # the user's file was used


# ---- 2. a plugin that calls sys.exit() on import ------------------------------------------

EXITS = "import sys\nprint('a script, not a plugin')\nsys.exit(3)\n"


def test_a_plugin_that_exits_is_a_config_error(tmp_path, monkeypatch) -> None:
    (tmp_path / "exits_on_import.py").write_text(EXITS)
    (tmp_path / "exits_quietly.py").write_text("raise SystemExit\n")
    (tmp_path / "interrupts.py").write_text("raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        import_plugins(["exits_on_import"])
    assert str(info.value) == (
        "pipeline.plugins: importing 'exits_on_import' called sys.exit(3) (a script, not a "
        "module that registers names?); name a module that only registers what the config "
        "uses, or drop it")
    assert "exits_on_import" not in sys.modules
    with pytest.raises(ConfigError, match=r"importing 'exits_quietly' called sys.exit\(\) "):
        import_plugins(["exits_quietly"])
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C is never a config error
        import_plugins(["interrupts"])


def _plugin_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "bad.py").write_text(EXITS)
    return {"PYTHONPATH": f"{PROJECT_ROOT}{os.pathsep}{tmp_path}"}


def test_a_single_run_whose_plugin_exits_is_one_line_and_exit_1(tmp_path, store) -> None:
    done = cli(f"tracking.uri={store}", "pipeline.plugins=[bad]",
               f"hydra.run.dir={tmp_path / 'out'}", env=_plugin_env(tmp_path), timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert lines_of(done.stderr) == [
        "pipeline.plugins: importing 'bad' called sys.exit(3) (a script, not a module that "
        "registers names?); name a module that only registers what the config uses, or drop "
        "it"]


def _sweep(tmp_path: Path, store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return cli("-m", *args, f"tracking.uri={store}", *QUICK,
               f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sw'}",
               env=_plugin_env(tmp_path))


def _sweep_runs(store: str) -> tuple[object, list]:
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-pipeline").experiment_id
    runs = client.search_runs([experiment])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


@pytest.mark.slow
def test_a_sweep_whose_plugin_exits_stops_before_any_run(tmp_path, store) -> None:
    """Every job would import the plugin: the sweep ends in one line and creates no run."""
    done = _sweep(tmp_path, store, "seed=1,2,3", "pipeline.plugins=[bad]")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.count("importing 'bad' called sys.exit(3)") == 1, done.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists() or not MlflowClient(
        store).search_runs([e.experiment_id for e in MlflowClient(store).search_experiments()])


@pytest.mark.slow
def test_a_sweep_job_whose_plugin_exits_fails_alone(tmp_path, store) -> None:
    """Only one job names the plugin: that job ends FAILED with the line, the others run."""
    done = _sweep(tmp_path, store, "pipeline.plugins=[],[bad]")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    parent, children = _sweep_runs(store)
    statuses = sorted(c.info.status for c in children)
    assert statuses == ["FAILED", "FINISHED"], statuses
    (failed,) = [c for c in children if c.info.status == "FAILED"]
    assert "importing 'bad' called sys.exit(3)" in failed.data.tags["error"]
    assert parent.data.tags["n_failed"] == "1" and parent.data.tags["n_children"] == "2"


@pytest.mark.slow
def test_a_sweep_where_some_jobs_name_an_exiting_plugin_runs_the_others(tmp_path,
                                                                         store) -> None:
    done = _sweep(tmp_path, store, "seed=1,2", "pipeline.plugins=[bad],[]")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    parent, children = _sweep_runs(store)
    assert sorted(c.info.status for c in children) == ["FAILED", "FAILED", "FINISHED",
                                                       "FINISHED"]
    for child in children:
        if child.info.status == "FAILED":
            assert "importing 'bad' called sys.exit(3)" in child.data.tags["error"]
        else:
            assert child.data.params["pipeline.plugins"] == "[]"
    assert parent.info.status == "FAILED"
    assert parent.data.tags["n_failed"] == "2" and parent.data.tags["n_children"] == "4"
    assert parent.data.tags["error"] == "2 job(s) failed"


# ---- 3. features near 1e300 ----------------------------------------------------------------

def test_the_default_datas_normaliser_is_bit_identical_to_the_plain_formula() -> None:
    raw = generate_rf(n_samples=1000, seed=7)
    train_X = split_dataset(raw, test_fraction=0.2, val_fraction=0.0, stratify=False,
                            seed=11).train.X
    fitted = fit_normaliser(train_X)
    assert fitted.mean.tobytes() == train_X.mean(axis=0).tobytes()
    assert fitted.std.tobytes() == train_X.std(axis=0).tobytes()


def test_huge_and_tiny_columns_are_scaled_not_replaced_by_one() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 1))
    X = np.hstack([base * 1e300 + 3e300, base * 1e-300, base * 1e-160 + 1.0e-150, base,
                   np.full((200, 1), 2e307), base * 1e307 + 1.5e308])
    fitted = fit_normaliser(X)
    # The plain formula on each column scaled by a power of two into its exact range (the
    # same bits but for the exponent; the offset in column 2 leaves ~1e-11 of its own noise).
    scales = 2.0 ** np.array([-997, 997, 531, 0, 0, -1020])
    reference = [(X[:, c] * scales[c], scales[c]) for c in range(6)]
    np.testing.assert_allclose(fitted.std, [1.0 if c == 4 else x.std() / k
                                            for c, (x, k) in enumerate(reference)], rtol=1e-9)
    np.testing.assert_allclose(fitted.mean, [2e307 if c == 4 else x.mean() / k
                                             for c, (x, k) in enumerate(reference)], rtol=1e-12)
    with np.errstate(all="ignore"):
        plain = X.std(axis=0)
    assert not np.isfinite(plain[[0, 5]]).any() and plain[1] == 0  # what it gets right
    assert abs(plain[2] / fitted.std[2] - 1) > 1e-6  # its squares were subnormal
    Z = fitted.transform(X)
    assert np.all(np.isfinite(Z))
    for column in (0, 1, 2, 5):  # column 2's offset rounds its inputs to ~2e-6 of its std
        np.testing.assert_allclose(Z[:, column], Z[:, 3], atol=1e-5)


def test_a_column_whose_z_scores_overflow_is_one_line() -> None:
    from stages.dataset import DataError, Dataset
    from stages.normalise import normalise
    from stages.split import Splits

    def data(values: list[float]) -> Dataset:
        X = np.column_stack([values, np.arange(len(values), dtype=float)])
        return Dataset(X=X, y=np.arange(len(values)) % 2, feature_names=("big", "i"),
                       label_name="y", classes=("0", "1"))

    train_rows = data([1.7e308, 1.7e308, -1.7e308, 1.7e308])
    with pytest.raises(DataError) as info:
        normalise(Splits(train=train_rows, test=train_rows, val=None))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data: feature 'big' of the train split cannot be normalised "
                              "in float64"), message


@pytest.mark.slow
def test_features_near_1e300_train_to_full_accuracy(compose_cfg, tmp_path, isolated) -> None:
    """A separable feature near 1e300: its std overflowed and became 1 (accuracy 0.82 on
    this set, no warning); scaled, it normalises as at any scale."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = (x > 0.4).astype(int)
    x += np.where(y == 1, 0.3, -0.3)  # a margin around the threshold
    path = tmp_path / "huge.csv"
    path.write_text("f0,label\n" + "".join(f"{float(v) * 1e300!r},{c}\n"
                                           for v, c in zip(x, y, strict=True)))
    result = run(validate(compose_cfg(*FAST, *isolated, "data=csv", f"data.path={path}",
                                      "tracking.plots=false", "tracking.log_model=false")),
                 output_dir=tmp_path / "out")
    assert result.metrics["test_accuracy"] == 1.0
    stats = json.loads((tmp_path / "out" / "data" / "03_preprocess" / "preprocessor.json"
                        ).read_text())["normaliser"]
    assert 1e299 < stats["std"][0] < 1e301, stats


# ---- 4. a data size that cannot fit in memory ----------------------------------------------

def test_a_data_size_beyond_memory_is_refused_before_any_work(compose_cfg) -> None:
    memory = physical_memory()
    if memory is None:
        pytest.skip("this OS does not say how much memory it has")
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg("data.n_samples=100000000000"))
    message = str(info.value)
    assert re.fullmatch(
        r"data\.n_samples: 100000000000 rows need at least [\d.]+ GiB \(the table, its split "
        r"and its normalised copy\); this machine has [\d.]+ GiB: use fewer samples", message
    ), message
    needed = float(message.split("at least ")[1].split(" GiB")[0])
    assert needed == pytest.approx(100000000000 * 3 * 8 * 3 / 2**30, rel=1e-3)
    validate(compose_cfg("data.n_samples=100000"))  # a large set that fits is accepted


def test_a_float_for_an_integer_key_names_the_integer_spelling(compose_cfg) -> None:
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg("data.n_samples=1e11"))
    assert str(info.value) == ("data.n_samples: got 1e+11, a float; it takes an integer: "
                               "data.n_samples=100000000000")
    with pytest.raises(ConfigError) as info:
        validate(compose_cfg("train.epochs=2.5"))
    assert str(info.value) == "train.epochs: got 2.5, a float; it takes an integer"


def test_make_train_with_too_many_samples_is_one_line_and_no_run(tmp_path, store) -> None:
    done = cli(f"tracking.uri={store}", "data.n_samples=100000000000",
               f"hydra.run.dir={tmp_path / 'out'}", timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = lines_of(done.stderr)
    assert line.startswith("data.n_samples: 100000000000 rows need at least"), line
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store was opened


# ---- 5. serving a folder that is not a model ----------------------------------------------

def _serve(*args: str, cwd: Path = PROJECT_ROOT) -> list[str]:
    """What ``python -m pipeline.commands.serve`` printed; it must have failed with exit 1."""
    from tests.servers import free_port

    done = cli(*args, "--port", str(free_port()), module="pipeline.commands.serve", cwd=cwd,
               timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return lines_of(done.stdout + done.stderr)


HOW = ("serve a logged model: MODEL=models:/<model id> (printed at the end of a run), "
       "MODEL=models:/<name>@champion (make promote registers one), or "
       "RUN_ID=<run id> (make log-model RUN_ID=<run id> logs one for a run without)")


@pytest.mark.parametrize(("content", "problem"), [
    (None, "the folder has no MLmodel file, so it is not an MLflow model"),
    ("flavors: [\n", "its MLmodel file is not an MLflow model description (not YAML)"),
    ("just text\n", "its MLmodel file is not an MLflow model description (not a mapping)"),
    ("flavors:\n  sklearn: {pickled_model: m.pkl}\n",
     "its model has no python_function flavor (it has: sklearn), which serving needs"),
])
def test_serving_a_folder_that_is_not_a_model_is_one_line(tmp_path, content, problem) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    if content is not None:
        (folder / "MLmodel").write_text(content)
    store = f"sqlite:///{tmp_path / 'none.db'}"
    lines = _serve("--model", str(folder), "--uri", store, cwd=tmp_path)
    assert lines == [f"error: make serve: MODEL={folder}: {problem}; {HOW}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"]  # no store was made


def test_serving_a_missing_path_or_a_file_is_one_line(tmp_path) -> None:
    missing, file = tmp_path / "nothing", tmp_path / "model.txt"
    file.write_text("x")
    assert _serve("--model", str(missing)) == [
        f"error: make serve: MODEL={missing}: no such folder; {HOW}"]
    assert _serve("--model", str(file)) == [
        f"error: make serve: MODEL={file}: a file, not a model folder; {HOW}"]


def test_serving_a_registered_model_that_does_not_exist_is_one_line(tmp_path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(store).search_experiments()  # an empty store
    (line,) = _serve("--model", "models:/nothing/1", "--uri", store)
    assert line.startswith("error: make serve: MODEL=models:/nothing/1: cannot read the "
                           "model: "), line
    assert line.endswith(HOW)
