"""Speed benchmark of the NumPy MLP core: ``python -m bench`` (``--help`` lists the options).

The core (``pipeline.mlp.MLP``) is timed against a plain textbook NumPy loop (the
"yardstick", :mod:`bench.yardstick`), scikit-learn's ``MLPClassifier`` and a PyTorch CPU
loop, on the workloads of :mod:`bench.workloads`, all in one process with the BLAS limited to
the same thread count. Peak memory is measured in fresh subprocesses (:mod:`bench.memory`).
Results go to stdout and ``bench/results/`` (git-ignored).

This package imports nothing heavy at import time, so spawned subprocesses start quickly.
"""
