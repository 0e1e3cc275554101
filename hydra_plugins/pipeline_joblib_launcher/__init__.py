"""Hydra plugin: ``hydra/launcher=joblib`` for this pipeline (see :mod:`pipeline.sweeps.launcher`).

Hydra instantiates launchers only from the ``hydra_plugins`` namespace package.
"""
