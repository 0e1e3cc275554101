"""Optuna's best trial is the sweep's best run.

Hydra's Optuna sweeper prints ``Best parameters`` / ``Best value`` and writes
``optimization_results.yaml`` from ``study.best_trial``, which Optuna takes from its storage:
the first trial to reach the best value (or, on an SQL storage, whichever the database
returns first). The sweep's summary ranks the same runs by ``sweep.metric``, then
``sweep.tie_metric``, then the job number (:func:`pipeline.tracking.summary.decide`); on a
tie the two would name different runs.

:func:`rank_like_the_sweep` makes them agree without changing what Optuna optimises (the
values it is told stay the true metric values): the study's storage answers "which trial is
best" with the trial of the run the sweep's own decision picks, read from the store just as
the summary reads it. Trials and runs are matched by the job's output folder, which every run
records (tag ``output_dir``): each trial gets it as a user attribute when its job returns (a
study kept in a storage keeps it for a resumed sweep), and a job that a resumed sweep kept
leaves the run it kept in :data:`pipeline.sweeps.job.KEPT`. Offline, or when the store
cannot answer, Optuna keeps its own choice.

Used by the plugin class ``hydra_plugins.pipeline_optuna_sweeper.optuna_sweeper.OptunaSweeper``
(selected in ``conf/hparams_search/mlp_optuna.yaml``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn

from pipeline.sweeps.callback import open_sweep
from pipeline.sweeps.job import KEPT

log = logging.getLogger("pipeline.sweep")

OUTPUT_DIR_ATTR = "pipeline.output_dir"  # a trial's job's output folder
RUN_ID_ATTR = "pipeline.run_id"  # the run a resumed sweep kept for the trial's job


def rank_like_the_sweep(sweeper: Any) -> None:
    """Have Hydra's Optuna sweeper implementation ``sweeper`` (set up, not yet sweeping)
    report the sweep's best run as its best trial: its storage and its launcher are
    wrapped (see the module docstring)."""
    import optuna

    storage = optuna.storages.get_storage(sweeper.storage)
    _rank_best(storage, sweeper.storage)
    sweeper.storage = storage
    sweeper.launcher = _Recording(sweeper.launcher, storage)


def _rank_best(storage: Any, configured: Any = None) -> None:
    """Make ``storage`` (any Optuna storage: in memory, or an SQL one behind Optuna's cache)
    an instance of a subclass of its own class that remembers the trials in the order they
    are asked for (the order the sweeper launches their jobs in) and answers "which trial is
    best" with the trial whose job ran the sweep's best run."""
    import optuna

    base = type(storage)
    if getattr(storage, "_asked", None) is not None:
        return

    class Ranked(base):  # type: ignore[valid-type,misc]
        def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
            trial_id = super().create_new_trial(study_id, template_trial)
            self._asked.append(trial_id)
            return trial_id

        def get_best_trial(self, study_id: int) -> Any:
            best = super().get_best_trial(study_id)
            trials = self.get_all_trials(study_id, deepcopy=False,
                                         states=(optuna.trial.TrialState.COMPLETE,))
            chosen = trial_of_best_run(trials)
            return chosen if chosen is not None else best

        def __repr__(self) -> str:  # what the sweeper logs as its "Storage:"
            return repr(configured)

    Ranked.__name__ = Ranked.__qualname__ = f"Ranked{base.__name__}"
    storage.__class__ = Ranked  # the same object (its state, its connection), ranked
    storage._asked = []


def trial_of_best_run(trials: Sequence[Any]) -> Any | None:
    """The trial among ``trials`` whose job ran the open sweep's best run (None when the
    sweep has no store, no best run yet, or no trial matches it)."""
    parent = open_sweep()
    if parent is None:
        return None
    try:
        best = parent.best_run()
    except Exception as error:  # the store: Optuna's own choice stands
        log.warning("Optuna's best trial is its own (the store did not answer: %s)", error)
        return None
    if best is None:
        return None
    run_id, output_dir = best
    for trial in trials:
        attrs = trial.user_attrs
        if attrs.get(RUN_ID_ATTR) == run_id or (
                output_dir and attrs.get(OUTPUT_DIR_ATTR) == output_dir):
            return trial
    return None


class _Recording:
    """The sweeper's launcher, which also tells each trial where its job ran."""

    def __init__(self, launcher: Any, storage: Any) -> None:
        self.launcher, self.storage = launcher, storage
        self.launched = 0  # jobs launched so far: the next ones run the next trials asked

    def __getattr__(self, name: str) -> Any:
        return getattr(self.launcher, name)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        trials = self.storage._asked[self.launched:self.launched + len(returns)]
        self.launched += len(returns)
        for trial_id, done in zip(trials, returns, strict=False):
            for key, value in _where(done).items():
                with contextlib.suppress(Exception):  # a trial Optuna closed already
                    self.storage.set_trial_user_attr(trial_id, key, value)  # type: ignore
        return returns


def _where(done: JobReturn) -> dict[str, str]:
    """Where a job's run is: its output folder, and the run a resumed sweep kept."""
    hydra = getattr(done, "hydra_cfg", None)
    try:
        output_dir = str(hydra.hydra.runtime.output_dir) if hydra is not None else ""
    except Exception:  # a job Hydra could not even set up
        return {}
    found = {OUTPUT_DIR_ATTR: output_dir} if output_dir else {}
    kept = Path(output_dir) / KEPT if output_dir else None
    if kept is not None and kept.is_file():
        with contextlib.suppress(OSError):
            run_id = kept.read_text().strip()
            if run_id.isalnum():
                found[RUN_ID_ATTR] = run_id
    return found
