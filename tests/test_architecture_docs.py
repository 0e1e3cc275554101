"""docs/architecture.md stays true: its worked examples run, and what it names exists.

Each worked example is a fenced block preceded by ``<!-- example: <name> -->``. The tests
write the block to a module in ``tmp_path`` and use it as a user would: the activation and
the transform through a real ``.venv/bin/python -m pipeline`` run that names them in
``pipeline.plugins`` (slow), and in process through the core and the stages (fast); the
metric by applying the page's change to a copy of today's ``pipeline/run/runner.py`` and
reading the metric back from a real sqlite store; the data step against ``DATA_STEPS``.
The page's paths, modules, functions, config keys and commands are checked against the
code, as tests/test_docs.py checks the other pages.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from pipeline.mlp import ACTIVATIONS, MLP
from stages.transforms import TRANSFORMS
from tests.test_architecture import LAYERS
from tests.test_docs import (
    BARE_PYTHON,
    MODULE,
    anchors,
    code,
    make_targets,
    relative_links,
    strip_fences,
    targets_named,
)
from tests.test_docs import MAKE as MAKE_COMMAND

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
EXAMPLE = re.compile(r"^<!-- example: ([\w-]+) -->[ \t]*\n```[\w-]*\n(.*?)^```",
                     re.MULTILINE | re.DOTALL)
EXPECTED = {"activation", "activation-command", "metric", "metric-wiring", "transform",
            "transform-command", "data-step", "data-step-config", "data-step-schema",
            "data-step-wiring", "data-step-command"}
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def page() -> str:
    return PAGE.read_text()


def examples() -> dict[str, str]:
    """The worked examples of the page: name -> the body of the block after its marker."""
    found: dict[str, str] = {}
    for name, body in EXAMPLE.findall(page()):
        assert name not in found, f"two examples named {name!r}"
        found[name] = body
    return found


def command_words(name: str) -> list[str]:
    """The overrides of the ``.venv/bin/python -m pipeline ...`` command of example ``name``."""
    words = shlex.split(examples()[name])
    assert words[:3] == [".venv/bin/python", "-m", "pipeline"], words
    return words[3:]


# -- the page -------------------------------------------------------------------------------
def test_every_worked_example_is_marked() -> None:
    assert set(examples()) == EXPECTED


def test_the_page_links_back_and_every_link_resolves() -> None:
    assert "](../README.md)" in page()
    broken = []
    for link in relative_links(PAGE):
        target, _, anchor = link.partition("#")
        file = (PAGE.parent / target).resolve() if target else PAGE
        if not file.exists():
            broken.append(f"{link}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{link}: no heading #{anchor} in {file.name}")
    assert not broken, broken


def test_commands_run_as_written() -> None:
    """Through .venv/bin/python or a make target, named by the command's module."""
    snippets = code(page())
    assert not [s for s in snippets if BARE_PYTHON.search(s)]
    modules = {m for s in snippets for m in MODULE.findall(s)}
    assert modules <= {"pipeline"} | {m for m in modules if m.startswith("pipeline.commands.")}
    shown = {name for s in snippets for c in MAKE_COMMAND.findall(s) for name in targets_named(c)}
    assert shown and shown <= make_targets(), sorted(shown - make_targets())


def test_the_layer_table_names_every_layer_of_the_architecture_test() -> None:
    """The page's table lists what tests/test_architecture.py enforces, layer by layer."""
    text = page()
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            path = prefix.replace(".", "/")
            as_file = f"`{path}.py`" if (ROOT / f"{path}.py").exists() else f"`{path}/`"
            assert as_file in text, f"the layer table does not name {as_file}"
    assert "`stages/`" in text and "tests/test_architecture.py" in text


