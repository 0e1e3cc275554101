"""Entry points besides training, one module per command (``python -m
pipeline.commands.<name>``; the make targets wrap them): ``rerun``, ``compare``, ``complete``
(``make plots``, ``make log-model``), ``sync``, ``serve``, ``clean_runs``.

The top layer, beside ``python -m pipeline``: a command imports any layer below it, and
nothing imports a command. Each answers ``--help`` and usage errors before it imports MLflow.
"""
