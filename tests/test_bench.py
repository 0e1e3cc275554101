"""Smoke test of the speed benchmark's plumbing (bench/) on minuscule sizes. No timing checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import yardstick
from bench.matmuls import matmul_seconds_per_epoch, step_matmuls
from bench.memory import measure_many
from bench.pipeline_runs import (
    StartupResult,
    SweepCase,
    SweepResult,
    measure_startup,
    measure_sweep,
    pipeline_markdown,
)
from bench.run import Plan, run_benchmark
from bench.scaling import ScalingPlan
from bench.sweep_cost import (
    DEFAULT_COST,
    QUICK_COST,
    CostResults,
    SweepCost,
    cost_markdown,
    run_cost_sweep,
)
from bench.workloads import Workload, activation_bytes, data_bytes, make_data, rf_task

TINY_W1 = Workload("W1", (2, 3, 1), 40, epochs=3, learning_rate=0.003, data="rf", repeats=1,
                   memory_epochs=1)
TINY_W3 = Workload("W3", (4, 5, 3, 1), 50, epochs=2, batch_size=16, repeats=1,
                   memory_epochs=1)
TINY_SCALING = ScalingPlan(rows=(20, 40), widths=(2, 4), width_rows=20, full_batch_max=20,
                           batch_size=16, target_flops=1e3, max_epochs=2)


def test_rf_task_is_rustnets_training_split() -> None:
    X, y = rf_task()
    assert X.shape == (800, 2) and y.shape == (800,)
    np.testing.assert_allclose(X.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(X.std(axis=0), 1.0)
    assert set(np.unique(y)) == {0, 1}


def test_workload_data_and_sizes() -> None:
    X, y = make_data(TINY_W3.with_(dtype="float32"))
    assert X.dtype == np.float32 and X.shape == (50, 4) and y.shape == (50,)
    assert data_bytes(TINY_W3) == 50 * (4 * 8 + 8)
    assert activation_bytes(TINY_W3) == 2 * 16 * (5 + 3 + 1) * 8


def test_yardstick_learns_in_both_batch_modes() -> None:
    X, y = make_data(TINY_W1.with_(n_rows=800))
    for batch_size in (None, 64):
        weights, biases = yardstick.initial_parameters((2, 12, 1))
        mse = yardstick.train(X, y, weights, biases, learning_rate=0.1, epochs=60,
                              batch_size=batch_size)
        assert len(mse) == 60 and mse[-1] < mse[0]


def test_step_matmuls_cover_forward_and_backward() -> None:
    ops = step_matmuls((4, 5, 3, 1), rows=7, dtype="float32")
    assert len(ops) == 3 + 3 + 2  # forward, weight gradients, deltas of layers > 0
    assert all(out.dtype == np.float32 for _, _, out in ops)
    assert matmul_seconds_per_epoch((4, 5, 1), 50, 16, "float64", target=1e-4) > 0


def test_numpy_only_plan_writes_the_table(tmp_path: Path) -> None:
    plan = Plan(workloads=(TINY_W1, TINY_W3), contender_keys=("core", "yardstick"), threads=1,
                memory=False, verify_epochs=5, scaling=None, out_dir=tmp_path,
                matmul_target=1e-4)
    text, scaling_text = run_benchmark(plan, say=lambda message: None)
    assert scaling_text is None and not (tmp_path / "scaling.md").exists()
    assert "| W3 | yardstick (textbook NumPy) |" in text
    assert "| W3 | bare np.matmul (floor) |" in text


@pytest.mark.slow  # imports scikit-learn, torch and matplotlib: ~5 s
def test_tiny_plan_writes_tables_and_figure(tmp_path: Path) -> None:
    plan = Plan(workloads=(TINY_W1, TINY_W3, TINY_W3.with_(dtype="float32")), threads=1,
                memory=False, verify_epochs=5, scaling=TINY_SCALING, out_dir=tmp_path,
                matmul_target=1e-4)
    text, scaling_text = run_benchmark(plan, say=lambda message: None)
    assert (tmp_path / "bench.md").read_text(encoding="utf-8") == text
    assert "| W1 | yardstick (textbook NumPy) |" in text
    assert "| W3 f32 | bare np.matmul (floor) |" in text
    assert "- Machine: " in text and "- BLAS: " in text
    assert scaling_text is not None and "| 40 |" in scaling_text
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_memory_child_reports_a_peak() -> None:
    [result] = measure_many([(TINY_W1, "yardstick")], threads=1)
    assert result.error is None and result.peak_mib > 0


def test_end_to_end_section_reports_each_target() -> None:
    startup = StartupResult(import_mlflow=1.0, default_run=3.2, config_error=0.4,
                            train_untracked=0.100, train_tracked=0.104, repeats=3,
                            timed_share=0.97)
    fast = SweepResult(SweepCase("training-bound jobs (tiny)", ()), serial_s=90.0,
                       parallel_s=50.0, n_children=8, train_s=9.8)
    slow = SweepResult(SweepCase("training-bound jobs (slow)", ()), serial_s=60.0,
                       parallel_s=50.0, n_children=8, train_s=5.0)
    text = pipeline_markdown(startup, [fast, slow])
    assert "| the default run (`python -m pipeline`) | 3.20 | 3.20× |" in text
    assert "Best of 3 interleaved rounds" in text
    assert "- default run vs `import mlflow` ≤ 1.5×: 3.20×, **MISSED**" in text
    assert "- config error vs `import mlflow` ≤ 0.5×: 0.40×, met" in text
    assert "add up to 97.0 % of its wall time" in text
    assert "- the run's timings' sum vs its wall time within 5 %: 97.0 %, met" in text
    assert "- tracking's cost to the train stage ≤ 10 %: 4.0 %, met" in text
    assert "| training-bound jobs (tiny) | 8 | 9.8 s | 90.0 s | 50.0 s | 1.80× |" in text
    assert "(tiny): joblib 2 workers vs serial ≥ 1.7×: 1.80×, met" in text
    assert "(slow): joblib 2 workers vs serial ≥ 1.7×: 1.20×, **MISSED**" in text
    assert "## End to end" in pipeline_markdown(None, []) and "Targets" not in \
        pipeline_markdown(None, [])


@pytest.mark.slow  # two real 2-job sweeps: ~30 s
def test_sweep_benchmark_runs_both_launchers(tmp_path: Path) -> None:
    case = SweepCase("tiny", ("optimizer.lr=0.01,0.1", "train.epochs=5", "tracking.plots=false",
                              "tracking.log_model=false", "train.checkpoint_every=0"))
    result = measure_sweep(case, folder=tmp_path)
    assert result.n_children == 2
    assert result.serial_s > 0 and result.parallel_s > 0 and 0 < result.train_s < 5
    assert (tmp_path / "serial" / "multirun.yaml").exists()
    assert (tmp_path / "parallel" / "multirun.yaml").exists()


def _costs(per_job: dict[tuple[int, str], float], summary_s: float | None) -> CostResults:
    """Fabricated results of the default plan: seconds per job by (jobs, launcher)."""
    sweeps = tuple(SweepCost(jobs, epochs, launcher, per_job[jobs, launcher] * jobs,
                             summary_s if jobs == 256 and launcher == "basic" else None)
                   for jobs, epochs in DEFAULT_COST.sizes for launcher in ("basic", "joblib"))
    return CostResults(DEFAULT_COST, sweeps, import_samples=(1.0, 0.8, 1.2))


def test_sweep_cost_table_has_every_size_and_the_ratio_to_import_mlflow() -> None:
    per_job = {(8, "basic"): 1.0, (8, "joblib"): 0.8, (32, "basic"): 0.4,
               (32, "joblib"): 0.25, (256, "basic"): 0.44, (256, "joblib"): 0.25}
    text = cost_markdown(_costs(per_job, summary_s=3.2))
    assert "N = 8, 32, 256" in text and "--quick" not in text
    assert "| 8 | 300 | basic | 8.0 s | 1.00 s | 1.00× | — | n/a |" in text
    assert "| 32 | 300 | joblib, 2 workers | 8.0 s | 0.25 s | 0.25× | 1.60× | n/a |" in text
    assert "| 256 | 10 | basic | 112.6 s | 0.44 s | 0.44× | — | 3.20 s |" in text
    assert "`python -c \"import mlflow\"`: 1.00 s (median of 3" in text
    assert ("- 32 jobs (train.epochs=300), basic launcher: per job ≤ 0.5 s: 0.40 s "
            "(0.40× `import mlflow`), met") in text
    assert "per job ≤ 1.2× the 32-job figure: 0.44 s / 0.40 s = 1.10×, met" in text
    assert "- 256-job summary (`time_summary_s`, basic) ≤ 5 s: 3.20 s, met" in text
    assert "- 256 jobs: joblib 2 workers vs basic ≥ 1.6×: 1.76×, met" in text


def test_sweep_cost_targets_report_misses_and_a_missing_summary() -> None:
    per_job = {(8, "basic"): 1.0, (8, "joblib"): 0.8, (32, "basic"): 0.6,
               (32, "joblib"): 0.5, (256, "basic"): 0.8, (256, "joblib"): 0.6}
    text = cost_markdown(_costs(per_job, summary_s=None))
    assert "per job ≤ 0.5 s: 0.60 s (0.60× `import mlflow`), **MISSED**" in text
    assert "= 1.33×, **MISSED**" in text
    assert "≤ 5 s: n/a, not measured" in text
    assert "vs basic ≥ 1.6×: 1.33×, **MISSED**" in text
    text = cost_markdown(_costs({**per_job, (256, "joblib"): 0.4}, summary_s=6.0))
    assert "≤ 5 s: 6.00 s, **MISSED**" in text and "≥ 1.6×: 2.00×, met" in text


def test_quick_sweep_cost_says_so_and_aims_at_its_own_sizes() -> None:
    sweeps = tuple(SweepCost(jobs, epochs, launcher, 4.0 * jobs ** 0.5, None)
                   for jobs, epochs in QUICK_COST.sizes for launcher in ("basic", "joblib"))
    text = cost_markdown(CostResults(QUICK_COST, sweeps, import_samples=(2.0,)))
    assert "N = 4 (--quick" in text
    assert "- 4 jobs (train.epochs=100), basic launcher: per job ≤ 0.5 s" in text


def test_the_small_sweep_reports_joblib_against_basic() -> None:
    per_job = {(8, "basic"): 1.0, (8, "joblib"): 0.7, (32, "basic"): 0.4,
               (32, "joblib"): 0.25, (256, "basic"): 0.44, (256, "joblib"): 0.25}
    text = cost_markdown(_costs(per_job, summary_s=3.2))
    assert "- 8 jobs (train.epochs=300): joblib 2 workers vs basic ≥ 1.3×: 1.43×, met" in text
    text = cost_markdown(_costs({**per_job, (8, "joblib"): 1.04}, summary_s=3.2))
    assert "vs basic ≥ 1.3×: 0.96×, **MISSED**" in text


@pytest.mark.slow  # one real 2-job sweep: ~10 s
def test_sweep_cost_times_a_real_sweep_on_a_fresh_store(tmp_path: Path) -> None:
    result = run_cost_sweep(2, 5, "basic", folder=tmp_path)
    assert (result.jobs, result.epochs, result.launcher) == (2, 5, "basic")
    assert result.seconds > 0 and result.per_job == result.seconds / 2
    assert result.summary_s is None or result.summary_s >= 0
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "basic" / "multirun.yaml").exists()


@pytest.mark.slow  # fresh pipeline processes: ~20 s
def test_startup_benchmark_times_the_real_commands(tmp_path: Path) -> None:
    result = measure_startup(repeats=1, folder=tmp_path)
    assert 0 < result.config_error < result.default_run
    assert result.import_mlflow > 0 and result.train_untracked > 0
    assert (tmp_path / "mlflow.db").exists()


def test_csv_benchmark_loads_both_files_and_reports_the_ratio(tmp_path: Path) -> None:
    from bench.csv_load import csv_markdown, measure_csv_loads

    results = measure_csv_loads(lambda line: None, rows=2000, folder=tmp_path)
    assert [r.shape for r in results] == [(2000, 9), (2000, 9)]  # features; the 10th is the label
    assert all(r.seconds > 0 and r.peak_bytes >= r.before_bytes for r in results)
    table = csv_markdown(results)
    assert "decimal comma" in table and "growth / file size" in table
    assert not list(tmp_path.glob("*.csv"))  # the files are removed after loading


def test_quick_plan_is_a_short_smoke_test() -> None:
    from bench.__main__ import parse_args, plan_from_args

    plan = plan_from_args(parse_args(["--quick"]))
    assert plan.sweeps == () and plan.sweep_cost is not None
    assert sum(jobs * epochs for jobs, epochs in plan.sweep_cost.sizes) <= 1000
    assert plan.startup_repeats == 1 and plan.long_run_epochs <= 10_000
    assert plan.scaling is not None and not plan.scaling.memory_keys
    assert max(plan.scaling.rows) <= 10**4
    assert plan_from_args(parse_args(["--only", "startup"])).startup_repeats == 3


@pytest.mark.parametrize(("args", "needed"), [
    (["--only", "csv"], False), (["--only", "startup"], False),
    (["--only", "sweep", "longrun"], False), (["--only", "W1"], True),
    (["--quick"], True), (["--only", "scaling", "--contenders", "core", "sklearn"], False),
])
def test_only_the_parts_that_compare_against_pytorch_need_it(args: list[str],
                                                             needed: bool) -> None:
    from bench.__main__ import main

    assert main([*args, "--needs-torch"]) == (0 if needed else 1)


def test_make_bench_installs_pytorch_only_when_a_part_needs_it() -> None:
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    install = recipe.index("-m pip install")
    assert recipe.index("$(PY) -m bench $(ARGS) --needs-torch") < install


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie that nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_ending_a_child_ends_everything_it_started() -> None:
    import time

    from bench import children

    with children.started(["sh", "-c", "sleep 60 & sleep 60"]) as process:
        deadline = time.monotonic() + 10
        while len(_descendants(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = _descendants(process.pid) | {process.pid}
        assert len(started) >= 2
    assert not [pid for pid in started if _alive(pid)]


@pytest.mark.slow  # a real bench with a real sweep, stopped: ~10 s
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stopped_bench_leaves_no_process_behind(tmp_path: Path, signum: str) -> None:
    import signal
    import subprocess
    import sys
    import time

    bench = subprocess.Popen([sys.executable, "-m", "bench", "--only", "sweep", "--quick",
                              "--out", str(tmp_path)], cwd=Path(__file__).resolve().parent.parent,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until a sweep runs its jobs
            seen |= _descendants(bench.pid)
            if any("pipeline" in _cmdline(pid) for pid in seen) and len(seen) >= 2:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        seen |= _descendants(bench.pid)
        assert any("pipeline" in _cmdline(pid) for pid in seen)
        bench.send_signal(getattr(signal, signum))
        _, err = bench.communicate(timeout=60)
        assert bench.returncode == (143 if signum == "SIGTERM" else 130), err
        assert "every process it started has ended" in err
        assert not [pid for pid in seen if _alive(pid)]
    finally:
        import contextlib
        import os

        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        for pid in seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
