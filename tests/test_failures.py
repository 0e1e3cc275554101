"""Bad input and faults: one clear line, exit != 0, and a consistent record in MLflow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.mlp import MLP
from pipeline.tracking.journal import read_journal
from pipeline.tracking.record import LIVE_WITHIN_S

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
QUICK = ["train.epochs=50", "train.progress=false", "tracking.plots=false",
         "tracking.log_model=false"]

GOOD_ROWS = "".join(f"{i % 7},{(i * 3) % 5},{i % 2}\n" for i in range(40))
CSV_CASES = {
    # name: (file bytes or None for a missing file, extra overrides, message fragment)
    "missing": (None, [], "does not exist"),
    "empty": (b"", [], "empty"),
    "header_only": (b"a,b,label\n", [], "no data rows"),
    "too_few_fields": (b"a,b,label\n1,2,0\n3,1\n4,5,1\n", [], "line 3"),
    "too_many_fields": (b"a,b,label\n1,2,0\n3,1,1,9\n4,5,1\n", [], "line 3"),
    "non_numeric": (b"a,b,label\n1,2,0\n3,x7,1\n4,5,1\n" + GOOD_ROWS.encode(), [], "'b'"),
    "missing_values": (b"a,b,label\n1,,0\n3,NaN,1\n" + GOOD_ROWS.encode(), [], "data.drop_na"),
    "infinities": (b"a,b,label\n1,inf,0\n" + GOOD_ROWS.encode(), [], "data.drop_na"),
    "no_label_column": (b"a,b,label\n" + GOOD_ROWS.encode(), ["data.label_column=target"],
                        "'target'"),
    "continuous_labels": (b"a,b,y\n" + "".join(f"{i},{i % 3},{i / 7:.3f}\n" for i in range(40))
                          .encode(), [], "continuous"),
    "single_class": (b"a,b,label\n" + "".join(f"{i},{i % 3},1\n" for i in range(40)).encode(),
                     [], "single class"),
    "too_few_rows": (b"a,b,label\n1,2,0\n3,4,1\n", [], "too few"),
    "binary_file": (bytes(range(256)) * 4, [], "not a text"),
    "ambiguous_delimiter": (b"1,5;2\n3,1;4\n", [], "data.delimiter"),
}
# Found in the file's first rows, before any run started (pipeline.run.data.check_input_file):
# these leave no run at all; the others end their run FAILED.
BEFORE_ANY_RUN = {"missing", "empty", "header_only", "non_numeric", "no_label_column",
                  "binary_file", "ambiguous_delimiter"}


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=timeout, env=ENV)


def only_run(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("mlp-pipeline")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    assert len(runs) == 1, [r.info.status for r in runs]
    return runs[0]


def assert_user_error(done: subprocess.CompletedProcess, fragment: str) -> str:
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    # The one line alone: none of Hydra's framing around it.
    assert "Error executing job" not in done.stderr, done.stderr[-2000:]
    assert "HYDRA_FULL_ERROR" not in done.stderr, done.stderr[-2000:]
    message = [line for line in done.stderr.splitlines() if line][-1]
    assert fragment.lower() in message.lower(), done.stderr[-2000:]
    return message


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_bad_csv(tmp_path, store, case) -> None:
    content, extra, fragment = CSV_CASES[case]
    path = tmp_path / "data.csv"
    if content is not None:
        path.write_bytes(content)
    done = cli("data=csv", f"data.path={path}", *extra, f"tracking.uri={store}", *QUICK,
               f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    message = assert_user_error(done, fragment)
    if case in BEFORE_ANY_RUN:
        assert not Path(store.removeprefix("sqlite:///")).exists()  # not even the store
        return
    run = only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == message
    assert "checkpoint_sha256" not in run.data.tags  # nothing claims success


def test_yes_no_labels_and_semicolons_work(tmp_path, store) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a;b;answer\n" + "".join(
        f"{i % 7};{(i * 3) % 5};{'yes' if i % 2 else 'no'}\n" for i in range(60)))
    done = cli("data=csv", f"data.path={path}", f"tracking.uri={store}", *QUICK,
               f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    assert done.returncode == 0, done.stderr[-2000:]
    run = only_run(store)
    assert run.info.status == "FINISHED"
    checkpoint = MLP.load(tmp_path / "out" / "checkpoints" / "final.json")
    assert checkpoint.metadata["classes"] == ["no", "yes"]


def test_drop_na_drops_and_records(tmp_path, store) -> None:
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,,0\n2,inf,1\n" + GOOD_ROWS)
    done = cli("data=csv", f"data.path={path}", "data.drop_na=true", f"tracking.uri={store}",
               *QUICK, f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert only_run(store).data.tags["data.dropped_rows"] == "2"


@pytest.mark.parametrize(
    ("override", "fragment"),
    [("train.epochs=ten", "train.epochs"), ("model.hidden_size=[3]", "hidden_size"),
     ("optimizer.lr=0", "optimizer.lr"), ("optimizer=adagrad", "adagrad")],
)
def test_bad_config_fails_before_any_run(tmp_path, store, override, fragment) -> None:
    done = cli(override, f"tracking.uri={store}", f"hydra.run.dir={tmp_path / 'out'}")
    assert fragment in assert_user_error(done, fragment)
    assert not Path(store.removeprefix("sqlite:///")).exists()


def _checkpoint_cases(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = MLP([2, 12, 1], seed=0).to_dict()
    cases = {}

    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.json"
        path.write_text(text)
        return path

    full = json.dumps(good)
    cases["truncated"] = (write("truncated", full[: len(full) // 2]), "truncated.json")
    cases["corrupt"] = (write("corrupt", "{not json"), "corrupt.json")
    cases["wrong_version"] = (write("wrong_version", json.dumps({**good, "format_version": 99})),
                              "format_version")
    bad_shape = json.loads(full)
    bad_shape["parameters"]["weights"][0] = [[0.1] * 12]
    cases["shape"] = (write("shape", json.dumps(bad_shape)), "shape.json")
    wrong_net = MLP([5, 4, 1], seed=0)
    cases["wrong_features"] = (tmp_path / "five.json", "features")
    wrong_net.save(cases["wrong_features"][0])
    return cases


@pytest.mark.parametrize("case", ["truncated", "corrupt", "wrong_version", "shape",
                                  "wrong_features"])
def test_bad_checkpoint_to_resume_from(tmp_path, store, case) -> None:
    path, fragment = _checkpoint_cases(tmp_path)[case]
    done = cli(f"train.resume_from={path}", f"tracking.uri={store}", *QUICK,
               f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    message = assert_user_error(done, fragment)
    run = only_run(store)
    assert run.info.status == "FAILED" and run.data.tags["error"] == message


def test_divergence_fails_the_run_and_keeps_the_last_checkpoint(tmp_path, store) -> None:
    # No validation split: its loss is NaN right after epoch 1's update, before any checkpoint.
    done = cli("optimizer.lr=1e300", "train.clip=none", "model.init=he", "train.epochs=400",
               "split.val_fraction=0",
               "train.checkpoint_every=1", "model.hidden_sizes=[64,64]", f"tracking.uri={store}",
               "train.progress=false", "tracking.plots=false", "tracking.log_model=false",
               f"hydra.run.dir={tmp_path / 'out'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    message = assert_user_error(done, "epoch")
    run = only_run(store)
    assert run.info.status == "FAILED" and run.data.tags["error"] == message
    saved = sorted((tmp_path / "out" / "checkpoints").glob("epoch_*.json"))
    assert saved, "the checkpoints before the divergence are kept"
    MLP.load(saved[-1])  # complete and finite


def test_unreachable_server_fails_fast(tmp_path) -> None:
    start = time.monotonic()
    done = cli("tracking.uri=http://127.0.0.1:9", f"hydra.run.dir={tmp_path / 'out'}")
    message = assert_user_error(done, "http://127.0.0.1:9")
    assert "tracking.uri" in message
    assert time.monotonic() - start < 60
    assert not (tmp_path / "out" / "data").exists()  # no stage ran


def test_unwritable_output_dir(tmp_path, store) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = cli(f"hydra.run.dir={blocker / 'out'}", f"tracking.uri={store}")
    assert_user_error(done, "hydra.run.dir")
    done = cli(f"pipeline.cache_dir={blocker / 'cache'}", f"tracking.uri={store}", *QUICK,
               f"hydra.run.dir={tmp_path / 'out'}")
    message = assert_user_error(done, "writable")
    assert only_run(store).data.tags["error"] == message


def _start_training(tmp_path: Path, store: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", f"tracking.uri={store}", "train.epochs=2000000",
         "train.checkpoint_every=2000", "train.progress=false", "tracking.plots=false",
         "tracking.log_model=false", f"hydra.run.dir={tmp_path / 'out'}",
         f"pipeline.cache_dir={tmp_path / 'c'}"],
        cwd=PROJECT_ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_for_checkpoints(tmp_path: Path, process: subprocess.Popen, count: int) -> None:
    deadline = time.monotonic() + 120
    folder = tmp_path / "out" / "checkpoints"
    while time.monotonic() < deadline:
        if len(list(folder.glob("epoch_*.json"))) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_training_ends_the_run_killed(tmp_path, store, sig, code) -> None:
    process = _start_training(tmp_path, store)
    try:
        _wait_for_checkpoints(tmp_path, process, 2)
        sent = time.monotonic()
        process.send_signal(sig)
        process.wait(timeout=60)
        stopped_after = time.monotonic() - sent
    finally:
        process.kill()
    _, stderr = process.communicate()
    assert process.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr
    assert stopped_after < 5, stopped_after
    run = only_run(store)
    assert run.info.status == "KILLED"
    # The journal holds every epoch up to the interrupt, and says how the run ended.
    journal = read_journal(tmp_path / "out" / "journal.jsonl")
    steps = journal.epochs()[1][:, 0].astype(int).tolist()
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 4000
    assert journal.ended is not None and journal.ended["status"] == "KILLED"
    # The store: the thinned points (2,000,000 planned epochs -> a stride of 401), the last
    # epoch, and every epoch in history.csv.
    client = MlflowClient(store)
    history = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
    assert history[0] == 1 and history[-1] == steps[-1] and history[1] - history[0] == 401
    local = Path(client.download_artifacts(run.info.run_id, "history.csv", str(tmp_path)))
    assert pd.read_csv(local)["epoch"].tolist() == steps
    newest = max((tmp_path / "out" / "checkpoints").glob("epoch_*.json"))
    assert MLP.load(newest).epoch >= 4000
    assert not list((tmp_path / "out" / "checkpoints").glob(".*tmp"))


def test_sigkill_leaves_running_until_clean_runs(tmp_path, store) -> None:
    process = _start_training(tmp_path, store)
    try:
        _wait_for_checkpoints(tmp_path, process, 1)
        process.kill()
        process.wait(timeout=30)
    finally:
        process.kill()
    assert only_run(store).info.status == "RUNNING"
    fresh = subprocess.run([sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", store],
                           capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV)
    assert "0 stale run(s)" in fresh.stdout  # its heartbeat is recent: left alone
    # The dead process beats no more: let its last beat be older than any live run's.
    run_id = only_run(store).info.run_id
    beat = int(only_run(store).data.tags["pipeline.heartbeat"])
    MlflowClient(store).set_tag(run_id, "pipeline.heartbeat", str(beat - LIVE_WITHIN_S - 1))
    done = subprocess.run([sys.executable, "-m", "pipeline.commands.clean_runs", "--uri", store,
                           "--max-age-minutes", "0"], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=ENV)
    assert done.returncode == 0 and "1 stale run(s) marked KILLED" in done.stdout
    run = only_run(store)
    assert run.info.status == "KILLED" and "heartbeat" in run.data.tags["error"]


def test_a_sweep_job_with_a_config_error_is_a_failed_child(tmp_path, store) -> None:
    """The job whose config is invalid fails alone, as one line, and the sweep counts it."""
    done = cli("-m", "optimizer.lr=0.02,-1", f"tracking.uri={store}", *QUICK,
               f"hydra.sweep.dir={tmp_path / 'sweep'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("optimizer.lr"))
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    parent = next(r for r in runs if r.data.tags.get("sweep") == "parent")
    children = {r.data.tags.get("overrides", r.data.params.get("optimizer.lr")): r
                for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert len(children) == 2
    failed = [r for r in children.values() if r.info.status == "FAILED"]
    assert len(failed) == 1 and failed[0].data.tags["error"] == line
    assert "optimizer.lr=-1" in failed[0].data.tags["overrides"]
    assert parent.info.status == "FAILED"
    assert parent.data.tags["n_failed"] == "1" and parent.data.tags["error"] == "1 job(s) failed"


def test_impossible_model_and_names_fail_before_any_run(tmp_path, store) -> None:
    done = cli("model.hidden_sizes=[100000,100000]", f"tracking.uri={store}",
               f"hydra.run.dir={tmp_path / 'out'}")
    assert "GiB" in assert_user_error(done, "model.hidden_sizes")
    done = cli(f"tracking.experiment={'x' * 600}", f"tracking.uri={store}",
               f"hydra.run.dir={tmp_path / 'out'}")
    assert "600 characters" in assert_user_error(done, "tracking.experiment")
    assert not Path(store.removeprefix("sqlite:///")).exists()
