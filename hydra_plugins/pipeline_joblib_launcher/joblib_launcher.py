"""The launcher class ``conf/hydra/launcher/joblib.yaml`` names; the work is in
:func:`pipeline.sweeps.launcher.launch`, imported only when a sweep launches."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher import joblib_launcher


class JoblibLauncher(joblib_launcher.JoblibLauncher):
    """Hydra's joblib launcher, settings and all, handing each worker the sweep once."""

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from pipeline.sweeps.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