PATH_SPAN = re.compile(r"^(?:pipeline|stages|conf|tests|docs|hydra_plugins|bench)(?:/[\w.-]+)*/?$")
FILE_SPAN = re.compile(r"^[a-z_]+\.py$")
DOTTED = re.compile(r"^(?:pipeline|stages)(?:\.\w+)+$")
CALL = re.compile(r"^(?:(\w+)\.)?(\w+)\(\)$")
CONFIG_KEY = re.compile(r"^[a-z_]+(?:\.[a-z_0-9]+)+$")
GROUPS = ("data", "model", "optimizer", "train", "split", "tracking", "sweep", "pipeline")
# Spans that name a Python value, not a config key: the file and the text that defines it.
VALUES = {"model.params": ("pipeline/mlp/state.py", "    params: Array"),
          "model.predict_proba": ("pipeline/mlp/model.py", "def predict_proba("),
          "recorder.log_epoch": ("pipeline/run/runner.py", "recorder.log_epoch"),
          "prepared.val": ("pipeline/run/runner.py", "prepared.val")}


def spans() -> list[str]:
    """The inline code spans outside fenced blocks (what the prose names)."""
    return re.findall(r"`([^`\n]+)`", strip_fences(page()))


def _resolves(dotted: str) -> bool:
    """``dotted`` is a module of the project, or an attribute of one."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        base = ROOT.joinpath(*parts[:cut])
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            value: Any = importlib.import_module(name)
            for attribute in parts[cut:]:
                if not hasattr(value, attribute):
                    return False
                value = getattr(value, attribute)
            return True
    return False


def _defined(name: str) -> bool:
    """A function, method or class ``name`` is defined somewhere in pipeline/ or stages/."""
    pattern = re.compile(rf"^\s*(?:def|class)\s+{re.escape(name)}\b", re.MULTILINE)
    return any(pattern.search(path.read_text())
               for folder in ("pipeline", "stages") for path in (ROOT / folder).rglob("*.py"))


def test_every_path_module_and_function_it_names_exists() -> None:
    found = spans()
    missing = [s for s in found if PATH_SPAN.match(s) and not (ROOT / s).exists()]
    files = {p.name for folder in ("pipeline", "stages") for p in (ROOT / folder).rglob("*.py")}
    missing += [s for s in found if FILE_SPAN.match(s) and s not in files]
    missing += [s for s in found if DOTTED.match(s) and s != "pipeline.plugins"
                and not _resolves(s)]
    missing += [s for s in found if CALL.match(s) and not _defined(CALL.match(s)[2])]
    missing += [span for span, (where, text) in VALUES.items()
                if span in found and text not in (ROOT / where).read_text()]
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_every_config_key_it_names_exists(compose_cfg) -> None:
    from omegaconf import OmegaConf

    import pipeline.config.schema  # noqa: F401  (gives Hydra the optimisers' options)

    cfg = compose_cfg()
    keys = {s.split("=")[0].strip("'") for s in spans() + [w for name in
            ("activation-command", "transform-command") for w in command_words(name)]}
    keys = {k for k in keys if CONFIG_KEY.match(k) and k.split(".")[0] in GROUPS
            and k not in VALUES and not k.endswith(".py")}
    assert {"model.activation", "data.transforms", "pipeline.plugins"} <= keys
    missing = sorted(k for k in keys if OmegaConf.select(cfg, k, default="<absent>") == "<absent>")
    assert not missing, f"config keys the page names that conf/ does not have: {missing}"


def test_the_serve_target_takes_the_plugins_the_page_tells_it() -> None:
    assert "make serve RUN_ID=<id> PLUGINS=my_transforms" in page()
    recipe = (ROOT / "Makefile").read_text().split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert "PLUGINS" in recipe, "make serve does not read PLUGINS="


# -- the examples as modules ----------------------------------------------------------------
@pytest.fixture
def registries() -> Iterator[None]:
    """The registries as each test found them: what an example registers does not leak."""
    saved = dict(ACTIVATIONS), dict(TRANSFORMS)
    yield
    for registry, before in zip((ACTIVATIONS, TRANSFORMS), saved, strict=True):
        registry.clear()
        registry.update(before)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registries: None) -> Any:
    """``plugin("activation", "my_layers")``: the example written to ``my_layers.py`` in
    tmp_path and imported as ``pipeline.plugins`` imports it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def load(example: str, module: str) -> ModuleType:
        (tmp_path / f"{module}.py").write_text(examples()[example])
        monkeypatch.delitem(sys.modules, module, raising=False)
        names.append(module)
        return importlib.import_module(module)

    yield load
    for module in names:
        sys.modules.pop(module, None)


