"""JSON checkpoints: exact round trips, deterministic bytes, strict loading, atomic saving and
resuming that equals an uninterrupted run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.mlp import FORMAT_VERSION, MLP, CheckpointError

pytestmark = pytest.mark.filterwarnings("ignore::pipeline.mlp.ConvergenceWarning")


def data(n: int = 50, k: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    score = X[:, 0] + X[:, 1] * X[:, 2]
    y = (score > 0).astype(int) if k == 2 else np.digitize(score, [-0.5, 0.5])
    return X, y


def trained(dtype: str = "float64", **kwargs) -> MLP:
    X, y = data()
    model = MLP([3, 5, 4, 1], hidden_activation=["tanh", "relu"], dtype=dtype, seed=4)
    model.train(X, y, learning_rate=0.01, epochs=3, optimizer="adam", batch_size=16,
                shuffle_seed=2, **kwargs)
    return model


# ---- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_load_predicts_bit_for_bit_the_same(tmp_path, dtype):
    model = trained(dtype)
    metadata = {"normaliser": {"mean": [0.1, -2.5e-17, 3.0], "std": [1.0, 2.0, 1e300]},
                "classes": ["no", "yes"], "digest": "abc", "nested": [[1, None, True]],
                "unicode": "Ωmega"}
    path = tmp_path / "model.json"
    model.save(path, metadata=metadata)
    loaded = MLP.load(path)
    X, _ = data(20, seed=1)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    for a, b in zip([*loaded.weights, *loaded.biases], [*model.weights, *model.biases],
                    strict=True):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    assert loaded.metadata == metadata
    assert repr(loaded) == repr(model)
    assert (loaded.layer_sizes, loaded.activations, loaded.output, loaded.init, loaded.dtype,
            loaded.seed) == (model.layer_sizes, model.activations, model.output, model.init,
                             model.dtype, model.seed)
    # Saving the loaded model reproduces the file (metadata defaults to model.metadata).
    loaded.save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_to_dict_from_dict_round_trip_and_layout():
    model = trained()
    content = model.to_dict(metadata={"run": 1})
    assert content["format_version"] == FORMAT_VERSION == 1
    assert set(content) == {"format_version", "architecture", "parameters", "training",
                            "metadata"}
    assert content["architecture"] == {"layer_sizes": [3, 5, 4, 1],
                                       "activations": ["tanh", "relu"], "output": "sigmoid",
                                       "init": "uniform", "dtype": "float64", "seed": 4}
    assert np.shape(content["parameters"]["weights"][1]) == (5, 4)
    assert np.shape(content["parameters"]["biases"][1]) == (1, 4)
    training = content["training"]
    assert training["epoch"] == 3 and training["optimizer"]["name"] == "adam"
    assert training["optimizer"]["step"] == 12  # 4 batches of <= 16 per epoch
    assert set(training["optimizer"]["state"]) == {"m", "v"}
    assert training["shuffle"]["generator"]["bit_generator"] == "PCG64"
    copy = MLP.from_dict(json.loads(json.dumps(content)))
    assert copy.to_dict() == content
    assert MLP([3, 1]).to_dict()["training"] is None


def test_identical_training_gives_identical_bytes(tmp_path):
    trained().save(tmp_path / "a.json", metadata={"b": 1, "a": 2})
    trained().save(tmp_path / "b.json", metadata={"a": 2, "b": 1})
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


@pytest.mark.parametrize("metadata,message", [
    ({"x": float("nan")}, r"metadata\['x'\] is nan; JSON cannot hold non-finite numbers"),
    ({"x": {1: "a"}}, r"metadata\['x'\] has the key 1; JSON object keys must be str"),
    ({"x": {1, 2}}, r"metadata\['x'\] holds a set"),
    (["not", "a", "mapping"], "metadata must be a mapping"),
])
def test_metadata_that_json_cannot_hold_is_refused_before_writing(tmp_path, metadata, message):
    with pytest.raises(ValueError, match=message):
        trained().save(tmp_path / "m.json", metadata=metadata)
    assert list(tmp_path.iterdir()) == []


def test_numpy_values_in_metadata_become_json(tmp_path):
    path = tmp_path / "m.json"
    MLP([3, 1]).save(path, metadata={"mean": np.array([1.5, 2.0]), "n": np.int64(3),
                                     "f": np.float32(0.5), "ok": np.bool_(True)})
    assert MLP.load(path).metadata == {"mean": [1.5, 2.0], "n": 3, "f": 0.5, "ok": True}


# ---- strict loading --------------------------------------------------------------------------

def _corrupt(tmp_path: Path, edit) -> Path:
    content = trained().to_dict()
    edit(content)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(content):
        target = content
        for key in keys[:-1]:
            target = target[key]
        if value is KeyError:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return edit


BAD_CONTENT = {
    "wrong version": (_set("format_version", 2), "format_version 2 is not supported"),
    "missing parameters": (_set("parameters", KeyError), "missing key 'parameters'"),
    "missing metadata": (_set("metadata", KeyError), "missing key 'metadata'"),
    "layer_sizes a string": (_set("architecture", "layer_sizes", "3,5,4,1"),
                             "'layer_sizes' should be a list, got a string"),
    "bad activation": (_set("architecture", "activations", ["tanh", "swish"]),
                       "architecture: unknown activation 'swish'"),
    "wrong layer count": (lambda c: c["parameters"]["weights"].pop(),
                          r"parameters.weights has 2 layers, but layer_sizes \[3, 5, 4, 1\]"),
    "ragged matrix": (lambda c: c["parameters"]["weights"][0][1].pop(),
                      "parameters.weights.0. is not a rectangular list of numbers"),
    "wrong shape": (lambda c: c["parameters"]["weights"][1].pop(),
                    r"parameters.weights\[1\] has shape \(4, 4\), but layer_sizes implies "
                    r"\(5, 4\)"),
    "string in matrix": (_set("parameters", "biases", 0, [["0.5"] * 5]),
                         r"parameters.biases\[0\] must hold numbers only"),
    "bool in matrix": (_set("parameters", "biases", 2, [[True]]), "must hold numbers only"),
    "optimizer state shape": (lambda c: c["training"]["optimizer"]["state"]["m"]["biases"]
                              .__setitem__(0, [[0.0]]),
                              r"training.optimizer.state.m.biases\[0\] has shape \(1, 1\)"),
    "optimizer unknown": (_set("training", "optimizer", "name", "adamax"),
                          "training.optimizer: unknown optimizer 'adamax'"),
    "optimizer state missing": (lambda c: c["training"]["optimizer"]["state"].pop("v"),
                                r"training.optimizer.state has \['m'\], but 'adam' keeps"),
    "negative epoch": (_set("training", "epoch", -1), "training.epoch must be >= 0"),
    "bad generator": (_set("training", "shuffle", "generator", "state", "oops"),
                      "training.shuffle.generator is not a valid PCG64 state"),
    "top-level list": (None, "expected a JSON object at the top level, got a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONTENT))
def test_inconsistent_content_raises_checkpoint_error(tmp_path, case):
    edit, message = BAD_CONTENT[case]
    if edit is None:
        path = tmp_path / "bad.json"
        path.write_text("[1, 2]")
    else:
        path = _corrupt(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as info:
        MLP.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_non_finite_numbers_raise(tmp_path):
    text = json.dumps(trained().to_dict())
    first = json.dumps(trained().to_dict()["parameters"]["weights"][0][0][0])
    path = tmp_path / "nan.json"
    path.write_text(text.replace(first, "NaN", 1))
    with pytest.raises(CheckpointError, match=r"parameters.weights\[0\] contains non-finite"):
        MLP.load(path)
    path.write_text(text.replace(first, "1e999", 1))
    with pytest.raises(CheckpointError, match="non-finite"):
        MLP.load(path)


@pytest.mark.parametrize("raw,message", [
    (None, "no such file"),
    (b"", r"not valid JSON \(Expecting value at line 1, column 1\); is it truncated\?"),
    (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    (b"hello", "not valid JSON"),
    ("truncated", "not valid JSON"),
])
def test_unreadable_files_raise_checkpoint_error(tmp_path, raw, message):
    path = tmp_path / "model.json"
    if raw == "truncated":
        trained().save(path)
        content = path.read_bytes()
        path.write_bytes(content[: len(content) // 2])
    elif raw is not None:
        path.write_bytes(raw)
    with pytest.raises(CheckpointError, match=message) as info:
        MLP.load(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="is a directory"):
        MLP.load(tmp_path)


# ---- atomic saving ---------------------------------------------------------------------------

@pytest.mark.parametrize("fail", ["replace", "fsync"])
def test_a_failed_save_leaves_no_file_and_no_temporary(tmp_path, monkeypatch, fail):
    model = trained()
    target = tmp_path / "model.json"

    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, fail, boom)
    with pytest.raises(OSError, match="simulated"):
        model.save(target)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # An existing checkpoint survives a failed overwrite untouched.
    model.save(target)
    before = target.read_bytes()
    monkeypatch.setattr(os, fail, boom)
    with pytest.raises(OSError):
        MLP([3, 1]).save(target)
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.json"]


# ---- resuming --------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer,batch_size", [("sgd", None), ("adam", None), ("adam", 7),
                                                  ("momentum", 16)])
def test_resume_equals_an_uninterrupted_run(tmp_path, optimizer, batch_size):
    X, y = data(n=45, k=3)
    X_val, y_val = data(n=15, k=3, seed=1)
    settings = dict(learning_rate=0.02, optimizer=optimizer, batch_size=batch_size,
                    weight_decay=1e-3, validation=(X_val, y_val))

    def fresh() -> MLP:
        return MLP([3, 6, 3], output="softmax", hidden_activation="leaky_relu", seed=8)

    full = fresh()
    full_history = full.train(X, y, epochs=9, **settings)

    def checkpoint(epoch, metrics, model):
        if epoch == 4:
            model.save(tmp_path / "epoch4.json", metadata={"at": epoch})

    interrupted = fresh()
    interrupted.train(X, y, epochs=6, callbacks=[checkpoint], **settings)  # "crashes" at 6
    resumed = MLP.load(tmp_path / "epoch4.json")
    assert resumed.epoch == 4
    history = resumed.train(X, y, epochs=9, resume=True, **settings)
    assert history.epochs == [5, 6, 7, 8, 9]
    for name, values in history.metrics.items():
        assert values == full_history.metrics[name][4:], name
    for a, b in zip([*resumed.weights, *resumed.biases], [*full.weights, *full.biases],
                    strict=True):
        np.testing.assert_array_equal(a, b)
    full.save(tmp_path / "full.json", metadata={"at": 4})
    resumed.save(tmp_path / "resumed.json")
    assert (tmp_path / "full.json").read_bytes() == (tmp_path / "resumed.json").read_bytes()


def test_resume_checks():
    X, y = data()
    model = MLP([3, 4, 1], seed=0)
    model.train(X, y, learning_rate=0.01, epochs=5, optimizer="adam")
    with pytest.raises(ValueError, match="cannot resume: the model was trained with "
                                         "optimizer='adam'"):
        model.train(X, y, learning_rate=0.01, epochs=8, optimizer="sgd", resume=True)
    with pytest.raises(ValueError, match="cannot resume"):
        model.train(X, y, learning_rate=0.01, epochs=8, optimizer="adam",
                    optimizer_options={"beta1": 0.5}, resume=True)
    with pytest.raises(ValueError, match="cannot resume to epochs=3: the model has already "
                                         "run 5 epochs"):
        model.train(X, y, learning_rate=0.01, epochs=3, optimizer="adam", resume=True)
    with pytest.raises(ValueError, match="cannot resume with shuffle_seed=4"):
        model.train(X, y, learning_rate=0.01, epochs=8, optimizer="adam", shuffle_seed=4,
                    resume=True)
    assert model.epoch == 5
    assert len(model.train(X, y, learning_rate=0.01, epochs=5, optimizer="adam",
                           resume=True)) == 0
    fresh = MLP([3, 4, 1], seed=0)  # never trained: resume=True starts at epoch 1
    assert fresh.train(X, y, learning_rate=0.01, epochs=2, resume=True).epochs == [1, 2]


def test_ctrl_c_anywhere_in_an_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised at each line the write executes in turn (its callees'
    included, as a signal handler would raise it) leaves the old file whole and no
    temporary file behind."""
    import sys

    from pipeline.mlp.checkpoint import write_text_atomic

    target = tmp_path / "final.json"
    target.write_text("old\n")
    interrupted_at = 0
    for n in range(1, 10_000):
        events = 0

        def tracer(frame: object, event: str, arg: object, n: int = n) -> object:
            nonlocal events
            if event == "line":
                events += 1
                if events == n:
                    raise KeyboardInterrupt
            return tracer

        sys.settrace(tracer)
        try:
            write_text_atomic(target, "new\n")
        except KeyboardInterrupt:
            interrupted_at += 1
        finally:
            sys.settrace(None)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json"], n
        if events < n:  # the write ran to its end: every line was tried
            assert target.read_text() == "new\n"
            break
        assert target.read_text() in ("old\n", "new\n"), n
        target.write_text("old\n")
    assert interrupted_at > 5
