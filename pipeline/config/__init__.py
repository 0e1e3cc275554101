"""The config: the schema and its validation (:mod:`.schema`), the seeds every random
consumer derives (:mod:`.seeds`), the settings a digest leaves out (:mod:`.digest`) and the
project's paths (:mod:`.paths`).

Imports only the core (:mod:`pipeline.mlp`, whose registries name what a key accepts) and
the leaf helpers: a bad config is reported before MLflow or the stages are imported.
"""