def module_name(example: str) -> str:
    """The module an example's first line names (``# my_layers.py``)."""
    first = examples()[example].splitlines()[0]
    match = re.fullmatch(r"# (\w+)\.py", first)
    assert match, f"example {example!r} does not start with '# <module>.py'"
    return match[1]


def _plugins(words: list[str]) -> list[str]:
    (value,) = [w.split("=", 1)[1] for w in words if w.startswith("pipeline.plugins=")]
    return value.strip("[]").split(",")


def test_the_activation_example_is_a_name_the_config_takes(plugin, compose_cfg) -> None:
    """Registered on import, accepted by the config as the command writes it, and its
    gradient through the core matches central differences."""
    from pipeline.config.schema import validate
    from pipeline.mlp.training import loss_and_gradients

    words = command_words("activation-command")
    name = module_name("activation")
    assert _plugins(words) == [name]
    plugin("activation", name)
    (activation,) = [w.split("=", 1)[1] for w in words if w.startswith("model.activation=")]
    assert activation in ACTIVATIONS
    config = validate(compose_cfg(*words))
    assert config.model.activation == activation

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(9, 3)), np.arange(9) % 2
    model = MLP([3, 4, 1], hidden_activation=activation, seed=1)
    _, dW, db = loss_and_gradients(model, X, y)
    analytic = np.concatenate([g.ravel() for g in (*dW, *db)])
    numerical = np.empty_like(model.params)
    for i in range(model.params.size):
        original = model.params[i]
        model.params[i] = original + 1e-6
        plus = loss_and_gradients(model, X, y)[0]
        model.params[i] = original - 1e-6
        minus = loss_and_gradients(model, X, y)[0]
        model.params[i] = original
        numerical[i] = (plus - minus) / 2e-6
    # the same parameters in the layout's order: weights then biases, layer by layer
    numerical = np.concatenate([g.ravel() for g in (*model.layout.weights(numerical),
                                                    *model.layout.biases(numerical))])
    error = np.linalg.norm(analytic - numerical) / np.linalg.norm(numerical)
    assert error < 1e-6, error
    # it does not just reproduce a built-in: softsign differs from tanh
    tanh = MLP([3, 4, 1], hidden_activation="tanh", seed=1)
    assert not np.allclose(model.predict_proba(X), tanh.predict_proba(X))


def _rf_splits() -> Any:
    from stages.generate import generate_rf
    from stages.split import split_dataset

    data = generate_rf(n_samples=200, seed=3)
    return split_dataset(data, test_fraction=0.25, val_fraction=0.0, stratify=False, seed=4)


def test_the_transform_example_is_fitted_on_train_and_stored_with_the_model(plugin) -> None:
    """The command's transform list is valid; the plugin's state comes from the training
    split only; the stored form restores to the same bits and names its module."""
    from stages.preprocess import Preprocessor, preprocess
    from stages.transforms import (
        StoredMetadataError,
        TransformError,
        UnknownTransformError,
        check_specs,
    )

    words = command_words("transform-command")
    name = module_name("transform")
    assert _plugins(words) == [name]
    plugin("transform", name)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = [o for o in OverridesParser.create().parse_overrides(words)
                   if o.key_or_group == "data.transforms"]
    specs = check_specs(override.value())
    (mine,) = [s for s in specs if TRANSFORMS[s.name].module == name]
    assert TRANSFORMS[mine.name].stateful

    splits = _rf_splits()
    preprocessor, prepared = preprocess(splits, [{"name": mine.name, **mine.options}])
    (fitted,) = preprocessor.transforms
    q = mine.options["quantile"]
    low, high = np.quantile(splits.train.X, [1.0 - q, q], axis=0)
    assert fitted.state == {"low": low.tolist(), "high": high.tolist()}
    assert fitted.module == name
    test_in = preprocessor.transform(splits.test.X)
    np.testing.assert_array_equal(test_in, prepared.test.X)
    clipped = np.clip(splits.test.X, low, high)
    np.testing.assert_array_equal(test_in, preprocessor.normaliser.transform(clipped))

    stored = json.loads(json.dumps(preprocessor.to_metadata()))
    back = Preprocessor.from_metadata(stored)
    assert back.transform(splits.test.X).tobytes() == test_in.tobytes()

    bad = json.loads(json.dumps(stored))
    bad["transforms"][0]["state"]["low"] = [0.0]
    with pytest.raises(StoredMetadataError, match="one number per feature"):
        Preprocessor.from_metadata(bad)
    with pytest.raises(TransformError, match="option 'quantile' must be a number"):
        check_specs([{"name": mine.name, "quantile": "high"}])
    del TRANSFORMS[mine.name]  # a process that did not import the plugin
    with pytest.raises(UnknownTransformError, match=rf"pipeline.plugins=\[{name}\]"):
        Preprocessor.from_metadata(stored)


