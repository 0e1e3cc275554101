"""``python -m pipeline.rerun <run_id> [key=value ...]``: rerun a past run and compare.

Reads the run's recorded config (the resolved ``config.yaml`` artifact) from MLflow,
runs the pipeline again as a new run tagged ``reproduces=<run_id>`` and compares the
two: every per-epoch metric history, the test metrics, the data digests, the final
checkpoint and the predictions. Prints "reproduced bit for bit" or the first
difference, and exits 1 on a difference. Differences in the environment (Python,
packages, BLAS, threads, git commit) are printed as warnings first, since they are
the usual reason for a difference in the last bits.

``tracking.uri=<uri>`` picks the store (default: the project's own); any other
``key=value`` changes the config before the rerun (to check that a change shows).

The stored config is data that anyone who can write the store can edit: it is never
resolved, it makes the rerun import no module (``pipeline.plugins`` must be named on the
command line), and its CSV ``data.path`` must hold the data the run was trained on (the
run's ``data_digest``) unless ``data.path=...`` is given; otherwise one line, before any run
starts.
"""

from __future__ import annotations

import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf

from pipeline.environment import canonical_name
from pipeline.errors import PipelineError
from pipeline.tracking.record import (
    DATA_DIGEST_TAG,
    DIGEST_TAGS,
    ENVIRONMENT_TAGS,
    REPRODUCED_TAG,
    REPRODUCES_TAG,
    THREADS_TAG,
)

if TYPE_CHECKING:
    from pipeline.tracking.runs import Runs, RunView

@dataclass
class Difference:
    what: str
    where: str
    original: Any
    rerun: Any

    def __str__(self) -> str:
        return f"{self.what} differs{self.where}: original {self.original!r}, rerun {self.rerun!r}"


def _histories(runs: Runs, run: RunView) -> dict[str, list[tuple[int, float]]]:
    return runs.histories(run.run_id, sorted(k for k in run.metrics if not k.startswith("time_")))


def _first_in(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]]
              ) -> Difference | None:
    """The difference at the earliest step across the metric histories in ``a`` and ``b``."""
    earliest: tuple[int, Difference] | None = None
    for key in sorted(a):
        for (step_a, value_a), (step_b, value_b) in zip(a[key], b[key], strict=False):
            if step_a != step_b or value_a != value_b:
                if earliest is None or step_a < earliest[0]:
                    found = Difference(f"metric {key}", f" at step {step_a}", value_a, value_b)
                    earliest = (step_a, found)
                break
        else:
            if len(a[key]) != len(b[key]) and earliest is None:
                earliest = (0, Difference(f"metric {key}", " (history length)", len(a[key]),
                                          len(b[key])))
    return earliest[1] if earliest else None


def first_difference(runs: Runs, original: RunView, rerun: RunView) -> Difference | None:
    """The first difference between two runs' results, or None when bit-identical.

    Order: the per-epoch histories (earliest epoch first), then the final metrics, then
    the data digests, the checkpoint and the predictions.
    """
    a, b = _histories(runs, original), _histories(runs, rerun)
    if sorted(a) != sorted(b):
        return Difference("the set of metrics", "", sorted(a), sorted(b))
    per_epoch = {k for k, points in a.items() if any(step > 0 for step, _ in points)}
    for keys in (per_epoch, set(a) - per_epoch):
        found = _first_in({k: a[k] for k in keys}, {k: b[k] for k in keys})
        if found is not None:
            return found
    for tag in DIGEST_TAGS:
        value_a, value_b = original.tags.get(tag), rerun.tags.get(tag)
        if value_a != value_b:
            artifact = {"checkpoint_sha256": " (artifact checkpoints/final.json)",
                        "predictions_sha256": " (artifact predictions.csv)"}.get(tag, "")
            return Difference(f"tag {tag}", artifact, value_a, value_b)
    return None


def environment_differences(runs: Runs, original: RunView, current: RunView) -> list[str]:
    """Human-readable differences between two runs' recorded environments."""
    notes = []
    for tag in ENVIRONMENT_TAGS:
        value_a, value_b = original.tags.get(tag), current.tags.get(tag)
        if value_a != value_b:
            notes.append(f"{tag}: {value_a} -> {value_b}")
    packages: list[dict[str, str] | None] = []
    for run in (original, current):
        recorded = runs.read_json(run.run_id, "environment.json")
        packages.append({canonical_name(k): v for k, v in recorded.get("packages", {}).items()}
                        if isinstance(recorded, dict) else None)
    if packages[0] is not None and packages[1] is not None:
        for name in sorted(set(packages[0]) | set(packages[1])):
            old, new = packages[0].get(name), packages[1].get(name)
            if old != new:
                notes.append(f"package {name}: {old} -> {new}")
    return notes


def _config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load that refuses YAML aliases: a stored config never has them (it is written
    by yaml.safe_dump of fresh dicts), and a crafted one could expand exponentially."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"a YAML alias at line {mark.line + 1}")
        return super().compose_node(parent, index)


