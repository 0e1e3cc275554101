"""What a sweep prints: one line per job as it ends, a [job N] prefix on what parallel jobs
print, the per-job detail only with sweep.verbose=true; and a sweep that cannot start
(a key typo) ends with one line before any MLflow run exists."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.config.paths import PROJECT_ROOT
from pipeline.sweeps.output import job_line, prefixed_output

ENV = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
TINY = ["train.epochs=20", "train.checkpoint_every=0", "tracking.plots=false"]


def sweep(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", *args,
         f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", f"pipeline.cache_dir={tmp / 'cache'}",
         f"hydra.sweep.dir={tmp / 'sweep'}"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env=ENV, timeout=300)


def runs_in(tmp: Path) -> list:
    if not (tmp / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_a_job_line_has_number_values_metric_status_and_seconds() -> None:
    line = job_line(3, ["optimizer.lr=0.1", "model.hidden_sizes=[8]"], "val_accuracy",
                    0.975, "FINISHED", 1.234)
    assert line == ("[job 3] optimizer.lr=0.1 model.hidden_sizes=[8]  val_accuracy 0.9750  "
                    "FINISHED  1.2 s")
    assert job_line(0, [], "val_accuracy", None, "FAILED", 0.04) == "[job 0]  FAILED  0.0 s"
    assert job_line(1, ["seed=1"], "val_accuracy", 0.5, "FINISHED", 0.1,
                    ["ConvergenceWarning", "UserWarning"]) == (
        "[job 1] seed=1  val_accuracy 0.5000  FINISHED  0.1 s  "
        "warned: ConvergenceWarning, UserWarning")


def test_everything_a_parallel_job_prints_carries_its_prefix(capsys) -> None:
    logger = logging.getLogger("test_sweep_output")
    with prefixed_output(2):
        handler = logging.StreamHandler(sys.stdout)  # as Hydra configures the job's logging
        logger.addHandler(handler)
        try:
            print("Metrics", end="")
            print("   val\n  accuracy 0.9")
            print("to stderr", file=sys.stderr)
            logger.warning("a warning")
            print("[job 2] already marked")
        finally:
            logger.removeHandler(handler)
        print("cut short", end="")
    print("after the job")
    out, err = capsys.readouterr()
    assert out.splitlines() == ["[job 2] Metrics   val", "[job 2]   accuracy 0.9",
                                "[job 2] a warning", "[job 2] already marked",
                                "[job 2] cut shortafter the job"]
    assert err == "[job 2] to stderr\n"


def test_a_key_typo_ends_the_sweep_before_any_run(tmp_path) -> None:
    done = sweep(tmp_path, "optimizer.lrr=0.1,0.2", *TINY)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optimizer.lrr" in lines[0], done.stderr
    assert "Sweep" not in done.stdout, done.stdout
    assert runs_in(tmp_path) == []


def test_a_bad_value_every_job_shares_ends_the_sweep_before_any_run(tmp_path) -> None:
    done = sweep(tmp_path, "optimizer.lr=0.1,0.2", "model.activation=rellu", *TINY)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("model.activation"), done.stderr
    assert runs_in(tmp_path) == []


@pytest.mark.slow
def test_a_sweep_prints_one_line_per_job_then_the_leaderboard(tmp_path) -> None:
    done = sweep(tmp_path, "optimizer.lr=0.05,0.2", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    jobs = re.findall(r"^\[job (\d)\] optimizer\.lr=(\S+)  val_accuracy \d\.\d{4}  FINISHED  "
                      r"\d+\.\d s(?:  warned: ConvergenceWarning)?$", out, re.M)
    assert jobs == [("0", "0.05"), ("1", "0.2")], out
    assert "Confusion matrix" not in out and "Metrics" not in out
    assert "\t#" not in out + done.stderr  # Hydra's line per launched job
    summary = out[out.index("Sweep "):]
    assert "stage " not in summary, summary  # the best job's completion is quiet
    best = re.search(r"serve it: make serve RUN_ID=(\w+)", out).group(1)
    assert f"make promote RUN_ID={best}" in out
    # The detail stays in the job's own log file.
    assert "stage train" in (tmp_path / "sweep" / "0" / "__main__.log").read_text()
    # Before the leaderboard: the parent's line, Hydra's "Launching 2 jobs", and one line
    # per job (a warning of the job's own, such as a dirty git tree, besides).
    head = out[:re.search(r"^Sweep \w+ FINISHED", out, re.M).start()]
    assert len([line for line in head.splitlines() if "WARNING" not in line]) == 4, head


@pytest.mark.slow
def test_a_quiet_sweep_names_each_jobs_warnings_in_its_line_and_counts_them(tmp_path) -> None:
    """A ConvergenceWarning per job is one word on the job's line and one line at the end,
    not a long line per job; its text stays in the job's log file and its run's tag."""
    done = sweep(tmp_path, "seed=1,2", "optimizer.lr=0.001", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr
    jobs = re.findall(r"^\[job (\d)\] seed=\d  .*FINISHED  \d+\.\d s  warned: ConvergenceWarning$",
                      out, re.M)
    assert jobs == ["0", "1"], out
    assert "ConvergenceWarning: training stopped" not in out, out
    assert re.search(r"^Warnings: ConvergenceWarning in 2 of 2 runs \(e\.g\. training stopped "
                     r"at the epoch limit \(20\).*\); each run's warnings tag has its own$",
                     out, re.M), out
    for num in (0, 1):
        log = (tmp_path / "sweep" / str(num) / "__main__.log").read_text()
        assert "ConvergenceWarning: training stopped at the epoch limit (20)" in log
    children = [r for r in runs_in(tmp_path) if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 2
    for child in children:
        assert child.data.tags["warnings"].startswith(
            "ConvergenceWarning: training stopped at the epoch limit (20) while val_loss")


@pytest.mark.slow
def test_parallel_jobs_prefix_their_lines_and_verbose_shows_the_detail(tmp_path) -> None:
    done = sweep(tmp_path, "optimizer.lr=0.05,0.2", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", "sweep.verbose=true", *TINY)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for num in (0, 1):
        assert f"[job {num}] Confusion matrix (rows = actual, columns = predicted)" in out
        assert re.search(rf"^\[job {num}\] \[\S+\]\[INFO\] stage train ", out, re.M), out
        assert re.search(rf"^\[job {num}\] optimizer\.lr=\S+  val_accuracy .* FINISHED ",
                         out, re.M), out
    start = out.index("Sweep parent MLflow run")
    end = out.index("Sweep ", start + 1)
    jobs = [line for line in out[start:end].splitlines()[1:]
            if line.strip() and "[HYDRA]" not in line]  # the launcher's lines
    assert all(line.startswith(("[job 0] ", "[job 1] ")) for line in jobs), jobs


def test_an_option_that_is_not_there_ends_the_sweep_before_any_run(tmp_path) -> None:
    done = sweep(tmp_path, "data=rf,csvv", *TINY)  # the second job's config group
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "csvv" in lines[0] and "csv" in lines[0], done.stderr
    assert "Sweep" not in done.stdout, done.stdout
    assert runs_in(tmp_path) == []


def test_a_sweep_that_stopped_on_an_error_names_it(tmp_path, capsys) -> None:
    from pipeline.sweeps import callback
    from pipeline.tracking.parent import SweepParent

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    callback._open = SweepParent(uri=uri, experiment="mlp-pipeline", name="sweep", tags={},
                                 metric="val_accuracy", direction="maximize",
                                 sweep_dir=tmp_path / "sweep", offline=False)
    run_id = callback._open.run_id
    failed = callback.finish_open_sweep(aborted=True, error="In 'config': Could not find x")
    assert failed == 0
    out = capsys.readouterr().out
    assert (f"Sweep {run_id} FAILED: 0 run(s), 0 failed, 0 killed; stopped on: In 'config': "
            "Could not find x") in out.splitlines()
    parent = MlflowClient(uri).get_run(run_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["error"] == "In 'config': Could not find x"  # not "stopped early"


def test_a_csv_every_job_misses_ends_the_sweep_before_any_run(tmp_path) -> None:
    missing = tmp_path / "missing.csv"
    done = sweep(tmp_path, "seed=1,2", "data=csv", f"data.path={missing}", *TINY)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing.csv" in lines[0], done.stderr
    assert runs_in(tmp_path) == []


def test_a_failure_while_a_sweep_starts_stops_it_instead_of_running_it_parentless(
        capsys) -> None:
    """Hydra only warns about an exception from on_multirun_start and then runs every job
    as a lone run; the callback turns it into exit 1 (a config without hydra.sweep breaks
    the start here)."""
    from omegaconf import OmegaConf

    from pipeline.sweeps.callback import SweepCallback

    with pytest.raises(SystemExit) as stopped:
        SweepCallback().on_multirun_start(config=OmegaConf.create({"hydra": {}}))
    assert stopped.value.code == 1
    assert "the sweep could not start" in capsys.readouterr().err


@pytest.mark.slow
def test_a_glob_over_a_config_group_sweeps_under_one_parent(tmp_path) -> None:
    """``optimizer=glob(...)`` needs Hydra's config loader to list the options: without it
    the sweep's start failed and every job ran without a parent run."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "-m", "optimizer=glob(*,exclude=[momentum,rmsprop])",
         "train.epochs=5", "train.progress=false", "tracking.plots=false",
         f"tracking.uri={store}", f"hydra.sweep.dir={tmp_path / 'sw'}",
         f"pipeline.cache_dir={tmp_path / 'c'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ConfigLoader is not set" not in done.stderr
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(c.data.params["optimizer.name"] for c in children) == ["adam", "sgd"]


def test_a_failure_while_a_sweep_starts_after_ctrl_c_ends_as_the_interrupt(
        monkeypatch, capsys) -> None:
    """Ctrl-C while MLflow imports can leave a half-built module whose next use fails: with a
    stop asked, the start's error ends the sweep as that interrupt (exit 130), no traceback."""
    from omegaconf import OmegaConf

    from pipeline.sweeps import callback

    interrupt = KeyboardInterrupt()
    calls = iter([None])  # the start's own first check passes: the signal comes after it

    def check_then_stop() -> None:
        if next(calls, "stop") == "stop":
            raise interrupt

    monkeypatch.setattr(callback, "raise_if_stopping", check_then_stop)
    with pytest.raises(KeyboardInterrupt) as stopped:
        callback.SweepCallback().on_multirun_start(config=OmegaConf.create({"hydra": {}}))
    assert stopped.value is interrupt
    assert "Traceback" not in capsys.readouterr().err