def _run_in_subprocess(tmp_path: Path, store: str, *words: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run(
        [PYTHON, "-m", "pipeline", *words, f"tracking.uri={store}",
         f"pipeline.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'out'}",
         "train.epochs=30", "train.progress=false", "tracking.plots=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)


@pytest.mark.slow
def test_the_activation_and_transform_examples_train_a_recorded_run(plugin, tmp_path,
                                                                     store) -> None:
    """Both plugins written as the page shows, named as its commands name them, in one
    ``.venv/bin/python -m pipeline`` run: the run finishes, and its record and checkpoint
    hold the activation and the fitted transform with its module."""
    from mlflow.tracking import MlflowClient

    from stages.preprocess import Preprocessor

    layers, transforms = module_name("activation"), module_name("transform")
    plugin("activation", layers)  # also imported here: loading the checkpoint needs them
    plugin("transform", transforms)
    activation = [w for w in command_words("activation-command") if "plugins" not in w]
    words = [w for w in command_words("transform-command") if "plugins" not in w]
    done = _run_in_subprocess(tmp_path, store, f"pipeline.plugins=[{layers},{transforms}]",
                              *activation, *words)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("mlp-pipeline").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.activation"] == "softsign"
    assert "winsorise" in run.data.params["data.transforms"]
    checkpoint = MLP.load(tmp_path / "out" / "checkpoints" / "final.json")
    assert checkpoint.activations == ("softsign",)
    stored = checkpoint.metadata["transforms"]
    assert [(t["name"], t["module"]) for t in stored] == [
        ("log1p", "stages.transforms"), ("winsorise", transforms)]
    assert Preprocessor.from_metadata(checkpoint.metadata).plugin_modules == (transforms,)


# -- the metric: the page's change applied to a copy of today's runner -------------------------
def _diff(body: str) -> tuple[str, str]:
    """The text before and after a unified-diff body (' ' context, '+' added, '-' removed)."""
    before, after = [], []
    for line in body.splitlines():
        mark, text = line[:1], line[1:]
        assert mark in " +-", f"not a diff line: {line!r}"
        if mark != "+":
            before.append(text)
        if mark != "-":
            after.append(text)
    return "\n".join(before) + "\n", "\n".join(after) + "\n"


def test_the_metric_change_applies_to_todays_runner() -> None:
    before, after = _diff(examples()["metric-wiring"])
    source = (ROOT / "pipeline" / "run" / "runner.py").read_text()
    assert source.count(before) == 1, "the page's context lines are not in execute() as shown"
    assert "def _Checkpointer" not in source and "class _Checkpointer" in source
    assert "param_norm" in after and "param_norm" in examples()["metric"]


@pytest.fixture
def runner_with_metric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """pipeline/run/runner.py with the page's change: the function added beside the
    others and the line added to execute(), imported as a module of its own."""
    before, after = _diff(examples()["metric-wiring"])
    source = (ROOT / "pipeline" / "run" / "runner.py").read_text()
    patched = source.replace(before, after) + "\n\n" + examples()["metric"]
    (tmp_path / "runner_with_metric.py").write_text(patched)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("runner_with_metric")
    sys.modules.pop("runner_with_metric", None)


def test_the_metric_example_is_recorded_every_epoch(runner_with_metric, compose_cfg, tmp_path,
                                                   isolated, store) -> None:
    """With the change, a run records param_norm at every epoch in the store, its journal
    and history.csv, and its last value is the norm of the final checkpoint's parameters."""
    from mlflow.tracking import MlflowClient

    from pipeline.config.schema import validate
    from pipeline.tracking.journal import read_journal
    from tests.conftest import FAST

    epochs = 40
    config = validate(compose_cfg(*FAST, *isolated, f"train.epochs={epochs}",
                                  "tracking.plots=false", "tracking.log_model=false"))
    result = runner_with_metric.run(config, output_dir=tmp_path / "out")
    client = MlflowClient(store)
    history = sorted(client.get_metric_history(result.run_id, "param_norm"),
                     key=lambda m: m.step)
    assert [m.step for m in history] == list(range(1, epochs + 1))
    final = MLP.load(tmp_path / "out" / "checkpoints" / "final.json")
    assert history[-1].value == pytest.approx(float(np.linalg.norm(final.params)), rel=1e-12)
    assert len({m.value for m in history}) > 1  # it follows training
    folder = client.download_artifacts(result.run_id, "history.csv", str(tmp_path / "got"))
    header = Path(folder).read_text().splitlines()[0].split(",")
    assert "param_norm" in header and "train_loss" in header
    keys, rows = read_journal(result.journal).epochs()
    np.testing.assert_array_equal(rows[:, 2 + keys.index("param_norm")],
                                  [m.value for m in history])


# -- the data step: the page's step in a copy of today's data.py -------------------------------
DATA_PY = ROOT / "pipeline" / "run" / "data.py"
TODAYS_STEPS = "DATA_STEPS: tuple[DataStep, ...] = (GENERATE, LOAD_CSV, SPLIT, PREPROCESS)\n"
SOURCE_POP = '    settings.pop("transforms", None)\n'
KEEP_POP = 'settings.pop("keep", None)'


def test_the_data_step_change_applies_to_todays_data_py() -> None:
    """The line the page's entry replaces, and the place it says to leave the key out, are
    in pipeline/run/data.py as the page shows them."""
    source = DATA_PY.read_text()
    assert source.count(TODAYS_STEPS) == 1, "DATA_STEPS is not declared as the page assumes"
    assert "def _source_settings(" in source and source.count(SOURCE_POP) == 1
    assert f"`{KEEP_POP}`" in page()
    assert "class DataStep" in source


@pytest.fixture
def data_with_keep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compose_cfg
                   ) -> Iterator[Any]:
    """pipeline/run/data.py, conf/ and the data schemas with the page's step: the stage
    module imported under the name the page gives it, the entry in place of today's
    DATA_STEPS line, ``keep`` left out of the first step's settings, the YAML line in both
    data options and the field in both data schemas. Yields ``(data module, compose)``."""
    import dataclasses
    import importlib.util
    import shutil

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import MISSING

    from pipeline.config import schema

    blocks = examples()
    first = blocks["data-step"].splitlines()[0]
    match = re.fullmatch(r"# (stages)/(\w+)\.py", first)
    assert match, first
    name = f"{match[1]}.{match[2]}"
    path = tmp_path / f"{match[2]}.py"
    path.write_text(blocks["data-step"])
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    stage = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, stage)
    spec.loader.exec_module(stage)

    source = DATA_PY.read_text()
    patched = source.replace(TODAYS_STEPS, blocks["data-step-wiring"]).replace(
        SOURCE_POP, f"{SOURCE_POP}    {KEEP_POP}\n")
    (tmp_path / "data_with_keep.py").write_text(patched)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "data_with_keep", raising=False)
    module = importlib.import_module("data_with_keep")

    for option, base in (("rf", schema.RFDataConfig), ("csv", schema.CSVDataConfig)):
        namespace: dict[str, Any] = {"MISSING": MISSING, "Base": base}
        exec(f"class WithKeep(Base):\n{blocks['data-step-schema']}", namespace)
        with_keep = dataclasses.dataclass(namespace["WithKeep"])
        monkeypatch.setitem(schema.DATA_SCHEMAS, option, lambda _, s=with_keep: s)

    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    for option in ("rf", "csv"):
        yaml = conf / "data" / f"{option}.yaml"
        yaml.write_text(yaml.read_text() + blocks["data-step-config"])

    def composed(*overrides: str) -> Any:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            return schema.validate(compose(config_name="config", overrides=list(overrides)))

    yield module, composed
    GlobalHydra.instance().clear()
    sys.modules.pop("data_with_keep", None)


