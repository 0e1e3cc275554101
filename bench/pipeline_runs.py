"""What a user waits for, end to end: the default run's start-up, tracking's cost to the
train stage, and a sweep's speed-up on parallel workers.

Every run here is the real command (``python -m pipeline``) in a fresh process against a
temporary sqlite store, so the numbers include imports, Hydra, MLflow and the exit.
Ratios compare things measured in the same call, interleaved, so load drifts hit both.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bench import children
from bench.report import markdown_table

if TYPE_CHECKING:
    from mlflow.entities import Run

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SweepCase:
    """One multirun, timed on the basic launcher and on joblib with ``n_jobs`` workers."""

    name: str
    overrides: tuple[str, ...]
    n_jobs: int = 2


# 8 jobs each: 4 learning rates x 2 widths.
SWEEP_AXES = ("optimizer.lr=0.001,0.003,0.01,0.03", "model.hidden_sizes=[8],[16]")
# Small jobs are bench/sweep_cost.py's business; this one keeps a core busy in NumPy.
DEFAULT_SWEEPS = (
    # Training-bound: 20,000 rows in batches of 32, single-threaded NumPy work per job.
    SweepCase("training-bound jobs (20,000 rows, batch 32, 1000 epochs)",
              (*SWEEP_AXES, "data.n_samples=20000", "train.batch_size=32",
               "train.epochs=1000")),
)
# --quick: the per-job cost's small sweep only (bench/sweep_cost.py QUICK_COST).
QUICK_SWEEPS: tuple[SweepCase, ...] = ()


@dataclass(frozen=True)
class StartupResult:
    """Best of ``repeats`` interleaved rounds, in seconds; ``timed_share``: the default run's
    own timings (its ``time total`` line) / its wall time, in the best run."""

    import_mlflow: float
    default_run: float
    config_error: float
    train_untracked: float
    train_tracked: float
    repeats: int
    timed_share: float | None = None

    @property
    def run_ratio(self) -> float:
        return self.default_run / self.import_mlflow

    @property
    def error_ratio(self) -> float:
        return self.config_error / self.import_mlflow

    @property
    def tracking_overhead(self) -> float:
        return self.train_tracked / self.train_untracked - 1.0


@dataclass(frozen=True)
class SweepResult:
    case: SweepCase
    serial_s: float
    parallel_s: float
    n_children: int
    train_s: float  # mean train-stage seconds of the serial children

    @property
    def speedup(self) -> float:
        return self.serial_s / self.parallel_s


class CommandFailed(RuntimeError):
    pass


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "MLFLOW_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", HYDRA_FULL_ERROR="0", PYTHONUNBUFFERED="1")
    return env


def timed(command: Sequence[str], *, expect: int = 0) -> float:
    """Wall seconds of ``command`` run from the project root; raises if its exit code differs."""
    return timed_run(command, expect=expect)[0]


TOTAL_LINE = re.compile(r"time total (\d+(?:\.\d+)?) s")


def timed_run(command: Sequence[str], *, expect: int = 0) -> tuple[float, float | None]:
    """Wall seconds of ``command`` and the total of its own timings (a run's ``time total``
    line; None without one); raises if its exit code differs."""
    start = time.perf_counter()
    done = children.run(command, cwd=PROJECT_ROOT, env=_env())
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CommandFailed(f"{' '.join(command[:4])} ... exited {done.returncode}: "
                            + " | ".join(tail))
    found = TOTAL_LINE.findall(f"{done.stdout}\n{done.stderr}")
    return elapsed, float(found[-1]) if found else None


def _store_args(folder: Path) -> list[str]:
    return [f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
            f"pipeline.cache_dir={folder / 'cache'}"]


def measure_startup(repeats: int = 3, folder: Path | None = None) -> StartupResult:
    """``import mlflow``, the default run and a config error, interleaved ``repeats`` times,
    after one warm-up run that creates the store and fills the stage cache; the best of each
    (what the machine allows when nothing else gets in the way)."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = folder or Path(tmp)
        # A folder per run, as make train's default (a reused one would get a subfolder).
        run = [sys.executable, "-m", "pipeline", *_store_args(work),
               f"hydra.run.dir={work / 'runs'}/${{now:%H-%M-%S-%f}}"]
        timed(run)  # the store exists and the data stages are cached, as in "make train" #2
        samples: dict[str, list[float]] = {"import": [], "run": [], "error": []}
        runs: list[tuple[float, float | None]] = []
        for _ in range(repeats):
            samples["import"].append(timed([sys.executable, "-c", "import mlflow"]))
            runs.append(timed_run(run))
            samples["error"].append(timed([*run, "train.epochs=-1"], expect=1))
        untracked, tracked = train_stage_seconds(work, repeats)
    best_run, best_total = min(runs, key=lambda r: r[0])
    return StartupResult(
        import_mlflow=min(samples["import"]), default_run=best_run,
        config_error=min(samples["error"]),
        train_untracked=untracked, train_tracked=tracked, repeats=repeats,
        timed_share=None if best_total is None else best_total / best_run)


