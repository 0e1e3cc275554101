"""Tracking: the only package that imports MLflow.

It records runs and sweeps and reads them back; nothing outside it sees an MLflow
client. What a run records, and under which names, is in :mod:`.record`; how:

* :mod:`.journal`   every record appended to a local file first (``journal.jsonl``);
* :mod:`.recorder`  a live run: the journal, the background shipper, the heartbeat;
* :mod:`.shipper`   journal records into an MLflow run, idempotently, in few calls;
* :mod:`.thinning`  which epochs of a long run the store gets (``tracking.max_points``);
* :mod:`.store`     opening a store (created once, under a lock) and retried writes;
* :mod:`.sending`   journals sent to a store later (``python -m pipeline.commands.sync``);
* :mod:`.parent`    a sweep's parent run; :mod:`.summary` its summary;
* :mod:`.runs`      reads for reruns, resumes, clean-up and links;
* :mod:`.comparison`  what differs between runs (``python -m pipeline.commands.compare``);
* :mod:`.completion`  a stored run's model and plots logged afterwards (the store's side);
* :mod:`.model`     the pyfunc model (:mod:`.pyfunc_model` is its code).

Below the single run (:mod:`pipeline.run`); imports only the config, the leaf helpers, the
stages and the core. Importing this package costs nothing: the submodules import MLflow
when first used.
"""
