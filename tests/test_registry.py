"""The Model Registry: make promote, its gate, the promotion lock, serving and comparing by
alias, on a real sqlite store and a real server with PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pipeline.commands import compare as compare_command
from pipeline.commands import promote as promote_command
from pipeline.commands import serve as serve_command
from pipeline.config.paths import PROJECT_ROOT
from pipeline.tracking import registry
from pipeline.tracking.store import open_store
from tests.conftest import FAST
from tests.servers import MlflowServer, free_port, start_postgres
from tests.test_serving import USER_ENV, _stop_group, predict_over_http

NAME = "mlp-pipeline"  # the experiment's name: the default registered name
ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "MLFLOW_DISABLE_TELEMETRY": "true"}


# -- pure parts and the lock -----------------------------------------------------------------
def test_registry_uris_are_parsed_and_everything_else_is_not() -> None:
    assert registry.parse_registry_uri("models:/m@champion") == registry.RegistryRef(
        "m", alias="champion")
    assert registry.parse_registry_uri("models:/my model/3") == registry.RegistryRef(
        "my model", version="3")
    for other in ("models:/m-0123abc", "0123abc", "runs:/x/model", "models:/m@", "models:/m/x"):
        assert registry.parse_registry_uri(other) is None
    assert registry.check_alias("champion") is None
    assert registry.check_alias("latest") and registry.check_alias("v2")
    assert registry.check_name(f"m{registry.LOCK_SUFFIX}")


def test_the_lock_waits_for_a_fresh_holder_and_takes_over_a_stale_one(store: str) -> None:
    client = open_store(store).client
    lock = f"m{registry.LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"acquired_at": f"{time.time():.3f}",
                                               "owner": "other"})
    started = time.monotonic()
    with pytest.raises(registry.LockBusy), registry.promotion_lock(client, "m", wait_s=0.5):
        pass
    assert time.monotonic() - started >= 0.5
    notes: list[str] = []
    client.set_registered_model_tag(lock, "acquired_at", f"{time.time() - 600:.3f}")
    with registry.promotion_lock(client, "m", note=notes.append):
        assert client.get_registered_model(lock).tags["owner"] != "other"
    assert len(notes) == 1 and "taking over the promotion lock of 'm'" in notes[0]
    with pytest.raises(MlflowException):
        client.get_registered_model(lock)  # released


def test_serving_a_lean_sweep_job_says_make_log_model(store: str, capsys) -> None:
    client = open_store(store).client
    run = client.create_run("0", tags={"child_record": "lean", "model_logged": "false"})
    client.set_terminated(run.info.run_id)
    code = serve_command.serve(store, "127.0.0.1", free_port(), run_id=run.info.run_id,
                               model=None)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert "lean sweep job" in lines[0]
    assert f"make log-model RUN_ID={run.info.run_id} STORE={store}" in lines[0]
    assert "tracking.log_model=false" not in lines[0]


# -- a real store: three runs on the same data ---------------------------------------------
@dataclass(frozen=True)
class Runs:
    uri: str
    champion: str  # 30 epochs, trained without a model (promote logs it)
    worse: str  # 5 epochs
    better: str  # 300 epochs


def train(uri: str, tmp: Path, *overrides: str) -> str:
    """One small run through ``python -m pipeline``; its run id."""
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *FAST, f"tracking.uri={uri}", "tracking.plots=false",
         f"pipeline.cache_dir={tmp / 'cache'}",
         "hydra.run.dir=" + str(tmp / "out" / "${now:%H%M%S%f}"),
         *overrides],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return next(line.split()[2] for line in done.stdout.splitlines()
                if line.startswith("MLflow run "))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    tmp = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    return Runs(uri, train(uri, tmp, "train.epochs=30", "tracking.log_model=false"),
                train(uri, tmp, "train.epochs=5"), train(uri, tmp, "train.epochs=300"))


def promote(runs: Runs, run_id: str, *args: str) -> int:
    return promote_command.main([run_id, "--uri", runs.uri, *args])


def holder(uri: str, name: str, alias: str = "champion") -> registry.ModelVersion:
    return MlflowClient(uri).get_model_version_by_alias(name, alias)


@pytest.mark.slow
def test_promote_gate_refuses_a_worse_run_and_a_better_one_moves_the_alias(
        runs: Runs, capsys, tmp_path: Path) -> None:
    client = MlflowClient(runs.uri)
    assert promote(runs, runs.champion) == 0
    first = holder(runs.uri, NAME)
    assert str(first.version) == "1" and first.run_id == runs.champion
    tags = first.tags
    source = client.get_run(runs.champion).data
    assert tags["run_id"] == runs.champion
    assert tags["config_digest"] == source.tags["config_digest"]
    assert tags["data_digest"] == source.tags["data_digest"]
    assert tags["git_commit"] == source.tags["git_commit"]
    assert float(tags["test_accuracy"]) == pytest.approx(source.metrics["test_accuracy"])
    assert "val_log_loss" in tags and "promotion.forced" not in tags
    assert client.get_run(runs.champion).data.tags["model_logged"] == "true"  # logged first
    description = client.get_registered_model(NAME).description
    assert "Amplitude" in description and "classes 0, 1" in description
    capsys.readouterr()

    assert promote(runs, runs.worse) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: make promote: refused, {NAME}@champion stays at "
                             "version 1 (version 2 stays registered without it): worse: "
                             "accuracy on the challenger's 200 test rows"), err
    assert "McNemar p=" in err[0]
    assert str(holder(runs.uri, NAME).version) == "1"
    assert client.get_model_version(NAME, "2").tags["promotion.gate"].startswith("refused")

    assert promote(runs, runs.better, "--metric", "log_loss") == 0
    out = capsys.readouterr().out
    assert f"{NAME}@champion -> version 3: not worse: log_loss" in out
    assert "paired bootstrap p=" in out
    assert holder(runs.uri, NAME).run_id == runs.better
    assert promote(runs, runs.better) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 3

    # make compare takes the alias and a version for their runs
    assert compare_command.main([f"models:/{NAME}@champion", f"models:/{NAME}/1",
                                 "--uri", runs.uri]) == 0
    out = capsys.readouterr().out
    assert f"#1 {runs.better}" in out and f"#2 {runs.champion}" in out

    # served by alias, from another folder, it answers what the run predicted
    local = client.download_artifacts(runs.better, "predictions.csv", str(tmp_path))
    expected = pd.read_csv(local)
    rows = _test_rows(runs, tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline.commands.serve", "--uri", runs.uri,
             "--model", f"models:/{NAME}@champion", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            env={**USER_ENV, "PYTHONPATH": str(PROJECT_ROOT)}, start_new_session=True)
    try:
        served = predict_over_http(server, log, port, rows)
    finally:
        assert _stop_group(server, port)
    assert (f"Serving models:/{NAME}@champion (version 3 of {NAME}, run {runs.better})"
            in log.read_text())
    assert [row["predicted_label"] for row in served] == expected["predicted_label"].tolist()
    np.testing.assert_allclose([row["probability"] for row in served],
                               expected["probability"], rtol=1e-9, atol=1e-12)


def _test_rows(runs: Runs, tmp_path: Path) -> pd.DataFrame:
    from pipeline.run.promotion import test_rows
    from pipeline.tracking.completion import open_run

    return test_rows(open_run(runs.uri, runs.better), tmp_path / "rows").X


@pytest.mark.slow
def test_force_moves_the_alias_to_a_worse_run_and_says_so_on_the_version(
        runs: Runs, capsys) -> None:
    assert promote(runs, runs.better, "--name", "forced") == 0
    assert promote(runs, runs.worse, "--name", "forced", "--force") == 0
    moved = holder(runs.uri, "forced")
    assert moved.run_id == runs.worse
    assert moved.tags["promotion.forced"] == "true"
    assert moved.tags["promotion.gate"].startswith("worse: accuracy")
    assert "(FORCE=1)" in capsys.readouterr().out


def _two_promotions_at_once(uri: str, name: str, first: str, second: str
                            ) -> list[subprocess.CompletedProcess[str]]:
    """Two ``promote`` processes started together, each pausing between reading the alias
    holder and moving the alias: without the lock both would read the same holder."""
    env = {**ENV, promote_command.PAUSE_ENV: "2"}
    processes = [subprocess.Popen(
        [sys.executable, "-m", "pipeline.commands.promote", run_id, "--uri", uri,
         "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=PROJECT_ROOT) for run_id in (first, second)]
    done = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return done


def _check_no_lost_update(uri: str, name: str, expected_run: str) -> None:
    """The final holder is the better run, and whichever promotion ran second compared
    with the version the first one left (not with the version both started from)."""
    client = MlflowClient(uri)
    final = holder(uri, name)
    assert final.run_id == expected_run
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert len(versions) == 3
    other = next(v for k, v in versions.items() if k not in ("1", str(final.version)))
    # final ran second and beat other, or other ran second and was refused against final
    assert (final.tags["promotion.previous"] == str(other.version)
            or other.tags["promotion.previous"] == str(final.version)), (final.tags, other.tags)
    with pytest.raises(MlflowException):
        client.get_registered_model(f"{name}{registry.LOCK_SUFFIX}")


@pytest.mark.slow
def test_two_promotions_at_once_lose_no_update(runs: Runs) -> None:
    assert promote(runs, runs.worse, "--name", "race") == 0
    done = _two_promotions_at_once(runs.uri, "race", runs.champion, runs.better)
    assert all(d.returncode in (0, 1) for d in done), [d.stderr for d in done]
    _check_no_lost_update(runs.uri, "race", runs.better)


# -- a tracking server on PostgreSQL -------------------------------------------------------
@pytest.mark.slow
def test_promotion_on_a_postgresql_server_and_against_a_stopped_one(tmp_path: Path) -> None:
    backend = next(start_postgres_generator := start_postgres(tmp_path))
    try:
        with MlflowServer(backend, tmp_path / "artifacts", tmp_path) as server:
            uri = server.url
            worse = train(uri, tmp_path, "train.epochs=5")
            middle = train(uri, tmp_path, "train.epochs=30")
            better = train(uri, tmp_path, "train.epochs=300")
            assert promote_command.main([worse, "--uri", uri]) == 0
            done = _two_promotions_at_once(uri, NAME, middle, better)
            assert all(d.returncode in (0, 1) for d in done), [d.stderr for d in done]
            _check_no_lost_update(uri, NAME, better)

            server.stop()
            started = time.monotonic()
            failed = subprocess.run(
                [sys.executable, "-m", "pipeline.commands.promote", worse, "--uri", uri,
                 "--force"], capture_output=True, text=True, env=ENV, cwd=PROJECT_ROOT,
                timeout=300)
            took = time.monotonic() - started
            lines = failed.stderr.strip().splitlines()
            assert failed.returncode == 1 and len(lines) == 1, failed.stderr
            assert lines[0].startswith("error: make promote: ") and uri in lines[0]
            assert took < 15  # at once, not after the store's retries
            server.start()
            client = MlflowClient(uri)
            assert len(client.search_model_versions(f"name = '{NAME}'")) == 3
            assert holder(uri, NAME).run_id == better
    finally:
        for _ in start_postgres_generator:
            pass
