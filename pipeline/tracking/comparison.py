"""What differs between runs, read from a store as plain values (``python -m
pipeline.commands.compare``).

:func:`compare` reads each run once (``get_run``), expands a sweep's parent into its
children, and reads artifacts only where needed: every run's ``environment.json`` (the
package versions) and, for exactly two runs, their ``history.csv`` (every epoch; the
store may hold thinned points) to find where each metric's history diverges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.environment import canonical_name
from pipeline.errors import PipelineError
from pipeline.tracking import record as names
from pipeline.tracking.runs import (
    HistoryError,
    Runs,
    RunView,
    compare_url,
    read_history,
    run_url,
)
from pipeline.tracking.store import sqlite_path, store_uri

if TYPE_CHECKING:
    import pandas as pd

ENVIRONMENT = ("python_version", "platform", "blas", "blas_threads", names.THREADS_TAG)
DIGESTS = ("config_digest", *names.DIGEST_TAGS)
CODE = ("git_commit", "git_dirty")
ENVIRONMENT_ARTIFACT = "environment.json"
TIME_METRIC_PREFIX = "time_"  # per-stage wall times: time_<stage>_s

History = dict[str, dict[int, float]]  # metric -> epoch -> value


@dataclass(frozen=True)
class Values:
    """One name and each run's value, in run order (None: the run has none)."""

    name: str
    values: tuple[Any, ...]

    @property
    def same(self) -> bool:
        first = self.values[0]
        return all(_equal(first, value) for value in self.values[1:])


@dataclass(frozen=True)
class Divergence:
    """Where one metric's per-epoch history first differs between two runs."""

    metric: str
    epoch: int | None  # the first epoch (of those both recorded) whose values differ
    values: tuple[float | None, float | None]  # the two values at ``epoch``
    common: int  # epochs recorded by both runs
    lengths: tuple[int, int]  # epochs recorded by each run

    @property
    def identical(self) -> bool:
        return self.epoch is None and self.lengths[0] == self.lengths[1] == self.common


@dataclass(frozen=True)
class Comparison:
    """Everything ``pipeline.commands.compare`` shows, in the order of ``runs``."""

    uri: str
    runs: tuple[RunView, ...]
    parents: tuple[RunView, ...]  # sweep parents given, expanded into their children
    params: tuple[Values, ...]  # every param of any run
    metrics: tuple[Values, ...]  # final metrics but the stage times
    timings: tuple[Values, ...]  # time_<stage>_s
    environment: tuple[Values, ...]
    packages: tuple[Values, ...]  # every package of any run (canonical names)
    without_packages: tuple[str, ...]  # run ids with no environment.json
    digests: tuple[Values, ...]  # config_digest, then record.DIGEST_TAGS
    code: tuple[Values, ...]
    divergence: tuple[Divergence, ...] | None  # two runs only
    history_sources: tuple[str, ...]  # per run: "history.csv" or "store" (two runs only)
    run_urls: tuple[str, ...]
    compare_url: str


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _rows(name_sets: Sequence[dict[str, Any]]) -> tuple[Values, ...]:
    """One :class:`Values` per name in any mapping, names in first-seen order."""
    order = list(dict.fromkeys(name for mapping in name_sets for name in mapping))
    return tuple(Values(name, tuple(mapping.get(name) for mapping in name_sets))
                 for name in order)


def _open(uri: str | None) -> Runs:
    """The store at ``uri``; a sqlite file that does not exist is an error, not a new store."""
    db = sqlite_path(store_uri(uri))
    if db is not None and not db.is_file():
        raise PipelineError(f"no MLflow store at {db} (from {store_uri(uri)}); "
                            "pass --uri <tracking uri> of an existing store")
    return Runs(uri)


def _children(runs: Runs, parent: RunView) -> list[RunView]:
    """A sweep parent's child runs, oldest first."""
    client = runs.store.client
    found = runs.store.call("list the sweep's runs", lambda: client.search_runs(
        [parent.experiment_id], filter_string=f"tags.{names.PARENT_TAG} = '{parent.run_id}'",
        max_results=10000))
    found = sorted(found, key=lambda run: (run.info.start_time or 0, run.info.run_id))
    return [RunView(run.info.run_id, run.info.experiment_id, run.info.run_name or "",
                    run.info.status, dict(run.data.params), dict(run.data.tags),
                    dict(run.data.metrics)) for run in found]


def resolve(runs: Runs, run_ids: Sequence[str]) -> tuple[list[RunView], list[RunView]]:
    """The runs to compare (a sweep parent replaced by its children) and the parents."""
    cache: dict[str, RunView] = {}
    chosen: list[RunView] = []
    parents: list[RunView] = []
    for run_id in run_ids:
        if run_id not in cache:
            cache[run_id] = runs.get(run_id)
        run = cache[run_id]
        if run.tags.get(names.SWEEP_TAG) == "parent":
            children = _children(runs, run)
            if not children:
                raise PipelineError(f"run {run_id} is a sweep's parent with no child runs "
                                    f"in {runs.uri}: nothing to compare")
            parents.append(run)
            chosen += children
        else:
            chosen.append(run)
    if not chosen:
        raise PipelineError("no run to compare: pass two or more run ids, or a sweep's "
                            "parent run id")
    if len(chosen) == 1:
        raise PipelineError(
            f"only one run ({chosen[0].run_id}): nothing to compare it with; pass two or "
            "more run ids, or a sweep's parent run id"
            + (" (this sweep has one child)" if parents else ""))
    return chosen, parents