def train_stage_seconds(folder: Path, repeats: int) -> tuple[float, float]:
    """The default config's train stage without and with tracking (a live recorder on a
    sqlite store: the per-epoch callback, the journal and the shipper thread), medians of
    ``repeats`` interleaved pairs: what tracking adds *during* training."""
    code = f"""
import statistics, time
from pathlib import Path
from pipeline.mlp import TrainSettings
from pipeline.tracking.recorder import start_run
from pipeline.tracking.record import TrainingPlan
from stages.generate import generate_rf
from stages.normalise import normalise
from stages.split import split_dataset
from stages.train import build_model, train_model
train = normalise(split_dataset(generate_rf(n_samples=1000, seed=0), seed=0)).train
def once(tracked, index):
    model = build_model(train.n_features, train.n_classes, hidden_sizes=[12], seed=0)
    callbacks, recorder = [], None
    if tracked:
        recorder = start_run(uri="sqlite:///{folder / 'mlflow.db'}", experiment="bench-tracking",
                             run_name="tracking-overhead", output_dir=Path("{folder}") /
                             f"overhead{{index}}", tags={{}}, parent_run_id=None,
                             parent_journal_id=None, offline=False, max_points=5000,
                             log_model=False)
        recorder.training_started(TrainingPlan(1, 3000))
        callbacks = [recorder.log_epoch]
    start = time.perf_counter()
    train_model(model, train, None, TrainSettings(learning_rate=0.003, epochs=3000),
                callbacks=callbacks)
    seconds = time.perf_counter() - start
    if recorder is not None:
        recorder.end("FINISHED", None)
    return seconds
once(False, -1)
plain, tracked = [], []
for index in range({repeats}):
    plain.append(once(False, index))
    tracked.append(once(True, index))
print(statistics.median(plain), statistics.median(tracked))
"""
    done = children.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=_env())
    if done.returncode != 0:
        raise CommandFailed("tracking overhead: " + done.stderr.strip().splitlines()[-1])
    plain, tracked = (float(x) for x in done.stdout.split()[-2:])
    return plain, tracked


def measure_sweep(case: SweepCase, folder: Path | None = None) -> SweepResult:
    """Run ``case`` serially (basic launcher) and on joblib; check every child FINISHED."""
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = folder or Path(tmp)
        base = [sys.executable, "-m", "pipeline", "-m", *case.overrides, *_store_args(work)]
        serial = timed([*base, f"hydra.sweep.dir={work / 'serial'}"])
        parallel = timed([*base, f"hydra.sweep.dir={work / 'parallel'}",
                          "hydra/launcher=joblib", f"hydra.launcher.n_jobs={case.n_jobs}"])
        n_children, train_s = _check_children(work, ("serial", "parallel"))
    return SweepResult(case, serial, parallel, n_children, train_s)


def sweep_runs(db: Path, sweep_dir: Path) -> tuple[Run, list[Run]]:
    """The parent run of the sweep written to ``sweep_dir`` in the sqlite store ``db``, and
    its children (any status)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("mlp-pipeline")
    if experiment is None:
        raise CommandFailed(f"no experiment mlp-pipeline in {db}")
    parents = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.sweep_dir = '{sweep_dir}' and tags.sweep = 'parent'")
    if not parents:
        raise CommandFailed(f"no parent run for the sweep in {sweep_dir}")
    children = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    return parents[0], children


def _check_children(work: Path, sweeps: Sequence[str]) -> tuple[int, float]:
    """Both sweeps' parents hold the same number of FINISHED children; return it and the
    serial children's mean train-stage seconds."""
    counts, train_s = [], 0.0
    for name in sweeps:
        _, children = sweep_runs(work / "mlflow.db", work / name)
        if not children or any(c.info.status != "FINISHED" for c in children):
            raise CommandFailed(f"sweep {name}: not every child FINISHED")
        counts.append(len(children))
        if name == sweeps[0]:
            train_s = statistics.mean(c.data.metrics["time_train_s"] for c in children)
    if len(set(counts)) != 1:
        raise CommandFailed(f"the sweeps ran different numbers of children: {counts}")
    return counts[0], train_s


