"""Untrusted files are checked before they are used: a checkpoint's declared shapes against
its size and the memory budget (before any allocation), its types; a resumed checkpoint's
architecture against the config; a rerun's stored config for interpolations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.errors import PipelineError
from pipeline.mlp import MLP, CheckpointError, checkpoint
from pipeline.run.runner import _architecture_mismatch
from pipeline.run.stored_config import load_stored_config
from stages.train import Architecture, plan_architecture

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
QUICK = ["train.epochs=50", "train.checkpoint_every=25", "train.progress=false",
         "tracking.plots=false", "tracking.log_model=false"]
HUGE = [2, 20000, 20000, 1]  # 400,100,001 parameters: 3.2 GB as float64


def lying_checkpoint(path: Path, layer_sizes: list[int], size: int = 2048) -> Path:
    """A real checkpoint of a 2-3-1 net whose architecture claims ``layer_sizes`` (with one
    activation per hidden layer, so only the sizes lie), padded to ``size`` bytes."""
    content = MLP([2, 3, 1], seed=0).to_dict()
    content["architecture"]["layer_sizes"] = layer_sizes
    content["architecture"]["activations"] = ["relu"] * (len(layer_sizes) - 2)
    text = json.dumps(content)
    path.write_text(text + " " * (size - len(text)))
    assert path.stat().st_size == size
    return path


def one_line(error: BaseException, *fragments: str) -> str:
    message = str(error)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- checkpoint: declared size against the file and the memory budget ------------------------

MEASURE = """
import json, resource, sys, time
from pipeline.mlp import MLP, CheckpointError
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
start = time.perf_counter()
try:
    MLP.load(sys.argv[1])
    message = None
except CheckpointError as error:
    message = str(error)
seconds = time.perf_counter() - start
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before
print(json.dumps({"message": message, "seconds": seconds, "grew_mb": grew / 1e6}))
"""


def test_a_2kb_checkpoint_claiming_a_huge_net_is_refused_fast_and_small(tmp_path) -> None:
    """Before: MLP() allocated the claimed 400M parameters (over 6.3 GB) before the shapes
    were compared. Now the claim is checked against the file's 2,048 bytes first."""
    path = lying_checkpoint(tmp_path / "lying.json", HUGE)
    done = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.splitlines()[-1])
    message = measured["message"]
    assert message == (
        f"cannot load checkpoint {str(path)!r}: layer_sizes [2, 20000, 20000, 1] declares "
        "400,100,001 parameters, but a file of 2,048 bytes holds at most 1,024 numbers; it is "
        "truncated or its architecture is false")
    assert measured["seconds"] < 0.5, measured
    assert measured["grew_mb"] < 20, measured  # the claim needs 3,200 MB


def test_a_claim_over_the_memory_budget_is_refused_before_allocating() -> None:
    """from_dict has no file to measure: the budget alone bounds what the claim may cost."""
    content = MLP([2, 3, 1], seed=0).to_dict()
    content["architecture"]["layer_sizes"] = [2, 1000, 1]  # 4,001 parameters
    with pytest.raises(CheckpointError) as info:
        MLP.from_dict(content)  # within the default budget: the shapes then disagree
    one_line(info.value, "parameters.weights[0] has shape (2, 3)")
    with pytest.raises(CheckpointError) as info:
        checkpoint.from_dict(content, MLP, "claim.json", memory_budget=100_000)
    one_line(info.value, "'claim.json'", "layer_sizes [2, 1000, 1] declares 4,001 parameters",
             "which need 128.0 KB to load, over the memory budget of 100.0 KB")


def test_the_memory_budget_is_a_quarter_of_physical_memory() -> None:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert checkpoint.default_memory_budget() == int(physical * 0.25)


def test_a_file_too_large_to_parse_is_not_read(tmp_path) -> None:
    """A (sparse) file one byte over the limit the budget sets: refused from its size alone."""
    import tracemalloc

    limit = checkpoint.default_memory_budget() // checkpoint.JSON_EXPANSION
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(limit + 1)  # no disk blocks, no bytes to read
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CheckpointError) as info:
            MLP.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5
    assert peak < 1_000_000, peak
    one_line(info.value, str(path), "over the", "a checkpoint may be",
             "it is not a checkpoint this machine can load")


