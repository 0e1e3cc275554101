"""A sweep's cost per job: ``seed=range(0,N)`` sweeps of 8, 32 and 256 jobs, each on the
basic launcher and on joblib with 2 workers, against ``python -c "import mlflow"``.

Every sweep is the real command (``python -m pipeline -m ...``) in a fresh process on a
fresh temporary sqlite store, so its wall time holds everything a user waits for: start-up,
creating the store, the jobs, the summary and the exit; per-job seconds = wall / N.
``import mlflow`` is timed before every sweep and once after the last, and its median is
the yardstick, so load drifts hit both.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.pipeline_runs import CommandFailed, _store_args, sweep_runs, timed
from bench.report import markdown_table

LAUNCHERS = ("basic", "joblib")
PER_JOB_GOAL_S = 0.5  # the reference size, basic launcher
LARGE_VS_REFERENCE_GOAL = 1.2  # the large sweep's per-job cost / the reference's
SUMMARY_GOAL_S = 5.0  # the large basic sweep's parent summary
LARGE_SPEEDUP_GOAL = 1.6  # the large sweep: basic seconds / joblib seconds
SMALL_SPEEDUP_GOAL = 1.3  # the smallest sweep (8 x 300 epochs): basic / joblib


@dataclass(frozen=True)
class CostPlan:
    """Sweep sizes as (jobs, train.epochs), each run on both launchers. ``reference`` is the
    size with the per-job goal; the largest size is compared against it."""

    sizes: tuple[tuple[int, int], ...] = ((8, 300), (32, 300), (256, 10))
    reference: int = 32
    workers: int = 2
    quick: bool = False

    @property
    def large(self) -> int:
        """The largest sweep's number of jobs."""
        return max(jobs for jobs, _ in self.sizes)


DEFAULT_COST = CostPlan()
QUICK_COST = CostPlan(sizes=((4, 100),), reference=4, quick=True)


@dataclass(frozen=True)
class SweepCost:
    """One sweep of ``jobs`` jobs on one launcher, timed end to end."""

    jobs: int
    epochs: int
    launcher: str  # "basic" or "joblib"
    seconds: float
    summary_s: float | None  # the parent's time_summary_s; None when it was not recorded

    @property
    def per_job(self) -> float:
        """Wall seconds of the whole sweep / its number of jobs."""
        return self.seconds / self.jobs


@dataclass(frozen=True)
class CostResults:
    """Every sweep of a :class:`CostPlan` and the interleaved ``import mlflow`` timings."""

    plan: CostPlan
    sweeps: tuple[SweepCost, ...]
    import_samples: tuple[float, ...]

    @property
    def import_mlflow(self) -> float:
        """Median seconds of ``python -c "import mlflow"``."""
        return statistics.median(self.import_samples)

    def find(self, jobs: int, launcher: str) -> SweepCost | None:
        """The sweep of ``jobs`` jobs on ``launcher``, if it was measured."""
        return next((s for s in self.sweeps if s.jobs == jobs and s.launcher == launcher),
                    None)


def sweep_command(jobs: int, epochs: int, work: Path, launcher: str,
                  workers: int) -> list[str]:
    """``python -m pipeline -m seed=range(0,jobs) ...`` on the store and cache in ``work``."""
    command = [sys.executable, "-m", "pipeline", "-m", f"seed=range(0,{jobs})",
               f"train.epochs={epochs}", *_store_args(work),
               f"hydra.sweep.dir={work / launcher}"]
    if launcher == "joblib":
        command += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"]
    return command


def check_store(work: Path, sweep_dir: Path, jobs: int) -> float | None:
    """Check that the sweep's parent has ``jobs`` children, all FINISHED; return the parent's
    ``time_summary_s`` (None when the parent has no such metric)."""
    parent, children = sweep_runs(work / "mlflow.db", sweep_dir)
    statuses = [c.info.status for c in children]
    if len(children) != jobs or any(s != "FINISHED" for s in statuses):
        unfinished = sum(s != "FINISHED" for s in statuses)
        raise CommandFailed(f"sweep in {sweep_dir}: {len(children)} children of {jobs}, "
                            f"{unfinished} not FINISHED")
    return parent.data.metrics.get("time_summary_s")


