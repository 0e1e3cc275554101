"""End to end: the real conf/, a real sqlite MLflow store, read back with MlflowClient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import METRIC_NAMES, training_settings, validate
from pipeline.config.seeds import fold_seed
from pipeline.mlp import MLP, fit
from pipeline.mlp.parallel import part_count
from pipeline.run.datastore import read_dataset
from pipeline.run.runner import RunResult, run
from stages.evaluate import evaluate
from stages.normalise import Normaliser
from stages.preprocess import Preprocessor, fit_preprocessor
from stages.split import assign_folds, fold_parts
from stages.train import build_model
from tests.conftest import FAST

pytestmark = pytest.mark.slow


def _run(compose_cfg, tmp_path: Path, isolated: list[str], *overrides: str) -> RunResult:
    config = validate(compose_cfg(*FAST, *isolated, "tracking.plots=true", *overrides))
    return run(config, output_dir=tmp_path / "out", overrides=list(overrides))


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _artifacts(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def test_default_pipeline_records_everything(compose_cfg, tmp_path, isolated, store) -> None:
    result = _run(compose_cfg, tmp_path, isolated)
    client = MlflowClient(store)
    run_ = client.get_run(result.run_id)
    assert run_.info.status == "FINISHED"

    params = run_.data.params
    for key in ("optimizer.lr", "model.hidden_sizes", "train.epochs", "seed", "seeds.data",
                "seeds.split", "seeds.init", "seeds.shuffle", "data.source"):
        assert key in params, key
    assert params["model.hidden_sizes"] == "[12]"

    for key in ("train_mse", "train_loss", "train_accuracy"):
        history = client.get_metric_history(result.run_id, key)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 301))
    for name in METRIC_NAMES:  # the test split's figures, and the validation split's
        assert f"test_{name}" in run_.data.metrics, name
        assert f"val_{name}" in run_.data.metrics, name
    assert run_.data.metrics["test_accuracy"] >= 0.9
    assert set(result.metrics) == {f"{split}_{name}" for split in ("val", "test")
                                   for name in METRIC_NAMES}

    tags = run_.data.tags
    for key in ("git_commit", "git_dirty", "data_digest", "checkpoint_sha256",
                "predictions_sha256", "python_version", "blas", "blas_threads"):
        assert tags.get(key), key

    files = _artifacts(client, result.run_id)
    for name in ("confusion_matrix.json", "confusion_matrix.png", "predictions.csv",
                 "checkpoints/final.json", "checkpoints/epoch_0000100.json",
                 "checkpoints/epoch_0000300.json", "config.yaml", "overrides.yaml",
                 "plots/training_curves.png", "plots/roc_curve.png",
                 "plots/probability_vs_label.png", "plots/decision_boundary.png"):
        assert name in files, name

    local = Path(client.download_artifacts(result.run_id, "", str(tmp_path / "dl")))
    confusion = json.loads((local / "confusion_matrix.json").read_text())
    assert confusion["labels"] == ["0", "1"]
    assert sum(map(sum, confusion["matrix"])) == 200  # the 20 % test split of 1000 rows
    predictions = pd.read_csv(local / "predictions.csv")
    assert list(predictions.columns)[:3] == ["probability", "predicted_label", "actual_label"]
    assert len(predictions) == 200
    accuracy = (predictions["predicted_label"] == predictions["actual_label"]).mean()
    assert accuracy == pytest.approx(run_.data.metrics["test_accuracy"])

    # The pyfunc model predicts from raw features exactly what the checkpoint predicts.
    checkpoint = MLP.load(local / "checkpoints" / "final.json")
    test = pd.read_parquet(result.output_dir / "data" / "02_split" / "test.parquet")
    raw = test[["Frequency", "Amplitude"]]
    normaliser = Normaliser.from_dict(checkpoint.metadata["normaliser"])
    expected = checkpoint.predict_proba(normaliser.transform(raw.to_numpy()))[:, 0]
    logged = mlflow.search_logged_models(
        experiment_ids=[result.experiment_id], filter_string=f"source_run_id = '{result.run_id}'",
        output_format="list")
    assert [m.name for m in logged] == ["model"]
    # The test metrics are also the logged model's, measured on the "test" input.
    model_metrics = {m.key: m for m in logged[0].metrics or []}
    assert model_metrics["test_accuracy"].value == run_.data.metrics["test_accuracy"]
    source_name = f"rf(seed={run_.data.params['seeds.data']})"
    digests = {t.value: i.dataset.digest for i in run_.inputs.dataset_inputs for t in i.tags}
    assert model_metrics["test_accuracy"].dataset_name == source_name
    assert model_metrics["test_accuracy"].dataset_digest == digests["test"]
    assert "train_loss" not in model_metrics  # per-epoch histories stay the run's
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    served = model.predict(raw)
    np.testing.assert_array_equal(served["probability"].to_numpy(), expected)
    assert (served["predicted_label"].astype(str).to_numpy()
            == predictions["predicted_label"].astype(str).to_numpy()).all()

    inputs = run_.inputs.dataset_inputs
    assert {i.dataset.name for i in inputs} == {source_name}
    assert {t.value for i in inputs for t in i.tags} == {"train", "val", "test"}

    # The validation figures are the evaluate stage's on the raw validation rows through the
    # checkpoint's preprocessor, and they are the run's latest values (the core's per-epoch
    # val_accuracy curve ends at the same step).
    val = pd.read_parquet(result.output_dir / "data" / "02_split" / "val.parquet")
    assert len(val) == 200  # 0.2 of the 1000 rows, taken from the training part
    expected_val = _evaluate_checkpoint(local / "checkpoints" / "final.json", val)
    for key, value in expected_val.items():
        assert _same(run_.data.metrics[key], value), key
        assert _same(result.metrics[key], value), key
    (measured,) = [m for m in model_metrics.values() if m.key == "val_accuracy"]
    assert (measured.dataset_name, measured.dataset_digest) == (source_name, digests["val"])


def _same(a: float, b: float) -> bool:
    return a == b or (np.isnan(a) and np.isnan(b))


def _evaluate_checkpoint(checkpoint_path: Path, frame: pd.DataFrame) -> dict[str, float]:
    """The evaluate stage's val_* figures of a checkpoint on raw rows (a split's parquet)."""
    checkpoint = MLP.load(checkpoint_path)
    preprocessor = Preprocessor.from_metadata(checkpoint.metadata)
    label = preprocessor.label_name
    proba = checkpoint.predict_proba(preprocessor.transform(frame.drop(columns=[label])))
    return dict(evaluate(proba, frame[label].to_numpy(), preprocessor.classes,
                         prefix="val").metrics)


def test_the_final_validation_figures_are_the_best_epochs_with_early_stopping(
        compose_cfg, tmp_path, isolated, store) -> None:
    """Early stopping gives back the best epoch's model (the core restores its weights):
    the run's val_* are that model's, the latest values in the store, although the core's
    per-epoch val_accuracy curve ends with the last epoch's different value."""
    result = _run(compose_cfg, tmp_path, isolated, "optimizer.lr=0.05",
                  "train.early_stopping_patience=5", "data.noise_std=0.3",
                  "tracking.plots=false")
    client = MlflowClient(store)
    run_ = client.get_run(result.run_id)
    last, best = int(run_.data.tags["epochs_run"]), None
    curve = {}
    for point in client.get_metric_history(result.run_id, "val_accuracy"):
        curve.setdefault(point.step, []).append(point)
    assert last < 300 and max(curve) == last  # it stopped early
    epochs = pd.read_csv(client.download_artifacts(result.run_id, "history.csv",
                                                   str(tmp_path / "h")))
    best = int(epochs.loc[epochs["val_loss"].idxmin(), "epoch"])
    per_epoch = dict(zip(epochs["epoch"], epochs["val_accuracy"], strict=True))
    assert per_epoch[last] != per_epoch[best]  # the case that matters

    checkpoint = MLP.load(result.output_dir / "checkpoints" / "final.json")
    assert checkpoint.epoch == best
    val = pd.read_parquet(result.output_dir / "data" / "02_split" / "val.parquet")
    expected = _evaluate_checkpoint(result.output_dir / "checkpoints" / "final.json", val)
    assert expected["val_accuracy"] == per_epoch[best]
    for key, value in expected.items():
        assert _same(run_.data.metrics[key], value), key
    # Two points at the last epoch: the core's, then the final figure, stamped after it.
    core, final = sorted(curve[last], key=lambda m: m.timestamp)
    assert (core.value, final.value) == (per_epoch[last], expected["val_accuracy"])
    assert final.timestamp > core.timestamp


