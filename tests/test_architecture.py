"""The shape of the code: layers that import only downward, no import cycle, each meaning
defined once.

The import graph of ``pipeline/`` and ``stages/`` is built from the source (``ast``), with
every import counted: at module level, inside functions, and under ``if TYPE_CHECKING:`` (a
type names the module that defines it). The layers, highest first; a module imports only
modules of its own layer or of a lower one:

1. entry points: ``pipeline.__main__`` (``python -m pipeline``) and ``pipeline.commands``;
2. ``pipeline.sweeps``: a Hydra multirun as one parent run;
3. ``pipeline.run``: one run;
4. ``pipeline.tracking`` (the only package that imports MLflow) and ``stages`` (the data
   steps);
5. ``pipeline.config`` and the leaf helpers beside ``__main__``: ``pipeline.errors``,
   ``pipeline.interrupts``, ``pipeline.environment``, ``pipeline.files``;
6. ``pipeline.mlp``: the core.

Besides: ``pipeline.mlp`` imports nothing of the project, and ``stages`` imports only
``stages`` and ``pipeline.mlp`` (today ``stages.train`` is the one stage that imports the
core). A module's name (its last part) appears in one layer only; the core is a library of
its own, reached through ``pipeline.mlp``, and its module names are not counted (it keeps
``errors`` and ``model`` beside ``pipeline.errors`` and ``pipeline.tracking.model``).

A function-level import of a project module is there for start-up time only: the module
it imports brings in a heavy package (:data:`HEAVY`) that the importing module does not
import at module level.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages")
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (  # highest first
    ("entry points", ("pipeline.__main__", "pipeline.commands")),
    ("sweeps", ("pipeline.sweeps",)),
    ("one run", ("pipeline.run",)),
    ("tracking and data steps", ("pipeline.tracking", "stages")),
    ("config and leaf helpers", ("pipeline.config", "pipeline.errors", "pipeline.interrupts",
                                 "pipeline.environment", "pipeline.files")),
    ("core", ("pipeline.mlp",)),
)
CORE = "pipeline.mlp"
# Packages whose import takes a tenth of a second or more here (mlflow ~0.8 s, scipy.stats
# ~0.5 s, matplotlib ~0.3 s, pandas ~0.25 s, joblib and hydra ~0.1 s).
HEAVY = frozenset({"mlflow", "matplotlib", "scipy", "pandas", "hydra", "joblib", "optuna",
                   "ray", "sqlalchemy", "sklearn", "torch"})


@dataclass(frozen=True)
class Import:
    """One import of a project module, where it is written."""

    source: str
    target: str
    line: int
    in_function: bool = False
    type_only: bool = False

    def __str__(self) -> str:
        where = " (in a function)" if self.in_function else (
            " (TYPE_CHECKING)" if self.type_only else "")
        return f"{self.source}:{self.line} -> {self.target}{where}"


@dataclass
class Graph:
    modules: dict[str, Path]
    imports: list[Import] = dataclasses.field(default_factory=list)
    # Third-party top-level packages each module imports at module level (not for types).
    packages: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    # Those it imports anywhere: in functions and for types too.
    runtime_packages: dict[str, set[str]] = dataclasses.field(default_factory=dict)

    def edges(self) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {m: set() for m in self.modules}
        for imp in self.imports:
            found[imp.source].add(imp.target)
        return found


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, in_function: bool = False, type_only: bool = False
          ) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool, bool]]:
    """Every import statement under ``node``, with whether it sits in a function and
    under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function, type_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for item in child.body:
                yield from _walk(ast.Module(body=[item], type_ignores=[]), in_function, True)
            for item in child.orelse:
                yield from _walk(ast.Module(body=[item], type_ignores=[]), in_function,
                                 type_only)
        else:
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef
                                               | ast.Lambda)
            yield from _walk(child, inside, type_only)


