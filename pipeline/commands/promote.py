"""``python -m pipeline.commands.promote``: register a run's model and move an alias to it
if it is not worse than the version holding the alias (``make promote``).

    python -m pipeline.commands.promote <run id> [--name NAME] [--alias champion] [--force]
        [--metric accuracy|log_loss] [--margin 0] [--uri STORE] [--plugins my_transforms]

1. The run's model (logged first if the run is a lean sweep child, as ``make log-model``
   does) becomes a new version of the registered model NAME (default: the run's experiment's
   name), tagged with its run id, config and data digests, git commit and test/validation
   figures; the registered model's description says what it predicts.
2. Under the registry's promotion lock (:mod:`pipeline.tracking.registry`): no holder of
   the alias -> the alias is set. Otherwise, on the same data digest, both models predict the
   challenger's test rows (:mod:`pipeline.run.promotion`) and the alias moves only if the
   challenger is not worse by ``--metric`` beyond ``--margin``; else one line says why, the
   exit is 1, and the version stays registered without the alias. Different data: refused
   unless ``--force`` (recorded on the version as ``promotion.forced``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.run.backfill import complete_run
from pipeline.run.promotion import METRICS, gate, run_model, scores, test_rows
from pipeline.tracking import registry
from pipeline.tracking.completion import open_run
from pipeline.tracking.record import CONFIG_DIGEST_TAG, DATA_DIGEST_TAG
from pipeline.tracking.store import store_uri

DEFAULT_ALIAS = "champion"
HEADLINE = ("accuracy", "f1", "roc_auc", "log_loss")  # the figures copied onto a version
# A test hook: seconds to wait between reading the alias holder and moving the alias, so a
# test can run two promotions into each other (the lock must serialise them).
PAUSE_ENV = "PIPELINE_PROMOTE_PAUSE_S"


def _version_tags(run: object, force: bool) -> dict[str, str]:
    """The tags tying a version to its run (see the module doc)."""
    data, info = run.data, run.info  # type: ignore[attr-defined]
    tags = {registry.RUN_ID_TAG: info.run_id}
    for key in (CONFIG_DIGEST_TAG, DATA_DIGEST_TAG, "data.test_digest", "git_commit",
                "git_dirty"):
        if key in data.tags:
            tags[key] = str(data.tags[key])
    for split in ("test", "val"):
        for metric in HEADLINE:
            value = data.metrics.get(f"{split}_{metric}")
            if value is not None:
                tags[f"{split}_{metric}"] = f"{value:.6g}"
    if force:
        tags[registry.FORCED_TAG] = "true"
    return tags


def _description(features: list[str], classes: list[str], label: str) -> str:
    return (f"Predicts {label!r} (classes {', '.join(map(str, classes))}) from the raw "
            f"feature columns {', '.join(map(str, features))}; output: predicted_label, "
            "probability and probability_<class>. An MLP of mlp-pipeline.")


def _pause() -> None:
    try:
        seconds = float(os.environ.get(PAUSE_ENV, "0") or 0)
    except ValueError:
        seconds = 0.0
    if seconds > 0:
        time.sleep(seconds)


def promote(run_id: str, *, uri: str | None, name: str | None, alias: str, force: bool,
            metric: str, margin: float, plugins: list[str]) -> int:
    """Register and gate (see the module doc); the exit status."""
    if metric not in METRICS:
        raise PipelineError(f"--metric {metric!r}: the gate decides on one of {list(METRICS)}")
    if margin < 0:
        raise PipelineError(f"--margin {margin:g}: give a margin >= 0 (how much worse a "
                            "challenger may be)")
    problem = registry.check_alias(alias)
    if problem:
        raise PipelineError(f"ALIAS={alias}: {problem}")
    uri = store_uri(uri)
    problem = registry.server_problem(uri)
    if problem:
        raise PipelineError(problem)
    target = open_run(uri, run_id)
    run_id = target.run_id
    if target.status != "FINISHED":
        raise PipelineError(f"run {run_id} ended {target.status}: only a FINISHED run can be "
                            "promoted")
    client = target.store.client
    run = target.store.call("read the run", lambda: client.get_run(run_id))
    if name is None:
        name = target.store.call("read the experiment",
                                 lambda: client.get_experiment(target.experiment_id)).name
    problem = registry.check_name(name)
    if problem:
        raise PipelineError(f"NAME={name}: {problem}; name it: make promote ... NAME=<name>")
    current = registry.alias_holder(client, name, alias)
    if current is not None and current.run_id == run_id:
        print(f"{name}@{alias} is version {current.version}, already run {run_id}'s model; "
              "nothing to do")
        return 0

    completion = complete_run(run_id, uri=uri, model=True, plots=False)
    for line in completion.lines() if completion.model_added else []:
        print(line)
    with tempfile.TemporaryDirectory(prefix="pipeline-promote-") as tmp:
        folder = Path(tmp)
        network, preprocessor = run_model(target, folder)
        registry.ensure_registered_model(client, name, _description(
            list(preprocessor.feature_names), list(preprocessor.classes),
            preprocessor.label_name))
        version = str(registry.create_version(client, name, str(completion.model_uri), run_id,
                                              _version_tags(run, force)).version)
        print(f"registered run {run_id} as {name} version {version} (models:/{name}/{version})")
        rows, rows_problem = None, None
        try:  # before the lock: rebuilding the data may take a while
            rows = test_rows(target, folder, plugins)
        except PipelineError as error:
            rows_problem = str(error)

        moved: list[bool] = []

        def decide(reason: str, forced: bool = False) -> None:
            registry.set_alias(client, name, alias, version)
            moved.append(True)
            registry.tag_version(client, name, version, {registry.GATE_TAG: reason[:5000]})
            how = " (FORCE=1)" if forced else ""
            print(f"{name}@{alias} -> version {version}{how}: {reason}")

        def refuse(reason: str, holder: str) -> int:
            registry.tag_version(client, name, version,
                                 {registry.GATE_TAG: f"refused: {reason}"[:5000]})
            print(f"error: make promote: refused, {name}@{alias} stays at version {holder} "
                  f"(version {version} stays registered without it): {reason}",
                  file=sys.stderr)
            return 1

        try:
            with registry.promotion_lock(client, name):
                holder = registry.alias_holder(client, name, alias)
                previous = str(holder.version) if holder is not None else "none"
                registry.tag_version(client, name, version, {registry.PREVIOUS_TAG: previous})
                _pause()
                if holder is None:
                    decide(f"first holder of @{alias}")
                    return 0
                ours, theirs = target.tags.get(DATA_DIGEST_TAG), holder.tags.get(DATA_DIGEST_TAG)
                if not ours or ours != theirs:
                    reason = (f"its data (digest {str(ours)[:12]}) differ from version "
                              f"{holder.version}'s ({str(theirs)[:12]}), so they cannot be "
                              "compared on the same rows")
                    if force:
                        decide(reason, forced=True)
                        return 0
                    return refuse(f"{reason}; promote anyway: make promote RUN_ID={run_id} "
                                  "FORCE=1", holder.version)
                try:
                    if rows is None:
                        raise PipelineError(str(rows_problem))
                    if not holder.run_id:
                        raise PipelineError(f"version {holder.version} names no run, so its model "
                                            "cannot be compared")
                    other = open_run(uri, holder.run_id)
                    result = gate(scores(network, preprocessor, rows, "the challenger"),
                                  scores(*run_model(other, folder), rows,
                                         f"version {holder.version}"),
                                  metric=metric, margin=margin)
                except PipelineError as error:
                    if force:
                        decide(f"not compared ({error})", forced=True)
                        return 0
                    return refuse(f"cannot compare: {error}; promote anyway with FORCE=1",
                                  holder.version)
                line = f"{result.summary()} (vs version {holder.version})"
                if result.passed:
                    decide(f"not worse: {line}")
                    return 0
                if force:
                    decide(f"worse: {line}", forced=True)
                    return 0
                return refuse(f"worse: {line}", holder.version)

        except PipelineError as error:  # the store failed half-way: say what is left
            state = "now points at it" if moved else "was not moved"
            raise PipelineError(f"{error} (version {version} of {name} is registered with "
                                f"its run's tags; @{alias} {state}: promote again, or "
                                "delete the version in the MLflow UI)") from None

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.commands.promote",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_id", help="the run whose model to promote")
    parser.add_argument("--name", default=None, help="registered model name (default: the "
                        "run's experiment name)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="the alias to move "
                        f"(default: {DEFAULT_ALIAS})")
    parser.add_argument("--force", action="store_true", help="move the alias whatever the "
                        "gate says (recorded on the version)")
    parser.add_argument("--metric", default="accuracy", help="what the gate decides on: "
                        "accuracy (default) or log_loss")
    parser.add_argument("--margin", type=float, default=0.0, help="how much worse than the "
                        "holder a challenger may be (default 0)")
    parser.add_argument("--uri", default=None, help="the store's tracking URI")
    parser.add_argument("--plugins", default="", help="comma-separated modules the run's "
                        "transforms come from (its pipeline.plugins), to rebuild its test rows")
    args = parser.parse_args(argv)
    plugins = [p.strip() for p in args.plugins.split(",") if p.strip()]
    try:
        return promote(args.run_id, uri=args.uri, name=args.name, alias=args.alias,
                       force=args.force, metric=args.metric, margin=args.margin,
                       plugins=plugins)
    except PipelineError as error:
        print(f"error: make promote: {str(error).splitlines()[0] if str(error) else error}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make promote: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
