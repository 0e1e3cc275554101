"""What a sweep tells a run about its place in it, as one value handed to ``run()``.

The run never reads the sweep from the environment: ``python -m pipeline`` builds a
:class:`SweepJob` once from what the sweep's launching process handed the job
(:func:`pipeline.sweeps.job.job_context`) and passes it in; a single run gets None.
"""

from __future__ import annotations

from dataclasses import dataclass

# The logger a run shows Python warnings through (the core's ConvergenceWarning, say), one
# line each: a sweep's compact output folds them into the job's line instead.
WARNINGS_LOGGER = "pipeline.warnings"


@dataclass(frozen=True)
class SweepJob:
    """A run that is one job of a sweep."""

    parent_run_id: str | None  # the sweep's parent run (None: an offline sweep's job)
    parent_journal_id: str | None  # the parent's journal (an offline sweep's is the parent)
    threads: int | None = None  # BLAS threads: this job's share of the cores (train.threads wins)
    worker: bool = False  # in a launcher's worker process (joblib, Ray), not the launching one