def run_pipeline_benchmarks(sweeps: Sequence[SweepCase], startup_repeats: int,
                            say: Callable[[str], None]) -> str:
    """Measure start-up (unless ``startup_repeats`` is 0) and every sweep; return Markdown."""
    startup = None
    if startup_repeats:
        say(f"start-up: import mlflow, the default run and a config error, x{startup_repeats}")
        startup = measure_startup(startup_repeats)
    results = []
    for case in sweeps:
        say(f"sweep: {case.name}, serial then joblib n_jobs={case.n_jobs}")
        results.append(measure_sweep(case))
    return pipeline_markdown(startup, results)


def pipeline_markdown(startup: StartupResult | None, sweeps: Sequence[SweepResult]) -> str:
    """The start-up table, the sweep table and their target lines."""
    lines = ["## End to end"]
    targets = []
    if startup is not None:
        s = startup
        lines += [
            "", f"Best of {s.repeats} interleaved rounds, each a fresh process on a "
            "temporary sqlite store that already holds a run (as a second `make train`).", "",
            markdown_table(["what", "seconds", "vs `import mlflow`"], [
                ["`python -c \"import mlflow\"`", f"{s.import_mlflow:.2f}", "1.00×"],
                ["the default run (`python -m pipeline`)", f"{s.default_run:.2f}",
                 f"{s.run_ratio:.2f}×"],
                ["a config error (`train.epochs=-1`)", f"{s.config_error:.2f}",
                 f"{s.error_ratio:.2f}×"],
            ]), "",
            f"- Train stage (default config, 3000 epochs): {s.train_untracked:.3f} s "
            f"untracked, {s.train_tracked:.3f} s with the per-epoch tracking callback "
            f"({100 * s.tracking_overhead:+.1f} %).",
        ]
        if s.timed_share is not None:
            lines.append(f"- The default run's own timings (its `time total` line) add up to "
                         f"{100 * s.timed_share:.1f} % of its wall time.")
        targets += [_at_most("default run vs `import mlflow`", s.run_ratio, 1.5, "×"),
                    _at_most("config error vs `import mlflow`", s.error_ratio, 0.5, "×"),
                    _within_share("the run's timings' sum vs its wall time", s.timed_share,
                                  0.05),
                    _at_most("tracking's cost to the train stage", s.tracking_overhead, 0.10,
                             "%")]
    if sweeps:
        rows = [[r.case.name, str(r.n_children), f"{r.train_s:.1f} s", f"{r.serial_s:.1f} s",
                 f"{r.parallel_s:.1f} s", f"{r.speedup:.2f}×"] for r in sweeps]
        lines += ["", "### Sweeps: serial (basic launcher) against joblib with 2 workers", "",
                  markdown_table(["jobs", "children", "train stage per job", "serial",
                                  "joblib", "speed-up"], rows)]
        for r in sweeps:
            if "training-bound" in r.case.name:
                verdict = "met" if r.speedup >= 1.7 else "**MISSED**"
                targets.append(f"- {r.case.name}: joblib 2 workers vs serial ≥ 1.7×: "
                               f"{r.speedup:.2f}×, {verdict}")
    if targets:
        lines += ["", "### Targets end to end", "", *targets]
    return "\n".join(lines) + "\n"


def _within_share(name: str, share: float | None, tolerance: float) -> str:
    """``- name within 5 %: 97.0 %, met``; not measured when the run printed no total."""
    if share is None:
        return f"- {name} within {100 * tolerance:.0f} %: not measured (no `time total` line)"
    verdict = "met" if abs(1.0 - share) <= tolerance else "**MISSED**"
    return f"- {name} within {100 * tolerance:.0f} %: {100 * share:.1f} %, {verdict}"


def _at_most(name: str, value: float, goal: float, unit: str) -> str:
    shown = f"{100 * value:.1f} %" if unit == "%" else f"{value:.2f}×"
    goal_shown = f"{100 * goal:.0f} %" if unit == "%" else f"{goal:g}×"
    verdict = "met" if value <= goal else "**MISSED**"
    return f"- {name} ≤ {goal_shown}: {shown}, {verdict}"