_PLAIN = (str, int, float, bool, type(None))  # what yaml.safe_dump of a config writes


def _foreign(node: Any, where: str = "") -> tuple[str, Any] | None:
    """The first key (dotted path) whose name or value holds ``${``, or whose value is not a
    plain YAML scalar, mapping or list; and that name or value."""
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}.{key}" if where else str(key)
            if "${" in str(key):
                return path, str(key)
            found = _foreign(value, path)
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found = _foreign(item, f"{where}[{i}]")
            if found is not None:
                return found
    elif (isinstance(node, str) and "${" in node) or not isinstance(node, _PLAIN):
        return where, node
    return None


def load_stored_config(run_id: str, text: str) -> dict[str, Any]:
    """The run's stored config.yaml as a plain dict, refused (PipelineError, one line) unless
    it is a YAML mapping free of interpolations.

    The stored config is the RESOLVED config, so any ``${...}`` in it (oc.env, oc.decode,
    a custom resolver, even a plain reference) did not come from this pipeline; resolving
    it would read the rerunning user's environment or files. Nothing is resolved here.
    """
    where = f"rerun: the stored config of run {run_id}"
    try:
        recorded = yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader: plain types only
    except (yaml.YAMLError, RecursionError) as error:
        problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise PipelineError(f"{where} is not plain YAML ({problem}); refusing it") from None
    if not isinstance(recorded, dict):
        raise PipelineError(f"{where} is {type(recorded).__name__}, not a mapping; refusing it")
    found = _foreign(recorded)
    if found is not None:
        key, value = found
        if not isinstance(value, str):
            raise PipelineError(f"{where} has a {type(value).__name__} at {key}, which no "
                                "config holds; refusing it")
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise PipelineError(f"{where} has an interpolation at {key} ({shown!r}); refusing "
                            "to resolve it")
    return recorded


# -- what a stored config may not decide ------------------------------------------------------
PLUGINS = "pipeline.plugins"
DATA_PATH = "data.path"
_MODULE_NAME = re.compile(r"[\w.\-]+")
# Why a stored data.path is refused (stored_data_problem), as callers tell them apart.
NO_DIGEST = "the run has no data_digest tag to check it against"
NO_FILE = "it does not exist"


def given_on_command_line(overrides: list[str], key: str) -> tuple[bool, Any]:
    """Whether ``key=value`` is among ``overrides``, and its value as the rerun reads it."""
    mine = [o for o in overrides if o.startswith(f"{key}=")]
    if not mine:
        return False, None
    try:
        value = OmegaConf.select(OmegaConf.from_dotlist(mine), key)
    except Exception:  # a value OmegaConf cannot read: validation reports it
        return True, None
    return True, OmegaConf.to_object(value) if OmegaConf.is_config(value) else value


def rerun_command(run_id: str, overrides: list[str], key: str) -> Callable[[str], str]:
    """``make rerun RUN_ID=<id> ARGS="<the overrides given> key=<value>"`` for a value."""
    kept = [o for o in overrides if not o.startswith(f"{key}=")]
    return lambda value: (f'make rerun RUN_ID={run_id} ARGS="'
                          + " ".join([*kept, f"{key}={value}"]) + '"')


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_stored_plugins(run_id: str, recorded: dict[str, Any], named: Any,
                         command: Callable[[str], str]) -> None:
    """Refuse (PipelineError, one line) a stored config whose ``pipeline.plugins`` names a
    module that ``named`` (what the user gave on the command line) does not: importing it
    would run code that anyone who can write the store chose. ``command`` gives the command
    that accepts them, for a ``[a,b]`` value. Nothing is imported here."""
    group = recorded.get("pipeline")
    stored = group.get("plugins") if isinstance(group, dict) else None
    if stored is None or stored == []:
        return
    where = f"run {run_id}'s stored config"
    if not isinstance(stored, list) or not all(isinstance(n, str) for n in stored):
        raise PipelineError(f"{where} has {PLUGINS} {_shown(stored)}, not a list of module "
                            "names; refusing it")
    odd = next((n for n in stored if not _MODULE_NAME.fullmatch(n)), None)
    if odd is not None:
        raise PipelineError(f"{where} has {PLUGINS} entry {_shown(odd)}, which is not a "
                            "module name; refusing it")
    accepted = named if isinstance(named, list) else []
    if all(name in accepted for name in stored):
        return
    both = [*stored, *(n for n in accepted if isinstance(n, str) and n not in stored)]
    one = len(stored) == 1
    raise PipelineError(
        f"{where} names {PLUGINS} [{', '.join(stored)}], and code that a stored config "
        f"names is never imported; if you trust {'it' if one else 'them'}, name "
        f"{'it' if one else 'them'}: {command('[' + ','.join(both) + ']')}")