def test_the_file_limit_follows_the_budget(tmp_path) -> None:
    path = tmp_path / "model.json"
    MLP([2, 3, 1], seed=0).save(path)
    size = path.stat().st_size
    fits = size * checkpoint.JSON_EXPANSION
    assert checkpoint.load(path, MLP, memory_budget=fits).layer_sizes == (2, 3, 1)
    with pytest.raises(CheckpointError, match=f"the file is {size:,} bytes, over the "
                                              f"{size - 1:,} bytes a checkpoint may be"):
        checkpoint.load(path, MLP, memory_budget=fits - checkpoint.JSON_EXPANSION)


@pytest.mark.parametrize("kind", ["device", "fifo"])
def test_pipes_and_devices_are_refused_without_reading(tmp_path, kind) -> None:
    """/dev/zero never ends and a named pipe blocks: neither is read."""
    if kind == "device":
        path = Path("/dev/zero")
        if not path.exists():
            pytest.skip("no /dev/zero")
    else:
        if not hasattr(os, "mkfifo"):
            pytest.skip("no named pipes")
        path = tmp_path / "pipe.json"
        os.mkfifo(path)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            MLP.load(path)
        except BaseException as error:
            outcome.append(error)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), f"loading {path} blocked"
    assert isinstance(outcome[0], CheckpointError)
    one_line(outcome[0], str(path), "not a regular file")


# ---- checkpoint: types -----------------------------------------------------------------------

def _with(key: str, value: object):
    def edit(content: dict) -> None:
        target = content
        *parents, last = key.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
    return edit


