"""The served model answers bad input with HTTP 400 and one line naming the column and the
problem, never a traceback (issue 27, point 3): real requests to one ``mlflow models serve``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipeline.commands.serve import serve_command, serving_env
from stages.train import build_model
from tests.servers import free_port, wait_http

FEATURES = ["Frequency", "Amplitude"]


def _checkpoint(folder: Path) -> Path:
    """A small model's checkpoint, with the preprocessor a run stores."""
    path = folder / "final.json"
    build_model(2, 2, hidden_sizes=[4], seed=1).save(path, metadata={
        "normaliser": {"mean": [50.0, 0.0], "std": [25.0, 0.5]},
        "feature_names": FEATURES, "label_name": "Label", "classes": ["0", "1"]})
    return path


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(store URI, model URI) of a model logged as runs log it."""
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.model import log_model, model_uri
    from pipeline.tracking.store import Store

    tmp = tmp_path_factory.mktemp("serving-input")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("serving", artifact_location=str(tmp / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    model_id = log_model(Store(uri, client), experiment, run_id, _checkpoint(tmp), FEATURES,
                         ["0", "1"])
    client.set_terminated(run_id)
    return uri, model_uri(model_id)


@pytest.fixture(scope="module")
def server(logged: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The port of ONE model server for every case below."""
    uri, model = logged
    port = free_port()
    log = tmp_path_factory.mktemp("serving-log") / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen(serve_command(model, "127.0.0.1", port), stdout=out,
                                   stderr=subprocess.STDOUT, env=serving_env(uri),
                                   start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", process, 120, log)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _post(port: int, body: object) -> tuple[int, str]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _split(columns: list[str], rows: list[list[object]]) -> dict[str, object]:
    return {"dataframe_split": {"columns": columns, "data": rows}}


BAD = [
    ("empty", _split(FEATURES, []), ["no rows"]),
    ("null", _split(FEATURES, [[1.0, 2.0], [None, 0.5]]), ["'Frequency'", "row 1", "null"]),
    ("null record", {"dataframe_records": [{"Frequency": 1.0, "Amplitude": None}]},
     ["'Amplitude'", "row 0", "null"]),
    ("string", _split(FEATURES, [[1.0, "abc"]]), ["'Amplitude'", "row 0", "'abc'",
                                                  "not a number"]),
    ("infinite", _split(FEATURES, [[1e400, 2.0]]), ["'Frequency'", "row 0", "inf"]),
    ("missing", _split(["Frequency"], [[1.0]]), ["'Amplitude'", "missing"]),
    ("extra", _split([*FEATURES, "Phase", "Colour"], [[1.0, 2.0, 3.0, 4.0]]),
     ["'Phase'", "'Colour'", "unknown"]),
]


@pytest.mark.slow
def test_bad_input_is_400_with_one_line(server: int) -> None:
    """Every case against the one server: status, one line, the column and the problem."""
    answers = {name: _post(server, body) for name, body, _ in BAD}
    for name, _, words in BAD:
        status, text = answers[name]
        assert status == 400, (name, status, text)
        assert "Traceback" not in text and "stack_trace" not in text, (name, text)
        message = json.loads(text)["message"]
        assert "\n" not in message and len(message) < 300, (name, message)
        assert all(word in message for word in words), (name, message)
    # Good input still predicts: named columns in any order, numbers as JSON numbers.
    status, text = _post(server, _split(FEATURES[::-1], [[0.5, 40.0], [-0.2, 70]]))
    assert status == 200, text
    out = pd.DataFrame(json.loads(text)["predictions"])
    assert list(out.columns) == ["predicted_label", "probability", "probability_0",
                                 "probability_1"] and len(out) == 2


def test_logged_model_has_an_input_example_and_names_its_columns(logged) -> None:
    """Issue 27 point 9: raw rows with the feature names, checked by MLflow at log time."""
    import mlflow

    from pipeline.tracking.model import served_model

    uri, model = logged
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(model)
    assert info.saved_input_example_info is not None
    assert info.signature.inputs is None  # the model checks its input itself
    example = mlflow.models.Model.load(model).load_input_example()
    assert list(example.columns) == FEATURES and len(example) == 3
    assert example.iloc[0].tolist() == [50.0, 0.0]  # the mean: raw values, not normalised
    assert served_model(uri, model=model)[1] == FEATURES  # make serve's curl example
