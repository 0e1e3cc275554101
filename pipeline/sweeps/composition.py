"""Composing a sweep's jobs cheaply: each shape of job is composed once per process.

Hydra composes every job of a sweep twice: the sweeper composes each job of a batch only to
check that it composes, and the launcher composes it again to run it, in its worker. Each
composition reads and merges YAML files and builds defaults lists, which costs about as much
as a small model's whole training. Jobs whose overrides differ only in plain ``key=value``
settings share a shape (:class:`_Job`): the first of a shape is composed, the others' values
are applied to a copy of it with the function Hydra's composition applies them with.

* :func:`check_jobs_cheaply` has the sweeper check a batch that way (:func:`check_batch`);
* :func:`compose_by_shape` does it for ``ConfigLoaderImpl.load_sweep_config``, which the
  launchers call to compose each job.

:class:`pipeline.sweeps.callback.SweepCallback` switches both on when a sweep starts and off when it
ends (``on=False``); each warm joblib worker switches :func:`compose_by_shape` on as well.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


def parse_overrides(entries: Sequence[str]) -> list[Any]:
    """Hydra's parsed ``entries``, able to list their values: a ``glob(...)`` over a config
    group's options needs the config loader, which Hydra's sweepers set and a bare parse
    does not ("ConfigLoader is not set")."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(entries))
    hydra = GlobalHydra.instance()
    if hydra.is_initialized():
        for override in parsed:
            override.config_loader = hydra.config_loader()
    return parsed


def check_jobs_cheaply(on: bool = True) -> None:
    """Have the sweeper check a batch of jobs by composing one job per shape.

    Before launching, a Hydra sweeper composes every job of the batch only to check that
    it composes (the launcher composes each job again to run it, in its worker). Composing
    costs about as much as a small model's whole training, and in a parallel sweep the
    checks run one after another before any job starts. Jobs whose overrides differ only
    in plain ``key=value`` settings (no config group, no ``+``/``~``/``hydra.``) share a
    shape: the first is composed, the others' values are applied to it with the same
    Hydra function composition uses, so every value is checked as composing would.
    """
    from hydra.plugins.sweeper import Sweeper

    original = getattr(Sweeper.validate_batch_is_legal, "_composes_every_job", None)
    if original is not None:  # on already: restore first
        Sweeper.validate_batch_is_legal = original  # type: ignore[method-assign]
    if not on:
        return
    compose_all = Sweeper.validate_batch_is_legal

    def validate_batch_is_legal(self: Sweeper, batch: Sequence[Sequence[str]]) -> None:
        loader = getattr(self, "hydra_context", None)
        loader = loader.config_loader if loader is not None else getattr(
            self, "config_loader", None)
        repository = getattr(loader, "repository", None)
        if loader is None or repository is None or self.config is None:
            compose_all(self, batch)
            return
        check_batch(loader, self.config, batch)

    validate_batch_is_legal._composes_every_job = compose_all  # type: ignore[attr-defined]
    Sweeper.validate_batch_is_legal = validate_batch_is_legal  # type: ignore[method-assign]


def check_batch(loader: Any, master: DictConfig, batch: Sequence[Sequence[str]]) -> int:
    """Check that every job of ``batch`` composes (see :func:`check_jobs_cheaply`);
    raise what composing it would raise. Returns how many jobs were composed in full."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    shapes: dict[tuple[tuple[str, ...], tuple[str, ...]], DictConfig] = {}
    for overrides in batch:
        job = _job(loader, overrides)
        composed = shapes.get(job.shape)
        if composed is None:
            shapes[job.shape] = loader.load_sweep_config(master_config=master,
                                                         sweep_overrides=list(overrides))
        else:
            ConfigLoaderImpl._apply_overrides_to_config(job.plain, composed)
    return len(shapes)


@dataclass(frozen=True)
class _Job:
    """A job's overrides, parsed: the plain ``key=value`` settings and its shape (everything
    else it overrides, and the plain settings' keys). Jobs of one shape compose to the same
    config but for those settings' values."""

    parsed: list[Any]
    plain: list[Any]
    shape: tuple[tuple[str, ...], tuple[str, ...]]


def _job(loader: Any, overrides: Sequence[str]) -> _Job:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    plain = [o for o in parsed if _plain_setting(o, loader.repository)]
    rest = tuple(str(o.input_line) for o in parsed if o not in plain)
    return _Job(parsed, plain, (rest, tuple(o.key_or_group for o in plain)))


_composed: dict[tuple[Any, ...], DictConfig] = {}  # one composed job per shape


def compose_by_shape(on: bool = True) -> None:
    """Compose each shape of job once per process; later jobs of that shape are a copy
    of it with their own settings applied.

    Hydra composes every job from scratch: YAML files read and merged, defaults lists
    built, about as long as a small model's whole training. A job whose overrides differ
    from an earlier one's only in plain ``key=value`` settings (see :class:`_Job`) gets a
    copy of that job's config with its own values applied by the function Hydra's
    composition applies them with, and the fields Hydra derives from the overrides
    (``hydra.overrides.task``, ``hydra.job.override_dirname``) set as Hydra sets them.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    original = getattr(ConfigLoaderImpl.load_sweep_config, "_composes_every_job", None)
    if original is not None:  # on already: restore first
        ConfigLoaderImpl.load_sweep_config = original  # type: ignore[method-assign]
    _composed.clear()
    if not on:
        return
    compose = ConfigLoaderImpl.load_sweep_config

    def load_sweep_config(self: Any, master_config: DictConfig,
                          sweep_overrides: list[str]) -> DictConfig:
        hydra = master_config.hydra
        job = _job(self, sweep_overrides)
        key = (hydra.job.config_name, tuple(hydra.overrides.hydra),
               tuple(hydra.overrides.task), job.shape)
        reference = _composed.get(key)
        if reference is None:
            config = compose(self, master_config, sweep_overrides)
            _composed[key] = copy.deepcopy(config)
            return config
        config = copy.deepcopy(reference)
        ConfigLoaderImpl._apply_overrides_to_config(job.plain, config)
        _derive_from_overrides(config, job.parsed)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    load_sweep_config._composes_every_job = compose  # type: ignore[attr-defined]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]


def _derive_from_overrides(config: DictConfig, parsed: Sequence[Any]) -> None:
    """Set what Hydra's composition derives from a job's ``parsed`` overrides: the task
    overrides and ``hydra.job.override_dirname`` (the hydra overrides are one shape's)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    app = [o for o in parsed if not o.is_hydra_override()]
    job = config.hydra.job
    with open_dict(config.hydra):
        config.hydra.overrides.task = [o.input_line for o in app]
        job.override_dirname = get_overrides_dirname(
            overrides=app, kv_sep=job.config.override_dirname.kv_sep,
            item_sep=job.config.override_dirname.item_sep,
            exclude_keys=job.config.override_dirname.exclude_keys)
        config.hydra.runtime.cwd = os.getcwd()


def _plain_setting(override: Any, repository: Any) -> bool:
    """``key=value`` on a config key: what Hydra applies after composing (not a config
    group, which changes what is composed; no add, delete or package; not ``hydra.*``)."""
    return (override.package is None and not override.is_add()
            and not override.is_force_add() and not override.is_delete()
            and not override.is_hydra_override() and not override.is_sweep_override()
            and not isinstance(override.value(), dict)
            and not repository.group_exists(override.key_or_group))
