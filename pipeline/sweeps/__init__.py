"""A Hydra multirun as one MLflow parent run with one child run per job.

* :mod:`.callback`     the launching process: the parent run, the jobs planned (replicates,
  resume), joblib's workers warmed up, the sweep stopped on Ctrl-C and summarised at its end;
* :mod:`.job`          a job's process: what the launching process hands it (read once),
  whether it runs at all, its watch on the launcher;
* :mod:`.launcher`     the joblib launcher that hands each worker the sweep once;
* :mod:`.composition`  each shape of job composed once per process.

Below ``python -m pipeline``, above the single run (:mod:`pipeline.run`), which is handed its
place in the sweep as a value (:class:`pipeline.run.context.SweepJob`).
"""