def _csv(tmp_path: Path, n: int = 240, n_classes: int = 2) -> Path:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 2, (n_classes, 3))
    y = rng.integers(0, n_classes, n)
    frame = pd.DataFrame(centres[y] + rng.normal(0, 1.5, (n, 3)), columns=["a", "b", "c"])
    frame["label"] = np.array(["no", "yes", "maybe"])[y]
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def test_k_folds_score_each_fold_without_leakage_then_refit(
        compose_cfg, tmp_path, isolated, store) -> None:
    """split.folds=3: each fold's figures (a preprocessor fitted on the other folds only,
    a model trained with the run's seeds), their mean and std; then one model refit on all
    the rows outside the test split, scored on test and logged; the data steps' cache is
    the one a run without a validation split uses."""
    path = _csv(tmp_path)
    common = ["data=csv", f"data.path={path}", "optimizer.lr=0.01", "split.stratify=true"]
    plain = _run(compose_cfg, tmp_path / "plain", isolated, *common, "split.val_fraction=0",
                 "tracking.plots=false", "tracking.log_model=false")
    result = _run(compose_cfg, tmp_path, isolated, *common, "split.folds=3")
    client = MlflowClient(store)
    run_ = client.get_run(result.run_id)
    metrics = run_.data.metrics
    for name in METRIC_NAMES:
        folds = [metrics[f"fold{i}_val_{name}"] for i in (1, 2, 3)]
        assert _same(metrics[f"val_{name}"], float(np.mean(folds))), name
        assert _same(metrics[f"val_{name}_std"], float(np.std(folds))), name
        assert f"test_{name}" in metrics
    assert "fold4_val_accuracy" not in metrics
    params = run_.data.params
    assert (params["split.folds"], params["split.val_fraction"]) == ("3", "0.0")
    tags = run_.data.tags
    assert (tags["cache.load_csv"], tags["cache.split"], tags["cache.preprocess"]) == (
        "hit", "hit", "hit")

    # Fold 1 again by hand, from its parts: the preprocessor sees its training part only.
    seeds = {k.removeprefix("seeds."): int(v) for k, v in params.items()
             if k.startswith("seeds.")}
    train = read_dataset(result.output_dir / "data" / "02_split" / "train.parquet")
    assignment = assign_folds(train, 3, stratify=True, seed=fold_seed(seeds["split"]))
    part, held = fold_parts(train, assignment, 0)
    preprocessor = fit_preprocessor(part)
    model = build_model(3, 2, hidden_sizes=[12], seed=seeds["init"])
    config = validate(compose_cfg(*FAST, *isolated, *common, "split.folds=3"))
    fit(model, preprocessor.transform(part.X), part.y,
        training_settings(config, shuffle_seed=seeds["shuffle"]))
    fold1 = evaluate(model.predict_proba(preprocessor.transform(held.X)), held.y, held.classes,
                     prefix="val").metrics
    for key, value in fold1.items():
        assert _same(metrics[f"fold1_{key}"], value), key

    # The refit: all the rows outside the test split, its own preprocessor, no val curve.
    checkpoint = MLP.load(result.output_dir / "checkpoints" / "final.json")
    without = MLP.load(plain.output_dir / "checkpoints" / "final.json")
    np.testing.assert_array_equal(checkpoint.params, without.params)  # a run without val data
    refit = Preprocessor.from_metadata(checkpoint.metadata)
    np.testing.assert_array_equal(refit.normaliser.mean, fit_preprocessor(train).normaliser.mean)
    assert metrics["test_accuracy"] == result.metrics["test_accuracy"] >= 0.8
    history = pd.read_csv(client.download_artifacts(result.run_id, "history.csv",
                                                    str(tmp_path / "h")))
    assert list(history.columns) == ["epoch", "train_loss", "train_mse", "train_accuracy"]
    assert len(history) == 300
    logged = mlflow.search_logged_models(
        experiment_ids=[result.experiment_id], filter_string=f"source_run_id = '{result.run_id}'",
        output_format="list")
    assert len(logged) == 1
    assert "val_accuracy" not in {m.key for m in logged[0].metrics or []}  # not its figure
    assert {i.dataset.name for i in run_.inputs.dataset_inputs} == {"data.csv"}
    assert {t.value for i in run_.inputs.dataset_inputs for t in i.tags} == {"train", "test"}


