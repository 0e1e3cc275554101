"""Using the model: ``make serve`` over HTTP, ``mlflow.pyfunc.load_model`` from any folder,
label types, the end-of-run summary, and servers that refuse a taken port in one line."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.commands.serve import main as serve_main
from pipeline.commands.serve import port_message, port_problem, serving_env
from pipeline.config.paths import PROJECT_ROOT
from pipeline.run.datastore import read_dataset
from pipeline.run.runner import RunResult, format_summary
from pipeline.tracking.labels import class_labels, integer_classes
from stages.train import build_model
from tests.conftest import FAST
from tests.servers import free_port, wait_http

VENV_BIN = str(Path(sys.executable).parent)
# What a new user's shell has: no venv on the PATH, no tracking URI.
# A user's shell: no store or venv of ours, and none of the variables an outer `make test`
# (e.g. `make test ARGS=-x`) hands its sub-makes.
USER_ENV = {key: value for key, value in os.environ.items()
            if key not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV", "MAKEFLAGS", "MAKELEVEL",
                           "MFLAGS", "ARGS")}
USER_ENV["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                   if p and p != VENV_BIN)
USER_ENV["MLFLOW_DISABLE_TELEMETRY"] = "true"


@contextlib.contextmanager
def _listening(host: str = "127.0.0.1") -> Iterator[int]:
    """A port something listens on, for as long as the block runs."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def predict_over_http(server: subprocess.Popen, log: Path, port: int,
                      raw: pd.DataFrame) -> list[dict]:
    """Once ``server`` (its output in ``log``) answers /ping on 127.0.0.1:``port``, the
    predictions it gives for the rows of ``raw``, sent as a dataframe_split."""
    wait_http(f"http://127.0.0.1:{port}/ping", server, 120, log)
    body = {"dataframe_split": {"columns": list(raw.columns), "data": raw.to_numpy().tolist()}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())["predictions"]


def _make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    stamp = PROJECT_ROOT / ".venv" / ".installed"
    fresh = subprocess.run(["make", "-q", "-C", str(PROJECT_ROOT), str(stamp)],
                           capture_output=True)
    if fresh.returncode != 0:  # `make` would reinstall the venv first: `make test` does that
        pytest.skip(".venv is older than pyproject.toml / requirements.lock: run make venv")
    return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), *args],
                          capture_output=True, text=True, env=USER_ENV, timeout=timeout)


def _own_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What the target printed, without make's own ``make: *** [...] Error N`` line
    (``make[1]: ***`` when the tests themselves run under make)."""
    return [line for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not re.match(r"make(\[\d+\])?: \*\*\*", line)]


# -- ports ---------------------------------------------------------------------------------
def test_port_check_names_a_taken_port_and_a_free_one() -> None:
    with _listening() as port:
        assert port_problem("127.0.0.1", port) == f"127.0.0.1:{port} is already in use"
        assert port_problem("0.0.0.0", port) is not None  # the wildcard covers it
        message = port_message("127.0.0.1", port, target="make ui", variable="PORT")
        assert message is not None and "\n" not in message
        assert message.startswith(f"error: make ui: 127.0.0.1:{port} is already in use")
        suggested = int(message.rsplit("make ui PORT=", 1)[1])
        assert suggested > port and port_problem("127.0.0.1", suggested) is None
    assert port_problem("127.0.0.1", free_port()) is None
    assert port_problem("192.0.2.1", free_port()) == "192.0.2.1 is not an address of this machine"


def test_check_port_command_exits_1_with_one_line(capsys) -> None:
    with _listening() as port:
        code = serve_main(["--check-port", "127.0.0.1", str(port), "--target", "make server",
                           "--variable", "SERVER_PORT"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1 and "make server SERVER_PORT=" in err
    assert serve_main(["--check-port", "127.0.0.1", str(free_port())]) == 0


@pytest.mark.parametrize("target, variable", [("ui", "PORT"), ("server", "SERVER_PORT"),
                                              ("serve", "PORT")])
def test_make_targets_refuse_a_taken_port(tmp_path: Path, target: str, variable: str) -> None:
    """One line, non-zero exit, and nothing started or created (no store, no server)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with _listening() as port:
        started = time.monotonic()
        extra = {"ui": [f"STORE={store}"], "server": [f"BACKEND={store}"],
                 "serve": [f"STORE={store}", "RUN_ID=0123456789abcdef"]}[target]
        done = _make(target, "HOST=127.0.0.1", f"{variable}={port}", *extra, timeout=60)
        elapsed = time.monotonic() - started
    lines = _own_lines(done)
    assert done.returncode != 0, done.stdout + done.stderr
    assert lines == [lines[0]] and lines[0].startswith(f"error: make {target}: 127.0.0.1:{port} "
                                                       "is already in use"), lines
    assert f"make {target} {variable}=" in lines[0]
    assert "Traceback" not in done.stderr and not (tmp_path / "mlflow.db").exists()
    assert elapsed < 30  # refused before any server starts


