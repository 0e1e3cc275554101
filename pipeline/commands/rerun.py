"""``python -m pipeline.commands.rerun <run_id> [key=value ...]``: rerun a past run and compare.

Reads the run's recorded config (the resolved ``config.yaml`` artifact) from MLflow,
runs the pipeline again as a new run tagged ``reproduces=<run_id>`` and compares the
two: every per-epoch metric history, the test metrics, the data digests, the final
checkpoint and the predictions. Prints "reproduced bit for bit" or the first
difference, and exits 1 on a difference. Differences in the environment (Python,
packages, BLAS, threads, git commit) are printed as warnings first, since they are
the usual reason for a difference in the last bits.

``--uri <uri>`` or ``tracking.uri=<uri>`` picks the store (default: ``MLFLOW_TRACKING_URI``
if set, else the project's own); any other
``key=value`` changes the config before the rerun (to check that a change shows).

The stored config is data that anyone who can write the store can edit: it is never
resolved, it makes the rerun import no module (``pipeline.plugins`` must be named on the
command line), and its CSV ``data.path`` must hold the data the run was trained on (the
run's ``data_digest``) unless ``data.path=...`` is given; otherwise one line, before any run
starts.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from pipeline.config.digest import OMITTED_AT_DEFAULT, config_dict
from pipeline.config.paths import PROJECT_ROOT
from pipeline.config.schema import validate
from pipeline.environment import canonical_name
from pipeline.errors import PipelineError
from pipeline.run.stored_config import (
    DATA_PATH,
    PLUGINS,
    check_stored_plugins,
    load_stored_config,
    shown_path,
    stored_data_problem,
)
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


def rerun(run_id: str, overrides: list[str]) -> int:
    """Rerun ``run_id`` and compare; return the exit code (0: bit-identical)."""
    # The run and the store bring in MLflow (~1 s): not for a usage error.
    from pipeline.run.runner import run
    from pipeline.tracking.runs import Runs

    named = {o.split("=", 1)[1] for o in overrides if o.startswith("tracking.uri=")}
    if len(named) > 1:
        raise PipelineError(f"rerun: two stores named ({', '.join(sorted(named))}); name the "
                            "run's store once: STORE=<uri> (--uri) or tracking.uri=<uri>")
    uri = next(iter(named), None)
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
    # A setting recorded before it existed reads as its "as before" value: no difference.
    absent = tuple(f"{key}: None -> {value!r}" for key, value in OMITTED_AT_DEFAULT.items())
    changed = [c for c in changed
               if not c.startswith(("tracking.", "train.progress", "train.threads"))
               and c not in absent]
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


def store_options(args: list[str]) -> list[str] | None:
    """``args`` with ``--uri <uri>`` / ``--uri=<uri>`` written as ``tracking.uri=<uri>`` (the
    form the config takes); None if ``--uri`` has no value."""
    out: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--uri":
            arg = f"--uri={next(rest, '')}"
        if arg.startswith("--uri="):
            if not arg.removeprefix("--uri="):
                return None
            arg = "tracking.uri=" + arg.removeprefix("--uri=")
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = store_options(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-") or "=" in args[0]:
        print("usage: python -m pipeline.commands.rerun <run_id> [--uri <uri> | "
              "tracking.uri=<uri>] [key=value ...]", file=sys.stderr)
        return 2
    try:
        return rerun(args[0], args[1:])
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