def test_too_few_rows_for_the_folds_is_one_line(tmp_path, store) -> None:
    path = _csv(tmp_path, n=30)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"tracking.uri={store}", *FAST, "data=csv",
         f"data.path={path}", "split.folds=25", f"pipeline.cache_dir={tmp_path / 'cache'}",
         f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "split.folds=25: the 24 rows outside the test split are fewer than 25 folds; use "
        "fewer folds or more rows")
    client = MlflowClient(store)
    (run_,) = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    assert run_.info.status == "FAILED" and run_.data.tags["error"].startswith("split.folds=25")


def test_rustnet_rf_preset_reaches_99_percent(compose_cfg, tmp_path, isolated, store) -> None:
    config = validate(compose_cfg(*isolated, "experiment=rustnet_rf", "train.progress=false",
                                  "tracking.plots=false", "tracking.log_model=false"))
    result = run(config, output_dir=tmp_path / "out")
    assert result.metrics["test_accuracy"] >= 0.99
    run_ = MlflowClient(store).get_run(result.run_id)
    assert run_.data.params["seeds.data"] == "42" and run_.data.params["seeds.split"] == "7"


@pytest.mark.parametrize("label", ["last", "named"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_csv_pipeline(compose_cfg, tmp_path, isolated, store, label, n_classes) -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 4, (n_classes, 3))
    y = rng.integers(0, n_classes, 240)
    X = centres[y] + rng.normal(0, 1, (240, 3))
    names = np.array(["setosa", "versicolor", "virginica"])[y] if n_classes == 3 else y
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    if label == "last":
        frame["species"] = names
    else:
        frame.insert(1, "species", names)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    extra = ["data.label_column=species"] if label == "named" else []
    result = _run(compose_cfg, tmp_path, isolated, "data=csv", f"data.path={path}",
                  "optimizer=adam", "optimizer.lr=0.01", *extra)
    assert result.metrics["test_accuracy"] >= 0.9
    assert len(result.confusion["labels"]) == n_classes
    assert sum(map(sum, result.confusion["matrix"])) == 48
    if n_classes == 3:
        assert result.confusion["labels"] == ["setosa", "versicolor", "virginica"]
    run_ = MlflowClient(store).get_run(result.run_id)
    assert run_.info.status == "FINISHED"


def test_cache_hits_on_a_second_run(compose_cfg, tmp_path, isolated, store) -> None:
    first = _run(compose_cfg, tmp_path, isolated)
    second = _run(compose_cfg, tmp_path, isolated, "optimizer=adam")
    client = MlflowClient(store)
    assert client.get_run(first.run_id).data.tags["cache.generate"] == "miss"
    tags = client.get_run(second.run_id).data.tags
    assert (tags["cache.generate"], tags["cache.split"], tags["cache.preprocess"]) == (
        "hit", "hit", "hit")


def test_cli_make_train_equivalent(tmp_path, store) -> None:
    """`python -m pipeline` as `make train` runs it, from another working directory."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", f"tracking.uri={store}", *FAST,
         f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Confusion matrix" in done.stdout
    table = done.stdout.splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("Metrics"))
    assert table[header].split() == ["Metrics", "val", "test"]
    assert table[header + 1].split()[0] == "accuracy"
    assert "#/experiments/" in done.stdout
    runs = MlflowClient(store).search_runs(
        [MlflowClient(store).get_experiment_by_name("mlp-pipeline").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_the_thread_count_does_not_change_a_run_whose_batches_split(
        compose_cfg, tmp_path, isolated, store) -> None:
    """Batches big enough to run in parts on several threads (pipeline/mlp/parallel.py) give
    the same checkpoint and history with train.threads=1 as with 2."""
    big = ("data.n_samples=8000", "model.hidden_sizes=[256,128]", "train.batch_size=2048",
           "train.epochs=3", "train.checkpoint_every=0")
    assert part_count(2048, (2, 256, 128, 1)) > 1
    runs = [_run(compose_cfg, tmp_path / str(threads), isolated, *big, f"train.threads={threads}")
            for threads in (1, 2)]
    client = MlflowClient(store)
    tags = [client.get_run(r.run_id).data.tags for r in runs]
    assert [t["train_threads"] for t in tags] == ["1", "2"]
    assert tags[0]["checkpoint_sha256"] == tags[1]["checkpoint_sha256"]
    losses = [[m.value for m in client.get_metric_history(r.run_id, "train_loss")] for r in runs]
    assert len(losses[0]) == 3 and losses[0] == losses[1]


PLUGIN = '''
import numpy as np

from pipeline.mlp import register_activation, register_optimizer
from pipeline.mlp.optimizers import SGD


def softsign(z):
    return z / (1.0 + np.abs(z))


def softsign_derivative(z, a):
    return 1.0 / (1.0 + np.abs(z)) ** 2


register_activation("softsign", softsign, softsign_derivative)


class HalfSGD(SGD):
    """Plain gradient descent at half the given rate, with an option of its own."""

    name = "half_sgd"
    defaults = {"factor": 0.5}

    def _step(self, grads):
        return super()._step(grads) * self.options["factor"]


register_optimizer(HalfSGD)
'''


@pytest.mark.slow
def test_a_registered_activation_and_optimizer_are_usable_from_config(tmp_path, store) -> None:
    """pipeline.plugins imports a user's module first: the activation and the optimiser it
    registers are names the config accepts, in the run, in its record and in a rerun."""
    (tmp_path / "my_layers.py").write_text(PLUGIN)
    env = {**__import__("os").environ, "PYTHONPATH": f"{PROJECT_ROOT}:{tmp_path}"}
    common = [f"tracking.uri={store}", f"pipeline.cache_dir={tmp_path / 'cache'}",
              "train.epochs=200", "train.progress=false", "tracking.log_model=false",
              "tracking.plots=false"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "pipeline.plugins=[my_layers]",
         "model.activation=softsign", "optimizer.name=half_sgd", "+optimizer.factor=0.25",
         f"hydra.run.dir={tmp_path / 'out'}", *common],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.activation"] == "softsign" and params["optimizer.name"] == "half_sgd"
    assert params["optimizer.factor"] == "0.25"
    checkpoint = json.loads((tmp_path / "out" / "checkpoints" / "final.json").read_text())
    assert "softsign" in json.dumps(checkpoint)

    # A stored config imports nothing by itself: the plugin is named again.
    rerun = subprocess.run([sys.executable, "-m", "pipeline.commands.rerun", run.info.run_id,
                            f"tracking.uri={store}", "pipeline.plugins=[my_layers]"],
                           capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300, env=env)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]

    # Without the plugin, the same names are refused before any work, in one line.
    refused = subprocess.run(
        [sys.executable, "-m", "pipeline", "model.activation=softsign",
         f"hydra.run.dir={tmp_path / 'out2'}", *common],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("model.activation: got 'softsign'")
    missing = subprocess.run(
        [sys.executable, "-m", "pipeline", "pipeline.plugins=[no_such_module]",
         f"hydra.run.dir={tmp_path / 'out3'}", *common],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "pipeline.plugins: cannot import 'no_such_module'" in missing.stderr