def test_make_serve_without_a_model_says_how() -> None:
    done = _make("serve", f"PORT={free_port()}", timeout=60)
    assert done.returncode != 0
    assert _own_lines(done) == ["error: make serve: name the model to serve: make serve "
                                "RUN_ID=<run id> (or MODEL=models:/<model id>, "
                                "MODEL=models:/<name>@champion)"]


def test_serving_env_puts_the_venv_first_and_names_the_store(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = serving_env("sqlite:////abs/mlflow.db")
    assert env["PATH"].split(os.pathsep)[0] == VENV_BIN
    assert (Path(env["PATH"].split(os.pathsep)[0]) / "uvicorn").exists()
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:////abs/mlflow.db"


def test_tracking_server_config_follows_the_server_address(compose_cfg, monkeypatch) -> None:
    from pipeline.config.schema import validate

    monkeypatch.delenv("SERVER_HOST", raising=False)
    monkeypatch.delenv("SERVER_PORT", raising=False)
    assert validate(compose_cfg("tracking=server")).tracking.uri == "http://127.0.0.1:5001"
    monkeypatch.setenv("SERVER_PORT", "5013")
    monkeypatch.setenv("SERVER_HOST", "10.1.2.3")
    assert validate(compose_cfg("tracking=server")).tracking.uri == "http://10.1.2.3:5013"


# -- labels --------------------------------------------------------------------------------
def test_class_labels_keep_the_labels_type() -> None:
    assert class_labels(["0", "1"]) == [0, 1] and integer_classes(["-1", "0", "12"])
    assert class_labels(["no", "yes"]) == ["no", "yes"]
    assert class_labels(["1", "yes"]) == ["1", "yes"]  # mixed: text
    assert class_labels(["01", "1"]) == ["01", "1"]  # not how the loader writes integers
    assert class_labels(["1.0", "2.0"]) == ["1.0", "2.0"]


def _pyfunc(tmp_path: Path, classes: list[str]):
    """The pyfunc model's class over a fresh checkpoint with ``classes`` in its metadata (as
    any checkpoint, old or new, stores them)."""
    from pipeline.tracking.pyfunc_model import MLPClassifierModel

    model = build_model(2, len(classes), hidden_sizes=[4], seed=1)
    path = tmp_path / "final.json"
    model.save(path, metadata={"normaliser": {"mean": [0.0, 0.0], "std": [1.0, 1.0]},
                               "feature_names": ["a", "b"], "label_name": "y",
                               "classes": classes})
    pyfunc = MLPClassifierModel()
    pyfunc.load_context(SimpleNamespace(artifacts={"checkpoint": str(path)}))
    frame = pd.DataFrame({"a": [0.0, 1.0, -2.0], "b": [1.0, -1.0, 3.0]})
    return pyfunc.predict(None, frame)


@pytest.mark.parametrize("classes, kind", [(["0", "1"], "i"), (["no", "yes"], "text"),
                                           (["setosa", "versicolor", "virginica"], "text"),
                                           (["3", "5", "7"], "i")])
def test_predicted_label_has_the_labels_type(tmp_path: Path, classes: list[str],
                                             kind: str) -> None:
    out = _pyfunc(tmp_path, classes)
    labels = out["predicted_label"]
    if kind == "i":
        assert labels.dtype.kind == "i" and set(labels) <= {int(c) for c in classes}
    else:
        assert labels.dtype.kind != "i" and set(labels) <= set(classes)
    assert list(out.columns)[-len(classes):] == [f"probability_{c}" for c in classes]


# -- the summary ---------------------------------------------------------------------------
def test_summary_prints_the_model_uri() -> None:
    from pipeline.config.paths import DEFAULT_STORE

    base = {"run_id": "r1", "experiment_id": "1", "url": "http://127.0.0.1:5000/#/x",
            "metrics": {"test_accuracy": 1.0}}
    local = format_summary(RunResult(**base, model_id="m-abc",
                                     store_uri=f"sqlite:///{DEFAULT_STORE}"))
    assert "  model: models:/m-abc" in local.splitlines()
    assert "  serve it: make serve MODEL=models:/m-abc" in local.splitlines()
    served = format_summary(RunResult(**base, model_id="m-abc",
                                      store_uri="http://127.0.0.1:5001"))
    assert "  serve it: make serve MODEL=models:/m-abc STORE=http://127.0.0.1:5001" in served
    # A server is its own UI; a local store needs make ui first.
    assert "  open it: http://127.0.0.1:5000/#/x" in served.splitlines()
    assert "  open it: make ui, then http://127.0.0.1:5000/#/x" in local.splitlines()
    assert "models:/" not in format_summary(RunResult(**base))  # no model logged


# -- a real run, served --------------------------------------------------------------------
@dataclass(frozen=True)
class Trained:
    uri: str
    db: Path
    run_id: str
    model_id: str
    output_dir: Path
    stdout: str


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One small run (0/1 labels) in a fresh sqlite store, through ``python -m pipeline``."""
    tmp = tmp_path_factory.mktemp("serving")
    db = tmp / "mlflow.db"
    uri = f"sqlite:///{db}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *FAST, f"tracking.uri={uri}", "tracking.plots=false",
         f"pipeline.cache_dir={tmp / 'cache'}", f"hydra.run.dir={tmp / 'out'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=600,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run_id = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id]
                                )[0].info.run_id
    model_id = client.get_run(run_id).outputs.model_outputs[0].model_id
    return Trained(uri, db, run_id, model_id, tmp / "out", done.stdout)


def _predictions_csv(trained: Trained, into: Path) -> pd.DataFrame:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained.uri)
    assert "predictions.csv" in {a.path for a in client.list_artifacts(trained.run_id)}
    local = client.download_artifacts(trained.run_id, "predictions.csv", str(into))
    return pd.read_csv(local)


def _raw_test_split(trained: Trained) -> pd.DataFrame:
    """The test split's raw (un-normalised) feature columns, in predictions.csv's order."""
    test = read_dataset(trained.output_dir / "data" / "02_split" / "test.parquet")
    return pd.DataFrame(np.array(test.X), columns=list(test.feature_names))


def _stop_group(process: subprocess.Popen[str], port: int) -> bool:
    """SIGTERM to the server's process group (make, mlflow, uvicorn), SIGKILL after 20 s;
    True once no process of the group is left and the port is free."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            if port_problem("127.0.0.1", port) is None:
                return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return False


@pytest.mark.slow
def test_summary_of_a_real_run_names_its_model(trained: Trained) -> None:
    assert f"  model: models:/{trained.model_id}" in trained.stdout.splitlines()


@pytest.mark.slow
def test_make_serve_answers_what_the_run_predicted(trained: Trained, tmp_path: Path) -> None:
    expected = _predictions_csv(trained, tmp_path)
    raw = _raw_test_split(trained)
    assert len(raw) == len(expected) == 200
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            ["make", "-s", "--no-print-directory", "-C", str(PROJECT_ROOT), "serve",
             f"RUN_ID={trained.run_id}", f"STORE={trained.uri}", "HOST=127.0.0.1",
             f"PORT={port}"],
            stdout=out, stderr=subprocess.STDOUT, text=True, env=USER_ENV, cwd=tmp_path,
            start_new_session=True)
    gone = False
    try:
        served = predict_over_http(server, log, port, raw)
    finally:
        gone = _stop_group(server, port)
    assert gone, "the model server outlived its process group's SIGTERM"
    banner = log.read_text()
    assert f"Serving models:/{trained.model_id} (run {trained.run_id})" in banner
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()

    labels = [row["predicted_label"] for row in served]
    assert all(type(label) is int for label in labels)  # 0/1, not "0"/"1"
    assert labels == expected["predicted_label"].tolist()
    np.testing.assert_allclose([row["probability"] for row in served],
                               expected["probability"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([row["probability_1"] for row in served],
                               expected["probability"], rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_make_serve_a_run_without_a_model_is_one_line(trained: Trained) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained.uri)
    experiment = client.get_experiment_by_name("mlp-pipeline").experiment_id
    empty = client.create_run(experiment).info.run_id
    client.set_terminated(empty)
    done = _make("serve", f"RUN_ID={empty}", f"STORE={trained.uri}", f"PORT={free_port()}")
    assert done.returncode != 0
    lines = _own_lines(done)
    assert len(lines) == 1 and lines[0].startswith(f"error: make serve: RUN_ID={empty}: the "
                                                   "run (FINISHED) has no logged model"), lines


@pytest.mark.slow
def test_load_model_in_process_gives_integer_labels(trained: Trained, tmp_path: Path,
                                                    monkeypatch) -> None:
    import mlflow

    monkeypatch.setattr(sys, "path", list(sys.path))  # load_model adds the model's code
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(trained.uri)
    try:
        model = mlflow.pyfunc.load_model(f"models:/{trained.model_id}")
    finally:
        mlflow.set_tracking_uri(previous)
    out = model.predict(_raw_test_split(trained))
    assert out["predicted_label"].dtype.kind == "i"
    assert out["predicted_label"].tolist() == _predictions_csv(trained, tmp_path)[
        "predicted_label"].tolist()


@pytest.mark.slow
def test_load_model_from_any_folder_with_the_tracking_uri(trained: Trained,
                                                          tmp_path: Path) -> None:
    """The README's snippet, in a fresh interpreter, from a folder outside the project."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    snippet = textwrap.dedent(f"""
        import mlflow
        import pandas as pd

        mlflow.set_tracking_uri("sqlite:///{trained.db}")
        model = mlflow.pyfunc.load_model("models:/{trained.model_id}")
        out = model.predict(pd.DataFrame({{"Frequency": [1.0, 5.0], "Amplitude": [2.0, 0.1]}}))
        print(out["predicted_label"].dtype.kind, out["predicted_label"].tolist())
    """)
    env = {k: v for k, v in USER_ENV.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                          cwd=folder, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    kind, labels = done.stdout.strip().split(" ", 1)
    assert kind == "i" and set(json.loads(labels)) <= {0, 1}
    assert sorted(p.name for p in folder.iterdir()) == []  # no stray mlflow.db or mlruns/


@pytest.mark.slow
def test_the_model_pins_the_installed_packages(trained: Trained, tmp_path: Path) -> None:
    """The logged model's requirements are this environment's own versions: why the run skips
    MLflow's slow check of them against the environment (pipeline.tracking.model)."""
    from importlib.metadata import version

    import mlflow

    mlflow.set_tracking_uri(trained.uri)
    path = mlflow.pyfunc.get_model_dependencies(f"models:/{trained.model_id}")
    pins = [line for line in Path(path).read_text().splitlines() if line.strip()]
    assert {pin.split("==")[0] for pin in pins} == {"mlflow", "numpy", "pandas", "pyarrow"}
    for pin in pins:
        name, _, pinned = pin.partition("==")
        assert pinned == version(name), pin


def test_only_the_models_own_pins_skip_mlflows_check(monkeypatch) -> None:
    """Any other requirement list still goes through MLflow's check of the environment."""
    import mlflow.utils.environment as mlflow_environment

    from pipeline.tracking import model

    checked: list[list[str]] = []
    monkeypatch.setattr(mlflow_environment, "warn_dependency_requirement_mismatches",
                        checked.append)
    model._trust_own_pins()
    mlflow_environment.warn_dependency_requirement_mismatches(model._requirements())
    assert checked == []
    mlflow_environment.warn_dependency_requirement_mismatches(["numpy==0.0.1"])
    assert checked == [["numpy==0.0.1"]]