BAD_TYPES = {
    "sizes a bool": (_with("architecture.layer_sizes", [True, 3, 1]),
                     "architecture.layer_sizes[0] must be an int >= 1, got True"),
    "sizes a float": (_with("architecture.layer_sizes", [2, 3.0, 1]),
                      "architecture.layer_sizes[1] must be an int >= 1, got 3.0"),
    "sizes a string": (_with("architecture.layer_sizes", [2, "3", 1]),
                       "architecture.layer_sizes[1] must be an int >= 1, got '3'"),
    "sizes nested": (_with("architecture.layer_sizes", [2, [3], 1]),
                     "architecture.layer_sizes[1] must be an int >= 1, got [3]"),
    "sizes zero": (_with("architecture.layer_sizes", [2, 0, 1]),
                   "architecture.layer_sizes[1] must be an int >= 1, got 0"),
    "sizes negative": (_with("architecture.layer_sizes", [2, -20000, 1]),
                       "must be an int >= 1, got -20000"),
    "sizes an object": (_with("architecture.layer_sizes", {"0": 2}),
                        "'layer_sizes' should be a list, got an object"),
    "sizes null": (_with("architecture.layer_sizes", None),
                   "'layer_sizes' should be a list, got null"),
    "sizes too short": (_with("architecture.layer_sizes", [2]),
                        "architecture.layer_sizes has 1 entries; it needs 2 to 1024"),
    "sizes too long": (_with("architecture.layer_sizes", [1] * 1025),
                       "architecture.layer_sizes has 1025 entries; it needs 2 to 1024"),
    "sizes a long string": (_with("architecture.layer_sizes", [2, "x" * 5000, 1]),
                            "got 'xxxxxxxxx"),
    "activation a number": (_with("architecture.activations", [3]),
                            "architecture: unknown activation 3"),
    "activations a string": (_with("architecture.activations", "relu"),
                             "'activations' should be a list, got a string"),
    "output a list": (_with("architecture.output", ["sigmoid"]),
                      "'output' should be a string, got a list"),
    "version a string": (_with("format_version", "1"),
                         "'format_version' should be an int, got a string"),
    "architecture a list": (_with("architecture", [2, 3, 1]),
                            "'architecture' should be an object, got a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_TYPES))
def test_bad_types_in_a_checkpoint_give_one_line(tmp_path, case) -> None:
    edit, fragment = BAD_TYPES[case]
    content = MLP([2, 3, 1], seed=0).to_dict()
    edit(content)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(CheckpointError) as info:
        MLP.load(path)
    message = one_line(info.value, str(path), fragment)
    assert len(message) < 300, message


def test_an_integer_too_long_to_read_gives_one_line(tmp_path) -> None:
    """Python refuses int literals of over 4300 digits with a bare ValueError."""
    path = tmp_path / "digits.json"
    path.write_text('{"format_version": ' + "9" * 5000 + "}")
    with pytest.raises(CheckpointError) as info:
        MLP.load(path)
    one_line(info.value, str(path), "it holds a number it cannot read (Exceeds the limit")


# ---- resuming a checkpoint of another architecture -------------------------------------------

def _config(compose_cfg, *overrides: str):
    return validate(compose_cfg(*overrides))


@pytest.mark.parametrize(("overrides", "checkpoint_net", "expected"), [
    (["model.hidden_sizes=[16]"], MLP([2, 8, 1]),
     "holds 2 -> 8 relu -> 1 sigmoid (float64), but the config builds 2 -> 16 relu -> 1 "
     "sigmoid (float64); to resume it, add model.hidden_sizes=[8] (or drop "
     "train.resume_from)"),
    (["model.hidden_sizes=[16,8]"], MLP([2, 16, 8, 1], hidden_activation=["tanh", "relu"]),
     "; to resume it, add model.activation=[tanh,relu] (or drop train.resume_from)"),
    (["model.hidden_sizes=[16]", "model.activation=tanh"], MLP([2, 16, 8, 1]),
     "; to resume it, add model.hidden_sizes=[16,8] model.activation=relu (or drop"),
    (["model.hidden_sizes=[4]"], MLP([2, 4, 2], output="softmax"),
     "2 -> 4 relu -> 2 softmax (float64), but the config builds 2 -> 4 relu -> 1 sigmoid "
     "(float64); to resume it, add model.output=softmax"),
    (["model.hidden_sizes=[4]"], MLP([2, 4, 1], dtype="float32"),
     "; to resume it, add model.dtype=float32"),
    (["model.hidden_sizes=[4]"], MLP([5, 4, 1]),
     "; it takes 5 input features, the data has 2: resume it on the data it was trained on, "
     "or drop train.resume_from"),
    (["model.hidden_sizes=[4]"], MLP([2, 3, 3], output="softmax"),
     "; it predicts 3 classes, the data has 2: resume it on the data it was trained on, with "
     "model.hidden_sizes=[3], or drop train.resume_from"),
])
def test_an_architecture_mismatch_names_both_and_the_fix(compose_cfg, overrides,
                                                         checkpoint_net, expected) -> None:
    config = _config(compose_cfg, *overrides)
    planned = plan_architecture(2, 2, hidden_sizes=config.model.hidden_sizes,
                                activation=config.model.activations, output=config.model.output,
                                dtype=config.model.dtype)
    message = _architecture_mismatch("ck.json", Architecture.of(checkpoint_net), planned,
                                     config, 2)
    assert message is not None and "\n" not in message
    assert message.startswith("train.resume_from: the checkpoint ck.json holds "), message
    assert expected in message, message


def test_the_same_architecture_resumes(compose_cfg) -> None:
    config = _config(compose_cfg, "model.hidden_sizes=[8,8]", "model.activation=[tanh,relu]")
    planned = plan_architecture(2, 2, hidden_sizes=[8, 8], activation=["tanh", "relu"])
    model = MLP([2, 8, 8, 1], hidden_activation=["tanh", "relu"], init="he", seed=5)
    assert _architecture_mismatch("ck.json", Architecture.of(model), planned, config, 2) is None


def cli(*args: str, module: str = "pipeline", env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, timeout=600, env={**ENV, **(env or {})})


def the_error_line(done: subprocess.CompletedProcess) -> str:
    """exit 1, no traceback, and the one line (Hydra's framing, if any, left out)."""
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines()
             if line and not line.startswith(("Error executing job", "Set the environment"))]
    return lines[-1]


def all_runs(store: str) -> list:
    client = MlflowClient(store)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


@pytest.mark.slow
def test_resuming_a_checkpoint_of_another_architecture_fails_the_run(tmp_path) -> None:
    """A real run saves checkpoints of a [8] net; resuming one with model.hidden_sizes=[16]
    is refused: exit 1, one line naming both and the override, the run FAILED with it."""
    first_store = f"sqlite:///{tmp_path / 'first.db'}"
    done = cli(f"tracking.uri={first_store}", *QUICK, "model.hidden_sizes=[8]",
               f"hydra.run.dir={tmp_path / 'first'}", f"pipeline.cache_dir={tmp_path / 'c'}")
    assert done.returncode == 0, done.stderr[-2000:]
    saved = tmp_path / "first" / "checkpoints" / "epoch_0000025.json"
    assert MLP.load(saved).layer_sizes == (2, 8, 1)

    store = f"sqlite:///{tmp_path / 'resume.db'}"
    start = time.monotonic()
    done = cli(f"tracking.uri={store}", *QUICK, "model.hidden_sizes=[16]",
               f"train.resume_from={saved}", f"hydra.run.dir={tmp_path / 'resumed'}",
               f"pipeline.cache_dir={tmp_path / 'c'}")
    message = the_error_line(done)
    assert message == (
        f"train.resume_from: the checkpoint {saved} holds 2 -> 8 relu -> 1 sigmoid (float64), "
        "but the config builds 2 -> 16 relu -> 1 sigmoid (float64); to resume it, add "
        "model.hidden_sizes=[8] (or drop train.resume_from)")
    assert time.monotonic() - start < 60
    (run,) = all_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == message
    assert "checkpoint_sha256" not in run.data.tags  # nothing claims a trained model
    assert not (tmp_path / "resumed" / "checkpoints" / "final.json").exists()


# ---- rerun: the stored config is never resolved ----------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("tracking:\n  run_name: ${oc.env:SECRET_TOKEN}\n",
     "rerun: the stored config of run R has an interpolation at tracking.run_name "
     "('${oc.env:SECRET_TOKEN}'); refusing to resolve it"),
    ("data:\n  path: ${oc.decode:${oc.env:HOME}}\n", "has an interpolation at data.path"),
    ("tags:\n  note: 'seed ${seed}'\n", "has an interpolation at tags.note ('seed ${seed}')"),
    ("model:\n  hidden_sizes: [8, '${now:}']\n",
     "has an interpolation at model.hidden_sizes[1]"),
    ("tags:\n  ${oc.env:X}: 1\n", "has an interpolation at tags.${oc.env:X}"),
    ("a: &x [1]\nb: *x\n", "is not plain YAML (a YAML alias at line 2); refusing it"),
    ("a: !!python/object/apply:os.system [ls]\n", "is not plain YAML (could not determine a "
                                                  "constructor"),
    ("a: !!binary aGk=\n", "has a bytes at a, which no config holds; refusing it"),
    ("- a\n- b\n", "is list, not a mapping; refusing it"),
])
def test_a_stored_config_with_anything_foreign_is_refused(text, expected) -> None:
    with pytest.raises(PipelineError) as info:
        load_stored_config("R", text)
    one_line(info.value, expected)