def test_the_data_step_example_runs_in_the_declared_sequence(data_with_keep, tmp_path,
                                                             isolated) -> None:
    """In DATA_STEPS between split and preprocess, cached by its setting, written to the
    run's folder, and the preprocessor fitted on what it keeps."""
    from pipeline.config.seeds import run_seeds
    from stages.dataset import DataError

    data, composed = data_with_keep
    assert [s.name for s in data.DATA_STEPS] == [
        "generate", "load_csv", "split", "keep", "preprocess"]
    words = command_words("data-step-command")
    config = composed(*words, *isolated)
    keep = config.data.keep
    assert keep == ["Amplitude"]
    seeds = run_seeds(config)

    first = data.run_data_stages(config, seeds, tmp_path / "a", {})
    assert first.cache_hits == dict.fromkeys(("generate", "split", "keep", "preprocess"), False)
    assert first.raw.feature_names == ("Frequency", "Amplitude")
    assert first.preprocessor.feature_names == tuple(keep)
    assert first.normalised.train.feature_names == tuple(keep)
    assert (tmp_path / "a" / "data" / "03_keep" / "train.parquet").is_file()
    assert (tmp_path / "a" / "data" / "04_preprocess" / "train.parquet").is_file()

    again = data.run_data_stages(config, seeds, tmp_path / "b", {})
    assert all(again.cache_hits.values())
    assert again.normalised.train.digest() == first.normalised.train.digest()
    both = composed("data.keep=[Frequency,Amplitude]", *isolated)
    changed = data.run_data_stages(both, seeds, tmp_path / "c", {})
    assert changed.cache_hits == {"generate": True, "split": True, "keep": False,
                                  "preprocess": False}
    assert changed.preprocessor.feature_names == ("Frequency", "Amplitude")

    wrong = composed("data.keep=[Phase]", *isolated)
    with pytest.raises(DataError) as error:
        data.run_data_stages(wrong, seeds, tmp_path / "d", {})
    assert str(error.value).startswith("data.keep: 'Phase' is not a feature")
    assert "\n" not in str(error.value)


