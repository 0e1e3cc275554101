"""Hydra's joblib launcher (``hydra/launcher=joblib``), handing each worker the sweep once.

Hydra's own joblib launcher sends every job the whole sweep with it: the Hydra context,
the master config, the task function and Hydra's singletons (~70 KB pickled), and each
job restores those singletons, which rediscovers every Hydra plugin. For a job that
trains a small model in a fraction of a second, that hand-off is a large share of the
job. This launcher pickles the sweep once into a file in the sweep folder; each job
carries only its index, its overrides and that file's path, and a worker loads the file
the first time it sees it. The jobs of one worker then share Hydra's state as the jobs of
the basic launcher share the launching process's.

``conf/hydra/launcher/joblib.yaml`` selects it (through the plugin class in
``hydra_plugins/pipeline_joblib_launcher``) with the settings of Hydra's joblib launcher
(``n_jobs``, ``batch_size``, ...), which it passes to ``joblib.Parallel`` as that does.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from joblib import Parallel, delayed
from joblib.externals import cloudpickle
from omegaconf import DictConfig, open_dict

from pipeline.sweeps.callback import wait_for_workers
from pipeline.sweeps.output import prefixed_output

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sweep:
    """What every job of one ``launch`` shares, as a worker holds it."""

    hydra_context: HydraContext
    config: DictConfig  # the master config each job is composed from
    task_function: TaskFunction


def launch(launcher: JoblibLauncher, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> Sequence[JobReturn]:
    """Run one job per overrides list on ``launcher``'s workers; return their results in
    the same order (what Hydra's joblib launcher does, the sweep sent once)."""
    setup_globals()
    config, task_function, hydra_context = (launcher.config, launcher.task_function,
                                            launcher.hydra_context)
    assert config is not None and task_function is not None and hydra_context is not None
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    settings = dict(launcher.joblib)
    settings["backend"] = "loky"  # Hydra's state does not survive the threading backend
    process_joblib_cfg(settings)
    log.info("Joblib.Parallel(%s) is launching %d jobs",
             ",".join(f"{k}={v}" for k, v in settings.items()), len(job_overrides))
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

    wait_for_workers()  # started at the sweep's start: one Parallel call at a time
    with _shared(Sweep(hydra_context, config, task_function), sweep_dir) as path:
        runs = Parallel(**settings)(
            delayed(execute_job)(initial_job_idx + idx, list(overrides), path)
            for idx, overrides in enumerate(job_overrides))
    assert isinstance(runs, list)
    return runs


@contextmanager
def _shared(sweep: Sweep, folder: Path) -> Iterator[str]:
    """Pickle ``sweep`` and Hydra's singletons into a file in ``folder`` for the workers;
    yield its path and remove it afterwards."""
    state = Singleton.get_state()  # without the plugins: a worker discovers its own
    blob = cloudpickle.dumps((sweep, state))
    handle, name = tempfile.mkstemp(prefix=".joblib-sweep-", suffix=".pkl", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(blob)
        yield name
    finally:
        Path(name).unlink(missing_ok=True)


_received: tuple[str, Sweep] | None = None  # in a worker: the sweep it last loaded


def _receive(path: str) -> Sweep:
    """In a worker: the sweep pickled at ``path``, loaded (and Hydra's singletons set
    from it) on the first job of this launch that the worker runs."""
    global _received
    if _received is None or _received[0] != path:
        sweep, state = pickle.loads(Path(path).read_bytes())
        setup_globals()
        Singleton.set_state(state)
        _received = (path, sweep)
    return _received[1]


def execute_job(idx: int, overrides: list[str], path: str) -> JobReturn:
    """In a worker: compose job ``idx`` from the sweep at ``path`` and its ``overrides``,
    and run it as Hydra's launchers do."""
    sweep = _receive(path)
    config = sweep.hydra_context.config_loader.load_sweep_config(sweep.config, overrides)
    with open_dict(config):
        config.hydra.job.id = f"{config.hydra.job.name}_{idx}"
        config.hydra.job.num = idx
    HydraConfig.instance().set_config(config)
    with prefixed_output(idx):  # parallel jobs print into one terminal: "[job 3] ..."
        return run_job(hydra_context=sweep.hydra_context, config=config,
                       task_function=sweep.task_function, job_dir_key="hydra.sweep.dir",
                       job_subdir_key="hydra.sweep.subdir")

