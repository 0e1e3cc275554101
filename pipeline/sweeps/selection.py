"""What a sweep selects on, checked when it starts, before any job.

A sweep ranks its runs by ``sweep.metric``. A validation metric (``val_*``, the default)
needs every job to hold out validation data (``split.val_fraction`` > 0 or
``split.folds``): a job without any would have nothing to rank by, so the sweep stops before
its first job with one line naming the fix. A test metric (``test_*``) runs, with one line
saying that the chosen run's test figures are then an optimistically biased estimate.

Which jobs have validation data is read from the sweep's composed config and its overrides:
the sweep's plain values of ``split.val_fraction`` and ``split.folds`` (``-m
split.val_fraction=0,0.2``) and, for a swept config group (``experiment=a,b``, whose options
may set the split), each option's composed config. Optuna's search space is read the same
way (its ``choice``/``range`` values; an ``interval`` is taken to avoid its end points).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from omegaconf import DictConfig

from pipeline.config.schema import SweepConfig
from pipeline.errors import PipelineError
from pipeline.sweeps.composition import parse_overrides

log = logging.getLogger("pipeline.sweep")

SPLIT_KEYS = ("split.val_fraction", "split.folds")
MAX_COMPOSED = 32  # job shapes composed to read a swept group's split at most


def check_selection(config: DictConfig, sweep: SweepConfig,
                    search_space: dict[str, str] | None = None) -> str | None:
    """Raise :class:`PipelineError` (one line) if ``sweep.metric`` is a validation metric
    and a job of this sweep has no validation data; return the warning line for a test
    metric (None otherwise). ``search_space``: Optuna's ``hydra.sweeper.params``."""
    metric = sweep.metric
    if metric.startswith("test_"):
        return (f"sweep.metric={metric} selects on the test split: the chosen run's test "
                f"figures are then an optimistically biased estimate; select on "
                f"val_{metric.removeprefix('test_')} instead (split.val_fraction or split.folds)")
    if not metric.startswith("val_"):
        return None
    for val_fraction, folds, job in _job_splits(config, search_space or {}):
        if folds is None and not float(val_fraction or 0) > 0:
            which = f"the jobs with {' '.join(job)} have" if job else "the jobs have"
            raise PipelineError(
                f"sweep.metric={metric}: {which} no validation data (split.val_fraction=0 "
                f"and split.folds=null, as in the RustNet presets); add "
                f"split.val_fraction=0.2 or split.folds=5, or select on the test split with "
                f"sweep.metric=test_{metric.removeprefix('val_')} (a biased estimate)")
    return None


def _job_splits(config: DictConfig, search_space: dict[str, str]
                ) -> Iterator[tuple[Any, Any, list[str]]]:
    """``(val_fraction, folds, swept)`` for each kind of job the sweep runs, as far as the
    split goes (``swept``: the swept values that make that kind)."""
    task = [str(o) for o in config.hydra.overrides.task]
    choices: dict[str, list[str]] = {}  # key -> the values the sweep gives it
    groups: set[str] = set()
    swept: set[str] = set()
    repository = _repository()
    entries = [*task, *(f"{k}={v}" for k, v in search_space.items())]
    for override in parse_overrides(entries):
        key = override.get_key_element().lstrip("+~")
        group = repository is not None and repository.group_exists(override.key_or_group)
        if key not in SPLIT_KEYS and not (group and override.is_sweep_override()):
            continue
        values = _values(override)
        if values is None:  # an interval: any value inside, no end point
            continue
        choices[key] = values
        if group:
            groups.add(key)
        if override.is_sweep_override():
            swept.add(key)
    split = config.get("split") or {}
    if not choices:
        yield split.get("val_fraction"), split.get("folds"), []
        return
    keys = list(choices)
    combinations = itertools.islice(itertools.product(*(choices[k] for k in keys)),
                                    MAX_COMPOSED)
    for values in combinations:
        job = [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
        shown = [entry for entry, key in zip(job, keys, strict=True) if key in swept]
        if groups:
            composed = _compose(config, task, job)
            if composed is None:  # the sweeper will report what does not compose
                continue
            split = composed.get("split") or {}
            yield split.get("val_fraction"), split.get("folds"), shown
            continue
        given = dict(zip(keys, values, strict=True))
        yield (_number(given.get("split.val_fraction"), split.get("val_fraction")),
               _folds(given.get("split.folds"), split.get("folds")), shown)


def _values(override: Any) -> list[str] | None:
    """An override's values as text: one for a plain value, each for a list, ``choice``
    or ``range``; None for an ``interval``."""
    if not override.is_sweep_override():
        return [override.get_value_element_as_str()]
    if not override.is_discrete_sweep():
        return None
    return list(override.sweep_string_iterator())


def _number(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        return default  # not a number: the config check reports it


def _folds(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    return None if text.strip().lower() in ("null", "none", "") else text


def _repository() -> Any:
    """Hydra's config repository of this process (None outside a Hydra app)."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return None
    return getattr(hydra.config_loader(), "repository", None)


def _compose(config: DictConfig, task: Sequence[str], job: list[str]) -> DictConfig | None:
    """The config of a job of this sweep with the values ``job`` (the task overrides'
    swept values replaced by them, the others' first values)."""
    from hydra.core.global_hydra import GlobalHydra

    given = {entry.split("=", 1)[0] for entry in job}
    overrides = []
    for override in parse_overrides(task):
        key = override.get_key_element()
        if key in given:
            continue
        values = _values(override)
        if values is None:
            continue
        overrides.append(f"{key}={values[0]}")
    try:
        return GlobalHydra.instance().config_loader().load_sweep_config(
            master_config=config, sweep_overrides=[*overrides, *job])
    except Exception as error:  # what does not compose fails the sweep's own check, later
        log.debug("could not compose %s to check its split: %s", job, error)
        return None