def test_a_plain_stored_config_loads_as_is() -> None:
    text = "seed: 0\ntags: {note: 'costs $5 {sic}'}\nmodel: {hidden_sizes: [8]}\n"
    assert load_stored_config("R", text) == {"seed": 0, "tags": {"note": "costs $5 {sic}"},
                                             "model": {"hidden_sizes": [8]}}


@pytest.mark.slow
def test_rerun_refuses_a_stored_interpolation_and_leaks_nothing(tmp_path) -> None:
    """A real run; its config.yaml artifact replaced by one asking for ${oc.env:SECRET_TOKEN};
    a rerun with SECRET_TOKEN set: exit 1, one line naming the key, no new run, and the
    secret nowhere in the output or the store."""
    import yaml

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = cli(f"tracking.uri={store}", *QUICK, f"hydra.run.dir={tmp_path / 'orig'}",
               f"pipeline.cache_dir={tmp_path / 'c'}")
    assert done.returncode == 0, done.stderr[-2000:]
    original = done.stdout.split("MLflow run ")[1].split()[0]

    client = MlflowClient(store)
    stored = yaml.safe_load((tmp_path / "orig" / "artifacts" / "config.yaml").read_text())
    stored["tracking"]["run_name"] = "${oc.env:SECRET_TOKEN}"
    forged = tmp_path / "forged" / "config.yaml"
    forged.parent.mkdir()
    forged.write_text(yaml.safe_dump(stored, sort_keys=False))
    client.log_artifact(original, str(forged))  # replaces the run's config.yaml
    assert "${oc.env:SECRET_TOKEN}" in Path(client.download_artifacts(
        original, "config.yaml", str(tmp_path / "check"))).read_text()

    secret = "s3cr3t-token-value-4711"
    done = cli(original, f"tracking.uri={store}", module="pipeline.commands.rerun",
               env={"SECRET_TOKEN": secret})
    assert done.returncode == 1, done.stdout[-1000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line]
    assert lines[-1] == (
        f"error: rerun: the stored config of run {original} has an interpolation at "
        "tracking.run_name ('${oc.env:SECRET_TOKEN}'); refusing to resolve it")
    assert "reproduced" not in done.stdout
    assert secret not in done.stdout + done.stderr
    runs = all_runs(store)
    assert [r.info.run_id for r in runs] == [original]  # no rerun was started
    for run in runs:
        for key, value in {**run.data.tags, **run.data.params}.items():
            assert secret not in key and secret not in value, key
    for path in tmp_path.rglob("*"):  # nor in any file: the store, its artifacts, outputs
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
