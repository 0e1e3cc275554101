"""The sweep's jobs, composed and checked in the launching process before the parent run
exists: a job that does not compose (a key typo, ``-m optimizer.lrr=0.1,0.2``; an option
that is not there, ``-m data=rf,csvv``) or an error every job would make before its run (a
bad value of a setting the sweep does not vary, a CSV file that is not there) ends the
sweep with one line and no MLflow run, instead of a FAILED parent with nothing under it.
One job per shape is composed (a sweep of plain values has one shape), as the sweeper
does next.

A mistake in some jobs only (one swept value out of range, one swept ``data.path`` that is
missing) is left to those jobs: each records a FAILED child run with its error, and the
others run.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from omegaconf import DictConfig, open_dict

from pipeline.config.schema import typo_line, validate
from pipeline.errors import PipelineError
from pipeline.sweeps.composition import parse_overrides

log = logging.getLogger("pipeline.sweep")

MAX_CHECKED = 16  # jobs composed at most to tell a sweep-wide config error from a job's


def check_jobs(config: DictConfig, search_space: dict[str, str]) -> str | None:
    """Compose one job per shape of the sweep (each combination of its swept config groups,
    the first job first), and check the first job as the job would before its run; return
    the one line of what fails. None when they pass, or when the first job's error is not
    the whole sweep's (another job of the first :data:`MAX_CHECKED` passes)."""
    from hydra.core.global_hydra import GlobalHydra

    repository = GlobalHydra.instance().config_loader().repository
    shapes = _jobs(config, search_space, lambda o: _changes_shape(o, repository))
    first = None
    for job in itertools.islice(shapes, MAX_CHECKED):
        try:
            composed = _compose(config, job)
        except Exception as error:  # Hydra's: a key or an option that is not there
            log.debug("a job of the sweep does not compose: %r", error)
            return one_line(error)
        first = composed if first is None else first
    try:
        _check(first)
    except PipelineError as error:
        jobs = itertools.islice(_jobs(config, search_space, lambda o: True), 1, MAX_CHECKED)
        if any(_passes(config, job) for job in jobs):
            return None
        return str(error)
    return None


def _check(composed: DictConfig) -> None:
    """What a job checks before its run exists: its config, and the input file's first rows
    (a CSV's path, header, label column, delimiter, decimal mark)."""
    checked = validate(composed)
    if checked.data.source == "csv":  # the data steps bring in pandas: only for a CSV
        from pipeline.run.data import check_input_file

        check_input_file(checked)


def _changes_shape(override: Any, repository: Any) -> bool:
    """Whether a swept ``override`` changes what is composed (a config group, ``+``/``~``),
    not only a value set after composing."""
    return (override.is_add() or override.is_force_add() or override.is_delete()
            or override.package is not None or repository.group_exists(override.key_or_group))


def _compose(config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The config of the job with ``overrides``, as the job's own ``validate`` sees it
    (without the ``hydra`` node)."""
    from hydra.core.global_hydra import GlobalHydra

    composed = GlobalHydra.instance().config_loader().load_sweep_config(
        master_config=config, sweep_overrides=list(overrides))
    with open_dict(composed):
        del composed["hydra"]
    return composed


def _passes(config: DictConfig, overrides: Sequence[str]) -> bool:
    try:
        _check(_compose(config, overrides))
    except Exception:
        return False
    return True


def _jobs(config: DictConfig, search_space: dict[str, str],
          varies: Callable[[Any], bool]) -> Iterator[list[str]]:
    """The overrides of the sweep's jobs, first job first (the basic sweeper's order): the
    values in turn of each discrete sweep that ``varies``, the first value of the others;
    an ``interval`` (Optuna) is left at the config's value."""
    task = [str(o) for o in config.hydra.overrides.task]
    given = {entry.split("=", 1)[0].lstrip("+~") for entry in task}
    entries = [*task, *(f"{k}={v}" for k, v in search_space.items() if k not in given)]
    choices: list[list[str]] = []
    for override in parse_overrides(entries):
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif override.is_discrete_sweep():
            key = override.get_key_element()
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
            choices.append(values if varies(override) else values[:1])
    for job in itertools.product(*choices):
        yield list(job)


def one_line(error: BaseException) -> str:
    """Hydra's multi-line composition error as one line: a key or an option that does not
    exist with the closest valid ones, else its lines without Hydra's bookkeeping (as
    ``python -m pipeline`` prints it for a run)."""
    typo = typo_line(error)
    if typo is not None:
        return typo
    text = "\n".join(str(e) for e in (error, error.__cause__) if e is not None and str(e))
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip().rstrip(".")
        if not line or line.startswith(("full_key:", "object_type=", "reference_type=",
                                        "Config search path", "provider=")):
            continue
        if raw.startswith(("\t", "    ")) and parts and parts[-1].startswith("Available"):
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            continue
        parts.append(line)
    return "; ".join(dict.fromkeys(parts)) or type(error).__name__