def build_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> Graph:
    """The import graph of ``packages`` under ``root``."""
    modules = {module_name(root, path): path for package in packages
               for path in sorted((root / package).rglob("*.py"))}
    graph = Graph(modules, packages={m: set() for m in modules},
                  runtime_packages={m: set() for m in modules})

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, in_function, type_only in _walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                         for alias in node.names]
            for name in names:
                target = project_module(name)
                if target is None:
                    graph.runtime_packages[source].add(name.split(".")[0])
                    if not in_function and not type_only:
                        graph.packages[source].add(name.split(".")[0])
                elif target != source:
                    found = Import(source, target, node.lineno, in_function, type_only)
                    if found not in graph.imports:  # `from x import a, b`: one import
                        graph.imports.append(found)
    return graph


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer ``module`` is in (0: the highest)."""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                    best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return best[1] if best is not None else None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as the
    modules of one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_cycle_through(sorted(component), edges))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _cycle_through(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """One cycle inside a strongly connected ``component``, as a path back to its start."""
    members = set(component)
    start = component[0]
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(edges[node] & members):
            if target == start:
                return [*paths[node], start]
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return component


def module_closure(graph: Graph, module: str) -> set[str]:
    """``module`` and every project module it imports at module level, transitively."""
    seen = {module}
    todo = [module]
    while todo:
        for imp in graph.imports:
            if imp.source == todo[-1] and not imp.in_function and not imp.type_only \
                    and imp.target not in seen:
                seen.add(imp.target)
                todo.insert(0, imp.target)
        todo.pop()
    return seen


def heavy_packages(graph: Graph, module: str) -> set[str]:
    """The heavy packages importing ``module`` brings in (its module-level closure's)."""
    return {package for member in module_closure(graph, module)
            for package in graph.packages[member] if package in HEAVY}


@pytest.fixture(scope="module")
def graph() -> Graph:
    return build_graph(ROOT)


# -- the layers -------------------------------------------------------------------------------
def test_every_module_is_in_a_layer(graph: Graph) -> None:
    loose = sorted(m for m in graph.modules if m not in PACKAGES and layer_of(m) is None)
    assert not loose, f"modules in no layer (add them to one in LAYERS): {loose}"
    root = [str(i) for i in graph.imports if i.source in PACKAGES and i.source != "stages"]
    assert not root, f"the root package imports: {root}"


def test_there_is_no_import_cycle(graph: Graph) -> None:
    found = cycles(graph.edges())
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_each_module_imports_only_its_own_layer_or_lower(graph: Graph) -> None:
    upward = [f"{imp} imports the {LAYERS[layer_of(imp.target)][0]} layer from the "
              f"{LAYERS[layer_of(imp.source)][0]} layer"
              for imp in graph.imports
              if imp.source not in PACKAGES and layer_of(imp.source) is not None
              and layer_of(imp.target) is not None
              and layer_of(imp.target) < layer_of(imp.source)]
    assert not upward, "imports going up the layers:\n" + "\n".join(upward)


def test_each_module_name_is_in_one_layer(graph: Graph) -> None:
    layers: dict[str, set[str]] = {}
    for module in graph.modules:
        name = module.rpartition(".")[2]
        if module in PACKAGES or name in ("__main__",) or module.startswith(CORE + "."):
            continue
        layer = layer_of(module)
        if layer is not None:
            layers.setdefault(name, set()).add(LAYERS[layer][0])
    shared = {name: sorted(found) for name, found in layers.items() if len(found) > 1}
    assert not shared, f"module names in more than one layer: {shared}"


def test_the_core_and_the_stages_keep_their_boundaries(graph: Graph) -> None:
    core = [str(i) for i in graph.imports
            if i.source.startswith(CORE) and not i.target.startswith(CORE)]
    assert not core, f"the core imports the project: {core}"
    stages = [str(i) for i in graph.imports if i.source.split(".")[0] == "stages"
              and i.target.split(".")[0] != "stages" and not i.target.startswith(CORE)]
    assert not stages, f"stages import more than stages and the core: {stages}"


def test_only_tracking_imports_mlflow(graph: Graph) -> None:
    """MLflow is ``pipeline.tracking``'s business: every other module reaches the store,
    the registry and logged models through it, their types included."""
    outside = sorted(module for module, packages in graph.runtime_packages.items()
                     if "mlflow" in packages and not module.startswith("pipeline.tracking"))
    assert not outside, f"modules that import MLflow outside pipeline.tracking: {outside}"


def test_function_level_imports_are_there_for_start_up_time(graph: Graph) -> None:
    """A project module imported inside a function brings in a heavy package that the
    importing module has not imported yet: anything else is imported at module level."""
    needless = [f"{imp}: brings in none of {sorted(HEAVY)} beyond what "
                f"{imp.source} imports already"
                for imp in graph.imports if imp.in_function
                and not heavy_packages(graph, imp.target) - heavy_packages(graph, imp.source)]
    assert not needless, "function-level imports to move to the top:\n" + "\n".join(needless)


def test_the_checks_see_what_they_look_for(tmp_path: Path) -> None:
    """The graph finds a cycle closed by a function-level import, an upward import, a type
    import and a function-level import of a light module (a check that cannot fail is a
    defect)."""
    files = {
        "pipeline/__init__.py": "",
        "pipeline/run/__init__.py": "",
        "pipeline/run/runner.py": "import pandas\nfrom pipeline.sweeps import callback\n",
        "pipeline/sweeps/__init__.py": "",
        "pipeline/sweeps/callback.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pipeline.config.schema import Config\n"
            "    from mlflow.models import Model\n"
            "def best():\n    from ..run.runner import run\n"
            "    from pipeline.config import schema\n"),
        "pipeline/config/__init__.py": "",
        "pipeline/config/schema.py": "import numpy\ndef f():\n    import mlflow.models\n",
        "stages/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    sample = build_graph(tmp_path)
    assert sorted(map(str, sample.imports)) == [
        "pipeline.run.runner:2 -> pipeline.sweeps.callback",
        "pipeline.sweeps.callback:3 -> pipeline.config.schema (TYPE_CHECKING)",
        "pipeline.sweeps.callback:6 -> pipeline.run.runner (in a function)",
        "pipeline.sweeps.callback:7 -> pipeline.config.schema (in a function)",
    ]
    assert cycles(sample.edges()) == [
        ["pipeline.run.runner", "pipeline.sweeps.callback", "pipeline.run.runner"]]
    assert layer_of("pipeline.run.runner") == 2 and layer_of("pipeline.sweeps.callback") == 1
    assert heavy_packages(sample, "pipeline.run.runner") == {"pandas"}
    assert heavy_packages(sample, "pipeline.config.schema") == set()
    assert sample.runtime_packages["pipeline.config.schema"] == {"numpy", "mlflow"}
    assert sample.runtime_packages["pipeline.sweeps.callback"] == {"typing", "mlflow"}


# -- each meaning defined once ----------------------------------------------------------------
DEFAULT_DIGEST = "d98807e50a83c2bf42dd2cd90c10ba89778a15b55f2b597d1873f00e57bb8eb9"


def _leaves(tree: dict, prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _changed(tree: dict, key: str) -> dict:
    """A copy of ``tree`` with the value at dotted ``key`` replaced (or added)."""
    copy = {k: dict(v) if isinstance(v, dict) else v for k, v in tree.items()}
    node = copy
    *parents, last = key.split(".")
    for part in parents:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[last] = "<changed>"
    return copy


def test_the_default_config_digest_is_unchanged(compose_cfg) -> None:
    """What the default run reports as its config_digest (so its checkpoint and reruns
    stay comparable across versions)."""
    from pipeline.config.digest import config_digest
    from pipeline.config.schema import validate

    assert config_digest(validate(compose_cfg())) == DEFAULT_DIGEST


def test_the_digest_and_the_sweep_leave_out_the_same_settings(compose_cfg) -> None:
    """One list of bookkeeping settings: a setting changes the config digest exactly when a
    sweep counts it as telling one configuration from another (resume, seed groups), except
    a bookkeeping key the sweep itself varies (``train.checkpoint_every=100,150``), which
    then tells its jobs apart too (tests/test_sweep_statistics.py)."""
    from pipeline.config.digest import config_dict, is_bookkeeping, tree_digest
    from pipeline.config.schema import validate
    from pipeline.sweeps.callback import _defining
    from pipeline.tracking.summary import is_seed_param, is_setting

    tree = config_dict(validate(compose_cfg()))
    keys = [*_leaves(tree), "tags.owner"]
    assert {"tracking.uri", "train.threads", "pipeline.plugins", "optimizer.lr"} <= set(keys)
    for key in keys:
        counts = tree_digest(_changed(tree, key)) != tree_digest(tree)
        assert counts is not is_bookkeeping(key), key
        assert bool(_defining([f"{key}=1"])) is counts, key
        if not is_seed_param(key):
            assert is_setting(key) is counts, key


def test_a_checkpoint_is_held_to_the_training_settings_rules(tmp_path: Path) -> None:
    """The loader checks a stored training state by the rules TrainSettings applies to the
    same settings (pipeline/mlp/settings.py), and says so in the same words."""
    import json

    import numpy as np

    from pipeline.mlp import MLP, CheckpointError, TrainSettings

    x = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    model = MLP([2, 3, 1], seed=0)
    model.train(x, np.array([1, 1, 0, 0]), learning_rate=0.1, epochs=1, batch_size=2)
    path = tmp_path / "model.json"
    model.save(path)
    saved = json.loads(path.read_text())
    cases = {  # stored key -> (TrainSettings keyword, a value out of its rule)
        "batch_size": ("batch_size", 0), "weight_decay": ("weight_decay", -1.0),
        "clip": ("clip", "bogus"), "clip_value": ("clip_value", 0.0),
        "shuffle.seed": ("shuffle_seed", -3),
    }
    for stored, (setting, value) in cases.items():
        with pytest.raises(ValueError) as given:
            TrainSettings(learning_rate=0.1, epochs=1, **{setting: value})
        broken = json.loads(json.dumps(saved))
        node = broken["training"]
        *parents, last = stored.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
        path.write_text(json.dumps(broken))
        with pytest.raises(CheckpointError) as loaded:
            MLP.load(path)
        rule = str(given.value).removeprefix(setting)  # " must be ..., got ..." / "unknown ..."
        assert rule.lstrip(": ") in str(loaded.value), (str(given.value), str(loaded.value))
        assert f"training.{stored}" in str(loaded.value)


def test_the_server_tracking_settings_are_the_local_ones_but_the_uri(compose_cfg) -> None:
    import yaml
    from omegaconf import OmegaConf

    written = yaml.safe_load((ROOT / "conf" / "tracking" / "server.yaml").read_text())
    assert set(written) == {"defaults", "uri"}, "server.yaml restates local.yaml's settings"
    local = OmegaConf.to_container(compose_cfg().tracking)
    server = OmegaConf.to_container(compose_cfg("tracking=server").tracking, resolve=True)
    assert server.pop("uri").startswith("http://") and local.pop("uri") is None
    assert server == local
