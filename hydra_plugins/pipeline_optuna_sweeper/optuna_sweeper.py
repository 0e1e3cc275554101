"""The sweeper class ``conf/hparams_search/mlp_optuna.yaml`` names; the work is in
:func:`pipeline.sweeps.tuning.rank_like_the_sweep`, imported only when a sweep starts."""

from __future__ import annotations

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper
from omegaconf import DictConfig


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    """Hydra's Optuna sweeper, settings and all, whose ``Best parameters``, ``Best value``
    and ``optimization_results.yaml`` name the run the sweep's summary picks (ties on
    ``sweep.metric`` broken by ``sweep.tie_metric``, then the job number)."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        from pipeline.sweeps.tuning import rank_like_the_sweep

        rank_like_the_sweep(self.sweeper)