def stored_data_problem(data_node: Any, recorded_digest: str | None) -> tuple[Path, str] | None:
    """Why a stored CSV ``data.path`` does not hold the data its run was trained on (the
    path and a reason that quotes nothing of the file), or None when it does: loaded with
    the stored data settings, its digest must be the run's ``data_digest``. The CSV loader's
    own errors quote the offending value, so none is passed on. Generated data
    (data.source=rf) reads no file: nothing to check. ConfigError for bad stored settings.
    """
    from pipeline.schema import validate_data
    from stages.load_csv import check_csv_path, load_csv

    data = validate_data(data_node)  # the stored settings, as the run used them
    if data.source != "csv":
        return None
    path = Path(data.path)
    if recorded_digest is None:
        return path, NO_DIGEST
    if not path.exists():
        return path, NO_FILE
    try:
        check_csv_path(path)  # a pipe or a device is never opened
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dropped rows: counted in a warning
            loaded = load_csv(path, label_column=data.label_column, header=data.header,
                              delimiter=data.delimiter, drop_na=data.drop_na,
                              decimal=data.decimal)
    except Exception:  # any failure means: not that run's CSV
        return path, "it does not load as that run's CSV"
    if loaded.digest() != recorded_digest:
        return path, "its rows are not that run's data"
    return None


def shown_path(path: Path) -> str:
    """A path on one line (repr when it holds control characters)."""
    return str(path) if str(path).isprintable() else repr(str(path))


def rerun(run_id: str, overrides: list[str]) -> int:
    """Rerun ``run_id`` and compare; return the exit code (0: bit-identical)."""
    from pipeline.paths import PROJECT_ROOT
    from pipeline.runner import config_dict, run
    from pipeline.schema import validate
    from pipeline.tracking.runs import Runs

    uri = next((o.split("=", 1)[1] for o in overrides if o.startswith("tracking.uri=")), None)
    changes = [o for o in overrides if not o.startswith("tracking.uri=")]
    runs = Runs(uri)
    original = runs.get(run_id)
    text = runs.read_text(run_id, "config.yaml")
    if text is None:
        raise PipelineError(
            f"run {run_id} has no config.yaml artifact (a failed run, or not made by this "
            "pipeline); only finished pipeline runs can be rerun"
        )
    recorded = load_stored_config(run_id, text)  # before anything could resolve it
    try:  # before validate imports any plugin
        check_stored_plugins(run_id, recorded, given_on_command_line(changes, PLUGINS)[1],
                             rerun_command(run_id, overrides, PLUGINS))
    except PipelineError as error:
        raise PipelineError(f"rerun: {error}") from None
    cfg = OmegaConf.create(recorded)
    cfg.tracking.uri = runs.uri
    cfg.tracking.mode = "online"  # compared with the original, in its store
    cfg.train.progress = "false"
    cfg.tracking.run_name = f"{(original.name or run_id)[:243]}-rerun"  # told apart in the UI
    if changes:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(changes))
    config = validate(cfg)
    if not given_on_command_line(changes, DATA_PATH)[0]:  # else the user chose the file
        # Before any run starts: nothing of another file may reach a message or a tag.
        problem = stored_data_problem(recorded.get("data"), original.tags.get(DATA_DIGEST_TAG))
        if problem is not None:
            path, reason = problem
            command = rerun_command(run_id, overrides, DATA_PATH)
            raise PipelineError(
                f"rerun: {shown_path(path)} ({DATA_PATH} in run {run_id}'s stored config) does "
                f"not hold the data run {run_id} was trained on ({reason}); to rerun on "
                f"another file, name it: {command('<file>')}")
    # A sweep job ran with its share of the cores; BLAS thread counts can change the last bits.
    threads = original.tags.get(THREADS_TAG, "default")
    if config.train.threads is None and threads.isdigit():
        config.train.threads = int(threads)
    changed = _config_changes(recorded, config_dict(config))
    changed = [c for c in changed
               if not c.startswith(("tracking.", "train.progress", "train.threads"))]
    for change in changed:
        print(f"config differs from the original: {change}")

    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    output_dir = PROJECT_ROOT / "outputs" / "reruns" / f"{stamp}-{run_id[:8]}"
    result = run(config, output_dir=output_dir, overrides=[f"rerun of {run_id}", *changes],
                 extra_tags={REPRODUCES_TAG: run_id})
    assert result.run_id is not None  # online, see above
    new = runs.get(result.run_id)
    for note in environment_differences(runs, original, new):
        print(f"warning: environment differs: {note}")
    difference = first_difference(runs, original, new)
    print(f"rerun: MLflow run {result.run_id} ({result.url})")
    if difference is None:
        runs.set_tags(result.run_id, {REPRODUCED_TAG: "bit for bit"})
        print(f"reproduced bit for bit: run {result.run_id} equals run {run_id}")
        return 0
    runs.set_tags(result.run_id, {REPRODUCED_TAG: f"no: {difference}"[:5000]})
    print(f"NOT reproduced: {difference}")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0].startswith("-") or "=" in args[0]:
        print("usage: python -m pipeline.rerun <run_id> [tracking.uri=<uri>] [key=value ...]",
              file=sys.stderr)
        return 2
    try:
        return rerun(args[0], args[1:])
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