def run_cost_sweep(jobs: int, epochs: int, launcher: str, workers: int = 2,
                   folder: Path | None = None) -> SweepCost:
    """One sweep on a fresh sqlite store (in ``folder``, else a temporary folder), timed and
    then checked in the store."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-cost-") as tmp:
        work = folder or Path(tmp)
        seconds = timed(sweep_command(jobs, epochs, work, launcher, workers))
        summary_s = check_store(work, work / launcher, jobs)
    return SweepCost(jobs, epochs, launcher, seconds, summary_s)


def time_import_mlflow() -> float:
    """Wall seconds of ``python -c "import mlflow"`` in a fresh process."""
    return timed([sys.executable, "-c", "import mlflow"])


def measure_sweep_cost(plan: CostPlan, say: Callable[[str], None]) -> CostResults:
    """Every size on both launchers, with ``import mlflow`` timed before each sweep and after
    the last."""
    sweeps, imports = [], []
    for jobs, epochs in plan.sizes:
        for launcher in LAUNCHERS:
            imports.append(time_import_mlflow())
            say(f"sweep cost: {jobs} jobs, train.epochs={epochs}, "
                f"{_launcher_label(launcher, plan.workers)}")
            sweeps.append(run_cost_sweep(jobs, epochs, launcher, plan.workers))
    imports.append(time_import_mlflow())
    return CostResults(plan, tuple(sweeps), tuple(imports))


def _launcher_label(launcher: str, workers: int) -> str:
    return "basic" if launcher == "basic" else f"joblib, {workers} workers"


def _seconds(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f} s"


def _row(sweep: SweepCost, results: CostResults) -> list[str]:
    """One table row: size, launcher, wall, per job, its ratio, speed-up, summary."""
    speedup = "—"
    basic = results.find(sweep.jobs, "basic")
    if sweep.launcher != "basic" and basic is not None:
        speedup = f"{basic.seconds / sweep.seconds:.2f}×"
    return [str(sweep.jobs), str(sweep.epochs),
            _launcher_label(sweep.launcher, results.plan.workers), _seconds(sweep.seconds, 1),
            _seconds(sweep.per_job), f"{sweep.per_job / results.import_mlflow:.2f}×", speedup,
            _seconds(sweep.summary_s)]


def cost_table(results: CostResults) -> str:
    """One row per sweep."""
    header = ["jobs", "train.epochs", "launcher", "wall", "per job",
              "per job / `import mlflow`", "speed-up vs basic",
              "parent's summary (`time_summary_s`)"]
    return markdown_table(header, [_row(s, results) for s in results.sweeps])


def _verdict(name: str, shown: str, ok: bool | None) -> str:
    """A target line: met, **MISSED**, or not measured when ``ok`` is None."""
    verdict = "not measured" if ok is None else "met" if ok else "**MISSED**"
    return f"- {name}: {shown}, {verdict}"


def cost_targets(results: CostResults) -> list[str]:
    """The per-job, large-sweep, summary and joblib-speed-up targets."""
    plan = results.plan
    ref, large = results.find(plan.reference, "basic"), results.find(plan.large, "basic")
    large_joblib = results.find(plan.large, "joblib")
    lines = []
    if ref is not None:
        lines.append(_verdict(
            f"{ref.jobs} jobs (train.epochs={ref.epochs}), basic launcher: per job "
            f"≤ {PER_JOB_GOAL_S:g} s",
            f"{ref.per_job:.2f} s ({ref.per_job / results.import_mlflow:.2f}× `import mlflow`)",
            ref.per_job <= PER_JOB_GOAL_S))
    if ref is not None and large is not None:
        ratio = large.per_job / ref.per_job
        lines.append(_verdict(
            f"{large.jobs} jobs (train.epochs={large.epochs}), basic: per job "
            f"≤ {LARGE_VS_REFERENCE_GOAL:g}× the {ref.jobs}-job figure",
            f"{large.per_job:.2f} s / {ref.per_job:.2f} s = {ratio:.2f}×",
            ratio <= LARGE_VS_REFERENCE_GOAL))
    if large is not None:
        ok = None if large.summary_s is None else large.summary_s <= SUMMARY_GOAL_S
        lines.append(_verdict(
            f"{large.jobs}-job summary (`time_summary_s`, basic) ≤ {SUMMARY_GOAL_S:g} s",
            _seconds(large.summary_s), ok))
    small_jobs = min(jobs for jobs, _ in plan.sizes)
    small, small_joblib = results.find(small_jobs, "basic"), results.find(small_jobs, "joblib")
    if small is not None and small_joblib is not None and small_jobs != plan.large:
        speedup = small.seconds / small_joblib.seconds
        lines.append(_verdict(
            f"{small.jobs} jobs (train.epochs={small.epochs}): joblib {plan.workers} workers "
            f"vs basic ≥ {SMALL_SPEEDUP_GOAL:g}×", f"{speedup:.2f}×",
            speedup >= SMALL_SPEEDUP_GOAL))
    if large is not None and large_joblib is not None:
        speedup = large.seconds / large_joblib.seconds
        lines.append(_verdict(
            f"{large.jobs} jobs: joblib {plan.workers} workers vs basic "
            f"≥ {LARGE_SPEEDUP_GOAL:g}×", f"{speedup:.2f}×", speedup >= LARGE_SPEEDUP_GOAL))
    return lines


def cost_markdown(results: CostResults) -> str:
    """The per-job table, the ``import mlflow`` line and the target lines."""
    sizes = ", ".join(str(jobs) for jobs, _ in results.plan.sizes)
    quick = " (--quick: smaller sweeps than the full 8, 32, 256)" if results.plan.quick else ""
    lines = [
        f"### A sweep's cost per job: `seed=range(0,N)` for N = {sizes}{quick}", "",
        "Each sweep a fresh `python -m pipeline -m` on a fresh sqlite store; per job = the "
        "sweep's whole wall time (start-up, store, jobs, summary, exit) / N.", "",
        cost_table(results), "",
        f"- `python -c \"import mlflow\"`: {results.import_mlflow:.2f} s (median of "
        f"{len(results.import_samples)}, timed between the sweeps)",
        *cost_targets(results),
    ]
    return "\n".join(lines) + "\n"

