"""Hydra plugin: Hydra's Optuna sweeper whose best trial is the sweep's best run (see
:mod:`pipeline.sweeps.tuning`); ``conf/hparams_search/mlp_optuna.yaml`` selects it.

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package.
"""