def _packages(runs: Runs, run_ids: Sequence[str]) -> list[dict[str, str] | None]:
    read: dict[str, dict[str, str] | None] = {}
    for run_id in dict.fromkeys(run_ids):
        try:
            recorded = runs.read_json(run_id, ENVIRONMENT_ARTIFACT)
        except ValueError:  # not JSON: as good as missing
            recorded = None
        packages = recorded.get("packages") if isinstance(recorded, dict) else None
        read[run_id] = ({canonical_name(k): str(v) for k, v in packages.items()}
                        if isinstance(packages, dict) else None)
    return [read[run_id] for run_id in run_ids]


def as_history(frame: pd.DataFrame) -> History:
    """:func:`~pipeline.tracking.runs.read_history`'s frame as metric -> epoch -> value."""
    epochs = frame["epoch"].tolist()
    return {str(key): dict(zip(epochs, frame[key].tolist(), strict=True))
            for key in frame.columns[1:]}


def _history(runs: Runs, run: RunView) -> tuple[History, str]:
    """A run's per-epoch metrics: from its history.csv (every epoch) when it has one, else
    from the store (which may hold thinned points)."""
    try:
        frame = read_history(runs, run.run_id)
    except HistoryError:
        frame = None
    history = as_history(frame) if frame is not None else {}
    if history:
        return history, names.HISTORY_ARTIFACT
    keys = sorted(k for k in run.metrics if not k.startswith(TIME_METRIC_PREFIX))
    logged = runs.histories(run.run_id, keys)
    # Per-epoch metrics have points at several steps from 1; the final figures are logged
    # once (test_* at step 0, val_* at the last epoch, after that epoch's own point).
    return {key: dict(points) for key, points in logged.items()
            if len({step for step, _ in points if step > 0}) > 1}, "store"


def diverge(a: History, b: History) -> tuple[Divergence, ...]:
    """Per metric (in ``a``'s order, then ``b``'s), the first epoch both recorded where the
    values differ (bit for bit; NaN equals NaN)."""
    found = []
    for key in dict.fromkeys([*a, *b]):
        first, second = a.get(key, {}), b.get(key, {})
        common = sorted(set(first) & set(second))
        epoch = next((e for e in common if not _equal(first[e], second[e])), None)
        values = (first.get(epoch), second.get(epoch)) if epoch is not None else (None, None)
        found.append(Divergence(key, epoch, values, len(common), (len(first), len(second))))
    return tuple(found)


def compare(uri: str | None, run_ids: Sequence[str]) -> Comparison:
    """Compare the runs ``run_ids`` (a sweep's parent stands for its children) in the store
    at ``uri`` (default: the project's); a :class:`PipelineError` with one line if a run is
    missing, the store does not exist, or there are fewer than two runs."""
    runs = _open(uri)
    chosen, parents = resolve(runs, run_ids)
    ids = [run.run_id for run in chosen]
    metrics = [{k: v for k, v in run.metrics.items() if not k.startswith(TIME_METRIC_PREFIX)}
               for run in chosen]
    timings = [{k: v for k, v in run.metrics.items() if k.startswith(TIME_METRIC_PREFIX)}
               for run in chosen]
    packages = _packages(runs, ids)
    divergence: tuple[Divergence, ...] | None = None
    sources: tuple[str, ...] = ()
    if len(chosen) == 2:
        read = {run.run_id: _history(runs, run) for run in chosen}  # once for a run twice
        (a, source_a), (b, source_b) = read[ids[0]], read[ids[1]]
        divergence, sources = diverge(a, b), (source_a, source_b)
    return Comparison(
        uri=runs.uri,
        runs=tuple(chosen),
        parents=tuple(parents),
        params=_rows([run.params for run in chosen]),
        metrics=_rows(metrics),
        timings=_rows(timings),
        environment=tuple(Values(tag, tuple(run.tags.get(tag) for run in chosen))
                          for tag in ENVIRONMENT),
        packages=_rows([p for p in packages if p is not None]) if all(
            p is not None for p in packages) else (),
        without_packages=tuple(dict.fromkeys(
            run_id for run_id, p in zip(ids, packages, strict=True) if p is None)),
        digests=tuple(Values(tag, tuple(run.tags.get(tag) for run in chosen))
                      for tag in DIGESTS),
        code=tuple(Values(tag, tuple(run.tags.get(tag) for run in chosen)) for tag in CODE),
        divergence=divergence,
        history_sources=sources,
        run_urls=tuple(run_url(runs.uri, run.experiment_id, run.run_id) for run in chosen),
        compare_url=compare_url(runs.uri, [run.experiment_id for run in chosen],
                                list(dict.fromkeys(ids))),
    )
