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
                            train_untracked=0.100, train_tracked=0.104, repeats=5)
    fast = SweepResult(SweepCase("training-bound jobs (tiny)", ()), serial_s=90.0,
                       parallel_s=50.0, n_children=8, train_s=9.8)
    slow = SweepResult(SweepCase("training-bound jobs (slow)", ()), serial_s=60.0,
                       parallel_s=50.0, n_children=8, train_s=5.0)
    text = pipeline_markdown(startup, [fast, slow])
    assert "| the default run (`python -m pipeline`) | 3.20 | 3.20× |" in text
    assert "- default run vs `import mlflow` ≤ 3×: 3.20×, **MISSED**" in text
    assert "- config error vs `import mlflow` ≤ 1×: 0.40×, met" in text
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
    assert "N = 4, 8, 32 (--quick" in text
    assert "- 8 jobs (train.epochs=300), basic launcher: per job ≤ 0.5 s" in text
    assert "- 32 jobs (train.epochs=10), basic: per job ≤ 1.2× the 8-job figure" in text


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
