"""One run: its stages in order, its files, its record.

* :mod:`.runner`     ``run`` and ``execute``: the record opened, the stages, the end recorded;
* :mod:`.context`    what a sweep tells a run about its place in it (:class:`SweepJob`);
* :mod:`.data`       the data steps, each through the stage cache;
* :mod:`.folds`      k-fold cross-validation before the refit (``split.folds``);
* :mod:`.datastore`  Parquet files and the content-addressed stage cache;
* :mod:`.artifacts`  the folder a run owns and the files it logs;
* :mod:`.plots`      the figures (matplotlib), :mod:`.progress` the terminal's bar;
* :mod:`.stored_config`  a past run's stored config, checked as the untrusted data it is;
* :mod:`.backfill`   a stored run's model and plots added afterwards.

Below the sweeps and the commands; above tracking (:mod:`pipeline.tracking`), the data
steps (:mod:`stages`) and the config (:mod:`pipeline.config`).
"""