def test_the_data_step_example_serves_from_the_raw_columns(data_with_keep, tmp_path, isolated,
                                                          store, monkeypatch) -> None:
    """A whole run with the step: recorded, and the preprocessor its checkpoint stores,
    given the raw test rows with every column, predicts its predictions.csv exactly."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from pipeline.run import runner
    from pipeline.run.datastore import read_dataset
    from stages.preprocess import Preprocessor
    from tests.conftest import FAST

    data, composed = data_with_keep
    monkeypatch.setattr(runner, "run_data_stages", data.run_data_stages)
    config = composed(*FAST, "train.epochs=50", "tracking.plots=false",
                      "tracking.log_model=false", *command_words("data-step-command"),
                      *isolated)
    result = runner.run(config, output_dir=tmp_path / "out")
    run = MlflowClient(store).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["data.keep"] == "['Amplitude']"

    final = MLP.load(tmp_path / "out" / "checkpoints" / "final.json")
    assert final.layer_sizes[0] == 1
    preprocessor = Preprocessor.from_metadata(final.metadata)
    raw_test = read_dataset(tmp_path / "out" / "data" / "02_split" / "test.parquet")
    assert raw_test.feature_names == ("Frequency", "Amplitude")
    frame = pd.DataFrame(raw_test.X, columns=list(raw_test.feature_names))
    proba = final.predict_proba(preprocessor.transform(frame))[:, 0]
    written = pd.read_csv(tmp_path / "out" / "artifacts" / "predictions.csv",
                          float_precision="round_trip")
    np.testing.assert_array_equal(proba, written["probability"].to_numpy())


def test_the_example_modules_pass_the_projects_lint(tmp_path) -> None:
    """A user copies them: as modules, they pass ruff with the project's settings."""
    ruff = ROOT / ".venv" / "bin" / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed in .venv")
    files = []
    for example in ("activation", "transform", "data-step"):
        path = tmp_path / f"{example.replace('-', '_')}.py"
        path.write_text(examples()[example])
        files.append(str(path))
    done = subprocess.run([str(ruff), "check", "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache", *files], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:]
