"""One way to name the store (tracking.uri=, --uri, STORE=, MLFLOW_TRACKING_URI) and one base
address for every printed UI link (tracking.ui_url, the address `make ui` announced)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import DEFAULT_STORE, PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.errors import PipelineError
from pipeline.tracking.runs import (
    announce_ui,
    announced_ui,
    compare_url,
    experiment_url,
    run_url,
    ui_base,
)
from pipeline.tracking.store import open_store, store_uri
from tests.servers import MlflowServer

TRAINING_VIEW = "?workflowType=machine_learning"
ENV = {k: v for k, v in os.environ.items()
       if k not in ("MLFLOW_TRACKING_URI", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def test_the_environment_variable_names_the_store_unless_one_is_given(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert store_uri(None) == f"sqlite:///{DEFAULT_STORE}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/m.db")
    assert store_uri(None) == "sqlite:////elsewhere/m.db"
    assert store_uri("") == "sqlite:////elsewhere/m.db"
    assert store_uri("http://127.0.0.1:5009") == "http://127.0.0.1:5009"  # explicit wins
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "  ")  # blank: not set
    assert store_uri(None) == f"sqlite:///{DEFAULT_STORE}"


def test_the_tests_never_see_the_users_tracking_uri() -> None:
    # conftest drops it: a developer's `export MLFLOW_TRACKING_URI=...` must not send the
    # tests' runs to their store.
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_rerun_finds_the_run_in_the_store_the_environment_names(tmp_path, monkeypatch,
                                                               capsys) -> None:
    from pipeline.commands import rerun

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    store = open_store(uri)
    run = store.client.create_run(store.client.create_experiment("e"))
    store.client.set_terminated(run.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert rerun.main([run.info.run_id]) == 1
    err = capsys.readouterr().err
    # Found (it has no config to rerun), not "is not in the store <project store>".
    assert "has no config.yaml artifact" in err and "not in the store" not in err, err


def test_rerun_takes_the_store_as_uri_too_and_refuses_two(tmp_path, capsys) -> None:
    from pipeline.commands import rerun

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = open_store(uri).client
    run = client.create_run(client.create_experiment("e"))
    assert rerun.main([run.info.run_id, "--uri", uri]) == 1
    assert "has no config.yaml artifact" in capsys.readouterr().err
    assert rerun.main([run.info.run_id, f"--uri={uri}", f"tracking.uri={uri}"]) == 1
    assert "has no config.yaml artifact" in capsys.readouterr().err  # the same store twice
    other = f"tracking.uri=sqlite:///{tmp_path / 'other.db'}"
    assert rerun.main([run.info.run_id, "--uri", uri, other]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "two stores" in err, err


# -- UI links ----------------------------------------------------------------------------


def test_links_follow_tracking_ui_url_then_the_server_then_make_ui(tmp_path) -> None:
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert ui_base(local) == "http://127.0.0.1:5000"
    announce_ui(local, "127.0.0.1", 5101)
    assert (tmp_path / ".mlflow-ui").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != ".mlflow-ui"]  # no temp file left
    assert announced_ui(local) == "http://127.0.0.1:5101"
    assert run_url(local, "3", "abc") == (
        f"http://127.0.0.1:5101/#/experiments/3/runs/abc{TRAINING_VIEW}")
    assert experiment_url(local, "3").startswith("http://127.0.0.1:5101/#/experiments/3/runs?")
    assert compare_url(local, ["3"], ["a", "b"]).startswith("http://127.0.0.1:5101/#/compare")
    # The server's own address for a server store; an explicit setting above all.
    assert ui_base("http://10.0.0.5:5001/") == "http://10.0.0.5:5001"
    assert ui_base(local, "https://mlflow.example.org/") == "https://mlflow.example.org"
    assert run_url(local, "3", "abc", "http://h:7000").startswith("http://h:7000/#/")
    # A UI on every interface is opened on loopback.
    announce_ui(local, "0.0.0.0", 5102)
    assert ui_base(local) == "http://127.0.0.1:5102"


@pytest.mark.parametrize("text", [
    "javascript:alert(1)", "http://127.0.0.1", "http://127.0.0.1:99999", "ftp://h:21",
    "http://127.0.0.1:5101/x?y#z", "http://127.0.0.1:5101\nhttp://evil:1", "", "\x00" * 10,
    "http://" + "a" * 300 + ":5000", "http://user:pw@h:5000",
])
def test_an_announced_address_that_is_not_host_and_port_is_ignored(tmp_path, text) -> None:
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / ".mlflow-ui").write_text(text)
    assert announced_ui(local) is None
    assert ui_base(local) == "http://127.0.0.1:5000"


def test_an_unreadable_announcement_is_ignored(tmp_path) -> None:
    local = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / ".mlflow-ui").mkdir()  # not a file
    assert ui_base(local) == "http://127.0.0.1:5000"
    (tmp_path / "big").mkdir()
    big = f"sqlite:///{tmp_path / 'big' / 'mlflow.db'}"
    (tmp_path / "big" / ".mlflow-ui").write_text("http://127.0.0.1:5101" + " " * 100_000)
    assert ui_base(big) == "http://127.0.0.1:5000"


def test_tracking_ui_url_is_a_setting_checked_with_the_config(compose_cfg) -> None:
    assert validate(compose_cfg()).tracking.ui_url is None
    config = validate(compose_cfg("tracking.ui_url=http://127.0.0.1:5101"))
    assert config.tracking.ui_url == "http://127.0.0.1:5101"
    assert validate(compose_cfg("tracking.ui_url=https://mlflow.example.org/team")
                    ).tracking.ui_url == "https://mlflow.example.org/team"
    for bad in ("127.0.0.1:5101", "ftp://h:1", "http://", "http://h:5000/?q=1"):
        with pytest.raises(PipelineError, match=r"tracking\.ui_url"):
            validate(compose_cfg(f"tracking.ui_url='{bad}'"))


def test_the_ui_command_announces_its_address_and_prints_a_training_view_link(
        tmp_path, capsys) -> None:
    from pipeline.commands import ui

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ui.prepare(uri, "127.0.0.1", 5101)
    out = capsys.readouterr().out
    assert out.strip() == (f"MLflow UI: http://127.0.0.1:5101/#/experiments{TRAINING_VIEW}"
                           "  (Ctrl-C stops it)"), out
    assert announced_ui(uri) == "http://127.0.0.1:5101"
    assert command[-8:] == ["--backend-store-uri", uri, "--host", "127.0.0.1", "--port",
                            "5101", "--workers", "1"]
    assert MlflowClient(uri).search_experiments()  # the store exists before the UI opens it


def test_the_ui_command_refuses_a_server_store_in_one_line(capsys) -> None:
    from pipeline.commands import ui

    assert ui.main(["--uri", "http://127.0.0.1:5009", "--port", "5101"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "http://127.0.0.1:5009" in err, err


# -- runs through the environment variable -------------------------------------------------


@pytest.mark.slow
def test_a_run_goes_to_the_server_the_environment_names_and_links_to_it(tmp_path) -> None:
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    with MlflowServer(backend, tmp_path / "artifacts", tmp_path) as server:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline", "train.epochs=20", "train.progress=false",
             "tracking.plots=false", "tracking.log_model=false",
             f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}"],
            cwd=tmp_path, env={**ENV, "MLFLOW_TRACKING_URI": server.url},
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        runs = MlflowClient(server.url).search_runs(
            [e.experiment_id for e in MlflowClient(server.url).search_experiments()])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        link = run_url(server.url, runs[0].info.experiment_id, runs[0].info.run_id)
        assert link in done.stdout + done.stderr


@pytest.mark.slow
def test_sync_prints_the_link_of_the_run_it_sent(tmp_path, capsys) -> None:
    from pipeline.commands import sync

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "train.epochs=20", "train.progress=false",
         "tracking.plots=false", "tracking.log_model=false", "tracking.mode=offline",
         f"tracking.uri=sqlite:///{tmp_path / 'never.db'}",
         f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sync.main([str(out), "--uri", uri]) == 0
    printed = capsys.readouterr().out
    run = MlflowClient(uri).search_runs([MlflowClient(uri).search_experiments()[0]
                                         .experiment_id])[0]
    assert run_url(uri, run.info.experiment_id, run.info.run_id) in printed, printed


def test_the_project_root_announcement_is_not_committed() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", str(PROJECT_ROOT / ".mlflow-ui")],
                             cwd=PROJECT_ROOT)
    assert ignored.returncode == 0


def test_a_runs_link_follows_tracking_ui_url(tmp_path) -> None:
    from pipeline.tracking.recorder import start_run

    recorder = start_run(uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="e", run_name="r",
                         output_dir=tmp_path / "out", tags={}, parent_run_id=None,
                         parent_journal_id=None, offline=False, max_points=None,
                         log_model=False, ui_url="http://h:7000")
    try:
        assert recorder.url is not None
        assert recorder.url.startswith("http://h:7000/#/experiments/")
        assert recorder.url.endswith("?workflowType=machine_learning")
    finally:
        recorder.fail("test over")
