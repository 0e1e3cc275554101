"""Runs a benchmark :class:`Plan`: timing, matmul floors, correctness, memory, scaling."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.contenders import ALL_KEYS, Contender, load_contenders
from bench.machine import (
    import_optional_libraries,
    limited_threads,
    load_average,
    load_lines,
    machine_lines,
)
from bench.matmuls import matmul_seconds_per_epoch
from bench.memory import measure_many
from bench.pipeline_runs import SweepCase, run_pipeline_benchmarks
from bench.scaling import (
    ScalingPlan,
    ScalingResults,
    add_memory,
    memory_jobs,
    run_scaling_timing,
)
from bench.sweep_cost import CostPlan, cost_markdown, measure_sweep_cost
from bench.timing import seconds_per_epoch
from bench.verify import core_matches_yardstick
from bench.workloads import Workload, make_data

RESULTS_DIR = Path(__file__).resolve().parent / "results"

CAVEATS = [
    "- scikit-learn trains on log-loss without gradient clipping and checks its inputs in "
    "`fit`, which is included (per-epoch time = fit time / epochs); PyTorch trains on "
    "BCE-with-logits with `clip_grad_value_`; the core and the yardstick use RustNet's "
    "maths (dZ = A − Y) and compute the MSE every epoch.",
    "- `vs X` = time(X) / time(this row): above 1× this row is faster than X. "
    "`fraction of matmul peak` = bare `np.matmul` time of the same shapes per epoch / this "
    "row's time (NumPy's BLAS; torch uses its own). `peak RSS`: a fresh spawned process "
    "(imports + data + model + training), in brackets its growth while training.",
]


@dataclass(frozen=True)
class Plan:
    """What to run. ``verify_epochs`` 0 skips the correctness check; ``scaling`` None skips
    the scaling study; ``memory`` False skips every peak-RSS subprocess."""

    workloads: tuple[Workload, ...]
    contender_keys: tuple[str, ...] = ALL_KEYS
    threads: int = 2
    memory: bool = True
    memory_keys: tuple[str, ...] | None = None  # contenders whose peak RSS is measured: all
    verify_epochs: int = 500
    scaling: ScalingPlan | None = field(default_factory=ScalingPlan)
    out_dir: Path = RESULTS_DIR
    mode: str = "full"
    matmul_target: float = 0.1  # seconds each bare-matmul repeat lasts
    startup_repeats: int = 0  # 0: skip the end-to-end start-up measurement
    sweeps: tuple[SweepCase, ...] = ()
    sweep_cost: CostPlan | None = None  # None: skip the per-job cost of sweeps
    long_run_epochs: int = 0  # 0: skip the long run's tracking cost


_STARTED = time.perf_counter()


def log(message: str) -> None:
    """Progress to stderr, so stdout holds only the results; each line says how long the
    bench has been running (where a slow part's time goes)."""
    print(f"[bench {time.perf_counter() - _STARTED:4.0f} s] {message}", file=sys.stderr,
          flush=True)


def time_workload(workload: Workload, contenders: Sequence[Contender],
                  matmul_target: float = 0.1) -> report.WorkloadResult:
    """Seconds per epoch of every contender and the bare-matmul floor of ``workload``."""
    X, y = make_data(workload)
    seconds = seconds_per_epoch(contenders, workload, X, y)
    floor = matmul_seconds_per_epoch(workload.layer_sizes, workload.n_rows,
                                     workload.batch_size, workload.dtype, matmul_target)
    labels = {c.key: c.label for c in contenders}
    return report.WorkloadResult(workload, seconds, labels, matmul_seconds=floor)


def correctness_line(plan: Plan, keys: Sequence[str]) -> str | None:
    """The W1 core-vs-yardstick check, when W1 is planned and the core is available."""
    w1 = next((w for w in plan.workloads if w.name == "W1"), None)
    if w1 is None or plan.verify_epochs <= 0:
        return None
    if "core" not in keys:
        return "- Correctness check skipped: the core is not available"
    return core_matches_yardstick(w1, plan.verify_epochs).line()


def measure_memory(plan: Plan, results: Sequence[report.WorkloadResult], keys: Sequence[str],
                   scaling: ScalingResults | None) -> None:
    """Peak RSS of every workload × contender (and the scaling rows), in fresh processes."""
    measured_keys = [k for k in keys if plan.memory_keys is None or k in plan.memory_keys]
    jobs = [(r.workload, key) for r in results for key in measured_keys]
    scaling_jobs = memory_jobs(plan.scaling, keys) if scaling and plan.scaling else []
    measured = measure_many([*jobs, *scaling_jobs], plan.threads)
    for (workload, key), memory in zip(jobs, measured, strict=False):
        next(r for r in results if r.workload is workload).memory[key] = memory
    if scaling is not None:
        add_memory(scaling, scaling_jobs, measured[len(jobs):])


def compose(plan: Plan, machine: Sequence[str], results: Sequence[report.WorkloadResult],
            notes: Sequence[str], correctness: str | None, elapsed: float,
            end_to_end: str | None = None) -> str:
    """bench.md: machine lines, notes, the workloads and results tables, targets, and the
    end-to-end section when it was run."""
    lines = ["# MLP core speed benchmark", "", *machine,
             f"- Mode: {plan.mode}; whole run {elapsed:.0f} s", *(f"- {n}" for n in notes)]
    if correctness:
        lines.append(correctness)
    if results:
        lines += ["", "## Workloads", "", report.workloads_table(results), "", "## Results",
                  "", report.results_table(results), "", *report.matmul_share_line(results),
                  *report.dtype_speedups(results), *CAVEATS]
    targets = report.target_lines(results)
    if targets:
        lines += ["", "## Targets for the core", "", *targets]
    if end_to_end:
        lines += ["", end_to_end.rstrip("\n")]
    return "\n".join(lines) + "\n"


def end_to_end_sections(plan: Plan, say: Callable[[str], None] = log) -> str | None:
    """The pipeline's parts of ``plan`` (start-up, sweeps, their per-job cost, the long run),
    in fresh processes with the user's own thread counts; None when none is planned."""
    sections = []
    if plan.startup_repeats or plan.sweeps:
        sections.append(run_pipeline_benchmarks(plan.sweeps, plan.startup_repeats, say))
    if plan.sweep_cost is not None:
        sections.append(cost_markdown(measure_sweep_cost(plan.sweep_cost, say)))
    if plan.long_run_epochs:
        from bench.long_run import long_run_markdown, measure_long_run

        sections.append(long_run_markdown(measure_long_run(say, plan.long_run_epochs)))
    return "\n".join(sections) or None


def run_benchmark(plan: Plan, say: Callable[[str], None] = log) -> tuple[str, str | None]:
    """Run ``plan`` with every thread pool limited to ``plan.threads``; write bench.md (and
    scaling.md/png) into ``plan.out_dir``.

    Returns the text of bench.md and of scaling.md (None when scaling was not run).
    """
    start = time.perf_counter()
    load_at_start = load_average()
    import_optional_libraries(plan.contender_keys)
    with limited_threads(plan.threads):
        contenders, notes = load_contenders(plan.contender_keys)
        keys = [c.key for c in contenders]
        if load_at_start is not None and load_at_start > 1.0:
            say(f"warning: load average {load_at_start:.1f} at the start; timings will be noisy")
        say(f"contenders: {', '.join(keys)}" + (f" ({'; '.join(notes)})" if notes else ""))
        correctness = correctness_line(plan, keys)
        if correctness:
            say(correctness.removeprefix("- "))
        results = []
        for workload in plan.workloads:
            say(f"timing {workload.title}: {workload.epochs} epochs x {workload.repeats} "
                "repeats")
            results.append(time_workload(workload, contenders, plan.matmul_target))
        scaling = None
        if plan.scaling is not None:
            say("scaling: time against rows and width")
            scaling = run_scaling_timing(plan.scaling, contenders)
        machine = machine_lines(plan.threads) + load_lines(load_at_start, load_average())
    if plan.memory:
        say("peak memory: one fresh process per workload and contender")
        measure_memory(plan, results, keys, scaling)
    end_to_end = end_to_end_sections(plan, say)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    text = compose(plan, machine, results, notes, correctness, time.perf_counter() - start,
                   end_to_end)
    (plan.out_dir / "bench.md").write_text(text, encoding="utf-8")
    scaling_text = None
    if scaling is not None:
        scaling_text = "# Scaling\n\n![scaling](scaling.png)\n\n" + report.scaling_markdown(
            scaling)
        (plan.out_dir / "scaling.md").write_text(scaling_text, encoding="utf-8")
        report.plot_scaling(scaling, plan.out_dir / "scaling.png")
    say(f"done in {time.perf_counter() - start:.0f} s; results in {plan.out_dir}")
    return text, scaling_text
